//! The whole ten-step plan in memory: the project's AT client and a
//! simulated board joined by `tokio::io::duplex`, tokio's paused clock, a
//! fixed challenge source, a fixed CA and an in-memory ledger — so the
//! record is exact, and every token fault (a hostile board answering with
//! the wrong kind of token, a replay, a forgery) fails the step it must
//! fail with the reason it must give.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nrf_provd_core::ca::StationCa;
use nrf_provd_core::ledger::{Binding, BindingOutcome, Ledger, MemoryLedger, SqliteLedger};
use nrf_provd_core::plan::authority::{IdentityCase, LaterTokens, fingerprint};
use nrf_provd_core::plan::{
    Clock, CollectAuthority, FollowingClock, IdentityAuthority, Judgement, KeysAuthority,
    PinAuthority, PlanContext, SeededRandom, Vouch,
};
use nrf_provd_core::plan::{PinCose, PlanConfig};
use nrf_provd_core::record::{Outcome, ReasonCode, RunRecord, Step, VerifiedBy};
use nrf_provd_core::station::presence;
use nrf_provd_core::station::recorder::{self, RunSettings};
use nrf_provd_core::station::{Events, LedgerGate};
use nrf91_at::at::{Client, ClientOptions, DialectChoice};
use nrf91_at::modem::Modem;
use nrf91_sim::memory::Board;
use nrf91_sim::{Latency, SimOptions};
use nrf91_token::TokenKind;
use nrf91_token::trust::TrustStore;
use time::macros::datetime;
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

const SEED: u64 = 2026;
const CHALLENGE_SEED: u64 = 42;

fn fixture(name: &str) -> std::path::PathBuf {
    testkit::fixtures::path(name)
}

