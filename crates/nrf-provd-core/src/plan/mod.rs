//! The provisioning plan: the configured steps, run in order on one board,
//! each recorded with its timing and outcome into a [`RunRecord`].
//!
//! The plan decides; the modem talks; the verifier judges; the identity
//! authorities vouch; the ledger remembers. A device passes only when every
//! step passed. Everything the plan touches comes in through
//! [`PlanContext`] (ledger, authorities, CA, clock, random source) and the
//! modem link, which is any byte stream ([`Link`]): a serial port in the
//! station, `tokio::io::duplex` in a test.

pub mod authority;
pub mod context;
mod firmware;
mod line;
mod settings;
pub mod steps;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::at::{AtError, Dialect};
use crate::ca::StationCa;
use crate::ledger::{Claim, ClaimKind, ClaimOutcome, Ledger};
use crate::modem::{CredentialType, FunctionalMode, Modem, ModemFirmware};
use crate::ownership::OwnershipKey;
use crate::record::{DeviceInfo, ReasonCode, RunRecord, Step, StepRecord, TokenRecord};
use crate::text::Escaped;
use crate::token::{self, Expected, Token, TokenKind, Verdict};
use crate::trust::TrustStore;
pub use authority::{
    CollectAuthority, IdentityAuthority, Judgement, KeysAuthority, NrfCloudAuthority, PinAuthority,
    VerifiedBy, Vouch,
};
pub use context::{Clock, FollowingClock, OsRandom, RandomSource, SeededRandom, SystemClock};
pub use settings::{ConfirmUnsupported, DEFAULT_CLAIM_SEC_TAG, PinCose, PlanConfig, Reprovision};

/// A byte stream a modem answers on: a serial port, a pty, an in-memory
/// duplex.
pub trait Link: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Link for T {}

/// Everything a run needs besides the board itself. Shared by all ports.
pub struct PlanContext {
    pub plan: PlanConfig,
    /// Asked in order who vouches for a device's identity.
    pub authorities: Vec<Arc<dyn IdentityAuthority>>,
    /// The trust file's keys (also inside the `keys` authority), kept to
    /// judge a reload against.
    pub trust: Arc<TrustStore>,
    pub ca: Option<Arc<StationCa>>,
    /// PEM of the CA certificate(s) written as the sec_tag's root CA entry.
    pub ca_install_pem: Option<String>,
    /// Validity of device certificates the station CA signs.
    pub certificate_validity: Duration,
    /// The owner's key the claim step writes and signs with (`[claim]`).
    pub ownership: Option<Arc<OwnershipKey>>,
    pub ledger: Arc<dyn Ledger>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
}

/// How the board answered when it arrived: found once per board by the
/// station's presence check, used by the probe step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub dialect: Dialect,
    /// Whether the dialect was detected (rather than configured).
    pub detected: bool,
}

/// Why a run failed: the step, a machine-readable code and a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub step: Step,
    pub code: ReasonCode,
    pub detail: String,
}

impl StepFailure {
    pub fn new(step: Step, code: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            step,
            code,
            detail: detail.into(),
        }
    }

    pub fn from_at(step: Step, err: &AtError) -> Self {
        let code = match err {
            AtError::Timeout { .. } => ReasonCode::Timeout,
            AtError::Error { .. } => ReasonCode::Error,
            // A power-off warning refuses flash writes until it clears:
            // never retried, the run ends (and restore runs).
            AtError::Cme { code: 528, .. } => ReasonCode::PowerWarning,
            AtError::Cme { .. } => ReasonCode::Cme,
            AtError::Cms { .. } => ReasonCode::Cms,
            AtError::Disconnected { .. } => ReasonCode::Disconnected,
            AtError::Overlong { .. } => ReasonCode::Overlong,
            AtError::Malformed { .. } => ReasonCode::Malformed,
            AtError::InvalidArgument { .. } | AtError::TooLong { .. } => ReasonCode::Config,
            AtError::Open { .. } | AtError::Io(_) => ReasonCode::Io,
        };
        Self::new(step, code, err.to_string())
    }

    /// `code: detail`, for logs.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.code, self.detail)
    }
}

/// A token that did not decode, as the step's failure: `malformed` when it
/// holds text no genuine modem writes (control characters), else `decode`.
pub(crate) fn decode_failure(step: Step, error: &token::TokenError) -> StepFailure {
    let code = if error.is_malformed_text() {
        ReasonCode::Malformed
    } else {
        ReasonCode::Decode
    };
    StepFailure::new(step, code, error.to_string())
}

