//! The station CA's share of a cycle: one device certificate signed from
//! the CSR's public key (`StationCa::sign_device`, the `certify` step's
//! work), every board, every run.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use nrf_provd_core::ca::{Issuance, StationCa};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey;

fn bench(c: &mut Criterion) {
    let ca = StationCa::generate("bench CA", Duration::from_secs(86_400)).expect("CA");
    let device = SigningKey::random(&mut rand::rngs::OsRng);
    let spki = device
        .verifying_key()
        .to_public_key_der()
        .expect("device public key");
    let mut group = c.benchmark_group("ca");
    group.bench_function("sign_device", |b| {
        b.iter(|| {
            ca.sign_device(
                "50503041-3633-4261-8000-000000000001",
                spki.as_bytes(),
                Issuance::now(Duration::from_secs(3600)),
            )
            .expect("certificate")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
