//! Client and typed-modem tests over an in-memory duplex with a scripted peer.

use std::time::Duration;

use nrf91_at::at::{AtError, Client, ClientOptions, Dialect};
use nrf91_at::modem::{
    AttestToken, CredentialType, DeleteCredential, FunctionalMode, KeyFormat, Keygen,
    ListCredentials, Modem, NumericErrors, ReadCredential, ReadFunctionalMode, SetFunctionalMode,
    WriteCredential,
};
use testkit::at::{lines, script_peer, step};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

/// The deadline of a free-text command in these tests.
const DEADLINE: Duration = Duration::from_secs(5);

fn client(
    dialect: Dialect,
) -> (
    Client<DuplexStream>,
    tokio::sync::mpsc::Receiver<nrf91_at::at::Notification>,
    DuplexStream,
) {
    let (ours, theirs) = duplex(64 * 1024);
    let options = ClientOptions {
        dialect,
        ..ClientOptions::default()
    };
    let (c, rx) = Client::new(ours, options);
    (c, rx, theirs)
}

#[tokio::test]
async fn command_response_and_notifications() {
    let (mut c, mut rx, peer) = client(Dialect::RAW);
    let peer = script_peer(
        peer,
        vec![step(
            "AT+CGSN=1",
            "+CGSN: \"352656100367872\"\r\n%XSIM: 1\r\nOK\r\n",
        )],
    );
    let r = c.command_with_timeout("AT+CGSN=1", DEADLINE).await.unwrap();
    assert_eq!(r, lines(&["+CGSN: \"352656100367872\""]));
    let n = rx.recv().await.unwrap();
    assert_eq!(n.line, "%XSIM: 1");
    assert!(n.received <= std::time::SystemTime::now());
    peer.await.unwrap();
}

#[tokio::test]
async fn shell_dialect_quotes_and_strips_echo() {
    let (mut c, _rx, peer) = client(Dialect::SHELL);
    let peer = script_peer(
        peer,
        vec![step(
            "at 'AT%CMNG=0,1,0,\"a\\nb\"'",
            "at 'AT%CMNG=0,1,0,\"a\\nb\"'\r\nOK\r\nuart:~$ ",
        )],
    );
    let r = c
        .command_with_timeout("AT%CMNG=0,1,0,\"a\r\nb\"", DEADLINE)
        .await
        .unwrap();
    assert!(r.lines.is_empty(), "{r:?}");
    peer.await.unwrap();
}

#[tokio::test]
async fn detects_raw_and_shell() {
    // A raw AT host rejects the shell form at once.
    let (mut c, _rx, peer) = client(Dialect::SHELL);
    let peer = script_peer(
        peer,
        vec![
            step("at 'AT+CGSN'", "ERROR\r\n"),
            step("AT+CGSN", "352656100367872\r\nOK\r\n"),
            // Believed only once a second command confirms it.
            step("AT+CGSN=1", "+CGSN: \"352656100367872\"\r\nOK\r\n"),
        ],
    );
    assert_eq!(c.detect_dialect().await.unwrap(), Dialect::RAW);
    assert_eq!(c.dialect(), Dialect::RAW);
    peer.await.unwrap();

    let (mut c, _rx, peer) = client(Dialect::RAW);
    let peer = script_peer(
        peer,
        vec![
            step(
                "at 'AT+CGSN'",
                "\x1b[1;32muart:~$ \x1b[mat 'AT+CGSN'\r\n352656100367872\r\nOK\r\nuart:~$ ",
            ),
            step(
                "at 'AT+CGSN=1'",
                "at 'AT+CGSN=1'\r\n+CGSN: \"352656100367872\"\r\nOK\r\nuart:~$ ",
            ),
        ],
    );
    assert_eq!(c.detect_dialect().await.unwrap(), Dialect::SHELL);
    assert_eq!(c.dialect(), Dialect::SHELL);
    peer.await.unwrap();
}

