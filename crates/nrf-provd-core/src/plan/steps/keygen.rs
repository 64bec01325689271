//! `keygen`: the modem makes a key in the sec_tag and returns a CSR bound to
//! the device identity; verified before anything trusts it.

use super::Rules;
use crate::at::AtError;
use crate::ledger::ClaimKind;
use crate::modem::{CredentialType, DeleteCredential, KeyFormat, Keygen, Modem};
use crate::plan::{Link, Run, StepFailure};
use crate::record::{Artifact, ArtifactKind, Step};
use crate::token::{Expected, KeygenExpected, Token};

pub const RULES: Rules = Rules {
    needs: &[(
        Step::Offline,
        "the modem refuses %KEYGEN while online (CME 518)",
    )],
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Keygen;
    let at = Run::<T>::at(STEP);
    let ctx = run.ctx;
    let plan = &ctx.plan;
    let sec_tag = plan.sec_tag;
    let uuid = run
        .state
        .device_uuid
        .map(|u| u.to_string())
        .unwrap_or_default();
    let imei = run.record.device.imei.clone().unwrap_or_default();
    let attributes = plan.render_attributes(&uuid, &imei);
    let key_usage = plan.key_usage.as_deref();
    if plan.delete_existing_key {
        delete_key(run.modem, sec_tag).await.map_err(&at)?;
    }
    let command =
        Keygen::new(sec_tag, KeyFormat::Csr, Some(&attributes), key_usage).map_err(&at)?;
    let text = match run.modem.send(&command).await {
        // 519: the tag already holds a key; Nordic's client deletes and retries.
        Err(AtError::Cme { code: 519, .. }) => {
            delete_key(run.modem, sec_tag).await.map_err(&at)?;
            run.modem.send(&command).await.map_err(&at)?
        }
        other => other.map_err(&at)?,
    };
    let common_name = common_name_of(&attributes);
    let expected = Expected::Keygen(KeygenExpected {
        format: KeyFormat::Csr,
        sec_tag: Some(sec_tag),
        device_uuid: run.state.device_uuid,
        common_name: common_name.clone(),
    });
    let Token::Keygen(keygen) = run.judge(STEP, &text, &expected)? else {
        return Err(StepFailure::new(
            STEP,
            crate::record::ReasonCode::Kind,
            "not a key-generation token",
        ));
    };
    run.claim(STEP, ClaimKind::KeygenNonce, &hex::encode(keygen.nonce))
        .await?;
    run.record.artifacts.push(Artifact {
        kind: ArtifactKind::Csr,
        sec_tag: Some(sec_tag),
        content: der::pem::encode_string(
            "CERTIFICATE REQUEST",
            der::pem::LineEnding::LF,
            &keygen.der,
        )
        .unwrap_or_default(),
    });
    // The certificate's CN is the station's: the one it asked for (the CSR
    // must carry it), else the proven device UUID; never text the CSR chose.
    let cn = common_name.unwrap_or_else(|| keygen.device_uuid.to_string());
    run.state.keygen = Some((keygen.public_key_spki.clone(), cn));
    Ok(format!(
        "CSR for sec_tag {} bound to {}, digest {}",
        keygen.sec_tag,
        keygen.device_uuid,
        hex::encode(keygen.digest)
    ))
}

/// Delete the client key of `sec_tag`; a missing key (513) is fine.
async fn delete_key<T: Link>(modem: &mut Modem<T>, sec_tag: u32) -> Result<(), AtError> {
    let delete = DeleteCredential {
        sec_tag,
        kind: CredentialType::ClientKey,
    };
    match modem.send(&delete).await {
        Err(AtError::Cme { code: 513, .. }) => Ok(()),
        other => other,
    }
}

/// The CN value from an attribute string such as `O=Acme,CN=<uuid>`.
fn common_name_of(attributes: &str) -> Option<String> {
    attributes
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("CN="))
        .map(str::to_string)
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_taken_from_the_attribute_template() {
        assert_eq!(
            common_name_of("O=Nordic Semiconductor,L=PDX,C=no,CN=abc"),
            Some("abc".into())
        );
        assert_eq!(common_name_of("O=x"), None);
    }
}