/// Told as steps start and finish: live progress for the station's events.
pub trait PlanObserver: Send + Sync {
    fn step_started(&self, _step: Step) {}
    fn step_finished(&self, _record: &StepRecord) {}
    /// The identify step passed: what the board says it is.
    fn device_identified(&self, _device: &DeviceInfo) {}
    /// A token was judged (decoded, verified, and for an identity token
    /// vouched for or refused by the authorities) in `took`.
    fn token_verified(&self, _kind: TokenKind, _took: Duration) {}
}

/// Times one token's judgement and tells the observer when dropped, so
/// that every way out of a step (pass, refusal, error) is counted.
pub(crate) struct Verifying<'a> {
    observer: &'a dyn PlanObserver,
    kind: TokenKind,
    started: tokio::time::Instant,
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.observer
            .token_verified(self.kind, self.started.elapsed());
    }
}

/// An observer that watches nothing.
impl PlanObserver for () {}

/// What the run learned so far; later steps check against earlier ones.
#[derive(Default)]
pub(crate) struct RunState {
    pub device_uuid: Option<Uuid>,
    /// What `AT+CGMR` said (identify), for the firmware gate.
    pub firmware: Option<ModemFirmware>,
    pub original_mode: Option<FunctionalMode>,
    /// Who vouched for the device, and its key when known.
    pub vouch: Option<Vouch>,
    /// Generated key's SPKI and CSR common name, from a verified keygen token.
    pub keygen: Option<(Vec<u8>, String)>,
    pub certificate_pem: Option<String>,
    /// (credential type, content as written) for the confirm step.
    pub written: Vec<(CredentialType, String)>,
}

impl RunState {
    /// Nobody vouched for the device (`collect`): the station CA signs
    /// nothing for it and nothing is installed (see [`NOT_VOUCHED`]).
    pub fn collected(&self) -> bool {
        self.vouch
            .as_ref()
            .is_some_and(|v| v.by == VerifiedBy::Collect)
    }
}

/// The detail of certify, install and confirm on a board nobody vouched
/// for: the station CA never signs for a board whose identity nobody
/// proved (a forged UUID would get a genuine certificate).
pub(crate) const NOT_VOUCHED: &str = "skipped: nobody vouched for this device (collect), so the \
     station CA signs nothing for it and nothing is installed; its credentials come with the \
     hand-off: a later provisioning run under an authority that vouches, or nRF Cloud's own \
     provisioning once it has claimed the device";

/// One run in progress: what every step's body works with.
pub(crate) struct Run<'a, T> {
    pub ctx: &'a PlanContext,
    pub modem: &'a mut Modem<T>,
    pub record: &'a mut RunRecord,
    pub arrival: Arrival,
    pub state: RunState,
    pub observer: &'a dyn PlanObserver,
}

impl<'a, T: Link> Run<'a, T> {
    /// The AT error as this step's failure.
    pub fn at(step: Step) -> impl Fn(AtError) -> StepFailure {
        move |e| StepFailure::from_at(step, &e)
    }

    /// Start timing the judgement of a token of `kind` (see [`Verifying`]).
    pub fn verifying(&self, kind: TokenKind) -> Verifying<'a> {
        Verifying {
            observer: self.observer,
            kind,
            started: self.ctx.clock.monotonic(),
        }
    }

    /// Decode a token and record it with `verdict_of`'s verdict (what it
    /// decoded as, not what was asked for).
    pub fn record_token(&mut self, text: &str, verdict: &Verdict) {
        self.record.tokens.push(TokenRecord {
            kind: verdict.kind,
            text: text.into(),
            authentic: verdict.authentic(),
            checks_json: serde_json::to_string(&verdict.checks).unwrap_or_default(),
        });
    }

    /// Decode a later token of the device (`%KEYGEN`, `%JWT`), judge it as
    /// the identity's vouch allows (see [`Vouch::judge`]), record it, and
    /// fail the step unless it is accepted. Without a vouch (no `attest` in
    /// the plan) it must be authentic under the trust file.
    pub fn judge(
        &mut self,
        step: Step,
        text: &str,
        expected: &Expected,
    ) -> Result<Token, StepFailure> {
        let verifying = self.verifying(expected.kind());
        let token = token::decode(text).map_err(|e| decode_failure(step, &e))?;
        let (verdict, accepted) = match (&self.state.vouch, self.state.device_uuid) {
            (Some(vouch), Some(uuid)) => vouch.judge(&token, expected, uuid),
            (Some(_), None) => {
                let verdict = token::verify::verify(&token, expected, &TrustStore::new());
                let accepted = verdict.bindings_hold();
                (verdict, accepted)
            }
            (None, _) => {
                let verdict = token::verify::verify(&token, expected, &self.ctx.trust);
                let accepted = verdict.authentic();
                (verdict, accepted)
            }
        };
        drop(verifying);
        self.record_token(text, &verdict);
        if accepted {
            return Ok(token);
        }
        let (code, detail) = authority::explain(&verdict);
        Err(StepFailure::new(step, code, detail))
    }

    /// Record a nonce or jti under the ledger's uniqueness constraint.
    pub async fn claim(
        &mut self,
        step: Step,
        kind: ClaimKind,
        value: &str,
    ) -> Result<(), StepFailure> {
        let claim = Claim {
            kind,
            value: value.to_string(),
            at: self.ctx.clock.now_utc(),
        };
        match self.ctx.ledger.claim(self.record.id, &claim).await {
            Ok(outcome) => claimed(step, kind, outcome),
            Err(e) => Err(line::ledger_failure(step, &e)),
        }
    }
}

