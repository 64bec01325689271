//! `keys`: the trust file of device identity public keys (offline).

use std::sync::Arc;

use async_trait::async_trait;

use uuid::Uuid;

use super::{IdentityAuthority, IdentityCase, Judgement, LaterTokens, VerifiedBy, Vouch, explain};
use crate::token::verify::verify;
use crate::token::{Expected, Token, Verdict};
use crate::trust::{TrustStore, TrustedKey};

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
                later: Arc::new(TrustedKeyOnly(key.clone())),
                detail: "signed by the key the trust file lists".into(),
                evidence: Vec::new(),
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

/// A later token must be authentic under the trust file's key.
#[derive(Debug)]
struct TrustedKeyOnly(TrustedKey);

impl LaterTokens for TrustedKeyOnly {
    fn judge(&self, token: &Token, expected: &Expected, device_uuid: Uuid) -> (Verdict, bool) {
        let mut store = TrustStore::new();
        // The key parsed once already; inserting it cannot fail.
        let _ = store.insert(device_uuid, self.0.spki_der());
        let verdict = verify(token, expected, &store);
        let accepted = verdict.authentic();
        (verdict, accepted)
    }
}