/// The dialect the port's last board spoke is tried first: a raw board is
/// asked in raw at once, never refused in the shell's form; a board of the
/// other dialect is still found after it.
#[tokio::test]
async fn detection_tries_the_known_dialect_first() {
    let (mut c, _rx, peer) = client(Dialect::SHELL);
    let peer = script_peer(
        peer,
        vec![
            step("AT+CGSN", "352656100367872\r\nOK\r\n"),
            step("AT+CGSN=1", "+CGSN: \"352656100367872\"\r\nOK\r\n"),
        ],
    );
    let found = c.detect_dialect_trying_first(Some(Dialect::RAW)).await;
    assert_eq!(found.unwrap(), Dialect::RAW);
    peer.await.unwrap();

    // Known raw, but this board runs the shell: raw's probe goes
    // unanswered (a shell ignores it), then the shell's form is tried.
    let (mut c, _rx, peer) = client(Dialect::RAW);
    let peer = script_peer(
        peer,
        vec![
            step("AT+CGSN", ""),
            step(
                "at 'AT+CGSN'",
                "at 'AT+CGSN'\r\n352656100367872\r\nOK\r\nuart:~$ ",
            ),
            step(
                "at 'AT+CGSN=1'",
                "at 'AT+CGSN=1'\r\n+CGSN: \"352656100367872\"\r\nOK\r\nuart:~$ ",
            ),
        ],
    );
    let found = c.detect_dialect_trying_first(Some(Dialect::RAW)).await;
    assert_eq!(found.unwrap(), Dialect::SHELL);
    peer.await.unwrap();
}

#[tokio::test]
async fn detection_fails_on_a_silent_peer() {
    let (mut c, _rx, _peer) = client(Dialect::RAW);
    let err = c.detect_dialect().await.unwrap_err();
    assert!(matches!(err, AtError::Timeout { .. }), "{err:?}");
    assert_eq!(c.dialect(), Dialect::RAW, "dialect restored");
}

#[tokio::test]
async fn timeout_reports_partial_lines() {
    let (mut c, _rx, peer) = client(Dialect::RAW);
    let _peer = script_peer(peer, vec![step("AT%CMNG=1", "%CMNG: 1,0,\"AB\"\r\n")]);
    let err = c
        .command_with_timeout("AT%CMNG=1", Duration::from_millis(200))
        .await
        .unwrap_err();
    match err {
        AtError::Timeout {
            command,
            waited,
            partial_lines,
        } => {
            assert_eq!(command, "AT%CMNG=1");
            assert_eq!(waited, Duration::from_millis(200));
            assert_eq!(partial_lines, vec!["%CMNG: 1,0,\"AB\""]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn late_answer_to_a_timed_out_command_is_not_taken_for_the_next() {
    let (mut c, _rx, mut peer) = client(Dialect::RAW);
    let err = c
        .command_with_timeout("AT+CGMM", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, AtError::Timeout { .. }));
    // The late answer arrives while idle; then the next command's answer.
    let mut sent = vec![0u8; b"AT+CGMM\r\n".len()];
    peer.read_exact(&mut sent).await.unwrap();
    peer.write_all(b"nRF9161-LACA\r\nOK\r\n").await.unwrap();
    let peer = script_peer(peer, vec![step("AT+CGMR", "mfw_nrf91x1_2.0.1\r\nOK\r\n")]);
    tokio::task::yield_now().await;
    let r = c.command_with_timeout("AT+CGMR", DEADLINE).await.unwrap();
    assert_eq!(r, lines(&["mfw_nrf91x1_2.0.1"]));
    peer.await.unwrap();
}

#[tokio::test]
async fn disconnect_is_immediate_and_sticky() {
    let (mut c, _rx, mut peer) = client(Dialect::RAW);
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 32];
        let _ = peer.read(&mut buf).await;
        peer.write_all(b"%ATTESTTOKEN: \"abc").await.unwrap();
        drop(peer);
    });
    let err = c
        .command_with_timeout("AT%ATTESTTOKEN", DEADLINE)
        .await
        .unwrap_err();
    assert!(err.is_disconnect(), "{err:?}");
    task.await.unwrap();
    let again = c.command_with_timeout("AT", DEADLINE).await.unwrap_err();
    assert!(again.is_disconnect(), "{again:?}");
}

