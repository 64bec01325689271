//! `collect`: nobody vouches yet. Everything that can be checked without a
//! key is checked (kind, nonce = challenge, device, and later the keygen
//! digest and the CSR's own signature, the JWT's claims), the tokens are
//! recorded, and the run ends `collected`, never `passed`, so the devices
//! can be claimed on nRF Cloud later (`nrf-provd cloud claim --include-collected`).

use std::sync::Arc;

use async_trait::async_trait;

use super::{BindingsOnly, IdentityAuthority, IdentityCase, Judgement, VerifiedBy, Vouch};
use crate::token::verify::verify;
use crate::trust::TrustStore;

#[derive(Debug, Default)]
pub struct CollectAuthority;

#[async_trait]
impl IdentityAuthority for CollectAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Collect
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let verdict = verify(case.token, case.expected, &TrustStore::new()).without_key_checks();
        Judgement::Vouched(Vouch {
            by: VerifiedBy::Collect,
            later: Arc::new(BindingsOnly),
            verdict,
            evidence: Vec::new(),
            detail: "collected for a later claim: the signature is not judged".into(),
        })
    }
}
