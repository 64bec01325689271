//! Who the board says it is: numeric errors, IMEI, model, firmware, UUIDs,
//! hardware version.
use super::{FirmwareVersion, malformed, missing};
use crate::at::parse::{Param, params};
use crate::at::{AtError, Command, Deadline, Response};

/// Who the device says it is (not judged: see the identify step).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The IMEI field as printed (see [`parse_imei_field`]).
    pub imei: String,
    pub model: String,
    /// `AT+CGMR` as printed, e.g. `mfw_nrf91x1_2.0.1`.
    pub firmware: String,
    pub firmware_version: Option<FirmwareVersion>,
    /// UUID of the firmware build (`%XMODEMUUID`), not of the device.
    pub firmware_uuid: Option<uuid::Uuid>,
    /// `%DEVICEUUID` (nRF91x1 only; `None` on nRF9160).
    pub device_uuid: Option<uuid::Uuid>,
    /// `%HWVERSION`, e.g. `nRF9161 LACA A0A`.
    pub hw_version: Option<String>,
}

/// `AT+CMEE=1`: errors as `+CME ERROR: <n>` with numeric codes (Nordic's
/// tools send it first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericErrors;

impl Command for NumericErrors {
    type Response = ();
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT+CMEE=1".into()
    }

    fn parse(&self, _: &Response) -> Result<(), AtError> {
        Ok(())
    }
}

/// The IMEI field: `AT+CGSN=1` → `+CGSN: "<imei>"`, bare `AT+CGSN` →
/// `<imei>` (see [`parse_imei_field`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imei {
    Quoted,
    Bare,
}

impl Command for Imei {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        match self {
            Imei::Quoted => "AT+CGSN=1".into(),
            Imei::Bare => "AT+CGSN".into(),
        }
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_imei_field(r)
    }
}

/// The IMEI field exactly as the modem printed it: the quoted value of
/// `AT+CGSN=1`'s `+CGSN: "<imei>"`, or `AT+CGSN`'s whole bare line. Not
/// judged here: whether it is an IMEI is [`crate::imei::check`]'s question
/// (the identify step fails `imei` when it is not); digits found inside
/// other text are never taken for one.
pub fn parse_imei_field(r: &Response) -> Result<String, AtError> {
    if let Some(text) = r.first_with_prefix("+CGSN:") {
        return match params(text).as_deref() {
            Some([Param::Str(s) | Param::Text(s)]) => Ok(s.clone()),
            Some([Param::Int(_)]) => Ok(text.to_string()),
            _ => Err(malformed(text)),
        };
    }
    r.bare_lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| missing("IMEI"))
}

/// [`parse_imei_field`], and the field is an IMEI (15 digits, Luhn), else
/// the answer is malformed.
pub fn parse_imei(r: &Response) -> Result<String, AtError> {
    let field = parse_imei_field(r)?;
    crate::imei::check(&field).map_err(|_| malformed(&field))?;
    Ok(field)
}

/// `AT+CGMM` → the model, e.g. `nRF9161-LACA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model;

impl Command for Model {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT+CGMM".into()
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_bare(r, "model")
    }
}

/// `AT+CGMR` → the firmware as printed, e.g. `mfw_nrf91x1_2.0.1` (its
/// version: [`super::parse_firmware_version`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware;

impl Command for Firmware {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT+CGMR".into()
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_bare(r, "firmware")
    }
}

/// The first line without a `+X:`/`%X:` prefix (`AT+CGMM`, `AT+CGMR`).
pub fn parse_bare(r: &Response, what: &str) -> Result<String, AtError> {
    r.bare_lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| missing(what))
}

/// `AT%XMODEMUUID` → `%XMODEMUUID: <uuid>`: the UUID of the firmware
/// build, not of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareUuid;

impl Command for FirmwareUuid {
    type Response = uuid::Uuid;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT%XMODEMUUID".into()
    }

    fn parse(&self, r: &Response) -> Result<uuid::Uuid, AtError> {
        parse_uuid(r, "%XMODEMUUID:")
    }
}

/// `AT%DEVICEUUID` → `%DEVICEUUID: <uuid>` (nRF91x1 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceUuid;

impl Command for DeviceUuid {
    type Response = uuid::Uuid;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT%DEVICEUUID".into()
    }

    fn parse(&self, r: &Response) -> Result<uuid::Uuid, AtError> {
        parse_uuid(r, "%DEVICEUUID:")
    }
}

/// The UUID after `prefix` (`%XMODEMUUID:`, `%DEVICEUUID:`), quoted or not.
pub fn parse_uuid(r: &Response, prefix: &str) -> Result<uuid::Uuid, AtError> {
    let text = r.first_with_prefix(prefix).ok_or_else(|| missing(prefix))?;
    uuid::Uuid::parse_str(text.trim_matches('"')).map_err(|_| malformed(text))
}

/// `AT%HWVERSION` → `%HWVERSION: nRF9161 LACA A0A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwVersion;

impl Command for HwVersion {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT%HWVERSION".into()
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_hw_version(r)
    }
}

pub fn parse_hw_version(r: &Response) -> Result<String, AtError> {
    r.first_with_prefix("%HWVERSION:")
        .map(|s| s.trim_matches('"').to_string())
        .ok_or_else(|| missing("%HWVERSION"))
}
