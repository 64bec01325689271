//! The line's shared server, as the line composite ([`super::LineLedger`])
//! uses it: central claims, bindings and device checks during a run, the
//! forwarder's batches and the conflicts it brings back. PostgreSQL
//! ([`super::PostgresLedger`]) is the one implementation; a second shared
//! backend implements this trait in a module of its own and is chosen in
//! `backends.rs` (and, with a URL scheme of its own, in the daemon's config
//! and check).

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::outbox::{Conflict, ForwardBatch};
use super::postgres::Forwarded;
use super::{
    Binding, BindingOutcome, ClaimKind, DeviceCheck, DeviceHistory, LedgerError, LedgerReader,
    PostgresLedger, RunId, Sighting,
};

#[async_trait]
pub trait SharedLedger: LedgerReader + Send + Sync {
    /// How the server is named in logs and errors (no secret in it).
    fn shown(&self) -> &str;
    /// How long a central operation during a run may take.
    fn claim_timeout(&self) -> Duration;
    /// Reach the server and bring its schema up to date.
    async fn connect(&self) -> Result<(), LedgerError>;
    /// Claim `value` line-wide for `run`; the first sighting if another run
    /// has it.
    async fn claim(
        &self,
        kind: ClaimKind,
        value: &str,
        run: &Sighting,
    ) -> Result<Option<Sighting>, LedgerError>;
    /// An authority's binding, line-wide (see [`super::Ledger::bind`]).
    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError>;
    /// The device's history line-wide, holding it for this run for `hold`.
    async fn check_device(
        &self,
        check: &DeviceCheck,
        hold: Duration,
    ) -> Result<DeviceHistory, LedgerError>;
    /// Release the device a finished run held.
    async fn release_device(&self, device_uuid: Uuid, run_uid: Uuid) -> Result<(), LedgerError>;
    /// Say that the station started (its runs before `since` are final).
    async fn station_started(
        &self,
        station_id: &str,
        since: OffsetDateTime,
    ) -> Result<(), LedgerError>;
    /// Store a batch of finished runs, idempotently by run uid.
    async fn forward(&self, batch: &ForwardBatch) -> Result<Forwarded, LedgerError>;
    /// Conflicts found on this station's runs not yet brought back.
    async fn undelivered_conflicts(
        &self,
        station_id: &str,
        limit: i64,
    ) -> Result<Vec<(i64, Conflict)>, LedgerError>;
    /// The conflicts `ids` are recorded on the station.
    async fn delivered(&self, ids: &[i64]) -> Result<(), LedgerError>;
    /// Every run the server holds of this station (uid, its id there).
    async fn station_runs(&self, station_id: &str) -> Result<Vec<(Uuid, RunId)>, LedgerError>;
}

#[async_trait]
impl SharedLedger for PostgresLedger {
    fn shown(&self) -> &str {
        PostgresLedger::shown(self)
    }
    fn claim_timeout(&self) -> Duration {
        PostgresLedger::claim_timeout(self)
    }
    async fn connect(&self) -> Result<(), LedgerError> {
        PostgresLedger::connect(self).await
    }
    async fn claim(
        &self,
        kind: ClaimKind,
        value: &str,
        run: &Sighting,
    ) -> Result<Option<Sighting>, LedgerError> {
        PostgresLedger::claim(self, kind, value, run).await
    }
    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        PostgresLedger::bind(self, binding).await
    }
    async fn check_device(
        &self,
        check: &DeviceCheck,
        hold: Duration,
    ) -> Result<DeviceHistory, LedgerError> {
        PostgresLedger::check_device(self, check, hold).await
    }
    async fn release_device(&self, device_uuid: Uuid, run_uid: Uuid) -> Result<(), LedgerError> {
        PostgresLedger::release_device(self, device_uuid, run_uid).await
    }
    async fn station_started(
        &self,
        station_id: &str,
        since: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        PostgresLedger::station_started(self, station_id, since).await
    }
    async fn forward(&self, batch: &ForwardBatch) -> Result<Forwarded, LedgerError> {
        PostgresLedger::forward(self, batch).await
    }
    async fn undelivered_conflicts(
        &self,
        station_id: &str,
        limit: i64,
    ) -> Result<Vec<(i64, Conflict)>, LedgerError> {
        PostgresLedger::undelivered_conflicts(self, station_id, limit).await
    }
    async fn delivered(&self, ids: &[i64]) -> Result<(), LedgerError> {
        PostgresLedger::delivered(self, ids).await
    }
    async fn station_runs(&self, station_id: &str) -> Result<Vec<(Uuid, RunId)>, LedgerError> {
        PostgresLedger::station_runs(self, station_id).await
    }
}
