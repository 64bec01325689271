//! Every simulated command over a real pty, in each dialect, with the tokens
//! checked against the fleet's trust file.

use der::{Decode, Encode};
use nrf91_sim::{Fleet, SimDialect, SimOptions};
use nrf91_token::encode::sec_tag_cbor;
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use spki::DecodePublicKey;
use testkit::sim::{
    Host, b64url, quoted_token, trust_keys, verify_attest, verify_jwt, verify_keygen,
};
use x509_cert::request::CertReq;

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\r\nMIIBszCCAVmgAwIBAgIUQ2VydA==\r\n-----END CERTIFICATE-----";

async fn fleet(dialect: SimDialect) -> (tempfile::TempDir, Fleet) {
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        dialect,
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), 1, 42, options).await.unwrap();
    (dir, fleet)
}

fn verify_csr(der: &[u8]) -> CertReq {
    let req = CertReq::from_der(der).unwrap();
    let key = VerifyingKey::from_public_key_der(&req.info.public_key.to_der().unwrap()).unwrap();
    let sig = Signature::from_der(req.signature.raw_bytes()).unwrap();
    key.verify(&req.info.to_der().unwrap(), &sig)
        .expect("CSR self-signature");
    req
}

/// The whole command set, as a host tool would run it.
async fn exercise_every_command(dialect: SimDialect) {
    let (_dir, fleet) = fleet(dialect).await;
    let id = fleet.identity(0);
    let trust = trust_keys(&fleet.trust_csv());
    let mut host = Host::open(&fleet.link(0), dialect);

    // Before AT+CMEE=1 a CME error is a plain ERROR.
    assert_eq!(host.result("AT+CFUN=7").await, "ERROR");
    assert!(host.ok("AT+CMEE=1").await.is_empty());
    assert_eq!(host.ok("AT+CMEE?").await, ["+CMEE: 1"]);
    assert!(host.ok("AT").await.is_empty());

    // Identity and versions.
    assert_eq!(host.ok("AT+CGSN").await, [id.imei.as_str()]);
    assert_eq!(
        host.ok("AT+CGSN=1").await,
        [format!("+CGSN: \"{}\"", id.imei)]
    );
    assert_eq!(host.ok("AT+CGMR").await, ["mfw_nrf91x1_2.0.1"]);
    assert_eq!(host.ok("AT+CGMM").await, ["nRF9161-LACA"]);
    assert_eq!(
        host.ok("AT%HWVERSION").await,
        ["%HWVERSION: nRF9161 LACA A0A"]
    );
    assert_eq!(
        host.ok("AT%SHORTSWVER").await,
        ["%SHORTSWVER: nrf91x1_2.0.1"]
    );
    assert_eq!(
        host.ok("AT%XMODEMUUID").await,
        [format!("%XMODEMUUID: {}", id.firmware_uuid)]
    );
    assert_eq!(
        host.ok("AT%DEVICEUUID").await,
        [format!("%DEVICEUUID: {}", id.device_uuid)]
    );
    assert_eq!(host.result("AT+NOSUCH").await, "ERROR");

    // Functional mode and the offline rule.
    assert!(host.ok("AT+CFUN=1").await.is_empty());
    assert_eq!(host.ok("AT+CFUN?").await, ["+CFUN: 1"]);
    assert_eq!(
        host.result("AT%KEYGEN=16842753,2,0").await,
        "+CME ERROR: 518"
    );
    assert_eq!(
        host.result(&format!("AT%CMNG=0,16842753,0,\"{PEM}\""))
            .await,
        "+CME ERROR: 518"
    );
    assert!(host.ok("AT+CFUN=4").await.is_empty());
    assert_eq!(host.ok("AT+CFUN?").await, ["+CFUN: 4"]);

    // Attestation with and without a challenge.
    let challenge = "0123456789abcdef0123456789abcdef";
    let line = host
        .ok(&format!("AT%ATTESTTOKEN=\"{challenge}\""))
        .await
        .remove(0);
    let attest = verify_attest(&quoted_token(&line), &trust).unwrap();
    assert_eq!(attest.device_uuid, id.device_uuid);
    assert_eq!(attest.firmware_uuid, id.firmware_uuid);
    assert_eq!(attest.device_type, 4);
    assert_eq!(hex::encode(attest.nonce), challenge);
    let line = host.ok("AT%ATTESTTOKEN").await.remove(0);
    let own = verify_attest(&quoted_token(&line), &trust).unwrap();
    assert_ne!(hex::encode(own.nonce), challenge);

    // Key generation: CSR, 519 on an occupied tag, delete, public key.
    let line = host
        .ok("AT%KEYGEN=16842753,2,0,\"O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1\",\"101010000\"")
        .await
        .remove(0);
    let keygen = verify_keygen(&quoted_token(&line), &trust).unwrap();
    assert_eq!(keygen.payload_id, 9);
    assert_eq!(keygen.device_uuid, id.device_uuid);
    assert_eq!(keygen.sec_tag_cbor, sec_tag_cbor(16842753));
    assert_eq!(keygen.digest, nrf91_token::encode::sha256(&keygen.der));
    let csr = verify_csr(&keygen.der);
    assert_eq!(
        csr.info.subject.to_string(),
        "O=Nordic Semiconductor,L=PDX,C=no,CN=dev-1"
    );
    assert_eq!(
        host.result("AT%KEYGEN=16842753,2,0").await,
        "+CME ERROR: 519"
    );
    assert_eq!(host.ok("AT%CMNG=1,16842753,2").await.len(), 1);
    assert!(host.ok("AT%CMNG=3,16842753,2").await.is_empty());
    let line = host.ok("AT%KEYGEN=16842753,2,0").await.remove(0);
    let keygen = verify_keygen(&quoted_token(&line), &trust).unwrap();
    assert_eq!(
        verify_csr(&keygen.der).info.subject.to_string(),
        format!("CN={}", id.device_uuid)
    );
    let line = host.ok("AT%KEYGEN=17,2,1").await.remove(0);
    let public = verify_keygen(&quoted_token(&line), &trust).unwrap();
    assert_eq!(public.payload_id, 8);
    let tag_key = VerifyingKey::from_public_key_der(&public.der).unwrap();

    // Credential store: write multi-line PEM, list with SHA-256, read, delete.
    assert!(
        host.ok(&format!("AT%CMNG=0,16842753,0,\"{PEM}\""))
            .await
            .is_empty()
    );
    // Through the shell, at_shell turns the escaped LFs into CRLF again.
    let sha = hex::encode_upper(nrf91_token::encode::sha256(PEM.as_bytes()));
    assert_eq!(
        host.ok("AT%CMNG=1,16842753,0").await,
        [format!("%CMNG: 16842753,0,\"{sha}\"")]
    );
    let read = host.ok("AT%CMNG=2,16842753,0").await.join("\n");
    assert!(
        read.starts_with(&format!(
            "%CMNG: 16842753,0,\"{sha}\",\"-----BEGIN CERTIFICATE-----"
        )),
        "{read}"
    );
    assert!(read.ends_with("-----END CERTIFICATE-----\""), "{read}");
    assert!(
        host.ok("AT%CMNG=1")
            .await
            .iter()
            .any(|l| l.starts_with("%CMNG: 4294967292,"))
    );
    assert!(host.ok("AT%CMNG=3,16842753,0").await.is_empty());
    assert_eq!(host.result("AT%CMNG=2,16842753,0").await, "+CME ERROR: 513");

    // Clock and JWTs (identity key, then a sec_tag key).
    assert!(host.ok("AT+CCLK=\"25/01/02,03:04:05+00\"").await.is_empty());
    let clock = host.ok("AT+CCLK?").await.remove(0);
    assert!(clock.starts_with("+CCLK: \"25/01/02,03:04:"), "{clock}");
    let line = host
        .ok("AT%JWT=0,600,\"station-7\",\"nrfcloud\"")
        .await
        .remove(0);
    let identity_key = trust[&id.device_uuid];
    let (header, claims) = verify_jwt(&quoted_token(&line), &identity_key).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["iss"], format!("nRF9161.{}", id.device_uuid));
    assert_eq!(claims["sub"], "station-7");
    assert_eq!(claims["aud"], "nrfcloud");
    let iat = claims["iat"].as_i64().unwrap();
    assert!((1_735_787_045..1_735_787_045 + 60).contains(&iat), "{iat}");
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 600);
    let line = host.ok("AT%JWT=0,0,\"\",\"\",17,2").await.remove(0);
    verify_jwt(&quoted_token(&line), &tag_key).unwrap();
    assert_eq!(
        host.result("AT%JWT=0,0,\"\",\"\",99,2").await,
        "+CME ERROR: 513"
    );

    let stats = fleet.stats(0);
    assert_eq!(
        (
            stats.attest_tokens,
            stats.keygen_tokens,
            stats.jwts,
            stats.cmng_writes
        ),
        (2, 3, 2, 1)
    );
    assert_eq!(stats.sessions, 1);
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_dialect_runs_every_command() {
    exercise_every_command(SimDialect::Raw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slm_dialect_runs_every_command() {
    exercise_every_command(SimDialect::Slm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_dialect_runs_every_command() {
    exercise_every_command(SimDialect::Shell).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_accepts_cr_lf_and_crlf_and_never_echoes() {
    let (_dir, fleet) = fleet(SimDialect::Raw).await;
    let mut host = Host::open(&fleet.link(0), SimDialect::Raw);
    host.send(b"AT+CGMM\rAT+CGMR\nAT\r\n").await;
    let out = host
        .until(|b| String::from_utf8_lossy(b).matches("OK\r\n").count() == 3)
        .await;
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "nRF9161-LACA\r\nOK\r\nmfw_nrf91x1_2.0.1\r\nOK\r\nOK\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slm_says_ready_at_boot_and_after_replug() {
    let (_dir, fleet) = fleet(SimDialect::Slm).await;
    let mut host = Host::open(&fleet.link(0), SimDialect::Slm);
    assert_eq!(host.until(|b| b.ends_with(b"\r\n")).await, b"Ready\r\n");
    drop(host);
    fleet.replug(0).await.unwrap();
    let mut host = Host::open(&fleet.link(0), SimDialect::Slm);
    assert_eq!(host.until(|b| b.ends_with(b"\r\n")).await, b"Ready\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_echoes_prompts_colours_and_both_quoting_styles() {
    let (_dir, fleet) = fleet(SimDialect::Shell).await;
    let imei = fleet.identity(0).imei.clone();
    let mut host = Host::open(&fleet.link(0), SimDialect::Shell);
    let prompt = "\x1b[1;32muart:~$ \x1b[0m";
    let boot = host.until(|b| b.ends_with(prompt.as_bytes())).await;
    assert_eq!(String::from_utf8(boot).unwrap(), format!("\r\n{prompt}"));
    for typed in ["at AT+CGSN", "at 'AT+CGSN'", "at \"AT+CGSN\""] {
        host.send(format!("{typed}\r\n").as_bytes()).await;
        let out = host.until(|b| b.ends_with(prompt.as_bytes())).await;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{typed}\r\n{imei}\r\r\nOK\r\r\n\r\n{prompt}")
        );
    }
    // How Nordic's tools tell a shell from a raw AT host.
    host.send(b"AT+CGSN\r\n").await;
    let out = host.until(|b| b.ends_with(prompt.as_bytes())).await;
    assert!(
        String::from_utf8_lossy(&out).contains("\x1b[1;31mAT+CGSN: command not found"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_host_rejects_the_shell_form() {
    let (_dir, fleet) = fleet(SimDialect::Raw).await;
    let mut host = Host::open(&fleet.link(0), SimDialect::Raw);
    assert_eq!(host.command("at AT+CGSN").await, ["ERROR"]);
    let line = host.ok("AT%KEYGEN=5,2,1").await.remove(0);
    assert!(b64url(quoted_token(&line).split_once('.').unwrap().0).len() > 60);
}
