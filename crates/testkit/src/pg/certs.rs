//! Certificates for a test server: a CA of the test's own and a server
//! certificate it signs for given names (x509-cert's builder and p256, the
//! stack the station CA uses).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use der::EncodePem;
use der::asn1::{Ia5String, OctetString};
use der::pem::LineEnding;
use der::referenced::OwnedToRef;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePrivateKey;
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use super::ServerTls;

const DAY: Duration = Duration::from_secs(86_400);

pub struct TestCa {
    key: SigningKey,
    cert: Certificate,
    /// The CA certificate, for `sslrootcert`.
    pub pem: String,
}

fn name(text: &str) -> Name {
    Name::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn spki(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap_or_else(|e| panic!("{e}"))
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::new(&bytes).unwrap_or_else(|e| panic!("{e}"))
}

impl TestCa {
    /// A self-signed CA with a fresh P-256 key.
    pub fn new(common_name: &str) -> TestCa {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let builder = CertificateBuilder::new(
            Profile::Root,
            serial(),
            Validity::from_now(DAY).unwrap_or_else(|e| panic!("{e}")),
            name(&format!("CN={common_name}")),
            spki(&key),
            &key,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cert = builder
            .build::<DerSignature>()
            .unwrap_or_else(|e| panic!("{e}"));
        let pem = cert
            .to_pem(LineEnding::LF)
            .unwrap_or_else(|e| panic!("{e}"));
        TestCa { key, cert, pem }
    }

    /// A server certificate (serverAuth) for these DNS names and addresses.
    pub fn server(&self, dns: &[&str], ips: &[IpAddr]) -> ServerTls {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let mut builder = CertificateBuilder::new(
            Profile::Manual {
                issuer: Some(self.cert.tbs_certificate.subject.clone()),
            },
            serial(),
            Validity::from_now(DAY).unwrap_or_else(|e| panic!("{e}")),
            name("CN=nrf-provd test ledger"),
            spki(&key),
            &self.key,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut names: Vec<GeneralName> = dns
            .iter()
            .map(|d| GeneralName::DnsName(Ia5String::new(d).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        for ip in ips {
            let octets = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            names.push(GeneralName::IpAddress(
                OctetString::new(octets).unwrap_or_else(|e| panic!("{e}")),
            ));
        }
        let ca_key_id = SubjectKeyIdentifier::try_from(spki(&self.key).owned_to_ref())
            .unwrap_or_else(|e| panic!("{e}"));
        let own_key_id = SubjectKeyIdentifier::try_from(spki(&key).owned_to_ref())
            .unwrap_or_else(|e| panic!("{e}"));
        let fail = |e: der::Error| panic!("{e}");
        builder
            .add_extension(&BasicConstraints {
                ca: false,
                path_len_constraint: None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_SERVER_AUTH,
            ]))
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .add_extension(&SubjectAltName(names))
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .add_extension(&own_key_id)
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .add_extension(&AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca_key_id.0.as_bytes()).unwrap_or_else(fail)),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let cert = builder
            .build::<DerSignature>()
            .unwrap_or_else(|e| panic!("{e}"));
        ServerTls {
            certificate_pem: cert
                .to_pem(LineEnding::LF)
                .unwrap_or_else(|e| panic!("{e}")),
            key_pem: key
                .to_pkcs8_pem(LineEnding::LF)
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string(),
        }
    }
}
