//! The `nrfcloud` identity authority: the whole plan on a simulated board,
//! with nRF Cloud played by the stand-in on loopback. Each answer nRF Cloud
//! can give ends the run as documented (a 202 vouches; a refusal is
//! `cloud_rejected`; no verdict is `cloud_unreachable`, never a pass), and
//! every run is in the ledger. One test runs the daemon itself.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::station_support::{Daemon, Env};
use nrf_cloud::{ApiKey, CloudClient, CloudSettings};
use nrf_cloud_standin::{Endpoint, Fault, StandIn, StandInConfig, Verdict};
use nrf_provd_core::ca::StationCa;
use nrf_provd_core::ledger::{LedgerReader, MemoryLedger, RunFilter};
use nrf_provd_core::plan::{
    IdentityAuthority, KeysAuthority, NrfCloudAuthority, OsRandom, PlanContext, SystemClock,
};
use nrf_provd_core::record::{Outcome, ReasonCode, RunRecord, Step, VerifiedBy};
use nrf_provd_core::station::presence;
use nrf_provd_core::station::recorder::{self, RunSettings};
use nrf_provd_core::station::{Events, LedgerGate};
use nrf_provd_daemon::config::PlanConfig;
use nrf91_at::at::{Client, ClientOptions, DialectChoice};
use nrf91_at::modem::Modem;
use nrf91_sim::memory::Board;
use nrf91_sim::{Latency, SimOptions};
use nrf91_token::trust::TrustStore;
use tokio_util::sync::CancellationToken;

const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

async fn standin() -> StandIn {
    StandIn::start(StandInConfig {
        api_key: KEY.into(),
        ..StandInConfig::default()
    })
    .await
    .expect("stand-in starts")
}

fn settings(provisioning: &str, api: &str) -> CloudSettings {
    let mut s = CloudSettings::with_urls(provisioning, api).expect("stand-in URLs");
    s.backoff_base = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(100);
    s.request_timeout = Duration::from_secs(2);
    s
}

/// One board run through the station's recorder with `authorities`.
struct Line {
    board: Board,
    ledger: Arc<MemoryLedger>,
    ctx: PlanContext,
    gate: Arc<LedgerGate>,
    _dir: tempfile::TempDir,
}

fn new_line(
    faults: &[&str],
    client: Option<CloudClient>,
    keys_first: bool,
) -> (Line, Modem<tokio::io::DuplexStream>) {
    let options = SimOptions {
        latency: Latency::None,
        faults: faults.iter().map(|f| f.parse().expect("fault")).collect(),
        ..SimOptions::default()
    };
    let (board, host) = Board::start(7, 0, options);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
    let ca = StationCa::generate("test CA", Duration::from_secs(86_400)).expect("CA");
    ca.write(&cert, &key).expect("write CA");
    let trust = Arc::new(TrustStore::parse(&board.trust_csv()).expect("trust"));
    let mut authorities: Vec<Arc<dyn IdentityAuthority>> = Vec::new();
    if keys_first {
        authorities.push(Arc::new(KeysAuthority::new(Arc::clone(&trust))));
    }
    if let Some(client) = client {
        authorities.push(Arc::new(NrfCloudAuthority::new(Arc::new(client))));
    }
    let ledger = Arc::new(MemoryLedger::new());
    let gate = LedgerGate::new(ledger.clone(), Events::default());
    let ctx = PlanContext {
        plan: PlanConfig::default(),
        authorities,
        trust,
        ca_install_pem: Some(ca.certificate_pem()),
        ca: Some(Arc::new(ca)),
        ownership: None,
        certificate_validity: Duration::from_secs(86_400),
        ledger: gate.clone(),
        clock: Arc::new(SystemClock),
        random: Arc::new(OsRandom),
    };
    let modem = Modem::new(Client::new(host, ClientOptions::default()).0);
    (
        Line {
            board,
            ledger,
            ctx,
            gate,
            _dir: dir,
        },
        modem,
    )
}

async fn run_once(line: &Line, modem: &mut Modem<tokio::io::DuplexStream>) -> RunRecord {
    let arrival = presence::probe(modem, DialectChoice::Raw, None)
        .await
        .expect("the board answers");
    let settings = RunSettings {
        station_id: "cloud-test".into(),
        run_timeout: Duration::from_secs(120),
    };
    let (abort, events) = (CancellationToken::new(), Events::default());
    let recorder = recorder::Recorder {
        ctx: &line.ctx,
        gate: &line.gate,
        settings: &settings,
        abort: &abort,
        events: &events,
        trace: &Default::default(),
    };
    let record = match recorder.run(modem, arrival, "duplex").await {
        recorder::Recorded::Run(record) => *record,
        recorder::Recorded::NotBegun(e) => panic!("not begun: {e}"),
    };
    // Nothing is lost: the ledger holds the run as it ended.
    let stored = line.ledger.runs(&RunFilter::default()).await.expect("runs");
    let same = stored
        .iter()
        .find(|r| r.uid == record.uid)
        .expect("run recorded");
    assert_eq!(same.outcome, record.outcome);
    assert_eq!(same.reason_code, record.reason_code);
    record
}

