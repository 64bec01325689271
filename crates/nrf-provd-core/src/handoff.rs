//! The hand-off to nRF Cloud: claim the devices of committed runs (bulk CSV,
//! at most 1000 rows a request, with provisioning tags), onboard their
//! device certificates (onboarding CSV, the bulk operation followed to
//! SUCCEEDED or FAILED), and record per device what nRF Cloud said.
//!
//! One job: take the queue from a [`HandoffLedger`], send it in batches
//! through a [`CloudClient`], record each row's outcome before the next
//! batch. What succeeded is never sent again; a row nRF Cloud refused keeps
//! its words and is sent again on a later pass; a request whose answer was
//! lost (a crash, a timeout) is sent again, and nRF Cloud's "already
//! claimed" counts as claimed. A bulk operation recorded as sent is
//! followed again after a restart, not re-sent.
//!
//! Used by `nrf-provd cloud claim|onboard` and by the daemon's hand-off
//! task ([`Handoff::serve`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::cloud::{ClaimRow, CloudClient, CloudError, MAX_ROWS, OnboardRow, RowOutcome};
use crate::ledger::{
    DeviceResult, HandoffLedger, HandoffResult, HandoffStep, LedgerError, Outcome, PendingOnboard,
    QueueFilter, RunId,
};

/// What the hand-off sends besides the devices, and how long it follows a
/// bulk operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffSettings {
    pub claim_tags: Vec<String>,
    pub onboard_sub_type: String,
    pub onboard_tags: Vec<String>,
    pub onboard_fw_types: Vec<String>,
    /// Rows per request (at most [`MAX_ROWS`]).
    pub batch_size: usize,
    /// How often a bulk operation is polled (Nordic's tool: 5 s).
    pub poll_every: Duration,
    /// How long one bulk operation is followed before the pass moves on
    /// (it is followed again on the next pass).
    pub op_deadline: Duration,
}

/// What the station hands off to nRF Cloud by itself.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
pub enum HandOff {
    /// Nothing: `nrf-provd cloud claim` / `onboard` do it by hand.
    #[default]
    #[strum(serialize = "off")]
    Off,
    #[strum(serialize = "claim")]
    Claim,
    #[strum(serialize = "claim+onboard")]
    ClaimAndOnboard,
}

impl HandOff {
    pub const ALL: &[HandOff] = <HandOff as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// Which devices one pass hands off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Only runs started at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Claims: also the devices of `collected` runs.
    pub include_collected: bool,
    /// Say what would be sent; send and record nothing.
    pub dry_run: bool,
    /// Leave out devices refused more recently than this (the daemon).
    pub retry_refused_after: Option<Duration>,
}

/// One device of a batch, for progress and dry runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchDevice {
    pub device_uuid: Uuid,
    pub run_id: RunId,
    pub outcome: Outcome,
    /// The onboarding device id (claims: empty).
    pub device_id: String,
}

/// What a pass is doing, for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// About to send batch `number` (from 1): `request` names the call.
    Sending {
        step: HandoffStep,
        number: usize,
        request: String,
        devices: Vec<BatchDevice>,
    },
    /// A dry run's batch: what would be sent (nothing is).
    WouldSend {
        step: HandoffStep,
        number: usize,
        request: String,
        devices: Vec<BatchDevice>,
        /// The body exactly as it would be sent.
        body: String,
    },
    /// A batch's outcome is recorded.
    Recorded {
        step: HandoffStep,
        number: usize,
        done: usize,
        refused: usize,
    },
    /// Following a bulk operation.
    Following { op: String, rows: usize },
    /// A bulk operation was still running at the deadline; followed again
    /// next pass.
    StillRunning { op: String, status: String },
}

/// Why a pass stopped before the queue was empty.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{0}")]
    Cloud(#[from] CloudError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests sent (dry run: that would be sent).
    pub batches: usize,
    /// Rows sent (dry run: that would be sent).
    pub rows: usize,
    /// Rows nRF Cloud took (claimed / onboarded), "already claimed" included.
    pub done: usize,
    /// Of `done`: rows nRF Cloud said were already claimed.
    pub already: usize,
    /// Rows refused, with nRF Cloud's words (kept in the ledger too).
    pub refused: Vec<(Uuid, String)>,
    /// Bulk operations left running at their deadline.
    pub still_running: Vec<String>,
    /// Why the pass stopped early, when it did. What was recorded before
    /// stays recorded; the rest is sent on the next pass.
    pub stopped: Option<HandoffError>,
}

