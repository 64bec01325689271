//! Issue 18 on a line: two `nrf-provd run` stations sharing a throwaway
//! PostgreSQL in `required` mode, with hostile simulated boards.
//!
//! - one identity key under a second device UUID at another station fails
//!   `key_reused` there, naming the first device, station and run;
//! - a JWT whose `jti` holds a NUL (and whose `iss` holds an escape
//!   sequence) fails `malformed` before any ledger call: it is never sent to
//!   PostgreSQL (which refused it, and the run read as `ledger_unreachable`:
//!   a data error reported as an outage).

use std::path::PathBuf;

use crate::station_support::{Daemon, Env, runs_in};
use nrf_provd_core::record::{ReasonCode, Step};
use nrf91_sim::Latency;
use testkit::pg::{PgCluster, cluster};

/// `env`'s daemon config as station `id` of the line on `pg`, judged by
/// `authorities`.
fn line_config(env: &Env, id: &str, pg: &PgCluster, authorities: &str) -> PathBuf {
    env.write_config(|text| {
        *text = text.replace("station_id = \"test\"", &format!("station_id = \"{id}\""));
        if !authorities.contains("keys") {
            *text = text
                .lines()
                .filter(|l| !l.starts_with("trust_file"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        text.push_str(&pg.ledger_section("required", ""));
        text.push_str(&format!("\n[identity]\nauthorities = {authorities}\n"));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pinned_at_one_station_fails_key_reused_under_a_second_uuid_at_another() {
    let Some(pg) =
        cluster("a_key_pinned_at_one_station_fails_key_reused_under_a_second_uuid_at_another")
    else {
        return;
    };
    // Both fleets come from the same seed: B's board holds A's board's key
    // and says it is another device.
    let env_a = Env::new(1, Latency::None, &[]).await;
    let env_b = Env::new(1, Latency::None, &["0:second-uuid"]).await;
    let genuine = env_a.fleet.identity(0).device_uuid;
    let second = env_b.fleet.identity(0).device_uuid;
    assert_ne!(genuine, second);

    let mut a = Daemon::spawn(&line_config(&env_a, "A", &pg, r#"["pin"]"#));
    let line = a.runs_finished(1).await.remove(0);
    assert!(line.contains("PASSED"), "{line}");
    let first = runs_in(&env_a.config.database).await.remove(0);

    let mut b = Daemon::spawn(&line_config(&env_b, "B", &pg, r#"["pin"]"#));
    let line = b.runs_finished(1).await.remove(0);
    assert!(line.contains("FAILED attest key_reused"), "{line}");
    let refused = runs_in(&env_b.config.database).await.remove(0);
    assert_eq!(
        (refused.failed_step, refused.reason_code),
        (Some(Step::Attest), Some(ReasonCode::KeyReused))
    );
    let reason = refused.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("device {second} answered with identity key"))
            && reason.contains(&format!("pinned for device {genuine} at station A"))
            && reason.contains(&first.uid.to_string()),
        "{reason}"
    );
    assert!(refused.artifacts.is_empty());
    // The line holds one pin of the key, for the first device.
    let pins: Vec<uuid::Uuid> = pg
        .client()
        .await
        .query("SELECT device_uuid FROM pins", &[])
        .await
        .expect("pins")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(pins, [genuine]);
    assert!(a.stop().await.success());
    assert!(b.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_jti_fails_malformed_and_never_reaches_postgresql() {
    let Some(pg) = cluster("a_nul_in_a_jti_fails_malformed_and_never_reaches_postgresql") else {
        return;
    };
    let env = Env::new(1, Latency::None, &["0:control-chars@JWT"]).await;
    let mut daemon = Daemon::spawn(&line_config(&env, "A", &pg, r#"["keys"]"#));
    let line = daemon.runs_finished(1).await.remove(0);
    assert!(line.contains("FAILED jwt malformed"), "{line}");
    assert!(
        !line.contains('\u{1b}') && !line.contains('\u{7}') && !line.contains('\0'),
        "{line:?}"
    );
    let (status, _) = daemon.stop_with_log().await;
    assert!(status.success());
    let run = runs_in(&env.config.database).await.remove(0);
    assert_eq!(
        (run.failed_step, run.reason_code),
        (Some(Step::Jwt), Some(ReasonCode::Malformed)),
        "{:?}",
        run.reason
    );
    assert!(
        run.reason
            .as_deref()
            .is_some_and(|r| r.contains("claim \"iss\" holds control character U+001B")),
        "{:?}",
        run.reason
    );
    let jtis: i64 = pg
        .client()
        .await
        .query_one("SELECT count(*) FROM claims WHERE kind = 'jwt_jti'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(jtis, 0, "the JWT's jti never reached the line");
}
