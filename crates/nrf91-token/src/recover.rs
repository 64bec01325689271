//! The device identity public key, learned from two `%JWT`s.
//!
//! A `%JWT` without a sec_tag is signed by the device identity key, and its
//! signing input is standard JWS (`base64url(header) "." base64url(claims)`),
//! unlike the COSE signing input of `%ATTESTTOKEN` and `%KEYGEN`, which Nordic
//! does not publish. ECDSA public-key recovery over one signature gives up to
//! four candidate keys (in practice two); the one that also verifies a second
//! JWT's signature is the device's key. Two JWTs with no common key name two
//! different keys: no key is returned.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::EncodePublicKey;
use sha2::{Digest, Sha256};

use super::Jwt;
use crate::trust::TrustedKey;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecoverError {
    #[error("JWT {which}: signature is {len} bytes, expected 64 (r||s)")]
    SignatureLength { which: usize, len: usize },
    #[error("JWT {which}: signature is not a valid ECDSA P-256 signature")]
    BadSignature { which: usize },
    #[error("the two JWTs are the same token; two different JWTs are needed")]
    SameToken,
    #[error("no public key signed both JWTs: they come from different keys, or one was altered")]
    NoCommonKey,
}

/// The public key that signed both JWTs.
pub fn recover_common_key(first: &Jwt, second: &Jwt) -> Result<TrustedKey, RecoverError> {
    if first.text == second.text {
        return Err(RecoverError::SameToken);
    }
    let signature = signature(first, 1)?;
    let second_key_check =
        |key: &TrustedKey| key.verify_es256(second.signing_input.as_bytes(), &second.signature);
    let prehash = Sha256::digest(first.signing_input.as_bytes());
    // R's x coordinate is r (x ≥ n, recovery ids 2 and 3, has a chance of
    // about 2^-128 for P-256 and is not tried); its y is even or odd.
    for y_is_odd in [false, true] {
        let Some(candidate) = recover(&prehash, &signature, y_is_odd) else {
            continue;
        };
        let Some(key) = trusted(&candidate) else {
            continue;
        };
        if second_key_check(&key) {
            return Ok(key);
        }
    }
    Err(RecoverError::NoCommonKey)
}

/// The public key Q = r⁻¹(s·R − e·G) for which `signature` over `prehash`
/// verifies, R being the point with x = r and the given y parity. Unlike
/// `VerifyingKey::recover_from_prehash` it does not verify the signature
/// again under Q (true by construction): the second JWT's check decides.
fn recover(
    prehash: &p256::FieldBytes,
    signature: &Signature,
    y_is_odd: bool,
) -> Option<VerifyingKey> {
    use p256::elliptic_curve::ops::{LinearCombination, Reduce};
    use p256::elliptic_curve::point::DecompressPoint;
    use p256::{AffinePoint, ProjectivePoint, Scalar, U256};
    let (r, s) = signature.split_scalars();
    let big_r: AffinePoint = Option::from(AffinePoint::decompress(
        &r.to_bytes(),
        u8::from(y_is_odd).into(),
    ))?;
    let e = <Scalar as Reduce<U256>>::reduce_bytes(prehash);
    let r_inv: Scalar = Option::from(r.invert())?;
    let q = ProjectivePoint::lincomb(
        &ProjectivePoint::from(big_r),
        &(*s * r_inv),
        &ProjectivePoint::GENERATOR,
        &(-(e * r_inv)),
    );
    VerifyingKey::from_affine(q.into()).ok()
}

fn signature(jwt: &Jwt, which: usize) -> Result<Signature, RecoverError> {
    if jwt.signature.len() != 64 {
        return Err(RecoverError::SignatureLength {
            which,
            len: jwt.signature.len(),
        });
    }
    Signature::from_slice(&jwt.signature).map_err(|_| RecoverError::BadSignature { which })
}

fn trusted(key: &VerifyingKey) -> Option<TrustedKey> {
    let der = key.to_public_key_der().ok()?;
    TrustedKey::from_spki_der(der.as_bytes()).ok()
}

/// A P-256 public key given as text: a PEM `PUBLIC KEY` (or a path to a
/// file holding one), or the base64 of its SubjectPublicKeyInfo DER (the
/// trust file's form). Returns the SPKI DER.
pub fn parse_public_key(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let pem = if text.starts_with("-----BEGIN") {
        Some(text.to_string())
    } else if std::path::Path::new(text).is_file() {
        Some(std::fs::read_to_string(text).map_err(|e| format!("{text}: {e}"))?)
    } else {
        None
    };
    let der = match pem {
        Some(pem) => {
            let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
                .map_err(|e| format!("not a PEM public key: {e}"))?;
            if label != "PUBLIC KEY" {
                return Err(format!("PEM holds a {label:?}, expected \"PUBLIC KEY\""));
            }
            der
        }
        None => STANDARD
            .decode(text)
            .or_else(|_| STANDARD_NO_PAD.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| {
                "neither a PEM public key, a file, nor base64 of a SubjectPublicKeyInfo".to_string()
            })?,
    };
    TrustedKey::from_spki_der(&der).map_err(|e| e.to_string())?;
    Ok(der)
}

/// The key in the forms a user pastes: base64 SPKI DER (trust file) and PEM.
pub fn describe_key(key: &TrustedKey) -> (String, String) {
    let base64 = STANDARD.encode(key.spki_der());
    let pem = der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, key.spki_der())
        .unwrap_or_default();
    (base64, pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{self as token, Token, encode};
    use p256::ecdsa::SigningKey;
    use serde_json::json;

    fn jwt(key: &SigningKey, jti: &str) -> Jwt {
        let text = encode::jwt(
            &json!({"typ": "JWT", "alg": "ES256"}),
            &json!({"iss": "nRF9161.x", "jti": jti}),
            key,
        );
        match token::decode(&text) {
            Ok(Token::Jwt(jwt)) => jwt,
            other => panic!("not a JWT: {other:?}"),
        }
    }

    #[test]
    fn two_jwts_of_one_key_give_that_key() {
        for _ in 0..8 {
            let key = SigningKey::random(&mut rand::rngs::OsRng);
            let recovered = recover_common_key(&jwt(&key, "a"), &jwt(&key, "b")).unwrap();
            let want = key.verifying_key().to_public_key_der().unwrap();
            assert_eq!(recovered.spki_der(), want.as_bytes());
        }
    }

    #[test]
    fn jwts_of_two_keys_give_none() {
        let a = SigningKey::random(&mut rand::rngs::OsRng);
        let b = SigningKey::random(&mut rand::rngs::OsRng);
        assert_eq!(
            recover_common_key(&jwt(&a, "1"), &jwt(&b, "2")),
            Err(RecoverError::NoCommonKey)
        );
        let one = jwt(&a, "1");
        assert_eq!(recover_common_key(&one, &one), Err(RecoverError::SameToken));
    }

    #[test]
    fn public_keys_parse_in_every_form_the_project_prints() {
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let trusted =
            TrustedKey::from_spki_der(key.verifying_key().to_public_key_der().unwrap().as_bytes())
                .unwrap();
        let (b64, pem) = describe_key(&trusted);
        assert_eq!(parse_public_key(&b64).unwrap(), trusted.spki_der());
        assert_eq!(parse_public_key(&pem).unwrap(), trusted.spki_der());
        assert!(parse_public_key("bm90IGEga2V5").is_err());
        assert!(parse_public_key("").is_err());
    }
}
