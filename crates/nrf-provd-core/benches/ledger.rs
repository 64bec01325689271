//! The ledger's share of a cycle's latency: one claim, from the caller's
//! `claim` to its answer, on the station's SQLite ledger (a real file in a
//! temporary directory). A run makes three claims and a device check
//! between commands, each a round trip to the writer's thread and a commit,
//! so at one board this is the station's own wait between a modem's answer
//! and the next command.

use criterion::{Criterion, criterion_group, criterion_main};
use nrf_provd_core::ledger::{Claim, ClaimKind, ClaimOutcome, Ledger, SqliteLedger};
use nrf_provd_core::record::{RunStart, Traceability};
use time::OffsetDateTime;
use uuid::Uuid;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ledger = SqliteLedger::open(&dir.path().join("results.db")).expect("ledger");
    let run = runtime
        .block_on(ledger.begin_run(&RunStart {
            uid: Uuid::from_u128(0x5e11_0000_0000_4000_8000_0000_0000_0001),
            station_id: "bench".into(),
            port: "/dev/ttyACM0".into(),
            started_at: OffsetDateTime::now_utc(),
            trace: Traceability::default(),
        }))
        .expect("run begun");
    let mut n = 0u64;
    let mut group = c.benchmark_group("ledger");
    group.bench_function("claim", |b| {
        b.iter(|| {
            n += 1;
            let claim = Claim {
                kind: ClaimKind::JwtJti,
                value: format!("nRF9161.bench.{n}"),
                at: OffsetDateTime::now_utc(),
            };
            let outcome = runtime
                .block_on(ledger.claim(run, &claim))
                .expect("claimed");
            assert_eq!(outcome, ClaimOutcome::Fresh);
        })
    });
    // As in a run: the writer has been idle for a while (the modem was
    // working) when the claim comes.
    group.sample_size(20);
    group.bench_function("claim_after_idle_20ms", |b| {
        b.iter_custom(|iterations| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iterations {
                std::thread::sleep(std::time::Duration::from_millis(20));
                n += 1;
                let claim = Claim {
                    kind: ClaimKind::JwtJti,
                    value: format!("nRF9161.bench.{n}"),
                    at: OffsetDateTime::now_utc(),
                };
                let start = std::time::Instant::now();
                let outcome = runtime
                    .block_on(ledger.claim(run, &claim))
                    .expect("claimed");
                total += start.elapsed();
                assert_eq!(outcome, ClaimOutcome::Fresh);
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
