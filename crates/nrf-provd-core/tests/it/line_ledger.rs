//! The line's shared ledger through the library: two stations (each its own
//! SQLite) on one throwaway PostgreSQL. Claims in `required` and `deferred`
//! mode, forwarding (idempotent, oldest first, set aside on refusal), the
//! device registry, conflicts on both runs, pins, an unreachable server.

use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ledger::LedgerMode;
use nrf_provd_core::ledger::{
    Claim, ClaimKind, ClaimOutcome, DeviceCheck, Ledger, LedgerError, LedgerReader, LineLedger,
    Outcome, Pin, PinOutcome, ReasonCode, RunFilter, RunRecord, RunStart, Sighting, SqliteLedger,
};
use testkit::pg::{PgCluster, cluster};
use time::OffsetDateTime;
use uuid::Uuid;

const DEVICE: Uuid = uuid::uuid!("50503041-3633-4261-803d-1e2b8f70111a");

fn new_uid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

fn station(pg: &PgCluster, dir: &Path, id: &str, mode: LedgerMode) -> LineLedger {
    let local = SqliteLedger::open(&dir.join(format!("{id}.db"))).expect("open SQLite");
    LineLedger::new(local, pg.ledger(), mode, id, Duration::from_secs(60))
}

fn start(id: &str, port: &str) -> RunStart {
    RunStart {
        uid: new_uid(),
        station_id: id.into(),
        port: port.into(),
        started_at: OffsetDateTime::now_utc(),
        trace: Default::default(),
    }
}

fn claim(kind: ClaimKind, value: &str) -> Claim {
    Claim {
        kind,
        value: value.into(),
        at: OffsetDateTime::now_utc(),
    }
}

/// A run that claims `keygen` and passes, with its device proven.
/// Stations A and B in `deferred` mode, each with one passed run (keygen
/// nonces 0xa and 0xb), nothing forwarded yet.
async fn two_deferred_stations_with_a_run(
    pg: &PgCluster,
    dir: &Path,
) -> (LineLedger, RunRecord, LineLedger, RunRecord) {
    let a = station(pg, dir, "A", LedgerMode::Deferred);
    let b = station(pg, dir, "B", LedgerMode::Deferred);
    let run_a = passed_run(&a, "A", "/dev/ttyA0", &format!("{:032x}", 0xa)).await;
    let run_b = passed_run(&b, "B", "/dev/ttyB0", &format!("{:032x}", 0xb)).await;
    (a, run_a, b, run_b)
}

async fn passed_run(ledger: &LineLedger, id: &str, port: &str, keygen: &str) -> RunRecord {
    let start = start(id, port);
    let run = ledger.begin_run(&start).await.expect("begin");
    let outcome = ledger
        .claim(run, &claim(ClaimKind::KeygenNonce, keygen))
        .await
        .expect("claim");
    assert_eq!(outcome, ClaimOutcome::Fresh, "{id}: {keygen}");
    let mut record = RunRecord::begun(run, &start);
    record.outcome = Outcome::Passed;
    record.device.device_uuid = Some(DEVICE);
    record.device.imei = Some("352656100367872".into());
    record.verified_by = Some(nrf_provd_core::record::VerifiedBy::Keys);
    record.finished_at = Some(OffsetDateTime::now_utc());
    ledger.finish_run(&record).await.expect("finish");
    record
}

