//! Unit tests of the pure command handler: lines in, replies out, no pty.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ciborium::value::Value;
use der::{Decode, Encode};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use spki::DecodePublicKey;
use x509_cert::request::CertReq;

use super::*;
use crate::fault::FaultSpec;

fn board(faults: &[&str]) -> Modem {
    let specs: Vec<FaultSpec> = faults
        .iter()
        .map(|f| format!("0:{f}").parse().unwrap())
        .collect();
    Modem::new(
        ModemIdentity::from_seed(1, 0),
        FaultSet::for_index(&specs, 0),
    )
}

fn run(m: &mut Modem, line: &str) -> Reply {
    m.handle(line, Instant::now())
}

/// The information lines of a command that must succeed.
fn ok(m: &mut Modem, line: &str) -> Vec<String> {
    let reply = run(m, line);
    assert_eq!(reply.result, FinalResult::Ok, "{line}: {reply:?}");
    reply.info
}

fn result(m: &mut Modem, line: &str) -> String {
    run(m, line).result.to_string()
}

/// The quoted token of `%NAME: "<token>"`.
fn token(line: &str) -> String {
    let (_, quoted) = line.split_once(": \"").unwrap();
    quoted.strip_suffix('"').unwrap().to_owned()
}

fn b64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// Decode a COSE_Sign1, check its framing, verify it with `key` over
/// `sig_structure` (payload = embedded or `detached`); return the payload.
fn verify_cose(
    cose_bytes: &[u8],
    key: &VerifyingKey,
    detached: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let value: Value = ciborium::from_reader(cose_bytes).unwrap();
    let Value::Tag(18, inner) = value else {
        panic!("not tag 18")
    };
    let Value::Array(items) = *inner else {
        panic!("not an array")
    };
    let [
        Value::Bytes(protected),
        Value::Map(unprotected),
        payload,
        Value::Bytes(sig),
    ] = items.as_slice()
    else {
        panic!("bad COSE_Sign1 shape")
    };
    assert_eq!(protected, &cose::protected_es256());
    assert_eq!(
        unprotected,
        &vec![(
            Value::Integer(4.into()),
            Value::Bytes(KID_IDENTITY.to_vec())
        )]
    );
    let payload = match (payload, detached) {
        (Value::Null, Some(body)) => body.to_vec(),
        (Value::Bytes(p), None) => p.clone(),
        other => panic!("payload slot {other:?}"),
    };
    let sig = Signature::from_slice(sig).unwrap();
    key.verify(&cose::sig_structure(protected, &payload), &sig)
        .map_err(|e| e.to_string())?;
    Ok(payload)
}

/// `[a, b, c, d, e]` inside tag 55799.
fn self_described(bytes: &[u8]) -> Vec<Value> {
    assert_eq!(&bytes[..3], &[0xd9, 0xd9, 0xf7]);
    let Value::Tag(55799, inner) = ciborium::from_reader(bytes).unwrap() else {
        panic!()
    };
    let Value::Array(items) = *inner else {
        panic!()
    };
    items
}

fn bytes_of(v: &Value) -> Vec<u8> {
    v.as_bytes().unwrap().clone()
}

fn int_of(v: &Value) -> i128 {
    v.as_integer().unwrap().into()
}

fn identity_key(m: &Modem) -> VerifyingKey {
    *m.identity().signing_key.verifying_key()
}

#[test]
fn identity_and_version_commands() {
    let mut m = board(&[]);
    let id = m.identity().clone();
    assert!(ok(&mut m, "AT").is_empty());
    assert_eq!(ok(&mut m, "AT+CGSN"), [id.imei.as_str()]);
    assert_eq!(ok(&mut m, "AT+CGSN=1"), [format!("+CGSN: \"{}\"", id.imei)]);
    assert_eq!(ok(&mut m, "at+cgsn=0"), [id.imei.as_str()]);
    assert_eq!(ok(&mut m, "AT+CGMR"), ["mfw_nrf91x1_2.0.1"]);
    assert_eq!(ok(&mut m, "AT+CGMM"), ["nRF9161-LACA"]);
    assert_eq!(ok(&mut m, "AT%HWVERSION"), ["%HWVERSION: nRF9161 LACA A0A"]);
    assert_eq!(ok(&mut m, "AT%SHORTSWVER"), ["%SHORTSWVER: nrf91x1_2.0.1"]);
    assert_eq!(
        ok(&mut m, "AT%XMODEMUUID"),
        [format!("%XMODEMUUID: {}", id.firmware_uuid)]
    );
    assert_eq!(
        ok(&mut m, "AT%DEVICEUUID"),
        [format!("%DEVICEUUID: {}", id.device_uuid)]
    );
    assert_eq!(result(&mut m, "AT+CGSN=7"), "ERROR");
}

