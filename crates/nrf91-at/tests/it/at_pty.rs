//! The client over a real pseudo-terminal pair: the slave is opened by path
//! through `serial::open` (same code path as /dev/ttyACM0), a scripted peer
//! plays the modem on the master.

use std::time::Duration;

use nrf91_at::at::{AtError, Client, ClientOptions, Dialect, Notification};
use nrf91_at::serial::{self, SerialSettings};
use testkit::at::{lines, read_command, script_peer, step};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::Receiver;
use tokio_serial::{SerialPort, SerialStream};

/// The deadline of a free-text command in these tests.
const DEADLINE: Duration = Duration::from_secs(5);

/// A pty pair: (client on the slave opened by path, master for the peer).
async fn pty_client() -> (Client<serial::Port>, Receiver<Notification>, SerialStream) {
    let (master, pair_slave) = SerialStream::pair().expect("pty pair");
    let path = pair_slave.name().expect("pty slave has a path");
    // Default settings: RTS/CTS, DTR, exclusive — all must work on a pty.
    let port = serial::open(path.as_ref(), &SerialSettings::default()).expect("open pty slave");
    drop(pair_slave);
    let options = ClientOptions {
        dialect: Dialect::RAW,
        ..ClientOptions::default()
    };
    let (client, rx) = Client::new(port, options);
    (client, rx, master)
}

#[tokio::test]
async fn exclusive_open_refuses_a_second_opener() {
    let (master, pair_slave) = SerialStream::pair().unwrap();
    let path = pair_slave.name().unwrap();
    let first = serial::open(path.as_ref(), &SerialSettings::default()).unwrap();
    let second = serial::open(path.as_ref(), &SerialSettings::default());
    assert!(matches!(second, Err(AtError::Open { .. })), "{second:?}");
    drop((first, master));
}

#[tokio::test]
async fn settle_then_command() {
    let (mut c, _rx, mut master) = pty_client().await;
    // Boot noise before the host says anything: discarded by settle().
    master
        .write_all(b"\x00\xff*** Booting\r\npartial")
        .await
        .unwrap();
    let peer = script_peer(master, vec![step("AT+CGMM", "nRF9161-LACA\r\nOK\r\n")]);
    c.settle().await.unwrap();
    assert_eq!(
        c.command_with_timeout("AT+CGMM", DEADLINE).await.unwrap(),
        lines(&["nRF9161-LACA"])
    );
    peer.await.unwrap();
}

#[tokio::test]
async fn timeout_over_pty() {
    let (mut c, _rx, master) = pty_client().await;
    let _peer = script_peer(master, vec![step("AT%KEYGEN=1,2,0", "")]);
    let err = c
        .command_with_timeout("AT%KEYGEN=1,2,0", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AtError::Timeout { partial_lines, .. } if partial_lines.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn disconnect_mid_response() {
    let (mut c, _rx, mut master) = pty_client().await;
    let peer = tokio::spawn(async move {
        read_command(&mut master, "AT%ATTESTTOKEN".len()).await;
        master.write_all(b"%ATTESTTOKEN: \"2dn3hQ").await.unwrap();
        master.flush().await.unwrap();
        // Give the bytes a moment to cross before the master goes away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(master);
    });
    let err = c
        .command_with_timeout("AT%ATTESTTOKEN", DEADLINE)
        .await
        .unwrap_err();
    assert!(err.is_disconnect(), "{err:?}");
    peer.await.unwrap();
    // Sticky, and immediate: no second wait for a deadline.
    let again = c.command_with_timeout("AT", DEADLINE).await.unwrap_err();
    assert!(again.is_disconnect(), "{again:?}");
}

#[tokio::test]
async fn garbage_before_response() {
    let (mut c, _rx, master) = pty_client().await;
    let peer = script_peer(
        master,
        vec![step(
            "AT+CGSN=1",
            b"\xfe\xff\x1b[0m\r\n\r\n+CGSN: \"352656100367872\"\r\nOK\r\n".as_slice(),
        )],
    );
    let r = c.command_with_timeout("AT+CGSN=1", DEADLINE).await.unwrap();
    assert_eq!(r.first_with_prefix("+CGSN"), Some("\"352656100367872\""));
    peer.await.unwrap();
}

#[tokio::test]
async fn notification_storm_during_a_command() {
    let (mut c, mut rx, master) = pty_client().await;
    let storm: String = (0..600)
        .map(|i| format!("+CEREG: {},\"0001\"\r\n", i % 6))
        .collect();
    let peer = script_peer(
        master,
        vec![step(
            "AT%XMODEMUUID",
            format!("{storm}%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9\r\n{storm}OK\r\n"),
        )],
    );
    let r = c
        .command_with_timeout("AT%XMODEMUUID", DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        r,
        lines(&["%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9"])
    );
    let mut received = 0u64;
    while let Ok(n) = rx.try_recv() {
        assert!(n.line.starts_with("+CEREG: "), "{}", n.line);
        received += 1;
    }
    assert_eq!(received + c.dropped_notifications(), 1200);
    peer.await.unwrap();
}
