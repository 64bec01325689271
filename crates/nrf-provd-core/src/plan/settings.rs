//! The plan's settings, as the core takes them: the steps and their
//! parameters, what to do with a device that passed before, and what `pin`
//! requires of the COSE signatures. The daemon's config reads into these.

use crate::DEFAULT_SEC_TAG;
use crate::modem::FirmwareVersion;
use crate::record::Step;

#[derive(Debug, Clone, PartialEq)]
pub struct PlanConfig {
    pub steps: Vec<Step>,
    pub sec_tag: u32,
    pub delete_existing_key: bool,
    /// CSR subject template; placeholders `{device_uuid}` and `{imei}`.
    pub csr_attributes: String,
    /// X.509 keyUsage bit string for `%KEYGEN`, 9 characters of 0/1.
    pub key_usage: Option<String>,
    /// Extra attempts for a step whose answer timed out or came garbled
    /// ([`crate::record::ReasonCode::retryable`]); 0 = try once.
    pub retries: u32,
    /// `%JWT` validity in seconds.
    pub jwt_exp_delta: u32,
    pub jwt_audience: Option<String>,
    /// A device that already passed (here, or anywhere on the line).
    pub reprovision: Reprovision,
    /// The least modem firmware this line accepts for every step that
    /// needs a firmware (`plan.min_firmware`), above each step's own.
    pub min_firmware: Option<FirmwareVersion>,
    /// What `confirm` does on firmware older than 1.3.2, whose `%CMNG`
    /// list has no SHA-256 digests (`plan.confirm_unsupported`).
    pub confirm_unsupported: ConfirmUnsupported,
    /// The sec_tag the claim step writes the ownership public key to
    /// (`[claim] sec_tag`).
    pub claim_sec_tag: u32,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            steps: Step::default_plan(),
            sec_tag: DEFAULT_SEC_TAG,
            delete_existing_key: true,
            csr_attributes: "CN={device_uuid}".to_owned(),
            key_usage: None,
            retries: 1,
            jwt_exp_delta: 300,
            jwt_audience: None,
            reprovision: Reprovision::default(),
            min_firmware: None,
            confirm_unsupported: ConfirmUnsupported::default(),
            claim_sec_tag: DEFAULT_CLAIM_SEC_TAG,
        }
    }
}

impl PlanConfig {
    /// The CSR subject for one device: the template with its placeholders
    /// replaced. Values come from the device; the plan quotes the result.
    pub fn render_attributes(&self, device_uuid: &str, imei: &str) -> String {
        self.csr_attributes
            .replace("{device_uuid}", device_uuid)
            .replace("{imei}", imei)
    }

    pub fn has(&self, step: Step) -> bool {
        self.steps.contains(&step)
    }
}

/// `[claim] sec_tag` when not given: the one after nRF Cloud's 16842753.
pub const DEFAULT_CLAIM_SEC_TAG: u32 = 16_842_754;

/// `plan.confirm_unsupported`: what `confirm` does on a board whose
/// firmware (1.3.0, 1.3.1) lists no SHA-256 digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfirmUnsupported {
    /// The step fails `firmware_unsupported`: nothing the station cannot
    /// check is called confirmed.
    #[default]
    Fail,
    /// The step passes and says in its detail that nothing was confirmed
    /// (what Nordic's installer does: "Skipping SHA verification").
    Skip,
}

/// What a station does with a device that already passed (on this station
/// or, with a shared ledger, anywhere on the line): `plan.reprovision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reprovision {
    /// Provision it again.
    #[default]
    Allow,
    /// Provision it again, and say so in the record and the log.
    Warn,
    /// Fail the run (`reprovision`).
    Refuse,
}

/// `identity.pin_cose`: what `pin` does with the COSE signatures of a
/// board's `%ATTESTTOKEN` and `%KEYGEN`, which it checks under the key
/// learnt from the board's `%JWT`s with this station's COSE signing input
/// (`Sig_structure`; real modems' own input is not published).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinCose {
    /// They must verify, else the run fails `cose_unverified`: a board
    /// whose COSE tokens were not signed by the key it pinned never passes.
    #[default]
    Required,
    /// Real modems (whose signing input this station does not build): only
    /// recorded. A pass then proves what the `%JWT`s prove; the record and
    /// the attest detail say the COSE signatures were not verified.
    Recorded,
}
