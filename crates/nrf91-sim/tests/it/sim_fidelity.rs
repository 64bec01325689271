//! What the simulated board learnt from real modems (issue 24): the
//! firmware it reports and the commands that firmware lacks, `%CLAIMTOKEN`
//! in the assumed layout with its faults, the ownership key in `%CMNG`,
//! and CME 528/519/529 as a host meets them.

use nrf91_at::at::{AtError, Client, ClientOptions};
use nrf91_at::modem::{
    AttestToken, ClaimToken, CredentialType, FunctionalMode, KeyFormat, Keygen, Modem,
    ModemFirmware, NumericErrors, SetFunctionalMode, WriteCredential,
};
use nrf91_sim::SimOptions;
use nrf91_sim::memory::Board;
use nrf91_token::claim::ownership_key_digest;
use nrf91_token::trust::TrustStore;
use nrf91_token::{ClaimExpected, Expected, Freshness, Token};
use p256::pkcs8::EncodePublicKey;
use tokio::io::DuplexStream;

const TAG: u32 = 16_842_754;
const CHALLENGE: [u8; 16] = [0x7c; 16];

fn board(firmware: Option<&str>, faults: &[&str]) -> (Board, DuplexStream) {
    let options = SimOptions {
        firmware: firmware.map(str::to_owned),
        faults: faults
            .iter()
            .map(|f| format!("0:{f}").parse().expect("fault"))
            .collect(),
        ..SimOptions::default()
    };
    Board::start(5, 0, options)
}

async fn modem(host: DuplexStream) -> Modem<DuplexStream> {
    let (mut client, _) = Client::new(host, ClientOptions::default());
    client.settle().await.expect("settle");
    let mut modem = Modem::new(client);
    modem.send(&NumericErrors).await.expect("cmee");
    modem
        .send(&SetFunctionalMode(FunctionalMode::Offline))
        .await
        .expect("offline");
    modem
}

fn owner_spki_and_pem() -> (Vec<u8>, String) {
    let key = p256::ecdsa::SigningKey::from_slice(&[3; 32]).expect("scalar");
    let spki = key.verifying_key().to_public_key_der().expect("der");
    let pem = key
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::CRLF)
        .expect("pem");
    (spki.as_bytes().to_vec(), pem)
}

async fn claim(modem: &mut Modem<DuplexStream>) -> Result<String, AtError> {
    modem
        .send(&ClaimToken {
            sec_tag: TAG,
            challenge: Some(CHALLENGE),
        })
        .await
}

#[tokio::test(start_paused = true)]
async fn firmware_strings_and_the_commands_each_firmware_lacks() {
    for (firmware, tokens, claims) in [
        ("mfw_nrf9160_1.2.7", false, false),
        ("mfw_nrf9160_1.3.3", true, false),
        ("mfw_nrf9160_1.3.4", true, true),
        ("mfw_nrf91x1_2.0.1", true, true),
        ("mfw_nrf9151-ntn_1.0.0", true, true),
    ] {
        let (board, host) = board(Some(firmware), &[]);
        let mut modem = modem(host).await;
        let id = modem.identify().await.expect("identify");
        assert_eq!(id.firmware, firmware);
        let parsed = ModemFirmware::parse(&id.firmware);
        assert_eq!(parsed.ntn, firmware.contains("ntn"));
        // Only an nRF9160 runs mfw_nrf9160: no %DEVICEUUID there.
        assert_eq!(
            id.device_uuid.is_none(),
            firmware.contains("nrf9160"),
            "{firmware}"
        );
        let attest = modem.send(&AttestToken { challenge: None }).await;
        assert_eq!(attest.is_ok(), tokens, "{firmware}: {attest:?}");
        if !tokens {
            assert!(matches!(attest, Err(AtError::Error { .. })), "{attest:?}");
        }
        let (_, pem) = owner_spki_and_pem();
        let write = WriteCredential::new(TAG, CredentialType::OwnershipKey, &pem).expect("write");
        modem
            .send(&write)
            .await
            .expect("the ownership key is written");
        let answer = claim(&mut modem).await;
        assert_eq!(answer.is_ok(), claims, "{firmware}: {answer:?}");
        drop(board);
    }
}

#[tokio::test(start_paused = true)]
async fn the_claim_token_binds_the_written_key_and_the_challenge() {
    let (board, host) = board(None, &[]);
    let trust = TrustStore::parse(&board.trust_csv()).expect("trust file");
    let device = board.identity().device_uuid;
    let mut modem = modem(host).await;
    // No ownership key in the tag yet: 529.
    let missing = claim(&mut modem).await;
    assert_eq!(
        missing.as_ref().err().and_then(AtError::cme_code),
        Some(529)
    );
    let (spki, pem) = owner_spki_and_pem();
    let write = WriteCredential::new(TAG, CredentialType::OwnershipKey, &pem).expect("write");
    modem.send(&write).await.expect("write ownership key");
    let text = claim(&mut modem).await.expect("claim token");
    let token = nrf91_token::decode(&text).expect("decodes");
    let Token::Claim(decoded) = &token else {
        panic!("not a claim token: {token:?}");
    };
    assert!(decoded.layout_known(), "{}", decoded.layout_words());
    let expected = Expected::Claim(ClaimExpected {
        freshness: Freshness::Challenge(CHALLENGE),
        device_uuid: Some(device),
        ownership_key_digest: Some(ownership_key_digest(&spki)),
    });
    let verdict = nrf91_token::verify::verify(&token, &expected, &trust);
    assert!(verdict.authentic(), "{verdict:#?}");
}

#[tokio::test(start_paused = true)]
async fn claim_faults_and_cme_528_519() {
    let (spki, pem) = owner_spki_and_pem();
    for (fault, wrong) in [("claim-digest", "digest"), ("claim-uuid", "device_uuid")] {
        let (board, host) = board(None, &[fault]);
        let trust = TrustStore::parse(&board.trust_csv()).expect("trust file");
        let device = board.identity().device_uuid;
        let mut modem = modem(host).await;
        let write = WriteCredential::new(TAG, CredentialType::OwnershipKey, &pem).expect("write");
        modem.send(&write).await.expect("write");
        let token = nrf91_token::decode(&claim(&mut modem).await.expect("token")).expect("decodes");
        let expected = Expected::Claim(ClaimExpected {
            freshness: Freshness::Challenge(CHALLENGE),
            device_uuid: Some(device),
            ownership_key_digest: Some(ownership_key_digest(&spki)),
        });
        let verdict = nrf91_token::verify::verify(&token, &expected, &trust);
        assert!(
            verdict.failures().any(|c| c.name.as_str() == wrong),
            "{fault}: {verdict:#?}"
        );
    }
    // A power-off warning refuses the flash write.
    let (_board, host) = board(None, &["cme=528@CMNG"]);
    let mut warned = modem(host).await;
    let write = WriteCredential::new(TAG, CredentialType::OwnershipKey, &pem).expect("write");
    let refused = warned.send(&write).await;
    assert_eq!(
        refused.as_ref().err().and_then(AtError::cme_code),
        Some(528)
    );
    // A key already in the sec_tag: 519 on %KEYGEN.
    let (_board2, host) = board(None, &[]);
    let mut fresh = modem(host).await;
    let keygen = Keygen::new(TAG, KeyFormat::Csr, None, None).expect("keygen");
    fresh.send(&keygen).await.expect("first key");
    let again = fresh.send(&keygen).await;
    assert_eq!(again.as_ref().err().and_then(AtError::cme_code), Some(519));
}
