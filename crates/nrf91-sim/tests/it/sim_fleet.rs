//! Fleets: many boards at once, hot-plug, swaps, the trust file, counters,
//! timing model (the `simulate` command: the root package's `sim_cli`).

use std::collections::HashSet;
use std::time::Duration;

use nrf91_sim::{Fleet, Latency, ModemIdentity, SimDialect, SimOptions};
use testkit::sim::{GUARD, Host, quoted_token, trust_keys, verify_attest, verify_keygen};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_boards_answer_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(dir.path(), 64, 11, SimOptions::default())
        .await
        .unwrap();
    let trust = trust_keys(&fleet.trust_csv());
    assert_eq!(trust.len(), 64);
    let mut tasks = Vec::new();
    for i in 0..fleet.len() {
        let link = fleet.link(i);
        let trust = trust.clone();
        let (uuid, imei) = (
            fleet.identity(i).device_uuid,
            fleet.identity(i).imei.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut host = Host::open(&link, SimDialect::Raw);
            assert_eq!(host.ok("AT+CGSN").await, [imei]);
            assert_eq!(
                host.ok("AT%DEVICEUUID").await,
                [format!("%DEVICEUUID: {uuid}")]
            );
            let challenge = format!("{i:032x}");
            let line = host
                .ok(&format!("AT%ATTESTTOKEN=\"{challenge}\""))
                .await
                .remove(0);
            let attest = verify_attest(&quoted_token(&line), &trust).unwrap();
            assert_eq!(
                (attest.device_uuid, hex::encode(attest.nonce)),
                (uuid, challenge)
            );
            let line = host.ok("AT%KEYGEN=16842753,2,0").await.remove(0);
            assert_eq!(
                verify_keygen(&quoted_token(&line), &trust)
                    .unwrap()
                    .device_uuid,
                uuid
            );
        }));
    }
    tokio::time::timeout(GUARD, async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("every board answered");
    let uuids: HashSet<_> = (0..64).map(|i| fleet.identity(i).device_uuid).collect();
    let imeis: HashSet<_> = (0..64).map(|i| fleet.identity(i).imei.clone()).collect();
    assert_eq!((uuids.len(), imeis.len()), (64, 64));
    for i in 0..64 {
        assert_eq!(fleet.stats(i).commands, 4);
    }
    fleet.shutdown().await;
    for i in 0..64 {
        assert!(std::fs::symlink_metadata(dir.path().join(format!("ttySIM{i}"))).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_the_unplug_and_replug_brings_the_same_board_back() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(dir.path(), 2, 5, SimOptions::default())
        .await
        .unwrap();
    let link = fleet.link(0);
    assert_eq!(link, dir.path().join("ttySIM0"));
    let old_target = std::fs::read_link(&link).unwrap();
    let mut host = Host::open(&link, SimDialect::Raw);
    host.ok("AT+CMEE=1").await;
    host.ok("AT+CFUN=1").await;
    host.ok("AT+CFUN=0").await;
    host.ok("AT%CMNG=0,7,0,\"ca\"").await;
    host.ok("AT+CFUN=1").await;
    let reader = tokio::spawn(async move { host.until_gone().await });
    fleet.unplug(0).await;
    assert!(reader.await.unwrap().is_empty(), "the reader saw EOF/EIO");
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert!(!fleet.is_plugged(0) && fleet.is_plugged(1));

    fleet.replug(0).await.unwrap();
    assert!(std::fs::read_link(&link).is_ok());
    let _ = old_target; // The kernel may reuse the pts number; the link is what counts.
    let mut host = Host::open(&link, SimDialect::Raw);
    // A fresh boot: offline, CMEE off; the flash kept the credential.
    assert_eq!(host.ok("AT+CFUN?").await, ["+CFUN: 0"]);
    assert_eq!(host.ok("AT+CMEE?").await, ["+CMEE: 0"]);
    assert_eq!(host.ok("AT%CMNG=1,7").await.len(), 1);
    assert_eq!(
        host.ok("AT%DEVICEUUID").await,
        [format!("%DEVICEUUID: {}", fleet.identity(0).device_uuid)]
    );
    let stats = fleet.stats(0);
    assert_eq!((stats.sessions, stats.cmng_writes), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_puts_a_different_board_in_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::start(dir.path(), 1, 5, SimOptions::default())
        .await
        .unwrap();
    let before = fleet.identity(0);
    let mut host = Host::open(&fleet.link(0), SimDialect::Raw);
    host.ok("AT%CMNG=0,7,0,\"ca\"").await;
    drop(host);
    let newcomer = ModemIdentity::from_seed(5, 1000);
    let new_uuid = newcomer.device_uuid;
    fleet.swap(0, newcomer).await.unwrap();
    assert_ne!(fleet.identity(0).device_uuid, before.device_uuid);
    let mut host = Host::open(&fleet.link(0), SimDialect::Raw);
    assert_eq!(
        host.ok("AT%DEVICEUUID").await,
        [format!("%DEVICEUUID: {new_uuid}")]
    );
    assert!(
        host.ok("AT%CMNG=1,7").await.is_empty(),
        "a new board has an empty store"
    );
    assert!(fleet.trust_csv().contains(&new_uuid.to_string()));
    assert!(!fleet.trust_csv().contains(&before.device_uuid.to_string()));
    assert_eq!(fleet.stats(0).sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_makes_the_fleet_reproducible() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = Fleet::start(a.path(), 3, 77, SimOptions::default())
        .await
        .unwrap();
    let two = Fleet::start(b.path(), 3, 77, SimOptions::default())
        .await
        .unwrap();
    assert_eq!(one.trust_csv(), two.trust_csv());
    let mut h1 = Host::open(&one.link(2), SimDialect::Raw);
    let mut h2 = Host::open(&two.link(2), SimDialect::Raw);
    // The same key generated, bound to the same device with the same nonce;
    // the signatures over it are randomised (ring's ECDSA), so the bytes of
    // the CSR and of the token differ.
    let keygen = |lines: Vec<String>| {
        let Ok(nrf91_token::Token::Keygen(k)) = nrf91_token::decode(&quoted_token(&lines[0]))
        else {
            panic!("a keygen token: {lines:?}");
        };
        (
            k.public_key_spki,
            k.device_uuid,
            k.nonce,
            k.csr.map(|c| c.subject),
        )
    };
    let first = keygen(h1.ok("AT%KEYGEN=1,2,0").await);
    assert_eq!(first, keygen(h2.ok("AT%KEYGEN=1,2,0").await));
    let c = tempfile::tempdir().unwrap();
    let other = Fleet::start(c.path(), 3, 78, SimOptions::default())
        .await
        .unwrap();
    assert_ne!(one.trust_csv(), other.trust_csv());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modelled_busy_time_adds_latency_table_and_wire_time() {
    let dir = tempfile::tempdir().unwrap();
    let options = SimOptions {
        latency: Latency::Realistic,
        baud: Some(115_200),
        ..SimOptions::default()
    };
    let fleet = Fleet::start(dir.path(), 1, 1, options).await.unwrap();
    let mut host = Host::open(&fleet.link(0), SimDialect::Raw);
    let line = host.ok("AT%KEYGEN=1,2,0").await.remove(0);
    let busy = fleet.stats(0).modelled_busy;
    // 1200 ms of modelled key generation plus the command (17 bytes) and
    // the reply (line, CRLF, OK CRLF) at 10 bits a byte.
    let bits = |bytes: usize| Duration::from_secs_f64(bytes as f64 * 10.0 / 115_200.0);
    let reply = line.len() + 6;
    assert!(
        busy >= Duration::from_millis(1200) + bits(reply),
        "{busy:?}"
    );
    assert!(
        busy <= Duration::from_millis(1200) + bits(reply + 17) + Duration::from_micros(1),
        "{busy:?}"
    );

    let quick_dir = tempfile::tempdir().unwrap();
    let quick = Fleet::start(quick_dir.path(), 1, 1, SimOptions::default())
        .await
        .unwrap();
    let mut host = Host::open(&quick.link(0), SimDialect::Raw);
    host.ok("AT%KEYGEN=1,2,0").await;
    assert_eq!(quick.stats(0).modelled_busy, Duration::ZERO);
}
