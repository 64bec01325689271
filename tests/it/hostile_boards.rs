//! Issue 18: the attacks an adversary on the line tried, each run against
//! the real daemon (`nrf-provd run`) or `provision` with a hostile
//! simulated board. Each ends not passed, with its reason code; the
//! genuine board still passes; what a person or a program reads (the
//! terminal, the log, the CSV) is checked byte by byte.
//!
//! - a keyless clone that answers every `%JWT` with JWTs harvested from the
//!   genuine board (`nrf-provd at 'AT%JWT=0,0,"",""'`, clock unset), under
//!   `pin` and in the `jwt` step: `jwt_challenge`;
//! - JWTs without `iat`/`exp`: `jwt_time`, naming the claims;
//! - one identity key under a second device UUID: `key_reused`, naming the
//!   other UUID, station and run; a trust file listing it is refused;
//! - COSE signatures that the pinned key does not verify: `cose_unverified`
//!   by default, recorded as unverified with `identity.pin_cose = "recorded"`;
//! - `collect`: the station CA signs nothing for a board nobody vouched for;
//! - device text: IMEIs that are not 15 digits with a Luhn check digit fail
//!   `imei`; control characters in token text fail `malformed` before the
//!   ledger; identify strings reach the terminal and the log escaped and the
//!   CSV neutralised.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::station_support::{Daemon, Env, binary, runs_in};
use nrf_provd_core::record::{ArtifactKind, Outcome, ReasonCode, RunRecord, Step, VerifiedBy};
use nrf91_sim::{FaultSpec, Fleet, Latency, SimOptions};
use nrf91_token::TokenKind;

