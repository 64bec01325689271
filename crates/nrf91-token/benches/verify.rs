//! Verifications per second per core for identity tokens.
//!
//! `decode+verify` is the station's path for one `%ATTESTTOKEN` line;
//! `verify_only` is the verdict on an already decoded token; `p256_0.13`
//! is the RustCrypto verifier on the same input, for the backend choice.
//! `jwt_freshness` is what issue 18's checks add to a station's `%JWT`
//! (its challenge in `sub`, `iat` on the clock just set, `exp - iat` as
//! asked, `aud`; and, in decoding, the refusal of control characters).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nrf91_token as token;
use nrf91_token::encode::{self, IdentityBody};
use nrf91_token::trust::TrustStore;
use nrf91_token::verify::verify;
use nrf91_token::{Expected, Freshness, IdentityExpected, Token, cose};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Verifier};
use p256::pkcs8::EncodePublicKey;
use uuid::Uuid;

/// Trust store of `devices` keys; returns it with device 0's key and UUID.
fn setup(devices: u128) -> (TrustStore, SigningKey, Uuid) {
    let mut trust = TrustStore::new();
    let mut first = None;
    for n in 0..devices {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let spki = key.verifying_key().to_public_key_der().expect("spki");
        let uuid = Uuid::from_u128(n + 1);
        trust.insert(uuid, spki.as_bytes()).expect("insert");
        first.get_or_insert((key, uuid));
    }
    let (key, uuid) = first.expect("at least one device");
    (trust, key, uuid)
}

fn bench(c: &mut Criterion) {
    let (trust, key, uuid) = setup(1000);
    let challenge = [0x42; 16];
    let body = IdentityBody {
        msg_type: 1,
        device_uuid: *uuid.as_bytes(),
        device_type: 4,
        firmware_uuid: [7; 16],
        nonce: challenge,
    };
    let text = encode::identity_token(&body, &key);
    let expect = Expected::Identity(IdentityExpected {
        freshness: Freshness::Challenge(challenge),
        device_uuid: Some(uuid),
    });
    let decoded = token::decode(&text).expect("decode");
    assert!(verify(&decoded, &expect, &trust).authentic());

    let mut group = c.benchmark_group("identity_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode+verify", |b| {
        b.iter(|| {
            let token = token::decode(std::hint::black_box(&text)).expect("decode");
            verify(&token, &expect, &trust).authentic()
        })
    });
    group.bench_function("verify_only", |b| {
        b.iter(|| verify(std::hint::black_box(&decoded), &expect, &trust).authentic())
    });
    group.bench_function("decode_only", |b| {
        b.iter(|| token::decode(std::hint::black_box(&text)).is_ok())
    });
    // The same ES256 check with p256 0.13, for comparison with ring.
    let Token::Identity(t) = &decoded else {
        unreachable!("identity token")
    };
    let cose = t.cose.as_ref().expect("cose");
    let message = cose::sig_structure(&cose.protected, &t.body);
    let signature = Signature::from_slice(&cose.signature).expect("signature");
    let verifying: VerifyingKey = *key.verifying_key();
    group.bench_function("p256_0.13_signature_only", |b| {
        b.iter(|| {
            verifying
                .verify(std::hint::black_box(&message), &signature)
                .is_ok()
        })
    });
    group.finish();
    recovery(c, &key, uuid);
    freshness(c, &trust, &key, uuid);
}

/// A station's `%JWT` judged with the bindings of its request (`asked`)
/// and without them (`offline`: no challenge, no clock, no audience), with
/// and without the ES256 check: the difference is what the freshness
/// checks cost a JWT. A cycle judges one (`keys`) to three (`pin`).
fn freshness(c: &mut Criterion, trust: &TrustStore, key: &SigningKey, uuid: Uuid) {
    use nrf91_token::{JwtAsked, JwtExpected, JwtFreshness};
    let now = 1_700_000_000;
    let challenge = "42".repeat(16);
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "ab".repeat(32)});
    let claims = serde_json::json!({
        "iss": format!("nRF9161.{uuid}"),
        "jti": format!("nRF9161.{uuid}.0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
        "sub": challenge, "aud": "line-7", "iat": now - 1, "exp": now - 1 + 300,
    });
    let text = encode::jwt(&header, &claims, key);
    let decoded = token::decode(&text).expect("decode");
    let expected = |freshness| {
        Expected::Jwt(JwtExpected {
            device_uuid: Some(uuid),
            freshness,
            audience: Some("line-7".into()),
            issuer: None,
        })
    };
    let asked = expected(JwtFreshness::Asked(JwtAsked {
        challenge: challenge.clone(),
        clock_set: now - 2,
        now,
        exp_delta: 300,
    }));
    let offline = Expected::Jwt(JwtExpected {
        audience: None,
        ..match expected(JwtFreshness::NotChecked { now }) {
            Expected::Jwt(e) => e,
            _ => unreachable!("a JWT expectation"),
        }
    });
    assert!(verify(&decoded, &asked, trust).authentic());
    let empty = TrustStore::new();
    let mut group = c.benchmark_group("jwt_freshness");
    group.throughput(Throughput::Elements(1));
    for (name, expect, store) in [
        ("verify_asked", &asked, trust),
        ("verify_offline", &offline, trust),
        ("bindings_asked", &asked, &empty),
        ("bindings_offline", &offline, &empty),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                verify(std::hint::black_box(&decoded), expect, store)
                    .checks
                    .len()
            })
        });
    }
    group.bench_function("decode", |b| {
        b.iter(|| token::decode(std::hint::black_box(&text)).is_ok())
    });
    group.finish();
}

/// The `pin` authority's cost: the identity key two `%JWT`s share (ECDSA
/// public-key recovery over the first, checked against the second).
fn recovery(c: &mut Criterion, key: &SigningKey, uuid: Uuid) {
    let jwt = |jti: &str| {
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
        let claims = serde_json::json!({
            "iss": format!("nRF9161.{uuid}"), "jti": jti, "iat": 1_700_000_000, "exp": 1_700_000_300,
        });
        let Token::Jwt(t) = token::decode(&encode::jwt(&header, &claims, key)).expect("decode")
        else {
            unreachable!("a JWT")
        };
        t
    };
    let (first, second) = (jwt("a"), jwt("b"));
    let recovered = token::recover::recover_common_key(&first, &second).expect("one key");
    let want = key.verifying_key().to_public_key_der().expect("spki");
    assert_eq!(recovered.spki_der(), want.as_bytes());
    let mut group = c.benchmark_group("jwt_key_recovery");
    group.throughput(Throughput::Elements(1));
    group.bench_function("two_jwts", |b| {
        b.iter(|| {
            token::recover::recover_common_key(
                std::hint::black_box(&first),
                std::hint::black_box(&second),
            )
            .is_ok()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
