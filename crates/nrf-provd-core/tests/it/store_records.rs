//! Results store: files, migrations, round trips, replay defence, recovery
//! after a crash, and the export formats.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ca::{Issuance, StationCa};
use nrf_provd_core::ledger::export::{self, OnboardOptions};
use nrf_provd_core::ledger::{
    Artifact, ArtifactKind, Claim, ClaimKind, ClaimOutcome, DeviceInfo, Ledger, LedgerError,
    LedgerReader, Outcome, ReasonCode, RunFilter, RunRecord, RunStart, SqliteLedger, Step,
    StepRecord, TokenRecord, VerifiedBy,
};
use nrf91_token::TokenKind;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const DEVICE: &str = "50503041-3633-4261-803d-1e2b8f70111a";
const OTHER_DEVICE: &str = "50503041-3633-4261-803d-1e2b8f70222b";
const TOKEN: &str = "2dn3hQFQUFBBMTVhc2Jhc2VxYWJj.0oRDoQEmoQRBIfZYQGN";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn open(path: &Path) -> SqliteLedger {
    SqliteLedger::open(path).unwrap_or_else(|e| panic!("open: {e}"))
}

/// The run uid a test derives from where and when a run starts, so that a
/// record built again for the same start carries the same uid.
fn uid_of(at: OffsetDateTime, port: &str) -> Uuid {
    let port_hash = port.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    Uuid::from_u128((at.unix_timestamp_nanos() as u128) << 64 | u128::from(port_hash))
}

const PORT: &str = "/dev/nrf91/A-if00";

fn start(at: OffsetDateTime, port: &str) -> RunStart {
    RunStart {
        uid: uid_of(at, port),
        station_id: "s1".into(),
        port: port.into(),
        started_at: at,
        trace: Default::default(),
    }
}

fn uuid(text: &str) -> Uuid {
    Uuid::parse_str(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A complete passed run of `device` started at `at`.
pub(crate) fn passed(id: i64, device: &str, at: OffsetDateTime, certificate: &str) -> RunRecord {
    RunRecord {
        id,
        uid: uid_of(at, PORT),
        station_id: "s1".into(),
        port: PORT.into(),
        started_at: at,
        finished_at: Some(at + Duration::from_millis(12_345)),
        outcome: Outcome::Passed,
        failed_step: None,
        reason_code: None,
        reason: None,
        verified_by: Some(VerifiedBy::Keys),
        device: DeviceInfo {
            device_uuid: Some(uuid(device)),
            imei: Some("351358815178345".into()),
            model: Some("nRF9151-LACA".into()),
            firmware: Some("mfw_nrf91x1_2.0.2".into()),
            firmware_uuid: Some(uuid("7d6fbc4a-0a3f-4c36-9ab5-0d3fd1fcd5f4")),
            hw_version: Some("nRF9151 LACA A0A".into()),
        },
        steps: vec![
            StepRecord {
                name: Step::Probe,
                started_at: at,
                duration: Duration::from_micros(15_250),
                passed: true,
                attempts: 1,
                detail: "dialect raw".into(),
            },
            StepRecord {
                name: Step::Attest,
                started_at: at + Duration::from_secs(1),
                duration: Duration::from_millis(800),
                passed: true,
                attempts: 2,
                detail: "nonce matches challenge".into(),
            },
        ],
        tokens: vec![
            TokenRecord {
                kind: TokenKind::Identity,
                text: TOKEN.into(),
                authentic: true,
                checks_json: r#"{"signature":"ok"}"#.into(),
            },
            TokenRecord {
                kind: TokenKind::Keygen,
                text: "MIIB.0oRY".into(),
                authentic: true,
                checks_json: "{}".into(),
            },
        ],
        artifacts: vec![
            Artifact {
                kind: ArtifactKind::Csr,
                sec_tag: Some(16_842_753),
                content:
                    "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
            },
            Artifact {
                kind: ArtifactKind::DeviceCertificate,
                sec_tag: Some(16_842_753),
                content: certificate.into(),
            },
        ],
        trace: Default::default(),
        compacted_at: None,
    }
}

async fn begin_and_finish(
    store: &SqliteLedger,
    device: &str,
    at: OffsetDateTime,
    certificate: &str,
) -> RunRecord {
    let id = store
        .begin_run(&start(at, PORT))
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let record = passed(id, device, at, certificate);
    store
        .finish_run(&record)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    record
}

async fn all_runs(store: &impl LedgerReader) -> Vec<RunRecord> {
    store
        .runs(&RunFilter::default())
        .await
        .unwrap_or_else(|e| panic!("runs: {e}"))
}

/// A claim of `value` as `kind` now.
fn claim_of(kind: ClaimKind, value: &str) -> Claim {
    Claim {
        kind,
        value: value.into(),
        at: datetime!(2024-05-01 10:00 UTC),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn database_and_side_files_are_private() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "").await;
    assert_eq!(mode(&path), 0o600);
    for suffix in ["-wal", "-shm", ".lock"] {
        // WAL mode keeps -wal and -shm while the database is open.
        let side = dir.path().join(format!("results.db{suffix}"));
        assert_eq!(mode(&side), 0o600, "{}", side.display());
    }
}

#[tokio::test]
async fn an_existing_database_with_loose_mode_is_tightened() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(open(&path));
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn reopening_keeps_schema_and_records() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let record = {
        let store = open(&path);
        begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "").await
    };
    for _ in 0..2 {
        let store = open(&path);
        assert_eq!(store.recovered(), 0);
        assert_eq!(all_runs(&store).await, vec![record.clone()]);
    }
}