#[test]
fn unknown_commands_are_plain_error_even_with_cmee() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    for line in ["AT+FOO", "at AT+CGSN", "hello", "AT%KEYGEN?x", "AT+CGMR?"] {
        assert_eq!(result(&mut m, line), "ERROR", "{line}");
    }
}

#[test]
fn cme_errors_are_plain_error_until_cmee_1() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CFUN=1");
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "ERROR");
    assert_eq!(ok(&mut m, "AT+CMEE?"), ["+CMEE: 0"]);
    ok(&mut m, "AT+CMEE=1");
    assert_eq!(ok(&mut m, "AT+CMEE?"), ["+CMEE: 1"]);
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "+CME ERROR: 518");
    assert_eq!(result(&mut m, "AT+CMEE=2"), "+CME ERROR: 50");
}

#[test]
fn functional_mode_set_and_read() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    assert_eq!(ok(&mut m, "AT+CFUN?"), ["+CFUN: 0"]);
    assert_eq!(run(&mut m, "AT+CFUN=1").kind, CommandKind::CfunUp);
    assert_eq!(ok(&mut m, "AT+CFUN?"), ["+CFUN: 1"]);
    assert_eq!(run(&mut m, "AT+CFUN=4").kind, CommandKind::CfunDown);
    assert_eq!(ok(&mut m, "AT+CFUN?"), ["+CFUN: 4"]);
    assert_eq!(result(&mut m, "AT+CFUN=3"), "+CME ERROR: 50");
    assert_eq!(result(&mut m, "AT+CFUN=x"), "+CME ERROR: 50");
}

#[test]
fn attestation_token_uses_the_challenge_and_verifies() {
    let mut m = board(&[]);
    let challenge = "00112233445566778899aabbccddeeff";
    let line = ok(&mut m, &format!("AT%ATTESTTOKEN=\"{challenge}\"")).remove(0);
    assert!(line.starts_with("%ATTESTTOKEN: \""));
    let tok = token(&line);
    let (body_b64, cose_b64) = tok.split_once('.').unwrap();
    let body = b64(body_b64);
    verify_cose(&b64(cose_b64), &identity_key(&m), Some(&body)).unwrap();
    let items = self_described(&body);
    assert_eq!(int_of(&items[0]), 1);
    assert_eq!(bytes_of(&items[1]), m.identity().device_uuid.as_bytes());
    assert_eq!(int_of(&items[2]), 4);
    assert_eq!(bytes_of(&items[3]), m.identity().firmware_uuid.as_bytes());
    assert_eq!(hex::encode(bytes_of(&items[4])), challenge);
}

#[test]
fn attestation_without_challenge_makes_its_own_nonces() {
    let mut m = board(&[]);
    let nonce = |m: &mut Modem| {
        let tok = token(&ok(m, "AT%ATTESTTOKEN")[0]);
        bytes_of(&self_described(&b64(tok.split_once('.').unwrap().0))[4])
    };
    let (a, b) = (nonce(&mut m), nonce(&mut m));
    assert_eq!(a.len(), 16);
    assert_ne!(a, b);
    ok(&mut m, "AT+CMEE=1");
    for bad in [
        "\"0011\"",
        "\"zz112233445566778899aabbccddeeff\"",
        "00112233445566778899aabbccddeeff",
        "\"a\",\"b\"",
    ] {
        assert_eq!(
            result(&mut m, &format!("AT%ATTESTTOKEN={bad}")),
            "+CME ERROR: 50",
            "{bad}"
        );
    }
}

