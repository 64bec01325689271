//! The hand-off to nRF Cloud: `nrf-provd cloud claim|onboard|status` and the
//! daemon's own hand-off, against the stand-in on loopback. Runs are stored
//! in a real SQLite ledger (or made by simulated boards); what nRF Cloud
//! received is read from the stand-in's request log, what was recorded from
//! `cloud status --format json`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant, SystemTime};

use crate::station_support::{Daemon, Env};
use nrf_cloud_standin::{Endpoint, FailedShape, Fault, StandIn, StandInConfig, Verdict};
use nrf_provd_core::ca::{Issuance, StationCa};
use nrf_provd_core::ledger::{Ledger, SqliteLedger};
use nrf_provd_core::record::{
    Artifact, ArtifactKind, DeviceInfo, Outcome, RunRecord, RunStart, Step, StepRecord, TokenRecord,
};
use nrf_provd_daemon::config::VerifiedBy;
use nrf91_token::TokenKind;
use nrf91_token::encode::{self, IdentityBody};
use p256::ecdsa::SigningKey;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

fn device_uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x50503041_3633_4261_8000_000000000000 | n)
}

async fn standin(config: StandInConfig) -> StandIn {
    StandIn::start(StandInConfig {
        api_key: KEY.into(),
        polls_to_finish: 2,
        ..config
    })
    .await
    .expect("stand-in starts")
}

/// A station's database and a config whose `[cloud]` points at `standin`.
struct Site {
    dir: tempfile::TempDir,
    db: PathBuf,
    config: PathBuf,
    /// Signs one real token; other tokens reuse its signature part (the
    /// stand-in reads the device from the body and judges no signature).
    signature: String,
    ca: StationCa,
}

impl Site {
    fn new(standin: &StandIn) -> Site {
        Site::with_cloud(standin, "")
    }

    /// `extra` goes into `[cloud]`.
    fn with_cloud(standin: &StandIn, extra: &str) -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("results.db");
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, KEY).expect("key file");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let config = dir.path().join("station.toml");
        std::fs::write(
            &config,
            cloud_config(
                &db,
                &standin.provisioning_url(),
                &standin.api_url(),
                &key_file,
                extra,
            ),
        )
        .expect("config");
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let token = encode::identity_token(&body(0), &key);
        let signature = token.split_once('.').expect("two parts").1.to_string();
        let ca = StationCa::generate("hand-off test CA", Duration::from_secs(86_400)).expect("CA");
        drop(SqliteLedger::open(&db).expect("create database"));
        Site {
            dir,
            db,
            config,
            signature,
            ca,
        }
    }

    fn token(&self, n: u128) -> String {
        let body = encode::identity_body(&body(n));
        let mut token = encode::join_b64(&body, b"");
        token.push_str(&self.signature);
        token
    }

    fn certificate(&self, common_name: &str) -> String {
        let device = SigningKey::random(&mut rand::rngs::OsRng);
        let spki =
            p256::pkcs8::EncodePublicKey::to_public_key_der(device.verifying_key()).expect("spki");
        self.ca
            .sign_device(
                common_name,
                spki.as_bytes(),
                Issuance {
                    now: SystemTime::now(),
                    validity: Duration::from_secs(3600),
                    serial: rand::random(),
                },
            )
            .expect("device certificate")
            .pem
    }

    /// Store one finished run of device `n` (a certificate installed when
    /// `certificate` is given).
    async fn store(&self, n: u128, outcome: Outcome, certificate: Option<String>) {
        let ledger = SqliteLedger::open(&self.db).expect("open database");
        store_run(&ledger, self.token(n), n, outcome, certificate).await;
    }

    /// Store runs of devices `range`, passed, without certificates.
    async fn store_many(&self, range: std::ops::Range<u128>) {
        let ledger = SqliteLedger::open(&self.db).expect("open database");
        for n in range {
            store_run(&ledger, self.token(n), n, Outcome::Passed, None).await;
        }
    }

    fn cli(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(crate::station_support::binary());
        command
            .env_remove("NRF_PROVD_LOG")
            .arg("cloud")
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .kill_on_drop(true)
            .stderr(std::process::Stdio::piped());
        command
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.cli(args).output().await.expect("run nrf-provd cloud")
    }

    /// `cloud status --format json`, by device.
    async fn status(&self) -> Vec<Value> {
        let out = self.run(&["status", "--format", "json"]).await;
        assert!(out.status.success(), "status: {}", text(&out.stderr));
        let rows: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        rows.as_array().expect("array").clone()
    }

    async fn state_of(&self, n: u128) -> Value {
        let uuid = device_uuid(n).to_string();
        self.status()
            .await
            .into_iter()
            .find(|r| r["device_uuid"] == uuid.as_str())
            .unwrap_or_else(|| panic!("device {uuid} not in the status"))
    }
}

