//! `claim`: the device claim token. The station writes the owner's
//! ownership public key to `[claim] sec_tag` (`%CMNG` type 9), asks
//! `AT%CLAIMTOKEN=<sec_tag>,"<challenge>"` with a fresh challenge, and
//! judges the answer as `keygen`'s token is judged (the vouch of `attest`,
//! else the trust file): a claim token, of this device, carrying this
//! run's challenge, binding the SHA-256 of the key written, in the layout
//! this station assumes (`nrf91_token::claim`: Nordic does not publish
//! it). Then the owner signs the token text with the ownership private key;
//! the record keeps both (the token, and the signature as an artifact).
//! For a board nobody vouched for (`collect`) the token is kept and the
//! owner signs nothing: the owner's signature asserts ownership of a device
//! whose identity key vouched for the token, which nobody checked.

use super::Rules;
use crate::modem::{ClaimToken, CredentialType, WriteCredential, pem_crlf};
use crate::plan::{Link, Run, StepFailure};
use crate::record::{Artifact, ArtifactKind, ReasonCode, Step};
use crate::token::{ClaimExpected, Expected, Freshness, Token};

pub const RULES: Rules = Rules {
    needs: &[(
        Step::Offline,
        "the modem refuses %CMNG writes (the ownership key) while online (CME 518)",
    )],
    needs_claim: true,
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Claim;
    let at = Run::<T>::at(STEP);
    let Some(owner) = run.ctx.ownership.clone() else {
        return Err(StepFailure::new(
            STEP,
            ReasonCode::Config,
            "the plan has step `claim` but no ownership key is configured ([claim] ownership_key)",
        ));
    };
    let sec_tag = run.ctx.plan.claim_sec_tag;
    let write = WriteCredential::new(
        sec_tag,
        CredentialType::OwnershipKey,
        &pem_crlf(&owner.public_pem()),
    )
    .map_err(&at)?;
    run.modem.send(&write).await.map_err(&at)?;
    let challenge = run.ctx.random.bytes16();
    let text = run
        .modem
        .send(&ClaimToken {
            sec_tag,
            challenge: Some(challenge),
        })
        .await
        .map_err(&at)?;
    let digest = owner.digest();
    let expected = Expected::Claim(ClaimExpected {
        freshness: Freshness::Challenge(challenge),
        device_uuid: run.state.device_uuid,
        ownership_key_digest: Some(digest),
    });
    let Token::Claim(claim) = run.judge(STEP, &text, &expected)? else {
        return Err(StepFailure::new(
            STEP,
            ReasonCode::Kind,
            "not a device claim token",
        ));
    };
    let signed = if run.state.collected() {
        "not signed by the owner: nobody vouched for this device (collect)"
    } else {
        run.record.artifacts.push(Artifact {
            kind: ArtifactKind::ClaimSignature,
            sec_tag: Some(sec_tag),
            content: owner.sign(&text),
        });
        "signed by the owner"
    };
    Ok(format!(
        "claim token of {} binds ownership key sha256 {} (sec_tag {sec_tag}), challenge {} \
         carried back; layout assumed: {}; {signed}",
        claim
            .device_uuid
            .map_or_else(|| "-".to_string(), |u| u.to_string()),
        hex::encode(digest),
        hex::encode(challenge),
        claim.layout_words()
    ))
}