/// Decode `%KEYGEN` output: (DER, payload fields), signature checked.
fn keygen_parts(m: &Modem, line: &str) -> (Vec<u8>, Vec<Value>) {
    let tok = token(line);
    let (der_b64, cose_b64) = tok.split_once('.').unwrap();
    let payload = verify_cose(&b64(cose_b64), &identity_key(m), None).unwrap();
    (b64(der_b64), self_described(&payload))
}

fn verify_csr(der: &[u8]) -> CertReq {
    let req = CertReq::from_der(der).unwrap();
    let key = VerifyingKey::from_public_key_der(&req.info.public_key.to_der().unwrap()).unwrap();
    let sig = Signature::from_der(req.signature.raw_bytes()).unwrap();
    key.verify(&req.info.to_der().unwrap(), &sig).unwrap();
    req
}

#[test]
fn keygen_csr_is_bound_to_device_tag_and_digest() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CFUN=4");
    let line = ok(&mut m, "AT%KEYGEN=16842753,2,0").remove(0);
    let (der, items) = keygen_parts(&m, &line);
    assert_eq!(int_of(&items[0]), 9);
    assert_eq!(bytes_of(&items[1]), m.identity().device_uuid.as_bytes());
    assert_eq!(bytes_of(&items[2]), encode::sec_tag_cbor(16842753));
    assert_eq!(bytes_of(&items[3]), encode::sha256(&der));
    assert_eq!(bytes_of(&items[4]).len(), 16);
    let req = verify_csr(&der);
    assert_eq!(
        req.info.subject.to_string(),
        format!("CN={}", m.identity().device_uuid)
    );
}

#[test]
fn keygen_subject_from_attributes_and_public_key_format() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CFUN=4");
    let line = ok(
        &mut m,
        "AT%KEYGEN=17,2,0,\"O=Nordic Semiconductor,L=PDX,C=no,CN=dev-9\",\"101010000\"",
    )
    .remove(0);
    let (der, _) = keygen_parts(&m, &line);
    assert_eq!(
        verify_csr(&der).info.subject.to_string(),
        "O=Nordic Semiconductor,L=PDX,C=no,CN=dev-9"
    );
    let line = ok(&mut m, "AT%KEYGEN=18,2,1").remove(0);
    let (der, items) = keygen_parts(&m, &line);
    assert_eq!(int_of(&items[0]), 8);
    assert_eq!(bytes_of(&items[3]), encode::sha256(&der));
    VerifyingKey::from_public_key_der(&der).unwrap();
}

#[test]
fn keygen_rules_offline_existing_key_and_parameters() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    ok(&mut m, "AT+CFUN=1");
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "+CME ERROR: 518");
    ok(&mut m, "AT+CFUN=4");
    ok(&mut m, "AT%KEYGEN=16,2,0");
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "+CME ERROR: 519");
    // Nordic's client deletes the key and retries.
    ok(&mut m, "AT%CMNG=3,16,2");
    ok(&mut m, "AT%KEYGEN=16,2,0");
    assert_eq!(
        result(&mut m, "AT%KEYGEN=2147483668,2,0"),
        "+CME ERROR: 514"
    );
    // Nordic's debug-decryptable sec_tags are the host's (a test station's).
    ok(&mut m, "AT%KEYGEN=2147483648,2,0");
    for bad in [
        "AT%KEYGEN=16",
        "AT%KEYGEN=16,3,0",
        "AT%KEYGEN=16,2,2",
        "AT%KEYGEN=x,2,0",
        "AT%KEYGEN=16,2,0,\"NOPE\"",
        "AT%KEYGEN=16,2,0,\"CN=x\",\"10101\"",
        "AT%KEYGEN=16,2,0,CN=x",
        "AT%KEYGEN=4294967296,2,0",
        "AT%KEYGEN",
    ] {
        assert_eq!(result(&mut m, bad), "+CME ERROR: 50", "{bad}");
    }
}

#[test]
fn keygen_endorsement_key_is_reused() {
    let mut m = board(&[]);
    let spki = |m: &mut Modem| {
        let line = ok(m, "AT%KEYGEN=20,8,1").remove(0);
        keygen_parts(m, &line).0
    };
    let first = spki(&mut m);
    assert_eq!(spki(&mut m), first);
}

