//! The domain's records: what a run did and why it ended as it did. Plain
//! values shared by the plan (which fills them), the ledger (which keeps
//! them), the station (which reports them) and the exports. No I/O here.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use strum::VariantArray;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::token::{CheckName, TokenKind};

/// A run's id in the station's own ledger.
pub type RunId = i64;

/// One step of the provisioning plan. The rules of each step (what must
/// come before it) live with its body in `plan::steps`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Deserialize,
    serde::Serialize,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Step {
    Probe,
    Identify,
    Offline,
    Attest,
    /// `%CLAIMTOKEN` for the owner's ownership key (optional: not in the
    /// default plan).
    Claim,
    Keygen,
    Certify,
    Install,
    Confirm,
    Jwt,
    Restore,
}

impl Step {
    /// Every step, in plan order (the order of the variants); the default
    /// plan is every step but `claim` ([`Step::default_plan`]).
    pub const ALL: &[Step] = <Step as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The plan a config without `plan.steps` runs: every step but the
    /// optional `claim` (it needs the `[claim]` section's ownership key).
    pub fn default_plan() -> Vec<Step> {
        Step::ALL
            .iter()
            .copied()
            .filter(|s| *s != Step::Claim)
            .collect()
    }

    /// The step names, quoted, for error messages.
    pub fn list() -> String {
        Step::ALL
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Step {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Step::ALL
            .iter()
            .copied()
            .find(|step| step.as_str() == s)
            .ok_or_else(|| format!("unknown step `{s}`, expected one of {}", Step::list()))
    }
}

/// Why a run failed, as a machine-readable code. Stored as `reason_code`
/// next to the human `reason`; the README's step table lists them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReasonCode {
    // The AT exchange.
    /// No final result before the deadline.
    Timeout,
    /// The modem answered `ERROR`.
    Error,
    /// The modem answered `+CME ERROR: <n>`.
    Cme,
    /// The modem answered `+CMS ERROR: <n>`.
    Cms,
    /// The board went away (unplugged, port closed).
    Disconnected,
    /// An answer longer than any real one.
    Overlong,
    /// An answer that does not parse.
    Malformed,
    /// An I/O error on the port.
    Io,
    /// The station's configuration cannot do this step.
    Config,
    /// The board's IMEI is not 15 digits with a valid Luhn check digit.
    Imei,
    /// The board's modem firmware cannot do this step (or is older than
    /// `plan.min_firmware`); nothing was sent.
    FirmwareUnsupported,
    /// `+CME ERROR: 528`: a `%XPOFWARN` power-off warning is active and the
    /// modem refuses flash writes; never retried.
    PowerWarning,
    // Tokens.
    /// Not a decodable token.
    Decode,
    /// A token of another kind than the command returns.
    Kind,
    MessageType,
    KeyTrusted,
    Algorithm,
    KeyId,
    Signature,
    DeviceUuid,
    Nonce,
    SecTag,
    Digest,
    CsrSignature,
    CommonName,
    /// A JWT's `iat`/`exp` missing, stale, or not what was asked.
    JwtTime,
    /// A claim token's body is not the layout this station assumes.
    Layout,
    JwtIssuer,
    /// A JWT's `sub` is not the challenge this run asked it to carry.
    JwtChallenge,
    /// A JWT's `aud` is not the configured `plan.jwt_audience`.
    JwtAudience,
    /// A JWT without a `jti` claim (it cannot be checked for replay).
    Jti,
    /// A nonce, `jti` or token seen before.
    Replay,
    // The certificate and its installation.
    /// The station CA could not sign.
    Ca,
    /// A `%CMNG` list digest differs from what was written.
    Mismatch,
    /// A written credential is not listed.
    Missing,
    // Identity authorities.
    /// nRF Cloud refused the identity token.
    CloudRejected,
    /// nRF Cloud did not answer (timeout, refused connection, 5xx).
    CloudUnreachable,
    /// The device UUID answered with another key than the one pinned.
    IdentityChanged,
    /// The key the device answered with is pinned for another device UUID.
    KeyReused,
    /// `pin`: the `%ATTESTTOKEN` or `%KEYGEN` signature does not verify under
    /// the pinned key with this station's COSE signing input.
    CoseUnverified,
    // The line's shared ledger.
    /// The shared ledger could not be reached, and it must make the claims.
    LedgerUnreachable,
    /// The same device UUID is running on another port of the line now.
    DuplicateIdentity,
    /// The device already passed on the line and the policy refuses again.
    Reprovision,
    /// The shared ledger found, after the run, a token it had seen elsewhere.
    Conflict,
    // The station.
    /// The run could not be recorded.
    Store,
    /// The station stopped before the run finished.
    Interrupted,
    /// A code this version does not know (read from a newer database).
    Other,
}

