//! `nrf-provd parse` and `nrf-provd verify`: output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use nrf91_token::encode;
use serde_json::Value;
use testkit::fixtures::{assert_fields, token_cases as cases};
use testkit::token::*;

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nrf-provd");
    let input = stdin.unwrap_or("").to_string();
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Station {
    _dir: tempfile::TempDir,
    trust: String,
    key: p256::ecdsa::SigningKey,
}

fn station() -> Station {
    let key = random_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trust.csv");
    std::fs::write(&path, trust(DEVICE, &key).to_csv()).expect("write trust");
    Station {
        trust: path.to_string_lossy().into_owned(),
        _dir: dir,
        key,
    }
}

#[test]
fn parse_reads_a_whole_at_response_from_stdin() {
    let s = station();
    let response = format!("%ATTESTTOKEN: \"{}\"\r\nOK\r\n", identity(&s.key));
    let out = run(&["parse", "-", "--json"], Some(&response));
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "identity");
    assert_eq!(json["device_uuid"], DEVICE.to_string());
    assert_eq!(json["device_type"], "nRF9161 LACA");
    assert_eq!(json["nonce"], hex::encode(CHALLENGE));
}

#[test]
fn parse_of_a_non_token_exits_2_and_says_where() {
    let s = station();
    let body = identity(&s.key)
        .split_once('.')
        .expect("two parts")
        .0
        .to_string();
    let out = run(&["parse", &format!("{body}.@@@")], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("part 2") && err.contains("base64"), "{err}");
}

#[test]
fn parse_prints_a_readable_summary() {
    let s = station();
    let out = run(&["parse", &keygen_csr(&s.key)], None);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("certificate signing request"), "{text}");
    assert!(text.contains(&format!("CN={DEVICE}")), "{text}");
    assert!(text.contains("matches the DER"), "{text}");
}

#[test]
fn verify_exits_0_for_an_authentic_token() {
    let s = station();
    let challenge = hex::encode(CHALLENGE);
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &s.trust,
            "--challenge",
            &challenge,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("AUTHENTIC"));
}

#[test]
fn verify_exits_1_and_names_each_failed_check() {
    let s = station();
    let out = run(
        &[
            "verify",
            &keygen_csr(&s.key),
            "--trust",
            &s.trust,
            "--sec-tag",
            "17",
            "--device-uuid",
            "00000000-0000-0000-0000-000000000007",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("NOT AUTHENTIC"), "{text}");
    assert!(
        text.contains("FAIL sec_tag") && text.contains("FAIL device_uuid"),
        "{text}"
    );
}

#[test]
fn verify_json_lists_checks() {
    let s = station();
    let other = hex::encode([0xee; 16]);
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &s.trust,
            "--challenge",
            &other,
            "--json",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["authentic"], false);
    let failed: Vec<&str> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failed, ["nonce"]);
}

