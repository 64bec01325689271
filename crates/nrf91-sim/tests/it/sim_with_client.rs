//! The project's own AT client drives every simulated command over a
//! pseudo-terminal, in each dialect, and the project's verifier judges the
//! tokens with the fleet's trust file. The sim's token faults show up as the
//! named verifier check that fails.

use testkit::token::Bindings;

use nrf91_at::at::{AtError, Client, ClientOptions, Dialect, Notification};
use nrf91_at::modem::{
    AttestToken, CredentialType, DeleteCredential, FunctionalMode, Jwt, JwtRequest, KeyFormat,
    Keygen, ListCredentials, Modem, NumericErrors, ReadCredential, ReadFunctionalMode, SetClock,
    SetFunctionalMode, WriteCredential, expected_sha256, pem_crlf,
};
use nrf91_at::serial::{self, FlowControl, SerialSettings};
use nrf91_sim::{Fleet, SimDialect, SimOptions};
use nrf91_token as token;
use nrf91_token::trust::TrustStore;
use nrf91_token::{CheckName, Token, Verdict};
use tokio::sync::mpsc;
use uuid::Uuid;

const TAG: u32 = 16_842_753;
const PUBLIC_KEY_TAG: u32 = 17;
const CHALLENGE: [u8; 16] = *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef";
const SUBJECT: &str = "O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1";
const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydA==\n-----END CERTIFICATE-----\n";

struct Board {
    _dir: tempfile::TempDir,
    fleet: Fleet,
    trust: TrustStore,
}

async fn board(dialect: SimDialect, faults: &[&str]) -> Board {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SimOptions {
        dialect,
        faults: faults.iter().map(|f| f.parse().expect("fault")).collect(),
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), 1, 11, options)
        .await
        .expect("start fleet");
    let trust = TrustStore::parse(&fleet.trust_csv()).expect("fleet trust file");
    Board {
        _dir: dir,
        fleet,
        trust,
    }
}

/// Open board 0 as a station would: serial port, settle, detect the dialect.
async fn connect(b: &Board) -> (Modem<serial::Port>, mpsc::Receiver<Notification>) {
    let settings = SerialSettings {
        flow_control: FlowControl::None,
        ..SerialSettings::default()
    };
    let port = serial::open(&b.fleet.link(0), &settings).expect("open pty");
    let (mut client, notifications) = Client::new(port, ClientOptions::default());
    client.settle().await.expect("settle");
    client.detect_dialect().await.expect("dialect detected");
    (Modem::new(client), notifications)
}

