//! The simulated board over `tokio::io::duplex`: the project's AT client
//! drives it with no pty, under tokio's paused clock, so a realistic board
//! answers in virtual time exactly as the latency table models it.

use std::time::Duration;

use nrf91_at::at::{AtError, Client, ClientOptions, Notification};
use nrf91_at::modem::{
    AttestToken, FunctionalMode, Jwt, JwtRequest, KeyFormat, Keygen, ListCredentials, Modem,
    NumericErrors, ReadFunctionalMode, SetClock, SetFunctionalMode,
};
use nrf91_sim::memory::Board;
use nrf91_sim::{Fleet, Latency, SimOptions};
use nrf91_token::encode::sha256;
use testkit::sim::{trust_keys, verify_attest, verify_jwt, verify_keygen};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

const SEED: u64 = 31;
const TAG: u32 = 16_842_753;
const CHALLENGE: [u8; 16] = [0x5a; 16];

fn options(latency: Latency, faults: &[&str]) -> SimOptions {
    SimOptions {
        latency,
        faults: faults.iter().map(|f| f.parse().expect("fault")).collect(),
        ..SimOptions::default()
    }
}

/// A modem on `host` whose new link has settled (as the station's presence
/// check does before anything is timed).
async fn modem(host: DuplexStream) -> (Modem<DuplexStream>, mpsc::Receiver<Notification>) {
    let (mut client, notifications) = Client::new(host, ClientOptions::default());
    client.settle().await.expect("settle");
    (Modem::new(client), notifications)
}