async fn line_runs(pg: &PgCluster, station: Option<&str>) -> Vec<RunRecord> {
    pg.ledger()
        .runs(&RunFilter {
            station_id: station.map(str::to_string),
            ..RunFilter::default()
        })
        .await
        .expect("read the line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_claims_are_line_wide_and_name_the_first_station() {
    let Some(pg) = cluster("required_claims_are_line_wide_and_name_the_first_station") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);

    let first = passed_run(&a, "A", "/dev/ttyA0", "00112233445566778899AABBCCDDEEFF").await;
    let start = start("B", "/dev/ttyB3");
    let run = b.begin_run(&start).await.expect("begin");
    // Hex nonces compare case-insensitively, line-wide too.
    let outcome = b
        .claim(
            run,
            &claim(ClaimKind::KeygenNonce, "00112233445566778899aabbccddeeff"),
        )
        .await
        .expect("claim");
    let ClaimOutcome::ReplayAt(seen) = outcome else {
        panic!("expected a line-wide replay, got {outcome:?}");
    };
    assert_eq!(
        (seen.station_id.as_str(), seen.port.as_str(), seen.run_uid),
        ("A", "/dev/ttyA0", first.uid)
    );
    // The same value claimed again by the same run is this run's own.
    let own = b
        .claim(run, &claim(ClaimKind::JwtJti, "nRF9161.jti-1"))
        .await
        .expect("claim");
    assert_eq!(own, ClaimOutcome::Fresh);
    assert_eq!(
        b.claim(run, &claim(ClaimKind::JwtJti, "nRF9161.jti-1"))
            .await
            .expect("claim"),
        ClaimOutcome::Replay { first_run: run }
    );
    assert!(a.status().shared_reachable == Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stores_each_run_once_oldest_first_with_everything() {
    let Some(pg) = cluster("forwarding_stores_each_run_once_oldest_first_with_everything") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Deferred);
    let mut local = Vec::new();
    for i in 0..7 {
        local.push(passed_run(&a, "A", "/dev/ttyA0", &format!("{i:032x}")).await);
    }
    assert_eq!(a.status().backlog, 7);
    // Batches of 3: three batches, oldest first.
    assert_eq!(a.forward_now(3).await.expect("forward"), 7);
    assert_eq!(a.status().backlog, 0);
    assert_eq!(a.forward_now(3).await.expect("again"), 0, "nothing left");
    let line = line_runs(&pg, Some("A")).await;
    let uids = |runs: &[RunRecord]| runs.iter().map(|r| r.uid).collect::<Vec<_>>();
    assert_eq!(uids(&line), uids(&local));
    assert!(line.iter().all(|r| r.outcome == Outcome::Passed));

    // The device registry counts the passes.
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT runs, provisioned, first_station, last_station FROM devices WHERE device_uuid = $1",
            &[&DEVICE],
        )
        .await
        .expect("registry row");
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, i64>(1), 7);
    assert_eq!(row.get::<_, String>(2), "A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_twice_is_stored_once() {
    let Some(pg) = cluster("the_same_batch_twice_is_stored_once") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Deferred);
    for i in 0..3 {
        passed_run(&a, "A", "/dev/ttyA0", &format!("{i:032x}")).await;
    }
    let batch = a
        .local()
        .outbox()
        .expect("open the outbox")
        .forward_batch(0, 10)
        .await
        .expect("read outbox")
        .expect("a batch");
    let central = pg.ledger();
    let first = central.forward(&batch).await.expect("forward");
    let second = central.forward(&batch).await.expect("forward again");
    assert_eq!((first.stored, second.stored), (3, 0));
    assert_eq!((first.conflicts, second.conflicts), (0, 0));
    let client = pg.client().await;
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM claims),
                    (SELECT provisioned FROM devices WHERE device_uuid = $1)",
            &[&DEVICE],
        )
        .await
        .expect("counts");
    assert_eq!(
        (
            counts.get::<_, i64>(0),
            counts.get::<_, i64>(1),
            counts.get::<_, i64>(2)
        ),
        (3, 3, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_clash_is_a_conflict_on_both_runs() {
    let Some(pg) = cluster("a_deferred_clash_is_a_conflict_on_both_runs") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Deferred);
    let b = station(&pg, dir.path(), "B", LedgerMode::Deferred);
    let nonce = "feedfacefeedfacefeedfacefeedface";
    let run_a = passed_run(&a, "A", "/dev/ttyA0", nonce).await;
    // B's claim is fresh locally: deferred mode does not ask during the run.
    let run_b = passed_run(&b, "B", "/dev/ttyB0", nonce).await;
    a.forward_now(100).await.expect("forward A");
    b.forward_now(100).await.expect("forward B");
    // A learns of the conflict B's forwarding found on its next pass.
    a.forward_now(100).await.expect("A again");

    for (ledger, run, other) in [(&a, &run_a, &run_b), (&b, &run_b, &run_a)] {
        let local = ledger
            .local()
            .runs(&RunFilter::default())
            .await
            .expect("local runs");
        let amended = local.iter().find(|r| r.uid == run.uid).expect("the run");
        assert_eq!(amended.outcome, Outcome::Failed, "{amended:?}");
        assert_eq!(amended.reason_code, Some(ReasonCode::Conflict));
        let reason = amended.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&other.uid.to_string()) && reason.contains(nonce),
            "{reason}"
        );
        assert!(reason.contains("recorded as passed"), "{reason}");
        assert_eq!(ledger.status().conflicts, 1);
    }
    // The line shows both as conflicts too, and counts them in its summary.
    let line = line_runs(&pg, None).await;
    assert_eq!(line.len(), 2);
    assert!(
        line.iter()
            .all(|r| r.reason_code == Some(ReasonCode::Conflict))
    );
    let summary = pg
        .ledger()
        .summary(&RunFilter::default())
        .await
        .expect("summary");
    assert_eq!(summary.total.counts.failed, 2);
    assert_eq!(summary.top_reasons[0].reason_code, "conflict");
    // Delivered once: another pass records nothing new.
    a.forward_now(100).await.expect("A again");
    assert_eq!(a.status().conflicts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_runs_once_at_a_time_on_the_whole_line() {
    let Some(pg) = cluster("one_device_runs_once_at_a_time_on_the_whole_line") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);
    let check = |run, start: &RunStart| DeviceCheck {
        run,
        device_uuid: DEVICE,
        imei: None,
        seen: Sighting {
            station_id: start.station_id.clone(),
            port: start.port.clone(),
            run_uid: start.uid,
            at: OffsetDateTime::now_utc(),
        },
    };
    let start_a = start("A", "/dev/ttyA0");
    let run_a = a.begin_run(&start_a).await.expect("begin");
    let history = a
        .check_device(&check(run_a, &start_a))
        .await
        .expect("check");
    assert_eq!(history.running, None);
    assert_eq!(history.passed, 0);

    let start_b = start("B", "/dev/ttyB1");
    let run_b = b.begin_run(&start_b).await.expect("begin");
    let history = b
        .check_device(&check(run_b, &start_b))
        .await
        .expect("check");
    let running = history.running.expect("A holds the device");
    assert_eq!(
        (running.station_id.as_str(), running.run_uid),
        ("A", start_a.uid)
    );
    let mut refused = RunRecord::begun(run_b, &start_b);
    refused.fail(
        Outcome::Failed,
        None,
        ReasonCode::DuplicateIdentity,
        "A has it",
    );
    refused.finished_at = Some(OffsetDateTime::now_utc());
    b.finish_run(&refused).await.expect("finish");

    // A's run ends (passed): the device is free, and known to have passed.
    let mut record = RunRecord::begun(run_a, &start_a);
    record.outcome = Outcome::Passed;
    record.device.device_uuid = Some(DEVICE);
    record.verified_by = Some(nrf_provd_core::record::VerifiedBy::Keys);
    record.finished_at = Some(OffsetDateTime::now_utc());
    a.finish_run(&record).await.expect("finish");
    a.forward_now(100).await.expect("forward");
    let start_b2 = start("B", "/dev/ttyB1");
    let run_b2 = b.begin_run(&start_b2).await.expect("begin");
    let history = b
        .check_device(&check(run_b2, &start_b2))
        .await
        .expect("check");
    assert_eq!(history.running, None, "released when A finished");
    assert_eq!(history.passed, 1);
    let last = history.last_passed.expect("where it passed");
    assert_eq!((last.station_id.as_str(), last.run_uid), ("A", start_a.uid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_are_line_wide_in_required_mode() {
    let Some(pg) = cluster("pins_are_line_wide_in_required_mode") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);
    let pin = |station: &str, key: u8| Pin {
        device_uuid: DEVICE,
        public_key: vec![key; 91],
        at: OffsetDateTime::now_utc(),
        station_id: station.into(),
        port: "/dev/ttyX".into(),
        run_uid: new_uid(),
    };
    assert_eq!(a.pin(&pin("A", 1)).await.expect("pin"), PinOutcome::Pinned);
    let PinOutcome::Same(first) = b.pin(&pin("B", 1)).await.expect("pin") else {
        panic!("same key at B");
    };
    assert_eq!(first.station_id, "A");
    let PinOutcome::Changed(first) = b.pin(&pin("B", 2)).await.expect("pin") else {
        panic!("another key at B");
    };
    assert_eq!((first.station_id.as_str(), first.public_key[0]), ("A", 1));
}

/// Issue 18: one identity key is never pinned for two devices, line-wide:
/// B asking to pin A's device key for a second UUID is `Reused`, naming the
/// device, station and run it is pinned for; many stations racing to pin one
/// key for different devices pin it once (an advisory lock per key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_is_never_pinned_for_two_devices_on_the_line() {
    let Some(pg) = cluster("one_key_is_never_pinned_for_two_devices_on_the_line") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);
    let pin = |device: Uuid, station: &str, key: u8| Pin {
        device_uuid: device,
        public_key: vec![key; 91],
        at: OffsetDateTime::now_utc(),
        station_id: station.into(),
        port: "/dev/ttyX".into(),
        run_uid: new_uid(),
    };
    let first = pin(DEVICE, "A", 7);
    assert_eq!(a.pin(&first).await.expect("pin"), PinOutcome::Pinned);
    let second = Uuid::from_u128(0x5ec0);
    let PinOutcome::Reused(other) = b.pin(&pin(second, "B", 7)).await.expect("pin") else {
        panic!("A's key under a second UUID at B");
    };
    assert_eq!(
        (other.device_uuid, other.station_id.as_str(), other.run_uid),
        (DEVICE, "A", first.run_uid)
    );
    let client = pg.client().await;
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM pins WHERE public_key = $1",
            &[&vec![7u8; 91]],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1, "nothing pinned for the second UUID");

    // Eight devices race for one new key from two stations.
    let racers = (0..8u128).map(|i| {
        let ledger = if i % 2 == 0 { &a } else { &b };
        let p = pin(
            Uuid::from_u128(0xace0 + i),
            if i % 2 == 0 { "A" } else { "B" },
            9,
        );
        async move { ledger.pin(&p).await.expect("pin") }
    });
    let outcomes = futures::future::join_all(racers).await;
    let pinned = outcomes
        .iter()
        .filter(|o| **o == PinOutcome::Pinned)
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, PinOutcome::Reused(_)))
        .count();
    assert_eq!((pinned, reused), (1, 7), "{outcomes:?}");
}

