//! The nRF Cloud API key: loaded from a private file or an environment
//! variable, sent only as `Authorization: Bearer`, never shown.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use secure_file::{self, Holds, UnsafeFile};

/// A key file longer than this is not an API key (nRF Cloud's are 40 hex
/// characters); refusing it keeps a wrong path from being read whole.
const MAX_KEY_FILE: u64 = 4096;

/// Why an API key could not be loaded. Never contains the key itself.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{}: cannot read nRF Cloud API key: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Others could read or replace it (its mode, or a directory on its path).
    #[error(transparent)]
    Unsafe(#[from] UnsafeFile),
    #[error("{}: larger than {MAX_KEY_FILE} bytes; not an API key file", path.display())]
    TooLong { path: PathBuf },
    #[error("{source_name}: the nRF Cloud API key is empty")]
    Empty { source_name: String },
    #[error("environment variable {name} is not set (it should hold the nRF Cloud API key)")]
    EnvMissing { name: String },
    #[error(
        "{source_name}: the nRF Cloud API key has a character that cannot go in an HTTP header at byte {at} (only printable ASCII without spaces)"
    )]
    BadCharacter { source_name: String, at: usize },
}

/// An nRF Cloud REST API key. `Debug` and `Display` name where it came from,
/// never its value; the memory is wiped on drop.
#[derive(Clone)]
pub struct ApiKey {
    secret: Zeroizing<String>,
    source: String,
}

impl ApiKey {
    /// Read the key from `path`: refused when group or others can read the
    /// file or replace it (as the CA key, see [`secure_file`]), when it is
    /// empty, or not a plain token; trailing whitespace (the editor's
    /// newline) is dropped.
    pub fn from_file(path: &Path) -> Result<Self, ApiKeyError> {
        let io = |source| ApiKeyError::Io {
            path: path.to_owned(),
            source,
        };
        let file = secure_file::open(path, "nRF Cloud API key", Holds::Secret)
            .map_err(|refusal| refusal.into_error(io))?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(ApiKeyError::TooLong {
                path: path.to_owned(),
            });
        }
        Self::checked(&bytes, path.display().to_string())
    }

    /// Read the key from the environment variable `name`.
    pub fn from_env(name: &str) -> Result<Self, ApiKeyError> {
        let value = std::env::var_os(name).ok_or_else(|| ApiKeyError::EnvMissing {
            name: name.to_string(),
        })?;
        let bytes = Zeroizing::new(value.into_encoded_bytes());
        Self::checked(&bytes, format!("environment variable {name}"))
    }

    /// A key given directly (tests, a caller with its own secret store).
    pub fn new(key: &str, source: &str) -> Result<Self, ApiKeyError> {
        Self::checked(key.as_bytes(), source.to_string())
    }

    fn checked(bytes: &[u8], source: String) -> Result<Self, ApiKeyError> {
        let trimmed = bytes.trim_ascii_end();
        if trimmed.is_empty() {
            return Err(ApiKeyError::Empty {
                source_name: source,
            });
        }
        if let Some(at) = trimmed.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(ApiKeyError::BadCharacter {
                source_name: source,
                at,
            });
        }
        // Printable ASCII, so valid UTF-8.
        let secret = Zeroizing::new(String::from_utf8_lossy(trimmed).into_owned());
        Ok(Self { secret, source })
    }

    /// Where the key came from (a path or an environment variable's name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The key itself, for the one place that builds the header.
    pub(crate) fn expose(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("source", &self.source)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nRF Cloud API key from {}", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newline_is_trimmed_and_inner_space_refused() {
        let key = ApiKey::new("abc123\r\n", "test").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.expose(), "abc123");
        assert!(matches!(
            ApiKey::new("abc 123", "test"),
            Err(ApiKeyError::BadCharacter { at: 3, .. })
        ));
        assert!(matches!(
            ApiKey::new(" \n", "test"),
            Err(ApiKeyError::Empty { .. })
        ));
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let key = ApiKey::new("s3cr3t-key", "test").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{key:?}").contains("s3cr3t"));
        assert!(!format!("{key}").contains("s3cr3t"));
    }
}
