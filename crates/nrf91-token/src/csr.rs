//! PKCS#10 CSRs from `%KEYGEN`, and P-256 public keys in SPKI form.
//!
//! Older modem firmware writes the CSR's signatureAlgorithm as
//! `SEQUENCE { ecdsa-with-SHA256, NULL }`. The token's digest covers the
//! bytes as sent, so those are kept; the proof-of-possession signature covers
//! only CertificationRequestInfo, which is taken from the received bytes too.
//! [`ParsedCsr::normalised_der`] is the same request with the NULL dropped,
//! for strict consumers (e.g. a CA).
//!
//! [`build_csr`] makes CSRs of the real modem's shape (fixture `keygen_csr`)
//! for the simulator and tests: version 0, subject from the attribute string
//! (UTF8String values), P-256 SPKI, one extensionRequest attribute holding a
//! **non-critical** keyUsage, ECDSA with SHA-256; [`legacy_algorithm`] adds
//! the NULL parameter of older firmware.

use const_oid::db::{
    rfc4519::CN,
    rfc5912::{ECDSA_WITH_SHA_256, ID_EC_PUBLIC_KEY, SECP_256_R_1},
};
use der::{
    Decode, Encode, Sequence, Tag, Tagged,
    asn1::{AnyRef, BitString, BitStringRef},
};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use std::str::FromStr;
use x509_cert::{
    ext::pkix::{KeyUsage, KeyUsages},
    name::Name,
    request::{CertReq, CertReqInfo},
};

/// What a CSR says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrInfo {
    /// Subject as an RFC 4514 string, e.g. `CN=5036…`.
    pub subject: String,
    /// The first common name in the subject.
    pub common_name: Option<String>,
    /// The CSR's own ECDSA signature verifies with its public key (proof of
    /// possession).
    pub signature_valid: bool,
    /// signatureAlgorithm had an explicit NULL parameter (old firmware).
    pub legacy_null_params: bool,
}

/// A parsed CSR with the pieces verification and a CA need.
#[derive(Debug, Clone)]
pub struct ParsedCsr {
    pub info: CsrInfo,
    /// SubjectPublicKeyInfo DER of the requested key.
    pub public_key_spki: Vec<u8>,
    /// The request re-encoded without the legacy NULL parameter.
    pub normalised_der: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("not a PKCS#10 CSR: {0}")]
    Der(#[from] der::Error),
    #[error("bad subject attributes {subject:?}: {problem}")]
    Subject { subject: String, problem: String },
    #[error("bad key usage {0:?}: expected 9 characters of 0 and 1")]
    KeyUsage(String),
    #[error("building the CSR failed: {0}")]
    Build(String),
}

/// The outer CSR with CertificationRequestInfo kept as raw bytes.
#[derive(Sequence)]
struct RawCsr<'a> {
    info: AnyRef<'a>,
    algorithm: AlgorithmIdentifierRef<'a>,
    signature: BitStringRef<'a>,
}

/// The SEC1 point bytes of a SubjectPublicKeyInfo that says it is P-256,
/// not yet validated on the curve.
fn p256_point_unchecked<'a>(spki: &SubjectPublicKeyInfoRef<'a>) -> Result<&'a [u8], String> {
    let (alg, params) = spki
        .algorithm
        .oids()
        .map_err(|e| format!("bad algorithm parameters: {e}"))?;
    if alg != ID_EC_PUBLIC_KEY {
        return Err(format!("algorithm {alg} is not id-ecPublicKey"));
    }
    if params != Some(SECP_256_R_1) {
        return Err("curve is not P-256 (prime256v1)".into());
    }
    spki.subject_public_key
        .as_bytes()
        .ok_or_else(|| "public key bit string has unused bits".to_string())
}

/// The uncompressed SEC1 point of a P-256 SubjectPublicKeyInfo, validated on
/// the curve. Errors say what is wrong.
pub fn p256_point(spki: &SubjectPublicKeyInfoRef<'_>) -> Result<[u8; 65], String> {
    let raw = p256_point_unchecked(spki)?;
    let key = p256::PublicKey::from_sec1_bytes(raw).map_err(|_| "not a point on P-256")?;
    key.to_encoded_point(false)
        .as_bytes()
        .try_into()
        .map_err(|_| "point encoding is not 65 bytes".to_string())
}

