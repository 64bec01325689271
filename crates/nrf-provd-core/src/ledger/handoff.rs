//! Hand-off state: what each device's runs gave nRF Cloud (claimed,
//! onboarded, the bulk operation, nRF Cloud's last refusal). Domain types
//! and the [`HandoffLedger`] trait; the SQLite implementation keeps them in
//! the station's own database (`handoff` table, schema version 6).
//!
//! The queues are two sinks of the one outbox (`deliveries`, schema
//! version 16: `cloud-claim`, `cloud-onboard`): the latest passed (or,
//! when asked, collected) run of each device not claimed / onboarded yet,
//! written in the transaction that finishes the run, superseded by the
//! device's next run, and owed until nRF Cloud's answer is recorded,
//! across restarts.

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{LedgerError, Outcome, RunId};

/// Which hand-off step.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HandoffStep {
    Claim,
    Onboard,
}

impl HandoffStep {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// What was handed off of one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceHandoff {
    #[serde(with = "crate::record::ser::uuid")]
    pub device_uuid: Uuid,
    /// The run whose token or certificate was sent last.
    pub run_id: RunId,
    #[serde(with = "crate::record::ser::opt_time")]
    pub claimed_at: Option<OffsetDateTime>,
    #[serde(with = "crate::record::ser::opt_time")]
    pub onboarded_at: Option<OffsetDateTime>,
    /// The onboarding bulk operation that carries (or carried) the device.
    pub bulk_op_id: Option<String>,
    /// The device's row in that operation (0-based).
    pub bulk_op_row: Option<u32>,
    /// Sent in `bulk_op_id`, outcome not known yet.
    pub onboard_pending: bool,
    /// nRF Cloud's words for the last refusal.
    pub last_error: Option<String>,
    pub error_step: Option<HandoffStep>,
    #[serde(with = "crate::record::ser::opt_time")]
    pub error_at: Option<OffsetDateTime>,
    /// Requests that carried the device.
    pub attempts: u32,
    #[serde(with = "crate::record::ser::time")]
    pub updated_at: OffsetDateTime,
}

/// Which devices a queue read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// Only runs started at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Claims: also the devices of `collected` runs.
    pub include_collected: bool,
    /// Leave out devices whose last refusal (of this step) is younger than
    /// this: the daemon does not send a refused row every pass.
    pub retry_refused_after: Option<Duration>,
    /// Only runs after this one (the caller's cursor through the queue).
    pub after_run: RunId,
    pub limit: usize,
}

/// A device waiting to be claimed: the identity token of its latest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCandidate {
    pub device_uuid: Uuid,
    pub run_id: RunId,
    pub outcome: Outcome,
    /// The `%ATTESTTOKEN` as the modem printed it.
    pub token: String,
}

/// A device waiting to be onboarded: the certificate its latest run installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardCandidate {
    pub device_uuid: Uuid,
    pub run_id: RunId,
    pub outcome: Outcome,
    /// PEM.
    pub certificate_pem: String,
}

/// What nRF Cloud said of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceResult {
    /// Claimed / onboarded (or nRF Cloud says it already was).
    Done,
    /// Refused, with nRF Cloud's words: retried later.
    Refused(String),
}

/// One device's outcome of a hand-off request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffResult {
    pub device_uuid: Uuid,
    pub run_id: RunId,
    pub result: DeviceResult,
}

/// A device sent in an onboarding bulk operation whose outcome is not known
/// yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOnboard {
    pub device_uuid: Uuid,
    pub run_id: RunId,
    pub bulk_op_id: String,
    pub row: u32,
}

/// The hand-off side of the ledger. Each write is one transaction, durable
/// when it returns; implementations do their own blocking.
#[async_trait]
pub trait HandoffLedger: Send + Sync {
    /// Devices to claim, by their latest passed (or collected) run, oldest
    /// run first.
    async fn claim_queue(&self, filter: &QueueFilter) -> Result<Vec<ClaimCandidate>, LedgerError>;

    /// Devices to onboard: the latest passed run that installed a device
    /// certificate (a collected run once its device is claimed), not
    /// onboarded and not waiting on a bulk operation.
    async fn onboard_queue(
        &self,
        filter: &QueueFilter,
    ) -> Result<Vec<OnboardCandidate>, LedgerError>;

    /// Devices sent in bulk operations whose outcome is not recorded yet.
    async fn pending_onboards(&self) -> Result<Vec<PendingOnboard>, LedgerError>;

    /// Record what nRF Cloud said of each device of one request of `step`.
    async fn record(
        &self,
        step: HandoffStep,
        results: &[HandoffResult],
        at: OffsetDateTime,
    ) -> Result<(), LedgerError>;

    /// Record that `devices` (device, run) were sent as rows 0.. of bulk
    /// operation `op`, before it is followed.
    async fn onboard_sent(
        &self,
        op: &str,
        devices: &[(Uuid, RunId)],
        at: OffsetDateTime,
    ) -> Result<(), LedgerError>;

    /// Hand-off state of every device that has some, by device UUID; with
    /// `since`, of devices whose state changed at or after it.
    async fn handoffs(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<DeviceHandoff>, LedgerError>;

    /// Devices of passed / collected runs without any hand-off state yet
    /// (for `cloud status`): (device, latest run, its outcome).
    async fn not_handed_off(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<(Uuid, RunId, Outcome)>, LedgerError>;
}