impl ReasonCode {
    pub const ALL: &[ReasonCode] = <ReasonCode as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The code stored as `text`; unknown codes (a newer database) read as
    /// [`ReasonCode::Other`], never as a failure to read the run.
    pub fn parse(text: &str) -> ReasonCode {
        text.parse().unwrap_or(ReasonCode::Other)
    }

    /// Whether trying the step again could honestly succeed. Verification
    /// failures are final: retrying a forged token until it passes would
    /// make the verdict optimistic.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ReasonCode::Timeout | ReasonCode::Malformed | ReasonCode::Overlong
        )
    }
}

impl From<CheckName> for ReasonCode {
    fn from(check: CheckName) -> Self {
        match check {
            CheckName::Kind => ReasonCode::Kind,
            CheckName::MessageType => ReasonCode::MessageType,
            CheckName::KeyTrusted => ReasonCode::KeyTrusted,
            CheckName::Algorithm => ReasonCode::Algorithm,
            CheckName::KeyId => ReasonCode::KeyId,
            CheckName::Signature => ReasonCode::Signature,
            CheckName::DeviceUuid => ReasonCode::DeviceUuid,
            CheckName::Nonce => ReasonCode::Nonce,
            CheckName::SecTag => ReasonCode::SecTag,
            CheckName::Digest => ReasonCode::Digest,
            CheckName::CsrSignature => ReasonCode::CsrSignature,
            CheckName::CommonName => ReasonCode::CommonName,
            CheckName::JwtTime => ReasonCode::JwtTime,
            CheckName::JwtIssuer => ReasonCode::JwtIssuer,
            CheckName::JwtChallenge => ReasonCode::JwtChallenge,
            CheckName::JwtAudience => ReasonCode::JwtAudience,
            // The device signs with another key than the one pinned.
            CheckName::PinnedSignature => ReasonCode::IdentityChanged,
            CheckName::Layout => ReasonCode::Layout,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who vouched for a device's identity (recorded as `verified_by`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum VerifiedBy {
    /// The station's trust file of device identity public keys.
    Keys,
    /// nRF Cloud accepted the identity token (a claim dry run).
    Nrfcloud,
    /// The same key as the device showed when first seen (trust on first
    /// sight) — not proof that Nordic made the chip.
    Pin,
    /// Nobody: the run checked what it could without a key and collected
    /// the tokens to be vouched for later.
    Collect,
}

impl VerifiedBy {
    pub const ALL: &[VerifiedBy] = <VerifiedBy as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl fmt::Display for VerifiedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The run's globally unique id: the same in every ledger it reaches.
    pub uid: Uuid,
    pub station_id: String,
    pub port: String,
    pub started_at: OffsetDateTime,
    /// Which order, lot, operator, product and fixture the board ran under.
    pub trace: Traceability,
}

/// What a factory's MES needs to trace a board: the work order and lot it
/// belonged to, who handled it, the product (part number and revision) and
/// the fixture (per port). Taken when the run begins; each field is `null`
/// when unset. At the top level of a record's JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Traceability {
    pub work_order: Option<String>,
    pub lot: Option<String>,
    pub operator: Option<String>,
    pub product: Option<String>,
    pub fixture: Option<String>,
}

/// The station-wide traceability values an operator sets while the station
/// runs (the fixture is a port's, from the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shift {
    pub work_order: Option<String>,
    pub lot: Option<String>,
    pub operator: Option<String>,
    pub product: Option<String>,
}

/// A field of [`Shift`] by name (`[traceability] require`, messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShiftField {
    WorkOrder,
    Lot,
    Operator,
    Product,
}