/// Decode and verify a JWT; returns (header, claims).
fn jwt_parts(
    jwt: &str,
    key: &VerifyingKey,
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let mut parts = jwt.split('.');
    let (h, c, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header_bytes = b64(h);
    let claims_bytes = b64(c);
    assert_eq!(header_bytes.len() % 3, 0, "padded like the modem");
    let sig = Signature::from_slice(&b64(s)).unwrap();
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|e| e.to_string())?;
    Ok((
        serde_json::from_slice(&header_bytes).unwrap(),
        serde_json::from_slice(&claims_bytes).unwrap(),
    ))
}

#[test]
fn jwt_with_the_identity_key() {
    let mut m = board(&[]);
    let uuid = m.identity().device_uuid.to_string();
    let fw = m.identity().firmware_uuid.to_string();
    let jwt = token(&ok(&mut m, "AT%JWT")[0]);
    let (header, claims) = jwt_parts(&jwt, &identity_key(&m)).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], format!("nRF9161.{uuid}"));
    assert!(
        claims["jti"]
            .as_str()
            .unwrap()
            .starts_with(&format!("nRF9161.{fw}."))
    );
    assert_eq!(claims["sub"], uuid);
    assert!(claims.get("iat").is_none() && claims.get("aud").is_none());
    let jwt = token(&ok(&mut m, "AT%JWT=0,0,\"\",\"\"")[0]);
    jwt_parts(&jwt, &identity_key(&m)).unwrap();
}

#[test]
fn jwt_times_come_from_the_modem_clock() {
    let mut m = board(&[]);
    let t0 = Instant::now();
    assert_eq!(
        m.handle("AT+CCLK=\"24/05/17,12:00:00+08\"", t0).result,
        FinalResult::Ok
    );
    let reply = m.handle(
        "AT%JWT=0,3600,\"sub-1\",\"aud-1\"",
        t0 + Duration::from_secs(10),
    );
    let (_, claims) = jwt_parts(&token(&reply.info[0]), &identity_key(&m)).unwrap();
    // 12:00:00 at UTC+2 is 10:00:00Z, plus 10 s.
    assert_eq!(claims["iat"], 1_715_940_010);
    assert_eq!(claims["exp"], 1_715_943_610);
    assert_eq!(claims["sub"], "sub-1");
    assert_eq!(claims["aud"], "aud-1");
    let read = m.handle("AT+CCLK?", t0 + Duration::from_secs(70));
    assert_eq!(read.info, ["+CCLK: \"24/05/17,12:01:10+08\""]);
    assert_eq!(result(&mut m, "AT+CCLK=\"24/13/17,12:00:00+08\""), "ERROR");
}

#[test]
fn jwt_with_a_sec_tag_key() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    assert_eq!(
        result(&mut m, "AT%JWT=0,0,\"s\",\"a\",42,2"),
        "+CME ERROR: 513"
    );
    let line = ok(&mut m, "AT%KEYGEN=42,2,1").remove(0);
    let spki = b64(token(&line).split_once('.').unwrap().0);
    let tag_key = VerifyingKey::from_public_key_der(&spki).unwrap();
    let jwt = token(&ok(&mut m, "AT%JWT=0,0,\"s\",\"a\",42,2")[0]);
    jwt_parts(&jwt, &tag_key).unwrap();
    assert!(jwt_parts(&jwt, &identity_key(&m)).is_err());
    // A written PEM private key signs too.
    let key = p256::SecretKey::from_slice(&[9u8; 32]).unwrap();
    let pem = key
        .to_sec1_pem(Default::default())
        .unwrap()
        .replace('\n', "\r\n");
    ok(&mut m, &format!("AT%CMNG=0,43,2,\"{}\"", pem.as_str()));
    let jwt = token(&ok(&mut m, "AT%JWT=0,0,\"s\",\"a\",43,2")[0]);
    jwt_parts(&jwt, &VerifyingKey::from(key.public_key())).unwrap();
    ok(&mut m, "AT%CMNG=0,44,2,\"not a key\"");
    assert_eq!(
        result(&mut m, "AT%JWT=0,0,\"s\",\"a\",44,2"),
        "+CME ERROR: 514"
    );
    assert_eq!(result(&mut m, "AT%JWT=1"), "+CME ERROR: 50");
    assert_eq!(
        result(&mut m, "AT%JWT=0,0,\"s\",\"a\",42"),
        "+CME ERROR: 50"
    );
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----";

