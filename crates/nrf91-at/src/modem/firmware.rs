//! What `AT+CGMR` says the modem firmware is, read as Nordic's own
//! installer reads it (`nRFCloud/utils` `device_credentials_installer.py`,
//! `parse_mfw_ver`, July 2026), and the firmware each command needs.
//!
//! A version is the one `x.y.z` (1 to 3 digits each) bounded by `-`, `_`
//! or the ends of the text: `mfw_nrf9160_1.3.5`, `mfw_nrf91x1_2.0.1`,
//! `mfw_nrf9160_1.3.0-FOTA-TEST`. None or more than one: the version is
//! unknown and the text is kept as it is. A build whose text holds `ntn`
//! (`mfw_nrf9151-ntn_…`) is treated as modern whatever its number, as
//! Nordic's tools do: NTN builds are numbered on their own line.
use std::fmt;

/// A modem firmware version `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct FirmwareVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl FirmwareVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        FirmwareVersion {
            major,
            minor,
            patch,
        }
    }

    /// `x.y.z` exactly (as `plan.min_firmware` is written).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let mut next = || {
            parts
                .next()
                .filter(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse().ok())
        };
        let version = Self::new(next()?, next()?, next()?);
        parts.next().is_none().then_some(version)
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `%ATTESTTOKEN`, `%KEYGEN` and `%JWT` (Nordic's installer: "must be >= 1.3.0").
pub const MIN_FOR_TOKENS: FirmwareVersion = FirmwareVersion::new(1, 3, 0);
/// The SHA-256 digests in `%CMNG` list (Nordic's installer skips its
/// verification below this: `MIN_REQD_MFW_VER_FOR_VERIFY`).
pub const MIN_FOR_CMNG_SHA: FirmwareVersion = FirmwareVersion::new(1, 3, 2);
/// `%CLAIMTOKEN` (AT command reference: nRF9160 v1.3.x ≥ 4). Assumed for
/// nRF91x1 too, whose 2.x firmware is above it.
pub const MIN_FOR_CLAIMTOKEN: FirmwareVersion = FirmwareVersion::new(1, 3, 4);

/// The firmware a board reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModemFirmware {
    /// `AT+CGMR` as printed.
    pub text: String,
    /// `None` when the text holds no single `x.y.z` (kept as text).
    pub version: Option<FirmwareVersion>,
    /// An NTN build (`ntn` in the text): modern whatever its number.
    pub ntn: bool,
}

impl ModemFirmware {
    pub fn parse(text: &str) -> Self {
        ModemFirmware {
            text: text.to_string(),
            version: parse_firmware_version(text),
            ntn: text.to_ascii_lowercase().contains("ntn"),
        }
    }

    /// Whether this firmware is known to be older than `minimum`: an NTN
    /// build never is, an unknown version is not known to be.
    pub fn below(&self, minimum: FirmwareVersion) -> bool {
        !self.ntn && self.version.is_some_and(|v| v < minimum)
    }
}

/// The version in an `AT+CGMR` answer, by Nordic's rule (module docs).
pub fn parse_firmware_version(text: &str) -> Option<FirmwareVersion> {
    let mut versions = text.split(['-', '_']).filter_map(FirmwareVersion::parse);
    match (versions.next(), versions.next()) {
        (Some(version), None) => Some(version),
        _ => None,
    }
}
