//! `nrfcloud`: nRF Cloud judges the `%ATTESTTOKEN` against its trusted
//! device database (`POST claimed-devices?dryrun=true`, nothing is
//! claimed). 202 vouches; a refusal fails the run `cloud_rejected` with nRF
//! Cloud's words; no verdict (timeouts, refused connections, 5xx or 429
//! after the retries, a refused API key) fails it `cloud_unreachable`.
//! Never a pass without a 202. The station's own checks (kind, nonce,
//! device) have passed before nRF Cloud is asked.

use std::sync::Arc;

use async_trait::async_trait;

use super::{BindingsOnly, IdentityAuthority, IdentityCase, Judgement, VerifiedBy, Vouch};
use crate::cloud::{CloudClient, CloudReason};
use crate::record::ReasonCode;
use crate::token::verify::verify;
use crate::trust::TrustStore;

pub struct NrfCloudAuthority {
    client: Arc<CloudClient>,
}

impl NrfCloudAuthority {
    pub fn new(client: Arc<CloudClient>) -> Self {
        NrfCloudAuthority { client }
    }
}

#[async_trait]
impl IdentityAuthority for NrfCloudAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Nrfcloud
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let verdict = verify(case.token, case.expected, &TrustStore::new()).without_key_checks();
        match self.client.claim_dry_run(case.text).await {
            Ok(()) => Judgement::Vouched(Vouch {
                by: VerifiedBy::Nrfcloud,
                later: Arc::new(BindingsOnly),
                verdict,
                evidence: Vec::new(),
                detail: "nRF Cloud accepted the identity token (claim dry run: 202)".into(),
            }),
            Err(err) => Judgement::Refused {
                code: match err.reason() {
                    CloudReason::Rejected => ReasonCode::CloudRejected,
                    CloudReason::Unreachable => ReasonCode::CloudUnreachable,
                },
                detail: err.to_string(),
                verdict,
            },
        }
    }
}
