//! The owner's ownership key (`[claim] ownership_key`): a P-256 private key
//! whose public half the claim step writes to the modem (`%CMNG` type 9)
//! and whose digest the device claim token must bind; with it the owner
//! signs the claim token, as nRF Cloud's Identity Service describes ("the
//! owner then signs the claim tokens with the ownership private key").
//! Loaded like the CA key: refused when others could read or replace it
//! ([`secure_file`]). The private key is never printed or logged.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::{Signature, SigningKey, signature::Signer};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use secure_file::{Holds, UnsafeFile};

#[derive(Debug, thiserror::Error)]
pub enum OwnershipKeyError {
    #[error("{}: cannot read the ownership key: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    #[error("{}: not a P-256 private key (PEM, PKCS#8 or SEC1): {detail}", path.display())]
    Parse { path: PathBuf, detail: String },
}

/// The owner's key pair.
#[derive(Clone)]
pub struct OwnershipKey {
    key: SigningKey,
    origin: PathBuf,
}

impl fmt::Debug for OwnershipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnershipKey")
            .field("origin", &self.origin)
            .field("digest", &hex::encode(self.digest()))
            .finish_non_exhaustive()
    }
}

impl OwnershipKey {
    /// Read the key (mode 0600, every directory on its path safe).
    pub fn load(path: &Path) -> Result<Self, OwnershipKeyError> {
        let io = |source| OwnershipKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = secure_file::open(path, "ownership key", Holds::Secret)
            .map_err(|refusal| refusal.into_error(io))?;
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        file.read_to_end(&mut bytes).map_err(io)?;
        let parse = |detail: String| OwnershipKeyError::Parse {
            path: path.to_owned(),
            detail,
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| parse(e.to_string()))?;
        let secret = if text.contains("BEGIN EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(text).map_err(|e| parse(e.to_string()))?
        } else {
            p256::SecretKey::from_pkcs8_pem(text).map_err(|e| parse(e.to_string()))?
        };
        Ok(Self::new(SigningKey::from(secret), path))
    }

    /// A key made elsewhere (tests, the demo); `origin` names it.
    pub fn new(key: SigningKey, origin: &Path) -> Self {
        OwnershipKey {
            key,
            origin: origin.to_owned(),
        }
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// SubjectPublicKeyInfo DER of the public half.
    pub fn public_spki(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// The public half as PEM (`PUBLIC KEY`, LF line ends): what is written
    /// to the modem.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// The digest a claim token must bind.
    pub fn digest(&self) -> [u8; 32] {
        crate::token::claim::ownership_key_digest(&self.public_spki())
    }

    /// The owner's ES256 signature over `text` (a claim token as the modem
    /// printed it), base64url of r||s.
    pub fn sign(&self, text: &str) -> String {
        let signature: Signature = self.key.sign(text.as_bytes());
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    }
}