/// The fixed station CA of tests/fixtures (made with OpenSSL), so that a
/// device certificate is the same bytes every run.
pub(crate) fn fixed_ca(dir: &Path) -> StationCa {
    let key = dir.join("ca.key");
    std::fs::copy(fixture("openssl-ca.key"), &key).expect("copy CA key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    StationCa::load(&fixture("openssl-ca.pem"), &key).expect("fixture CA loads")
}

pub(crate) struct Line {
    pub(crate) board: Board,
    pub(crate) ctx: PlanContext,
    pub(crate) gate: Arc<LedgerGate>,
    pub(crate) _dir: tempfile::TempDir,
}

fn line(faults: &[&str], plan: PlanConfig) -> (Line, DuplexStream) {
    line_with(
        faults,
        plan,
        &[VerifiedBy::Keys],
        Arc::new(MemoryLedger::new()),
    )
}

/// A line whose identity authorities are `by`, in order, over `ledger`
/// (shared by lines that must see the same pins).
fn line_with(
    faults: &[&str],
    plan: PlanConfig,
    by: &[VerifiedBy],
    ledger: Arc<dyn Ledger>,
) -> (Line, DuplexStream) {
    let options = SimOptions {
        latency: Latency::Realistic,
        faults: faults.iter().map(|f| f.parse().expect("fault")).collect(),
        ..SimOptions::default()
    };
    let (board, host) = Board::start(SEED, 0, options);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fixed_ca(dir.path());
    let trust = Arc::new(TrustStore::parse(&board.trust_csv()).expect("trust file"));
    // As the station does: the plan's ledger is behind the health gate.
    let gate = LedgerGate::new(ledger, Events::default());
    let clock: Arc<dyn Clock> =
        Arc::new(FollowingClock::starting_at(datetime!(2026-12-01 08:00 UTC)));
    let authorities: Vec<Arc<dyn IdentityAuthority>> = by
        .iter()
        .map(|by| -> Arc<dyn IdentityAuthority> {
            match by {
                VerifiedBy::Keys => Arc::new(KeysAuthority::new(Arc::clone(&trust))),
                VerifiedBy::Pin => Arc::new(PinAuthority::new(
                    gate.clone(),
                    Arc::clone(&clock),
                    PinCose::Required,
                )),
                VerifiedBy::Collect => Arc::new(CollectAuthority),
                VerifiedBy::Nrfcloud => {
                    panic!("nrfcloud needs a stand-in: tests/identity_cloud.rs")
                }
            }
        })
        .collect();
    let ctx = PlanContext {
        plan,
        authorities,
        trust,
        ca_install_pem: Some(ca.certificate_pem()),
        ca: Some(Arc::new(ca)),
        ownership: None,
        certificate_validity: Duration::from_secs(30 * 86_400),
        ledger: gate.clone(),
        clock,
        random: Arc::new(SeededRandom::new(CHALLENGE_SEED)),
    };
    (
        Line {
            board,
            ctx,
            gate,
            _dir: dir,
        },
        host,
    )
}

pub(crate) fn modem(host: DuplexStream) -> Modem<DuplexStream> {
    Modem::new(Client::new(host, ClientOptions::default()).0)
}

/// One run of the plan on the board, through the station's own recorder
/// (begun and finished in the ledger).
pub(crate) async fn run_once(line: &Line, modem: &mut Modem<DuplexStream>) -> RunRecord {
    // As the station does: a board is there (the link settled) before a run.
    let arrival = presence::probe(modem, DialectChoice::Raw, None)
        .await
        .expect("the board answers");
    let settings = RunSettings {
        station_id: "memory".into(),
        run_timeout: Duration::from_secs(180),
    };
    let abort = CancellationToken::new();
    let events = Events::default();
    let recorder = recorder::Recorder {
        ctx: &line.ctx,
        gate: &line.gate,
        settings: &settings,
        abort: &abort,
        events: &events,
        trace: &Default::default(),
    };
    match recorder.run(modem, arrival, "duplex").await {
        recorder::Recorded::Run(record) => *record,
        recorder::Recorded::NotBegun(e) => panic!("the memory ledger refused a run: {e}"),
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn the_full_plan_in_memory_gives_the_exact_record() {
    let (line, host) = line(&[], PlanConfig::default());
    let mut modem = modem(host);
    let wall = std::time::Instant::now();
    let record = run_once(&line, &mut modem).await;
    let id = line.board.identity();

    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    assert_eq!(record.verified_by, Some(VerifiedBy::Keys));
    // The board was found (the link settled: 400 ms of quiet, `AT`: 5 ms)
    // before the run began.
    assert_eq!(record.started_at, datetime!(2026-12-01 08:00:00.405 UTC));
    // Each step takes exactly the modelled time of its commands (README's
    // latency table), because tokio's clock is paused and the board models
    // its delays on it.
    let steps: Vec<(Step, Duration)> = record.steps.iter().map(|s| (s.name, s.duration)).collect();
    assert_eq!(
        steps,
        [
            (Step::Probe, ms(5)),     // +CMEE=1
            (Step::Identify, ms(30)), // six identity reads
            (Step::Offline, ms(5)),   // +CFUN? (the board boots off)
            (Step::Attest, ms(60)),   // %ATTESTTOKEN
            (Step::Keygen, ms(1202)), // delete (absent: 2 ms), %KEYGEN CSR
            (Step::Certify, ms(0)),
            (Step::Install, ms(300)), // two %CMNG writes
            (Step::Confirm, ms(30)),  // %CMNG list
            (Step::Jwt, ms(125)),     // +CCLK, %JWT
            (Step::Restore, ms(20)),  // +CFUN=0
        ]
    );
    assert_eq!(
        record.finished_at,
        Some(datetime!(2026-12-01 08:00:00.405 UTC) + ms(1777))
    );
    assert!(
        wall.elapsed() < Duration::from_secs(30),
        "sanity: paused time, not slept"
    );
    assert_eq!(record.device.device_uuid, Some(id.device_uuid));
    assert_eq!(record.device.imei.as_deref(), Some(id.imei.as_str()));
    let kinds: Vec<TokenKind> = record.tokens.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TokenKind::Identity, TokenKind::Keygen, TokenKind::Jwt]
    );
    assert!(record.tokens.iter().all(|t| t.authentic));

    // The whole record, byte for byte: the same inputs give the same run.
    // (Regenerate after an intended change: NRF_PROVD_UPDATE_GOLDEN=1.)
    let golden = fixture("plan-record.json");
    if std::env::var_os("NRF_PROVD_UPDATE_GOLDEN").is_some() {
        let json = serde_json::to_string_pretty(&record).expect("json") + "\n";
        std::fs::write(&golden, &json).expect("write golden record");
    }
    let expected = std::fs::read_to_string(&golden).expect("tests/fixtures/plan-record.json");
    let record = with_signature_of(record, &expected);
    let json = serde_json::to_string_pretty(&record).expect("json") + "\n";
    assert_eq!(json, expected, "the record differs from the golden one");
}

/// `record` with its device certificate's signature taken from `golden`'s,
/// once it is shown to verify with the CA's key over the very same
/// certificate body: the CA signs with a fresh nonce each time (ring), so
/// only the signature's bytes may differ from run to run.
fn with_signature_of(mut record: RunRecord, golden: &str) -> RunRecord {
    use der::{DecodePem, Encode};
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{DerSignature, VerifyingKey};
    use p256::pkcs8::DecodePublicKey;
    use x509_cert::Certificate;

    fn certificate(record: &mut RunRecord) -> &mut String {
        record
            .artifacts
            .iter_mut()
            .find(|a| a.kind == nrf_provd_core::record::ArtifactKind::DeviceCertificate)
            .map(|a| &mut a.content)
            .expect("a device certificate")
    }
    let mut expected: RunRecord = serde_json::from_str(golden).expect("the golden record");
    let theirs = certificate(&mut expected).clone();
    let ours = certificate(&mut record);
    let cert = Certificate::from_pem(ours.as_bytes()).expect("our certificate");
    let golden_cert = Certificate::from_pem(theirs.as_bytes()).expect("the golden certificate");
    assert_eq!(
        cert.tbs_certificate, golden_cert.tbs_certificate,
        "the certificate's body differs from the golden one"
    );
    let ca_pem = std::fs::read(fixture("openssl-ca.pem")).expect("fixture CA");
    let ca = Certificate::from_pem(&ca_pem).expect("fixture CA parses");
    let ca_key = VerifyingKey::from_public_key_der(
        &ca.tbs_certificate
            .subject_public_key_info
            .to_der()
            .expect("CA key"),
    )
    .expect("a P-256 CA key");
    let signature =
        DerSignature::from_bytes(cert.signature.as_bytes().expect("signature bits")).expect("DER");
    let body = cert.tbs_certificate.to_der().expect("tbs");
    assert!(
        ca_key.verify(&body, &signature).is_ok(),
        "the device certificate does not verify with the CA's key"
    );
    *ours = theirs;
    record
}

/// (fault, failed step, reason code)
const TOKEN_FAULTS: &[(&str, Step, ReasonCode)] = &[
    ("bad-signature", Step::Attest, ReasonCode::Signature),
    ("ignore-challenge", Step::Attest, ReasonCode::Nonce),
    ("wrong-uuid", Step::Attest, ReasonCode::DeviceUuid),
    ("untrusted-key", Step::Attest, ReasonCode::KeyTrusted),
    ("bad-digest", Step::Keygen, ReasonCode::Digest),
];

#[tokio::test(start_paused = true)]
async fn each_token_fault_fails_its_step_with_its_reason_code() {
    for (fault, step, code) in TOKEN_FAULTS {
        let (line, host) = line(&[&format!("0:{fault}")], PlanConfig::default());
        let record = run_once(&line, &mut modem(host)).await;
        assert_eq!(record.outcome, Outcome::Failed, "{fault}: {record:#?}");
        assert_eq!(
            record.failed_step,
            Some(*step),
            "{fault}: {:?}",
            record.reason
        );
        assert_eq!(
            record.reason_code,
            Some(*code),
            "{fault}: {:?}",
            record.reason
        );
        assert!(
            record.tokens.iter().all(|t| !t.authentic)
                || record.tokens.last().is_some_and(|t| !t.authentic),
            "{fault}: the failing token is not authentic"
        );
        // restore still ran, after the failure.
        assert_eq!(record.steps.last().map(|s| s.name), Some(Step::Restore));
    }
}

#[tokio::test(start_paused = true)]
async fn an_old_firmware_csr_still_passes() {
    let (line, host) = line(&["0:legacy-csr"], PlanConfig::default());
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
}

/// The hostile board of issue 9, and the whole kind-confusion matrix: a
/// board that answers a token command with a genuine token of another kind
/// (captured from a trusted board) fails that command's step with `kind`,
/// and nothing it handed over is recorded as authentic or as the kind it
/// was asked for.
#[tokio::test(start_paused = true)]
async fn every_token_kind_offered_to_every_token_command_fails_as_the_wrong_kind() {
    let commands = [
        ("ATTESTTOKEN", Step::Attest, "identity"),
        ("KEYGEN", Step::Keygen, "keygen"),
        ("JWT", Step::Jwt, "jwt"),
    ];
    let kinds = [
        ("identity", TokenKind::Identity),
        ("keygen", TokenKind::Keygen),
        ("keygen-pubkey", TokenKind::Keygen),
        ("jwt", TokenKind::Jwt),
    ];
    for (command, step, own_kind) in commands {
        for (kind, decoded) in kinds {
            let fault = format!("0:substitute={kind}@{command}");
            let (line, host) = line(&[&fault], PlanConfig::default());
            let record = run_once(&line, &mut modem(host)).await;
            if kind == own_kind {
                assert_eq!(record.outcome, Outcome::Passed, "{fault}: {record:#?}");
                continue;
            }
            assert_eq!(
                record.outcome,
                Outcome::Failed,
                "{fault} passed: {record:#?}"
            );
            assert_eq!(
                record.failed_step,
                Some(step),
                "{fault}: {:?}",
                record.reason
            );
            assert_eq!(
                record.reason_code,
                Some(ReasonCode::Kind),
                "{fault}: {:?}",
                record.reason
            );
            let token = record.tokens.last().expect("the offered token is recorded");
            assert_eq!(
                token.kind, decoded,
                "{fault}: recorded as what it decoded as"
            );
            assert!(!token.authentic, "{fault}");
            let reason = record.reason.as_deref().unwrap_or_default();
            assert!(
                reason.contains("expected") && reason.contains("got"),
                "{reason}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn tokens_of_this_device_from_an_earlier_run_fail_as_replays() {
    // The identity token offered again: its nonce is not the new challenge.
    let (line1, host) = line(&["0:replay"], PlanConfig::default());
    let mut m = modem(host);
    assert_eq!(run_once(&line1, &mut m).await.outcome, Outcome::Passed);
    let second = run_once(&line1, &mut m).await;
    assert_eq!(second.failed_step, Some(Step::Attest));
    assert_eq!(second.reason_code, Some(ReasonCode::Nonce));

    // Without attest, the key-generation token of the first run is caught
    // by the ledger's claim of its nonce.
    let mut plan = PlanConfig::default();
    plan.steps.retain(|s| *s != Step::Attest);
    let (line2, host) = line(&["0:replay"], plan);
    let mut m = modem(host);
    assert_eq!(run_once(&line2, &mut m).await.outcome, Outcome::Passed);
    let second = run_once(&line2, &mut m).await;
    assert_eq!(second.failed_step, Some(Step::Keygen));
    assert_eq!(second.reason_code, Some(ReasonCode::Replay));
    assert!(
        second
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("already seen in run 1")),
        "{:?}",
        second.reason
    );
}

/// The checks recorded for one token, by name.
fn checks_of(token: &nrf_provd_core::record::TokenRecord) -> Vec<(String, bool)> {
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&token.checks_json).expect("checks are JSON");
    checks
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["passed"] == true,
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pin_learns_the_key_from_two_jwts_and_refuses_another_key_for_the_device_later() {
    let ledger = Arc::new(MemoryLedger::new());
    let (line1, host) = line_with(
        &[],
        PlanConfig::default(),
        &[VerifiedBy::Pin],
        ledger.clone(),
    );
    let id = line1.board.identity();
    let mut m = modem(host);
    let first = run_once(&line1, &mut m).await;
    assert_eq!(first.outcome, Outcome::Passed, "{first:#?}");
    assert_eq!(first.verified_by, Some(VerifiedBy::Pin));
    // The key learnt from the two JWTs is the board's identity key.
    let attest = &first.steps[3];
    assert_eq!(attest.name, Step::Attest);
    let print = fingerprint(&id.public_key_spki_der());
    assert!(
        attest.detail.contains(&print) && attest.detail.contains("pinned on first sight"),
        "{}",
        attest.detail
    );
    // The simulator signs with this project's COSE signing input, so the
    // attestation token verifies under the pinned key.
    assert!(
        attest.detail.contains("signature verifies"),
        "{}",
        attest.detail
    );
    let kinds: Vec<TokenKind> = first.tokens.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [
            TokenKind::Identity,
            TokenKind::Jwt,
            TokenKind::Jwt,
            TokenKind::Keygen,
            TokenKind::Jwt
        ],
        "the two JWTs the key was learnt from are recorded"
    );
    for token in &first.tokens {
        assert!(!token.authentic, "a pin is never called authentic");
        let checks = checks_of(token);
        assert!(
            checks.contains(&("pinned_signature".into(), true)),
            "{:?}: {checks:?}",
            token.kind
        );
        assert!(
            !checks
                .iter()
                .any(|(n, _)| n == "key_trusted" || n == "signature")
        );
    }

    // The same board again: the same key.
    let second = run_once(&line1, &mut m).await;
    assert_eq!(second.outcome, Outcome::Passed, "{second:#?}");
    assert!(
        second.steps[3]
            .detail
            .contains("the same as pinned at station memory port duplex"),
        "{}",
        second.steps[3].detail
    );

    // A board with the same UUID and another key: refused, naming the pin.
    let (line2, host) = line_with(
        &["0:untrusted-key"],
        PlanConfig::default(),
        &[VerifiedBy::Pin],
        ledger,
    );
    assert_eq!(line2.board.identity().device_uuid, id.device_uuid);
    let third = run_once(&line2, &mut modem(host)).await;
    assert_eq!(third.outcome, Outcome::Failed, "{third:#?}");
    assert_eq!(third.failed_step, Some(Step::Attest));
    assert_eq!(third.reason_code, Some(ReasonCode::IdentityChanged));
    let reason = third.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains(&print)
            && reason.contains("station memory port duplex")
            && reason.contains(&first.uid.to_string()),
        "{reason}"
    );
    assert_eq!(third.verified_by, None);
}

/// Issue 18 in memory: the key pinned for one device, presented under a
/// second device UUID, fails `key_reused` naming the first device; a
/// harvested-JWT clone and a board without time claims fail before any key
/// is learnt from their JWTs.
#[tokio::test(start_paused = true)]
async fn pin_refuses_a_reused_key_and_jwts_not_made_for_the_run() {
    let ledger = Arc::new(MemoryLedger::new());
    let (line1, host) = line_with(
        &[],
        PlanConfig::default(),
        &[VerifiedBy::Pin],
        ledger.clone(),
    );
    let first = run_once(&line1, &mut modem(host)).await;
    assert_eq!(first.outcome, Outcome::Passed, "{first:#?}");
    let genuine = line1.board.identity().device_uuid;

    let (line2, host) = line_with(
        &["0:second-uuid"],
        PlanConfig::default(),
        &[VerifiedBy::Pin],
        ledger.clone(),
    );
    let second = run_once(&line2, &mut modem(host)).await;
    assert_eq!(
        (second.failed_step, second.reason_code),
        (Some(Step::Attest), Some(ReasonCode::KeyReused)),
        "{:?}",
        second.reason
    );
    let reason = second.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "pinned for device {genuine} at station memory port duplex"
        )) && reason.contains(&first.uid.to_string()),
        "{reason}"
    );

    for (fault, code) in [
        ("0:jwt-no-time", ReasonCode::JwtTime),
        ("0:replay", ReasonCode::JwtChallenge),
    ] {
        let (line, host) = line_with(
            &[fault],
            PlanConfig::default(),
            &[VerifiedBy::Pin],
            Arc::new(MemoryLedger::new()),
        );
        let mut m = modem(host);
        // With `replay` the board's first JWT comes back forever: the
        // first run's two JWTs are the same one, and then the same again.
        let record = run_once(&line, &mut m).await;
        assert_eq!(
            (record.failed_step, record.reason_code),
            (Some(Step::Attest), Some(code)),
            "{fault}: {:?}",
            record.reason
        );
    }
}

