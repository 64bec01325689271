//! Tables: each command's text and deadline class, and each answer parsed
//! as the client assembles it (framing, echo, notifications, final result).
use std::time::Duration;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::*;
use crate::at::client::{Exchange, Step};
use crate::at::codec::LineCodec;

fn resp(lines: &[&str]) -> Response {
    Response {
        lines: lines.iter().map(|s| s.to_string()).collect(),
    }
}

/// What `cmd` answers when the modem sends `bytes`, assembled and parsed
/// as [`Client::send`] does.
fn answer<C: Command>(cmd: &C, dialect: Dialect, bytes: &[u8]) -> Result<C::Response, AtError> {
    let mut codec = LineCodec::new(16 * 1024);
    let mut buf = BytesMut::from(bytes);
    let mut exchange = Exchange::new(&cmd.text(), dialect);
    while let Some(frame) = codec.decode_eof(&mut buf).expect("the codec never fails") {
        if let Step::Done(result) = exchange.feed(frame) {
            return cmd.parse(&result?);
        }
    }
    panic!("no final result for {}", cmd.text())
}

const SHA: &str = "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1";
const UUID: &str = "25c95751-efa4-40d4-8b4a-1dcaab81fac9";

fn row<C: Command>(cmd: &C) -> (String, Deadline) {
    (cmd.text(), C::DEADLINE)
}

/// Every command, as the station sends it, with its text and class.
fn every_command() -> Vec<((String, Deadline), &'static str, Deadline)> {
    let t = time::macros::datetime!(2024-03-05 23:59:07 +01:00);
    let keygen = |attributes, key_usage| {
        Keygen::new(16842753, KeyFormat::Csr, attributes, key_usage).expect("valid")
    };
    let jwt = Jwt::new(&JwtRequest {
        exp_delta: Some(600),
        subject: Some("s".into()),
        audience: None,
        key: Some((5, 2)),
    })
    .expect("valid");
    use Deadline as D;
    vec![
        (row(&NumericErrors), "AT+CMEE=1", D::Command),
        (row(&Imei::Quoted), "AT+CGSN=1", D::Command),
        (row(&Imei::Bare), "AT+CGSN", D::Command),
        (row(&Model), "AT+CGMM", D::Command),
        (row(&Firmware), "AT+CGMR", D::Command),
        (row(&FirmwareUuid), "AT%XMODEMUUID", D::Command),
        (row(&DeviceUuid), "AT%DEVICEUUID", D::Command),
        (row(&HwVersion), "AT%HWVERSION", D::Command),
        (row(&ReadFunctionalMode), "AT+CFUN?", D::Command),
        (
            row(&SetFunctionalMode(FunctionalMode::Offline)),
            "AT+CFUN=4",
            D::Cfun,
        ),
        (
            row(&SetFunctionalMode(FunctionalMode::Other(7))),
            "AT+CFUN=7",
            D::Cfun,
        ),
        (
            row(&SetClock(t)),
            "AT+CCLK=\"24/03/05,22:59:07+00\"",
            D::Command,
        ),
        (
            row(&AttestToken { challenge: None }),
            "AT%ATTESTTOKEN",
            D::Attest,
        ),
        (
            row(&AttestToken {
                challenge: Some([0xab; 16]),
            }),
            "AT%ATTESTTOKEN=\"abababababababababababababababab\"",
            D::Attest,
        ),
        (
            row(&keygen(None, None)),
            "AT%KEYGEN=16842753,2,0",
            D::Keygen,
        ),
        (
            row(&keygen(Some("CN=x"), None)),
            "AT%KEYGEN=16842753,2,0,\"CN=x\"",
            D::Keygen,
        ),
        (
            row(&keygen(None, Some("101010000"))),
            "AT%KEYGEN=16842753,2,0,,\"101010000\"",
            D::Keygen,
        ),
        (
            row(&keygen(Some("O=A,CN=x"), Some("101010000"))),
            "AT%KEYGEN=16842753,2,0,\"O=A,CN=x\",\"101010000\"",
            D::Keygen,
        ),
        (
            row(&Keygen::new(1, KeyFormat::PublicKey, None, None).expect("valid")),
            "AT%KEYGEN=1,2,1",
            D::Keygen,
        ),
        (
            row(&Jwt::new(&JwtRequest::default()).expect("valid")),
            "AT%JWT=0,0,\"\",\"\"",
            D::Jwt,
        ),
        (row(&jwt), "AT%JWT=0,600,\"s\",\"\",5,2", D::Jwt),
        (
            row(&WriteCredential::new(7, CredentialType::RootCa, "a\r\nb").expect("valid")),
            "AT%CMNG=0,7,0,\"a\r\nb\"",
            D::Cmng,
        ),
        (
            row(&ListCredentials { sec_tag: None }),
            "AT%CMNG=1",
            D::Cmng,
        ),
        (
            row(&ListCredentials { sec_tag: Some(7) }),
            "AT%CMNG=1,7",
            D::Cmng,
        ),
        (
            row(&ReadCredential {
                sec_tag: 7,
                kind: CredentialType::ClientCert,
            }),
            "AT%CMNG=2,7,1",
            D::Cmng,
        ),
        (
            row(&DeleteCredential {
                sec_tag: 7,
                kind: CredentialType::ClientKey,
            }),
            "AT%CMNG=3,7,2",
            D::Cmng,
        ),
    ]
}