impl Report {
    fn absorb(&mut self, other: Report) {
        self.batches += other.batches;
        self.rows += other.rows;
        self.done += other.done;
        self.already += other.already;
        self.refused.extend(other.refused);
        self.still_running.extend(other.still_running);
        if self.stopped.is_none() {
            self.stopped = other.stopped;
        }
    }
}

/// nRF Cloud's words for a device someone claimed before: the stand-in's
/// "Device … is already claimed" (the real service's wording is not
/// published; Nordic's `--unclaim` option implies a second claim fails).
pub fn says_already_claimed(message: &str) -> bool {
    message.to_ascii_lowercase().contains("already claimed")
}

/// Per-call errors that concern the request, not the station: nRF Cloud
/// judged the request and refused it, or answered in a way that does not
/// say what happened. Recorded on the batch's devices; the pass goes on.
fn batch_refusal(error: &CloudError) -> bool {
    matches!(
        error,
        CloudError::Rejected { .. } | CloudError::Malformed { .. }
    )
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Claims and onboarding of one database's devices through one client.
pub struct Handoff {
    client: Arc<CloudClient>,
    ledger: Arc<dyn HandoffLedger>,
    settings: HandoffSettings,
}

type ProgressFn<'a> = &'a mut (dyn FnMut(&Progress) + Send);

impl Handoff {
    pub fn new(
        client: Arc<CloudClient>,
        ledger: Arc<dyn HandoffLedger>,
        settings: HandoffSettings,
    ) -> Self {
        Handoff {
            client,
            ledger,
            settings,
        }
    }

    fn batch_size(&self) -> usize {
        self.settings.batch_size.clamp(1, MAX_ROWS)
    }

    fn filter(&self, pass: &Pass, after_run: RunId) -> QueueFilter {
        QueueFilter {
            since: pass.since,
            include_collected: pass.include_collected,
            retry_refused_after: pass.retry_refused_after,
            after_run,
            limit: self.batch_size(),
        }
    }

    /// Claim every device in the queue, batch by batch.
    pub async fn claim(&self, pass: &Pass, progress: ProgressFn<'_>) -> Report {
        let mut report = Report::default();
        let request = format!(
            "POST {}claimed-devices (text/csv)",
            self.client.settings().provisioning_url
        );
        let mut cursor: RunId = 0;
        loop {
            let batch = match self.ledger.claim_queue(&self.filter(pass, cursor)).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(e) => {
                    report.stopped = Some(e.into());
                    break;
                }
            };
            cursor = batch.last().map_or(cursor, |c| c.run_id);
            report.batches += 1;
            report.rows += batch.len();
            let devices: Vec<BatchDevice> = batch
                .iter()
                .map(|c| BatchDevice {
                    device_uuid: c.device_uuid,
                    run_id: c.run_id,
                    outcome: c.outcome,
                    device_id: String::new(),
                })
                .collect();
            let mut rows: Vec<ClaimRow> = batch
                .iter()
                .map(|c| ClaimRow {
                    token: c.token.clone(),
                    tags: self.settings.claim_tags.clone(),
                })
                .collect();
            let number = report.batches;
            if pass.dry_run {
                let body = crate::cloud::requests::claim_csv(&rows)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|e| format!("(not sendable: {e})\n"));
                progress(&Progress::WouldSend {
                    step: HandoffStep::Claim,
                    number,
                    request: request.clone(),
                    devices,
                    body,
                });
                continue;
            }
            progress(&Progress::Sending {
                step: HandoffStep::Claim,
                number,
                request: request.clone(),
                devices: devices.clone(),
            });
            // Rows that cannot be written as CSV are refused here and the
            // rest sent: one bad record must not hold the queue.
            let mut results: Vec<HandoffResult> = Vec::with_capacity(rows.len());
            let mut left = devices;
            let answer = loop {
                if rows.is_empty() {
                    break Ok(None);
                }
                match self.client.bulk_claim(&rows).await {
                    Err(CloudError::InvalidRow { row, problem }) if row < rows.len() => {
                        rows.remove(row);
                        let device = left.remove(row);
                        results.push(HandoffResult {
                            device_uuid: device.device_uuid,
                            run_id: device.run_id,
                            result: DeviceResult::Refused(format!(
                                "not sent: the recorded token cannot be sent ({problem})"
                            )),
                        });
                    }
                    other => break other.map(Some),
                }
            };
            match answer {
                Ok(None) => {}
                Ok(Some(answer)) => {
                    for (device, row) in left.iter().zip(&answer.rows) {
                        let result = match &row.outcome {
                            RowOutcome::Done => DeviceResult::Done,
                            RowOutcome::Failed(m) if says_already_claimed(m) => {
                                report.already += 1;
                                DeviceResult::Done
                            }
                            RowOutcome::Failed(m) => DeviceResult::Refused(m.clone()),
                            RowOutcome::Unknown => DeviceResult::Refused(
                                "nRF Cloud's answer neither lists this row as claimed nor as failed; sent again next time"
                                    .into(),
                            ),
                        };
                        results.push(HandoffResult {
                            device_uuid: device.device_uuid,
                            run_id: device.run_id,
                            result,
                        });
                    }
                }
                // One device alone, answered 409: someone claimed it before.
                Err(CloudError::Rejected {
                    status: 409,
                    message,
                }) if left.len() == 1 => {
                    debug!(%message, "claim answered 409: already claimed");
                    report.already += 1;
                    results.push(HandoffResult {
                        device_uuid: left[0].device_uuid,
                        run_id: left[0].run_id,
                        result: DeviceResult::Done,
                    });
                }
                Err(e) if batch_refusal(&e) => {
                    let why = e.to_string();
                    results.extend(left.iter().map(|d| HandoffResult {
                        device_uuid: d.device_uuid,
                        run_id: d.run_id,
                        result: DeviceResult::Refused(why.clone()),
                    }));
                }
                Err(e) => {
                    // Nothing judged (unreachable, the key refused): the
                    // rows stay in the queue as they were.
                    if let Err(le) = self.record(HandoffStep::Claim, &results).await {
                        report.stopped = Some(le.into());
                    } else {
                        report.stopped = Some(e.into());
                    }
                    tally(&mut report, &results);
                    break;
                }
            }
            if let Err(e) = self.record(HandoffStep::Claim, &results).await {
                report.stopped = Some(e.into());
                break;
            }
            let (done, refused) = tally(&mut report, &results);
            progress(&Progress::Recorded {
                step: HandoffStep::Claim,
                number,
                done,
                refused,
            });
        }
        report
    }

    async fn record(
        &self,
        step: HandoffStep,
        results: &[HandoffResult],
    ) -> Result<(), LedgerError> {
        if results.is_empty() {
            return Ok(());
        }
        self.ledger.record(step, results, now()).await
    }

    /// Follow the bulk operations an earlier pass sent, then onboard every
    /// device in the queue, batch by batch.
    pub async fn onboard(&self, pass: &Pass, progress: ProgressFn<'_>) -> Report {
        let mut report = Report::default();
        if !pass.dry_run {
            match self.ledger.pending_onboards().await {
                Ok(pending) => {
                    let mut by_op: BTreeMap<String, Vec<PendingOnboard>> = BTreeMap::new();
                    for p in pending {
                        by_op.entry(p.bulk_op_id.clone()).or_default().push(p);
                    }
                    for (op, devices) in by_op {
                        let followed = self.follow(&op, &devices, progress).await;
                        let stop = followed.stopped.is_some();
                        report.absorb(followed);
                        if stop {
                            return report;
                        }
                    }
                }
                Err(e) => {
                    report.stopped = Some(e.into());
                    return report;
                }
            }
        }
        let request = format!("POST {}devices (text/csv)", self.client.settings().api_url);
        let mut cursor: RunId = 0;
        let mut number = 0;
        loop {
            let batch = match self.ledger.onboard_queue(&self.filter(pass, cursor)).await {
                Ok(batch) if batch.is_empty() => break,
                Ok(batch) => batch,
                Err(e) => {
                    report.stopped = Some(e.into());
                    break;
                }
            };
            cursor = batch.last().map_or(cursor, |c| c.run_id);
            number += 1;
            report.batches += 1;
            report.rows += batch.len();
            let mut devices = Vec::with_capacity(batch.len());
            let mut rows = Vec::with_capacity(batch.len());
            for c in &batch {
                // As Nordic's installer: the certificate's CN (the CSR
                // template makes it the device UUID), else the UUID.
                let device_id = crate::ledger::export::certificate_cn(&c.certificate_pem)
                    .unwrap_or_else(|| c.device_uuid.hyphenated().to_string());
                devices.push(BatchDevice {
                    device_uuid: c.device_uuid,
                    run_id: c.run_id,
                    outcome: c.outcome,
                    device_id: device_id.clone(),
                });
                rows.push(OnboardRow {
                    device_id,
                    sub_type: self.settings.onboard_sub_type.clone(),
                    tags: self.settings.onboard_tags.clone(),
                    fw_types: self.settings.onboard_fw_types.clone(),
                    certificate_pem: c.certificate_pem.replace("\r\n", "\n"),
                });
            }
            if pass.dry_run {
                let body = crate::cloud::requests::onboard_csv(&rows)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|e| format!("(not sendable: {e})\n"));
                progress(&Progress::WouldSend {
                    step: HandoffStep::Onboard,
                    number,
                    request: request.clone(),
                    devices,
                    body,
                });
                continue;
            }
            progress(&Progress::Sending {
                step: HandoffStep::Onboard,
                number,
                request: request.clone(),
                devices: devices.clone(),
            });
            let mut refused_here = Vec::new();
            let sent = loop {
                if rows.is_empty() {
                    break Ok(None);
                }
                match self.client.onboard(&rows).await {
                    Err(CloudError::InvalidRow { row, problem }) if row < rows.len() => {
                        rows.remove(row);
                        let device = devices.remove(row);
                        refused_here.push(HandoffResult {
                            device_uuid: device.device_uuid,
                            run_id: device.run_id,
                            result: DeviceResult::Refused(format!(
                                "not sent: the recorded certificate cannot be sent ({problem})"
                            )),
                        });
                    }
                    other => break other.map(Some),
                }
            };
            if let Err(e) = self.record(HandoffStep::Onboard, &refused_here).await {
                report.stopped = Some(e.into());
                break;
            }
            tally(&mut report, &refused_here);
            let op = match sent {
                Ok(None) => continue,
                Ok(Some(op)) => op,
                Err(e) if batch_refusal(&e) => {
                    let why = e.to_string();
                    let results: Vec<HandoffResult> = devices
                        .iter()
                        .map(|d| HandoffResult {
                            device_uuid: d.device_uuid,
                            run_id: d.run_id,
                            result: DeviceResult::Refused(why.clone()),
                        })
                        .collect();
                    if let Err(e) = self.record(HandoffStep::Onboard, &results).await {
                        report.stopped = Some(e.into());
                        break;
                    }
                    let (done, refused) = tally(&mut report, &results);
                    progress(&Progress::Recorded {
                        step: HandoffStep::Onboard,
                        number,
                        done,
                        refused,
                    });
                    continue;
                }
                Err(e) => {
                    report.stopped = Some(e.into());
                    break;
                }
            };
            let sent_devices: Vec<(Uuid, RunId)> =
                devices.iter().map(|d| (d.device_uuid, d.run_id)).collect();
            // Durable before the operation is followed: a restart follows
            // it instead of sending the certificates again.
            if let Err(e) = self.ledger.onboard_sent(&op, &sent_devices, now()).await {
                report.stopped = Some(e.into());
                break;
            }
            let pending: Vec<PendingOnboard> = sent_devices
                .iter()
                .enumerate()
                .map(|(row, (uuid, run))| PendingOnboard {
                    device_uuid: *uuid,
                    run_id: *run,
                    bulk_op_id: op.clone(),
                    row: u32::try_from(row).unwrap_or(u32::MAX),
                })
                .collect();
            let followed = self.follow(&op, &pending, progress).await;
            let (done, refused) = (followed.done, followed.refused.len());
            let stop = followed.stopped.is_some();
            report.absorb(followed);
            if stop {
                break;
            }
            progress(&Progress::Recorded {
                step: HandoffStep::Onboard,
                number,
                done,
                refused,
            });
        }
        report
    }

    /// Poll bulk operation `op` to SUCCEEDED or FAILED and record each
    /// device's row outcome.
    async fn follow(
        &self,
        op: &str,
        devices: &[PendingOnboard],
        progress: ProgressFn<'_>,
    ) -> Report {
        let mut report = Report::default();
        progress(&Progress::Following {
            op: op.to_string(),
            rows: devices.len(),
        });
        let waited = self
            .client
            .wait_bulk_op(op, self.settings.poll_every, self.settings.op_deadline)
            .await;
        let results: Vec<HandoffResult> = match waited {
            Ok(bulk) => devices
                .iter()
                .map(|d| {
                    let result = match bulk.row_outcome(d.row as usize) {
                        RowOutcome::Done => DeviceResult::Done,
                        RowOutcome::Failed(m) => DeviceResult::Refused(m),
                        RowOutcome::Unknown => DeviceResult::Refused(format!(
                            "bulk operation {op} ended {} without saying what happened to this row{}; sent again next time",
                            bulk.status.as_str(),
                            bulk.errors_unavailable
                                .as_deref()
                                .map(|w| format!(" ({w})"))
                                .unwrap_or_default()
                        )),
                    };
                    HandoffResult {
                        device_uuid: d.device_uuid,
                        run_id: d.run_id,
                        result,
                    }
                })
                .collect(),
            Err(CloudError::StillRunning { status, .. }) => {
                progress(&Progress::StillRunning {
                    op: op.to_string(),
                    status,
                });
                report.still_running.push(op.to_string());
                return report;
            }
            // nRF Cloud does not know the operation (expired, another
            // account): its devices go back to the queue.
            Err(CloudError::Rejected { status: 404, message }) => devices
                .iter()
                .map(|d| HandoffResult {
                    device_uuid: d.device_uuid,
                    run_id: d.run_id,
                    result: DeviceResult::Refused(format!(
                        "bulk operation {op} not found (HTTP 404: {message}); sent again next time"
                    )),
                })
                .collect(),
            Err(e) => {
                report.stopped = Some(e.into());
                return report;
            }
        };
        if let Err(e) = self.record(HandoffStep::Onboard, &results).await {
            report.stopped = Some(e.into());
            return report;
        }
        tally(&mut report, &results);
        report
    }

    /// The daemon's hand-off: a pass at start, then every `every`, until
    /// `stop`. A pass in flight when `stop` comes is dropped: what it had
    /// recorded stays, the rest is sent on the next start.
    pub async fn serve(
        self: Arc<Self>,
        mode: HandOff,
        every: Duration,
        include_collected: bool,
        stop: CancellationToken,
    ) {
        if mode == HandOff::Off {
            return;
        }
        info!(
            mode = mode.as_str(),
            every_s = every.as_secs(),
            "nRF Cloud hand-off started"
        );
        let pass = Pass {
            include_collected,
            // A refused row is not sent every pass.
            retry_refused_after: Some(every.max(REFUSED_RETRY_AFTER)),
            ..Pass::default()
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.daemon_pass(mode, &pass) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        info!("nRF Cloud hand-off stopped");
    }

    async fn daemon_pass(&self, mode: HandOff, pass: &Pass) {
        let mut log = |p: &Progress| match p {
            Progress::Sending {
                step,
                number,
                devices,
                ..
            } => {
                debug!(
                    step = step.as_str(),
                    batch = number,
                    rows = devices.len(),
                    "nRF Cloud hand-off: sending"
                )
            }
            Progress::StillRunning { op, status } => {
                info!(op = %op, status = %status, "nRF Cloud bulk operation still running; followed again next pass")
            }
            _ => {}
        };
        let claimed = self.claim(pass, &mut log).await;
        log_report(HandoffStep::Claim, &claimed);
        if mode == HandOff::ClaimAndOnboard && claimed.stopped.is_none() {
            let onboarded = self.onboard(pass, &mut log).await;
            log_report(HandoffStep::Onboard, &onboarded);
        }
    }
}

