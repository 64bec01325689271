//! Station CA: device certificates verify against the CA and carry the
//! extensions a TLS client certificate needs; the CA key stays private.
//!
//! tests/fixtures/openssl-ca.{pem,key} were made with OpenSSL 3.0
//! (`openssl ecparam -genkey` + `openssl req -x509`, SEC1 key) to check that
//! a CA from another tool loads and its SKI is reused as the AKI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use der::{Decode, DecodePem, Encode};
use nrf_provd_core::ca::{CaError, Issuance, StationCa};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use secure_file::UnsafeFile;
use x509_cert::Certificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};

const DAY: Duration = Duration::from_secs(86_400);
const DEVICE: &str = "50503041-3633-4261-803d-1e2b8f70111a";

fn fixture(name: &str) -> PathBuf {
    testkit::fixtures::path(name)
}

fn device_spki() -> Vec<u8> {
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    key.public_key()
        .to_public_key_der()
        .unwrap_or_else(|e| panic!("{e}"))
        .as_bytes()
        .to_vec()
}

fn parse_pem(pem: &str) -> Certificate {
    Certificate::from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn public_key(cert: &Certificate) -> VerifyingKey {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap_or_else(|e| panic!("{e}"));
    VerifyingKey::from_public_key_der(&spki).unwrap_or_else(|e| panic!("{e}"))
}

/// Does `issuer`'s key verify `cert`'s signature?
fn verifies(cert: &Certificate, issuer: &Certificate) -> bool {
    let tbs = cert
        .tbs_certificate
        .to_der()
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let Ok(sig) = DerSignature::from_bytes(sig) else {
        return false;
    };
    public_key(issuer).verify(&tbs, &sig).is_ok()
}

fn ext<T: for<'a> Decode<'a>>(
    cert: &Certificate,
    oid: const_oid::ObjectIdentifier,
) -> Option<(bool, T)> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)?;
    Some((ext.critical, T::from_der(ext.extn_value.as_bytes()).ok()?))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn device_certificate_verifies_against_the_ca() {
    let ca = StationCa::generate("Station CA", 365 * DAY).unwrap_or_else(|e| panic!("{e}"));
    let ca_cert = parse_pem(&ca.certificate_pem());
    assert!(verifies(&ca_cert, &ca_cert), "the CA is self-signed");

    let device = ca
        .sign_device(DEVICE, &device_spki(), Issuance::now(30 * DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        parse_pem(&device.pem),
        cert,
        "PEM and DER are the same certificate"
    );
    assert!(verifies(&cert, &ca_cert));

    // Another CA's key does not verify it.
    let other = StationCa::generate("Other CA", DAY).unwrap_or_else(|e| panic!("{e}"));
    assert!(!verifies(&cert, &parse_pem(&other.certificate_pem())));
}

#[test]
fn device_certificate_has_client_certificate_extensions() {
    let ca = StationCa::generate("Station CA", 365 * DAY).unwrap_or_else(|e| panic!("{e}"));
    let ca_cert = parse_pem(&ca.certificate_pem());
    let spki = device_spki();
    let device = ca
        .sign_device(DEVICE, &spki, Issuance::now(30 * DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    let tbs = &cert.tbs_certificate;

    assert_eq!(tbs.subject.to_string(), format!("CN={DEVICE}"));
    assert_eq!(tbs.issuer, ca_cert.tbs_certificate.subject);
    assert_eq!(
        tbs.subject_public_key_info.to_der().unwrap_or_default(),
        spki
    );

    use const_oid::db::rfc5280 as oid;
    let (critical, bc) = ext::<BasicConstraints>(&cert, oid::ID_CE_BASIC_CONSTRAINTS)
        .unwrap_or_else(|| panic!("basicConstraints"));
    assert!(critical && !bc.ca);
    let (critical, ku) =
        ext::<KeyUsage>(&cert, oid::ID_CE_KEY_USAGE).unwrap_or_else(|| panic!("keyUsage"));
    assert!(critical);
    assert!(ku.digital_signature());
    assert_eq!(
        ku.0.bits(),
        KeyUsage(KeyUsages::DigitalSignature.into()).0.bits(),
        "digitalSignature only"
    );
    let (_, eku) = ext::<ExtendedKeyUsage>(&cert, oid::ID_CE_EXT_KEY_USAGE)
        .unwrap_or_else(|| panic!("extKeyUsage"));
    assert_eq!(eku.0, vec![oid::ID_KP_CLIENT_AUTH]);
    let (_, ski) = ext::<SubjectKeyIdentifier>(&cert, oid::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .unwrap_or_else(|| panic!("subjectKeyIdentifier"));
    assert_eq!(ski.0.as_bytes().len(), 20);
    let (_, aki) = ext::<AuthorityKeyIdentifier>(&cert, oid::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .unwrap_or_else(|| panic!("authorityKeyIdentifier"));
    let (_, ca_ski) = ext::<SubjectKeyIdentifier>(&ca_cert, oid::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .unwrap_or_else(|| panic!("CA subjectKeyIdentifier"));
    assert_eq!(aki.key_identifier, Some(ca_ski.0));

    let validity = &tbs.validity;
    let seconds = validity.not_after.to_unix_duration() - validity.not_before.to_unix_duration();
    assert_eq!(seconds, 30 * DAY);
}

#[test]
fn serial_numbers_are_random_and_positive() {
    let ca = StationCa::generate("Station CA", DAY).unwrap_or_else(|e| panic!("{e}"));
    let spki = device_spki();
    let serial = |_| {
        let device = ca
            .sign_device(DEVICE, &spki, Issuance::now(DAY))
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
        cert.tbs_certificate.serial_number.as_bytes().to_vec()
    };
    let serials: std::collections::HashSet<Vec<u8>> = (0..8).map(serial).collect();
    assert_eq!(serials.len(), 8);
    for s in &serials {
        assert!(
            s.len() == 16 && s.first().is_some_and(|b| b & 0x80 == 0 && *b != 0),
            "{s:02x?}"
        );
    }
}

#[test]
fn garbage_public_key_is_refused() {
    let ca = StationCa::generate("Station CA", DAY).unwrap_or_else(|e| panic!("{e}"));
    let result = ca.sign_device(DEVICE, b"\x30\x03\x02\x01\x00", Issuance::now(DAY));
    assert!(matches!(result, Err(CaError::PublicKey(_))), "{result:?}");
    let result = ca.sign_device("", &device_spki(), Issuance::now(DAY));
    assert!(matches!(result, Err(CaError::CommonName(_))), "{result:?}");
}

#[test]
fn written_ca_has_a_private_key_and_loads_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert_path = dir.path().join("ca.pem");
    let key_path = dir.path().join("ca.key");
    let ca = StationCa::generate("Station CA", DAY).unwrap_or_else(|e| panic!("{e}"));
    ca.write(&cert_path, &key_path)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&key_path), 0o600);
    let key_text = std::fs::read_to_string(&key_path).unwrap_or_else(|e| panic!("{e}"));
    assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        !format!("{ca:?}").contains("PRIVATE"),
        "Debug must not show the key"
    );

    // Overwriting an existing, looser key file still leaves it 0600.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    ca.write(&cert_path, &key_path)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&key_path), 0o600);

    let loaded = StationCa::load(&cert_path, &key_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.certificate_pem(), ca.certificate_pem());
    let device = loaded
        .sign_device(DEVICE, &device_spki(), Issuance::now(DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    assert!(verifies(&cert, &parse_pem(&ca.certificate_pem())));
}

#[test]
fn a_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert_path = dir.path().join("ca.pem");
    let key_path = dir.path().join("ca.key");
    let ca = StationCa::generate("Station CA", DAY).unwrap_or_else(|e| panic!("{e}"));
    ca.write(&cert_path, &key_path)
        .unwrap_or_else(|e| panic!("{e}"));
    for loose in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(loose))
            .unwrap_or_else(|e| panic!("{e}"));
        let e = StationCa::load(&cert_path, &key_path)
            .err()
            .unwrap_or_else(|| panic!("{loose:o} accepted"));
        assert!(
            matches!(e, CaError::Unsafe(UnsafeFile::Readable { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }
}

#[test]
fn mismatched_key_and_non_ca_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let a = StationCa::generate("A", DAY).unwrap_or_else(|e| panic!("{e}"));
    let b = StationCa::generate("B", DAY).unwrap_or_else(|e| panic!("{e}"));
    let (a_cert, a_key) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    let (b_cert, b_key) = (dir.path().join("b.pem"), dir.path().join("b.key"));
    a.write(&a_cert, &a_key).unwrap_or_else(|e| panic!("{e}"));
    b.write(&b_cert, &b_key).unwrap_or_else(|e| panic!("{e}"));
    let e = StationCa::load(&a_cert, &b_key)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CaError::KeyMismatch { .. }), "{e}");

    let leaf = a
        .sign_device(DEVICE, &device_spki(), Issuance::now(DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let leaf_path = dir.path().join("leaf.pem");
    std::fs::write(&leaf_path, &leaf.pem).unwrap_or_else(|e| panic!("{e}"));
    let e = StationCa::load(&leaf_path, &a_key)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CaError::NotCa { .. }), "{e}");

    let e = StationCa::load(&a_key, &a_key)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CaError::Parse { .. }), "{e}");
}

