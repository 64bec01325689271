//! What real modems and real lines do (issue 24), against the simulated
//! board in memory: the device claim token and the owner's signature, the
//! firmware gate (a step the firmware cannot do is refused before it is
//! sent), CME 528 (power-off warning), CME 519 on `%KEYGEN`, and a `%CMNG`
//! write too long for the modem's AT buffer.

use std::sync::Arc;
use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nrf_provd_core::ledger::MemoryLedger;
use nrf_provd_core::ownership::OwnershipKey;
use nrf_provd_core::plan::{
    Clock, ConfirmUnsupported, FollowingClock, IdentityAuthority, KeysAuthority, PlanConfig,
    PlanContext, SeededRandom,
};
use nrf_provd_core::record::{ArtifactKind, Outcome, ReasonCode, RunRecord, Step, StepRecord};
use nrf_provd_core::station::{Events, LedgerGate};
use nrf91_at::modem::FirmwareVersion;
use nrf91_sim::memory::Board;
use nrf91_sim::{Latency, SimOptions};
use nrf91_token::TokenKind;
use nrf91_token::trust::TrustStore;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, SigningKey};
use time::macros::datetime;

use crate::plan_memory::{Line, fixed_ca, modem, run_once};

/// A board on `firmware` (`None`: the simulator's 2.0.1) with `faults`,
/// and a station with `plan` and the owner's key `owner`.
fn line(
    firmware: Option<&str>,
    faults: &[&str],
    plan: PlanConfig,
    owner: Option<&SigningKey>,
) -> (Line, tokio::io::DuplexStream) {
    let options = SimOptions {
        latency: Latency::Realistic,
        faults: faults
            .iter()
            .map(|f| format!("0:{f}").parse().expect("fault"))
            .collect(),
        firmware: firmware.map(str::to_owned),
        ..SimOptions::default()
    };
    let (board, host) = Board::start(2026, 0, options);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = fixed_ca(dir.path());
    let trust = Arc::new(TrustStore::parse(&board.trust_csv()).expect("trust file"));
    let gate = LedgerGate::new(Arc::new(MemoryLedger::new()), Events::default());
    let clock: Arc<dyn Clock> =
        Arc::new(FollowingClock::starting_at(datetime!(2026-12-01 08:00 UTC)));
    let authorities: Vec<Arc<dyn IdentityAuthority>> =
        vec![Arc::new(KeysAuthority::new(Arc::clone(&trust)))];
    let ctx = PlanContext {
        plan,
        authorities,
        trust,
        ca_install_pem: Some(ca.certificate_pem()),
        ca: Some(Arc::new(ca)),
        ownership: owner.map(|k| {
            Arc::new(OwnershipKey::new(
                k.clone(),
                std::path::Path::new("owner.pem"),
            ))
        }),
        certificate_validity: Duration::from_secs(30 * 86_400),
        ledger: gate.clone(),
        clock,
        random: Arc::new(SeededRandom::new(42)),
    };
    (
        Line {
            board,
            ctx,
            gate,
            _dir: dir,
        },
        host,
    )
}

fn plan(steps: &[Step]) -> PlanConfig {
    PlanConfig {
        steps: steps.to_vec(),
        ..PlanConfig::default()
    }
}

fn with_claim() -> PlanConfig {
    let mut steps = Step::default_plan();
    steps.insert(4, Step::Claim);
    plan(&steps)
}

