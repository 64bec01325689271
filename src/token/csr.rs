//! PKCS#10 CSRs from `%KEYGEN`, and P-256 public keys in SPKI form.
//!
//! Older modem firmware writes the CSR's signatureAlgorithm as
//! `SEQUENCE { ecdsa-with-SHA256, NULL }`. The token's digest covers the
//! bytes as sent, so those are kept; the proof-of-possession signature covers
//! only CertificationRequestInfo, which is taken from the received bytes too.
//! [`ParsedCsr::normalised_der`] is the same request with the NULL dropped,
//! for strict consumers (e.g. a CA).

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
    builder::{Builder, RequestBuilder},
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
    #[error("bad subject {subject:?}: {error}")]
    Subject { subject: String, error: der::Error },
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

/// A CSR for `subject` (RFC 4514, e.g. `"O=Nordic,CN=<uuid>"`) signed by
/// `key`, as a modem's `%KEYGEN=…,2,0` produces. For the simulator and tests.
pub fn build_csr(subject: &str, key: &p256::ecdsa::SigningKey) -> Result<Vec<u8>, CsrError> {
    let name = Name::from_str(subject).map_err(|error| CsrError::Subject {
        subject: subject.to_string(),
        error,
    })?;
    let builder = RequestBuilder::new(name, key).map_err(|e| CsrError::Build(e.to_string()))?;
    let csr = builder
        .build::<p256::ecdsa::DerSignature>()
        .map_err(|e| CsrError::Build(e.to_string()))?;
    Ok(csr.to_der()?)
}
