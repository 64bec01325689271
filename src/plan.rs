//! The provisioning plan: the configured steps, run in order on one board,
//! each recorded with its timing and outcome into a [`RunRecord`].
//!
//! The plan decides; the modem talks; the verifier judges; the store
//! remembers. A device passes only when every step passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};
use uuid::Uuid;

use crate::at::{AtError, DialectChoice};
use crate::ca::StationCa;
use crate::config::{PlanConfig, Step, Timeouts};
use crate::modem::{
    CredentialType, FunctionalMode, JwtRequest, KeyFormat, Modem, expected_sha256, pem_crlf,
};
use crate::store::{Artifact, NonceClaim, RunRecord, StepRecord, Store, TokenRecord};
use crate::token::verify::{Verdict, verify};
use crate::token::{
    self, Expected, Freshness, IdentityExpected, JwtExpected, KeygenExpected, Token,
};
use crate::trust::TrustStore;

/// Everything a run needs besides the board itself. Shared by all ports.
pub struct PlanContext {
    pub plan: PlanConfig,
    pub timeouts: Timeouts,
    pub dialect: DialectChoice,
    pub trust: Arc<TrustStore>,
    pub ca: Option<Arc<StationCa>>,
    /// PEM of the CA certificate(s) written as the sec_tag's root CA entry.
    pub ca_install_pem: Option<String>,
    pub store: Arc<Store>,
    /// Validity of device certificates the station CA signs.
    pub certificate_validity: Duration,
}

/// Why a run failed: the step, a short machine-readable reason code and a
/// human-readable detail. Recorded as `failed_step` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepFailure {
    pub step: Step,
    pub code: String,
    pub detail: String,
}

impl StepFailure {
    fn new(step: Step, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            step,
            code: code.into(),
            detail: detail.into(),
        }
    }

    fn from_at(step: Step, err: &AtError) -> Self {
        let code = match err {
            AtError::Timeout { .. } => "timeout",
            AtError::Error { .. } => "error",
            AtError::Cme { .. } => "cme",
            AtError::Cms { .. } => "cms",
            AtError::Disconnected { .. } => "disconnected",
            AtError::Overlong { .. } => "overlong",
            AtError::Malformed { .. } => "malformed",
            AtError::InvalidArgument { .. } => "config",
            AtError::Open { .. } | AtError::Io(_) => "io",
        };
        Self::new(step, code, err.to_string())
    }

    /// The value recorded in the `reason` column: `code: detail`.
    pub fn reason(&self) -> String {
        format!("{}: {}", self.code, self.detail)
    }

    /// Whether trying the step again could honestly succeed. Verification
    /// failures are final: retrying a forged token until it passes would
    /// make the verdict optimistic.
    fn retryable(&self) -> bool {
        matches!(self.code.as_str(), "timeout" | "malformed" | "overlong")
    }
}

/// What the run learned so far; later steps check against earlier ones.
#[derive(Default)]
struct RunState {
    device_uuid: Option<Uuid>,
    original_mode: Option<FunctionalMode>,
    /// Generated key's SPKI and CSR common name, from a verified keygen token.
    keygen: Option<(Vec<u8>, String)>,
    certificate_pem: Option<String>,
    /// (credential type, content as written) for the confirm step.
    written: Vec<(CredentialType, String)>,
}

/// Called after each step with its record: live progress for the operator.
pub type StepObserver<'a> = &'a (dyn Fn(&StepRecord) + Send + Sync);

/// Run the configured plan on `modem`, filling `record` as steps finish.
/// The caller owns `record` so that a run cut short still has its steps.
pub async fn run<T>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    record: &mut RunRecord,
    on_step: StepObserver<'_>,
) -> Result<(), StepFailure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut state = RunState::default();
    let mut result = Ok(());
    for &step in &ctx.plan.steps {
        if step == Step::Restore {
            continue; // runs last, whatever happened
        }
        let outcome = run_step(ctx, modem, record, &mut state, step).await;
        if let Some(done) = record.steps.last() {
            on_step(done);
        }
        if let Err(failure) = outcome {
            result = Err(failure);
            break;
        }
    }
    if ctx.plan.steps.contains(&Step::Restore) {
        let restored = run_step(ctx, modem, record, &mut state, Step::Restore).await;
        if let Some(done) = record.steps.last() {
            on_step(done);
        }
        if result.is_ok() {
            result = restored;
        }
    }
    result
}