/// [`p256_point`] from SPKI DER bytes.
pub fn p256_point_from_der(spki_der: &[u8]) -> Result<[u8; 65], String> {
    let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    p256_point(&spki)
}

/// PEM `PUBLIC KEY` text of SPKI DER.
pub fn spki_pem(spki_der: &[u8]) -> String {
    der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, spki_der).unwrap_or_default()
}

/// First CN of a name, when its value is a string type.
fn common_name(name: &Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| match atv.value.tag() {
            Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
                std::str::from_utf8(atv.value.value())
                    .ok()
                    .map(String::from)
            }
            _ => None,
        })
}

/// Parse a CSR (strict DER apart from the legacy NULL) and check its own
/// signature.
pub fn parse_csr(der: &[u8]) -> Result<ParsedCsr, CsrError> {
    let raw = RawCsr::from_der(der)?;
    let info_der = raw.info.to_der()?;
    let info = CertReqInfo::from_der(&info_der)?;
    let legacy_null_params = raw
        .algorithm
        .parameters
        .is_some_and(|p| p.tag() == Tag::Null && p.value().is_empty());
    let params_ok = raw.algorithm.parameters.is_none() || legacy_null_params;
    let public_key_spki = info.public_key.to_der()?;
    // ring validates the point itself; p256's validation is slow in debug builds.
    let point = SubjectPublicKeyInfoRef::from_der(&public_key_spki)
        .ok()
        .and_then(|spki| p256_point_unchecked(&spki).ok().map(<[u8]>::to_vec));
    let signature_valid = raw.algorithm.oid == ECDSA_WITH_SHA_256
        && params_ok
        && match (point, raw.signature.as_bytes()) {
            (Some(point), Some(sig)) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                point,
            )
            .verify(&info_der, sig)
            .is_ok(),
            _ => false,
        };
    let normalised_der = CertReq {
        algorithm: AlgorithmIdentifierOwned {
            oid: raw.algorithm.oid,
            parameters: if legacy_null_params {
                None
            } else {
                raw.algorithm.parameters.map(Into::into)
            },
        },
        signature: BitString::from_der(&raw.signature.to_der()?)?,
        info: info.clone(),
    }
    .to_der()?;
    Ok(ParsedCsr {
        info: CsrInfo {
            subject: info.subject.to_string(),
            common_name: common_name(&info.subject),
            signature_valid,
            legacy_null_params,
        },
        public_key_spki,
        normalised_der,
    })
}

/// keyUsage of the real modem's CSR when no usage is given: digitalSignature,
/// nonRepudiation, keyEncipherment, keyAgreement (`03 02 03 e8`).
pub const DEFAULT_KEY_USAGE: &str = "111010000";

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
        return Err(CsrError::KeyUsage(bits.to_owned()));
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
    let bad = |problem: String| CsrError::Subject {
        subject: attributes.to_owned(),
        problem,
    };
    let name = Name::from_str(attributes).map_err(|e| bad(e.to_string()))?;
    if name.is_empty() {
        return Err(bad("no attributes".into()));
    }
    Ok(name)
}

#[cfg(any(test, feature = "encode"))]
pub use build::{build_csr, build_csr_as, legacy_algorithm};

/// Building CSRs of the modem's shape: the simulator's and the tests'.
#[cfg(any(test, feature = "encode"))]
mod build {
    use der::asn1::Any;
    use der::{Decode, Encode, EncodeValue, Length, Tag, Tagged, Writer};
    use p256::ecdsa::{DerSignature, SigningKey};
    use x509_cert::builder::{Builder, RequestBuilder};
    use x509_cert::ext::pkix::KeyUsage;
    use x509_cert::ext::{AsExtension, Extension};
    use x509_cert::name::Name;
    use x509_cert::request::CertReq;

    use super::CsrError;
    use crate::cose::Signing;

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

    impl Tagged for NonCriticalKeyUsage {
        fn tag(&self) -> Tag {
            self.0.tag()
        }
    }

    impl AsExtension for NonCriticalKeyUsage {
        fn critical(&self, _: &Name, _: &[Extension]) -> bool {
            false
        }
    }