/// Issue 21: any authority's bindings are line-wide in `required` mode, as
/// pins are, and apart from them: a value bound at A is refused under a
/// second device at B, naming A; the same bytes are `pin`'s first sight;
/// eight stations racing to bind one value bind it once (the advisory lock
/// is per authority and value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authoritys_bindings_are_line_wide_in_required_mode_and_apart_from_pins() {
    use nrf_provd_core::ledger::{Binding, BindingOutcome};
    let Some(pg) =
        cluster("any_authoritys_bindings_are_line_wide_in_required_mode_and_apart_from_pins")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);
    let bind = |device: Uuid, station: &str, value: &[u8]| Binding {
        authority: "serial".into(),
        subject: device,
        value: value.to_vec(),
        at: OffsetDateTime::now_utc(),
        station_id: station.into(),
        port: "/dev/ttyX".into(),
        run_uid: new_uid(),
    };
    let first = bind(DEVICE, "A", b"SN-1");
    assert_eq!(a.bind(&first).await.expect("bind"), BindingOutcome::Bound);
    let second = Uuid::from_u128(0x5ec0);
    let BindingOutcome::ValueReused(other) =
        b.bind(&bind(second, "B", b"SN-1")).await.expect("bind")
    else {
        panic!("A's value under a second UUID at B");
    };
    assert_eq!(
        (other.subject, other.station_id.as_str(), other.run_uid),
        (DEVICE, "A", first.run_uid)
    );
    let BindingOutcome::Mismatch(other) = b.bind(&bind(DEVICE, "B", b"SN-2")).await.expect("bind")
    else {
        panic!("another value for A's device at B");
    };
    assert_eq!(other.value, b"SN-1");
    let pin = Pin {
        device_uuid: second,
        public_key: b"SN-1".to_vec(),
        at: OffsetDateTime::now_utc(),
        station_id: "B".into(),
        port: "/dev/ttyX".into(),
        run_uid: new_uid(),
    };
    assert_eq!(b.pin(&pin).await.expect("pin"), PinOutcome::Pinned);

    let racers = (0..8u128).map(|i| {
        let ledger = if i % 2 == 0 { &a } else { &b };
        let binding = bind(
            Uuid::from_u128(0xace0 + i),
            if i % 2 == 0 { "A" } else { "B" },
            b"SN-race",
        );
        async move { ledger.bind(&binding).await.expect("bind") }
    });
    let outcomes = futures::future::join_all(racers).await;
    let bound = outcomes
        .iter()
        .filter(|o| **o == BindingOutcome::Bound)
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, BindingOutcome::ValueReused(_)))
        .count();
    assert_eq!((bound, reused), (1, 7), "{outcomes:?}");
}