#[test]
fn verify_checks_jwt_time_against_now() {
    let s = station();
    let header = serde_json::json!({"alg": "ES256"});
    let token = encode::jwt(&header, &jwt_claims(NOW - 10, NOW + 60), &s.key);
    let now = NOW.to_string();
    let ok = run(
        &["verify", &token, "--trust", &s.trust, "--now", &now],
        None,
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    let later = (NOW + 7200).to_string();
    let expired = run(
        &["verify", &token, "--trust", &s.trust, "--now", &later],
        None,
    );
    assert_eq!(expired.status.code(), Some(1));
    assert!(stdout(&expired).contains("FAIL jwt_time"));
}

#[test]
fn verify_exits_2_for_a_bad_trust_file_or_input() {
    let s = station();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "device_uuid,public_key\nnope,AAAA\n").expect("write");
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &bad.to_string_lossy(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let out = run(&["verify", "garbage", "--trust", &s.trust], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &s.trust,
            "--challenge",
            "abc",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_of_an_unknown_device_exits_1() {
    let s = station();
    let stranger = random_key();
    let body = identity_body(CHALLENGE);
    let mut other = body.clone();
    other.device_uuid = [7; 16];
    let out = run(
        &[
            "verify",
            &encode::identity_token(&other, &stranger),
            "--trust",
            &s.trust,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAIL key_trusted"));
}

#[test]
fn verify_refuses_a_challenge_for_a_token_that_carries_none() {
    let s = station();
    let challenge = hex::encode(CHALLENGE);
    for token in [keygen_csr(&s.key), jwt(&s.key)] {
        let out = run(
            &[
                "verify",
                &token,
                "--trust",
                &s.trust,
                "--challenge",
                &challenge,
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--challenge does not apply") && err.contains("host challenge"),
            "{err}"
        );
        assert!(!stdout(&out).contains("AUTHENTIC"));
    }
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &s.trust,
            "--sec-tag",
            "1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_without_a_challenge_says_freshness_was_not_checked() {
    let s = station();
    let out = run(&["verify", &identity(&s.key), "--trust", &s.trust], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("freshness      NOT CHECKED"),
        "{}",
        stdout(&out)
    );
    let out = run(
        &["verify", &identity(&s.key), "--trust", &s.trust, "--json"],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["freshness_checked"], false);
}

#[test]
fn verify_of_the_wrong_kind_fails_naming_both_kinds() {
    let s = station();
    let out = run(
        &[
            "verify",
            &keygen_csr(&s.key),
            "--trust",
            &s.trust,
            "--kind",
            "identity",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("NOT AUTHENTIC"), "{text}");
    assert!(
        text.contains("FAIL kind")
            && text.contains("expected an identity token")
            && text.contains("got a key-generation token with a CSR"),
        "{text}"
    );
}

#[test]
fn the_key_two_jwts_share_is_printed_and_verifies_with_key() {
    let s = station();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    let first = encode::jwt(&header, &jwt_claims(NOW - 10, NOW + 60), &s.key);
    let second = encode::jwt(&header, &jwt_claims(NOW - 5, NOW + 90), &s.key);
    let out = run(&["parse", "--recover-key", &first, &second, "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["device_uuid"], DEVICE.to_string());
    let key = json["public_key"].as_str().expect("key").to_string();
    assert_eq!(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &key).expect("b64"),
        spki(&s.key)
    );
    let now = NOW.to_string();
    let out = run(&["verify", &first, "--key", &key, "--now", &now], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Under another device's key it is not authentic.
    let other = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        spki(&random_key()),
    );
    let out = run(&["verify", &first, "--key", &other, "--now", &now], None);
    assert_eq!(out.status.code(), Some(1));

    let stranger = encode::jwt(&header, &jwt_claims(NOW, NOW + 60), &random_key());
    let out = run(&["parse", "--recover-key", &first, &stranger], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("NO COMMON KEY"), "{}", stdout(&out));
    let out = run(&["parse", "--recover-key", &first, &identity(&s.key)], None);
    assert_eq!(out.status.code(), Some(2));
}

/// Real modem outputs (tests/fixtures/real-modem-tokens.json) through
/// `parse --json`: every field recorded with them.
#[test]
fn parse_json_cli_reproduces_every_expected_field() {
    for (name, text, expect) in cases() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
            .args(["parse", "--json", &text])
            .output()
            .expect("run nrf-provd");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        assert_fields(&name, &json, &expect);
    }
}

/// The owner's public key as PEM, in a file.
fn owner_pem(dir: &std::path::Path, name: &str, key: &p256::ecdsa::SigningKey) -> String {
    use p256::pkcs8::EncodePublicKey;
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .expect("PEM");
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write");
    path.to_string_lossy().into_owned()
}

#[test]
fn parse_and_verify_handle_a_claim_token_and_its_bindings() {
    let s = station();
    let owner = random_key();
    let owner_file = owner_pem(s._dir.path(), "owner.pub.pem", &owner);
    let text = claim(&s.key, &spki(&owner));
    let line = format!("%CLAIMTOKEN: \"{text}\"\r\nOK\r\n");
    let out = run(&["parse", "-", "--json"], Some(&line));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["kind"], "claim");
    assert_eq!(json["device_uuid"], DEVICE.to_string());
    assert_eq!(json["challenge"], hex::encode(CHALLENGE));
    assert_eq!(json["recognised"].as_array().map(Vec::len), Some(6));
    let challenge = hex::encode(CHALLENGE);
    let device = DEVICE.to_string();
    let bound = [
        "verify",
        &text,
        "--trust",
        &s.trust,
        "--challenge",
        &challenge,
        "--device-uuid",
        &device,
        "--ownership-key",
        &owner_file,
    ];
    let out = run(&bound, None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("AUTHENTIC: claim token"));

    // The same token against another owner's key, another challenge,
    // another device, or signed by another key: each fails its check.
    let other_owner = owner_pem(s._dir.path(), "other.pub.pem", &random_key());
    let stale = hex::encode(*b"fedcba9876543210");
    let other_device = uuid::Uuid::from_u128(9).to_string();
    let forged = claim(&random_key(), &spki(&owner));
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--ownership-key", &other_owner], "FAIL digest"),
        (vec!["--challenge", &stale], "FAIL nonce"),
        (vec!["--device-uuid", &other_device], "FAIL device_uuid"),
        (vec!["--token-is", &forged], "FAIL signature"),
    ];
    for (change, failed) in cases {
        let mut args: Vec<&str> = bound.to_vec();
        if change[0] == "--token-is" {
            args[1] = change[1];
        } else {
            let at = args.iter().position(|a| *a == change[0]).expect("flag");
            args[at + 1] = change[1];
        }
        let out = run(&args, None);
        assert_eq!(out.status.code(), Some(1), "{failed}: {}", stdout(&out));
        assert!(stdout(&out).contains(failed), "{failed}: {}", stdout(&out));
    }

    // Without the ownership key the digest is not judged, and it says so.
    let out = run(&["verify", &text, "--trust", &s.trust], None);
    assert!(
        stdout(&out).contains("ownership      NOT CHECKED"),
        "{}",
        stdout(&out)
    );
    // --ownership-key is a claim token's binding only.
    let out = run(
        &[
            "verify",
            &identity(&s.key),
            "--trust",
            &s.trust,
            "--ownership-key",
            &owner_file,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a claim token"));
}