impl ShiftField {
    pub const ALL: [ShiftField; 4] = [
        ShiftField::WorkOrder,
        ShiftField::Lot,
        ShiftField::Operator,
        ShiftField::Product,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShiftField::WorkOrder => "work_order",
            ShiftField::Lot => "lot",
            ShiftField::Operator => "operator",
            ShiftField::Product => "product",
        }
    }

    pub fn parse(text: &str) -> Option<ShiftField> {
        ShiftField::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

impl fmt::Display for ShiftField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The longest value a traceability field takes (a barcode, a name).
pub const MAX_SHIFT_VALUE: usize = 128;

impl Shift {
    pub fn get(&self, field: ShiftField) -> Option<&str> {
        match field {
            ShiftField::WorkOrder => self.work_order.as_deref(),
            ShiftField::Lot => self.lot.as_deref(),
            ShiftField::Operator => self.operator.as_deref(),
            ShiftField::Product => self.product.as_deref(),
        }
    }

    fn slot(&mut self, field: ShiftField) -> &mut Option<String> {
        match field {
            ShiftField::WorkOrder => &mut self.work_order,
            ShiftField::Lot => &mut self.lot,
            ShiftField::Operator => &mut self.operator,
            ShiftField::Product => &mut self.product,
        }
    }

    /// This shift with `update`'s fields applied: a field it does not
    /// name keeps its value, an empty one clears it. Values are trimmed; a
    /// control character (a scanner's stray Tab or Escape) or an overlong
    /// value is refused, naming the field.
    pub fn updated(&self, update: &Shift) -> Result<Shift, String> {
        let mut next = self.clone();
        for field in ShiftField::ALL {
            let Some(value) = update.get(field) else {
                continue;
            };
            let value = value.trim();
            if let Some(c) = value.chars().find(|c| c.is_control()) {
                return Err(format!(
                    "{field}: a control character (U+{:04X}) is not allowed",
                    u32::from(c)
                ));
            }
            if value.chars().count() > MAX_SHIFT_VALUE {
                return Err(format!("{field}: longer than {MAX_SHIFT_VALUE} characters"));
            }
            *next.slot(field) = (!value.is_empty()).then(|| value.to_string());
        }
        Ok(next)
    }

    /// The fields of `required` this shift has no value for.
    pub fn missing(&self, required: &[ShiftField]) -> Vec<ShiftField> {
        required
            .iter()
            .copied()
            .filter(|f| self.get(*f).is_none())
            .collect()
    }

    /// The traceability of a run on a port with `fixture`.
    pub fn trace(&self, fixture: Option<String>) -> Traceability {
        Traceability {
            work_order: self.work_order.clone(),
            lot: self.lot.clone(),
            operator: self.operator.clone(),
            product: self.product.clone(),
            fixture,
        }
    }
}

/// One change of the station-wide values, as recorded: who, when, old → new.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShiftChange {
    #[serde(with = "ser::time")]
    pub at: OffsetDateTime,
    /// Who made it: the role of the API request (`operator`, `engineer`),
    /// or `config` for the values the config gives at start.
    pub by: String,
    pub old: Shift,
    pub new: Shift,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    InFlight,
    Passed,
    Failed,
    Interrupted,
    /// Every step ran and every check that needs no key passed, but nobody
    /// vouched for the identity: the tokens are kept to be claimed later.
    /// Never a pass.
    Collected,
}

impl Outcome {
    pub const ALL: &[Outcome] = <Outcome as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One provisioning run. Times are stored with microsecond precision.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    /// Globally unique (see [`RunStart::uid`]).
    #[serde(with = "ser::uuid")]
    pub uid: Uuid,
    pub station_id: String,
    pub port: String,
    #[serde(with = "ser::time")]
    pub started_at: OffsetDateTime,
    #[serde(with = "ser::opt_time")]
    pub finished_at: Option<OffsetDateTime>,
    pub outcome: Outcome,
    /// The step that failed; `None` for a pass, and for a failure outside
    /// the plan (the run could not be recorded).
    pub failed_step: Option<Step>,
    /// Why the run failed, for machines.
    pub reason_code: Option<ReasonCode>,
    /// Why the run failed, in words.
    pub reason: Option<String>,
    /// Who vouched for the device's identity, when someone did.
    pub verified_by: Option<VerifiedBy>,
    pub device: DeviceInfo,
    pub steps: Vec<StepRecord>,
    pub tokens: Vec<TokenRecord>,
    pub artifacts: Vec<Artifact>,
    /// When retention dropped this run's steps, tokens and artifacts (they
    /// read empty since); absent for a run kept in full.
    #[serde(
        default,
        with = "ser::opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub compacted_at: Option<OffsetDateTime>,
    /// Work order, lot, operator, product, fixture (top-level fields).
    #[serde(flatten)]
    pub trace: Traceability,
}

