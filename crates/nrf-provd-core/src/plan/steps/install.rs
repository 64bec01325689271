//! `install`: `%CMNG` writes of the CA certificate(s) and the device
//! certificate, PEM with CRLF as Nordic's tools write them.

use super::Rules;
use crate::modem::{CredentialType, WriteCredential, pem_crlf};
use crate::plan::{Link, Run, StepFailure};
use crate::record::{ReasonCode, Step};

pub const RULES: Rules = Rules {
    needs: &[(
        Step::Offline,
        "the modem refuses %CMNG writes while online (CME 518)",
    )],
    needs_ca: true,
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Install;
    if run.state.collected() {
        return Ok(crate::plan::NOT_VOUCHED.to_string());
    }
    let sec_tag = run.ctx.plan.sec_tag;
    let mut written = Vec::new();
    if let Some(ca_pem) = &run.ctx.ca_install_pem {
        written.push((CredentialType::RootCa, pem_crlf(ca_pem)));
    }
    if let Some(cert) = &run.state.certificate_pem {
        written.push((CredentialType::ClientCert, pem_crlf(cert)));
    }
    if written.is_empty() {
        return Err(StepFailure::new(
            STEP,
            ReasonCode::Config,
            "nothing to install",
        ));
    }
    let at = Run::<T>::at(STEP);
    for (kind, content) in &written {
        let write = WriteCredential::new(sec_tag, *kind, content).map_err(&at)?;
        run.modem.send(&write).await.map_err(&at)?;
    }
    let names: Vec<&str> = written.iter().map(|(k, _)| k.words()).collect();
    run.state.written = written;
    Ok(format!("sec_tag {sec_tag}: {}", names.join(", ")))
}