/// Run `step` and return its result with the tokio time it took.
async fn timed<T>(step: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = step.await;
    (out, start.elapsed())
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A whole identify / attest / keygen / jwt sequence against a realistic
/// board: every step takes exactly the modelled delays of its commands in
/// tokio time (the table in `sim::timing`), and microseconds of wall time.
#[tokio::test(start_paused = true)]
async fn realistic_board_answers_in_virtual_time_exactly_as_modelled() {
    let (board, host) = Board::start(SEED, 0, options(Latency::Realistic, &[]));
    let trust = trust_keys(&board.trust_csv());
    let id = board.identity();
    let (mut modem, _notifications) = modem(host).await;
    let wall = std::time::Instant::now();
    let begin = Instant::now();

    let ((), took) = timed(async { modem.send(&NumericErrors).await.expect("cmee") }).await;
    assert_eq!(took, ms(5));

    // IMEI, model, firmware, firmware UUID, device UUID, HW version: 6 reads.
    let (identity, took) = timed(modem.identify()).await;
    let identity = identity.expect("identify");
    assert_eq!(identity.imei, id.imei);
    assert_eq!(identity.device_uuid, Some(id.device_uuid));
    assert_eq!(took, 6 * ms(5));

    let (offline, took) = timed(modem.send(&SetFunctionalMode(FunctionalMode::Offline))).await;
    offline.expect("cfun 4");
    assert_eq!(took, ms(20), "0 -> 4 between inactive modes");

    let (token, took) = timed(modem.send(&AttestToken {
        challenge: Some(CHALLENGE),
    }))
    .await;
    let attest = verify_attest(&token.expect("attest"), &trust).expect("authentic");
    assert_eq!(attest.nonce, CHALLENGE);
    assert_eq!(took, ms(60));

    let (token, took) =
        timed(modem.send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen")))
            .await;
    let keygen = verify_keygen(&token.expect("keygen"), &trust).expect("authentic");
    assert_eq!(keygen.digest, sha256(&keygen.der));
    assert_eq!(took, ms(1200));

    let (token, took) = timed(
        modem.send(&Keygen::new(17, KeyFormat::PublicKey, None, None).expect("valid keygen")),
    )
    .await;
    verify_keygen(&token.expect("keygen"), &trust).expect("authentic");
    assert_eq!(took, ms(900));

    let clock = time::macros::datetime!(2026-12-01 08:00:00 UTC);
    let (set, took) = timed(modem.send(&SetClock(clock))).await;
    set.expect("cclk");
    assert_eq!(took, ms(5));

    // The modem clock runs on tokio's clock too.
    let idle = Duration::from_secs(90);
    tokio::time::sleep(idle).await;
    let request = JwtRequest {
        exp_delta: Some(600),
        ..JwtRequest::default()
    };
    let (jwt, took) = timed(modem.send(&Jwt::new(&request).expect("valid jwt"))).await;
    let (_, claims) =
        verify_jwt(&jwt.expect("jwt"), id.signing_key.verifying_key()).expect("authentic");
    assert_eq!(took, ms(120));
    assert_eq!(claims["iat"], clock.unix_timestamp() + 90);

    let (on, took) = timed(modem.send(&SetFunctionalMode(FunctionalMode::On))).await;
    on.expect("cfun 1");
    assert_eq!(took, ms(50));
    let (off, took) = timed(modem.send(&SetFunctionalMode(FunctionalMode::Offline))).await;
    off.expect("cfun 4");
    assert_eq!(took, ms(400), "detach from active");

    let total = ms(5 + 30 + 20 + 60 + 1200 + 900 + 5 + 120 + 50 + 400);
    assert_eq!(begin.elapsed(), total + idle);
    let stats = board.stats();
    assert_eq!(stats.modelled_busy, total, "no baud: delays only");
    assert_eq!(stats.commands, 15);
    assert_eq!(
        (stats.attest_tokens, stats.keygen_tokens, stats.jwts),
        (1, 2, 1)
    );
    // Not a timing assertion on the machine: only that virtual time was used.
    eprintln!(
        "{total:?} of tokio time took {:?} of wall time",
        wall.elapsed()
    );
}

#[tokio::test]
async fn the_in_memory_board_is_the_fleets_board_with_the_same_trust_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = Fleet::start(dir.path(), 3, SEED, SimOptions::default())
        .await
        .expect("fleet");
    let (board, _host) = Board::start(SEED, 2, SimOptions::default());
    assert_eq!(board.identity().device_uuid, fleet.identity(2).device_uuid);
    assert_eq!(board.identity().imei, fleet.identity(2).imei);
    let fleet_trust = fleet.trust_csv();
    let mut lines = board
        .trust_csv()
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), 2, "header and one key");
    let key = lines.pop().expect("key line");
    assert!(
        fleet_trust.lines().any(|l| l == key),
        "{key}\n{fleet_trust}"
    );
    assert_eq!(lines[0], fleet_trust.lines().next().expect("header"));
    // Left out under the untrusted-key fault, as in a fleet.
    let (untrusted, _host) = Board::start(SEED, 0, options(Latency::None, &["0:untrusted-key"]));
    assert_eq!(untrusted.trust_csv(), "device_uuid,public_key\n");
    fleet.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unplug_and_replug_keep_the_board() {
    let (board, host) = Board::start(SEED, 0, options(Latency::Realistic, &[]));
    let (mut first, _notifications) = modem(host).await;
    first.send(&NumericErrors).await.expect("cmee");
    first
        .send(&Keygen::new(TAG, KeyFormat::Csr, None, None).expect("valid keygen"))
        .await
        .expect("keygen");
    assert!(board.is_plugged());
    board.unplug().await;
    assert!(!board.is_plugged());
    assert!(matches!(
        first.imei().await,
        Err(AtError::Disconnected { .. })
    ));

    let (mut modem, _notifications) = modem(board.replug().await).await;
    assert!(board.is_plugged());
    // Booted again: CME errors off, radio off; the key is still in flash.
    assert_eq!(
        modem.send(&ReadFunctionalMode).await.expect("cfun?"),
        FunctionalMode::Off
    );
    assert_eq!(
        modem
            .send(&ListCredentials { sec_tag: Some(TAG) })
            .await
            .expect("list")
            .len(),
        1
    );
    assert_eq!(board.stats().sessions, 2);
    // A host that closes its end ends the session too.
    drop(modem);
    tokio::time::sleep(ms(1)).await;
    assert!(!board.is_plugged());
}