#[tokio::test]
async fn a_finished_run_round_trips_exactly() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let at = datetime!(2024-05-01 10:00:00.123456 UTC);
    let record = begin_and_finish(&store, DEVICE, at, "PEM").await;
    let runs = all_runs(&store).await;
    assert_eq!(runs, vec![record]);
}

#[tokio::test]
async fn one_run_is_read_by_its_id_in_sqlite_and_in_memory() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let first = begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "A").await;
    let second = begin_and_finish(&store, OTHER_DEVICE, datetime!(2024-05-01 10:01 UTC), "B").await;
    let read = |id| store.run(id);
    assert_eq!(read(second.id).await.ok().flatten(), Some(second.clone()));
    assert_eq!(read(first.id).await.ok().flatten(), Some(first.clone()));
    assert_eq!(read(999).await.ok().flatten(), None);
    let reader = SqliteLedger::open_read_only(&dir.path().join("results.db"))
        .unwrap_or_else(|e| panic!("read-only: {e}"));
    assert_eq!(
        reader.run(first.id).await.ok().flatten(),
        Some(first.clone())
    );

    let memory = nrf_provd_core::ledger::MemoryLedger::new();
    let id = memory
        .begin_run(&start(datetime!(2024-05-01 10:00 UTC), PORT))
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let record = passed(id, DEVICE, datetime!(2024-05-01 10:00 UTC), "A");
    memory
        .finish_run(&record)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    assert_eq!(memory.run(id).await.ok().flatten(), Some(record));
    assert_eq!(memory.run(id + 1).await.ok().flatten(), None);
}

