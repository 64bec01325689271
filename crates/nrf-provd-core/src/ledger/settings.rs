//! A station's shared ledger, as the core takes it: where it is, where its
//! password comes from, and how claims and forwarding behave. The daemon's
//! `[ledger]` section reads into these (with positions for its errors).
//!
//! The URL never carries the password (a station's config is readable by
//! others): it comes from a file or from the environment variable
//! [`PASSWORD_ENV`].

use std::path::PathBuf;
use std::time::Duration;

/// Environment variable the ledger password is read from when no
/// `password_file` is configured.
pub const PASSWORD_ENV: &str = "NRF_PROVD_LEDGER_PASSWORD";

/// Where claims are made during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum LedgerMode {
    /// In PostgreSQL, during the run: while it cannot be reached no run
    /// passes (`ledger_unreachable`); records are still written locally.
    #[default]
    Required,
    /// Locally during the run, checked by PostgreSQL when forwarded; a clash
    /// found then is recorded on both runs as `conflict`.
    Deferred,
}

impl LedgerMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Where the ledger password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file holding only the password (a trailing newline is dropped).
    File(PathBuf),
    /// [`PASSWORD_ENV`], if set; else no password (peer or trust auth).
    Environment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// `postgres://user@host:port/db?sslmode=verify-full&sslrootcert=/ca.pem`
    /// or `postgres://user@/db?host=/run/postgresql`, without a password.
    pub url: String,
    pub password: PasswordSource,
    pub mode: LedgerMode,
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One central claim, pin or device check during a run (`required`).
    pub claim_timeout: Duration,
    /// Runs forwarded in one transaction.
    pub batch_size: usize,
    /// How soon the forwarder looks again when idle or after a failure.
    pub forward_interval: Duration,
    /// Connections to the server at most (claims of runs on many ports at
    /// once, and the forwarder); count them against `max_connections`.
    pub pool_size: usize,
}

impl LedgerConfig {
    /// Defaults for a URL given on the command line (`results --ledger`).
    pub fn for_url(url: String) -> LedgerConfig {
        LedgerConfig {
            url,
            password: PasswordSource::Environment,
            mode: LedgerMode::default(),
            connect_timeout: Duration::from_secs(5),
            claim_timeout: Duration::from_secs(5),
            batch_size: 500,
            forward_interval: Duration::from_secs(5),
            pool_size: 16,
        }
    }
}

/// Largest `batch_size`: PostgreSQL takes at most 65535 parameters per
/// statement, far more than the forwarder's arrays need, but a transaction
/// of more runs would hold the line's locks for long.
pub const MAX_BATCH: usize = 10_000;

/// Largest `pool_size`.
pub const MAX_POOL: usize = 256;
