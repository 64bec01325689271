//! How the sinks keep up, refreshed by a watcher task every few seconds:
//! what `/metrics`, the systemd STATUS and the log read without a query
//! of their own. A sink whose oldest owed run has waited longer than
//! [`BEHIND_AFTER`], or that holds dead letters, is behind: a warning in
//! the log when it falls behind (and when it catches up), and in STATUS
//! while it is.

use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use crate::ledger::deliveries::Backlog;

/// A sink whose oldest owed run is older than this is not keeping up.
pub const BEHIND_AFTER: Duration = Duration::from_secs(60);
/// How often the watcher reads the backlog.
pub const REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct SinkHealth {
    backlog: Mutex<Vec<Backlog>>,
}

impl SinkHealth {
    /// Each configured sink's backlog as last read.
    pub fn backlog(&self) -> Vec<Backlog> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, backlog: Vec<Backlog>) {
        *self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = backlog;
    }

    /// The sinks that are behind, in words (`None` when all keep up).
    pub fn warning(&self) -> Option<String> {
        let now = OffsetDateTime::now_utc();
        let behind: Vec<String> = self
            .backlog()
            .iter()
            .filter_map(|b| behind(b, now))
            .collect();
        (!behind.is_empty()).then(|| behind.join("; "))
    }
}

/// Why `b` is behind at `now`, if it is.
pub fn behind(b: &Backlog, now: OffsetDateTime) -> Option<String> {
    let waited = b
        .oldest_queued_at
        .map(|t| (now - t).whole_seconds().max(0).unsigned_abs())
        .unwrap_or(0);
    let late = b.owed > b.dead && waited > BEHIND_AFTER.as_secs();
    (late || b.dead > 0).then(|| {
        format!(
            "sink {} behind: {} owed (oldest {waited}s), {} dead",
            b.sink, b.owed, b.dead
        )
    })
}