#[tokio::test(start_paused = true)]
async fn collect_checks_what_it_can_without_a_key_and_never_passes() {
    // Not in the trust file: `keys` cannot judge it, `collect` takes it.
    let by = [VerifiedBy::Keys, VerifiedBy::Collect];
    let (line, host) = line_with(
        &["0:untrusted-key"],
        PlanConfig::default(),
        &by,
        Arc::new(MemoryLedger::new()),
    );
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Collected, "{record:#?}");
    assert_eq!(record.verified_by, Some(VerifiedBy::Collect));
    assert_eq!(record.steps.len(), 10, "every step ran");
    for token in &record.tokens {
        assert!(!token.authentic);
        let checks = checks_of(token);
        assert!(checks.iter().all(|(_, passed)| *passed), "{checks:?}");
        assert!(
            !checks
                .iter()
                .any(|(n, _)| n == "key_trusted" || n == "signature")
        );
    }
    let keygen = checks_of(&record.tokens[1]);
    assert!(keygen.contains(&("digest".into(), true)), "{keygen:?}");
    assert!(
        keygen.contains(&("csr_signature".into(), true)),
        "{keygen:?}"
    );

    // What can be checked still fails the run: a digest that does not bind
    // the CSR, a nonce that is not the challenge.
    for (fault, step, code) in [
        ("bad-digest", Step::Keygen, ReasonCode::Digest),
        ("ignore-challenge", Step::Attest, ReasonCode::Nonce),
    ] {
        let (line, host) = line_with(
            &[&format!("0:{fault}"), "0:untrusted-key"],
            PlanConfig::default(),
            &by,
            Arc::new(MemoryLedger::new()),
        );
        let record = run_once(&line, &mut modem(host)).await;
        assert_eq!(record.outcome, Outcome::Failed, "{fault}: {record:#?}");
        assert_eq!(record.failed_step, Some(step), "{fault}");
        assert_eq!(
            record.reason_code,
            Some(code),
            "{fault}: {:?}",
            record.reason
        );
    }
}