impl RunRecord {
    /// A run that has just begun.
    pub fn begun(id: RunId, start: &RunStart) -> Self {
        RunRecord {
            id,
            uid: start.uid,
            station_id: start.station_id.clone(),
            port: start.port.clone(),
            started_at: start.started_at,
            finished_at: None,
            outcome: Outcome::InFlight,
            failed_step: None,
            reason_code: None,
            reason: None,
            verified_by: None,
            device: DeviceInfo::default(),
            steps: Vec::new(),
            tokens: Vec::new(),
            artifacts: Vec::new(),
            trace: start.trace.clone(),
            compacted_at: None,
        }
    }

    /// End the run as failed (or interrupted) with a code and the words.
    pub fn fail(
        &mut self,
        outcome: Outcome,
        step: Option<Step>,
        code: ReasonCode,
        reason: impl Into<String>,
    ) {
        self.outcome = outcome;
        self.failed_step = step;
        self.reason_code = Some(code);
        self.reason = Some(reason.into());
    }

    /// The outcome of a run whose every step passed: `passed`, or
    /// `collected` when nobody vouched for the device (`collect`).
    pub fn success(&self) -> Outcome {
        if self.verified_by == Some(VerifiedBy::Collect) {
            Outcome::Collected
        } else {
            Outcome::Passed
        }
    }

    /// This run as it is recorded when its commit failed for `why` and is
    /// retried later: what really happened (the steps, the certificate
    /// installed), but never as passed — a pass the station could not make
    /// durable in time is a failure with reason `store`. A run that failed
    /// on its own keeps its own reason.
    pub fn uncommitted(&self, why: &str) -> RunRecord {
        let mut record = self.clone();
        if record.outcome == Outcome::Passed || record.outcome == Outcome::Collected {
            record.fail(
                Outcome::Failed,
                None,
                ReasonCode::Store,
                format!(
                    "every step passed, but the record could not be committed when the run ended ({why}); committed later"
                ),
            );
        }
        record
    }

    /// `code: words`, as one line for people.
    pub fn reason_line(&self) -> Option<String> {
        match (self.reason_code, &self.reason) {
            (Some(code), Some(text)) => Some(format!("{code}: {text}")),
            (Some(code), None) => Some(code.to_string()),
            (None, Some(text)) => Some(text.clone()),
            (None, None) => None,
        }
    }
}

/// A run as a viewer of the station's HTTP API sees it: everything but
/// what would let someone claim or pose as the device, i.e. no token text
/// (the `%ATTESTTOKEN` nRF Cloud accepts for claiming a device, the JWTs)
/// and no CSR or certificate. The fields are listed here, not copied: a
/// fact added to [`RunRecord`] stays out of the summary until someone
/// decides a viewer may see it.
#[derive(Debug, serde::Serialize)]
pub struct RunSummary<'a> {
    pub id: RunId,
    #[serde(with = "ser::uuid")]
    pub uid: Uuid,
    pub station_id: &'a str,
    pub port: &'a str,
    #[serde(with = "ser::time")]
    pub started_at: OffsetDateTime,
    #[serde(with = "ser::opt_time")]
    pub finished_at: Option<OffsetDateTime>,
    pub outcome: Outcome,
    pub failed_step: Option<Step>,
    pub reason_code: Option<ReasonCode>,
    pub reason: Option<&'a str>,
    pub verified_by: Option<VerifiedBy>,
    pub device: &'a DeviceInfo,
    pub steps: &'a [StepRecord],
    pub tokens: Vec<TokenSummary<'a>>,
    pub artifacts: Vec<ArtifactSummary>,
    #[serde(with = "ser::opt_time", skip_serializing_if = "Option::is_none")]
    pub compacted_at: Option<OffsetDateTime>,
    #[serde(flatten)]
    pub trace: &'a Traceability,
}

/// A token without its text.
#[derive(Debug, serde::Serialize)]
pub struct TokenSummary<'a> {
    pub kind: TokenKind,
    pub authentic: bool,
    pub checks_json: &'a str,
}

/// An artifact without its content.
#[derive(Debug, serde::Serialize)]
pub struct ArtifactSummary {
    pub kind: ArtifactKind,
    pub sec_tag: Option<u32>,
}

impl RunRecord {
    /// This run as JSON, appended to `out`: in full (token text, CSR,
    /// certificates) or as its [`RunSummary`]. The one serialisation the
    /// HTTP API and the downstream sinks share.
    pub fn write_json(&self, out: &mut Vec<u8>, full: bool) {
        // Writing these types into a Vec cannot fail.
        let _ = if full {
            serde_json::to_writer(out, self)
        } else {
            serde_json::to_writer(out, &self.summary())
        };
    }

