//! The firmware gate: a step whose command the board's modem firmware
//! cannot do is refused before it is sent, with `firmware_unsupported`
//! naming the step, the version and the minimum. The minimums are
//! Nordic's (`crate::modem::MIN_FOR_TOKENS` and the others); a line may
//! ask for more (`plan.min_firmware`). An NTN build passes (Nordic's tools
//! treat it as modern); a firmware whose text holds no version passes the
//! steps' own minimums (the modem's answer decides) but never a line's
//! `plan.min_firmware`, which asks for a version the board did not show.

use super::StepFailure;
use super::settings::{ConfirmUnsupported, PlanConfig};
use crate::modem::{
    FirmwareVersion, MIN_FOR_CLAIMTOKEN, MIN_FOR_CMNG_SHA, MIN_FOR_TOKENS, ModemFirmware,
};
use crate::record::{ReasonCode, Step};

/// The firmware `step` needs of its own, and what for.
pub fn minimum(step: Step) -> Option<(FirmwareVersion, &'static str)> {
    match step {
        Step::Attest => Some((MIN_FOR_TOKENS, "%ATTESTTOKEN")),
        Step::Keygen => Some((MIN_FOR_TOKENS, "%KEYGEN")),
        Step::Jwt => Some((MIN_FOR_TOKENS, "%JWT")),
        Step::Confirm => Some((MIN_FOR_CMNG_SHA, "the %CMNG list's SHA-256 digests")),
        Step::Claim => Some((MIN_FOR_CLAIMTOKEN, "%CLAIMTOKEN")),
        Step::Probe
        | Step::Identify
        | Step::Offline
        | Step::Certify
        | Step::Install
        | Step::Restore => None,
    }
}

/// Why `step` must not run on this firmware, if it must not. `confirm`
/// below its minimum with `plan.confirm_unsupported = "skip"` runs (and
/// says it confirmed nothing): see [`skips_confirm`].
pub fn refuse(
    step: Step,
    firmware: Option<&ModemFirmware>,
    plan: &PlanConfig,
) -> Option<StepFailure> {
    let (own, what) = minimum(step)?;
    let firmware = firmware?;
    let fail = |minimum: FirmwareVersion, source: &str| {
        let version = firmware
            .version
            .map_or_else(|| "unknown".to_string(), |v| v.to_string());
        StepFailure::new(
            step,
            ReasonCode::FirmwareUnsupported,
            format!(
                "step `{step}` needs modem firmware >= {minimum} ({source}); the board has \
                 {version} ({}); nothing was sent",
                firmware.text
            ),
        )
    };
    if let Some(line) = plan.min_firmware {
        let meets = firmware.ntn || firmware.version.is_some_and(|v| v >= line);
        if !meets {
            return Some(fail(line, "plan.min_firmware"));
        }
    }
    if firmware.below(own)
        && !(step == Step::Confirm && plan.confirm_unsupported == ConfirmUnsupported::Skip)
    {
        return Some(fail(own, what));
    }
    None
}

/// Whether `confirm` runs on firmware without the `%CMNG` SHA-256 list
/// and must confirm nothing (`plan.confirm_unsupported = "skip"`).
pub fn skips_confirm(firmware: Option<&ModemFirmware>) -> bool {
    firmware.is_some_and(|f| f.below(MIN_FOR_CMNG_SHA))
}
