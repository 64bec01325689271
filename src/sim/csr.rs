//! PKCS#10 CSRs as `%KEYGEN=<tag>,2,0` returns them.
//!
//! Shape copied from a real modem's CSR (fixture `keygen_csr`): version 0,
//! subject from the attribute string (UTF8String values), P-256 SPKI, one
//! extensionRequest attribute holding a **non-critical** keyUsage, ECDSA
//! with SHA-256. Older firmware adds a NULL parameter to the outer
//! signatureAlgorithm ([`legacy_algorithm`]).

use std::str::FromStr;

use der::asn1::Any;
use der::{Decode, Encode, EncodeValue, Length, Tag, Writer};
use p256::ecdsa::{DerSignature, SigningKey};
use thiserror::Error;
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::ext::AsExtension;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::request::CertReq;

/// keyUsage of the real modem's CSR when no usage is given: digitalSignature,
/// nonRepudiation, keyEncipherment, keyAgreement (`03 02 03 e8`).
pub const DEFAULT_KEY_USAGE: &str = "111010000";

#[derive(Debug, Error)]
pub enum CsrError {
    #[error("bad subject attributes {0:?}")]
    BadSubject(String),
    #[error("bad key usage {0:?}: expected 9 characters of 0 and 1")]
    BadKeyUsage(String),
    #[error("building the CSR failed: {0}")]
    Build(String),
}

/// The nine keyUsage bits in X.509 order, as `%KEYGEN` takes them.
const USAGE_ORDER: [KeyUsages; 9] = [
    KeyUsages::DigitalSignature,
    KeyUsages::NonRepudiation,
    KeyUsages::KeyEncipherment,
    KeyUsages::DataEncipherment,
    KeyUsages::KeyAgreement,
    KeyUsages::KeyCertSign,
    KeyUsages::CRLSign,
    KeyUsages::EncipherOnly,
    KeyUsages::DecipherOnly,
];

/// Parse a 9-character `%KEYGEN` key-usage bit string like `101010000`.
pub fn parse_key_usage(bits: &str) -> Result<KeyUsage, CsrError> {
    if bits.len() != 9 || !bits.bytes().all(|b| b == b'0' || b == b'1') {
        return Err(CsrError::BadKeyUsage(bits.to_owned()));
    }
    let mut flags = der::flagset::FlagSet::<KeyUsages>::default();
    for (bit, usage) in bits.bytes().zip(USAGE_ORDER) {
        if bit == b'1' {
            flags |= usage;
        }
    }
    Ok(KeyUsage(flags))
}

/// Parse a subject attribute string (`O=Nordic Semiconductor,CN=x`, RFC 4514).
pub fn parse_subject(attributes: &str) -> Result<Name, CsrError> {
    let name =
        Name::from_str(attributes).map_err(|_| CsrError::BadSubject(attributes.to_owned()))?;
    if name.is_empty() {
        return Err(CsrError::BadSubject(attributes.to_owned()));
    }
    Ok(name)
}

/// keyUsage wrapper marked non-critical, as the modem's CSR has it
/// (x509-cert marks its own `KeyUsage` critical). `EncodeValue` + `Tagged`
/// give it `Encode`.
struct NonCriticalKeyUsage(KeyUsage);

impl const_oid::AssociatedOid for NonCriticalKeyUsage {
    const OID: const_oid::ObjectIdentifier = const_oid::db::rfc5280::ID_CE_KEY_USAGE;
}

impl EncodeValue for NonCriticalKeyUsage {
    fn value_len(&self) -> der::Result<Length> {
        self.0.value_len()
    }
    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        self.0.encode_value(writer)
    }
}

impl der::Tagged for NonCriticalKeyUsage {
    fn tag(&self) -> Tag {
        self.0.tag()
    }
}

impl AsExtension for NonCriticalKeyUsage {
    fn critical(&self, _: &Name, _: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

/// Build and sign a CSR for `key` with `subject` and `key_usage`; DER bytes.
pub fn build_csr(
    key: &SigningKey,
    subject: Name,
    key_usage: KeyUsage,
) -> Result<Vec<u8>, CsrError> {
    let build = |e: &dyn std::fmt::Display| CsrError::Build(e.to_string());
    let mut builder = RequestBuilder::new(subject, key).map_err(|e| build(&e))?;
    builder
        .add_extension(&NonCriticalKeyUsage(key_usage))
        .map_err(|e| build(&e))?;
    let request = builder.build::<DerSignature>().map_err(|e| build(&e))?;
    request.to_der().map_err(|e| build(&e))
}

/// Re-encode a CSR with `SEQUENCE { ecdsa-with-SHA256, NULL }` as its outer
/// signatureAlgorithm, as older modem firmware does. The signature covers
/// only the CertificationRequestInfo, so it stays valid.
pub fn legacy_algorithm(der: &[u8]) -> Result<Vec<u8>, CsrError> {
    let build = |e: der::Error| CsrError::Build(e.to_string());
    let mut request = CertReq::from_der(der).map_err(build)?;
    request.algorithm.parameters = Some(Any::null());
    request.to_der().map_err(build)
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
    use spki::DecodePublicKey;

    fn verify(der: &[u8]) -> CertReq {
        let req = CertReq::from_der(der).unwrap();
        let spki = req.info.public_key.to_der().unwrap();
        let key = VerifyingKey::from_public_key_der(&spki).unwrap();
        let sig = Signature::from_der(req.signature.raw_bytes()).unwrap();
        key.verify(&req.info.to_der().unwrap(), &sig).unwrap();
        req
    }

    #[test]
    fn csr_is_signed_by_the_key_and_carries_subject_and_usage() {
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let subject = parse_subject("O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1").unwrap();
        let der = build_csr(&key, subject, parse_key_usage("101010000").unwrap()).unwrap();
        let req = verify(&der);
        assert_eq!(
            req.info.subject.to_string(),
            "O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1"
        );
        let ext_attr = req.info.attributes.iter().next().unwrap();
        let ext_der = ext_attr.values.iter().next().unwrap().to_der().unwrap();
        // keyUsage OID, no critical flag, BIT STRING 03 02 03 a8 (bits 0, 2, 4).
        let hex = hex::encode(ext_der);
        assert!(
            hex.contains("0603551d0f04040302 03a8".replace(' ', "").as_str()),
            "{hex}"
        );
    }

    #[test]
    fn default_usage_matches_the_real_modem_bits() {
        let key = SigningKey::from_slice(&[5u8; 32]).unwrap();
        let der = build_csr(
            &key,
            parse_subject("CN=x").unwrap(),
            parse_key_usage(DEFAULT_KEY_USAGE).unwrap(),
        )
        .unwrap();
        assert!(hex::encode(&der).contains("0603551d0f0404030203e8"));
    }

    #[test]
    fn legacy_algorithm_keeps_the_signature_valid() {
        let key = SigningKey::from_slice(&[4u8; 32]).unwrap();
        let der = build_csr(
            &key,
            parse_subject("CN=x").unwrap(),
            parse_key_usage(DEFAULT_KEY_USAGE).unwrap(),
        )
        .unwrap();
        let legacy = legacy_algorithm(&der).unwrap();
        assert_ne!(der, legacy);
        // 30 0c 06 08 <ecdsa-with-SHA256> 05 00
        assert!(hex::encode(&legacy).contains("300c06082a8648ce3d0403020500"));
        verify(&legacy);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(parse_key_usage("10101").is_err());
        assert!(parse_key_usage("10101000x").is_err());
        assert!(parse_subject("").is_err());
        assert!(parse_subject("NOTANATTR").is_err());
    }
}