fn step(record: &RunRecord, name: Step) -> &StepRecord {
    record
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {record:#?}"))
}

fn owner() -> SigningKey {
    SigningKey::from_slice(&[0x0e; 32]).expect("a P-256 scalar")
}

#[tokio::test(start_paused = true)]
async fn the_claim_step_binds_the_ownership_key_and_the_owner_signs_the_token() {
    let owner = owner();
    let (line, host) = line(None, &[], with_claim(), Some(&owner));
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    let claim = step(&record, Step::Claim);
    assert!(
        claim.detail.contains("binds ownership key sha256")
            && claim.detail.contains("layout assumed: recognised msg_type"),
        "{}",
        claim.detail
    );
    let token = record
        .tokens
        .iter()
        .find(|t| t.kind == TokenKind::Claim)
        .expect("the claim token is recorded");
    assert!(token.authentic, "{token:#?}");
    for check in ["layout", "signature", "device_uuid", "nonce", "digest"] {
        assert!(
            token.checks_json.contains(&format!("\"{check}\"")),
            "{check}: {}",
            token.checks_json
        );
    }
    // The owner's signature over the token text verifies with the owner's
    // public key: the record keeps both.
    let artifact = record
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::ClaimSignature)
        .expect("the owner's signature is recorded");
    assert_eq!(artifact.sec_tag, Some(16_842_754));
    let signature = Signature::from_slice(
        &URL_SAFE_NO_PAD
            .decode(&artifact.content)
            .expect("base64url"),
    )
    .expect("r||s");
    owner
        .verifying_key()
        .verify(token.text.as_bytes(), &signature)
        .expect("the owner signed the claim token text");
}

#[tokio::test(start_paused = true)]
async fn each_claim_token_fault_fails_the_claim_step_with_its_reason() {
    let owner = owner();
    // Without attest the claim token is judged under the trust file.
    let no_attest = plan(&[Step::Probe, Step::Identify, Step::Offline, Step::Claim]);
    let cases: [(&str, PlanConfig, ReasonCode, &str); 4] = [
        (
            "claim-digest",
            with_claim(),
            ReasonCode::Digest,
            "is not the SHA-256",
        ),
        (
            "claim-uuid",
            with_claim(),
            ReasonCode::DeviceUuid,
            "token says",
        ),
        ("cme=529@CLAIMTOKEN", with_claim(), ReasonCode::Cme, "529"),
        (
            "bad-signature",
            no_attest,
            ReasonCode::Signature,
            "does not verify",
        ),
    ];
    for (fault, plan, code, words) in cases {
        let (line, host) = line(None, &[fault], plan, Some(&owner));
        let record = run_once(&line, &mut modem(host)).await;
        assert_eq!(record.outcome, Outcome::Failed, "{fault}");
        assert_eq!(
            record.failed_step,
            Some(Step::Claim),
            "{fault}: {record:#?}"
        );
        assert_eq!(
            record.reason_code,
            Some(code),
            "{fault}: {:?}",
            record.reason
        );
        let reason = record.reason.clone().unwrap_or_default();
        assert!(reason.contains(words), "{fault}: {reason}");
        assert!(
            !record
                .artifacts
                .iter()
                .any(|a| a.kind == ArtifactKind::ClaimSignature),
            "{fault}: the owner signed a claim token that failed"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_replayed_claim_token_fails_its_challenge() {
    let owner = owner();
    let steps = plan(&[Step::Probe, Step::Identify, Step::Offline, Step::Claim]);
    let (line, host) = line(None, &["replay"], steps, Some(&owner));
    let mut modem = modem(host);
    assert_eq!(run_once(&line, &mut modem).await.outcome, Outcome::Passed);
    // The board answers the next run's challenge with the first token.
    let again = run_once(&line, &mut modem).await;
    assert_eq!(again.failed_step, Some(Step::Claim));
    assert_eq!(again.reason_code, Some(ReasonCode::Nonce), "{again:#?}");
    assert!(
        again
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("stale or replayed")),
        "{:?}",
        again.reason
    );
}

#[tokio::test(start_paused = true)]
async fn old_firmware_fails_the_first_token_step_before_it_is_sent() {
    let (line, host) = line(Some("mfw_nrf9160_1.2.7"), &[], PlanConfig::default(), None);
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.failed_step, Some(Step::Attest), "{record:#?}");
    assert_eq!(record.reason_code, Some(ReasonCode::FirmwareUnsupported));
    let reason = record.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("step `attest` needs modem firmware >= 1.3.0")
            && reason.contains("the board has 1.2.7 (mfw_nrf9160_1.2.7)"),
        "{reason}"
    );
    // Not sent: the simulated modem answers ERROR (2 ms) to a command its
    // firmware lacks; the step took no modelled time at all.
    assert_eq!(step(&record, Step::Attest).duration, Duration::ZERO);
    assert_eq!(line.board.stats().attest_tokens, 0);
    // The functional mode is still put back.
    assert!(step(&record, Step::Restore).passed);
    assert_eq!(record.device.firmware.as_deref(), Some("mfw_nrf9160_1.2.7"));
    assert_eq!(record.device.model.as_deref(), Some("nRF9160-SICA"));
}

