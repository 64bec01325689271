//! The nRF Cloud client against the stand-in on loopback: bulk claim of
//! 10,000 devices in batches of 1000 (the contract's limit), one claim dry
//! run, and the hand-off of 10,000 runs stored in a real SQLite ledger
//! (queue read, CSV, request, per-device outcome committed), claims and
//! onboarding. Both ends run in this process, so the figures include the
//! stand-in's own work (CSV, CBOR, JSON) — a floor for the client's cost,
//! not nRF Cloud's speed.

use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nrf_cloud::{ApiKey, ClaimRow, CloudClient, CloudSettings, MAX_ROWS};
use nrf_cloud_standin::{StandIn, StandInConfig, Verdict};
use nrf_provd_core::ca::{Issuance, StationCa};
use nrf_provd_core::handoff::{Handoff, HandoffSettings, Pass, Report};
use nrf_provd_core::ledger::SqliteLedger;
use nrf_provd_core::record::{
    Artifact, ArtifactKind, DeviceInfo, Outcome, RunRecord, RunStart, Step, StepRecord,
    TokenRecord, VerifiedBy,
};
use nrf91_token::TokenKind;
use nrf91_token::encode::{self, IdentityBody};
use p256::ecdsa::SigningKey;
use time::OffsetDateTime;
use uuid::Uuid;

const DEVICES: usize = 10_000;

struct Setup {
    standin: StandIn,
    client: CloudClient,
    batches: Vec<Vec<ClaimRow>>,
}

async fn setup() -> Setup {
    let standin = StandIn::start(StandInConfig::default())
        .await
        .expect("stand-in");
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let mut rows = Vec::with_capacity(DEVICES);
    for n in 0..DEVICES as u128 {
        let uuid = Uuid::from_u128(0x50503041_3633_4261_8000_000000000000 | n);
        standin.add_device(uuid, Verdict::Accept);
        let body = IdentityBody {
            msg_type: 1,
            device_uuid: *uuid.as_bytes(),
            device_type: 4,
            firmware_uuid: [7; 16],
            nonce: rand::random(),
        };
        rows.push(ClaimRow {
            token: encode::identity_token(&body, &key),
            tags: vec!["nrf-cloud-onboarding".into()],
        });
    }
    let settings = CloudSettings::with_urls(&standin.provisioning_url(), &standin.api_url())
        .expect("settings");
    let api_key = ApiKey::new(standin.api_key(), "bench").expect("key");
    let client = CloudClient::new(settings, api_key).expect("client");
    let batches = rows.chunks(MAX_ROWS).map(<[ClaimRow]>::to_vec).collect();
    Setup {
        standin,
        client,
        batches,
    }
}

/// One round: every batch claimed, each row checked.
async fn claim_all(setup: &Setup) {
    setup.standin.forget_claims();
    setup.standin.clear_requests();
    for batch in &setup.batches {
        let answer = setup.client.bulk_claim(batch).await.expect("bulk claim");
        assert_eq!(answer.claimed(), batch.len());
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let setup = runtime.block_on(setup());

    let mut group = c.benchmark_group("cloud_bulk_claim");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DEVICES as u64));
    group.bench_function("10000_rows_in_batches_of_1000", |b| {
        b.to_async(&runtime).iter(|| claim_all(&setup))
    });
    group.finish();

    // The same rounds timed by hand, to print batches/s next to rows/s.
    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        runtime.block_on(claim_all(&setup));
    }
    let per_round = started.elapsed() / rounds;
    let batches = setup.batches.len() as f64;
    println!(
        "cloud_bulk_claim: {:.1} batches/s, {:.0} rows/s ({:.1} ms per 1000-row batch)",
        batches / per_round.as_secs_f64(),
        DEVICES as f64 / per_round.as_secs_f64(),
        per_round.as_secs_f64() * 1000.0 / batches
    );

    let token = setup.batches[0][0].token.clone();
    setup.standin.forget_claims();
    let mut group = c.benchmark_group("cloud_claim_dry_run");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("one_token", |b| {
        b.to_async(&runtime).iter(|| async {
            setup.standin.clear_requests();
            setup.client.claim_dry_run(&token).await.expect("dry run")
        })
    });
    group.finish();
}

/// 10,000 passed runs in a SQLite ledger, each with its identity token and
/// an installed device certificate, and a hand-off of them to the stand-in.
struct Stored {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    standin: StandIn,
    handoff: Handoff,
}