fn client(standin: &StandIn, key: &str) -> CloudClient {
    CloudClient::new(
        settings(&standin.provisioning_url(), &standin.api_url()),
        ApiKey::new(key, "test").expect("key"),
    )
    .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_vouches_and_the_station_still_checks_the_token_itself() {
    let standin = standin().await;
    let (line, mut modem) = new_line(&["0:untrusted-key"], Some(client(&standin, KEY)), false);
    standin.add_device(line.board.identity().device_uuid, Verdict::Accept);
    let record = run_once(&line, &mut modem).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    assert_eq!(record.verified_by, Some(VerifiedBy::Nrfcloud));
    assert!(
        record.steps[3].detail.contains("nRF Cloud accepted"),
        "{}",
        record.steps[3].detail
    );
    // Sent: the token exactly as the modem printed it, once.
    let asked = standin.requests_to(Endpoint::ClaimDryRun);
    assert_eq!(asked.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&asked[0].body).expect("JSON");
    assert_eq!(body["claimToken"], record.tokens[0].text.as_str());
    // Nothing the station could not check itself is called authentic.
    assert!(record.tokens.iter().all(|t| !t.authentic));
    assert!(standin.claimed().is_empty(), "a dry run claims nothing");

    // A wrong nonce never reaches nRF Cloud.
    standin.clear_requests();
    let (line, mut modem) = line_for_fault(&standin, "0:ignore-challenge");
    let record = run_once(&line, &mut modem).await;
    assert_eq!(record.reason_code, Some(ReasonCode::Nonce));
    assert!(standin.requests_to(Endpoint::ClaimDryRun).is_empty());
}

fn line_for_fault(standin: &StandIn, fault: &str) -> (Line, Modem<tokio::io::DuplexStream>) {
    let (line, modem) = new_line(&[fault], Some(client(standin, KEY)), false);
    standin.add_device(line.board.identity().device_uuid, Verdict::Accept);
    (line, modem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_nrf_cloud_can_give_ends_the_run_as_documented() {
    // (what the stand-in does, outcome, reason code, words in the reason)
    type Setup = fn(&StandIn, uuid::Uuid);
    let cases: [(&str, Setup, Outcome, Option<ReasonCode>, &str); 7] = [
        (
            "400 with a message",
            |s, u| {
                s.add_device(
                    u,
                    Verdict::Reject("device not in the trusted database".into()),
                )
            },
            Outcome::Failed,
            Some(ReasonCode::CloudRejected),
            "device not in the trusted database",
        ),
        (
            "unknown device",
            |_, _| {},
            Outcome::Failed,
            Some(ReasonCode::CloudRejected),
            "HTTP 4",
        ),
        (
            "429 with Retry-After, then 202",
            |s, u| {
                s.add_device(u, Verdict::Accept);
                let fault = Fault::Status {
                    status: 429,
                    retry_after: Some("1".into()),
                };
                s.fault(Endpoint::ClaimDryRun, fault, 1);
            },
            Outcome::Passed,
            None,
            "",
        ),
        (
            "500, then 202",
            |s, u| {
                s.add_device(u, Verdict::Accept);
                let fault = Fault::Status {
                    status: 500,
                    retry_after: None,
                };
                s.fault(Endpoint::ClaimDryRun, fault, 1);
            },
            Outcome::Passed,
            None,
            "",
        ),
        (
            "5xx on every attempt",
            |s, u| {
                s.add_device(u, Verdict::Accept);
                let fault = Fault::Status {
                    status: 503,
                    retry_after: None,
                };
                s.fault(Endpoint::ClaimDryRun, fault, 10);
            },
            Outcome::Failed,
            Some(ReasonCode::CloudUnreachable),
            "unreachable after 4 attempt",
        ),
        (
            "slower than the timeout, every attempt",
            |s, u| {
                s.add_device(u, Verdict::Accept);
                s.fault(
                    Endpoint::ClaimDryRun,
                    Fault::Delay(Duration::from_secs(5)),
                    10,
                );
            },
            Outcome::Failed,
            Some(ReasonCode::CloudUnreachable),
            "unreachable",
        ),
        (
            "a 400 that is not JSON",
            |s, u| {
                s.add_device(u, Verdict::Accept);
                let fault = Fault::Body {
                    status: 400,
                    content_type: "text/html".into(),
                    body: b"<html>bad gateway config</html>".to_vec(),
                };
                s.fault(Endpoint::ClaimDryRun, fault, 1);
            },
            Outcome::Failed,
            Some(ReasonCode::CloudRejected),
            "bad gateway config",
        ),
    ];
    for (name, setup, outcome, code, words) in cases {
        let standin = standin().await;
        let (line, mut modem) = new_line(&["0:untrusted-key"], Some(client(&standin, KEY)), false);
        setup(&standin, line.board.identity().device_uuid);
        let started = Instant::now();
        let record = run_once(&line, &mut modem).await;
        assert_eq!(record.outcome, outcome, "{name}: {:?}", record.reason);
        assert_eq!(record.reason_code, code, "{name}: {:?}", record.reason);
        let reason = record.reason.as_deref().unwrap_or_default();
        assert!(reason.contains(words), "{name}: {reason}");
        if outcome == Outcome::Failed {
            assert_eq!(record.failed_step, Some(Step::Attest), "{name}");
            assert_eq!(record.verified_by, None, "{name}");
        }
        if name.starts_with("429") {
            assert!(
                started.elapsed() >= Duration::from_secs(1),
                "{name}: Retry-After honoured"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_or_connection_is_unreachable_never_a_pass() {
    let standin = standin().await;
    let (line, mut modem) = new_line(
        &["0:untrusted-key"],
        Some(client(&standin, "not-the-key")),
        false,
    );
    standin.add_device(line.board.identity().device_uuid, Verdict::Accept);
    let record = run_once(&line, &mut modem).await;
    assert_eq!(
        record.reason_code,
        Some(ReasonCode::CloudUnreachable),
        "{:?}",
        record.reason
    );
    assert!(
        record
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("API key")
    );

    // Nothing listens: a free port, closed again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/v1/");
    let client = CloudClient::new(settings(&url, &url), ApiKey::new(KEY, "test").expect("key"))
        .expect("client");
    let (line, mut modem) = new_line(&[], Some(client), false);
    let record = run_once(&line, &mut modem).await;
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(
        record.reason_code,
        Some(ReasonCode::CloudUnreachable),
        "{:?}",
        record.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_trust_file_lists_is_judged_by_keys_without_asking_nrf_cloud() {
    let standin = standin().await;
    let (line, mut modem) = new_line(&[], Some(client(&standin, KEY)), true);
    let record = run_once(&line, &mut modem).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    assert_eq!(record.verified_by, Some(VerifiedBy::Keys));
    assert!(standin.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_asks_nrf_cloud_with_the_key_from_a_private_file() {
    let standin = standin().await;
    let env = Env::new(1, Latency::None, &["0:untrusted-key"]).await;
    standin.add_device(env.fleet.identity(0).device_uuid, Verdict::Accept);
    let key_file = env.dir.path().join("nrfcloud-api-key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let cloud = format!(
        "\n[identity]\nauthorities = [\"nrfcloud\"]\n\n[cloud]\nprovisioning_url = \"{}\"\napi_url = \"{}\"\napi_key_file = \"{}\"\n",
        standin.provisioning_url(),
        standin.api_url(),
        key_file.display()
    );
    let config = env.write_config(|text| {
        *text = text
            .lines()
            .filter(|l| !l.starts_with("trust_file"))
            .collect::<Vec<_>>()
            .join("\n");
        text.push_str(&cloud);
    });
    // Others may read the key: refused, naming the file, the key not shown.
    let (code, stderr) = crate::station_support::refused_start(&config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("nrfcloud-api-key"), "{stderr}");
    assert!(!stderr.contains(KEY), "the key is never printed: {stderr}");

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut daemon = Daemon::spawn(&config);
    let lines = daemon.runs_finished(1).await;
    assert!(lines[0].contains("PASSED"), "{lines:?}");
    assert!(
        daemon.log.iter().all(|l| !l.contains(KEY)),
        "the key is never logged"
    );
    assert!(daemon.stop().await.success());
    let runs = env.runs().await;
    assert_eq!(runs[0].verified_by, Some(VerifiedBy::Nrfcloud));
    assert_eq!(standin.requests_to(Endpoint::ClaimDryRun).len(), 1);
}