/// A line's ledger from before the one store of authorities' state
/// (schema version 3) keeps its pins: they become the `pin` authority's
/// bindings, a key pinned there is refused for another device, and the
/// registry's `pins` still reads as it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pins_of_an_older_line_ledger_are_the_pin_authoritys_bindings() {
    let Some(pg) = cluster("the_pins_of_an_older_line_ledger_are_the_pin_authoritys_bindings")
    else {
        return;
    };
    let client = pg.client().await;
    let first_run = new_uid();
    client
        .batch_execute(concat!(
            include_str!("../../src/ledger/postgres/migrations/0001_line.sql"),
            include_str!("../../src/ledger/postgres/migrations/0002_pin_keys.sql"),
            include_str!("../../src/ledger/postgres/migrations/0003_traceability.sql"),
            "CREATE TABLE nrf_provd_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO nrf_provd_migrations (version, name)
                 VALUES (1, '0001_line'), (2, '0002_pin_keys'), (3, '0003_traceability');"
        ))
        .await
        .expect("a version 3 line ledger");
    client
        .execute(
            "INSERT INTO pins (device_uuid, public_key, pinned_at, station_id, port, run_uid)
             VALUES ($1, $2, now(), 'A', '/dev/ttyA0', $3)",
            &[&DEVICE, &vec![3u8; 91], &first_run],
        )
        .await
        .expect("a pin");
    let dir = tempfile::tempdir().expect("dir");
    let b = station(&pg, dir.path(), "B", LedgerMode::Required);
    let PinOutcome::Reused(other) = b
        .pin(&Pin {
            device_uuid: Uuid::from_u128(0x5ec0),
            public_key: vec![3; 91],
            at: OffsetDateTime::now_utc(),
            station_id: "B".into(),
            port: "/dev/ttyB0".into(),
            run_uid: new_uid(),
        })
        .await
        .expect("pin")
    else {
        panic!("the key is pinned for {DEVICE}");
    };
    assert_eq!(
        (other.device_uuid, other.station_id.as_str(), other.run_uid),
        (DEVICE, "A", first_run)
    );
    let rows: Vec<(Uuid, Vec<u8>)> = client
        .query("SELECT device_uuid, public_key FROM pins", &[])
        .await
        .expect("pins")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows, [(DEVICE, vec![3u8; 91])]);
}