/// An authority of the test's own, outside the registry: it vouches for
/// any device whose identity token passes the station's own checks, and
/// judges the later tokens by a rule of its own, which counts them and
/// refuses them when told to.
struct OwnAuthority {
    refuse_later: bool,
    judged: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct OwnRule {
    refuse: bool,
    judged: Arc<AtomicUsize>,
}

impl LaterTokens for OwnRule {
    fn judge(
        &self,
        token: &nrf91_token::Token,
        expected: &nrf91_token::Expected,
        _device_uuid: uuid::Uuid,
    ) -> (nrf91_token::Verdict, bool) {
        self.judged.fetch_add(1, Ordering::SeqCst);
        let verdict =
            nrf91_token::verify::verify(token, expected, &TrustStore::new()).without_key_checks();
        let accepted = !self.refuse && verdict.bindings_hold();
        (verdict, accepted)
    }
}

#[async_trait::async_trait]
impl IdentityAuthority for OwnAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Nrfcloud
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let verdict = nrf91_token::verify::verify(case.token, case.expected, &TrustStore::new())
            .without_key_checks();
        Judgement::Vouched(Vouch {
            by: VerifiedBy::Nrfcloud,
            later: Arc::new(OwnRule {
                refuse: self.refuse_later,
                judged: Arc::clone(&self.judged),
            }),
            verdict,
            evidence: Vec::new(),
            detail: "the test's own authority".into(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn an_authority_outside_the_registry_judges_the_later_tokens_by_its_own_rule() {
    for refuse_later in [false, true] {
        let (mut line, host) = line_with(
            &[],
            PlanConfig::default(),
            &[],
            Arc::new(MemoryLedger::new()),
        );
        let judged = Arc::new(AtomicUsize::new(0));
        // Its one registration: the context's list of authorities.
        line.ctx.authorities = vec![Arc::new(OwnAuthority {
            refuse_later,
            judged: Arc::clone(&judged),
        })];
        let record = run_once(&line, &mut modem(host)).await;
        assert_eq!(
            record.verified_by,
            Some(VerifiedBy::Nrfcloud),
            "{record:#?}"
        );
        if refuse_later {
            // Its rule refused the %KEYGEN token: the plan took its word.
            assert_eq!(record.outcome, Outcome::Failed, "{record:#?}");
            assert_eq!(record.failed_step, Some(Step::Keygen));
            assert_eq!(judged.load(Ordering::SeqCst), 1);
        } else {
            // %KEYGEN and %JWT, each judged by its rule.
            assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
            assert_eq!(judged.load(Ordering::SeqCst), 2);
        }
    }
}

/// An authority of the test's own that keeps state, through the ledger's
/// one store of authorities' state and nothing else: it vouches for a
/// device whose UUID comes with the IMEI it came with on first sight, and
/// an IMEI never belongs to two device UUIDs.
struct FirstImei {
    ledger: Arc<dyn Ledger>,
}

/// Its name in the ledger: no table, migration or ledger method of its own.
const FIRST_IMEI: &str = "test_first_imei";

#[async_trait::async_trait]
impl IdentityAuthority for FirstImei {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Nrfcloud
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let verdict = nrf91_token::verify::verify(case.token, case.expected, &TrustStore::new())
            .without_key_checks();
        let imei = case.record.device.imei.clone().unwrap_or_default();
        let binding = Binding {
            authority: FIRST_IMEI.into(),
            subject: case.device_uuid,
            value: imei.clone().into_bytes(),
            at: datetime!(2026-12-01 08:00 UTC),
            station_id: case.record.station_id.clone(),
            port: case.record.port.clone(),
            run_uid: case.record.uid,
        };
        let first = |b: &Binding| {
            format!(
                "{} for {} at station {} port {} (run {})",
                String::from_utf8_lossy(&b.value),
                b.subject,
                b.station_id,
                b.port,
                b.run_uid
            )
        };
        let (code, detail) = match self.ledger.bind(&binding).await {
            Ok(BindingOutcome::Bound) => {
                return vouched(verdict, format!("IMEI {imei} bound on first sight"));
            }
            Ok(BindingOutcome::AlreadyBound(b)) => {
                return vouched(verdict, format!("IMEI as bound: {}", first(&b)));
            }
            Ok(BindingOutcome::Mismatch(b)) => (
                ReasonCode::IdentityChanged,
                format!("IMEI {imei}, but bound first: {}", first(&b)),
            ),
            Ok(BindingOutcome::ValueReused(b)) => (
                ReasonCode::KeyReused,
                format!("IMEI {imei} is bound to another device: {}", first(&b)),
            ),
            Err(e) => (ReasonCode::Store, e.to_string()),
        };
        Judgement::Refused {
            code,
            detail,
            verdict,
        }
    }
}

fn vouched(verdict: nrf91_token::Verdict, detail: String) -> Judgement {
    Judgement::Vouched(Vouch {
        by: VerifiedBy::Nrfcloud,
        later: Arc::new(nrf_provd_core::plan::authority::BindingsOnly),
        verdict,
        evidence: Vec::new(),
        detail,
    })
}

/// Issue 21: an authority with state is one implementation and its
/// registration. `FirstImei` (above) keeps its state through `Ledger::bind`
/// alone, and the SQLite and in-memory ledgers hold its rule: first sight
/// binds, the same board again is as bound, the same UUID with another
/// IMEI and the IMEI under a second UUID are refused, each naming the first
/// run; the `pin` authority's pins never meet its bindings.
#[tokio::test(start_paused = true)]
async fn an_authority_outside_the_registry_keeps_its_state_in_the_ledger_sqlite_and_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(SqliteLedger::open(&dir.path().join("results.db")).expect("open"));
    let ledgers: [(&str, Arc<dyn Ledger>); 2] = [
        ("memory", Arc::new(MemoryLedger::new())),
        ("sqlite", Arc::new(crate::cycle_cost::ClockHeld(sqlite))),
    ];
    for (name, ledger) in ledgers {
        let line = |faults: &[&str], seed: u64| {
            let (mut line, host) =
                line_with(faults, PlanConfig::default(), &[], Arc::clone(&ledger));
            // Runs (their uids and challenges) of their own in one database.
            line.ctx.random = Arc::new(SeededRandom::new(seed));
            // Its one registration: the context's list of authorities.
            line.ctx.authorities = vec![Arc::new(FirstImei {
                ledger: line.gate.clone(),
            })];
            (line, modem(host))
        };
        let (mut first_line, mut board) = line(&[], 1);
        let first = run_once(&first_line, &mut board).await;
        assert_eq!(first.outcome, Outcome::Passed, "{name}: {first:#?}");
        let imei = first.device.imei.clone().expect("an IMEI");
        assert!(
            first.steps[3].detail.contains("bound on first sight"),
            "{name}: {}",
            first.steps[3].detail
        );
        let again = run_once(&first_line, &mut board).await;
        assert_eq!(again.outcome, Outcome::Passed, "{name}: {again:#?}");
        assert!(
            again.steps[3]
                .detail
                .contains(&format!("as bound: {imei} for")),
            "{name}: {}",
            again.steps[3].detail
        );

        // The same device UUID with another IMEI.
        assert_ne!(imei, "352656100367872");
        let (line2, mut board2) = line(&["0:imei=352656100367872"], 2);
        let changed = run_once(&line2, &mut board2).await;
        assert_eq!(
            (changed.failed_step, changed.reason_code),
            (Some(Step::Attest), Some(ReasonCode::IdentityChanged)),
            "{name}: {:?}",
            changed.reason
        );
        let reason = changed.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&imei) && reason.contains(&first.uid.to_string()),
            "{name}: {reason}"
        );

        // The same IMEI under a second device UUID.
        let (line3, mut board3) = line(&["0:second-uuid"], 3);
        let reused = run_once(&line3, &mut board3).await;
        assert_eq!(
            (reused.failed_step, reused.reason_code),
            (Some(Step::Attest), Some(ReasonCode::KeyReused)),
            "{name}: {:?}",
            reused.reason
        );
        let reason = reused.reason.clone().unwrap_or_default();
        let genuine = first.device.device_uuid.expect("a UUID");
        assert!(
            reason.contains(&format!("{imei} for {genuine}"))
                && reason.contains(&first.uid.to_string()),
            "{name}: {reason}"
        );

        // `pin` binds the same device UUID under its own name: a first
        // sight, whatever this authority holds.
        first_line.ctx.authorities = vec![Arc::new(PinAuthority::new(
            first_line.gate.clone(),
            Arc::clone(&first_line.ctx.clock),
            PinCose::Required,
        ))];
        let pinned = run_once(&first_line, &mut board).await;
        assert_eq!(pinned.outcome, Outcome::Passed, "{name}: {pinned:#?}");
        assert!(
            pinned.steps[3].detail.contains("pinned on first sight"),
            "{name}: {}",
            pinned.steps[3].detail
        );
    }
}