#[test]
fn each_command_writes_its_syntax() {
    for ((text, _), want, _) in every_command() {
        assert_eq!(text, want);
    }
}

#[test]
fn each_command_has_its_deadline_class() {
    for ((text, class), _, want) in every_command() {
        assert_eq!(class, want, "{text}");
    }
}

/// A command typed by hand gets the deadline its typed command has.
#[test]
fn a_typed_in_command_gets_its_typed_commands_deadline() {
    // Every class a different duration, so the class is visible.
    let t = CommandTimeouts {
        command: Duration::from_secs(5),
        attest: Duration::from_secs(11),
        keygen: Duration::from_secs(60),
        jwt: Duration::from_secs(12),
        cmng: Duration::from_secs(13),
        cfun: Duration::from_secs(14),
    };
    for ((text, class), _, _) in every_command() {
        assert_eq!(deadline_for_text(&text, &t), t.of(class), "{text}");
    }
    let secs = |line| deadline_for_text(line, &t).as_secs();
    assert_eq!(secs("at%keygen=1,2,0"), 60);
    assert_eq!(secs("AT+CFUN?;+CFUN=4"), 14);
    assert_eq!(secs("AT%CMNG=1;%KEYGEN=1,2,0"), 60);
    assert_eq!(secs("AT+CFUN=?"), 5);
    assert_eq!(secs("AT+CEREG?"), 5);
    assert_eq!(secs(""), 5);
    assert_eq!(secs("not a command"), 5);
}

#[test]
fn arguments_that_cannot_be_sent_are_refused_when_the_command_is_made() {
    let invalid = |r: Result<(), AtError>| matches!(r, Err(AtError::InvalidArgument { .. }));
    let keygen = |a, u| Keygen::new(1, KeyFormat::Csr, a, u).map(drop);
    assert!(invalid(keygen(Some("CN=\"x"), None)));
    assert!(invalid(keygen(Some("CN=x\r\n"), None)));
    assert!(invalid(keygen(None, Some("12"))));
    assert!(invalid(keygen(None, Some("10101000x"))));
    let jwt = |subject: &str, audience: &str| {
        Jwt::new(&JwtRequest {
            subject: Some(subject.into()),
            audience: Some(audience.into()),
            ..JwtRequest::default()
        })
        .map(drop)
    };
    assert!(invalid(jwt("a\"b", "")));
    assert!(invalid(jwt("", "a\nb")));
    assert!(jwt("s", "a").is_ok());
    assert!(invalid(
        WriteCredential::new(1, CredentialType::RootCa, "a\"b").map(drop)
    ));
}