fn body(n: u128) -> IdentityBody {
    IdentityBody {
        msg_type: 1,
        device_uuid: *device_uuid(n).as_bytes(),
        device_type: 4,
        firmware_uuid: [7; 16],
        nonce: rand::random(),
    }
}

fn cloud_config(db: &Path, provisioning: &str, api: &str, key_file: &Path, extra: &str) -> String {
    format!(
        r#"station_id = "handoff-test"
database = "{db}"

[identity]
authorities = ["collect"]

[ports]
paths = ["/nonexistent/nrf91-*"]

[plan]
steps = ["probe", "identify", "attest"]

[cloud]
provisioning_url = "{provisioning}"
api_url = "{api}"
api_key_file = "{key}"
{timeouts}claim_tags = ["line-3", "nrf-cloud-onboarding"]
onboard_sub_type = "station-7"
onboard_tags = ["line-3"]
bulk_op_poll = 0.05
{extra}
"#,
        db = db.display(),
        key = key_file.display(),
        timeouts = if extra.contains("request_timeout") {
            ""
        } else {
            "request_timeout = 2\nattempts = 3\n"
        },
    )
}

async fn store_run(
    ledger: &SqliteLedger,
    token: String,
    n: u128,
    outcome: Outcome,
    certificate: Option<String>,
) {
    let at = OffsetDateTime::now_utc();
    let start = RunStart {
        uid: Uuid::from_bytes(rand::random()),
        station_id: "handoff-test".into(),
        port: format!("/dev/nrf91-{}", n % 8),
        started_at: at,
        trace: Default::default(),
    };
    let id = ledger.begin_run(&start).await.expect("begin");
    let mut record = RunRecord::begun(id, &start);
    record.finished_at = Some(at);
    record.outcome = outcome;
    record.verified_by = match outcome {
        Outcome::Collected => Some(VerifiedBy::Collect),
        Outcome::Passed => Some(VerifiedBy::Keys),
        _ => None,
    };
    if outcome == Outcome::Failed {
        record.fail(
            Outcome::Failed,
            Some(Step::Attest),
            nrf_provd_core::record::ReasonCode::Signature,
            "forged",
        );
    }
    record.device = DeviceInfo {
        device_uuid: Some(device_uuid(n)),
        imei: Some(format!("3513588{n:08}")),
        ..DeviceInfo::default()
    };
    let step = |name| StepRecord {
        name,
        started_at: at,
        duration: Duration::from_millis(1),
        passed: true,
        attempts: 1,
        detail: String::new(),
    };
    record.steps = vec![step(Step::Attest)];
    record.tokens = vec![TokenRecord {
        kind: TokenKind::Identity,
        text: token,
        authentic: outcome == Outcome::Passed,
        checks_json: "{}".into(),
    }];
    if let Some(pem) = certificate {
        record.steps.push(step(Step::Install));
        record.artifacts.push(Artifact {
            kind: ArtifactKind::DeviceCertificate,
            sec_tag: Some(16_842_753),
            content: pem,
        });
    }
    ledger.finish_run(&record).await.expect("finish");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Rows of each bulk claim the stand-in received.
fn claim_rows(standin: &StandIn) -> Vec<usize> {
    standin
        .requests_to(Endpoint::BulkClaim)
        .iter()
        .map(|r| {
            r.body
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_sends_passed_runs_in_batches_of_1000_once_and_collected_only_with_the_flag() {
    let standin = standin(StandInConfig::default()).await;
    let site = Site::new(&standin);
    for n in 0..1003 {
        standin.add_device(device_uuid(n), Verdict::Accept);
    }
    site.store_many(0..1001).await;
    // A device's latest passed run is the one claimed.
    site.store(5, Outcome::Passed, None).await;
    site.store(1001, Outcome::Collected, None).await;
    site.store(1002, Outcome::Failed, None).await;

    let out = site.run(&["claim"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("batch 1: sending 1000 row(s)"), "{stderr}");
    assert!(stderr.contains("batch 2: sending 1 row(s)"), "{stderr}");
    assert!(stderr.contains("claimed 1001 device(s)"), "{stderr}");
    assert_eq!(claim_rows(&standin), [1000, 1]);
    let claimed = standin.claimed();
    assert_eq!(claimed.len(), 1001);
    assert!(
        !claimed.contains_key(&device_uuid(1001)),
        "collected only with the flag"
    );
    assert!(
        !claimed.contains_key(&device_uuid(1002)),
        "never a failed run"
    );
    assert_eq!(
        claimed[&device_uuid(0)].tags,
        ["line-3", "nrf-cloud-onboarding"],
        "provisioning tags from [cloud] claim_tags"
    );
    let request = &standin.requests_to(Endpoint::BulkClaim)[0];
    assert_eq!(request.content_type.as_deref(), Some("text/csv"));

    // Twice: nothing is sent again.
    standin.clear_requests();
    let out = site.run(&["claim"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing waiting"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        standin.requests().is_empty(),
        "a second run re-sends nothing"
    );

    // The collected device, with the flag: one request, one row.
    let out = site.run(&["claim", "--include-collected"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(claim_rows(&standin), [1]);
    assert!(standin.claimed().contains_key(&device_uuid(1001)));
    let state = site.state_of(1001).await;
    assert_eq!(state["state"], "claimed");
    assert_eq!(state["attempts"], 1);
    assert!(state["claimed_at"].is_string());
    let failed = device_uuid(1002).to_string();
    assert!(
        site.status()
            .await
            .iter()
            .all(|r| r["device_uuid"] != failed.as_str()),
        "a device with only a failed run is nothing to hand off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_refused_in_a_bulk_answer_keep_their_error_and_only_they_are_sent_again() {
    for shape in [FailedShape::Objects, FailedShape::Strings] {
        let standin = standin(StandInConfig {
            failed_shape: shape,
            ..StandInConfig::default()
        })
        .await;
        let site = Site::new(&standin);
        for n in 0..5 {
            let verdict = if n == 1 || n == 3 {
                Verdict::Reject(format!("Device {n} is not genuine"))
            } else {
                Verdict::Accept
            };
            standin.add_device(device_uuid(n), verdict);
            site.store(n, Outcome::Passed, None).await;
        }
        let out = site.run(&["claim"]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{shape:?}: {stderr}");
        assert!(
            stderr.contains("claimed 3 device(s), 2 refused"),
            "{stderr}"
        );
        assert!(stderr.contains("Device 1 is not genuine"), "{stderr}");
        for n in [1, 3] {
            let state = site.state_of(n).await;
            assert_eq!(state["state"], "claim-refused", "{state}");
            assert_eq!(state["error_step"], "claim");
            assert!(
                state["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains(&format!("Device {n} is not genuine"))),
                "{state}"
            );
        }
        assert_eq!(site.state_of(0).await["state"], "claimed");

        // Next time: only the two refused rows.
        standin.clear_requests();
        let out = site.run(&["claim"]).await;
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert_eq!(claim_rows(&standin), [2]);
        assert_eq!(site.state_of(1).await["attempts"], 2);
        assert_eq!(
            site.state_of(0).await["attempts"],
            1,
            "a claimed row is not sent again"
        );

        // nRF Cloud changes its mind: both claimed, their errors gone.
        standin.add_device(device_uuid(1), Verdict::Accept);
        standin.add_device(device_uuid(3), Verdict::Accept);
        let out = site.run(&["claim"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let state = site.state_of(3).await;
        assert_eq!(state["state"], "claimed", "{state}");
        assert_eq!(state["last_error"], Value::Null);
        assert_eq!(standin.claimed().len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_gives_the_documented_outcome_and_loses_no_record() {
    // (name, fault on the bulk claim, exit code, words on stderr)
    type Case = (&'static str, Option<(Fault, usize)>, i32, &'static str);
    let cases: Vec<Case> = vec![
        (
            "429 with Retry-After, then success",
            Some((
                Fault::Status {
                    status: 429,
                    retry_after: Some("1".into()),
                },
                1,
            )),
            0,
            "claimed 3 device(s)",
        ),
        (
            "500, then success",
            Some((
                Fault::Status {
                    status: 500,
                    retry_after: None,
                },
                1,
            )),
            0,
            "claimed 3 device(s)",
        ),
        (
            "503 on every attempt",
            Some((
                Fault::Status {
                    status: 503,
                    retry_after: None,
                },
                3,
            )),
            2,
            "unreachable after 3 attempt(s)",
        ),
        (
            "slower than the timeout",
            Some((Fault::Delay(Duration::from_secs(4)), 3)),
            2,
            "no answer within 2.0 s",
        ),
        (
            "a 400 that refuses the request",
            Some((
                Fault::Status {
                    status: 400,
                    retry_after: None,
                },
                1,
            )),
            1,
            "HTTP 400",
        ),
    ];
    for (name, fault, code, words) in cases {
        let standin = standin(StandInConfig::default()).await;
        let site = Site::new(&standin);
        for n in 0..3 {
            standin.add_device(device_uuid(n), Verdict::Accept);
            site.store(n, Outcome::Passed, None).await;
        }
        if let Some((fault, times)) = fault {
            standin.fault(Endpoint::BulkClaim, fault, times);
        }
        let started = Instant::now();
        let out = site.run(&["claim"]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(stderr.contains(words), "{name}: {stderr}");
        if name.starts_with("429") {
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "{name}: Retry-After honoured"
            );
        }
        // No record lost: the ledger calls claimed exactly what nRF Cloud
        // answered for, and the next run (nRF Cloud well again) sends
        // exactly the rest. (A request that timed out may still have
        // claimed on nRF Cloud's side: then the next run hears "already
        // claimed".)
        let claimed = |rows: &[Value]| rows.iter().filter(|r| r["state"] == "claimed").count();
        assert_eq!(
            claimed(&site.status().await),
            if code == 0 { 3 } else { 0 },
            "{name}"
        );
        standin.clear_requests();
        let out = site.run(&["claim"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}, again: {}",
            text(&out.stderr)
        );
        assert_eq!(standin.claimed().len(), 3, "{name}");
        assert_eq!(claimed(&site.status().await), 3, "{name}");
        let expect: &[usize] = if code == 0 { &[] } else { &[3] };
        assert_eq!(claim_rows(&standin), expect, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_a_refused_connection_and_no_cloud_section_exit_2_and_record_nothing() {
    let standin = standin(StandInConfig::default()).await;
    // The key file holds another key.
    let site = Site::new(&standin);
    standin.add_device(device_uuid(0), Verdict::Accept);
    site.store(0, Outcome::Passed, None).await;
    std::fs::write(site.dir.path().join("api-key"), "not-the-key").expect("key");
    let out = site.run(&["claim"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refused the API key (HTTP 401)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(KEY) && !stderr.contains("not-the-key"),
        "{stderr}"
    );
    assert_eq!(site.state_of(0).await["state"], "waiting");
    assert_eq!(
        standin.requests_to(Endpoint::BulkClaim).len(),
        1,
        "a 401 is never retried"
    );

    // Nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/");
    std::fs::write(
        &site.config,
        cloud_config(&site.db, &url, &url, &site.dir.path().join("api-key"), ""),
    )
    .expect("config");
    let out = site.run(&["claim"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert_eq!(site.state_of(0).await["state"], "waiting");

    // Malformed JSON on a 200: the claim may have happened; the next run
    // hears "already claimed" and records it as claimed.
    std::fs::write(site.dir.path().join("api-key"), KEY).expect("key");
    std::fs::write(
        &site.config,
        cloud_config(
            &site.db,
            &standin.provisioning_url(),
            &standin.api_url(),
            &site.dir.path().join("api-key"),
            "",
        ),
    )
    .expect("config");
    standin.fault(Endpoint::BulkClaim, Fault::MalformedJson, 1);
    let out = site.run(&["claim"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unexpected body"), "{stderr}");
    let state = site.state_of(0).await;
    assert_eq!(state["state"], "claim-refused", "{state}");
    // The stand-in applied no claim for the faulted request; claim it the
    // way a lost answer leaves it: claimed on nRF Cloud, not in the ledger.
    let client = nrf_cloud::CloudClient::new(
        nrf_cloud::CloudSettings::with_urls(&standin.provisioning_url(), &standin.api_url())
            .expect("settings"),
        nrf_cloud::ApiKey::new(KEY, "test").expect("key"),
    )
    .expect("client");
    client
        .claim(&site.token(0), &[])
        .await
        .expect("claimed elsewhere");
    let out = site.run(&["claim"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("(1 already claimed)"), "{stderr}");
    assert_eq!(site.state_of(0).await["state"], "claimed");

    // No [cloud] section.
    std::fs::write(&site.config, format!("station_id = \"s\"\ndatabase = \"{}\"\n[identity]\nauthorities = [\"collect\"]\n[ports]\npaths = [\"/nonexistent\"]\n[plan]\nsteps = [\"probe\", \"identify\", \"attest\"]\n", site.db.display())).expect("config");
    let out = site.run(&["onboard"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no [cloud] section"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_follows_the_bulk_operation_to_succeeded_and_to_failed() {
    let standin = standin(StandInConfig::default()).await;
    let site = Site::new(&standin);
    for n in 0..3 {
        let cert = site.certificate(&device_uuid(n).to_string());
        site.store(n, Outcome::Passed, Some(cert)).await;
    }
    // A passed run without an installed certificate is not onboarded.
    site.store(9, Outcome::Passed, None).await;
    let out = site.run(&["onboard"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("to SUCCEEDED or FAILED"), "{stderr}");
    assert!(
        stderr.contains("onboarded 3 device(s), 0 refused"),
        "{stderr}"
    );
    assert_eq!(standin.onboarded().len(), 3);
    let onboard = &standin.requests_to(Endpoint::Onboard)[0];
    let body = text(&onboard.body);
    assert!(
        body.starts_with(&format!(
            "{},station-7,line-3,APP|MODEM,\"-----BEGIN CERTIFICATE-----",
            device_uuid(0)
        )),
        "{body}"
    );
    assert!(
        standin.requests_to(Endpoint::BulkOp).len() >= 2,
        "followed until final"
    );
    let state = site.state_of(1).await;
    assert_eq!(state["state"], "onboarded", "{state}");
    assert!(
        state["bulk_op_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("01STANDIN"))
    );
    assert_eq!(state["bulk_op_row"], 1);
    assert_eq!(site.state_of(9).await["state"], "waiting");

    standin.clear_requests();
    let out = site.run(&["onboard"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        standin.requests().is_empty(),
        "onboarded devices are not sent again"
    );

    // FAILED: a device id nRF Cloud refuses fails its row only.
    let bad = site.certificate("Not A Device Id");
    site.store(
        20,
        Outcome::Passed,
        Some(site.certificate(&device_uuid(20).to_string())),
    )
    .await;
    site.store(21, Outcome::Passed, Some(bad)).await;
    site.store(
        22,
        Outcome::Passed,
        Some(site.certificate(&device_uuid(22).to_string())),
    )
    .await;
    let out = site.run(&["onboard"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("onboarded 2 device(s), 1 refused"),
        "{stderr}"
    );
    let state = site.state_of(21).await;
    assert_eq!(state["state"], "onboard-refused", "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Invalid device id")),
        "{state}"
    );
    assert!(
        standin.requests_to(Endpoint::ErrorSummary).len() == 1,
        "errors fetched"
    );
    assert_eq!(site.state_of(20).await["state"], "onboarded");
    assert_eq!(site.state_of(22).await["state"], "onboarded");

    // Only the refused one is sent again.
    standin.clear_requests();
    let out = site.run(&["onboard"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let sent = standin.requests_to(Endpoint::Onboard);
    assert_eq!(sent.len(), 1);
    assert!(
        text(&sent[0].body).starts_with("Not A Device Id,"),
        "{}",
        text(&sent[0].body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_what_would_be_sent_and_sends_nothing() {
    let standin = standin(StandInConfig::default()).await;
    let site = Site::new(&standin);
    standin.add_device(device_uuid(0), Verdict::Accept);
    let cert = site.certificate(&device_uuid(0).to_string());
    site.store(0, Outcome::Passed, Some(cert.clone())).await;
    site.store(1, Outcome::Collected, None).await;

    let out = site
        .run(&["claim", "--dry-run", "--include-collected"])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "\"{}\",\"line-3,nrf-cloud-onboarding\"\n\"{}\",\"line-3,nrf-cloud-onboarding\"\n",
            site_token_of(&site, 0).await,
            site_token_of(&site, 1).await
        )
    );
    assert!(
        stderr.contains("would send 2 row(s): POST http://"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}  run 2  collected", device_uuid(1))),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was sent"), "{stderr}");

    let out = site.run(&["onboard", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(cert.trim()),
        "{}",
        text(&out.stdout)
    );

    assert!(standin.requests().is_empty(), "a dry run sends nothing");
    assert!(site.status().await.iter().all(|r| r["state"] == "waiting"));
}

/// The identity token stored for device `n` (read back from the ledger).
async fn site_token_of(site: &Site, n: u128) -> String {
    let runs = crate::station_support::runs_in(&site.db).await;
    runs.iter()
        .rev()
        .find(|r| r.device.device_uuid == Some(device_uuid(n)))
        .map(|r| r.tokens[0].text.clone())
        .expect("stored run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_killed_in_the_middle_resumes_where_it_stopped() {
    let standin = standin(StandInConfig::default()).await;
    // Long enough that no attempt times out before the kill.
    let site = Site::with_cloud(&standin, "request_timeout = 30\nattempts = 1");
    for n in 0..1002 {
        standin.add_device(device_uuid(n), Verdict::Accept);
    }
    site.store_many(0..1002).await;
    // First run: its first request hangs and the process is killed while
    // it waits. Second run: the first request is answered, the second
    // hangs, the process is killed.
    standin.fault(
        Endpoint::BulkClaim,
        Fault::Delay(Duration::from_secs(60)),
        1,
    );
    standin.fault(Endpoint::BulkClaim, Fault::Delay(Duration::ZERO), 1);
    standin.fault(
        Endpoint::BulkClaim,
        Fault::Delay(Duration::from_secs(60)),
        1,
    );
    let standin_requests = || standin.requests_to(Endpoint::BulkClaim).len();
    let mut child = site.cli(&["claim"]).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while standin_requests() < 1 {
        assert!(Instant::now() < deadline, "no claim request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing answered yet: kill it mid-request.
    child.start_kill().expect("kill");
    let status = child.wait().await.expect("wait");
    assert!(!status.success());
    assert!(site.status().await.iter().all(|r| r["state"] == "waiting"));

    // Again, with the second request hanging instead.
    let mut child = site.cli(&["claim"]).spawn().expect("spawn");
    while standin_requests() < 3 {
        assert!(Instant::now() < deadline, "no second request");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let claimed: usize = site
        .status()
        .await
        .iter()
        .filter(|r| r["state"] == "claimed")
        .count();
    assert_eq!(
        claimed, 1000,
        "the first batch was recorded before the second was sent"
    );

    // The rest: two rows, nothing else sent again.
    standin.clear_requests();
    let out = site.run(&["claim"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(claim_rows(&standin), [2]);
    assert_eq!(standin.claimed().len(), 1002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_killed_while_following_its_bulk_operation_follows_it_again() {
    let standin = standin(StandInConfig {
        polls_to_finish: 40,
        ..StandInConfig::default()
    })
    .await;
    let site = Site::with_cloud(&standin, "");
    for n in 0..2 {
        site.store(
            n,
            Outcome::Passed,
            Some(site.certificate(&device_uuid(n).to_string())),
        )
        .await;
    }
    let mut child = site.cli(&["onboard"]).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while standin.requests_to(Endpoint::BulkOp).is_empty() {
        assert!(Instant::now() < deadline, "never polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().expect("kill");
    let _ = child.wait().await;
    let state = site.state_of(0).await;
    assert_eq!(state["state"], "onboarding", "{state}");
    let op = state["bulk_op_id"].as_str().expect("op id").to_string();

    let out = site.run(&["onboard"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        standin.requests_to(Endpoint::Onboard).len(),
        1,
        "not sent again"
    );
    assert!(
        standin
            .requests_to(Endpoint::BulkOp)
            .iter()
            .all(|r| r.path_and_query.ends_with(&op)),
        "the same operation followed"
    );
    assert_eq!(site.state_of(1).await["state"], "onboarded");
    assert_eq!(standin.onboarded().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_with_hand_off_claim_claims_by_itself_and_stops_cleanly() {
    let standin = standin(StandInConfig::default()).await;
    let env = Env::new(1, nrf91_sim::Latency::None, &[]).await;
    standin.add_device(env.fleet.identity(0).device_uuid, Verdict::Accept);
    let key_file = env.dir.path().join("nrfcloud-api-key");
    std::fs::write(&key_file, KEY).expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let cloud = format!(
        "\n[cloud]\nprovisioning_url = \"{}\"\napi_url = \"{}\"\napi_key_file = \"{}\"\nhand_off = \"claim\"\nhand_off_every = 0.2\n",
        standin.provisioning_url(),
        standin.api_url(),
        key_file.display()
    );
    let config = env.write_config(|text| text.push_str(&cloud));
    let mut daemon = Daemon::spawn(&config);
    let lines = daemon.runs_finished(1).await;
    assert!(lines[0].contains("PASSED"), "{lines:?}");
    daemon
        .wait_for_log(&["nRF Cloud hand-off", "1 claimed"])
        .await;
    assert!(
        standin
            .claimed()
            .contains_key(&env.fleet.identity(0).device_uuid)
    );

    // While the daemon hands off, another hand-off is refused; status reads.
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::station_support::binary())
            .arg("cloud")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("cli")
    };
    let out = cli(&["claim"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("hands off from this database now"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 claimed"),
        "{}",
        text(&out.stdout)
    );

    let (status, log) = daemon.stop_with_log().await;
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("nRF Cloud hand-off stopped")),
        "{log:?}"
    );
    // One claim, however many passes ran.
    assert_eq!(standin.requests_to(Endpoint::BulkClaim).len(), 1);

    // A restart sends nothing again.
    let mut daemon = Daemon::spawn(&config);
    daemon.wait_for_log(&["nRF Cloud hand-off started"]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(daemon.stop().await.success());
    assert_eq!(standin.requests_to(Endpoint::BulkClaim).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_board_ends_collected_and_is_claimed_with_include_collected() {
    let standin = standin(StandInConfig::default()).await;
    let mut env = Env::new(1, nrf91_sim::Latency::None, &["0:untrusted-key"]).await;
    env.config.identity.authorities = vec![VerifiedBy::Collect];
    env.config.trust_file = None;
    let uuid = env.fleet.identity(0).device_uuid;
    standin.add_device(uuid, Verdict::Accept);
    let (station, mut events, serving) = env.station();
    let runs = crate::station_support::finished_runs(&mut events, 1).await;
    station.shutdown();
    serving.await.expect("station stops");
    drop(station);
    assert_eq!(runs[0].outcome, Outcome::Collected, "{:?}", runs[0].reason);

    let key_file = env.dir.path().join("api-key");
    std::fs::write(&key_file, KEY).expect("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = env.dir.path().join("cloud.toml");
    std::fs::write(
        &config,
        cloud_config(
            &env.config.database,
            &standin.provisioning_url(),
            &standin.api_url(),
            &key_file,
            "",
        ),
    )
    .expect("config");
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::station_support::binary())
            .arg("cloud")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("cli")
    };
    let out = cli(&["claim"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        standin.requests().is_empty(),
        "collected runs need the flag"
    );
    let out = cli(&["claim", "--include-collected"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(standin.claimed().contains_key(&uuid));
    let sent = &standin.requests_to(Endpoint::BulkClaim)[0];
    assert!(
        text(&sent.body).contains(&runs[0].tokens[0].text),
        "the %ATTESTTOKEN as the modem printed it"
    );
    let out = cli(&["status"]);
    let table = text(&out.stdout);
    assert!(
        table.contains(&uuid.to_string()) && table.contains("claimed"),
        "{table}"
    );
}

/// `nrf-provd deliveries --json` of `site` (its config has `[cloud]`).
async fn deliveries(site: &Site, args: &[&str]) -> (Option<i32>, Value) {
    let out = tokio::process::Command::new(crate::station_support::binary())
        .env_remove("NRF_PROVD_LOG")
        .arg("deliveries")
        .arg("--config")
        .arg(&site.config)
        .arg("--json")
        .args(args)
        .output()
        .await
        .expect("run nrf-provd deliveries");
    let shown = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stderr)));
    (out.status.code(), shown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_lists_the_devices_still_owed_to_nrf_cloud_with_nrf_clouds_refusal() {
    let standin = standin(StandInConfig::default()).await;
    let site = Site::new(&standin);
    for n in 0..3 {
        let verdict = if n == 1 {
            Verdict::Reject(format!("Device {n} is not genuine"))
        } else {
            Verdict::Accept
        };
        standin.add_device(device_uuid(n), verdict);
        site.store(n, Outcome::Passed, None).await;
    }
    let (code, shown) = deliveries(&site, &[]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert_eq!(shown["sinks"][0]["sink"], "cloud-claim", "{shown}");
    assert_eq!(shown["sinks"][0]["owed"], 3, "{shown}");
    assert_eq!(shown["sinks"][1]["sink"], "cloud-onboard", "{shown}");
    assert_eq!(shown["sinks"][1]["owed"], 0, "nothing installed: {shown}");

    let out = site.run(&["claim"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let (code, shown) = deliveries(&site, &["--sink", "cloud-claim"]).await;
    assert_eq!(code, Some(0), "a refusal is no dead letter: {shown}");
    let sink = &shown["sinks"][0];
    assert_eq!(
        (&sink["owed"], &sink["retrying"], &sink["dead"]),
        (&Value::from(1), &Value::from(1), &Value::from(0)),
        "{shown}"
    );
    let rows = shown["deliveries"].as_array().expect("deliveries");
    assert_eq!(rows.len(), 1, "{shown}");
    assert_eq!(rows[0]["attempts"], 1);
    assert!(
        rows[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Device 1 is not genuine")),
        "{shown}"
    );
}
