//! Durable run records: what each board proved, what was installed, why it
//! failed. SQLite (see `sqlite.rs`) with versioned migrations; `export.rs`
//! turns records into tables, JSON and Nordic's CSV formats.
//!
//! The API is synchronous; async callers use `spawn_blocking`. A `Store` is
//! `Send + Sync` and can be shared behind an `Arc`.

pub mod export;
mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

pub use sqlite::Store;

pub type RunId = i64;

/// Database used when none is configured: `$STATE_DIRECTORY/results.db`
/// under systemd (`StateDirectory=`), else `./nrf-provd.db`.
pub fn default_db_path() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            // systemd passes one directory per StateDirectory= entry, ':'-separated.
            std::env::split_paths(&dirs).find(|d| !d.as_os_str().is_empty())
        })
        .map(|dir| dir.join("results.db"))
        .unwrap_or_else(|| PathBuf::from("nrf-provd.db"))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: database is in use by another nrf-provd process (one daemon per database)", path.display())]
    InUse { path: PathBuf },
    #[error("{}: database schema version {found} is newer than this nrf-provd supports ({supported}); use a newer nrf-provd", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    #[error("{}: not an nrf-provd results database (no schema); run the daemon once to create it", path.display())]
    NoSchema { path: PathBuf },
    #[error("database: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database holds an unreadable {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error("run {0} does not exist")]
    UnknownRun(RunId),
    #[error("run {id} is already recorded as {outcome}; a run is finished once")]
    AlreadyFinished { id: RunId, outcome: String },
    #[error("invalid run record: {0}")]
    InvalidRecord(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub station_id: String,
    pub port: String,
    pub started_at: OffsetDateTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InFlight,
    Passed,
    Failed,
    Interrupted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InFlight => "in_flight",
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Outcome::InFlight,
            Outcome::Passed,
            Outcome::Failed,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Answer to [`Store::claim_nonce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceClaim {
    /// Never seen before; now recorded against this run.
    Fresh,
    /// Already claimed, by `first_run` (which may be this same run if the
    /// caller claims a value twice).
    Replay { first_run: RunId },
}

/// Which runs [`Store::runs`] returns: all filters must match. With `limit`,
/// the most recent `limit` runs; results are always oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub device_uuid: Option<Uuid>,
    pub since: Option<OffsetDateTime>,
    pub limit: Option<usize>,
}

/// Number of runs by outcome over the whole database; `seen` counts every
/// run (one per board insertion), in flight included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub seen: u64,
    pub passed: u64,
    pub failed: u64,
    pub interrupted: u64,
    pub in_flight: u64,
}

/// One provisioning run. Times are stored with microsecond precision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub station_id: String,
    pub port: String,
    #[serde(with = "ser::time")]
    pub started_at: OffsetDateTime,
    #[serde(with = "ser::opt_time")]
    pub finished_at: Option<OffsetDateTime>,
    pub outcome: Outcome,
    pub failed_step: Option<String>,
    pub reason: Option<String>,
    pub device: DeviceInfo,
    pub steps: Vec<StepRecord>,
    pub tokens: Vec<TokenRecord>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    #[serde(with = "ser::opt_uuid")]
    pub device_uuid: Option<Uuid>,
    pub imei: Option<String>,
    pub model: Option<String>,
    pub firmware: Option<String>,
    #[serde(with = "ser::opt_uuid")]
    pub firmware_uuid: Option<Uuid>,
    pub hw_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepRecord {
    pub name: String,
    #[serde(with = "ser::time")]
    pub started_at: OffsetDateTime,
    /// Serialised as `duration_ms` (float, microsecond resolution).
    #[serde(rename = "duration_ms", with = "ser::millis")]
    pub duration: Duration,
    pub passed: bool,
    pub attempts: u32,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    /// What the token decoded as (not what its command should have returned).
    pub kind: crate::token::TokenKind,
    /// The token as the modem printed it.
    pub text: String,
    pub authentic: bool,
    pub checks_json: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    /// "csr" or "device_certificate".
    pub kind: String,
    pub sec_tag: Option<u32>,
    /// PEM.
    pub content: String,
}

/// Fixed-width UTC timestamps: readable in `sqlite3` and sortable as text.
pub(crate) mod dbtime {
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;
    use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

    pub fn format(t: OffsetDateTime) -> String {
        // Formatting a UTC time with this description cannot fail for years 0..=9999.
        t.to_offset(UtcOffset::UTC)
            .format(FORMAT)
            .unwrap_or_else(|_| t.unix_timestamp().to_string())
    }

    pub fn parse(text: &str) -> Option<OffsetDateTime> {
        PrimitiveDateTime::parse(text, FORMAT)
            .ok()
            .map(PrimitiveDateTime::assume_utc)
    }
}

/// serde helpers: RFC 3339 times, hyphenated UUIDs, durations in ms.
mod ser {
    use serde::Serializer;

    fn rfc3339(t: &::time::OffsetDateTime) -> String {
        t.format(&::time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| super::dbtime::format(*t))
    }

    pub mod time {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &::time::OffsetDateTime,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.serialize_str(&rfc3339(t))
        }
    }

    pub mod opt_time {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &Option<::time::OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&rfc3339(t)),
                None => s.serialize_none(),
            }
        }
    }

    pub mod opt_uuid {
        use super::*;
        pub fn serialize<S: Serializer>(u: &Option<uuid::Uuid>, s: S) -> Result<S::Ok, S::Error> {
            match u {
                Some(u) => s.collect_str(&u.hyphenated()),
                None => s.serialize_none(),
            }
        }
    }

    pub mod millis {
        use super::*;
        pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(d.as_micros() as f64 / 1000.0)
        }
    }
}