#[test]
fn identity_answers() {
    let raw = Dialect::RAW;
    let shell = Dialect::SHELL;
    let imei = "352656100367872";
    // A notification between the answer and OK is routed aside.
    assert_eq!(
        answer(
            &Imei::Quoted,
            raw,
            b"+CGSN: \"352656100367872\"\r\n+CEREG: 5\r\nOK\r\n"
        )
        .unwrap(),
        imei
    );
    assert_eq!(
        answer(
            &Imei::Quoted,
            shell,
            b"at 'AT+CGSN=1'\r\n+CGSN: \"352656100367872\"\r\r\n\r\nOK\r\r\n\r\n\x1b[1;32muart:~$ \x1b[0m"
        )
        .unwrap(),
        imei
    );
    assert_eq!(
        answer(&Imei::Bare, raw, b"%XSIM: 1\r\n352656100367872\r\nOK\r\n").unwrap(),
        imei
    );
    // The field as printed: whether it is an IMEI is judged elsewhere.
    assert_eq!(
        answer(&Imei::Quoted, raw, b"+CGSN: \"12345\"\r\nOK\r\n").unwrap(),
        "12345"
    );
    assert!(matches!(
        answer(&Imei::Quoted, raw, b"+CGSN: \"1\",\"2\"\r\nOK\r\n"),
        Err(AtError::Malformed { .. })
    ));
    assert_eq!(
        answer(&Model, raw, b"nRF9161-LACA\r\n%CESQ: 54,2,16,2\r\nOK\r\n").unwrap(),
        "nRF9161-LACA"
    );
    assert!(matches!(
        answer(&Model, raw, b"%CESQ: 54,2,16,2\r\nOK\r\n"),
        Err(AtError::Malformed { .. })
    ));
    assert_eq!(
        answer(&Firmware, raw, b"mfw_nrf91x1_2.0.1\r\nOK\r\n").unwrap(),
        "mfw_nrf91x1_2.0.1"
    );
    assert_eq!(
        answer(
            &FirmwareUuid,
            raw,
            format!("%XMODEMUUID: {UUID}\r\n+CEREG: 1\r\nOK\r\n").as_bytes()
        )
        .unwrap()
        .to_string(),
        UUID
    );
    assert_eq!(
        answer(
            &DeviceUuid,
            raw,
            format!("%DEVICEUUID: \"{UUID}\"\r\nOK\r\n").as_bytes()
        )
        .unwrap()
        .to_string(),
        UUID
    );
    assert!(matches!(
        answer(&DeviceUuid, raw, b"%DEVICEUUID: 1234\r\nOK\r\n"),
        Err(AtError::Malformed { .. })
    ));
    assert!(matches!(
        answer(&DeviceUuid, raw, b"ERROR\r\n"),
        Err(AtError::Error { .. })
    ));
    assert_eq!(
        answer(&HwVersion, raw, b"%HWVERSION: nRF9161 LACA A0A\r\nOK\r\n").unwrap(),
        "nRF9161 LACA A0A"
    );
    answer(&NumericErrors, raw, b"OK\r\n").expect("answered OK");
}