#[tokio::test]
async fn storm_drops_and_counts_without_blocking() {
    let (mut c, mut rx, peer) = client(Dialect::RAW);
    let storm: String = (0..1000).map(|i| format!("%CESQ: {i},2,0,0\r\n")).collect();
    let peer = script_peer(
        peer,
        vec![step(
            "AT+CFUN?",
            format!("{storm}+CFUN: 1\r\n{storm}OK\r\n"),
        )],
    );
    let r = c.command_with_timeout("AT+CFUN?", DEADLINE).await.unwrap();
    assert_eq!(r, lines(&["+CFUN: 1"]));
    let mut received = 0u64;
    while rx.try_recv().is_ok() {
        received += 1;
    }
    assert!(received > 0);
    assert_eq!(received + c.dropped_notifications(), 2000);
    peer.await.unwrap();
}

#[tokio::test]
async fn identify_with_fallbacks() {
    let (c, _rx, peer) = client(Dialect::RAW);
    let peer = script_peer(
        peer,
        vec![
            step("AT+CGSN=1", "ERROR\r\n"),
            step("AT+CGSN", "352656100367872\r\nOK\r\n"),
            step("AT+CGMM", "nRF9160-SICA\r\nOK\r\n"),
            step("AT+CGMR", "mfw_nrf9160_1.3.5\r\nOK\r\n"),
            step(
                "AT%XMODEMUUID",
                "%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9\r\nOK\r\n",
            ),
            step("AT%DEVICEUUID", "ERROR\r\n"),
            step("AT%HWVERSION", "%HWVERSION: nRF9160 SICA B1A\r\nOK\r\n"),
        ],
    );
    let mut m = Modem::new(c);
    let id = m.identify().await.unwrap();
    assert_eq!(id.imei, "352656100367872");
    assert_eq!(id.model, "nRF9160-SICA");
    assert_eq!(
        id.firmware_version.map(|v| v.to_string()).as_deref(),
        Some("1.3.5")
    );
    assert_eq!(
        id.firmware_uuid.map(|u| u.to_string()).as_deref(),
        Some("25c95751-efa4-40d4-8b4a-1dcaab81fac9")
    );
    assert_eq!(id.device_uuid, None);
    assert_eq!(id.hw_version.as_deref(), Some("nRF9160 SICA B1A"));
    peer.await.unwrap();
}

