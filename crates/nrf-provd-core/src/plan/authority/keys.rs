//! `keys`: the trust file of device identity public keys (offline).

use std::sync::Arc;

use async_trait::async_trait;

use super::{IdentityAuthority, IdentityCase, Judgement, VerifiedBy, Vouch, explain};
use crate::token::verify::verify;
use crate::trust::TrustStore;

/// `keys`: the trust file. Knows a device when the file lists its UUID; then
/// the token must be authentic under that key.
pub struct KeysAuthority {
    trust: Arc<TrustStore>,
}

impl KeysAuthority {
    pub fn new(trust: Arc<TrustStore>) -> Self {
        KeysAuthority { trust }
    }

    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.trust
    }
}

#[async_trait]
impl IdentityAuthority for KeysAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Keys
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let Some(key) = self.trust.get(&case.device_uuid) else {
            return Judgement::CannotJudge(format!(
                "device {} is not in the trust file",
                case.device_uuid
            ));
        };
        let verdict = verify(case.token, case.expected, &self.trust);
        if verdict.authentic() {
            return Judgement::Vouched(Vouch {
                by: VerifiedBy::Keys,
                key: Some(key.clone()),
                detail: "signed by the key the trust file lists".into(),
                evidence: Vec::new(),
                cose_required: false,
                verdict,
            });
        }
        let (code, detail) = explain(&verdict);
        Judgement::Refused {
            code,
            detail,
            verdict,
        }
    }
}
