//! Trusted device identity keys: device UUID → P-256 public key.
//!
//! File format (CSV, read with the `csv` crate so quoted fields work): an
//! optional header line `device_uuid,public_key`, then one device per line,
//! `public_key` being the standard base64 of the SubjectPublicKeyInfo DER of
//! a P-256 key. `#` starts a comment (to the end of the line); blank lines
//! are allowed. The same UUID listed twice with different keys, one key
//! listed under two UUIDs and the nil UUID are errors naming the lines.
//!
//! The file decides who passes, so [`TrustStore::load`] refuses one that
//! group or others can write or replace (its path is checked as OpenSSH
//! checks `~/.ssh`), and remembers its SHA-256 for the log.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use uuid::Uuid;

use crate::csr;
use secure_file::{self, Holds, UnsafeFile};

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

/// A short, stable name for a key: the first 16 hex digits of the SHA-256
/// of its SubjectPublicKeyInfo.
pub fn fingerprint(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("sha256:{}", hex::encode(&digest[..8]))
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Others could change it (its mode, or a directory on its path), and
    /// so decide which boards pass.
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    #[error("{}line {line}: {problem}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Line {
        path: Option<PathBuf>,
        line: usize,
        problem: String,
    },
    #[error(
        "{}: no trusted device keys (the file is empty or holds only a header); every board would fail `key_trusted` — add the keys of the devices this station provisions",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error(
        "the new trust file would drop {dropped} of the {running} trusted keys ({share:.0}%, more than the {allowed:.0}% identity.reload_max_drop allows); keeping the running keys"
    )]
    TooManyDropped {
        running: usize,
        dropped: usize,
        share: f64,
        allowed: f64,
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
    /// SHA-256 of the file it was loaded from.
    sha256: Option<[u8; 32]>,
}

const HEADER: [&str; 2] = ["device_uuid", "public_key"];

/// Strip whitespace and stray quotes around a CSV field (`"a" , "b"`).
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

    /// Load a trust file; errors name the file and line. A file that group
    /// or others can write, or a directory on its path lets them replace,
    /// is refused ([`secure_file`]).
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        let io = |error| TrustError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut file = secure_file::open(path, "trust file", Holds::Trust)
            .map_err(|refusal| refusal.into_error(io))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| TrustError::Line {
            path: Some(path.to_path_buf()),
            line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            problem: "not UTF-8 text".into(),
        })?;
        let mut store = Self::parse(&text).map_err(|e| match e {
            TrustError::Line { line, problem, .. } => TrustError::Line {
                path: Some(path.to_path_buf()),
                line,
                problem,
            },
            other => other,
        })?;
        store.sha256 = Some(Sha256::digest(text.as_bytes()).into());
        Ok(store)
    }

    /// Parse trust file text; errors name the line (1-based).
    pub fn parse(text: &str) -> Result<Self, TrustError> {
        // One entry a line (no field holds a line break or a `#`): each line
        // is cut at its comment and read as CSV on its own, so the line
        // numbers in errors are the file's (the csv crate does not count
        // blank lines in its positions).
        let mut store = TrustStore::default();
        let mut seen_entry = false;
        // Where each device and each key was first listed, to name both
        // lines of a clash.
        let mut lines: HashMap<Uuid, (usize, [u8; 65])> = HashMap::new();
        let mut owners: HashMap<[u8; 65], (Uuid, usize)> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |problem: String| TrustError::Line {
                path: None,
                line,
                problem,
            };
            let uncommented = raw.split('#').next().unwrap_or_default();
            if uncommented.trim().is_empty() {
                continue;
            }
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(uncommented.as_bytes());
            let record = match reader.records().next() {
                Some(Ok(record)) => record,
                Some(Err(e)) => return Err(err(format!("not CSV: {e}"))),
                None => continue,
            };
            let fields: Vec<&str> = record.iter().map(field).collect();
            if fields.iter().all(|f| f.is_empty()) {
                continue;
            }
            let is_header = fields.len() == 2
                && fields
                    .iter()
                    .zip(HEADER)
                    .all(|(f, h)| f.eq_ignore_ascii_case(h));
            if !seen_entry && is_header {
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
            if uuid.is_nil() {
                return Err(err(
                    "device_uuid is the nil UUID (all zeros), which names no device".into(),
                ));
            }
            let der = STANDARD
                .decode(key)
                .or_else(|_| STANDARD_NO_PAD.decode(key))
                .map_err(|e| err(format!("public_key is not standard base64: {e}")))?;
            let key = TrustedKey::from_spki_der(&der).map_err(|e| err(e.to_string()))?;
            match (lines.get(&uuid), owners.get(&key.point)) {
                (Some((first, point)), _) if *point != key.point => {
                    return Err(err(format!(
                        "device {uuid} is listed again with a different key (first on line {first})"
                    )));
                }
                (_, Some((other, first))) if *other != uuid => {
                    return Err(err(format!(
                        "the key of device {uuid} is also listed for device {other} on line \
                         {first}: one identity key belongs to one device"
                    )));
                }
                _ => {}
            }
            lines.entry(uuid).or_insert((line, key.point));
            owners.entry(key.point).or_insert((uuid, line));
            store.insert(uuid, &der).map_err(|e| err(e.to_string()))?;
        }
        Ok(store)
    }

    /// Whether `new` may replace this store on reload: it must keep a key,
    /// and drop at most `max_drop` (a share, 0..=1) of this store's keys.
    pub fn check_replacement(
        &self,
        new: &TrustStore,
        path: &Path,
        max_drop: f64,
    ) -> Result<(), TrustError> {
        if new.is_empty() {
            return Err(TrustError::Empty {
                path: path.to_path_buf(),
            });
        }
        let dropped = self
            .keys
            .keys()
            .filter(|uuid| new.get(uuid).is_none())
            .count();
        let running = self.len().max(1);
        let share = dropped as f64 / running as f64;
        if share > max_drop {
            return Err(TrustError::TooManyDropped {
                running: self.len(),
                dropped,
                share: share * 100.0,
                allowed: max_drop * 100.0,
            });
        }
        Ok(())
    }

    /// SHA-256 of the file this store was loaded from (lowercase hex).
    pub fn file_sha256(&self) -> Option<String> {
        self.sha256.map(hex::encode)
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
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        let mut rows = vec![[HEADER[0].to_string(), HEADER[1].to_string()]];
        for uuid in uuids {
            if let Some(key) = self.keys.get(uuid) {
                rows.push([uuid.to_string(), STANDARD.encode(&key.spki_der)]);
            }
        }
        for row in rows {
            // Writing plain fields into a Vec cannot fail.
            let _ = writer.write_record(&row);
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }
}
