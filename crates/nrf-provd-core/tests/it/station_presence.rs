//! Board presence and departure over any link (here `tokio::io::duplex`
//! with a scripted peer, under tokio's paused clock).

use std::time::Duration;

use nrf_provd_core::station::presence::{self, Departure, REDETECT_AFTER};
use nrf91_at::at::{Client, ClientOptions, Dialect};
use nrf91_at::modem::Modem;
use testkit::at::{script_peer, step};
use tokio::io::duplex;
use tokio_util::sync::CancellationToken;

const IMEI: &str = "352656100367872";
const NEXT_BOARD: &str = "352656100000002";

#[tokio::test(start_paused = true)]
async fn departure_polls_that_keep_failing_find_the_dialect_again() {
    // The station believes the board speaks through a shell; it is (now) a
    // raw AT host, which refuses the shell form of every poll.
    let (ours, theirs) = duplex(64 * 1024);
    let options = ClientOptions {
        dialect: Dialect::SHELL,
        ..ClientOptions::default()
    };
    let mut modem = Modem::new(Client::new(ours, options).0);
    let mut steps: Vec<_> = (0..REDETECT_AFTER)
        .map(|_| step("at 'AT+CGSN'", "ERROR\r\n"))
        .collect();
    steps.extend([
        // Detection: the shell form fails, the raw form answers and is confirmed.
        step("at 'AT+CGSN'", "ERROR\r\n"),
        step("AT+CGSN", format!("{IMEI}\r\nOK\r\n")),
        step("AT+CGSN=1", format!("+CGSN: \"{IMEI}\"\r\nOK\r\n")),
        // Polls go on in the raw form: the same board, then another one.
        step("AT+CGSN", format!("{IMEI}\r\nOK\r\n")),
        step("AT+CGSN", format!("{NEXT_BOARD}\r\nOK\r\n")),
    ]);
    let peer = script_peer(theirs, steps);
    let departure = presence::wait_for_departure(
        &mut modem,
        Some(IMEI),
        &CancellationToken::new(),
        Duration::from_millis(200),
        || true,
    )
    .await;
    assert_eq!(departure, Departure::OtherBoard);
    assert_eq!(modem.client().dialect(), Dialect::RAW);
    peer.await
        .expect("every scripted command was sent, in order");
}

#[tokio::test(start_paused = true)]
async fn a_late_answer_on_a_new_link_does_not_choose_the_dialect() {
    // A host was killed while the modem worked on %KEYGEN: its answer comes
    // after the new host's first command.
    let (ours, theirs) = duplex(64 * 1024);
    let mut modem = Modem::new(Client::new(ours, ClientOptions::default()).0);
    let peer = script_peer(
        theirs,
        vec![
            // The late %KEYGEN answer lands on the shell-form try...
            step("at 'AT+CGSN'", "%KEYGEN: \"MIIB.0oRD\"\r\nOK\r\n"),
            // ...whose own ERROR comes next and is drained by the settle.
            step("AT+CGSN", "ERROR\r\n"),
            // An answer that does not fit again; the next round lines up.
            step("at 'AT+CGSN'", "ERROR\r\n"),
            step("AT+CGSN", format!("{IMEI}\r\nOK\r\n")),
            step("AT+CGSN=1", format!("+CGSN: \"{IMEI}\"\r\nOK\r\n")),
        ],
    );
    let arrival = presence::probe(&mut modem, nrf91_at::at::DialectChoice::Auto)
        .await
        .expect("a board answers");
    assert_eq!(arrival.dialect, Dialect::RAW);
    assert!(arrival.detected);
    peer.await
        .expect("every scripted command was sent, in order");
}