/// In `deferred` mode the key is pinned locally at each station; the
/// forwarder finds the same key pinned for two devices and records a
/// conflict on both runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pinned_for_two_devices_in_deferred_mode_is_a_conflict_on_both_runs() {
    let Some(pg) =
        cluster("a_key_pinned_for_two_devices_in_deferred_mode_is_a_conflict_on_both_runs")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (a, run_a, b, run_b) = two_deferred_stations_with_a_run(&pg, dir.path()).await;
    for (ledger, run, device, station) in [
        (&a, &run_a, DEVICE, "A"),
        (&b, &run_b, Uuid::from_u128(0x5ec0), "B"),
    ] {
        let outcome = ledger
            .pin(&Pin {
                device_uuid: device,
                public_key: vec![5; 91],
                at: OffsetDateTime::now_utc(),
                station_id: station.into(),
                port: run.port.clone(),
                run_uid: run.uid,
            })
            .await
            .expect("pin");
        assert_eq!(outcome, PinOutcome::Pinned, "locally, at {station}");
    }
    a.forward_now(100).await.expect("forward A");
    b.forward_now(100).await.expect("forward B");
    a.forward_now(100).await.expect("A again");
    let print = nrf_provd_core::plan::authority::fingerprint(&[5; 91]);
    for (ledger, run, other) in [(&a, &run_a, &run_b), (&b, &run_b, &run_a)] {
        let local = ledger
            .local()
            .runs(&RunFilter::default())
            .await
            .expect("local runs");
        let amended = local.iter().find(|r| r.uid == run.uid).expect("the run");
        assert_eq!(
            amended.reason_code,
            Some(ReasonCode::Conflict),
            "{amended:?}"
        );
        let reason = amended.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&format!(
                "identity key {print} is pinned for another device"
            )) && reason.contains(&other.uid.to_string()),
            "{reason}"
        );
    }
}