async fn stored(batches: &[Vec<ClaimRow>]) -> Stored {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let ledger = SqliteLedger::open(&db).expect("database");
    let ca = StationCa::generate("bench CA", Duration::from_secs(86_400)).expect("CA");
    let device_key = SigningKey::random(&mut rand::rngs::OsRng);
    let spki =
        p256::pkcs8::EncodePublicKey::to_public_key_der(device_key.verifying_key()).expect("spki");
    let at = OffsetDateTime::now_utc();
    let mut runs = Vec::with_capacity(DEVICES);
    for (n, row) in batches.iter().flatten().enumerate() {
        let uuid = Uuid::from_u128(0x50503041_3633_4261_8000_000000000000 | n as u128);
        let start = RunStart {
            uid: Uuid::from_bytes(rand::random()),
            station_id: "bench".into(),
            port: format!("/dev/nrf91-{}", n % 64),
            started_at: at,
            trace: Default::default(),
        };
        let mut record = RunRecord::begun(0, &start);
        record.finished_at = Some(at);
        record.outcome = Outcome::Passed;
        record.verified_by = Some(VerifiedBy::Keys);
        record.device = DeviceInfo {
            device_uuid: Some(uuid),
            ..DeviceInfo::default()
        };
        record.steps = vec![StepRecord {
            name: Step::Install,
            started_at: at,
            duration: Duration::from_millis(1),
            passed: true,
            attempts: 1,
            detail: String::new(),
        }];
        record.tokens = vec![TokenRecord {
            kind: TokenKind::Identity,
            text: row.token.clone(),
            authentic: true,
            checks_json: "{}".into(),
        }];
        let pem = ca
            .sign_device(
                &uuid.to_string(),
                spki.as_bytes(),
                Issuance {
                    now: std::time::SystemTime::now(),
                    validity: Duration::from_secs(3600),
                    serial: rand::random(),
                },
            )
            .expect("certificate")
            .pem;
        record.artifacts = vec![Artifact {
            kind: ArtifactKind::DeviceCertificate,
            sec_tag: Some(16_842_753),
            content: pem,
        }];
        runs.push((record, Vec::new()));
    }
    ledger.record_finished(runs).await.expect("store runs");
    drop(ledger);
    let standin = StandIn::start(StandInConfig {
        polls_to_finish: 1,
        ..StandInConfig::default()
    })
    .await
    .expect("stand-in");
    for n in 0..DEVICES as u128 {
        standin.add_device(
            Uuid::from_u128(0x50503041_3633_4261_8000_000000000000 | n),
            Verdict::Accept,
        );
    }
    let settings = CloudSettings::with_urls(&standin.provisioning_url(), &standin.api_url())
        .expect("settings");
    let client = CloudClient::new(
        settings,
        ApiKey::new(standin.api_key(), "bench").expect("key"),
    )
    .expect("client");
    let store = SqliteLedger::open_handoff(&db).expect("hand-off state");
    let handoff = Handoff::new(
        Arc::new(client),
        Arc::new(store),
        HandoffSettings {
            claim_tags: vec!["nrf-cloud-onboarding".into()],
            onboard_sub_type: String::new(),
            onboard_tags: Vec::new(),
            onboard_fw_types: vec!["APP".into(), "MODEM".into()],
            batch_size: MAX_ROWS,
            poll_every: Duration::from_millis(1),
            op_deadline: Duration::from_secs(60),
        },
    );
    Stored {
        _dir: dir,
        db,
        standin,
        handoff,
    }
}

impl Stored {
    /// Forget every hand-off, here and on the stand-in (untimed): every
    /// device owed to the hand-off's sinks again, as when its run finished
    /// (each device has one run here).
    fn reset(&self) {
        self.standin.forget_claims();
        self.standin.clear_requests();
        let conn = rusqlite::Connection::open(&self.db).expect("open");
        conn.execute_batch(
            "DELETE FROM handoff;
             INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
             SELECT -1, run_id, '2026-01-01T00:00:00.000000Z' FROM run_payloads WHERE claimable;
             INSERT OR IGNORE INTO deliveries (sink_id, run_id, queued_at)
             SELECT -2, run_id, '2026-01-01T00:00:00.000000Z' FROM run_payloads WHERE onboardable;",
        )
        .expect("reset");
    }

    async fn claim(&self) -> Report {
        let report = self.handoff.claim(&Pass::default(), &mut |_| {}).await;
        assert_eq!(report.done, DEVICES, "{:?}", report.stopped);
        report
    }

    async fn onboard(&self) -> Report {
        let report = self.handoff.onboard(&Pass::default(), &mut |_| {}).await;
        assert_eq!(report.done, DEVICES, "{:?}", report.stopped);
        report
    }
}

fn bench_handoff(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let rows = runtime.block_on(setup()).batches;
    let stored = runtime.block_on(stored(&rows));

    let mut group = c.benchmark_group("cloud_handoff");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DEVICES as u64));
    for (name, onboard) in [
        ("claim_10000_stored_runs", false),
        ("onboard_10000_stored_runs", true),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter_custom(|iters| {
                let stored = &stored;
                async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        stored.reset();
                        let started = Instant::now();
                        if onboard {
                            stored.onboard().await;
                        } else {
                            stored.claim().await;
                        }
                        spent += started.elapsed();
                    }
                    spent
                }
            })
        });
    }
    group.finish();

    // Timed by hand too, to print batches/s next to runs/s.
    for onboard in [false, true] {
        let rounds = 3;
        let mut spent = Duration::ZERO;
        let mut batches = 0;
        for _ in 0..rounds {
            stored.reset();
            let started = Instant::now();
            let report = runtime.block_on(async {
                if onboard {
                    stored.onboard().await
                } else {
                    stored.claim().await
                }
            });
            spent += started.elapsed();
            batches = report.batches;
        }
        let per_round = spent / rounds;
        println!(
            "cloud_handoff {}: {:.1} batches/s, {:.0} runs/s ({:.1} ms per 1000-run batch, {} batches)",
            if onboard { "onboard" } else { "claim" },
            batches as f64 / per_round.as_secs_f64(),
            DEVICES as f64 / per_round.as_secs_f64(),
            per_round.as_secs_f64() * 1000.0 / batches as f64,
            batches
        );
    }
}

criterion_group!(benches, bench, bench_handoff);
criterion_main!(benches);