    /// This run without token text and certificates ([`RunSummary`]).
    pub fn summary(&self) -> RunSummary<'_> {
        RunSummary {
            id: self.id,
            uid: self.uid,
            station_id: &self.station_id,
            port: &self.port,
            started_at: self.started_at,
            finished_at: self.finished_at,
            outcome: self.outcome,
            failed_step: self.failed_step,
            reason_code: self.reason_code,
            reason: self.reason.as_deref(),
            verified_by: self.verified_by,
            device: &self.device,
            steps: &self.steps,
            tokens: self
                .tokens
                .iter()
                .map(|t| TokenSummary {
                    kind: t.kind,
                    authentic: t.authentic,
                    checks_json: &t.checks_json,
                })
                .collect(),
            artifacts: self
                .artifacts
                .iter()
                .map(|a| ArtifactSummary {
                    kind: a.kind,
                    sec_tag: a.sec_tag,
                })
                .collect(),
            compacted_at: self.compacted_at,
            trace: &self.trace,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub name: Step,
    #[serde(with = "ser::time")]
    pub started_at: OffsetDateTime,
    /// Serialised as `duration_ms` (float, microsecond resolution).
    #[serde(rename = "duration_ms", with = "ser::millis")]
    pub duration: Duration,
    pub passed: bool,
    pub attempts: u32,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenRecord {
    /// What the token decoded as (not what its command should have returned).
    pub kind: TokenKind,
    /// The token as the modem printed it.
    pub text: String,
    pub authentic: bool,
    pub checks_json: String,
}

/// What a run produced besides tokens.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ArtifactKind {
    /// The CSR the modem generated (PEM).
    Csr,
    /// The device certificate the station CA signed (PEM).
    DeviceCertificate,
    /// The owner's ES256 signature over the device claim token text (as
    /// the modem printed it, without quotes), made with the ownership
    /// private key: base64url of r||s.
    ClaimSignature,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Artifact {
    pub kind: ArtifactKind,
    pub sec_tag: Option<u32>,
    /// PEM (a claim signature: base64url, see [`ArtifactKind::ClaimSignature`]).
    pub content: String,
}

/// serde helpers: RFC 3339 times, hyphenated UUIDs, durations in ms.
pub mod ser {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn rfc3339(t: &::time::OffsetDateTime) -> String {
        t.format(&::time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.unix_timestamp().to_string())
    }

    fn parse_rfc3339<E: serde::de::Error>(text: &str) -> Result<::time::OffsetDateTime, E> {
        ::time::OffsetDateTime::parse(text, &::time::format_description::well_known::Rfc3339)
            .map_err(|e| E::custom(format!("not an RFC 3339 time {text:?}: {e}")))
    }

    pub mod time {
        use super::*;
        pub fn serialize<S: Serializer>(
            t: &::time::OffsetDateTime,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            s.serialize_str(&rfc3339(t))
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<::time::OffsetDateTime, D::Error> {
            parse_rfc3339(&String::deserialize(d)?)
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
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<::time::OffsetDateTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|t| parse_rfc3339(&t))
                .transpose()
        }
    }

    pub mod uuid {
        use super::*;
        pub fn serialize<S: Serializer>(u: &::uuid::Uuid, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&u.hyphenated())
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<::uuid::Uuid, D::Error> {
            ::uuid::Uuid::deserialize(d)
        }
    }

    pub mod opt_uuid {
        use super::*;
        pub fn serialize<S: Serializer>(u: &Option<::uuid::Uuid>, s: S) -> Result<S::Ok, S::Error> {
            match u {
                Some(u) => s.collect_str(&u.hyphenated()),
                None => s.serialize_none(),
            }
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<::uuid::Uuid>, D::Error> {
            Option::<::uuid::Uuid>::deserialize(d)
        }
    }

    pub mod millis {
        use super::*;
        pub fn serialize<S: Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(d.as_micros() as f64 / 1000.0)
        }
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<std::time::Duration, D::Error> {
            let ms = f64::deserialize(d)?;
            std::time::Duration::try_from_secs_f64(ms / 1000.0)
                .map_err(|e| serde::de::Error::custom(format!("duration {ms} ms: {e}")))
        }
    }
}