/// A `serial` authority's binding made in `deferred` mode: locally first
/// sight at its station, line-wide once forwarded.
async fn bind_serial(ledger: &LineLedger, run: &RunRecord, device: Uuid, serial: &[u8]) {
    use nrf_provd_core::ledger::{Binding, BindingOutcome};
    let binding = Binding {
        authority: "serial".into(),
        subject: device,
        value: serial.to_vec(),
        at: OffsetDateTime::now_utc(),
        station_id: run.station_id.clone(),
        port: run.port.clone(),
        run_uid: run.uid,
    };
    let outcome = ledger.bind(&binding).await.expect("bind");
    assert_eq!(
        outcome,
        BindingOutcome::Bound,
        "locally, at {}",
        run.station_id
    );
}

/// Forward both stations' runs, and bring B's findings back to A.
async fn forward_both(a: &LineLedger, b: &LineLedger) {
    a.forward_now(100).await.expect("forward A");
    b.forward_now(100).await.expect("forward B");
    a.forward_now(100).await.expect("A again");
}

/// Each run is amended at its own station: failed at attest (where the
/// authorities bind), `conflict`, in words that contain `words` and name
/// the other run.
async fn assert_amended(ledger: &LineLedger, run: &RunRecord, other: &RunRecord, words: &str) {
    let local = ledger
        .local()
        .runs(&RunFilter::default())
        .await
        .expect("local runs");
    let amended = local.iter().find(|r| r.uid == run.uid).expect("the run");
    assert_eq!(
        (amended.outcome, amended.reason_code, amended.failed_step),
        (
            Outcome::Failed,
            Some(ReasonCode::Conflict),
            Some(nrf_provd_core::ledger::Step::Attest)
        ),
        "{amended:?}"
    );
    let reason = amended.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(words) && reason.contains(&other.uid.to_string()),
        "{reason}"
    );
}

/// The line's conflicts, as (run, kind), sorted.
async fn line_conflicts(pg: &PgCluster) -> Vec<(Uuid, String)> {
    let mut found: Vec<(Uuid, String)> = pg
        .client()
        .await
        .query("SELECT run_uid, kind FROM conflicts", &[])
        .await
        .expect("conflicts")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    found.sort();
    found
}

/// Issue 21: in `deferred` mode the outbox carries every authority's
/// bindings, not `pin`'s only. A `serial` value bound to two devices at two
/// stations is a conflict on both runs, named after the authority, under
/// `serial` alone: A's pin of the same bytes is another authority's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authoritys_value_bound_to_two_devices_in_deferred_mode_is_a_conflict_on_both_runs() {
    let Some(pg) = cluster("any_authoritys_value_bound_to_two_devices_in_deferred_mode") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (a, run_a, b, run_b) = two_deferred_stations_with_a_run(&pg, dir.path()).await;
    bind_serial(&a, &run_a, DEVICE, b"SN-7").await;
    let pin = Pin {
        device_uuid: DEVICE,
        public_key: b"SN-7".to_vec(),
        at: OffsetDateTime::now_utc(),
        station_id: "A".into(),
        port: run_a.port.clone(),
        run_uid: run_a.uid,
    };
    assert_eq!(a.pin(&pin).await.expect("pin"), PinOutcome::Pinned);
    bind_serial(&b, &run_b, Uuid::from_u128(0x5ec0), b"SN-7").await;
    forward_both(&a, &b).await;

    let print = nrf_provd_core::plan::authority::fingerprint(b"SN-7");
    let words = format!("value {print} of authority serial is bound to another device");
    assert_amended(&a, &run_a, &run_b, &words).await;
    assert_amended(&b, &run_b, &run_a, &words).await;
    let mut expected = vec![
        (run_a.uid, "serial.value".to_string()),
        (run_b.uid, "serial.value".to_string()),
    ];
    expected.sort();
    assert_eq!(line_conflicts(&pg).await, expected);
    // Stored on the line under their own authority, beside A's pin.
    let stored: Vec<(String, Uuid)> = pg
        .client()
        .await
        .query(
            "SELECT authority, subject FROM authority_bindings ORDER BY authority, subject",
            &[],
        )
        .await
        .expect("bindings")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        stored,
        [
            ("pin".to_string(), DEVICE),
            ("serial".to_string(), Uuid::from_u128(0x5ec0)),
            ("serial".to_string(), DEVICE)
        ]
    );
}