/// Read everything until end of stream.
async fn read_to_eof(host: &mut DuplexStream) -> Vec<u8> {
    let mut all = Vec::new();
    host.read_to_end(&mut all).await.expect("read");
    all
}

#[tokio::test(start_paused = true)]
async fn unplug_fault_gives_end_of_stream_in_the_middle_of_the_reply() {
    let (board, mut host) =
        Board::start(SEED, 0, options(Latency::Realistic, &["0:unplug@KEYGEN"]));
    host.write_all(b"AT%KEYGEN=16,2,0\r\n")
        .await
        .expect("write");
    let start = Instant::now();
    let partial = String::from_utf8(read_to_eof(&mut host).await).expect("text");
    assert!(partial.starts_with("%KEYGEN: \""), "{partial}");
    assert!(!partial.contains("OK"), "{partial}");
    assert_eq!(start.elapsed(), ms(1200), "pulled after the command's work");
    assert!(!board.is_plugged());
    // Writes to a pulled board fail.
    assert!(host.write_all(b"AT\r\n").await.is_err());

    // Through the AT client the cut reply is a disconnect, not a token.
    let (mut modem, _n) = modem(board.replug().await).await;
    assert!(matches!(
        modem
            .send(&Keygen::new(18, KeyFormat::Csr, None, None).expect("valid keygen"))
            .await,
        Err(AtError::Disconnected { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn stall_times_out_in_virtual_time_and_the_next_command_is_answered() {
    let (board, host) = Board::start(SEED, 0, options(Latency::Realistic, &["0:stall@CGMM"]));
    let (mut modem, _notifications) = modem(host).await;
    let (stalled, took) = timed(
        modem
            .client()
            .command_with_timeout("AT+CGMM", Duration::from_secs(15)),
    )
    .await;
    assert!(
        matches!(stalled, Err(AtError::Timeout { .. })),
        "{stalled:?}"
    );
    assert_eq!(took, Duration::from_secs(15));
    assert_eq!(modem.imei().await.expect("imei"), board.identity().imei);
}

#[tokio::test(start_paused = true)]
async fn urc_storm_goes_to_the_notification_channel() {
    let (board, host) = Board::start(SEED, 0, options(Latency::Realistic, &["0:urc-storm"]));
    let (mut modem, mut notifications) = modem(host).await;
    for _ in 0..5 {
        let identity = modem.identify().await.expect("identify");
        assert_eq!(identity.imei, board.identity().imei);
        assert_eq!(identity.model, "nRF9161-LACA");
    }
    // Inside replies (at least one between each information line and its
    // result) and, once the host has written, while it is idle.
    modem
        .client()
        .listen(Duration::from_secs(2))
        .await
        .expect("listen");
    let mut urcs = Vec::new();
    while let Ok(n) = notifications.try_recv() {
        urcs.push(n.line);
    }
    assert!(urcs.len() >= 30, "{urcs:?}");
    assert!(
        urcs.iter().all(|l| testkit::sim::is_urc(l)),
        "only notifications: {urcs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn garbage_does_not_get_in_the_way_of_answers() {
    let (board, host) = Board::start(SEED, 0, options(Latency::Realistic, &["0:garbage"]));
    let (mut modem, _notifications) = modem(host).await;
    let trust = trust_keys(&board.trust_csv());
    modem.client().settle().await.expect("settle");
    for _ in 0..5 {
        let identity = modem.identify().await.expect("identify");
        assert_eq!(identity.imei, board.identity().imei);
        let token = modem
            .send(&AttestToken {
                challenge: Some(CHALLENGE),
            })
            .await
            .expect("attest");
        assert_eq!(
            verify_attest(&token, &trust).expect("authentic").nonce,
            CHALLENGE
        );
    }
}