#[test]
fn credential_store_write_list_read_delete() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    ok(&mut m, "AT+CFUN=4");
    ok(&mut m, &format!("AT%CMNG=0,16842753,0,\"{PEM}\""));
    let sha = hex::encode_upper(encode::sha256(PEM.as_bytes()));
    assert_eq!(
        ok(&mut m, "AT%CMNG=1,16842753"),
        [format!("%CMNG: 16842753,0,\"{sha}\"")]
    );
    assert_eq!(
        ok(&mut m, "AT%CMNG=2,16842753,0"),
        [format!("%CMNG: 16842753,0,\"{sha}\",\"{PEM}\"")]
    );
    let all = ok(&mut m, "AT%CMNG=1");
    assert!(
        all.iter().any(|l| l.starts_with("%CMNG: 4294967292,")),
        "{all:?}"
    );
    ok(&mut m, "AT%CMNG=3,16842753,0");
    assert!(ok(&mut m, "AT%CMNG=1,16842753").is_empty());
    assert_eq!(result(&mut m, "AT%CMNG=2,16842753,0"), "+CME ERROR: 513");
    assert_eq!(result(&mut m, "AT%CMNG=3,16842753,0"), "+CME ERROR: 513");
}

#[test]
fn credential_store_rules() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    ok(&mut m, "AT+CFUN=1");
    assert_eq!(result(&mut m, "AT%CMNG=0,1,0,\"x\""), "+CME ERROR: 518");
    assert_eq!(result(&mut m, "AT%CMNG=3,1,0"), "+CME ERROR: 518");
    ok(&mut m, "AT%CMNG=1");
    ok(&mut m, "AT+CFUN=0");
    ok(&mut m, "AT%CMNG=0,1,3,\"0011\"");
    assert_eq!(
        result(&mut m, "AT%CMNG=2,1,3"),
        "+CME ERROR: 514",
        "PSKs are not readable"
    );
    assert_eq!(
        result(&mut m, "AT%CMNG=0,4294967292,0,\"x\""),
        "+CME ERROR: 514"
    );
    assert_eq!(result(&mut m, "AT%CMNG=3,4294967292,10"), "+CME ERROR: 514");
    assert_eq!(result(&mut m, "AT%CMNG=0,1,6,\"x\""), "+CME ERROR: 514");
    for bad in [
        "AT%CMNG=0,1,0",
        "AT%CMNG=0,1,0,\"\"",
        "AT%CMNG=0,1,0,x",
        "AT%CMNG=9",
        "AT%CMNG=2,1",
        "AT%CMNG=0,1,12,\"x\"",
    ] {
        assert_eq!(result(&mut m, bad), "+CME ERROR: 50", "{bad}");
    }
    for tag in 2..(2 + STORE_CAPACITY as u64 - 1) {
        ok(&mut m, &format!("AT%CMNG=0,{tag},0,\"x\""));
    }
    assert_eq!(result(&mut m, "AT%CMNG=0,999,0,\"x\""), "+CME ERROR: 515");
    ok(&mut m, "AT%CMNG=0,2,0,\"overwrite is fine\"");
}

#[test]
fn boot_resets_the_session_but_not_the_flash() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    ok(&mut m, "AT+CFUN=4");
    ok(&mut m, "AT%KEYGEN=16,2,0");
    ok(&mut m, "AT+CFUN=1");
    m.boot();
    assert_eq!(ok(&mut m, "AT+CFUN?"), ["+CFUN: 0"]);
    assert_eq!(ok(&mut m, "AT+CMEE?"), ["+CMEE: 0"]);
    assert_eq!(ok(&mut m, "AT%CMNG=1,16").len(), 1);
    assert_eq!(
        result(&mut m, "AT%KEYGEN=16,2,0"),
        "ERROR",
        "519, shown as ERROR without CMEE"
    );
}

