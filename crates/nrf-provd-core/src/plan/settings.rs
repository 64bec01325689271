//! The plan's settings, as the core takes them: the steps and their
//! parameters, what to do with a device that passed before, and what `pin`
//! requires of the COSE signatures. The daemon's config reads into these.

use crate::DEFAULT_SEC_TAG;
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
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            steps: Step::ALL.to_vec(),
            sec_tag: DEFAULT_SEC_TAG,
            delete_existing_key: true,
            csr_attributes: "CN={device_uuid}".to_owned(),
            key_usage: None,
            retries: 1,
            jwt_exp_delta: 300,
            jwt_audience: None,
            reprovision: Reprovision::default(),
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
