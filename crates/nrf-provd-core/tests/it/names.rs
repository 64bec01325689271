//! The words of the closed sets, as the database, the JSON API, the logs
//! and the config spell them: derived from the variants (strum for
//! `as_str`/`FromStr`/`ALL`, serde for JSON), so each is spelt once. These
//! tests hold the words themselves (a rename of a variant must not rename
//! what is stored) and that strum and serde say the same of every variant.

use std::fmt::Debug;
use std::str::FromStr;

use nrf_provd_core::handoff::HandOff;
use nrf_provd_core::ledger::HandoffStep;
use nrf_provd_core::record::{ArtifactKind, Outcome, ReasonCode, Step, VerifiedBy};
use nrf91_token::{CheckName, TokenKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Every variant: `as_str` is the word expected, serde says it too, and `FromStr` and serde read it back as the same variant.
fn round_trip<T>(all: &[T], as_str: fn(T) -> &'static str, expected: &[&str])
where
    T: Copy + PartialEq + Debug + Serialize + DeserializeOwned + FromStr,
{
    let words: Vec<&str> = all.iter().map(|&v| as_str(v)).collect();
    assert_eq!(words, expected, "the stored words");
    for &v in all {
        let word = as_str(v);
        let json = serde_json::to_string(&v).expect("serialise");
        assert_eq!(json, format!("\"{word}\""), "{v:?}: serde");
        let back: T = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, v, "{v:?}: serde back");
        assert!(word.parse::<T>().ok() == Some(v), "{v:?}: FromStr {word:?}");
    }
}

#[test]
fn steps_keep_their_words_in_plan_order() {
    round_trip(
        Step::ALL,
        Step::as_str,
        &[
            "probe", "identify", "offline", "attest", "claim", "keygen", "certify", "install",
            "confirm", "jwt", "restore",
        ],
    );
    assert!(Step::ALL.iter().all(|s| s.to_string() == s.as_str()));
    let err = "prove".parse::<Step>().expect_err("no such step");
    assert!(
        err.starts_with("unknown step `prove`, expected one of `probe`, "),
        "{err}"
    );
}

#[test]
fn reason_codes_keep_their_words_and_an_unknown_one_reads_as_other() {
    round_trip(
        ReasonCode::ALL,
        ReasonCode::as_str,
        &[
            "timeout",
            "error",
            "cme",
            "cms",
            "disconnected",
            "overlong",
            "malformed",
            "io",
            "config",
            "imei",
            "firmware_unsupported",
            "power_warning",
            "decode",
            "kind",
            "message_type",
            "key_trusted",
            "algorithm",
            "key_id",
            "signature",
            "device_uuid",
            "nonce",
            "sec_tag",
            "digest",
            "csr_signature",
            "common_name",
            "jwt_time",
            "layout",
            "jwt_issuer",
            "jwt_challenge",
            "jwt_audience",
            "jti",
            "replay",
            "ca",
            "mismatch",
            "missing",
            "cloud_rejected",
            "cloud_unreachable",
            "identity_changed",
            "key_reused",
            "cose_unverified",
            "ledger_unreachable",
            "duplicate_identity",
            "reprovision",
            "conflict",
            "store",
            "interrupted",
            "other",
        ],
    );
    for (code, text) in ReasonCode::ALL.iter().map(|&c| (c, c.as_str())) {
        assert_eq!(ReasonCode::parse(text), code);
    }
    assert_eq!(ReasonCode::parse("from_a_newer_release"), ReasonCode::Other);
}

#[test]
fn authorities_outcomes_and_artifacts_keep_their_words() {
    round_trip(
        VerifiedBy::ALL,
        VerifiedBy::as_str,
        &["keys", "nrfcloud", "pin", "collect"],
    );
    round_trip(
        Outcome::ALL,
        Outcome::as_str,
        &["in_flight", "passed", "failed", "interrupted", "collected"],
    );
    round_trip(
        &[
            ArtifactKind::Csr,
            ArtifactKind::DeviceCertificate,
            ArtifactKind::ClaimSignature,
        ],
        ArtifactKind::as_str,
        &["csr", "device_certificate", "claim_signature"],
    );
    assert_eq!(VerifiedBy::parse("Keys"), None, "words are exact");
    assert_eq!(Outcome::parse("pass"), None);
}

#[test]
fn checks_and_token_kinds_keep_their_words() {
    round_trip(
        CheckName::ALL,
        CheckName::as_str,
        &[
            "kind",
            "message_type",
            "key_trusted",
            "algorithm",
            "key_id",
            "signature",
            "device_uuid",
            "nonce",
            "sec_tag",
            "digest",
            "csr_signature",
            "common_name",
            "jwt_time",
            "jwt_issuer",
            "jwt_challenge",
            "jwt_audience",
            "pinned_signature",
            "layout",
        ],
    );
    round_trip(
        TokenKind::ALL,
        TokenKind::as_str,
        &["identity", "keygen", "jwt", "claim"],
    );
}

#[test]
fn hand_off_words_keep_their_spelling() {
    let steps: Vec<&str> = [HandoffStep::Claim, HandoffStep::Onboard]
        .map(HandoffStep::as_str)
        .to_vec();
    assert_eq!(steps, ["claim", "onboard"]);
    for step in [HandoffStep::Claim, HandoffStep::Onboard] {
        assert_eq!(HandoffStep::parse(step.as_str()), Some(step));
        assert_eq!(
            serde_json::to_string(&step).expect("serialise"),
            format!("\"{}\"", step.as_str())
        );
    }
    let modes: Vec<&str> = HandOff::ALL.iter().map(|h| h.as_str()).collect();
    assert_eq!(modes, ["off", "claim", "claim+onboard"]);
    for &mode in HandOff::ALL {
        assert_eq!(HandOff::parse(mode.as_str()), Some(mode));
    }
}

#[test]
fn ledger_modes_keep_their_words() {
    use nrf_provd_core::ledger::LedgerMode;
    for (mode, word) in [
        (LedgerMode::Required, "required"),
        (LedgerMode::Deferred, "deferred"),
    ] {
        assert_eq!(mode.as_str(), word);
        let read: LedgerMode = serde_json::from_str(&format!("\"{word}\"")).expect("serde");
        assert_eq!(read, mode);
    }
}