/// One step with its retries, recorded into `record.steps`.
async fn run_step<T>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    record: &mut RunRecord,
    state: &mut RunState,
    step: Step,
) -> Result<(), StepFailure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started_at = OffsetDateTime::now_utc();
    let clock = Instant::now();
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        let outcome = execute(ctx, modem, record, state, step).await;
        match &outcome {
            Err(failure) if failure.retryable() && attempts <= ctx.plan.retries => {
                warn!(%step, attempt = attempts, reason = %failure.reason(), "step failed, retrying");
            }
            _ => break outcome,
        }
    };
    let (passed, detail) = match &outcome {
        Ok(detail) => (true, detail.clone()),
        Err(failure) => (false, failure.reason()),
    };
    info!(%step, passed, elapsed_ms = clock.elapsed().as_millis() as u64, %detail, "step done");
    record.steps.push(StepRecord {
        name: step.to_string(),
        started_at,
        duration: clock.elapsed(),
        passed,
        attempts,
        detail,
    });
    outcome.map(|_| ())
}

/// The body of each step. Returns a short detail for the record.
async fn execute<T>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    record: &mut RunRecord,
    state: &mut RunState,
    step: Step,
) -> Result<String, StepFailure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let at = |e: AtError| StepFailure::from_at(step, &e);
    match step {
        Step::Probe => {
            let dialect = match ctx.dialect {
                DialectChoice::Auto => modem.client().detect_dialect().await.map_err(at)?,
                DialectChoice::Raw => crate::at::Dialect::Raw,
                DialectChoice::Shell => crate::at::Dialect::Shell,
            };
            modem.client().set_dialect(dialect);
            modem.enable_cmee().await.map_err(at)?;
            Ok(format!("dialect {dialect:?}"))
        }
        Step::Identify => {
            let id = modem.identify().await.map_err(at)?;
            state.device_uuid = id.device_uuid;
            record.device.device_uuid = id.device_uuid;
            if let Some(uuid) = id.device_uuid {
                tracing::Span::current().record("device", tracing::field::display(uuid));
            }
            record.device.imei = Some(id.imei.clone());
            record.device.model = Some(id.model.clone());
            record.device.firmware = Some(id.firmware.clone());
            record.device.firmware_uuid = id.firmware_uuid;
            record.device.hw_version = id.hw_version.clone();
            Ok(format!(
                "imei {} uuid {} fw {}",
                id.imei,
                id.device_uuid.map_or_else(|| "-".into(), |u| u.to_string()),
                id.firmware
            ))
        }
        Step::Offline => {
            let mode = modem.functional_mode().await.map_err(at)?;
            state.original_mode = Some(mode);
            if mode != FunctionalMode::Offline && mode != FunctionalMode::Off {
                modem
                    .set_functional_mode(FunctionalMode::Offline)
                    .await
                    .map_err(at)?;
            }
            Ok(format!("was {mode:?}"))
        }
        Step::Attest => {
            let mut challenge = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut challenge);
            let text = modem.attest(Some(challenge)).await.map_err(at)?;
            let expected = Expected::Identity(IdentityExpected {
                freshness: Freshness::Challenge(challenge),
                device_uuid: state.device_uuid,
            });
            let Token::Identity(identity) = judge(ctx, step, record, &text, &expected)? else {
                return Err(not_judged(step));
            };
            claim(ctx, step, record, "attest", &hex::encode(identity.nonce)).await?;
            state.device_uuid = Some(identity.device_uuid);
            record.device.device_uuid = Some(identity.device_uuid);
            tracing::Span::current()
                .record("device", tracing::field::display(identity.device_uuid));
            // From the token as decoded: what the modem proved, not what was asked.
            Ok(format!(
                "identity token of {}, nonce {} = challenge",
                identity.device_uuid,
                hex::encode(identity.nonce)
            ))
        }
        Step::Keygen => keygen(ctx, modem, record, state).await,
        Step::Certify => {
            let (ca, (spki, common_name)) = match (&ctx.ca, &state.keygen) {
                (Some(ca), Some(keygen)) => (ca, keygen),
                _ => {
                    return Err(StepFailure::new(
                        step,
                        "config",
                        "certify needs a CA and a verified keygen step",
                    ));
                }
            };
            let cert = ca
                .sign_device(
                    common_name,
                    spki,
                    crate::ca::Issuance::now(ctx.certificate_validity),
                )
                .map_err(|e| StepFailure::new(step, "ca", e.to_string()))?;
            record.artifacts.push(Artifact {
                kind: "device_certificate".into(),
                sec_tag: Some(ctx.plan.sec_tag),
                content: cert.pem.clone(),
            });
            state.certificate_pem = Some(cert.pem);
            Ok(format!("CN={common_name}"))
        }
        Step::Install => {
            let mut written = Vec::new();
            if let Some(ca_pem) = &ctx.ca_install_pem {
                written.push((CredentialType::RootCa, pem_crlf(ca_pem)));
            }
            if let Some(cert) = &state.certificate_pem {
                written.push((CredentialType::ClientCert, pem_crlf(cert)));
            }
            if written.is_empty() {
                return Err(StepFailure::new(step, "config", "nothing to install"));
            }
            for (kind, content) in &written {
                modem
                    .cmng_write(ctx.plan.sec_tag, *kind, content)
                    .await
                    .map_err(at)?;
            }
            let names: Vec<String> = written.iter().map(|(k, _)| format!("{k:?}")).collect();
            state.written = written;
            Ok(format!("sec_tag {} {}", ctx.plan.sec_tag, names.join(",")))
        }
        Step::Confirm => {
            let listed = modem.cmng_list(Some(ctx.plan.sec_tag)).await.map_err(at)?;
            let dialect = modem.client().dialect();
            for (kind, content) in &state.written {
                let expected = expected_sha256(content, dialect);
                let found = listed
                    .iter()
                    .find(|e| e.sec_tag == ctx.plan.sec_tag && e.kind == *kind);
                match found {
                    Some(entry) if entry.sha256.eq_ignore_ascii_case(&expected) => {}
                    Some(entry) => {
                        return Err(StepFailure::new(
                            step,
                            "mismatch",
                            format!("{kind:?} sha256 {} != written {expected}", entry.sha256),
                        ));
                    }
                    None => {
                        return Err(StepFailure::new(
                            step,
                            "missing",
                            format!("{kind:?} not listed in sec_tag {}", ctx.plan.sec_tag),
                        ));
                    }
                }
            }
            Ok(format!("{} entries match", state.written.len()))
        }
        Step::Jwt => {
            let now = OffsetDateTime::now_utc();
            modem.set_clock(now).await.map_err(at)?;
            let request = JwtRequest {
                exp_delta: Some(ctx.plan.jwt_exp_delta),
                audience: ctx.plan.jwt_audience.clone(),
                ..Default::default()
            };
            let text = modem.jwt(&request).await.map_err(at)?;
            let expected = Expected::Jwt(JwtExpected {
                device_uuid: state.device_uuid,
                now: now.unix_timestamp(),
                issuer: None,
            });
            let Token::Jwt(jwt) = judge(ctx, step, record, &text, &expected)? else {
                return Err(not_judged(step));
            };
            let jti = jwt.claim_str("jti").unwrap_or("");
            if jti.is_empty() {
                return Err(StepFailure::new(step, "jti", "JWT has no jti claim"));
            }
            claim(ctx, step, record, "jwt_jti", jti).await?;
            Ok(format!(
                "JWT of {}, jti {jti}",
                jwt.claim_str("iss").unwrap_or("-")
            ))
        }
        Step::Restore => {
            let target = match state.original_mode {
                Some(
                    mode @ (FunctionalMode::On | FunctionalMode::Off | FunctionalMode::Offline),
                ) => mode,
                _ => return Ok("nothing to restore".into()),
            };
            modem.set_functional_mode(target).await.map_err(at)?;
            Ok(format!("mode {target:?}"))
        }
    }
}

