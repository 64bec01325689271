//! The packaged daemon with `[claim]` on boards behind pseudo-terminals: the
//! claim step writes the owner's key, judges `%CLAIMTOKEN`, and the run in
//! the station's SQLite keeps the claim token and the owner's signature; a
//! board binding another ownership key fails `claim` with `digest`.

use std::os::unix::fs::PermissionsExt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nrf_provd_core::record::{ArtifactKind, Outcome, ReasonCode, Step};
use nrf91_sim::{Latency, SimOptions};
use nrf91_token::TokenKind;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};

use crate::station_support::{Daemon, Env, runs_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_claims_with_the_owner_s_key_and_records_both() {
    let options = SimOptions {
        latency: Latency::None,
        faults: vec!["1:claim-digest".parse().expect("fault")],
        ..SimOptions::default()
    };
    let env = Env::with_options(2, options).await;
    let owner = SigningKey::random(&mut rand::rngs::OsRng);
    let key_file = env.dir.path().join("ownership-key.pem");
    std::fs::write(
        &key_file,
        owner.to_pkcs8_pem(LineEnding::LF).expect("PEM").as_bytes(),
    )
    .expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = env.write_config(|t| {
        *t = t.replace(
            "\"attest\", \"keygen\"",
            "\"attest\", \"claim\", \"keygen\"",
        );
        t.push_str(&format!(
            "\n[claim]\nownership_key = \"{}\"\n",
            key_file.display()
        ));
    });
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    daemon.runs_finished(2).await;
    assert!(daemon.stop().await.success());

    let runs = runs_in(&db).await;
    assert_eq!(runs.len(), 2);
    let board = |i: usize| {
        let uuid = env.fleet.identity(i).device_uuid;
        runs.iter()
            .find(|r| r.device.device_uuid == Some(uuid))
            .unwrap_or_else(|| panic!("no run of board {i}: {runs:#?}"))
    };
    let good = board(0);
    assert_eq!(good.outcome, Outcome::Passed, "{good:#?}");
    let token = good
        .tokens
        .iter()
        .find(|t| t.kind == TokenKind::Claim)
        .expect("claim token kept");
    assert!(token.authentic);
    let signature = good
        .artifacts
        .iter()
        .find(|a| a.kind == ArtifactKind::ClaimSignature)
        .expect("owner's signature kept");
    let signature = Signature::from_slice(
        &URL_SAFE_NO_PAD
            .decode(&signature.content)
            .expect("base64url"),
    )
    .expect("r||s");
    owner
        .verifying_key()
        .verify(token.text.as_bytes(), &signature)
        .expect("the owner's signature over the stored token");

    let bad = board(1);
    assert_eq!(bad.failed_step, Some(Step::Claim), "{bad:#?}");
    assert_eq!(bad.reason_code, Some(ReasonCode::Digest));
}