/// A claim's outcome as the step sees it: anything but fresh is a replay.
fn claimed(step: Step, kind: ClaimKind, outcome: ClaimOutcome) -> Result<(), StepFailure> {
    match outcome {
        ClaimOutcome::Fresh => Ok(()),
        ClaimOutcome::Replay { first_run } => Err(StepFailure::new(
            step,
            ReasonCode::Replay,
            format!("{} already seen in run {first_run}", kind.describe()),
        )),
        ClaimOutcome::ReplayAt(first) => Err(StepFailure::new(
            step,
            ReasonCode::Replay,
            format!("{} already seen at {first}", kind.describe()),
        )),
    }
}

/// Run the configured plan on `modem`, filling `record` as steps finish.
/// The caller owns `record` so that a run cut short still has its steps.
pub async fn run<T: Link>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    arrival: Arrival,
    record: &mut RunRecord,
    observer: &dyn PlanObserver,
) -> Result<(), StepFailure> {
    let mut run = Run {
        ctx,
        modem,
        record,
        arrival,
        state: RunState::default(),
        observer,
    };
    let mut result = Ok(());
    for &step in &ctx.plan.steps {
        if step == Step::Restore {
            continue; // runs last, whatever happened
        }
        if let Err(failure) = run_step(&mut run, step).await {
            result = Err(failure);
            break;
        }
    }
    if ctx.plan.steps.contains(&Step::Restore) {
        let restored = run_step(&mut run, Step::Restore).await;
        if result.is_ok() {
            result = restored;
        }
    }
    result
}

/// One step with its retries, recorded into `record.steps`.
async fn run_step<T: Link>(run: &mut Run<'_, T>, step: Step) -> Result<(), StepFailure> {
    let observer = run.observer;
    observer.step_started(step);
    let started_at = run.ctx.clock.now_utc();
    let clock = run.ctx.clock.monotonic();
    let mut attempts = 0;
    // A step the board's firmware cannot do is refused before it sends
    // anything.
    let refused = firmware::refuse(step, run.state.firmware.as_ref(), &run.ctx.plan);
    let outcome = loop {
        if let Some(failure) = &refused {
            attempts = 1;
            break Err(failure.clone());
        }
        attempts += 1;
        let outcome = steps::execute(run, step).await;
        match &outcome {
            Err(failure) if failure.code.retryable() && attempts <= run.ctx.plan.retries => {
                warn!(%step, attempt = attempts, reason = %Escaped(&failure.reason()), "step failed, retrying");
            }
            _ => break outcome,
        }
    };
    let duration = clock.elapsed();
    let (passed, detail) = match &outcome {
        Ok(detail) => (true, detail.clone()),
        Err(failure) => (false, failure.reason()),
    };
    debug!(%step, passed, elapsed_ms = duration.as_millis() as u64, detail = %Escaped(&detail), "step done");
    let record = StepRecord {
        name: step,
        started_at,
        duration,
        passed,
        attempts,
        detail,
    };
    observer.step_finished(&record);
    if step == Step::Identify && passed {
        observer.device_identified(&run.record.device);
    }
    run.record.steps.push(record);
    outcome.map(|_| ())
}