#[test]
fn an_openssl_made_ca_with_a_sec1_key_signs_devices() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key_path = dir.path().join("ca.key");
    std::fs::copy(fixture("openssl-ca.key"), &key_path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert_path = fixture("openssl-ca.pem");
    let ca = StationCa::load(&cert_path, &key_path).unwrap_or_else(|e| panic!("{e}"));
    let ca_cert = parse_pem(&std::fs::read_to_string(&cert_path).unwrap_or_default());
    let device = ca
        .sign_device(DEVICE, &device_spki(), Issuance::now(DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    assert!(verifies(&cert, &ca_cert));
    use const_oid::db::rfc5280 as oid;
    let (_, aki) = ext::<AuthorityKeyIdentifier>(&cert, oid::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .unwrap_or_else(|| panic!("AKI"));
    let (_, ca_ski) = ext::<SubjectKeyIdentifier>(&ca_cert, oid::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .unwrap_or_else(|| panic!("SKI"));
    assert_eq!(aki.key_identifier, Some(ca_ski.0));
    assert_eq!(cert.tbs_certificate.issuer, ca_cert.tbs_certificate.subject);
}

fn written(ca: &StationCa, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    ca.write(&cert, &key).unwrap_or_else(|e| panic!("{e}"));
    (cert, key)
}

#[test]
fn an_expired_or_not_yet_valid_ca_is_refused_and_signs_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let now = std::time::SystemTime::now();
    let expired = StationCa::generate_valid_from("Old CA", now - 30 * DAY, 10 * DAY)
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = written(&expired, dir.path(), "old");
    let e = StationCa::load(&cert, &key)
        .err()
        .unwrap_or_else(|| panic!("expired CA accepted"));
    assert!(matches!(e, CaError::Expired { .. }), "{e}");
    assert!(e.to_string().contains("expired on"), "{e}");
    assert!(
        expired
            .sign_device(DEVICE, &device_spki(), Issuance::now(DAY))
            .is_err(),
        "an expired CA signed a device certificate"
    );

    let future = StationCa::generate_valid_from("New CA", now + 2 * DAY, 10 * DAY)
        .unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = written(&future, dir.path(), "future");
    let e = StationCa::load(&cert, &key)
        .err()
        .unwrap_or_else(|| panic!("future CA accepted"));
    assert!(matches!(e, CaError::NotYetValid { .. }), "{e}");
    assert!(e.to_string().contains("clock"), "{e}");
}

#[test]
fn device_certificates_never_outlive_their_ca() {
    let ca = StationCa::generate("Short CA", 10 * DAY).unwrap_or_else(|e| panic!("{e}"));
    let device = ca
        .sign_device(DEVICE, &device_spki(), Issuance::now(3650 * DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    let ca_cert = parse_pem(&ca.certificate_pem());
    assert_eq!(
        cert.tbs_certificate.validity.not_after.to_unix_duration(),
        ca_cert
            .tbs_certificate
            .validity
            .not_after
            .to_unix_duration()
    );
    // A short validity is kept as asked.
    let device = ca
        .sign_device(DEVICE, &device_spki(), Issuance::now(DAY))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cert.tbs_certificate.validity.not_after.to_unix_duration()
            < ca_cert
                .tbs_certificate
                .validity
                .not_after
                .to_unix_duration()
    );
}

#[test]
fn a_ca_whose_key_usage_forbids_certificate_signing_is_refused() {
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let spki =
        SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap_or_else(|e| panic!("{e}"));
    let subject =
        nrf_provd_core::ca::common_name("Signing-only CA").unwrap_or_else(|e| panic!("{e}"));
    let mut builder = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(subject.clone()),
        },
        SerialNumber::new(&[1]).unwrap_or_else(|e| panic!("{e}")),
        Validity::from_now(DAY).unwrap_or_else(|e| panic!("{e}")),
        subject,
        spki,
        &key,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    builder
        .add_extension(&BasicConstraints {
            ca: true,
            path_len_constraint: None,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    builder
        .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = builder
        .build::<DerSignature>()
        .unwrap_or_else(|e| panic!("{e}"));
    let cert_path = dir.path().join("ca.pem");
    std::fs::write(
        &cert_path,
        der::EncodePem::to_pem(&cert, der::pem::LineEnding::LF).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let key_path = dir.path().join("ca.key");
    let pem = p256::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, der::pem::LineEnding::LF)
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key_path, pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    let e = StationCa::load(&cert_path, &key_path)
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, CaError::NoCertSign { .. }), "{e}");
}
