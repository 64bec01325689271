//! One test per fault: what a host talking to a misbehaving board sees.

use std::time::Duration;

use nrf91_sim::fault::{CapturedToken, TOKEN_COMMANDS};
use nrf91_sim::{Fleet, SimDialect, SimOptions};
use nrf91_token::encode::{sec_tag_cbor, sha256};
use testkit::sim::{
    Host, is_final, is_urc, quoted_token, trust_keys, verify_attest, verify_jwt, verify_keygen,
};

const CHALLENGE: &str = "00112233445566778899aabbccddeeff";

async fn faulty(faults: &[&str]) -> (tempfile::TempDir, Fleet) {
    faulty_in(SimDialect::Raw, faults).await
}

async fn faulty_in(dialect: SimDialect, faults: &[&str]) -> (tempfile::TempDir, Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        dialect,
        faults: faults.iter().map(|f| f.parse().unwrap()).collect(),
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), 1, 7, options).await.unwrap();
    (dir, fleet)
}

fn host(fleet: &Fleet) -> Host {
    Host::open(&fleet.link(0), SimDialect::Raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urc_storm_puts_notifications_inside_replies_and_between_them() {
    let (_dir, fleet) = faulty(&["0:urc-storm"]).await;
    let mut host = host(&fleet);
    // Between the information line and the final result, every time.
    for _ in 0..3 {
        let lines = host.command("AT+CGSN=1").await;
        let info = lines.iter().position(|l| l.starts_with("+CGSN:")).unwrap();
        assert!(is_urc(&lines[info + 1]), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "OK");
    }
    // And unasked while the host is idle.
    let idle = host
        .until(|b| String::from_utf8_lossy(b).split("\r\n").any(is_urc))
        .await;
    assert!(!String::from_utf8_lossy(&idle).contains("OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urc_storm_in_the_shell_only_after_events_enable() {
    let (_dir, fleet) = faulty_in(SimDialect::Shell, &["0:urc-storm"]).await;
    let mut host = Host::open(&fleet.link(0), SimDialect::Shell);
    let lines = host.command("AT+CGMM").await;
    assert!(!lines.iter().any(|l| is_urc(l)), "{lines:?}");
    host.send(b"at events_enable\r\n").await;
    let out = host
        .until(|b| String::from_utf8_lossy(b).contains("AT event handler:\r\n"))
        .await;
    assert!(String::from_utf8_lossy(&out).contains("AT command event handler enabled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_arrive_but_commands_still_work() {
    let (_dir, fleet) = faulty(&["0:garbage"]).await;
    let mut host = host(&fleet);
    // Power-on noise is waiting before the host says anything.
    let noise = host.until(|b| b.ends_with(b"\r\n")).await;
    assert!(noise.len() > 2, "{noise:?}");
    assert!(
        noise[..noise.len() - 2]
            .iter()
            .all(|b| !matches!(b, b'\r' | b'\n')),
        "{noise:?}"
    );
    assert!(std::str::from_utf8(&noise).is_err() || noise.iter().any(|b| !b.is_ascii_graphic()));
    let imei = fleet.identity(0).imei.clone();
    for _ in 0..5 {
        let lines = host.command("AT+CGSN").await;
        assert!(lines.contains(&imei), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "OK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_mid_response_cuts_the_reply_and_the_link() {
    let (_dir, fleet) = faulty(&["0:unplug@KEYGEN"]).await;
    let link = fleet.link(0);
    let mut host = host(&fleet);
    assert_eq!(host.result("AT+CMEE=1").await, "OK");
    host.send(b"AT%KEYGEN=16,2,0\r\n").await;
    let partial = String::from_utf8(host.until_gone().await).unwrap();
    assert!(partial.starts_with("%KEYGEN: \""), "{partial}");
    assert!(!partial.split("\r\n").any(is_final), "{partial}");
    assert!(std::fs::symlink_metadata(&link).is_err(), "link removed");
    assert!(!fleet.is_plugged(0));
    // Plugged back in: same board, the key it generated is in its flash.
    fleet.replug(0).await.unwrap();
    let mut host = Host::open(&link, SimDialect::Raw);
    assert_eq!(host.ok("AT+CFUN?").await, ["+CFUN: 0"]);
    assert_eq!(host.ok("AT%CMNG=1,16,2").await.len(), 1);
    assert_eq!(
        host.ok("AT%DEVICEUUID").await,
        [format!("%DEVICEUUID: {}", fleet.identity(0).device_uuid)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_leaves_one_command_unanswered() {
    let (_dir, fleet) = faulty(&["0:stall@CGSN"]).await;
    let mut host = host(&fleet);
    host.send(b"AT+CGSN\r\n").await;
    assert!(host.read_for(Duration::from_millis(300)).await.is_empty());
    // The next command is answered, and nothing belongs to the stalled one.
    assert_eq!(host.command("AT+CGMM").await, ["nRF9161-LACA", "OK"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_cme_error_on_a_chosen_command() {
    let (_dir, fleet) = faulty(&["0:cme=523@KEYGEN"]).await;
    let mut host = host(&fleet);
    assert_eq!(host.result("AT%KEYGEN=16,2,0").await, "ERROR");
    assert_eq!(host.result("AT+CMEE=1").await, "OK");
    assert_eq!(host.result("AT%KEYGEN=16,2,0").await, "+CME ERROR: 523");
    assert_eq!(host.result("AT%ATTESTTOKEN").await, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signature_fails_verification() {
    let (_dir, fleet) = faulty(&["0:bad-signature"]).await;
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = host(&fleet);
    let line = host
        .ok(&format!("AT%ATTESTTOKEN=\"{CHALLENGE}\""))
        .await
        .remove(0);
    assert_eq!(
        verify_attest(&quoted_token(&line), &trust).unwrap_err(),
        "bad signature"
    );
    let line = host.ok("AT%KEYGEN=16,2,0").await.remove(0);
    assert_eq!(
        verify_keygen(&quoted_token(&line), &trust).unwrap_err(),
        "bad signature"
    );
    let line = host.ok("AT%JWT").await.remove(0);
    let key = trust[&fleet.identity(0).device_uuid];
    assert_eq!(
        verify_jwt(&quoted_token(&line), &key).unwrap_err(),
        "bad signature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_challenge_shows_as_a_foreign_nonce() {
    let (_dir, fleet) = faulty(&["0:ignore-challenge"]).await;
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = host(&fleet);
    let line = host
        .ok(&format!("AT%ATTESTTOKEN=\"{CHALLENGE}\""))
        .await
        .remove(0);
    let attest = verify_attest(&quoted_token(&line), &trust).expect("still authentic");
    assert_ne!(hex::encode(attest.nonce), CHALLENGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_the_first_token_for_a_new_challenge() {
    let (_dir, fleet) = faulty(&["0:replay"]).await;
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = host(&fleet);
    let first = host.ok(&format!("AT%ATTESTTOKEN=\"{CHALLENGE}\"")).await;
    let second = host
        .ok("AT%ATTESTTOKEN=\"ffeeddccbbaa99887766554433221100\"")
        .await;
    assert_eq!(first, second);
    let attest = verify_attest(&quoted_token(&second[0]), &trust).expect("authentic, but stale");
    assert_eq!(hex::encode(attest.nonce), CHALLENGE);
    assert_eq!(
        host.ok("AT%KEYGEN=1,2,0").await,
        host.ok("AT%KEYGEN=2,2,0").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_uuid_differs_from_deviceuuid() {
    let (_dir, fleet) = faulty(&["0:wrong-uuid"]).await;
    let id = fleet.identity(0);
    // Trust the board's key under the UUID inside its tokens, so only the
    // UUID mismatch is left for the host to notice.
    let mut host = host(&fleet);
    let line = host.ok("AT%ATTESTTOKEN").await.remove(0);
    let token = quoted_token(&line);
    let body = testkit::sim::b64url(token.split_once('.').unwrap().0);
    let inner = uuid::Uuid::from_slice(&body[6..22]).unwrap();
    assert_ne!(inner, id.device_uuid);
    let trust = [(inner, *id.signing_key.verifying_key())]
        .into_iter()
        .collect();
    let attest = verify_attest(&token, &trust).expect("signed by the identity key");
    assert_eq!(attest.device_uuid, inner);
    assert_eq!(
        host.ok("AT%DEVICEUUID").await,
        [format!("%DEVICEUUID: {}", id.device_uuid)]
    );
    // Against the fleet's trust file the token names an unknown device.
    let fleet_trust = trust_keys(&fleet.trust_csv());
    assert_eq!(
        verify_attest(&token, &fleet_trust).unwrap_err(),
        "unknown device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_digest_does_not_match_the_der() {
    let (_dir, fleet) = faulty(&["0:bad-digest"]).await;
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = host(&fleet);
    let line = host.ok("AT%KEYGEN=16,2,0").await.remove(0);
    let keygen = verify_keygen(&quoted_token(&line), &trust).expect("signed fine");
    assert_ne!(keygen.digest, sha256(&keygen.der));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_key_is_not_in_the_trust_file() {
    let (_dir, fleet) = faulty(&["0:untrusted-key"]).await;
    assert_eq!(fleet.trust_csv(), "device_uuid,public_key\n");
    let id = fleet.identity(0);
    let mut host = host(&fleet);
    let line = host
        .ok(&format!("AT%ATTESTTOKEN=\"{CHALLENGE}\""))
        .await
        .remove(0);
    let token = quoted_token(&line);
    assert_eq!(
        verify_attest(&token, &trust_keys(&fleet.trust_csv())).unwrap_err(),
        "unknown device"
    );
    // Even a host that trusted the board's published key would reject it.
    let published = [(id.device_uuid, *id.signing_key.verifying_key())]
        .into_iter()
        .collect();
    assert_eq!(
        verify_attest(&token, &published).unwrap_err(),
        "bad signature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_csr_has_a_null_algorithm_parameter() {
    let (_dir, fleet) = faulty(&["0:legacy-csr"]).await;
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = host(&fleet);
    let line = host.ok("AT%KEYGEN=16,2,0").await.remove(0);
    let keygen = verify_keygen(&quoted_token(&line), &trust).unwrap();
    // SEQUENCE { ecdsa-with-SHA256, NULL }: strict DER parsers reject it.
    assert!(hex::encode(&keygen.der).contains("300c06082a8648ce3d0403020500"));
    // The digest is over the bytes as sent.
    assert_eq!(keygen.digest, sha256(&keygen.der));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_apply_only_to_their_targets() {
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        faults: vec!["1:bad-signature".parse().unwrap()],
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), 2, 3, options).await.unwrap();
    let trust = trust_keys(&fleet.trust_csv());
    let mut good = Host::open(&fleet.link(0), SimDialect::Raw);
    let mut bad = Host::open(&fleet.link(1), SimDialect::Raw);
    let line = good.ok("AT%ATTESTTOKEN").await.remove(0);
    assert!(verify_attest(&quoted_token(&line), &trust).is_ok());
    let line = bad.ok("AT%ATTESTTOKEN").await.remove(0);
    assert!(verify_attest(&quoted_token(&line), &trust).is_err());
}

/// The hostile board: every token command answered with a genuine token of
/// every kind, under the command's own prefix. Each token verifies as
/// authentic *as its kind* with the fleet's trust file, which is what makes
/// the attack work against a host that does not bind kind to command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substitute_answers_a_command_with_a_genuine_token_of_another_kind() {
    let cases: Vec<(CapturedToken, &str)> = CapturedToken::ALL
        .iter()
        .copied()
        .flat_map(|kind| TOKEN_COMMANDS.map(|command| (kind, command)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        faults: cases
            .iter()
            .enumerate()
            .map(|(i, (kind, command))| format!("{i}:substitute={kind}@{command}").parse().unwrap())
            .collect(),
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), cases.len(), 21, options)
        .await
        .unwrap();
    let trust = trust_keys(&fleet.trust_csv());
    assert_eq!(
        trust.len(),
        cases.len(),
        "every board is genuine and trusted"
    );
    for (i, (kind, command)) in cases.iter().copied().enumerate() {
        let case = format!("substitute={kind}@{command}");
        let uuid = fleet.identity(i).device_uuid;
        let mut host = Host::open(&fleet.link(i), SimDialect::Raw);
        assert_eq!(host.result("AT+CMEE=1").await, "OK");
        // For KEYGEN ask for the other format than KIND's, so that even
        // keygen@KEYGEN is a substitution.
        let line = match command {
            "ATTESTTOKEN" => format!("AT%ATTESTTOKEN=\"{CHALLENGE}\""),
            "KEYGEN" if kind == CapturedToken::Keygen => "AT%KEYGEN=16,2,1".to_owned(),
            "KEYGEN" => "AT%KEYGEN=16,2,0".to_owned(),
            _ => "AT%JWT".to_owned(),
        };
        let answer = host.ok(&line).await;
        assert_eq!(answer.len(), 1, "{case}: {answer:?}");
        assert!(
            answer[0].starts_with(&format!("%{command}: \"")),
            "{case}: {answer:?}"
        );
        let token = quoted_token(&answer[0]);
        match kind {
            CapturedToken::Identity => {
                let attest =
                    verify_attest(&token, &trust).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(attest.device_uuid, uuid, "{case}");
                // The challenge only where an %ATTESTTOKEN asked for it.
                let answers_challenge = hex::encode(attest.nonce) == CHALLENGE;
                assert_eq!(answers_challenge, command == "ATTESTTOKEN", "{case}");
            }
            CapturedToken::Keygen | CapturedToken::KeygenPublicKey => {
                let keygen =
                    verify_keygen(&token, &trust).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(keygen.device_uuid, uuid, "{case}");
                let want_id = if kind == CapturedToken::Keygen { 9 } else { 8 };
                assert_eq!(keygen.payload_id, want_id, "{case}");
                assert_eq!(keygen.digest, sha256(&keygen.der), "{case}");
                // The requested sec_tag for %KEYGEN, else the plan's usual one.
                let tag = if command == "KEYGEN" { 16 } else { 16_842_753 };
                assert_eq!(keygen.sec_tag_cbor, sec_tag_cbor(tag), "{case}");
            }
            CapturedToken::Jwt => {
                assert_eq!(token.split('.').count(), 3, "{case}: {token}");
                let (_, claims) =
                    verify_jwt(&token, &trust[&uuid]).unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(claims["iss"], format!("nRF9161.{uuid}"), "{case}");
            }
        }
    }
    fleet.shutdown().await;
}