/// The daemon waits at least this long before sending a refused row again.
pub const REFUSED_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

fn tally(report: &mut Report, results: &[HandoffResult]) -> (usize, usize) {
    let mut counts = (0, 0);
    for r in results {
        match &r.result {
            DeviceResult::Done => {
                report.done += 1;
                counts.0 += 1;
            }
            DeviceResult::Refused(why) => {
                report.refused.push((r.device_uuid, why.clone()));
                counts.1 += 1;
            }
        }
    }
    counts
}

/// The daemon's lines for one pass: quiet when there was nothing to do.
fn log_report(step: HandoffStep, report: &Report) {
    let verb = match step {
        HandoffStep::Claim => "claimed",
        HandoffStep::Onboard => "onboarded",
    };
    if report.rows > 0 {
        info!(
            step = step.as_str(),
            batches = report.batches,
            rows = report.rows,
            done = report.done,
            already = report.already,
            refused = report.refused.len(),
            "nRF Cloud hand-off: {} {verb}",
            report.done
        );
    }
    for (device, why) in report.refused.iter().take(5) {
        warn!(step = step.as_str(), device = %device, "nRF Cloud refused: {why}");
    }
    if report.refused.len() > 5 {
        warn!(
            step = step.as_str(),
            more = report.refused.len() - 5,
            "nRF Cloud refused more rows (`nrf-provd cloud status` lists them)"
        );
    }
    if let Some(e) = &report.stopped {
        warn!(
            step = step.as_str(),
            "nRF Cloud hand-off stopped; the rest is sent next pass: {e}"
        );
    }
}