#[test]
fn stats_count_what_was_issued() {
    let mut m = board(&[]);
    run(&mut m, "AT");
    run(&mut m, "AT+NOPE");
    run(&mut m, "AT%ATTESTTOKEN");
    run(&mut m, "AT%KEYGEN=1,2,0");
    run(&mut m, "AT%JWT");
    run(&mut m, "AT%CMNG=0,1,0,\"x\"");
    let s = m.stats();
    assert_eq!(
        (
            s.commands,
            s.attest_tokens,
            s.keygen_tokens,
            s.jwts,
            s.cmng_writes
        ),
        (6, 1, 1, 1, 1)
    );
}

// ---- token faults, as a verifier would notice them ----

#[test]
fn fault_bad_signature_breaks_every_token() {
    let mut m = board(&["bad-signature"]);
    let tok = token(&ok(&mut m, "AT%ATTESTTOKEN")[0]);
    let (body, cose_b64) = tok.split_once('.').unwrap();
    assert!(verify_cose(&b64(cose_b64), &identity_key(&m), Some(&b64(body))).is_err());
    let tok = token(&ok(&mut m, "AT%KEYGEN=1,2,0")[0]);
    assert!(
        verify_cose(
            &b64(tok.split_once('.').unwrap().1),
            &identity_key(&m),
            None
        )
        .is_err()
    );
    let jwt = token(&ok(&mut m, "AT%JWT")[0]);
    assert!(jwt_parts(&jwt, &identity_key(&m)).is_err());
}

#[test]
fn fault_ignore_challenge() {
    let mut m = board(&["ignore-challenge"]);
    let challenge = "00112233445566778899aabbccddeeff";
    let tok = token(&ok(&mut m, &format!("AT%ATTESTTOKEN=\"{challenge}\""))[0]);
    let (body, cose_b64) = tok.split_once('.').unwrap();
    verify_cose(&b64(cose_b64), &identity_key(&m), Some(&b64(body))).unwrap();
    assert_ne!(
        hex::encode(bytes_of(&self_described(&b64(body))[4])),
        challenge
    );
}

#[test]
fn fault_replay_returns_the_first_token_again() {
    let mut m = board(&["replay"]);
    let a = ok(
        &mut m,
        "AT%ATTESTTOKEN=\"00112233445566778899aabbccddeeff\"",
    );
    let b = ok(
        &mut m,
        "AT%ATTESTTOKEN=\"ffeeddccbbaa99887766554433221100\"",
    );
    assert_eq!(a, b);
    let k1 = ok(&mut m, "AT%KEYGEN=1,2,0");
    let k2 = ok(&mut m, "AT%KEYGEN=2,2,0");
    assert_eq!(k1, k2);
    assert_eq!(ok(&mut m, "AT%JWT"), ok(&mut m, "AT%JWT"));
    // Without the fault, tokens differ.
    let mut honest = board(&[]);
    assert_ne!(
        ok(&mut honest, "AT%ATTESTTOKEN"),
        ok(&mut honest, "AT%ATTESTTOKEN")
    );
}

#[test]
fn fault_wrong_uuid_in_tokens_only() {
    let mut m = board(&["wrong-uuid"]);
    let real = m.identity().device_uuid;
    assert_eq!(
        ok(&mut m, "AT%DEVICEUUID"),
        [format!("%DEVICEUUID: {real}")]
    );
    let tok = token(&ok(&mut m, "AT%ATTESTTOKEN")[0]);
    let body = b64(tok.split_once('.').unwrap().0);
    verify_cose(
        &b64(tok.split_once('.').unwrap().1),
        &identity_key(&m),
        Some(&body),
    )
    .unwrap();
    assert_ne!(bytes_of(&self_described(&body)[1]), real.as_bytes());
    let line = ok(&mut m, "AT%KEYGEN=1,2,0").remove(0);
    assert_ne!(bytes_of(&keygen_parts(&m, &line).1[1]), real.as_bytes());
}

#[test]
fn fault_bad_digest() {
    let mut m = board(&["bad-digest"]);
    let line = ok(&mut m, "AT%KEYGEN=1,2,0").remove(0);
    let (der, items) = keygen_parts(&m, &line);
    verify_csr(&der);
    assert_ne!(bytes_of(&items[3]), encode::sha256(&der));
}