#[test]
fn functional_mode_and_clock_answers() {
    let raw = Dialect::RAW;
    assert_eq!(
        answer(&ReadFunctionalMode, raw, b"+CEREG: 2\r\n+CFUN: 4\r\nOK\r\n").unwrap(),
        FunctionalMode::Offline
    );
    assert!(matches!(
        answer(&ReadFunctionalMode, raw, b"+CFUN: 400\r\nOK\r\n"),
        Err(AtError::Malformed { .. })
    ));
    let offline = SetFunctionalMode(FunctionalMode::Offline);
    answer(&offline, raw, b"OK\r\n").expect("answered OK");
    assert!(matches!(
        answer(&offline, raw, b"+CME ERROR: 528\r\n"),
        Err(AtError::Cme { code: 528, .. })
    ));
    let t = time::macros::datetime!(2024-03-05 22:59:07 UTC);
    answer(
        &SetClock(t),
        Dialect::SHELL,
        b"at 'AT+CCLK=\"24/03/05,22:59:07+00\"'\r\nOK\r\n",
    )
    .expect("answered OK");
}

#[test]
fn token_answers() {
    let raw = Dialect::RAW;
    let attest = AttestToken {
        challenge: Some([1; 16]),
    };
    assert_eq!(
        answer(
            &attest,
            raw,
            b"%ATTESTTOKEN: \"2dn3.0oRD\"\r\n+CEREG: 5,\"4400\",\"0001\",7\r\nOK\r\n"
        )
        .unwrap(),
        "2dn3.0oRD"
    );
    // A base64 CSR holds the letters OK; only a whole line `OK` ends it.
    let keygen = Keygen::new(16842753, KeyFormat::Csr, None, None).unwrap();
    assert_eq!(
        answer(
            &keygen,
            raw,
            b"%KEYGEN: \"MIIBOKxyzOK-_OK.0oRDOK\"\r\n%XSIM: 1\r\nOK\r\n"
        )
        .unwrap(),
        "MIIBOKxyzOK-_OK.0oRDOK"
    );
    assert_eq!(
        answer(
            &keygen,
            Dialect::SHELL,
            b"at 'AT%KEYGEN=16842753,2,0'\r\n%KEYGEN: \"OK.OK\"\r\r\n\r\nOK\r\r\n\r\n"
        )
        .unwrap(),
        "OK.OK"
    );
    assert!(matches!(
        answer(&keygen, raw, b"+CME ERROR: 519\r\n"),
        Err(AtError::Cme { code: 519, .. })
    ));
    let jwt = Jwt::new(&JwtRequest::default()).unwrap();
    assert_eq!(
        answer(&jwt, raw, b"%JWT: \"eyJh.eyJz.c2ln\"\r\nOK\r\n").unwrap(),
        "eyJh.eyJz.c2ln"
    );
    // Each command reads its own prefix: another command's token is missing.
    for bad in [
        &b"%JWT: \"eyJh.eyJz.c2ln\"\r\nOK\r\n"[..],
        b"%ATTESTTOKEN: 2dn3.0oRD\r\nOK\r\n",
        b"%ATTESTTOKEN: \"nodot\"\r\nOK\r\n",
        b"%ATTESTTOKEN: \"a b.c\"\r\nOK\r\n",
        b"%ATTESTTOKEN: \".x\"\r\nOK\r\n",
    ] {
        assert!(
            matches!(answer(&attest, raw, bad), Err(AtError::Malformed { .. })),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn credential_answers() {
    let raw = Dialect::RAW;
    let list = answer(
        &ListCredentials { sec_tag: None },
        raw,
        format!(
            "%CMNG: 16842753,0,\"{SHA}\"\r\n%CESQ: 54,2,16,2\r\n%CMNG: 4294967292,12,\"{}\"\r\nOK\r\n",
            SHA.to_lowercase()
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].kind, CredentialType::RootCa);
    assert_eq!(list[1].sec_tag, 4294967292);
    assert_eq!(list[1].kind, CredentialType::Other(12));
    assert_eq!(list[1].sha256, SHA);
    assert_eq!(
        answer(&ListCredentials { sec_tag: Some(3) }, raw, b"OK\r\n").unwrap(),
        vec![]
    );

    let read = ReadCredential {
        sec_tag: 7,
        kind: CredentialType::ClientCert,
    };
    let pem = "-----BEGIN CERTIFICATE-----\r\nMIIBOK\r\n-----END CERTIFICATE-----\r\n";
    let (entry, content) = answer(
        &read,
        raw,
        format!("%CMNG: 7,1,\"{SHA}\",\"{pem}\"\r\n+CEREG: 1\r\nOK\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(entry.kind, CredentialType::ClientCert);
    assert_eq!(content, pem);
    // The shell prints each `\n` as `\r\n`: the content comes back as stored.
    let printed = pem.replace('\n', "\r\n");
    let (_, content) = answer(
        &read,
        Dialect::SHELL,
        format!("at 'AT%CMNG=2,7,1'\r\n%CMNG: 7,1,\"{SHA}\",\"{printed}\"\r\r\n\r\nOK\r\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(content, pem);
    let delete = DeleteCredential {
        sec_tag: 7,
        kind: CredentialType::ClientCert,
    };
    assert!(matches!(
        answer(&delete, raw, b"+CME ERROR: 513\r\n"),
        Err(AtError::Cme { code: 513, .. })
    ));
    let write = WriteCredential::new(7, CredentialType::RootCa, pem).unwrap();
    answer(&write, raw, b"OK\r\n").expect("answered OK");
}

#[test]
fn firmware_versions() {
    let v = |a, b, c| {
        Some(FirmwareVersion {
            major: a,
            minor: b,
            patch: c,
        })
    };
    assert_eq!(parse_firmware_version("mfw_nrf91x1_2.0.1"), v(2, 0, 1));
    assert_eq!(parse_firmware_version("mfw_nrf9160_1.3.5-FOTA"), v(1, 3, 5));
    assert_eq!(parse_firmware_version("mfw_nrf9160_1.3"), None);
    // Nordic's rule: one x.y.z of 1-3 digits each, bounded by - or _ or the ends.
    assert_eq!(
        parse_firmware_version("mfw_nrf9160_1.3.0-FOTA-TEST"),
        v(1, 3, 0)
    );
    assert_eq!(parse_firmware_version("mfw_nrf9160_1.2.7"), v(1, 2, 7));
    assert_eq!(parse_firmware_version("mfw_nrf9151-ntn_1.0.0"), v(1, 0, 0));
    assert_eq!(parse_firmware_version("1.3.1"), v(1, 3, 1));
    assert_eq!(parse_firmware_version("x1.2.3.4"), None);
    assert_eq!(parse_firmware_version("mfw_1.2.3_2.0.0"), None);
    assert_eq!(parse_firmware_version("mfw_nrf91x1_1000.0.1"), None);
    assert_eq!(parse_firmware_version("99999999999.1.1 0.0.7"), None);
    assert_eq!(parse_firmware_version(""), None);
    assert!(v(1, 3, 2) > v(1, 3, 0));
    let ntn = ModemFirmware::parse("mfw_nrf9151-ntn_1.0.0");
    assert!(ntn.ntn && !ntn.below(MIN_FOR_CMNG_SHA));
    let old = ModemFirmware::parse("mfw_nrf9160_1.2.7");
    assert!(old.below(MIN_FOR_TOKENS) && !old.ntn);
    let unknown = ModemFirmware::parse("nrf9160 custom build");
    assert_eq!(unknown.version, None);
    assert!(!unknown.below(MIN_FOR_TOKENS));
    assert_eq!(FirmwareVersion::parse("2.0.0"), v(2, 0, 0));
    assert_eq!(FirmwareVersion::parse("2.0"), None);
    assert_eq!(FirmwareVersion::parse("2.0.0.1"), None);
}

#[test]
fn imei_forms() {
    assert_eq!(
        parse_imei(&resp(&["+CGSN: \"352656100367872\""])).unwrap(),
        "352656100367872"
    );
    assert_eq!(
        parse_imei(&resp(&["352656100367872"])).unwrap(),
        "352656100367872"
    );
    for not_an_imei in [
        "12345",
        "imei 352656100367872",
        "352656100367873",
        "+CGSN: \"000000000000001\"",
    ] {
        assert!(
            matches!(
                parse_imei(&resp(&[not_an_imei])),
                Err(AtError::Malformed { .. })
            ),
            "{not_an_imei}"
        );
    }
    // The field as printed, for the identify step to judge.
    assert_eq!(
        parse_imei_field(&resp(&["+CGSN: \"junk352656100367872\""])).unwrap(),
        "junk352656100367872"
    );
    assert_eq!(parse_imei_field(&resp(&["12345"])).unwrap(), "12345");
    assert!(parse_imei(&resp(&[])).is_err());
}

#[test]
fn cmng_list_and_read() {
    let list = parse_cmng_list(&resp(&[
        &format!("%CMNG: 16842753,0,\"{SHA}\""),
        &format!("%CMNG: 4294967292,12,\"{}\"", SHA.to_lowercase()),
    ]))
    .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].sha256, SHA);
    assert!(parse_cmng_list(&resp(&["%CMNG: 1,0,\"nothex\""])).is_err());
    assert_eq!(parse_cmng_list(&resp(&[])).unwrap(), vec![]);

    let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n";
    let (e, content) =
        parse_cmng_read(&resp(&[&format!("%CMNG: 7,1,\"{SHA}\",\"{pem}\"")])).unwrap();
    assert_eq!(e.kind, CredentialType::ClientCert);
    assert_eq!(content, pem);
    assert!(parse_cmng_read(&resp(&[&format!("%CMNG: 7,1,\"{SHA}\"")])).is_err());
}

#[test]
fn tokens() {
    assert_eq!(
        parse_token(&resp(&["%ATTESTTOKEN: \"2dn3.0oRD\""]), "%ATTESTTOKEN:").unwrap(),
        "2dn3.0oRD"
    );
    for bad in [
        "%ATTESTTOKEN: 2dn3.0oRD",
        "%ATTESTTOKEN: \"nodot\"",
        "%ATTESTTOKEN: \"a b.c\"",
        "%ATTESTTOKEN: \".x\"",
    ] {
        assert!(
            parse_token(&resp(&[bad]), "%ATTESTTOKEN:").is_err(),
            "{bad}"
        );
    }
}

#[test]
fn pem_line_endings_and_digest() {
    assert_eq!(pem_crlf("a\nb\n"), "a\r\nb\r\n");
    assert_eq!(pem_crlf("a\r\nb"), "a\r\nb");
    assert_eq!(
        expected_sha256("a\nb", Dialect::SHELL),
        expected_sha256("a\r\nb", Dialect::RAW)
    );
    assert_eq!(
        expected_sha256("a\r\nb", Dialect::SHELL),
        expected_sha256("a\r\nb", Dialect::RAW)
    );
    assert_ne!(
        expected_sha256("a\nb", Dialect::RAW),
        expected_sha256("a\r\nb", Dialect::RAW)
    );
    assert_eq!(expected_sha256("", Dialect::RAW).len(), 64);
}

#[test]
fn cfun_and_uuid() {
    assert_eq!(
        parse_cfun(&resp(&["+CFUN: 4"])).unwrap(),
        FunctionalMode::Offline
    );
    assert_eq!(
        parse_cfun(&resp(&["+CFUN: 2"])).unwrap(),
        FunctionalMode::Other(2)
    );
    assert!(parse_cfun(&resp(&["+CFUN: 400"])).is_err());
    let u = parse_uuid(&resp(&[&format!("%XMODEMUUID: {UUID}")]), "%XMODEMUUID:").unwrap();
    assert_eq!(u.to_string(), UUID);
    assert_eq!(
        parse_hw_version(&resp(&["%HWVERSION: nRF9161 LACA A0A"])).unwrap(),
        "nRF9161 LACA A0A"
    );
}