#[tokio::test]
async fn times_in_other_offsets_come_back_as_the_same_instant() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let at = datetime!(2024-05-01 12:00 +02:00);
    let id = store
        .begin_run(&start(at, "p"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let runs = all_runs(&store).await;
    assert_eq!(runs[0].id, id);
    assert_eq!(runs[0].started_at, at);
    assert_eq!(runs[0].outcome, Outcome::InFlight);
}

#[tokio::test]
async fn a_repeated_nonce_is_a_replay_naming_the_first_run() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let at = datetime!(2024-05-01 10:00 UTC);
    let first = store
        .begin_run(&start(at, "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = store
        .begin_run(&start(at, "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let nonce = "00112233445566778899aabbccddeeff";
    let claim = async |run, kind, value: &str| {
        store
            .claim(run, &claim_of(kind, value))
            .await
            .unwrap_or_else(|e| panic!("claim: {e}"))
    };
    use ClaimKind::{AttestNonce, JwtJti, KeygenNonce};
    assert_eq!(claim(first, AttestNonce, nonce).await, ClaimOutcome::Fresh);
    assert_eq!(
        claim(second, AttestNonce, nonce).await,
        ClaimOutcome::Replay { first_run: first }
    );
    // Hex is compared without regard to case.
    let upper = nonce.to_uppercase();
    assert_eq!(
        claim(second, AttestNonce, &upper).await,
        ClaimOutcome::Replay { first_run: first }
    );
    // Another kind is another namespace.
    assert_eq!(claim(second, KeygenNonce, nonce).await, ClaimOutcome::Fresh);
    // jti values are case-sensitive strings.
    assert_eq!(
        claim(first, JwtJti, "nRF9151.abc.XyZ").await,
        ClaimOutcome::Fresh
    );
    assert_eq!(
        claim(second, JwtJti, "nRF9151.abc.xyz").await,
        ClaimOutcome::Fresh
    );
}

#[tokio::test]
async fn a_nonce_for_an_unknown_run_is_refused() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let result = store
        .claim(42, &claim_of(ClaimKind::AttestNonce, "00"))
        .await;
    assert!(
        matches!(result, Err(LedgerError::UnknownRun(42))),
        "{result:?}"
    );
}

#[tokio::test]
async fn replay_defence_survives_reopening() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let first = {
        let store = open(&path);
        let id = store
            .begin_run(&start(datetime!(2024-05-01 10:00 UTC), "a"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .claim(id, &claim_of(ClaimKind::AttestNonce, "abcd"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        id
    };
    let store = open(&path);
    let id = store
        .begin_run(&start(datetime!(2024-05-02 10:00 UTC), "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .claim(id, &claim_of(ClaimKind::AttestNonce, "abcd"))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Replay { first_run: first }
    );
}

#[tokio::test]
async fn runs_left_in_flight_are_interrupted_on_reopen() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let (done, left) = {
        let store = open(&path);
        let done = begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "").await;
        let left = store
            .begin_run(&start(datetime!(2024-05-01 10:01 UTC), "b"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Dropped without finishing `left`, as a crash would leave it.
        (done, left)
    };
    let store = open(&path);
    assert_eq!(store.recovered(), 1);
    let runs = all_runs(&store).await;
    assert_eq!(runs[0], done);
    assert_eq!(runs[1].id, left);
    assert_eq!(runs[1].outcome, Outcome::Interrupted);
    assert_eq!(runs[1].reason_code, Some(ReasonCode::Interrupted));
    assert!(
        runs[1]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("stopped before the run finished")
    );
    // An interrupted run cannot later be reported as passed.
    let late = passed(left, DEVICE, datetime!(2024-05-01 10:01 UTC), "");
    assert!(matches!(
        store.finish_run(&late).await,
        Err(LedgerError::AlreadyFinished { .. })
    ));
    drop(store);
    assert_eq!(open(&path).recovered(), 0);
}

/// Runs only as the child of `committed_runs_survive_an_abort`: records one
/// finished run, starts another, then dies without any cleanup.
#[tokio::test]
async fn crash_child() {
    let Some(path) = std::env::var_os("NRF_PROVD_TEST_CRASH_DB") else {
        return;
    };
    let store = open(Path::new(&path));
    begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "PEM").await;
    let id = store
        .begin_run(&start(datetime!(2024-05-01 10:01 UTC), "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .claim(id, &claim_of(ClaimKind::AttestNonce, "feed"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    std::process::abort();
}

#[tokio::test]
async fn committed_runs_survive_an_abort() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let status = std::process::Command::new(exe)
        // The test's name in this binary (tests/it): its module's, then its own.
        .args(["--exact", "store_records::crash_child", "--test-threads=1"])
        .env("NRF_PROVD_TEST_CRASH_DB", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    assert!(!status.success(), "the child must die abnormally");

    let store = open(&path);
    assert_eq!(store.recovered(), 1);
    let runs = all_runs(&store).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0],
        passed(runs[0].id, DEVICE, datetime!(2024-05-01 10:00 UTC), "PEM")
    );
    assert_eq!(runs[1].outcome, Outcome::Interrupted);
    assert_eq!(
        store
            .claim(runs[1].id, &claim_of(ClaimKind::AttestNonce, "feed"))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Replay {
            first_run: runs[1].id
        }
    );
}

#[tokio::test]
async fn finishing_wrongly_is_refused() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let at = datetime!(2024-05-01 10:00 UTC);
    let unknown = passed(99, DEVICE, at, "");
    assert!(matches!(
        store.finish_run(&unknown).await,
        Err(LedgerError::UnknownRun(99))
    ));

    let record = begin_and_finish(&store, DEVICE, at, "").await;
    assert!(matches!(
        store.finish_run(&record).await,
        Err(LedgerError::AlreadyFinished { .. })
    ));

    let id = store
        .begin_run(&start(at, "a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut in_flight = passed(id, DEVICE, at, "");
    in_flight.outcome = Outcome::InFlight;
    assert!(matches!(
        store.finish_run(&in_flight).await,
        Err(LedgerError::InvalidRecord(_))
    ));
}

#[tokio::test]
async fn a_second_writer_on_the_same_database_is_refused() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let _store = open(&path);
    assert!(matches!(
        SqliteLedger::open(&path),
        Err(LedgerError::InUse { .. })
    ));
}

#[tokio::test]
async fn a_reader_sees_committed_runs_while_the_writer_is_open() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let record = begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "").await;
    let in_flight = store
        .begin_run(&start(datetime!(2024-05-01 10:05 UTC), "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reader = SqliteLedger::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
    let runs = all_runs(&reader).await;
    assert_eq!(runs[0], record);
    // The reader does not touch runs in flight.
    assert_eq!(runs[1].id, in_flight);
    assert_eq!(runs[1].outcome, Outcome::InFlight);
    // A reader has no write methods at all (SqliteReader is not a Ledger).
}

#[tokio::test]
async fn read_only_open_refuses_missing_and_foreign_databases() {
    let dir = tmp();
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        SqliteLedger::open_read_only(&missing),
        Err(LedgerError::Io { .. })
    ));
    assert!(!missing.exists(), "reading must not create a database");

    let foreign = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("CREATE TABLE t (x)")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(matches!(
        SqliteLedger::open_read_only(&foreign),
        Err(LedgerError::NoSchema { .. })
    ));
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_left_alone() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    drop(open(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.pragma_update(None, "user_version", 99)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(matches!(
        SqliteLedger::open(&path),
        Err(LedgerError::NewerSchema { found: 99, .. })
    ));
}

#[tokio::test]
async fn filters_select_by_device_time_and_count() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let a1 = begin_and_finish(&store, DEVICE, datetime!(2024-05-01 10:00 UTC), "").await;
    let b1 = begin_and_finish(&store, OTHER_DEVICE, datetime!(2024-05-02 10:00 UTC), "").await;
    let a2 = begin_and_finish(&store, DEVICE, datetime!(2024-05-03 10:00 UTC), "").await;
    let runs = async |filter: RunFilter| -> Vec<i64> {
        store
            .runs(&filter)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(runs(RunFilter::default()).await, vec![a1.id, b1.id, a2.id]);
    assert_eq!(
        runs(RunFilter {
            device_uuid: Some(uuid(DEVICE)),
            ..Default::default()
        })
        .await,
        vec![a1.id, a2.id]
    );
    assert_eq!(
        runs(RunFilter {
            since: Some(datetime!(2024-05-02 00:00 UTC)),
            ..Default::default()
        })
        .await,
        vec![b1.id, a2.id]
    );
    assert_eq!(
        runs(RunFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        vec![b1.id, a2.id]
    );
}

#[tokio::test]
async fn counts_follow_outcomes() {
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let at = datetime!(2024-05-01 10:00 UTC);
    begin_and_finish(&store, DEVICE, at, "").await;
    let id = store
        .begin_run(&start(at, "b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut failed = passed(id, OTHER_DEVICE, at, "");
    failed.outcome = Outcome::Failed;
    failed.failed_step = Some(Step::Attest);
    failed.reason_code = Some(ReasonCode::Replay);
    failed.reason = Some("identity token nonce already seen in run 1".into());
    store
        .finish_run(&failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .begin_run(&start(at, "c"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let counts = store.counts().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (
            counts.seen,
            counts.passed,
            counts.failed,
            counts.interrupted,
            counts.in_flight
        ),
        (3, 1, 1, 0, 1)
    );
}

// ---- exports ----

fn export_fixture() -> (Vec<RunRecord>, String) {
    let ca = StationCa::generate("Test CA", Duration::from_secs(86_400))
        .unwrap_or_else(|e| panic!("{e}"));
    let device_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let spki = p256::pkcs8::EncodePublicKey::to_public_key_der(&device_key.public_key())
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = ca
        .sign_device(
            DEVICE,
            spki.as_bytes(),
            Issuance::now(Duration::from_secs(86_400)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let old = passed(1, DEVICE, datetime!(2024-05-01 10:00 UTC), "old");
    let mut failed = passed(2, OTHER_DEVICE, datetime!(2024-05-01 11:00 UTC), &cert.pem);
    failed.outcome = Outcome::Failed;
    failed.failed_step = Some(Step::Keygen);
    failed.reason_code = Some(ReasonCode::Signature);
    failed.reason = Some("bad, really".into());
    let newer = passed(3, DEVICE, datetime!(2024-05-02 09:30:15.5 UTC), &cert.pem);
    (vec![old, failed, newer], cert.pem)
}

fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn csv_has_a_header_and_one_row_per_run() {
    let (runs, _) = export_fixture();
    let text = render(|out| export::csv(&runs, out).unwrap_or_else(|e| panic!("{e}")));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "run_id,station_id,port,started_at,finished_at,duration_s,outcome,failed_step,reason_code,reason,device_uuid,imei,model,firmware,firmware_uuid,hw_version,work_order,lot,operator,product,fixture"
    );
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[2],
        format!(
            "2,s1,/dev/nrf91/A-if00,2024-05-01T11:00:00Z,2024-05-01T11:00:12.345Z,12.345,failed,keygen,signature,\"bad, really\",{OTHER_DEVICE},351358815178345,nRF9151-LACA,mfw_nrf91x1_2.0.2,7d6fbc4a-0a3f-4c36-9ab5-0d3fd1fcd5f4,nRF9151 LACA A0A,,,,,"
        )
    );
}

#[tokio::test]
async fn attest_csv_is_nordics_headerless_format_one_row_per_device() {
    let (runs, _) = export_fixture();
    let mut rows = 0;
    let text =
        render(|out| rows = export::attest_csv(&runs, out).unwrap_or_else(|e| panic!("{e}")));
    // Run 3 replaces run 1 (same device); run 2 failed. The timestamp is when
    // the attest step started.
    assert_eq!(
        text,
        format!("351358815178345,{DEVICE},{TOKEN},2024-05-02T09:30:16.500000+00:00\n")
    );
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn attest_csv_leaves_out_tokens_that_did_not_verify() {
    let (mut runs, _) = export_fixture();
    for run in &mut runs {
        for token in &mut run.tokens {
            token.authentic = false;
        }
    }
    let text = render(|out| {
        export::attest_csv(&runs, out).unwrap_or_else(|e| panic!("{e}"));
    });
    assert_eq!(text, "");
}

#[tokio::test]
async fn onboard_csv_is_nordics_headerless_format() {
    let (runs, pem) = export_fixture();
    let options = OnboardOptions {
        subtype: String::new(),
        tags: "line1|batch7".into(),
        fw_types: "APP|MODEM".into(),
    };
    let text = render(|out| {
        export::onboard_csv(&runs, &options, out).unwrap_or_else(|e| panic!("{e}"));
    });
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE-----\n")
            && pem.ends_with("-----END CERTIFICATE-----\n")
    );
    assert_eq!(
        text,
        format!("{DEVICE},,line1|batch7,APP|MODEM,\"{pem}\"\n")
    );
    let first_line = text.lines().next().unwrap_or_default();
    assert_eq!(
        first_line,
        format!("{DEVICE},,line1|batch7,APP|MODEM,\"-----BEGIN CERTIFICATE-----")
    );
}

#[tokio::test]
async fn table_starts_with_column_names_and_ends_with_a_summary() {
    let (runs, _) = export_fixture();
    let text = render(|out| export::table(&runs, out).unwrap_or_else(|e| panic!("{e}")));
    let lines: Vec<&str> = text.lines().collect();
    let head: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "RUN", "STARTED", "(UTC)", "PORT", "DEVICE", "IMEI", "OUTCOME", "STEP", "REASON"
        ]
    );
    assert!(lines[2].contains("2024-05-01 11:00:00") && lines[2].contains("failed"));
    assert_eq!(
        lines.last().copied(),
        Some("3 runs: 2 passed, 1 failed, 0 interrupted, 0 in flight")
    );
}

#[tokio::test]
async fn json_carries_the_whole_record() {
    let (runs, _) = export_fixture();
    let text = render(|out| export::json(&runs, out).unwrap_or_else(|e| panic!("{e}")));
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let run = &value[1];
    assert_eq!(run["outcome"], "failed");
    assert_eq!(run["started_at"], "2024-05-01T11:00:00Z");
    assert_eq!(run["device"]["device_uuid"], OTHER_DEVICE);
    assert_eq!(run["steps"][0]["duration_ms"], 15.25);
    assert_eq!(run["tokens"][0]["kind"], "identity");
    assert_eq!(run["artifacts"][1]["sec_tag"], 16_842_753);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ledger_serves_many_tasks_and_a_value_is_claimed_once() {
    let dir = tmp();
    let store = std::sync::Arc::new(open(&dir.path().join("results.db")));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = store
                    .begin_run(&start(datetime!(2024-05-01 10:00 UTC), &format!("p{i}")))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                store
                    .claim(id, &claim_of(ClaimKind::AttestNonce, "0011"))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
            })
        })
        .collect();
    let mut claims = Vec::new();
    for task in tasks {
        claims.push(task.await.unwrap_or_else(|_| panic!("task panicked")));
    }
    assert_eq!(
        claims.iter().filter(|c| **c == ClaimOutcome::Fresh).count(),
        1
    );
}

/// Issue 18: one identity key never belongs to two devices. The SQLite
/// ledger and the in-memory one give the same answers: first sight pins,
/// the same key again is the same pin, another key for the device is
/// `Changed`, and the key asked for under a second UUID is `Reused`, naming
/// the device, station and run it is pinned for; nothing is pinned then.
#[tokio::test]
async fn a_key_pinned_for_one_device_is_refused_for_another_in_sqlite_and_in_memory() {
    use nrf_provd_core::ledger::{MemoryLedger, Pin, PinOutcome};
    let dir = tmp();
    let sqlite = open(&dir.path().join("results.db"));
    let memory = MemoryLedger::new();
    let ledgers: [(&str, &dyn Ledger); 2] = [("sqlite", &sqlite), ("memory", &memory)];
    for (name, ledger) in ledgers {
        let first_run = Uuid::from_u128(1);
        let pin = |device: &str, key: u8, station: &str, run: Uuid| Pin {
            device_uuid: uuid(device),
            public_key: vec![key; 91],
            at: datetime!(2024-05-01 10:00 UTC),
            station_id: station.into(),
            port: PORT.into(),
            run_uid: run,
        };
        let pinned = pin(DEVICE, 1, "A", first_run);
        assert_eq!(
            ledger.pin(&pinned).await.expect("pin"),
            PinOutcome::Pinned,
            "{name}"
        );
        assert_eq!(
            ledger
                .pin(&pin(DEVICE, 1, "B", Uuid::from_u128(2)))
                .await
                .expect("pin"),
            PinOutcome::Same(pinned.clone()),
            "{name}"
        );
        assert_eq!(
            ledger
                .pin(&pin(DEVICE, 2, "B", Uuid::from_u128(3)))
                .await
                .expect("pin"),
            PinOutcome::Changed(pinned.clone()),
            "{name}"
        );
        // The same key under a second device UUID: refused, naming the first.
        let again = pin(OTHER_DEVICE, 1, "B", Uuid::from_u128(4));
        assert_eq!(
            ledger.pin(&again).await.expect("pin"),
            PinOutcome::Reused(pinned.clone()),
            "{name}"
        );
        // Nothing was pinned for the second UUID: asked again, still refused,
        // and a fresh key for it is its first sight.
        assert_eq!(
            ledger.pin(&again).await.expect("pin"),
            PinOutcome::Reused(pinned.clone()),
            "{name}"
        );
        assert_eq!(
            ledger
                .pin(&pin(OTHER_DEVICE, 3, "B", Uuid::from_u128(5)))
                .await
                .expect("pin"),
            PinOutcome::Pinned,
            "{name}"
        );
    }
    // The refusal survives reopening the database (it is the pins table's).
    drop(sqlite);
    let reopened = open(&dir.path().join("results.db"));
    let again = Pin {
        device_uuid: uuid("50503041-3633-4261-803d-1e2b8f70333c"),
        public_key: vec![1; 91],
        at: datetime!(2024-05-02 10:00 UTC),
        station_id: "C".into(),
        port: PORT.into(),
        run_uid: Uuid::from_u128(9),
    };
    let PinOutcome::Reused(first) = reopened.pin(&again).await.expect("pin") else {
        panic!("the key is pinned for {DEVICE}");
    };
    assert_eq!(
        (first.device_uuid, first.station_id.as_str(), first.run_uid),
        (uuid(DEVICE), "A", Uuid::from_u128(1))
    );
}

/// Issue 21: every identity authority's state is one store
/// (`Ledger::bind`). Within an authority the rules are the pin's (first
/// sight binds; the same value again is as bound; another value for the
/// subject is a mismatch; the value under a second subject is reused,
/// naming the first); two authorities' bindings never meet, in SQLite and
/// in memory alike, and the SQLite ones survive reopening.
#[tokio::test]
async fn bindings_follow_the_pin_rules_per_authority_and_two_authorities_never_meet() {
    use nrf_provd_core::ledger::{Binding, BindingOutcome, MemoryLedger, Pin, PinOutcome};
    const THIRD_DEVICE: &str = "50503041-3633-4261-803d-1e2b8f70333c";
    let dir = tmp();
    let sqlite = open(&dir.path().join("results.db"));
    let memory = MemoryLedger::new();
    let bind = |authority: &str, device: &str, value: &[u8], run: u128| Binding {
        authority: authority.into(),
        subject: uuid(device),
        value: value.to_vec(),
        at: datetime!(2024-05-01 10:00 UTC) + Duration::from_secs(run as u64),
        station_id: "A".into(),
        port: PORT.into(),
        run_uid: Uuid::from_u128(run),
    };
    let pinned = bind("pin", DEVICE, &[1; 91], 1);
    let serial = bind("serial", DEVICE, b"SN-1", 2);
    let ledgers: [(&str, &dyn Ledger); 2] = [("sqlite", &sqlite), ("memory", &memory)];
    for (name, ledger) in ledgers {
        let outcome = |b: Binding| async move { ledger.bind(&b).await.expect("bind") };
        assert_eq!(
            outcome(pinned.clone()).await,
            BindingOutcome::Bound,
            "{name}"
        );
        // The device's first sight under another authority.
        assert_eq!(
            outcome(serial.clone()).await,
            BindingOutcome::Bound,
            "{name}"
        );
        // The pin's value is free for another device of another authority.
        assert_eq!(
            outcome(bind("serial", OTHER_DEVICE, &[1; 91], 3)).await,
            BindingOutcome::Bound,
            "{name}"
        );
        assert_eq!(
            outcome(bind("serial", DEVICE, b"SN-1", 4)).await,
            BindingOutcome::AlreadyBound(serial.clone()),
            "{name}"
        );
        assert_eq!(
            outcome(bind("serial", DEVICE, b"SN-2", 5)).await,
            BindingOutcome::Mismatch(serial.clone()),
            "{name}"
        );
        assert_eq!(
            outcome(bind("serial", THIRD_DEVICE, b"SN-1", 6)).await,
            BindingOutcome::ValueReused(serial.clone()),
            "{name}"
        );
        // `pin` in its own words is a binding of authority `pin`.
        let pin = Pin::from(pinned.clone());
        assert_eq!(
            ledger.pin(&pin).await.expect("pin"),
            PinOutcome::Same(pin.clone()),
            "{name}"
        );
    }
    drop(sqlite);
    let reopened = open(&dir.path().join("results.db"));
    assert_eq!(
        reopened
            .bind(&bind("serial", THIRD_DEVICE, b"SN-1", 7))
            .await
            .expect("bind"),
        BindingOutcome::ValueReused(serial)
    );
}

/// A database from before the one store of authorities' state keeps its
/// pins: they become the `pin` authority's bindings, a key pinned there is
/// still refused for another device, and `pins` still reads as it did.
#[tokio::test]
async fn the_pins_of_an_older_database_are_the_pin_authoritys_bindings() {
    use nrf_provd_core::ledger::{Pin, PinOutcome};
    let dir = tmp();
    let path = dir.path().join("v9.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for migration in SCHEMA_V9 {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 9).unwrap();
        // Key bytes 1, 2, 3, 4 in the trust file's form.
        conn.execute(
            "INSERT INTO pins (device_uuid, public_key, pinned_at, station_id, port, run_uid)
             VALUES (?1, 'AQIDBA==', '2024-05-01T10:00:00.000000Z', 'A', ?2, ?3)",
            rusqlite::params![DEVICE, PORT, Uuid::from_u128(1).to_string()],
        )
        .unwrap();
    }
    let ledger = open(&path);
    let pin = Pin {
        device_uuid: uuid(OTHER_DEVICE),
        public_key: vec![1, 2, 3, 4],
        at: datetime!(2024-05-02 10:00 UTC),
        station_id: "B".into(),
        port: PORT.into(),
        run_uid: Uuid::from_u128(2),
    };
    let PinOutcome::Reused(first) = ledger.pin(&pin).await.expect("pin") else {
        panic!("the key is pinned for {DEVICE}");
    };
    assert_eq!(
        first,
        Pin {
            device_uuid: uuid(DEVICE),
            at: datetime!(2024-05-01 10:00 UTC),
            station_id: "A".into(),
            run_uid: Uuid::from_u128(1),
            ..pin
        }
    );
    drop(ledger);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT device_uuid, public_key, station_id FROM pins")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(DEVICE.into(), "AQIDBA==".into(), "A".into())]);
}

/// Schema versions 1 to 9 (before the compact payloads): what a database
/// of the previous schema was made with.
pub(crate) const SCHEMA_V9: &[&str] = &[
    include_str!("../../src/ledger/migrations/0001_initial.sql"),
    include_str!("../../src/ledger/migrations/0002_reason_code.sql"),
    include_str!("../../src/ledger/migrations/0003_line.sql"),
    include_str!("../../src/ledger/migrations/0004_health.sql"),
    include_str!("../../src/ledger/migrations/0005_outbox.sql"),
    include_str!("../../src/ledger/migrations/0006_handoff.sql"),
    include_str!("../../src/ledger/migrations/0007_pin_keys.sql"),
    include_str!("../../src/ledger/migrations/0008_traceability.sql"),
    include_str!("../../src/ledger/migrations/0009_history.sql"),
];

fn dbtime(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap()
}

/// `record` (finished) and its nonce as version 9 wrote them: the run row,
/// then its steps, tokens and artifacts in three tables.
pub(crate) fn write_as_version_9(conn: &rusqlite::Connection, record: &RunRecord, nonce: &str) {
    use rusqlite::params;
    let d = &record.device;
    conn.execute(
        "INSERT INTO runs (id, uid, station_id, port, started_at, finished_at, outcome,
                           failed_step, reason_code, reason, verified_by, device_uuid, imei,
                           model, firmware, firmware_uuid, hw_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            record.id,
            record.uid.to_string(),
            record.station_id,
            record.port,
            dbtime(record.started_at),
            record.finished_at.map(dbtime),
            record.outcome.as_str(),
            record.failed_step.map(Step::as_str),
            record.reason_code.map(ReasonCode::as_str),
            record.reason,
            record.verified_by.map(VerifiedBy::as_str),
            d.device_uuid.map(|u| u.to_string()),
            d.imei,
            d.model,
            d.firmware,
            d.firmware_uuid.map(|u| u.to_string()),
            d.hw_version,
        ],
    )
    .unwrap();
    for (seq, s) in record.steps.iter().enumerate() {
        conn.execute(
            "INSERT INTO steps VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                record.id,
                seq,
                s.name.as_str(),
                dbtime(s.started_at),
                s.duration.as_micros() as i64,
                s.passed,
                s.attempts,
                s.detail
            ],
        )
        .unwrap();
    }
    for (seq, t) in record.tokens.iter().enumerate() {
        conn.execute(
            "INSERT INTO tokens VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.id,
                seq,
                t.kind.as_str(),
                t.text,
                t.authentic,
                t.checks_json
            ],
        )
        .unwrap();
    }
    for (seq, a) in record.artifacts.iter().enumerate() {
        conn.execute(
            "INSERT INTO artifacts VALUES (?1, ?2, ?3, ?4, ?5)",
            params![record.id, seq, a.kind.as_str(), a.sec_tag, a.content],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO nonces (kind, value, run_id, claimed_at) VALUES ('attest', ?1, ?2, ?3)",
        params![nonce, record.id, dbtime(record.started_at)],
    )
    .unwrap();
}

#[tokio::test]
async fn a_version_9_database_with_history_keeps_every_run_and_claim_in_compact_payloads() {
    let dir = tmp();
    let path = dir.path().join("v9.db");
    let base = datetime!(2024-05-01 10:00 UTC);
    let records: Vec<RunRecord> = (1..=300i64)
        .map(|i| {
            let device = format!("50503041-3633-4261-803d-{i:012x}");
            let at = base + Duration::from_secs(60 * u64::try_from(i).unwrap());
            let mut record = passed(
                i,
                &device,
                at,
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            );
            if i % 7 == 0 {
                record.outcome = Outcome::Failed;
                record.failed_step = Some(Step::Attest);
                record.reason_code = Some(ReasonCode::Signature);
                record.reason = Some("signature does not verify".into());
                record.verified_by = None;
                record.artifacts.clear();
            }
            record
        })
        .collect();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for migration in SCHEMA_V9 {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 9).unwrap();
        for record in &records {
            write_as_version_9(&conn, record, &format!("{:032x}", record.id));
        }
    }

    let store = open(&path);
    // Every run comes back as it was, from its payload.
    assert_eq!(all_runs(&store).await, records);
    // And every claim still refuses a replay, naming its first run.
    let replay = store
        .claim(
            records[0].id,
            &claim_of(ClaimKind::AttestNonce, &format!("{:032x}", 42)),
        )
        .await
        .unwrap();
    assert_eq!(replay, ClaimOutcome::Replay { first_run: 42 });
    // The summary from the tallies agrees with the runs.
    let summary = store.summary(&RunFilter::default()).await.unwrap();
    assert_eq!(summary.total.counts.seen, 300);
    assert_eq!(summary.total.counts.failed, 42);
    assert_eq!(summary.total.devices, 300);
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(
        version,
        i64::try_from(nrf_provd_core::ledger::SCHEMA_VERSION).unwrap()
    );
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('steps', 'tokens', 'artifacts')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the three tables are gone once moved");
    let payloads: i64 = conn
        .query_row("SELECT COUNT(*) FROM run_payloads", [], |row| row.get(0))
        .unwrap();
    assert_eq!(payloads, 300);
}

#[tokio::test]
async fn a_new_database_gives_back_freed_pages_without_a_full_vacuum() {
    let dir = tmp();
    let path = dir.path().join("new.db");
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, 2, "auto_vacuum=INCREMENTAL");
}

/// The identity step's ledger call: claim `nonce` for `run`, then check
/// that the run holds [`DEVICE`].
async fn identify(
    store: &SqliteLedger,
    run: i64,
    start: &RunStart,
    nonce: &str,
) -> Result<nrf_provd_core::ledger::ClaimThenCheck, LedgerError> {
    use nrf_provd_core::ledger::{DeviceCheck, Sighting};
    let check = DeviceCheck {
        run,
        device_uuid: uuid(DEVICE),
        imei: Some("351358815178345".into()),
        seen: Sighting {
            station_id: start.station_id.clone(),
            port: start.port.clone(),
            run_uid: start.uid,
            at: start.started_at,
        },
    };
    store
        .claim_then_check_device(run, &claim_of(ClaimKind::AttestNonce, nonce), &check)
        .await
}

/// Issue 25: the identity step's nonce claim and device check are one job
/// of the writer, one commit: a fresh nonce claims and checks (and a second
/// run of the device sees the first in flight); a replayed nonce names its
/// first run and leaves the device unchecked; and when the check fails
/// after the claim, the claim is undone with it, not left half done.
#[tokio::test]
async fn the_identity_claim_and_device_check_are_one_commit_both_or_neither() {
    use nrf_provd_core::ledger::ClaimThenCheck;
    let dir = tmp();
    let store = open(&dir.path().join("results.db"));
    let work = store.count_work().await.expect("count the writer's work");
    let start_a = start(datetime!(2024-05-01 10:00 UTC), "pA");
    let a = store.begin_run(&start_a).await.expect("begin A");
    let before = work.counts();
    let found = identify(&store, a, &start_a, "00AA")
        .await
        .expect("claim and check A");
    assert_eq!(work.counts().commits - before.commits, 1, "one commit");
    let ClaimThenCheck::Checked(history) = found else {
        panic!("a fresh nonce must be claimed and the device checked: {found:?}")
    };
    assert_eq!((history.running, history.passed), (None, 0));

    // The same nonce again (any case): a replay naming run A; B never
    // takes the device.
    let start_b = start(datetime!(2024-05-01 10:01 UTC), "pB");
    let b = store.begin_run(&start_b).await.expect("begin B");
    let found = identify(&store, b, &start_b, "00aa")
        .await
        .expect("claim B");
    assert_eq!(
        found,
        ClaimThenCheck::Replay(ClaimOutcome::Replay { first_run: a })
    );
    let b_row = all_runs(&store)
        .await
        .into_iter()
        .find(|r| r.id == b)
        .expect("run B");
    assert_eq!(
        b_row.device.device_uuid, None,
        "a replay leaves the device unchecked"
    );

    // A fresh nonce on run C: A holds the device now.
    let start_c = start(datetime!(2024-05-01 10:02 UTC), "pC");
    let c = store.begin_run(&start_c).await.expect("begin C");
    let found = identify(&store, c, &start_c, "00cc")
        .await
        .expect("claim and check C");
    let ClaimThenCheck::Checked(history) = found else {
        panic!("fresh: {found:?}")
    };
    assert_eq!(history.running.map(|s| s.run_uid), Some(start_a.uid));

    // A run already finished takes the claim but fails the check: neither
    // stands, so the nonce is still fresh for another run.
    let mut done = RunRecord::begun(c, &start_c);
    done.outcome = Outcome::Interrupted;
    done.finished_at = Some(start_c.started_at + Duration::from_secs(1));
    store.finish_run(&done).await.expect("finish C");
    let failed = identify(&store, c, &start_c, "00dd").await;
    assert!(
        matches!(failed, Err(LedgerError::UnknownRun(id)) if id == c),
        "{failed:?}"
    );
    assert_eq!(
        store
            .claim(b, &claim_of(ClaimKind::AttestNonce, "00dd"))
            .await
            .expect("claim"),
        ClaimOutcome::Fresh,
        "the failed job's claim was undone"
    );
}
