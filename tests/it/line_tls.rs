//! The line's ledger over TLS: a throwaway PostgreSQL cluster that takes
//! TCP clients over TLS only (`ssl = on`, a server certificate made here by
//! a CA of the test's own, `hostssl` in pg_hba.conf), on 127.0.0.1.
//!
//! - a station with `sslmode=verify-full` and the right CA passes a board
//!   with its claims made in PostgreSQL during the run (`required`) and
//!   forwards the run, over TLS;
//! - the wrong CA is refused, with words that say so and not as an outage;
//! - `verify-full` refuses a certificate that does not name the host
//!   (`verify-ca` takes it, as libpq); `require` without a CA encrypts
//!   without authenticating, and with a CA checks it, as libpq.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::station_support::{Daemon, Env, runs_in};
use nrf_provd_core::ledger::{LedgerError, PgSettings, PostgresLedger};
use nrf_provd_daemon::config::{LedgerConfig, PasswordSource};
use nrf91_sim::Latency;
use testkit::pg::certs::TestCa;
use testkit::pg::{PgCluster, cluster_with_tls};

/// A cluster whose certificate, signed by `ca`, names `localhost` and
/// 127.0.0.1 only.
fn tls_cluster(test: &str, ca: &TestCa) -> Option<PgCluster> {
    let server = ca.server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    cluster_with_tls(test, &server)
}

/// `ca`'s certificate in a file of `dir`, for `sslrootcert`.
fn ca_file(dir: &Path, name: &str, ca: &TestCa) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &ca.pem).expect("write CA file");
    path
}

fn settings(pg: &PgCluster, url: String) -> Result<PgSettings, LedgerError> {
    let mut config = LedgerConfig::for_url(url);
    config.password = PasswordSource::File(pg.password_file.clone());
    PgSettings::new(&config)
}

/// Connect (and migrate) through the ledger as a station does.
async fn connect(pg: &PgCluster, url: String) -> Result<(), LedgerError> {
    PostgresLedger::new(&settings(pg, url)?)?.connect().await
}

/// Whether the connection `settings` makes is TLS, as the server sees it.
async fn server_sees_tls(settings: &PgSettings) -> (bool, String) {
    let client = settings.connect().await.expect("connect");
    let row = client
        .query_one(
            "SELECT ssl, COALESCE(version, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_claims_and_forwards_over_verify_full() {
    let ca = TestCa::new("line TLS test CA");
    let Some(pg) = tls_cluster("a_station_claims_and_forwards_over_verify_full", &ca) else {
        return;
    };
    let env = Env::new(1, Latency::None, &[]).await;
    let root = ca_file(env.dir.path(), "ledger-ca.pem", &ca);
    let url = pg.tcp_url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let config = env.write_config(|text| {
        text.push_str(&format!(
            "\n[ledger]\nurl = \"{url}\"\npassword_file = \"{}\"\nmode = \"required\"\nforward_interval = 0.2\nclaim_timeout = 5\nconnect_timeout = 5\n",
            pg.password_file.display()
        ));
    });
    let mut daemon = Daemon::spawn(&config);
    let line = daemon.runs_finished(1).await.remove(0);
    assert!(line.contains("PASSED"), "claims made over TLS: {line}");
    let run = runs_in(&env.config.database).await.remove(0);
    loop {
        let client = pg.client().await;
        let rows = client
            .query(
                "SELECT count(*) FROM claims WHERE run_uid = $1",
                &[&run.uid],
            )
            .await
            .expect("claims");
        let forwarded = client
            .query("SELECT 1 FROM runs WHERE uid = $1", &[&run.uid])
            .await
            .expect("runs");
        let claims: i64 = rows[0].get(0);
        if !forwarded.is_empty() {
            assert!(claims >= 2, "the run's nonce and jti claimed centrally");
            break;
        }
        daemon
            .wait_for_log(&["forwarded runs to the shared ledger"])
            .await;
    }
    // The daemon's own connections are TLS: TCP takes nothing else here.
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'nrf-provd'",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(tls >= 1 && plain == 0, "tls {tls}, plain {plain}");
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_wrong_name_is_refused_with_words_not_as_an_outage() {
    let ca = TestCa::new("line TLS test CA");
    let Some(pg) = tls_cluster("a_wrong_ca_is_refused", &ca) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let right = ca_file(dir.path(), "right.pem", &ca);
    let wrong = ca_file(dir.path(), "wrong.pem", &TestCa::new("another CA"));

    // The right CA: the connection is TLS 1.3.
    let good = settings(
        &pg,
        pg.tcp_url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", right.display()),
        ),
    )
    .expect("settings");
    let (tls, version) = server_sees_tls(&good).await;
    assert!(tls, "TLS as the server sees it");
    assert_eq!(version, "TLSv1.3");

    let refused = |e: &LedgerError, words: &str| {
        assert!(
            matches!(e, LedgerError::Postgres { .. }),
            "a refused certificate is no outage: {e:?}"
        );
        assert!(e.to_string().contains(words), "{e}");
    };
    // Another CA, under every mode that checks one.
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = pg.tcp_url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={}", wrong.display()),
        );
        let e = connect(&pg, url).await.expect_err(mode);
        refused(&e, "not signed by a CA in sslrootcert");
    }

    // A name the certificate does not hold, reached at its address.
    let other_name = |mode: &str| {
        pg.tcp_url(
            "db.other.example",
            &format!(
                "hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
                right.display()
            ),
        )
    };
    let e = connect(&pg, other_name("verify-full"))
        .await
        .expect_err("the name is checked");
    refused(&e, "does not name the host");
    connect(&pg, other_name("verify-ca"))
        .await
        .expect("verify-ca checks the chain, not the name");

    // require without a CA file: encrypted, nobody authenticated (libpq).
    let unauthenticated =
        settings(&pg, pg.tcp_url("localhost", "sslmode=require")).expect("settings");
    assert!(server_sees_tls(&unauthenticated).await.0, "encrypted");

    // Without TLS the server takes no TCP client at all.
    let e = connect(&pg, pg.tcp_url("localhost", "sslmode=disable"))
        .await
        .expect_err("plain TCP");
    assert!(e.to_string().contains("no encryption"), "{e}");
}