fn decoded(text: &str) -> Token {
    token::decode(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn verdict(text: &str, trust: &TrustStore, expect: &Bindings) -> (Token, Verdict) {
    let token = decoded(text);
    let verdict = token::verify::verify(&token, &expect.expect(&token), trust);
    (token, verdict)
}

fn assert_authentic(v: &Verdict) {
    assert!(v.authentic(), "{:#?}", v.checks);
}

/// The check `name` ran and failed; every other check passed.
fn assert_only_failure(v: &Verdict, name: &str) {
    let failed: Vec<&str> = v.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed, [name], "{:#?}", v.checks);
    assert!(!v.authentic());
}

/// A trust store holding one key.
fn trusting(uuid: Uuid, spki_der: &[u8]) -> TrustStore {
    let mut store = TrustStore::new();
    store.insert(uuid, spki_der).expect("P-256 key");
    store
}

fn cme(result: Result<impl std::fmt::Debug, AtError>) -> u16 {
    match result {
        Err(AtError::Cme { code, .. }) => code,
        other => panic!("expected +CME ERROR, got {other:?}"),
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn drive_every_command(sim_dialect: SimDialect, expected: Dialect) {
    let b = board(sim_dialect, &[]).await;
    let id = b.fleet.identity(0);
    let (mut modem, _notifications) = connect(&b).await;
    assert_eq!(modem.client().dialect(), expected);

    // A malformed key usage is refused before anything is sent.
    assert!(matches!(
        Keygen::new(TAG, KeyFormat::Csr, None, Some("12")),
        Err(AtError::InvalidArgument { .. })
    ));
    // A board boots with the radio off; before AT+CMEE=1 errors are ERROR.
    assert_eq!(
        modem.send(&ReadFunctionalMode).await.unwrap(),
        FunctionalMode::Off
    );
    modem
        .send(&SetFunctionalMode(FunctionalMode::On))
        .await
        .expect("cfun 1");
    assert!(matches!(
        modem
            .send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen"))
            .await,
        Err(AtError::Error { .. })
    ));
    modem.send(&NumericErrors).await.expect("cmee");

    // Identity.
    let identity = modem.identify().await.expect("identify");
    assert_eq!(identity.imei, id.imei);
    assert_eq!(identity.model, id.model);
    assert_eq!(identity.firmware, id.firmware);
    assert_eq!(
        identity.firmware_version.map(|v| v.to_string()).as_deref(),
        Some("2.0.1")
    );
    assert_eq!(identity.firmware_uuid, Some(id.firmware_uuid));
    assert_eq!(identity.device_uuid, Some(id.device_uuid));
    assert_eq!(identity.hw_version.as_deref(), Some("nRF9161 LACA A0A"));
    let device = id.device_uuid;

    // Key and credential writes need the modem offline.
    assert_eq!(
        modem.send(&ReadFunctionalMode).await.unwrap(),
        FunctionalMode::On
    );
    assert_eq!(
        cme(modem
            .send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen"))
            .await),
        518
    );
    assert_eq!(
        cme(modem
            .send(&WriteCredential::new(TAG, CredentialType::RootCa, PEM).expect("valid content"))
            .await),
        518
    );
    modem
        .send(&SetFunctionalMode(FunctionalMode::Offline))
        .await
        .expect("cfun 4");
    assert_eq!(
        modem.send(&ReadFunctionalMode).await.unwrap(),
        FunctionalMode::Offline
    );

    // Attestation: with the host's challenge, and with the modem's own nonce.
    let with_challenge = Bindings {
        challenge: Some(CHALLENGE),
        device_uuid: Some(device),
        ..Bindings::default()
    };
    let text = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .expect("attest");
    let (token, v) = verdict(&text, &b.trust, &with_challenge);
    assert_authentic(&v);
    assert!(v.check(CheckName::Nonce).is_some_and(|c| c.passed));
    let Token::Identity(t) = token else {
        panic!("identity token expected")
    };
    assert_eq!(t.firmware_uuid, id.firmware_uuid);
    assert_eq!(t.device_type.code(), id.device_type);
    let text = modem
        .send(&AttestToken { challenge: None })
        .await
        .expect("attest without challenge");
    let (_, v) = verdict(
        &text,
        &b.trust,
        &Bindings {
            device_uuid: Some(device),
            ..Bindings::default()
        },
    );
    assert_authentic(&v);
    let (_, v) = verdict(&text, &b.trust, &with_challenge);
    assert_only_failure(&v, "nonce");

    // Key generation: a CSR with subject and key usage, then 519.
    let csr_expect = Bindings {
        sec_tag: Some(TAG),
        device_uuid: Some(device),
        common_name: Some("dev-1".into()),
        ..Bindings::default()
    };
    let text = modem
        .send(
            &Keygen::new(TAG, KeyFormat::Csr, Some(SUBJECT), Some("101010000"))
                .expect("valid keygen"),
        )
        .await
        .expect("keygen csr");
    let (token, v) = verdict(&text, &b.trust, &csr_expect);
    assert_authentic(&v);
    for check in [
        CheckName::Digest,
        CheckName::CsrSignature,
        CheckName::SecTag,
        CheckName::CommonName,
    ] {
        assert!(v.check(check).is_some_and(|c| c.passed), "{check}");
    }
    let Token::Keygen(k) = token else {
        panic!("keygen token expected")
    };
    assert_eq!(k.format, KeyFormat::Csr);
    assert_eq!(k.csr.as_ref().map(|c| c.subject.as_str()), Some(SUBJECT));
    assert_eq!(
        cme(modem
            .send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen"))
            .await),
        519
    );
    // The generated key is listed; deleted, the tag takes a new one whose
    // CSR names the device by default.
    let listed = modem
        .send(&ListCredentials { sec_tag: Some(TAG) })
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [CredentialType::ClientKey]
    );
    modem
        .send(&DeleteCredential {
            sec_tag: TAG,
            kind: CredentialType::ClientKey,
        })
        .await
        .expect("delete key");
    let text = modem
        .send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen"))
        .await
        .expect("keygen default subject");
    let (_, v) = verdict(
        &text,
        &b.trust,
        &Bindings {
            common_name: Some(device.to_string()),
            ..csr_expect.clone()
        },
    );
    assert_authentic(&v);

    // Key generation: the public key only.
    let text = modem
        .send(&Keygen::new(PUBLIC_KEY_TAG, KeyFormat::PublicKey, None, None).expect("valid keygen"))
        .await
        .expect("keygen public key");
    let (token, v) = verdict(
        &text,
        &b.trust,
        &Bindings {
            sec_tag: Some(PUBLIC_KEY_TAG),
            ..csr_expect.clone()
        },
    );
    assert_authentic(&v);
    assert!(
        v.check(CheckName::CommonName).is_none(),
        "no subject in a public key"
    );
    let Token::Keygen(public) = token else {
        panic!("keygen token expected")
    };
    assert_eq!(public.format, KeyFormat::PublicKey);
    assert!(public.csr.is_none());

    // Credential store: write, list (SHA-256), read, delete, read again.
    let content = pem_crlf(PEM);
    modem
        .send(&WriteCredential::new(TAG, CredentialType::RootCa, &content).expect("valid content"))
        .await
        .expect("write");
    let listed = modem
        .send(&ListCredentials { sec_tag: Some(TAG) })
        .await
        .expect("list");
    let root = listed
        .iter()
        .find(|e| e.kind == CredentialType::RootCa)
        .expect("root CA listed");
    assert_eq!(root.sec_tag, TAG);
    assert_eq!(root.sha256, expected_sha256(&content, expected));
    let (entry, read) = modem
        .send(&ReadCredential {
            sec_tag: TAG,
            kind: CredentialType::RootCa,
        })
        .await
        .expect("read");
    assert_eq!(&entry, root);
    assert_eq!(read, content);
    let all = modem
        .send(&ListCredentials { sec_tag: None })
        .await
        .expect("list all");
    assert!(
        all.iter()
            .any(|e| e.kind == CredentialType::NordicIdentityRootCa)
    );
    modem
        .send(&DeleteCredential {
            sec_tag: TAG,
            kind: CredentialType::RootCa,
        })
        .await
        .expect("delete");
    assert_eq!(
        cme(modem
            .send(&ReadCredential {
                sec_tag: TAG,
                kind: CredentialType::RootCa
            })
            .await),
        513
    );
    assert_eq!(
        cme(modem
            .send(&DeleteCredential {
                sec_tag: TAG,
                kind: CredentialType::RootCa
            })
            .await),
        513
    );

    // JWT: identity key after setting the clock, then a sec_tag's key.
    modem
        .send(&SetClock(time::OffsetDateTime::now_utc()))
        .await
        .expect("cclk");
    let text = modem
        .send(
            &Jwt::new(&JwtRequest {
                exp_delta: Some(600),
                subject: Some("station-7".into()),
                audience: Some("nrfcloud".into()),
                key: None,
            })
            .expect("valid jwt"),
        )
        .await
        .expect("jwt");
    let (token, v) = verdict(
        &text,
        &b.trust,
        &Bindings {
            device_uuid: Some(device),
            now: Some(unix_now()),
            ..Bindings::default()
        },
    );
    assert_authentic(&v);
    assert!(v.check(CheckName::JwtTime).is_some_and(|c| c.passed));
    let Token::Jwt(jwt) = token else {
        panic!("jwt expected")
    };
    assert_eq!(jwt.claim_str("sub"), Some("station-7"));
    assert_eq!(jwt.claim_str("aud"), Some("nrfcloud"));
    // The key generated in tag 17 (type 2, returned as a public key) signs;
    // it verifies with that public key, not with the identity key.
    let text = modem
        .send(
            &Jwt::new(&JwtRequest {
                key: Some((PUBLIC_KEY_TAG, 2)),
                ..JwtRequest::default()
            })
            .expect("valid jwt"),
        )
        .await
        .expect("jwt with a sec_tag key");
    let tag_trust = trusting(device, &public.public_key_spki);
    let (_, v) = verdict(&text, &tag_trust, &Bindings::default());
    assert_authentic(&v);
    let (_, v) = verdict(&text, &b.trust, &Bindings::default());
    assert_only_failure(&v, "signature");
    assert_eq!(
        cme(modem
            .send(
                &Jwt::new(&JwtRequest {
                    key: Some((99, 2)),
                    ..JwtRequest::default()
                })
                .expect("valid jwt")
            )
            .await),
        513
    );

    b.fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_dialect_client_drives_every_command() {
    drive_every_command(SimDialect::Raw, Dialect::RAW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slm_dialect_client_drives_every_command() {
    drive_every_command(SimDialect::Slm, Dialect::RAW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_dialect_client_drives_every_command() {
    drive_every_command(SimDialect::Shell, Dialect::SHELL).await;
}

// ---- token faults, as the verifier names them --------------------------------

/// A raw-dialect board with `fault`, connected, offline, CME errors on.
async fn faulty(fault: &str) -> (Board, Modem<serial::Port>, Uuid) {
    let b = board(SimDialect::Raw, &[fault]).await;
    let (mut modem, _) = connect(&b).await;
    modem.send(&NumericErrors).await.expect("cmee");
    modem
        .send(&SetFunctionalMode(FunctionalMode::Offline))
        .await
        .expect("offline");
    let device = modem
        .identify()
        .await
        .expect("identify")
        .device_uuid
        .expect("nRF91x1 has a device UUID");
    (b, modem, device)
}

fn expect_all(device: Uuid, sec_tag: u32) -> Bindings {
    Bindings {
        challenge: Some(CHALLENGE),
        sec_tag: Some(sec_tag),
        device_uuid: Some(device),
        now: Some(unix_now()),
        ..Bindings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_bad_signature_fails_the_signature_check() {
    let (b, mut modem, device) = faulty("0:bad-signature").await;
    let expect = expect_all(device, 16);
    let attest = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .unwrap();
    assert_only_failure(&verdict(&attest, &b.trust, &expect).1, "signature");
    let keygen = modem
        .send(&Keygen::new(16, KeyFormat::Csr, None, None).expect("valid keygen"))
        .await
        .unwrap();
    assert_only_failure(&verdict(&keygen, &b.trust, &expect).1, "signature");
    let jwt = modem
        .send(&Jwt::new(&JwtRequest::default()).expect("valid jwt"))
        .await
        .unwrap();
    assert_only_failure(&verdict(&jwt, &b.trust, &expect).1, "signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_ignore_challenge_fails_the_nonce_check() {
    let (b, mut modem, device) = faulty("0:ignore-challenge").await;
    let attest = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .unwrap();
    let (_, v) = verdict(&attest, &b.trust, &expect_all(device, 16));
    assert_only_failure(&v, "nonce");
    assert!(v.check(CheckName::Signature).is_some_and(|c| c.passed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_replay_fails_the_nonce_check_of_the_second_token() {
    let (b, mut modem, device) = faulty("0:replay").await;
    let first = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .unwrap();
    assert_authentic(&verdict(&first, &b.trust, &expect_all(device, 16)).1);
    let second_challenge = [0x5a; 16];
    let second = modem
        .send(&AttestToken {
            challenge: Some(second_challenge),
        })
        .await
        .unwrap();
    assert_eq!(first, second);
    let expect = Bindings {
        challenge: Some(second_challenge),
        ..expect_all(device, 16)
    };
    assert_only_failure(&verdict(&second, &b.trust, &expect).1, "nonce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_wrong_uuid_fails_the_device_uuid_check() {
    let (b, mut modem, device) = faulty("0:wrong-uuid").await;
    let attest = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .unwrap();
    let (token, v) = verdict(&attest, &b.trust, &expect_all(device, 16));
    assert_ne!(token.device_uuid(), Some(device));
    assert!(
        v.check(CheckName::DeviceUuid).is_some_and(|c| !c.passed),
        "{v:#?}"
    );
    // The token names a device the trust file does not know either.
    assert!(v.check(CheckName::KeyTrusted).is_some_and(|c| !c.passed));
    assert!(!v.authentic());
    // Trusted under the UUID it claims, only the UUID mismatch is left.
    let key = b.trust.get(&device).expect("board trusted").spki_der();
    let claimed = trusting(token.device_uuid().expect("uuid"), key);
    assert_only_failure(
        &verdict(&attest, &claimed, &expect_all(device, 16)).1,
        "device_uuid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_bad_digest_fails_the_digest_check() {
    let (b, mut modem, device) = faulty("0:bad-digest").await;
    let keygen = modem
        .send(&Keygen::new(16, KeyFormat::Csr, None, None).expect("valid keygen"))
        .await
        .unwrap();
    let (_, v) = verdict(&keygen, &b.trust, &expect_all(device, 16));
    assert_only_failure(&v, "digest");
    assert!(v.check(CheckName::Signature).is_some_and(|c| c.passed));
    let public = modem
        .send(&Keygen::new(17, KeyFormat::PublicKey, None, None).expect("valid keygen"))
        .await
        .unwrap();
    assert_only_failure(
        &verdict(&public, &b.trust, &expect_all(device, 17)).1,
        "digest",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_untrusted_key_fails_key_trusted() {
    let (b, mut modem, device) = faulty("0:untrusted-key").await;
    assert!(b.trust.is_empty());
    let attest = modem
        .send(&AttestToken {
            challenge: Some(CHALLENGE),
        })
        .await
        .unwrap();
    let (_, v) = verdict(&attest, &b.trust, &expect_all(device, 16));
    assert_only_failure(&v, "key_trusted");
    assert!(
        v.check(CheckName::Signature).is_none(),
        "no key, no signature check"
    );
    // A host that trusted the board's published identity key still rejects it.
    let published = trusting(device, &b.fleet.identity(0).public_key_spki_der());
    assert_only_failure(
        &verdict(&attest, &published, &expect_all(device, 16)).1,
        "signature",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_legacy_csr_is_still_authentic() {
    let (b, mut modem, device) = faulty("0:legacy-csr").await;
    let keygen = modem
        .send(&Keygen::new(16, KeyFormat::Csr, Some("CN=legacy"), None).expect("valid keygen"))
        .await
        .unwrap();
    let expect = Bindings {
        common_name: Some("legacy".into()),
        ..expect_all(device, 16)
    };
    let (token, v) = verdict(&keygen, &b.trust, &expect);
    assert_authentic(&v);
    let Token::Keygen(k) = token else {
        panic!("keygen token expected")
    };
    let csr = k.csr.expect("CSR parsed");
    assert!(csr.legacy_null_params);
    assert!(csr.signature_valid);
    assert_eq!(csr.common_name.as_deref(), Some("legacy"));
}