/// The seed every fleet of `Env` is made from: a fleet started with it
/// again is the same boards (a clone).
const SEED: u64 = 7;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `env`'s daemon config judged by `authorities` (the trust file only when
/// `keys` is one), with more `[identity]` lines, more `[plan]` lines, and
/// the port patterns of `more_ports` fleets' directories too.
fn config(
    env: &Env,
    authorities: &[&str],
    identity: &str,
    plan: &str,
    more_ports: &[&Path],
) -> PathBuf {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let written = env.write_config(|text| {
        if !authorities.contains(&"keys") {
            *text = text
                .lines()
                .filter(|l| !l.starts_with("trust_file"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        let first = &env.config.ports.paths[0];
        let mut paths = vec![format!("\"{first}\"")];
        for dir in more_ports {
            paths.push(format!("\"{}\"", dir.join("ttySIM*").display()));
        }
        *text = text.replace(
            &format!("paths = [\"{first}\"]"),
            &format!("paths = [{}]", paths.join(", ")),
        );
        *text = text.replace("[plan]\n", &format!("[plan]\n{plan}\n"));
        let list: Vec<String> = authorities.iter().map(|a| format!("\"{a}\"")).collect();
        text.push_str(&format!(
            "\n[identity]\nauthorities = [{}]\n{identity}\n",
            list.join(", ")
        ));
    });
    // One file and one database per config: a test holds several, and its
    // clones (the same boards) must not meet each other's nonces.
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = written.with_file_name(format!("station-{n}.toml"));
    let db = database_of(&path);
    let text = std::fs::read_to_string(&written).expect("config").replace(
        &format!("database = \"{}\"", env.config.database.display()),
        &format!("database = \"{}\"", db.display()),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// The database of a config [`config`] wrote.
fn database_of(config: &Path) -> PathBuf {
    config.with_extension("db")
}

/// A fleet of one board made from [`SEED`] (the same board as `Env`'s
/// first) in `dir`, with `faults`.
async fn clone_fleet(dir: &Path, faults: &[String]) -> Fleet {
    let options = SimOptions {
        latency: Latency::None,
        faults: faults
            .iter()
            .map(|f| f.parse::<FaultSpec>().expect("fault spec"))
            .collect(),
        ..SimOptions::default()
    };
    Fleet::start(dir, 1, SEED, options).await.expect("fleet")
}

async fn cli(args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .args(args)
        .output()
        .await
        .expect("run nrf-provd")
}

/// `nrf-provd provision --port PORT --config CONFIG [--json]`.
async fn provision(config: &Path, port: &str, json: bool) -> Output {
    let config = config.display().to_string();
    let mut args = vec!["provision", "--port", port, "--config", &config];
    if json {
        args.push("--json");
    }
    cli(&args).await
}

fn record_of(out: &Output) -> RunRecord {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

/// The failure a record ends with: (step, code, words).
fn failure(record: &RunRecord) -> (Option<Step>, Option<ReasonCode>, String) {
    (
        record.failed_step,
        record.reason_code,
        record.reason.clone().unwrap_or_default(),
    )
}

/// What the attacker does first: ask the genuine board for JWTs by hand,
/// with the modem clock unset (no `iat`/`exp`), as the issue describes.
async fn harvest_jwts(port: &str) -> Vec<String> {
    let ask = r#"AT%JWT=0,0,"","""#;
    let out = cli(&["at", "--port", port, ask, ask, ask]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jwts: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("%JWT: \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .collect();
    assert_eq!(jwts.len(), 3, "{}", text(&out.stdout));
    jwts
}

/// The daemon's records, oldest first, once it stopped.
async fn stop_and_read(daemon: Daemon, config: &Path) -> (Vec<RunRecord>, Vec<String>) {
    let (status, log) = daemon.stop_with_log().await;
    assert!(status.success(), "{}", log.join("\n"));
    (runs_in(&database_of(config)).await, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_clone_answering_with_harvested_jwts_fails_pin_with_jwt_challenge() {
    let env = Env::new(1, Latency::None, &[]).await;
    let genuine = env.fleet.identity(0);
    let jwts = harvest_jwts(&env.port(0)).await;

    let clone_dir = env.dir.path().join("clone");
    let config = config(&env, &["pin"], "", "", &[&clone_dir]);
    let mut daemon = Daemon::spawn(&config);
    let first = daemon.runs_finished(1).await;
    assert!(first[0].contains("PASSED"), "{}", first[0]);

    // The clone: the same device UUID, no identity key of its own (its
    // COSE tokens are signed by another key), and every %JWT answered
    // with one of the harvested ones.
    let _clone = clone_fleet(
        &clone_dir,
        &[
            "0:untrusted-key".into(),
            format!("0:replay-jwts={}", jwts.join(",")),
        ],
    )
    .await;
    let second = daemon.runs_finished(1).await;
    assert!(
        second[0].contains("FAILED attest jwt_challenge"),
        "{}",
        second[0]
    );
    let (runs, _) = stop_and_read(daemon, &config).await;
    assert_eq!(runs.len(), 2);
    let (passed, forged) = (&runs[0], &runs[1]);
    assert_eq!(passed.outcome, Outcome::Passed);
    assert_eq!(passed.verified_by, Some(VerifiedBy::Pin));
    assert_eq!(forged.device.device_uuid, Some(genuine.device_uuid));
    let (step, code, reason) = failure(forged);
    assert_eq!(
        (step, code),
        (Some(Step::Attest), Some(ReasonCode::JwtChallenge))
    );
    // Which claims, and why: a JWT made for no run of this station.
    assert!(
        reason.contains("is not this run's challenge")
            && reason.contains("jwt_time (no iat and no exp claim, asked for exp_delta 300"),
        "{reason}"
    );
    assert_eq!(forged.verified_by, None);
    assert!(
        forged.artifacts.is_empty(),
        "the station CA signed nothing for the clone"
    );

    // Nordic's onboarding CSV carries the genuine board's certificate only.
    let db = database_of(&config).display().to_string();
    let out = cli(&["results", "--db", &db, "--format", "onboard-csv"]).await;
    let csv = text(&out.stdout);
    let certificate = passed
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::DeviceCertificate)
        .expect("the genuine board's certificate");
    assert_eq!(
        csv,
        format!(
            "{},,,,\"{}\"\n",
            genuine.device_uuid,
            certificate.content.replace("\r\n", "\n")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvested_jwts_fail_the_jwt_step_and_jwts_without_time_claims_fail_jwt_time() {
    let env = Env::new(1, Latency::None, &[]).await;
    let jwts = harvest_jwts(&env.port(0)).await;
    // A database per board: the boards are clones, with the same nonces.
    let keys = || config(&env, &["keys"], "", "", &[]);
    let pin = || config(&env, &["pin"], "", "", &[]);

    // The board holds its key (attest passes under the trust file), but
    // answers the jwt step with a JWT harvested earlier: before issue 18 a
    // JWT without time claims and a fresh jti passed this step.
    let replaying = env.dir.path().join("replaying");
    let fleet = clone_fleet(&replaying, &[format!("0:replay-jwts={}", jwts[0])]).await;
    let out = provision(&keys(), &fleet.link(0).display().to_string(), true).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (step, code, reason) = failure(&record_of(&out));
    assert_eq!(
        (step, code),
        (Some(Step::Jwt), Some(ReasonCode::JwtChallenge)),
        "{reason}"
    );
    drop(fleet);

    // A board that leaves out iat/exp whatever it is asked: the reason
    // names the claims and what was asked.
    let no_time = env.dir.path().join("no-time");
    let fleet = clone_fleet(&no_time, &["0:jwt-no-time".into()]).await;
    let port = fleet.link(0).display().to_string();
    for (config, step) in [(keys(), Step::Jwt), (pin(), Step::Attest)] {
        let out = provision(&config, &port, true).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let (failed, code, reason) = failure(&record_of(&out));
        assert_eq!(
            (failed, code),
            (Some(step), Some(ReasonCode::JwtTime)),
            "{reason}"
        );
        assert!(
            reason.contains("no iat and no exp claim, asked for exp_delta 300"),
            "{reason}"
        );
    }

    // The genuine board passes both, its JWT carrying this run's challenge
    // and the configured audience back.
    let audience = config(&env, &["keys"], "", "jwt_audience = \"line-7\"", &[]);
    for config in [&audience, &pin()] {
        let out = provision(config, &env.port(0), true).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    }
    let runs = runs_in(&database_of(&audience)).await;
    let last_jwt = |run: &RunRecord| {
        let token = run
            .tokens
            .iter()
            .rev()
            .find(|t| t.kind == TokenKind::Jwt)
            .expect("JWT");
        serde_json::from_str::<serde_json::Value>(&token.checks_json).expect("checks")
    };
    let with_audience = runs
        .iter()
        .find(|r| r.outcome == Outcome::Passed && r.verified_by == Some(VerifiedBy::Keys))
        .expect("the keys run");
    let checks = last_jwt(with_audience);
    for name in ["jwt_challenge", "jwt_time", "jwt_audience"] {
        assert!(
            checks
                .as_array()
                .expect("array")
                .iter()
                .any(|c| c["name"] == name && c["passed"] == true),
            "{name}: {checks}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_under_a_second_uuid_fails_key_reused_naming_the_first_device() {
    let env = Env::new(1, Latency::None, &[]).await;
    let genuine = env.fleet.identity(0);
    let second_dir = env.dir.path().join("second");
    let config = config(&env, &["pin"], "", "", &[&second_dir]);
    let mut daemon = Daemon::spawn(&config);
    let first = daemon.runs_finished(1).await;
    assert!(first[0].contains("PASSED"), "{}", first[0]);

    let second = clone_fleet(&second_dir, &["0:second-uuid".into()]).await;
    let other_uuid = second.identity(0).device_uuid;
    assert_ne!(other_uuid, genuine.device_uuid);
    let line = daemon.runs_finished(1).await;
    assert!(line[0].contains("FAILED attest key_reused"), "{}", line[0]);
    let (runs, _) = stop_and_read(daemon, &config).await;
    let (step, code, reason) = failure(&runs[1]);
    assert_eq!(
        (step, code),
        (Some(Step::Attest), Some(ReasonCode::KeyReused))
    );
    assert!(
        reason.contains(&format!("device {other_uuid} answered with identity key"))
            && reason.contains(&format!(
                "pinned for device {} at station test port {}",
                genuine.device_uuid, runs[0].port
            ))
            && reason.contains(&runs[0].uid.to_string()),
        "{reason}"
    );
    assert!(runs[1].artifacts.is_empty());

    // A trust file that lists the key under both UUIDs is refused, naming
    // both lines, by check-config and by the daemon.
    let key = genuine.public_key_spki_der();
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let trust = env.dir.path().join("two-uuids.csv");
    std::fs::write(
        &trust,
        format!(
            "device_uuid,public_key\n{},{key}\n# a clone\n{other_uuid},{key}\n",
            genuine.device_uuid
        ),
    )
    .expect("write trust file");
    let keys = env.write_config(|text| {
        *text = text.replace(
            &env.trust_file().display().to_string(),
            &trust.display().to_string(),
        );
    });
    let out = cli(&["check-config", &keys.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let said = text(&out.stdout);
    let expected = format!(
        "line 4: the key of device {other_uuid} is also listed for device {} on line 2: one identity key belongs to one device",
        genuine.device_uuid
    );
    assert!(said.contains(&expected), "{said}");
    let (code, stderr) = crate::station_support::refused_start(&keys);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(&expected), "{stderr}");

    // And the nil UUID.
    std::fs::write(
        &trust,
        format!("00000000-0000-0000-0000-000000000000,{key}\n"),
    )
    .expect("write trust file");
    let out = cli(&["check-config", &keys.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout)
            .contains("line 1: device_uuid is the nil UUID (all zeros), which names no device"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_fails_cose_signatures_its_key_does_not_verify_unless_told_to_record_them() {
    let env = Env::new(1, Latency::None, &[]).await;
    // A board whose %JWTs are standard and whose COSE tokens are signed by
    // the same key over other bytes: what a real modem may look like.
    let other = env.dir.path().join("other-input");
    let fleet = clone_fleet(&other, &["0:other-signing-input".into()]).await;
    let port = fleet.link(0).display().to_string();

    let required = config(&env, &["pin"], "", "", &[]);
    let out = provision(&required, &port, true).await;
    assert_eq!(out.status.code(), Some(1));
    let record = record_of(&out);
    let (step, code, reason) = failure(&record);
    assert_eq!(
        (step, code),
        (Some(Step::Attest), Some(ReasonCode::CoseUnverified)),
        "{reason}"
    );
    assert!(
        reason.contains(
            "pinned_signature (ES256 signature does not verify with the key pinned on first sight)"
        ) && reason.contains("identity.pin_cose = \"recorded\" accepts real modems"),
        "{reason}"
    );
    assert!(record.artifacts.is_empty());

    // Told that real modems sign other bytes: the run passes on the JWTs,
    // and the record says the COSE signatures were not verified.
    let recorded = config(&env, &["pin"], "pin_cose = \"recorded\"", "", &[]);
    let out = provision(&recorded, &port, true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let record = record_of(&out);
    assert_eq!(record.verified_by, Some(VerifiedBy::Pin));
    let attest = &record.steps[3];
    assert!(
        attest
            .detail
            .contains("%ATTESTTOKEN signature NOT verified")
            && attest.detail.contains("this pass rests on the %JWTs alone"),
        "{}",
        attest.detail
    );
    for kind in [TokenKind::Identity, TokenKind::Keygen] {
        let token = record
            .tokens
            .iter()
            .find(|t| t.kind == kind)
            .expect("token");
        assert!(
            token
                .checks_json
                .contains(r#""name":"pinned_signature","passed":false"#),
            "{kind}: {}",
            token.checks_json
        );
    }

    // The genuine board (this project's signing input) passes by default.
    let out = provision(&required, &env.port(0), true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // Only the two choices exist.
    let wrong = config(&env, &["pin"], "pin_cose = \"maybe\"", "", &[]);
    let out = cli(&["check-config", &wrong.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains(
            r#"identity.pin_cose: unknown value "maybe"; expected one of "required", "recorded""#
        ),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_never_signs_or_installs_for_a_board_nobody_vouched_for() {
    // Board 0 is in the trust file; board 1 is not (a board nobody knows).
    let env = Env::new(2, Latency::None, &["1:untrusted-key"]).await;
    let config = config(&env, &["keys", "collect"], "", "", &[]);
    let mut daemon = Daemon::spawn(&config);
    daemon.runs_finished(2).await;
    let (runs, _) = stop_and_read(daemon, &config).await;
    let by_port = |i: usize| {
        runs.iter()
            .find(|r| r.port == env.port(i))
            .expect("a run on the port")
    };
    let (trusted, unknown) = (by_port(0), by_port(1));
    assert_eq!(trusted.outcome, Outcome::Passed);
    assert!(
        trusted
            .artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::DeviceCertificate)
    );
    assert_eq!(unknown.outcome, Outcome::Collected, "{:?}", unknown.reason);
    assert_eq!(unknown.verified_by, Some(VerifiedBy::Collect));
    for step in [Step::Certify, Step::Install, Step::Confirm] {
        let record = unknown
            .steps
            .iter()
            .find(|s| s.name == step)
            .expect("the step is recorded");
        assert!(
            record
                .detail
                .starts_with("skipped: nobody vouched for this device (collect)")
                && record.detail.contains("nRF Cloud's own provisioning"),
            "{step}: {}",
            record.detail
        );
    }
    assert!(
        !unknown
            .artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::DeviceCertificate),
        "no certificate for a board nobody vouched for"
    );
    assert_eq!(env.fleet.stats(1).cmng_writes, 0, "nothing installed");
    assert_eq!(env.fleet.stats(0).cmng_writes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imei_that_is_not_15_digits_with_a_luhn_check_digit_fails_identify() {
    let env = Env::new(1, Latency::None, &[]).await;
    let keys = config(&env, &["keys"], "", "", &[]);
    for (imei, why) in [
        (
            "000000000000001",
            "fails the Luhn check: its last digit should be 0",
        ),
        (
            "352656100367873",
            "fails the Luhn check: its last digit should be 2",
        ),
        ("junk352656100367872junk", "is not 15 decimal digits"),
    ] {
        let dir = env.dir.path().join(imei);
        let fleet = clone_fleet(&dir, &[format!("0:imei={imei}")]).await;
        let out = provision(&keys, &fleet.link(0).display().to_string(), true).await;
        assert_eq!(out.status.code(), Some(1), "{imei}");
        let record = record_of(&out);
        let (step, code, reason) = failure(&record);
        assert_eq!(
            (step, code),
            (Some(Step::Identify), Some(ReasonCode::Imei)),
            "{reason}"
        );
        assert!(reason.contains(imei) && reason.contains(why), "{reason}");
        assert_eq!(record.device.imei, None, "no IMEI recorded");
    }
    // Nothing reached Nordic's attestation CSV.
    let db = database_of(&keys).display().to_string();
    let out = cli(&["results", "--db", &db, "--format", "attest-csv"]).await;
    assert_eq!(text(&out.stdout), "");
}

/// What `provision` prints to a terminal and what the daemon logs, byte by
/// byte: a CR from the board is `\r`, never a carriage return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_a_board_reach_the_terminal_and_the_log_escaped() {
    let env = Env::new(1, Latency::None, &[]).await;
    let keys = config(&env, &["keys"], "", "", &[]);
    let dir = env.dir.path().join("cr-imei");
    // Inside the quotes of `+CGSN: "…"` a CR and a tab survive the line
    // (the bare `AT+CGSN` line ends at the CR, so the station finds the
    // board's dialect by its 15 digits as usual).
    let fleet = clone_fleet(&dir, &["0:imei=352656100367872\r\tINFO forged".into()]).await;
    let port = fleet.link(0).display().to_string();
    let out = provision(&keys, &port, false).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        !out.stdout
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f),
        "raw control bytes on the terminal: {stdout:?}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.last().copied(),
        Some("  reason: imei: IMEI \"352656100367872\\r\\tINFO forged\" is not 15 decimal digits"),
        "{stdout}"
    );
    let identify = lines
        .iter()
        .find(|l| l.starts_with("  identify  FAIL"))
        .expect("identify line");
    assert!(
        identify.ends_with(
            "ms  imei: IMEI \"352656100367872\\r\\tINFO forged\" is not 15 decimal digits"
        ),
        "{identify}"
    );

    // The daemon's one line per run, the same way.
    let daemon_config = env.write_config(|text| {
        *text = text.replace(
            &format!("paths = [\"{}\"]", env.config.ports.paths[0]),
            &format!("paths = [\"{}\"]", dir.join("ttySIM*").display()),
        );
    });
    let mut daemon = Daemon::spawn(&daemon_config);
    let line = daemon.runs_finished(1).await.remove(0);
    let (_, log) = daemon.stop_with_log().await;
    assert!(
        log.iter().all(|l| !l.contains('\r') && !l.contains('\t')),
        "{log:?}"
    );
    let shown = line
        .split_once("nrf_provd::run: ")
        .map(|(_, rest)| rest)
        .expect("a run line");
    assert_eq!(
        shown,
        "FAILED identify imei: IMEI \"352656100367872\\r\\tINFO forged\" is not 15 decimal digits run=1 device=- imei=-"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("INFO forged")),
        "no forged log line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_token_text_fail_malformed_before_the_ledger() {
    let env = Env::new(1, Latency::None, &[]).await;
    let keys = config(&env, &["keys"], "", "", &[]);
    let pin = config(&env, &["pin"], "", "", &[]);
    let dir = env.dir.path().join("jwt");
    let jwt = clone_fleet(&dir, &["0:control-chars@JWT".into()]).await;
    let dir = env.dir.path().join("keygen");
    let keygen = clone_fleet(&dir, &["0:control-chars@KEYGEN".into()]).await;
    for (config, fleet, step, field) in [
        (
            &keys,
            &jwt,
            Step::Jwt,
            "claim \"iss\" holds control character U+001B",
        ),
        (
            &pin,
            &jwt,
            Step::Attest,
            "claim \"iss\" holds control character U+001B",
        ),
        (
            &keys,
            &keygen,
            Step::Keygen,
            "the CSR subject's CN holds control character U+001B",
        ),
    ] {
        let port = fleet.link(0).display().to_string();
        let out = provision(config, &port, false).await;
        assert_eq!(out.status.code(), Some(1), "{step}: {}", text(&out.stdout));
        assert!(
            !out.stdout.iter().any(|b| matches!(b, 0 | 7 | 0x1b)),
            "{:?}",
            text(&out.stdout)
        );
        let stdout = text(&out.stdout);
        let reason = stdout.lines().last().unwrap_or_default();
        assert!(
            reason.starts_with("  reason: malformed: ") && reason.contains(field),
            "{step}: {stdout}"
        );
        let runs = runs_in(&database_of(config)).await;
        let run = runs.last().expect("recorded");
        assert_eq!(
            (run.failed_step, run.reason_code),
            (Some(step), Some(ReasonCode::Malformed))
        );
    }
    // Nothing of those tokens was claimed: the jti with its NUL never
    // reached the ledger.
    for config in [&keys, &pin] {
        let claimed: i64 = rusqlite::Connection::open(database_of(config))
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM nonces WHERE kind = 'jwt_jti'",
                    [],
                    |row| row.get(0),
                )
            })
            .expect("count claims");
        assert_eq!(claimed, 0);
    }
}

/// `results --format csv`, byte by byte: identify strings that start
/// formulas are neutralised with a leading `'`; the table escapes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_strings_are_data_in_the_csv_and_the_table() {
    let env = Env::new(1, Latency::None, &["0:hostile-text"]).await;
    let keys = config(&env, &["keys"], "", "", &[]);
    let out = provision(&keys, &env.port(0), false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let identify = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("  identify  ok"))
        .map(str::to_string)
        .expect("identify line");
    let id = env.fleet.identity(0);
    assert!(
        identify.ends_with(&format!(
            "ms  imei {} uuid {} fw @SUM(1+1)*cmd|' /C calc'!A0 mfw_nrf91x1_2.0.1",
            id.imei, id.device_uuid
        )),
        "{identify}"
    );
    let runs = runs_in(&database_of(&keys)).await;
    let run = &runs[0];
    assert_eq!(
        run.device.hw_version.as_deref(),
        Some("-2+3\tnRF9161 LACA A0A\rINFO forged line"),
        "the record keeps what the board said"
    );

    let db = database_of(&keys).display().to_string();
    let out = cli(&["results", "--db", &db, "--format", "csv"]).await;
    let csv = text(&out.stdout);
    let row = csv.split_once('\n').map(|(_, row)| row).expect("a row");
    let started = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("time")
    };
    let finished = run.finished_at.expect("finished");
    let expected = format!(
        "{},test,{},{},{},{:.3},passed,,,,{},{},\"'=HYPERLINK(\"\"http://x.invalid/\"\",\"\"nRF9161-LACA\"\")\",'@SUM(1+1)*cmd|' /C calc'!A0 mfw_nrf91x1_2.0.1,{},\"'-2+3\tnRF9161 LACA A0A\rINFO forged line\",,,,,\n",
        run.id,
        run.port,
        started(run.started_at),
        started(finished),
        (finished - run.started_at).as_seconds_f64(),
        id.device_uuid,
        id.imei,
        id.firmware_uuid,
    );
    assert_eq!(row, expected);

    let out = cli(&["results", "--db", &db]).await;
    assert!(
        !out.stdout.iter().any(|b| *b < 0x20 && *b != b'\n'),
        "{:?}",
        text(&out.stdout)
    );
}