/// Issue 21: a device bound to one `serial` value at A and another at B in
/// `deferred` mode is a conflict on both runs, naming the device and the
/// authority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authoritys_device_bound_to_two_values_in_deferred_mode_is_a_conflict_on_both_runs() {
    let Some(pg) = cluster("any_authoritys_device_bound_to_two_values_in_deferred_mode") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (a, run_a, b, run_b) = two_deferred_stations_with_a_run(&pg, dir.path()).await;
    bind_serial(&a, &run_a, DEVICE, b"SN-1").await;
    bind_serial(&b, &run_b, DEVICE, b"SN-2").await;
    forward_both(&a, &b).await;

    let words = format!("device {DEVICE} has another value bound by authority serial");
    assert_amended(&a, &run_a, &run_b, &words).await;
    assert_amended(&b, &run_b, &run_a, &words).await;
    let mut expected = vec![
        (run_a.uid, "serial.subject".to_string()),
        (run_b.uid, "serial.subject".to_string()),
    ];
    expected.sort();
    assert_eq!(line_conflicts(&pg).await, expected);
}

/// Two stations forwarding at once cannot both miss one value bound to two
/// devices: B's batch waits for the value's lock that A's batch, still
/// open, holds, and so sees A's binding once it is committed. (B's batch
/// finishing first, without waiting, is the failure: it looked too early.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_bound_by_a_batch_still_open_is_a_conflict_for_the_batch_beside_it() {
    let Some(pg) =
        cluster("a_value_bound_by_a_batch_still_open_is_a_conflict_for_the_batch_beside_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Deferred);
    let b = station(&pg, dir.path(), "B", LedgerMode::Deferred);
    let run_a = passed_run(&a, "A", "/dev/ttyA0", &format!("{:032x}", 0xa)).await;
    a.forward_now(100).await.expect("forward A");
    let run_b = passed_run(&b, "B", "/dev/ttyB0", &format!("{:032x}", 0xb)).await;
    bind_serial(&b, &run_b, Uuid::from_u128(0x5ec0), b"SN-7").await;

    // A's next batch, as the forwarder makes it, not yet committed.
    let mut client = pg.client().await;
    let open = client.transaction().await.expect("A's batch");
    let lock = nrf_provd_core::ledger::postgres::value_lock("serial", b"SN-7");
    open.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
        .await
        .expect("the value's lock");
    open.execute(
        "INSERT INTO authority_bindings (authority, subject, value, bound_at, station_id, port,
             run_uid)
         VALUES ('serial', $1, 'SN-7', now(), 'A', '/dev/ttyA0', $2)",
        &[&DEVICE, &run_a.uid],
    )
    .await
    .expect("A's binding");
    let forward = b.forward_now(100);
    tokio::pin!(forward);
    let waited = tokio::select! {
        done = &mut forward => {
            done.expect("forward B");
            false
        }
        () = waits_for_an_advisory_lock(&pg) => true,
    };
    open.commit().await.expect("A's batch committed");
    if waited {
        forward.await.expect("forward B");
    }
    b.forward_now(100).await.expect("B again");

    let print = nrf_provd_core::plan::authority::fingerprint(b"SN-7");
    let words = format!("value {print} of authority serial is bound to another device");
    assert_amended(&b, &run_b, &run_a, &words).await;
}