async fn keygen<T>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    record: &mut RunRecord,
    state: &mut RunState,
) -> Result<String, StepFailure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    let step = Step::Keygen;
    let at = |e: AtError| StepFailure::from_at(step, &e);
    let sec_tag = ctx.plan.sec_tag;
    let uuid = state.device_uuid.map(|u| u.to_string()).unwrap_or_default();
    let imei = record.device.imei.clone().unwrap_or_default();
    let attributes = ctx.plan.render_attributes(&uuid, &imei);
    if ctx.plan.delete_existing_key {
        delete_key(modem, sec_tag).await.map_err(at)?;
    }
    let key_usage = ctx.plan.key_usage.as_deref();
    let text = match modem
        .keygen(sec_tag, KeyFormat::Csr, Some(&attributes), key_usage)
        .await
    {
        // 519: the tag already holds a key; Nordic's client deletes and retries.
        Err(AtError::Cme { code: 519, .. }) => {
            delete_key(modem, sec_tag).await.map_err(at)?;
            modem
                .keygen(sec_tag, KeyFormat::Csr, Some(&attributes), key_usage)
                .await
                .map_err(at)?
        }
        other => other.map_err(at)?,
    };
    let common_name = common_name_of(&attributes);
    let expected = Expected::Keygen(KeygenExpected {
        format: KeyFormat::Csr,
        sec_tag: Some(sec_tag),
        device_uuid: state.device_uuid,
        common_name: common_name.clone(),
    });
    let Token::Keygen(keygen) = judge(ctx, step, record, &text, &expected)? else {
        return Err(not_judged(step));
    };
    claim(ctx, step, record, "keygen", &hex::encode(keygen.nonce)).await?;
    record.artifacts.push(Artifact {
        kind: "csr".into(),
        sec_tag: Some(sec_tag),
        content: der::pem::encode_string(
            "CERTIFICATE REQUEST",
            der::pem::LineEnding::LF,
            &keygen.der,
        )
        .unwrap_or_default(),
    });
    let cn = keygen
        .csr
        .as_ref()
        .and_then(|c| c.common_name.clone())
        .or(common_name)
        .unwrap_or_else(|| keygen.device_uuid.to_string());
    state.keygen = Some((keygen.public_key_spki.clone(), cn));
    Ok(format!(
        "CSR for sec_tag {} bound to {}, digest {}",
        keygen.sec_tag,
        keygen.device_uuid,
        hex::encode(keygen.digest)
    ))
}

