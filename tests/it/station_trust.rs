//! The station guards the two files that decide who passes: the trust file
//! (no empty set, no file others can write, no reload that silently drops
//! the keys) and the station CA (valid now, a CA, its own key) — at start
//! and on SIGHUP.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use crate::station_support::{Daemon, Env, refused_start};
use nix::sys::signal::Signal;
use nrf_provd_core::ca::StationCa;
use nrf91_sim::Latency;

const HEADER_ONLY: &str = "# no devices yet\ndevice_uuid,public_key\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_an_empty_or_writable_trust_file() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let trust = env.trust_file();

    std::fs::write(trust, HEADER_ONLY).unwrap();
    let (code, err) = refused_start(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no trusted device keys"), "{err}");

    std::fs::write(trust, env.fleet.trust_csv()).unwrap();
    std::fs::set_permissions(trust, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = refused_start(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(
        crate::station_support::runs_in(&env.config.database)
            .await
            .is_empty(),
        "no run was recorded by a station that refused to start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_refuses_an_expired_ca() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let ca = env.config.ca.as_ref().unwrap();
    let day = Duration::from_secs(86_400);
    let old =
        StationCa::generate_valid_from("old", SystemTime::now() - 20 * day, 10 * day).unwrap();
    old.write(&ca.certificate, &ca.key).unwrap();
    let (code, err) = refused_start(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expired on"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_would_drop_every_key_or_expire_the_ca_keeps_the_running_set() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let mut daemon = Daemon::spawn(&config);
    let loaded = daemon
        .wait_for_log(&["trusted device identity keys loaded", "trusted=1"])
        .await;
    assert!(loaded.contains("sha256="), "{loaded}");
    let first = daemon.runs_finished(1).await;
    assert!(first[0].contains("PASSED"), "{first:?}");

    // An emptied trust file is refused on SIGHUP; the running keys stay.
    std::fs::write(env.trust_file(), HEADER_ONLY).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon
        .wait_for_log(&["reload failed", "no trusted device keys"])
        .await;

    // So does a CA that has expired.
    std::fs::write(env.trust_file(), env.fleet.trust_csv()).unwrap();
    let ca = env.config.ca.as_ref().unwrap();
    let day = Duration::from_secs(86_400);
    let running_ca = (
        std::fs::read(&ca.certificate).unwrap(),
        std::fs::read(&ca.key).unwrap(),
    );
    StationCa::generate_valid_from("old", SystemTime::now() - 20 * day, 10 * day)
        .unwrap()
        .write(&ca.certificate, &ca.key)
        .unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log(&["reload failed", "expired on"]).await;
    std::fs::write(&ca.certificate, running_ca.0).unwrap();
    std::fs::write(&ca.key, running_ca.1).unwrap();

    // The board, put back, passes with the keys and CA the station kept.
    env.fleet.replug(0).await.unwrap();
    let second = daemon.runs_finished(1).await;
    assert!(second[0].contains("PASSED"), "{second:?}");
    assert!(daemon.stop().await.success());
}
