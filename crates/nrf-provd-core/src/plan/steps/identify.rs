//! `identify`: who the board says it is (not proven until attest).

use super::Rules;
use crate::plan::{Link, Run, StepFailure};
use crate::record::{ReasonCode, Step};

pub const RULES: Rules = Rules::ANY;

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    let at = Run::<T>::at(Step::Identify);
    let id = run.modem.identify().await.map_err(at)?;
    // An IMEI is 15 digits with its Luhn check digit, or it is not one: a
    // board that says otherwise is recorded with nothing it said.
    crate::imei::check(&id.imei)
        .map_err(|e| StepFailure::new(Step::Identify, ReasonCode::Imei, e.to_string()))?;
    run.state.device_uuid = id.device_uuid;
    let firmware = crate::modem::ModemFirmware::parse(&id.firmware);
    let version = match (&firmware.version, firmware.ntn) {
        (_, true) => " (NTN build: modern)".to_string(),
        (Some(_), false) => String::new(),
        (None, false) => " (no version in it)".to_string(),
    };
    run.state.firmware = Some(firmware);
    let device = &mut run.record.device;
    device.device_uuid = id.device_uuid;
    if let Some(uuid) = id.device_uuid {
        tracing::Span::current().record("device", tracing::field::display(uuid));
    }
    device.imei = Some(id.imei.clone());
    device.model = Some(id.model.clone());
    device.firmware = Some(id.firmware.clone());
    device.firmware_uuid = id.firmware_uuid;
    device.hw_version = id.hw_version.clone();
    Ok(format!(
        "imei {} uuid {} fw {}{version}",
        id.imei,
        id.device_uuid
            .map_or_else(|| "- (no %DEVICEUUID)".into(), |u| u.to_string()),
        id.firmware
    ))
}