#[tokio::test(start_paused = true)]
async fn firmware_1_3_1_fails_confirm_unless_the_line_says_skip() {
    let (line_fail, host) = line(Some("mfw_nrf9160_1.3.1"), &[], PlanConfig::default(), None);
    let record = run_once(&line_fail, &mut modem(host)).await;
    assert_eq!(record.failed_step, Some(Step::Confirm), "{record:#?}");
    assert_eq!(record.reason_code, Some(ReasonCode::FirmwareUnsupported));
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(">= 1.3.2 (the %CMNG list's SHA-256 digests)")),
        "{:?}",
        record.reason
    );
    // Everything before confirm ran: the tokens are fine on 1.3.1.
    assert!(step(&record, Step::Install).passed);

    let skip = PlanConfig {
        confirm_unsupported: ConfirmUnsupported::Skip,
        ..PlanConfig::default()
    };
    let (line_skip, host) = line(Some("mfw_nrf9160_1.3.1"), &[], skip, None);
    let record = run_once(&line_skip, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    let confirm = step(&record, Step::Confirm);
    assert!(
        confirm
            .detail
            .contains("what install wrote was NOT confirmed"),
        "{}",
        confirm.detail
    );
    // Skipped means not asked: no %CMNG list (30 ms) was sent.
    assert_eq!(confirm.duration, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_ntn_build_is_modern_and_min_firmware_lets_a_line_require_more() {
    let owner = owner();
    let (line_ntn, host) = line(
        Some("mfw_nrf9151-ntn_1.0.0"),
        &[],
        with_claim(),
        Some(&owner),
    );
    let record = run_once(&line_ntn, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    assert!(step(&record, Step::Identify).detail.contains("NTN build"));

    let strict = PlanConfig {
        min_firmware: Some(FirmwareVersion::new(2, 0, 0)),
        ..PlanConfig::default()
    };
    let (line_old, host) = line(Some("mfw_nrf9160_1.3.5"), &[], strict.clone(), None);
    let record = run_once(&line_old, &mut modem(host)).await;
    assert_eq!(record.failed_step, Some(Step::Attest));
    assert_eq!(record.reason_code, Some(ReasonCode::FirmwareUnsupported));
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(">= 2.0.0 (plan.min_firmware)")),
        "{:?}",
        record.reason
    );
    let (line_new, host) = line(None, &[], strict, None);
    assert_eq!(
        run_once(&line_new, &mut modem(host)).await.outcome,
        Outcome::Passed
    );
}

#[tokio::test(start_paused = true)]
async fn claim_needs_1_3_4_on_an_nrf9160() {
    let owner = owner();
    for (firmware, passes) in [("mfw_nrf9160_1.3.3", false), ("mfw_nrf9160_1.3.4", true)] {
        let (line, host) = line(Some(firmware), &[], with_claim(), Some(&owner));
        let record = run_once(&line, &mut modem(host)).await;
        if passes {
            // No %DEVICEUUID on an nRF9160: attest named the device.
            assert_eq!(record.outcome, Outcome::Passed, "{firmware}: {record:#?}");
        } else {
            assert_eq!(record.failed_step, Some(Step::Claim), "{firmware}");
            assert_eq!(record.reason_code, Some(ReasonCode::FirmwareUnsupported));
            assert!(
                record
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains(">= 1.3.4 (%CLAIMTOKEN)")),
                "{:?}",
                record.reason
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_power_off_warning_ends_the_run_unretried_and_restores_the_mode() {
    let retrying = PlanConfig {
        retries: 3,
        ..PlanConfig::default()
    };
    let (line, host) = line(None, &["cme=528@CMNG"], retrying, None);
    let record = run_once(&line, &mut modem(host)).await;
    // The first flash write is keygen's delete of the sec_tag's old key.
    assert_eq!(record.failed_step, Some(Step::Keygen), "{record:#?}");
    assert_eq!(record.reason_code, Some(ReasonCode::PowerWarning));
    assert!(
        record.reason.as_deref().is_some_and(|r| r.contains("528")),
        "{:?}",
        record.reason
    );
    assert_eq!(step(&record, Step::Keygen).attempts, 1, "never retried");
    assert!(step(&record, Step::Restore).passed, "{record:#?}");
    assert_eq!(line.board.stats().cmng_writes, 0);
}

#[tokio::test(start_paused = true)]
async fn a_key_already_in_the_sec_tag_is_deleted_and_generated_again() {
    // Without delete_existing_key the second run's %KEYGEN finds the first
    // run's key: the modem answers 519 and the station deletes and retries.
    let keep = PlanConfig {
        delete_existing_key: false,
        ..PlanConfig::default()
    };
    let (line, host) = line(None, &[], keep, None);
    let mut modem = modem(host);
    let first = run_once(&line, &mut modem).await;
    assert_eq!(first.outcome, Outcome::Passed, "{first:#?}");
    let second = run_once(&line, &mut modem).await;
    assert_eq!(second.outcome, Outcome::Passed, "{second:#?}");
    // %KEYGEN refused (2 ms), the delete (80 ms), %KEYGEN again (1200 ms).
    assert_eq!(
        step(&second, Step::Keygen).duration,
        step(&first, Step::Keygen).duration + Duration::from_millis(82)
    );
    assert_eq!(line.board.stats().keygen_tokens, 2);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_chain_too_long_for_the_at_buffer_is_refused_before_it_is_sent() {
    let (mut line, host) = line(None, &[], PlanConfig::default(), None);
    let one = line.ctx.ca_install_pem.clone().expect("the CA's PEM");
    line.ctx.ca_install_pem = Some(one.repeat(4096 / one.len() + 1));
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.failed_step, Some(Step::Install), "{record:#?}");
    assert_eq!(record.reason_code, Some(ReasonCode::Config));
    let reason = record.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("%CMNG write of the root CA certificate")
            && reason.contains("the modem's AT command buffer takes at most 4096"),
        "{reason}"
    );
    assert_eq!(line.board.stats().cmng_writes, 0);
}

#[tokio::test(start_paused = true)]
async fn a_test_station_s_debug_sec_tag_round_trips_through_negative_cbor() {
    // 2147483650 is above i32::MAX: the modem writes it in %KEYGEN's
    // payload as a negative CBOR integer, which must decode to the tag.
    let debug = PlanConfig {
        sec_tag: 2_147_483_650,
        ..PlanConfig::default()
    };
    let (line, host) = line(None, &[], debug, None);
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    assert!(
        step(&record, Step::Keygen)
            .detail
            .starts_with("CSR for sec_tag 2147483650 bound to"),
        "{}",
        step(&record, Step::Keygen).detail
    );
}

#[tokio::test(start_paused = true)]
async fn the_owner_signs_no_claim_token_of_a_board_nobody_vouched_for() {
    let owner = owner();
    let (mut line, host) = line(None, &[], with_claim(), Some(&owner));
    line.ctx.authorities = vec![Arc::new(nrf_provd_core::plan::CollectAuthority)];
    let record = run_once(&line, &mut modem(host)).await;
    assert_eq!(record.outcome, Outcome::Collected, "{record:#?}");
    assert!(
        record.tokens.iter().any(|t| t.kind == TokenKind::Claim),
        "the claim token is kept to be vouched for later"
    );
    assert!(
        !record
            .artifacts
            .iter()
            .any(|a| a.kind == ArtifactKind::ClaimSignature),
        "{record:#?}"
    );
    assert!(
        step(&record, Step::Claim)
            .detail
            .contains("not signed by the owner: nobody vouched"),
        "{}",
        step(&record, Step::Claim).detail
    );
}