#[tokio::test]
async fn security_commands() {
    let sha = "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1";
    let pem = "-----BEGIN CERTIFICATE-----\r\nMIIBOK\r\n-----END CERTIFICATE-----\r\n";
    let (c, _rx, peer) = client(Dialect::RAW);
    let peer = script_peer(
        peer,
        vec![
            step("AT+CMEE=1", "OK\r\n"),
            step("AT+CFUN=4", "OK\r\n"),
            step("AT+CFUN?", "+CFUN: 4\r\nOK\r\n"),
            step(
                format!("AT%ATTESTTOKEN=\"{}\"", "01".repeat(16)),
                "%ATTESTTOKEN: \"2dn3hQFQ.0oRDoQEm\"\r\nOK\r\n",
            ),
            step("AT%KEYGEN=17,2,0,\"CN=x\"", "+CME ERROR: 518\r\n"),
            step("AT%KEYGEN=17,2,0", "%KEYGEN: \"MIIBOK.0oRY\"\r\nOK\r\n"),
            step(format!("AT%CMNG=0,17,1,\"{pem}\""), "OK\r\n"),
            step("AT%CMNG=1,17", format!("%CMNG: 17,1,\"{sha}\"\r\nOK\r\n")),
            step(
                "AT%CMNG=2,17,1",
                format!("%CMNG: 17,1,\"{sha}\",\"{pem}\"\r\nOK\r\n"),
            ),
            step("AT%CMNG=3,17,1", "+CME ERROR: 513\r\n"),
        ],
    );
    let mut m = Modem::new(c);
    let cert = CredentialType::ClientCert;
    m.send(&NumericErrors).await.unwrap();
    m.send(&SetFunctionalMode(FunctionalMode::Offline))
        .await
        .unwrap();
    assert_eq!(
        m.send(&ReadFunctionalMode).await.unwrap(),
        FunctionalMode::Offline
    );
    let attest = AttestToken {
        challenge: Some([1; 16]),
    };
    assert_eq!(m.send(&attest).await.unwrap(), "2dn3hQFQ.0oRDoQEm");
    let keygen = |attributes| Keygen::new(17, KeyFormat::Csr, attributes, None).unwrap();
    let err = m.send(&keygen(Some("CN=x"))).await.unwrap_err();
    assert_eq!(err.cme_code(), Some(518));
    assert_eq!(m.send(&keygen(None)).await.unwrap(), "MIIBOK.0oRY");
    m.send(&WriteCredential::new(17, cert, pem).unwrap())
        .await
        .unwrap();
    let list = m
        .send(&ListCredentials { sec_tag: Some(17) })
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].sha256, sha);
    let read = ReadCredential {
        sec_tag: 17,
        kind: cert,
    };
    let (entry, content) = m.send(&read).await.unwrap();
    assert_eq!(entry.kind, CredentialType::ClientCert);
    assert_eq!(content, pem);
    let delete = DeleteCredential {
        sec_tag: 17,
        kind: cert,
    };
    let err = m.send(&delete).await.unwrap_err();
    match err {
        AtError::Cme { code, meaning, .. } => {
            assert_eq!(code, 513);
            assert_eq!(meaning, "not found");
        }
        other => panic!("{other:?}"),
    }
    peer.await.unwrap();
}

#[tokio::test]
async fn listen_routes_idle_notifications() {
    let (mut c, mut rx, mut peer) = client(Dialect::RAW);
    peer.write_all(b"Ready\r\nnoise\r\n%MDMEV: ME OVERHEATED\r\n")
        .await
        .unwrap();
    c.listen(Duration::from_millis(100)).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().line, "Ready");
    assert_eq!(rx.recv().await.unwrap().line, "%MDMEV: ME OVERHEATED");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn a_write_cut_by_the_deadline_is_terminated_before_the_next_command() {
    // A 16-byte pipe that nobody reads: the first write cannot finish.
    let (ours, mut theirs) = duplex(16);
    let (mut c, _rx) = Client::new(ours, ClientOptions::default());
    let long = format!("AT%CMNG=0,1,0,\"{}\"", "A".repeat(64));
    let err = c
        .command_with_timeout(&long, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, AtError::Timeout { .. }), "{err:?}");
    let peer = tokio::spawn(async move {
        let mut sent = Vec::new();
        let mut buf = [0u8; 256];
        while !sent.ends_with(b"AT+CGMM\r\n") {
            let n = theirs.read(&mut buf).await.unwrap();
            sent.extend_from_slice(&buf[..n]);
        }
        theirs.write_all(b"nRF9161-LACA\r\nOK\r\n").await.unwrap();
        (sent, theirs)
    });
    c.command_with_timeout("AT+CGMM", DEADLINE).await.unwrap();
    let (sent, _theirs) = peer.await.unwrap();
    let text = String::from_utf8_lossy(&sent);
    // The line ending a new client settles with, the 14 bytes of the long
    // command that then fit, a line ending that ends them, the new command.
    assert_eq!(text, format!("\r\n{}\r\nAT+CGMM\r\n", &long[..14]));
}