#[test]
fn fault_untrusted_key_signs_with_another_key() {
    let mut m = board(&["untrusted-key"]);
    let tok = token(&ok(&mut m, "AT%ATTESTTOKEN")[0]);
    let (body, cose_b64) = tok.split_once('.').unwrap();
    assert!(verify_cose(&b64(cose_b64), &identity_key(&m), Some(&b64(body))).is_err());
    assert!(
        verify_cose(
            &b64(cose_b64),
            m.rogue_key.verifying_key(),
            Some(&b64(body))
        )
        .is_ok()
    );
}

#[test]
fn fault_legacy_csr_has_null_parameters() {
    let mut m = board(&["legacy-csr"]);
    let line = ok(&mut m, "AT%KEYGEN=1,2,0").remove(0);
    let (der, items) = keygen_parts(&m, &line);
    assert!(hex::encode(&der).contains("300c06082a8648ce3d0403020500"));
    assert_eq!(
        bytes_of(&items[3]),
        encode::sha256(&der),
        "digest over the bytes as sent"
    );
    verify_csr(&der);
}

#[test]
fn fault_cme_on_a_chosen_command() {
    let mut m = board(&["cme=523@KEYGEN"]);
    assert_eq!(result(&mut m, "AT%KEYGEN=1,2,0"), "ERROR");
    ok(&mut m, "AT+CMEE=1");
    assert_eq!(result(&mut m, "AT%KEYGEN=1,2,0"), "+CME ERROR: 523");
    ok(&mut m, "AT%ATTESTTOKEN");
    let mut at = board(&["cme=100@AT"]);
    assert_eq!(result(&mut at, "AT"), "ERROR");
}

// ---- substitute: genuine tokens of another kind under the command's prefix ----

/// The kind of a token text, by its shape: a JWT has three parts; part 1
/// of an identity token is CBOR tag 55799, of a key-generation token DER.
fn shape(tok: &str) -> &'static str {
    match tok.split('.').count() {
        3 => "jwt",
        _ if b64(tok.split_once('.').unwrap().0).starts_with(&[0xd9, 0xd9, 0xf7]) => "identity",
        _ => "keygen",
    }
}

#[test]
fn substitute_keygen_for_attest_is_made_for_the_last_sec_tag_and_not_stored() {
    let mut m = board(&["substitute=keygen@ATTESTTOKEN"]);
    let challenge = "00112233445566778899aabbccddeeff";
    let attest = format!("AT%ATTESTTOKEN=\"{challenge}\"");
    // No sec_tag named yet: nRF Cloud's default, the plan's usual one.
    let line = ok(&mut m, &attest).remove(0);
    assert!(line.starts_with("%ATTESTTOKEN: \""), "{line}");
    let (der, items) = keygen_parts(&m, &line);
    assert_eq!(int_of(&items[0]), 9, "a CSR");
    assert_eq!(bytes_of(&items[2]), encode::sec_tag_cbor(16_842_753));
    assert_eq!(bytes_of(&items[3]), encode::sha256(&der));
    verify_csr(&der);
    // The last sec_tag a host named, here in a %CMNG list.
    ok(&mut m, "AT%CMNG=1,42");
    let line = ok(&mut m, &attest).remove(0);
    let (_, items) = keygen_parts(&m, &line);
    assert_eq!(bytes_of(&items[2]), encode::sec_tag_cbor(42));
    // A relayed token leaves the credential store alone.
    assert!(ok(&mut m, "AT%CMNG=1,16842753").is_empty());
    assert!(ok(&mut m, "AT%CMNG=1,42").is_empty());
    // Counted by kind: two key-generation tokens, no identity token.
    assert_eq!((m.stats().attest_tokens, m.stats().keygen_tokens), (0, 2));
    // The delay is the command's own.
    assert_eq!(run(&mut m, &attest).kind, CommandKind::AttestToken);
}

