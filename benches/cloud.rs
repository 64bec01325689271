//! The nRF Cloud client against the stand-in on loopback: bulk claim of
//! 10,000 devices in batches of 1000 (the contract's limit), and one claim
//! dry run. Both ends run in this process, so the figures include the
//! stand-in's own work (CSV, CBOR, JSON) — a floor for the client's cost,
//! not nRF Cloud's speed.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nrf_provd::cloud::standin::{StandIn, StandInConfig, Verdict};
use nrf_provd::cloud::{ApiKey, ClaimRow, CloudClient, CloudSettings, MAX_ROWS};
use nrf_provd::token::encode::{self, IdentityBody};
use p256::ecdsa::SigningKey;
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

criterion_group!(benches, bench);
criterion_main!(benches);
