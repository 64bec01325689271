//! Board presence and departure over any link (here `tokio::io::duplex`
//! with a scripted peer, under tokio's paused clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nrf_provd_core::station::presence::{self, Departure, DeparturePolls, REDETECT_AFTER};
use nrf91_at::at::{Client, ClientOptions, Dialect};
use nrf91_at::modem::Modem;
use testkit::at::{script_peer, step};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const IMEI: &str = "352656100367872";
const NEXT_BOARD: &str = "352656100000002";

/// The station's departure polls: 200 ms after a run, backing off to 2 s.
const POLLS: DeparturePolls = DeparturePolls {
    first: Duration::from_millis(200),
    cap: Duration::from_secs(2),
};
const HOUR: Duration = Duration::from_secs(3600);

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
        POLLS,
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
    let arrival = presence::probe(&mut modem, nrf91_at::at::DialectChoice::Auto, None)
        .await
        .expect("a board answers");
    assert_eq!(arrival.dialect, Dialect::RAW);
    assert!(arrival.detected);
    peer.await
        .expect("every scripted command was sent, in order");
}

/// A plain UART's fixture: whoever is in it answers `AT+CGSN` with its
/// IMEI; from `swap_at` on that is the next board. Counts the polls.
fn uart_fixture(
    link: DuplexStream,
    swap_at: Instant,
    polls: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (read, mut write) = tokio::io::split(link);
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let answer = match line.trim() {
                "" => continue,
                "AT+CGSN" => {
                    polls.fetch_add(1, Ordering::Relaxed);
                    let imei = if Instant::now() < swap_at {
                        IMEI
                    } else {
                        NEXT_BOARD
                    };
                    format!("{imei}\r\nOK\r\n")
                }
                _ => "ERROR\r\n".to_string(),
            };
            if write.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_board_left_an_hour_is_asked_less_often_and_a_swap_is_still_noticed() {
    // A plain UART: a board swapped in the fixture gives no end of stream,
    // only another IMEI at the next poll.
    let (ours, theirs) = duplex(64 * 1024);
    let mut modem = Modem::new(Client::new(ours, ClientOptions::default()).0);
    let swap_at = Instant::now() + HOUR;
    let polls = Arc::new(AtomicUsize::new(0));
    let fixture = uart_fixture(theirs, swap_at, Arc::clone(&polls));
    let departure = presence::wait_for_departure(
        &mut modem,
        Some(IMEI),
        &CancellationToken::new(),
        POLLS,
        || true,
    )
    .await;
    assert_eq!(departure, Departure::OtherBoard);
    // Noticed within one poll at the cap after the swap (on tokio's paused
    // clock: the polls' schedule, not the machine's speed).
    let noticed_after = Instant::now() - swap_at;
    assert!(
        noticed_after <= POLLS.cap + Duration::from_millis(100),
        "the swap was noticed {noticed_after:?} after it happened"
    );
    // Backed off: an hour at one poll per 2 s, plus the first few quicker ones.
    let asked = polls.load(Ordering::Relaxed);
    let at_most = (HOUR.as_secs() / POLLS.cap.as_secs()) as usize + 5;
    assert!(
        asked <= at_most,
        "{asked} polls in an hour (at most {at_most})"
    );
    drop(modem);
    fixture.await.expect("the fixture ends with the link");
}

#[tokio::test(start_paused = true)]
async fn a_board_pulled_after_a_long_idle_is_noticed_without_waiting_for_a_poll() {
    // A simulated board (the same modem as on a pty) on its link; pulling
    // it ends the link, as a USB unplug or a closed pty does.
    let (board, host) = nrf91_sim::memory::Board::start(7, 0, nrf91_sim::SimOptions::default());
    let imei = board.identity().imei.clone();
    let mut modem = Modem::new(Client::new(host, ClientOptions::default()).0);
    let stop = CancellationToken::new();
    let departure = presence::wait_for_departure(&mut modem, Some(&imei), &stop, POLLS, || true);
    tokio::pin!(departure);
    // An hour in the fixture: the board stays, answering the polls.
    tokio::select! {
        left = &mut departure => panic!("the board left by itself: {left:?}"),
        () = tokio::time::sleep(HOUR) => {}
    }
    let commands_in_the_hour = board.stats().commands;
    assert!(
        commands_in_the_hour <= HOUR.as_secs() / POLLS.cap.as_secs() + 5,
        "{commands_in_the_hour} commands in an hour"
    );
    let pulled = Instant::now();
    board.unplug().await;
    assert_eq!(departure.await, Departure::Unplugged);
    let noticed_after = Instant::now() - pulled;
    assert!(
        noticed_after < POLLS.first,
        "the pull was noticed {noticed_after:?} after it happened, not at once"
    );
}