#[test]
fn substitute_format_at_keygen_keeps_the_request_and_the_rules() {
    let mut m = board(&["substitute=keygen-pubkey@KEYGEN"]);
    ok(&mut m, "AT+CMEE=1");
    ok(&mut m, "AT+CFUN=1");
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "+CME ERROR: 518");
    ok(&mut m, "AT+CFUN=4");
    let reply = run(&mut m, "AT%KEYGEN=16,2,0");
    assert_eq!(reply.kind, CommandKind::KeygenCsr, "asked for a CSR");
    let (der, items) = keygen_parts(&m, &reply.info[0]);
    assert_eq!(int_of(&items[0]), 8, "answered with a public key");
    assert_eq!(bytes_of(&items[2]), encode::sec_tag_cbor(16));
    // The key went into the slot as usual, so the slot is now occupied.
    let sha = hex::encode_upper(encode::sha256(&der));
    assert_eq!(
        ok(&mut m, "AT%CMNG=1,16,2"),
        [format!("%CMNG: 16,2,\"{sha}\"")]
    );
    assert_eq!(result(&mut m, "AT%KEYGEN=16,2,0"), "+CME ERROR: 519");

    let mut csr = board(&["substitute=keygen@KEYGEN"]);
    let line = ok(&mut csr, "AT%KEYGEN=17,2,1").remove(0);
    let (der, items) = keygen_parts(&csr, &line);
    assert_eq!(int_of(&items[0]), 9);
    verify_csr(&der);
}

#[test]
fn substitute_identity_elsewhere_carries_the_boards_own_nonce() {
    let mut m = board(&["substitute=identity@JWT", "substitute=identity@KEYGEN"]);
    for command in ["AT%JWT", "AT%KEYGEN=16,2,0"] {
        let line = ok(&mut m, command).remove(0);
        let prefix = if command == "AT%JWT" {
            "%JWT: \""
        } else {
            "%KEYGEN: \""
        };
        assert!(line.starts_with(prefix), "{line}");
        let tok = token(&line);
        assert_eq!(shape(&tok), "identity");
        let (body, cose_b64) = tok.split_once('.').unwrap();
        let body = b64(body);
        verify_cose(&b64(cose_b64), &identity_key(&m), Some(&body)).unwrap();
        assert_eq!(bytes_of(&self_described(&body)[4]).len(), 16);
    }
    assert_eq!((m.stats().attest_tokens, m.stats().jwts), (2, 0));
    // The diagonal is the genuine answer: the challenge is the nonce.
    let mut same = board(&["substitute=identity@ATTESTTOKEN"]);
    let challenge = "ffeeddccbbaa99887766554433221100";
    let tok = token(&ok(&mut same, &format!("AT%ATTESTTOKEN=\"{challenge}\""))[0]);
    let body = b64(tok.split_once('.').unwrap().0);
    assert_eq!(hex::encode(bytes_of(&self_described(&body)[4])), challenge);
}

#[test]
fn substitute_jwt_elsewhere_is_signed_by_the_identity_key() {
    let mut m = board(&["substitute=jwt@ATTESTTOKEN"]);
    let line = ok(&mut m, "AT%ATTESTTOKEN").remove(0);
    assert!(line.starts_with("%ATTESTTOKEN: \""), "{line}");
    let tok = token(&line);
    assert_eq!(shape(&tok), "jwt");
    let (_, claims) = jwt_parts(&tok, &identity_key(&m)).unwrap();
    let uuid = m.identity().device_uuid;
    assert_eq!(claims["iss"], format!("nRF9161.{uuid}"));
    assert_eq!(claims["sub"], uuid.to_string());
    assert!(claims.get("iat").is_none() && claims.get("exp").is_none());
}

#[test]
fn the_ownership_key_is_the_host_s_to_write_and_claim_needs_it() {
    let mut m = board(&[]);
    ok(&mut m, "AT+CMEE=1");
    assert_eq!(result(&mut m, "AT%CLAIMTOKEN=7"), "+CME ERROR: 529");
    ok(&mut m, "AT%CMNG=0,7,9,\"owner\"");
    let lines = ok(&mut m, "AT%CLAIMTOKEN=7");
    assert!(lines[0].starts_with("%CLAIMTOKEN: \""), "{lines:?}");
    assert_eq!(
        result(&mut m, "AT%CLAIMTOKEN=7,\"not hex\""),
        "+CME ERROR: 50"
    );
}