/// Returns once a session of the cluster waits for an advisory lock.
async fn waits_for_an_advisory_lock(pg: &PgCluster) {
    let client = pg.client().await;
    loop {
        let waiting: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)",
                &[],
            )
            .await
            .expect("pg_locks")
            .get(0);
        if waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_required_claims_and_keeps_the_records() {
    let Some(mut pg) = cluster("a_server_that_is_down_fails_required_claims_and_keeps_the_records")
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Required);
    passed_run(&a, "A", "/dev/ttyA0", &format!("{:032x}", 1)).await;
    pg.kill();
    let start = start("A", "/dev/ttyA0");
    let run = a
        .begin_run(&start)
        .await
        .expect("begin works without the server");
    let err = a
        .claim(run, &claim(ClaimKind::KeygenNonce, &format!("{:032x}", 2)))
        .await
        .expect_err("no server, no required claim");
    assert!(matches!(err, LedgerError::Unreachable { .. }), "{err}");
    assert!(!err.to_string().contains("line-ledger-test-pw"), "{err}");
    assert_eq!(a.status().shared_reachable, Some(false));
    // The token was still recorded here: shown again, it is a replay.
    assert_eq!(
        a.claim(run, &claim(ClaimKind::KeygenNonce, &format!("{:032x}", 2)))
            .await
            .map_err(|e| e.to_string()),
        Ok(ClaimOutcome::Replay { first_run: run })
    );
    let mut record = RunRecord::begun(run, &start);
    record.fail(Outcome::Failed, None, ReasonCode::LedgerUnreachable, "down");
    record.finished_at = Some(OffsetDateTime::now_utc());
    a.finish_run(&record).await.expect("finish locally");
    assert!(matches!(
        a.forward_now(10).await,
        Err(LedgerError::Unreachable { .. })
    ));
    assert_eq!(a.status().backlog, 2);
    pg.restart();
    assert_eq!(a.forward_now(10).await.expect("forward after restart"), 2);
    assert_eq!(line_runs(&pg, Some("A")).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_readable_password_file_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "secret-value\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let mut config =
        nrf_provd_core::ledger::LedgerConfig::for_url("postgres://nrf@/line?host=/nowhere".into());
    config.password = nrf_provd_core::ledger::PasswordSource::File(file.clone());
    let err = nrf_provd_core::ledger::PgSettings::new(&config).expect_err("0640 is refused");
    let text = err.to_string();
    assert!(
        text.contains("chmod 600") && text.contains("mode 640"),
        "{text}"
    );
    assert!(!text.contains("secret-value"), "{text}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let settings = nrf_provd_core::ledger::PgSettings::new(&config).expect("0600 is taken");
    assert_eq!(settings.shown(), "postgres://nrf@/line?host=/nowhere");
    assert!(!format!("{settings:?}").contains("secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_without_showing_it() {
    let Some(pg) = cluster("a_wrong_password_is_refused_without_showing_it") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pw");
    std::fs::write(&file, "not-the-password\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut config = nrf_provd_core::ledger::LedgerConfig::for_url(pg.url());
    config.password = nrf_provd_core::ledger::PasswordSource::File(file);
    let settings = nrf_provd_core::ledger::PgSettings::new(&config).expect("settings");
    let ledger = nrf_provd_core::ledger::PostgresLedger::new(&settings).expect("ledger");
    let err = ledger.connect().await.expect_err("wrong password");
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(!err.is_transient(), "waiting will not fix a wrong password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_ledger_keeps_each_runs_traceability_and_filters_and_summarises_by_work_order() {
    let Some(pg) = cluster("the_line_ledger_keeps_each_runs_traceability") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let a = station(&pg, dir.path(), "A", LedgerMode::Deferred);
    let trace = |wo: Option<&str>| nrf_provd_core::record::Traceability {
        work_order: wo.map(str::to_string),
        lot: Some("LOT-7".into()),
        operator: Some("ana".into()),
        product: Some("ACME-TRACKER rev C".into()),
        fixture: Some("F01".into()),
    };
    for (i, wo) in [Some("WO-1"), Some("WO-2"), Some("WO-1"), None]
        .into_iter()
        .enumerate()
    {
        let start = RunStart {
            trace: trace(wo),
            ..start("A", "/dev/ttyA0")
        };
        let run = a.begin_run(&start).await.expect("begin");
        let mut record = RunRecord::begun(run, &start);
        record.outcome = if i == 2 {
            Outcome::Failed
        } else {
            Outcome::Passed
        };
        record.finished_at = Some(OffsetDateTime::now_utc());
        a.finish_run(&record).await.expect("finish");
    }
    assert_eq!(a.forward_now(10).await.expect("forward"), 4);
    let line = line_runs(&pg, None).await;
    assert_eq!(line.len(), 4);
    assert_eq!(line[0].trace, trace(Some("WO-1")));
    assert_eq!(line[3].trace, trace(None));
    let wo1 = pg
        .ledger()
        .runs(&RunFilter {
            work_order: Some("WO-1".into()),
            ..RunFilter::default()
        })
        .await
        .expect("read the line");
    assert_eq!(wo1.len(), 2);
    let summary = pg
        .ledger()
        .summary(&RunFilter::default())
        .await
        .expect("summary");
    let of = |wo: Option<&str>| {
        summary
            .work_orders
            .iter()
            .find(|w| w.work_order.as_deref() == wo)
            .map(|w| (w.counts.seen, w.counts.passed))
    };
    assert_eq!(of(Some("WO-1")), Some((2, 1)), "{summary:?}");
    assert_eq!(of(Some("WO-2")), Some((1, 1)));
    assert_eq!(of(None), Some((1, 1)));
}
