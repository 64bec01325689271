//! Trusted device identity keys: device UUID → P-256 public key.
//!
//! File format (CSV): an optional header line `device_uuid,public_key`, then
//! one device per line, `public_key` being the standard base64 of the
//! SubjectPublicKeyInfo DER of a P-256 key. `#` starts a comment; blank lines
//! are allowed. The same UUID listed twice with different keys is an error.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::token::csr;

/// A trusted key, kept both as given and as the SEC1 point the verifier uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    spki_der: Vec<u8>,
    point: [u8; 65],
}

impl TrustedKey {
    /// Parse SPKI DER; only P-256 keys on the curve are accepted.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<Self, TrustError> {
        let point = csr::p256_point_from_der(spki_der).map_err(TrustError::BadKey)?;
        Ok(TrustedKey {
            spki_der: spki_der.to_vec(),
            point,
        })
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Uncompressed SEC1 point (65 bytes, `04 || x || y`).
    pub fn sec1_point(&self) -> &[u8; 65] {
        &self.point
    }

    /// ES256 over `message` with a raw `r || s` (64-byte) signature.
    pub fn verify_es256(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            &self.point[..],
        )
        .verify(message, signature)
        .is_ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}line {line}: {problem}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Line {
        path: Option<PathBuf>,
        line: usize,
        problem: String,
    },
    #[error("device {uuid} is already trusted with a different key")]
    Conflict { uuid: Uuid },
    #[error("not a P-256 public key: {0}")]
    BadKey(String),
}

/// The set of trusted device identity keys, looked up by device UUID.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: HashMap<Uuid, TrustedKey>,
}

const HEADER: &str = "device_uuid,public_key";

/// Strip optional surrounding double quotes and whitespace from a CSV field.
fn field(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim()
}

impl TrustStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Load a trust file; errors name the file and line.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let text = std::fs::read_to_string(path).map_err(|error| TrustError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text).map_err(|e| match e {
            TrustError::Line { line, problem, .. } => TrustError::Line {
                path: Some(path.to_path_buf()),
                line,
                problem,
            },
            other => other,
        })
    }

    /// Parse trust file text; errors name the line (1-based).
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        let mut store = TrustStore::default();
        let mut seen_entry = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: String| TrustError::Line {
                path: None,
                line,
                problem,
            };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split(',').map(field).collect();
            if !seen_entry && fields.len() == 2 && fields.join(",").eq_ignore_ascii_case(HEADER) {
                seen_entry = true;
                continue;
            }
            seen_entry = true;
            let [uuid, key] = fields.as_slice() else {
                return Err(err(format!(
                    "{} fields, expected 2 (device_uuid,public_key)",
                    fields.len()
                )));
            };
            let uuid =
                Uuid::try_parse(uuid).map_err(|e| err(format!("device_uuid {uuid:?}: {e}")))?;
            let der = STANDARD
                .decode(key)
                .or_else(|_| STANDARD_NO_PAD.decode(key))
                .map_err(|e| err(format!("public_key is not standard base64: {e}")))?;
            store.insert(uuid, &der).map_err(|e| err(e.to_string()))?;
        }
        Ok(store)
    }

    /// Trust `spki_der` for `uuid`. Re-adding the same key is a no-op; a
    /// different key for a known UUID is an error.
    pub fn insert(&mut self, uuid: Uuid, spki_der: &[u8]) -> Result<(), TrustError> {
        let key = TrustedKey::from_spki_der(spki_der)?;
        match self.keys.get(&uuid) {
            Some(existing) if existing.point != key.point => Err(TrustError::Conflict { uuid }),
            Some(_) => Ok(()),
            None => {
                self.keys.insert(uuid, key);
                Ok(())
            }
        }
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&TrustedKey> {
        self.keys.get(uuid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The store in file format: header, then one line per device sorted by UUID.
    pub fn to_csv(&self) -> String {
        let mut uuids: Vec<&Uuid> = self.keys.keys().collect();
        uuids.sort();
        let mut out = format!("{HEADER}\n");
        for uuid in uuids {
            if let Some(key) = self.keys.get(uuid) {
                let _ = writeln!(out, "{uuid},{}", STANDARD.encode(&key.spki_der));
            }
        }
        out
    }
}