    /// A CSR for `subject` with `key_usage`, signed by `key`, as a modem's
    /// `%KEYGEN=…,2,0` produces; DER bytes. For the simulator and tests.
    pub fn build_csr(
        key: &SigningKey,
        subject: Name,
        key_usage: KeyUsage,
    ) -> Result<Vec<u8>, CsrError> {
        build_csr_as(Signing::Deterministic, key, subject, key_usage)
    }

    /// [`build_csr`], signed as `signing` says.
    pub fn build_csr_as(
        signing: Signing,
        key: &SigningKey,
        subject: Name,
        key_usage: KeyUsage,
    ) -> Result<Vec<u8>, CsrError> {
        let build = |e: &dyn std::fmt::Display| CsrError::Build(e.to_string());
        let signer = Es256(key, signing);
        let mut builder = RequestBuilder::new(subject, &signer).map_err(|e| build(&e))?;
        builder
            .add_extension(&NonCriticalKeyUsage(key_usage))
            .map_err(|e| build(&e))?;
        let request = builder.build::<DerSignature>().map_err(|e| build(&e))?;
        Ok(request.to_der()?)
    }

    /// `key` signing through [`crate::cose::es256`], as every token builder
    /// does.
    struct Es256<'a>(&'a SigningKey, Signing);

    impl p256::ecdsa::signature::Keypair for Es256<'_> {
        type VerifyingKey = p256::ecdsa::VerifyingKey;
        fn verifying_key(&self) -> Self::VerifyingKey {
            *self.0.verifying_key()
        }
    }

    impl spki::DynSignatureAlgorithmIdentifier for Es256<'_> {
        fn signature_algorithm_identifier(&self) -> spki::Result<spki::AlgorithmIdentifierOwned> {
            self.0.signature_algorithm_identifier()
        }
    }

    impl p256::ecdsa::signature::Signer<DerSignature> for Es256<'_> {
        fn try_sign(&self, message: &[u8]) -> Result<DerSignature, p256::ecdsa::Error> {
            Ok(crate::cose::es256(self.0, message, self.1).to_der())
        }
    }

    /// Re-encode a CSR with `SEQUENCE { ecdsa-with-SHA256, NULL }` as its outer
    /// signatureAlgorithm, as older modem firmware does. The signature covers
    /// only the CertificationRequestInfo, so it stays valid.
    pub fn legacy_algorithm(der: &[u8]) -> Result<Vec<u8>, CsrError> {
        let mut request = CertReq::from_der(der)?;
        request.algorithm.parameters = Some(Any::null());
        Ok(request.to_der()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;

    fn build(subject: &str, usage: &str, seed: u8) -> Vec<u8> {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        build_csr(
            &key,
            parse_subject(subject).unwrap(),
            parse_key_usage(usage).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn csr_is_signed_by_the_key_and_carries_subject_and_usage() {
        let der = build("O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1", "101010000", 3);
        let parsed = parse_csr(&der).unwrap();
        assert!(parsed.info.signature_valid);
        assert!(!parsed.info.legacy_null_params);
        assert_eq!(
            parsed.info.subject,
            "O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1"
        );
        assert_eq!(parsed.info.common_name.as_deref(), Some("dev-1"));
        // keyUsage OID, no critical flag, BIT STRING 03 02 03 a8 (bits 0, 2, 4).
        assert!(hex::encode(&der).contains("0603551d0f0404030203a8"));
    }

    #[test]
    fn default_usage_matches_the_real_modem_bits() {
        let der = build("CN=x", DEFAULT_KEY_USAGE, 5);
        assert!(hex::encode(&der).contains("0603551d0f0404030203e8"));
    }

    #[test]
    fn legacy_algorithm_keeps_the_signature_valid() {
        let der = build("CN=x", DEFAULT_KEY_USAGE, 4);
        let legacy = legacy_algorithm(&der).unwrap();
        assert_ne!(der, legacy);
        // 30 0c 06 08 <ecdsa-with-SHA256> 05 00
        assert!(hex::encode(&legacy).contains("300c06082a8648ce3d0403020500"));
        let parsed = parse_csr(&legacy).unwrap();
        assert!(parsed.info.signature_valid);
        assert!(parsed.info.legacy_null_params);
        assert_eq!(parsed.normalised_der, der);
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(parse_key_usage("10101").is_err());
        assert!(parse_key_usage("10101000x").is_err());
        assert!(parse_subject("").is_err());
        assert!(parse_subject("NOTANATTR").is_err());
    }
}