/// Delete the client key of `sec_tag`; a missing key (513) is fine.
async fn delete_key<T>(modem: &mut Modem<T>, sec_tag: u32) -> Result<(), AtError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    match modem.cmng_delete(sec_tag, CredentialType::ClientKey).await {
        Err(AtError::Cme { code: 513, .. }) => Ok(()),
        other => other,
    }
}

/// Decode a token, verify it against what its command must show, record it
/// as what it decoded as, and fail the step unless it is authentic (with
/// the decisive failed check as reason code).
fn judge(
    ctx: &PlanContext,
    step: Step,
    record: &mut RunRecord,
    text: &str,
    expected: &Expected,
) -> Result<Token, StepFailure> {
    let token = token::decode(text).map_err(|e| StepFailure::new(step, "decode", e.to_string()))?;
    let verdict: Verdict = verify(&token, expected, &ctx.trust);
    let authentic = verdict.authentic();
    record.tokens.push(TokenRecord {
        kind: verdict.kind,
        text: text.into(),
        authentic,
        checks_json: serde_json::to_string(&verdict.checks).unwrap_or_default(),
    });
    if authentic {
        return Ok(token);
    }
    let failed: Vec<String> = verdict
        .failures()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    let code = verdict
        .decisive_failure()
        .map_or("verify", |c| c.name.as_str());
    Err(StepFailure::new(step, code, failed.join("; ")))
}

/// An authentic verdict always has the expected kind; this is the failure
/// for the impossible other case, so that no path can pass unjudged.
fn not_judged(step: Step) -> StepFailure {
    StepFailure::new(step, "kind", "token of an unexpected kind was not judged")
}

/// Record a nonce or jti under the store's uniqueness constraint.
async fn claim(
    ctx: &PlanContext,
    step: Step,
    record: &RunRecord,
    kind: &'static str,
    value: &str,
) -> Result<(), StepFailure> {
    let store = Arc::clone(&ctx.store);
    let (run, value) = (record.id, value.to_string());
    let claimed = tokio::task::spawn_blocking(move || store.claim_nonce(run, kind, &value))
        .await
        .map_err(|e| StepFailure::new(step, "store", e.to_string()))?
        .map_err(|e| StepFailure::new(step, "store", e.to_string()))?;
    match claimed {
        NonceClaim::Fresh => Ok(()),
        NonceClaim::Replay { first_run } => Err(StepFailure::new(
            step,
            "replay",
            format!("{kind} already seen in run {first_run}"),
        )),
    }
}

/// The CN value from an attribute string such as `O=Acme,CN=<uuid>`.
fn common_name_of(attributes: &str) -> Option<String> {
    attributes
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("CN="))
        .map(str::to_string)
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_taken_from_the_attribute_template() {
        assert_eq!(
            common_name_of("O=Nordic Semiconductor,L=PDX,C=no,CN=abc"),
            Some("abc".into())
        );
        assert_eq!(common_name_of("O=x"), None);
    }
}
