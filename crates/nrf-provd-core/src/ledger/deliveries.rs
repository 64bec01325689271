//! What the sinks' outbox holds (`SqliteLedger::open_deliveries`): a run
//! is owed to each sink configured when it finished, until that sink
//! acknowledges it. The sinks themselves and their delivery tasks are
//! [`crate::sink`].

use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::RunId;

/// A configured sink's row in the outbox (`sinks.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(pub i64);

impl SinkId {
    /// The line's shared ledger (`ledger::line`'s forwarder), named
    /// [`LINE_SINK`]: owed every finished run, configured or not (a station
    /// alone keeps its history for a line it may join; migration 0014).
    pub const LINE: SinkId = SinkId(0);
    /// The hand-off's claims (`cloud-claim`) and onboardings
    /// (`cloud-onboard`): owed a device's latest claimable (onboardable)
    /// run until nRF Cloud has it (migration 0016); never `active`, the
    /// hand-off follows them itself (`ledger::handoff`).
    pub const CLOUD_CLAIM: SinkId = SinkId(-1);
    pub const CLOUD_ONBOARD: SinkId = SinkId(-2);
}

/// The line sink's name in `deliveries`, the page and `/metrics`.
pub const LINE_SINK: &str = "line";

/// The oldest run a sink is owed.
#[derive(Debug, Clone)]
pub struct Due {
    /// The oldest run the sink is owed (read with `SqliteDeliveries::run`
    /// only once it is due: a sink waiting out a retry reads no run).
    pub run: RunId,
    /// When the run was owed to the sink (again, after an amendment).
    pub queued_at: OffsetDateTime,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this (a retry's backoff, kept across restarts).
    pub not_before: Option<OffsetDateTime>,
}

impl Due {
    /// How long to wait before trying it, if it is not due yet at `now`.
    pub fn wait(&self, now: OffsetDateTime) -> Option<Duration> {
        let wait = self.not_before? - now;
        wait.is_positive()
            .then(|| Duration::try_from(wait).unwrap_or_default())
    }
}

/// One configured sink's outbox, for `/metrics`, the page and `deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Its name: kind and URL or command.
    pub sink: String,
    /// Runs owed (dead letters included).
    pub owed: u64,
    /// When the oldest of them finished.
    pub oldest_queued_at: Option<OffsetDateTime>,
    /// Owed runs that failed at least once and will be tried again.
    pub retrying: u64,
    /// Dead letters: refused for good until retried by hand.
    pub dead: u64,
}

/// One owed delivery (`nrf-provd deliveries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub sink: String,
    pub run_id: RunId,
    pub run_uid: Uuid,
    pub queued_at: OffsetDateTime,
    pub attempts: u32,
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last failure, or a dead letter's answer.
    pub last_error: Option<String>,
    pub dead_at: Option<OffsetDateTime>,
}
