//! The HTTP API reads the records through the read trait, not a store it
//! opens itself (issue 21): any ledger that implements `RunReaders` serves
//! `/api/v1/runs` and `/api/v1/runs/{id}` — paged, 404 for a run it does not
//! have, 503 with Retry-After when its readers are busy — given to the
//! server with one line.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use nrf_provd_core::ledger::{LedgerError, Render, RunPage, RunReader, RunReaders};
use nrf_provd_core::record::{Outcome, RunId, RunRecord, RunStart};
use nrf_provd_core::station::Sources;
use nrf_provd_daemon::http::HttpServer;
use time::macros::datetime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http_support::get;
use crate::station_support::Env;

/// Runs in memory, read by at most one reader at a time: a ledger that is
/// not the station's database.
struct MemoryReaders {
    runs: Arc<Vec<RunRecord>>,
    permits: Arc<Semaphore>,
}

struct MemoryReader {
    runs: Arc<Vec<RunRecord>>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl RunReaders for MemoryReaders {
    fn try_reader(&self) -> Option<Box<dyn RunReader>> {
        let permit = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        Some(Box::new(MemoryReader {
            runs: Arc::clone(&self.runs),
            _permit: permit,
        }))
    }

    async fn reader(&self) -> Result<Box<dyn RunReader>, LedgerError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| LedgerError::Task(e.to_string()))?;
        Ok(Box::new(MemoryReader {
            runs: Arc::clone(&self.runs),
            _permit: permit,
        }))
    }
}

#[async_trait]
impl RunReader for MemoryReader {
    async fn page(&self, page: RunPage) -> Result<Vec<RunId>, LedgerError> {
        let ids = self
            .runs
            .iter()
            .filter(|r| page.since.is_none_or(|t| r.started_at >= t))
            .map(|r| r.id);
        Ok(match page.after {
            Some(after) => ids.filter(|&id| id > after).take(page.limit).collect(),
            None => {
                let ids: Vec<RunId> = ids.collect();
                ids[ids.len().saturating_sub(page.limit)..].to_vec()
            }
        })
    }

    async fn render(&self, ids: Vec<RunId>, render: Render) -> Result<Vec<u8>, LedgerError> {
        let runs = ids
            .iter()
            .filter_map(|id| self.runs.iter().find(|r| r.id == *id).cloned())
            .collect();
        Ok(render(runs))
    }
}

fn runs() -> Vec<RunRecord> {
    (1..=3)
        .map(|id| {
            let start = RunStart {
                uid: uuid::Uuid::from_u128(id as u128),
                station_id: "not-this-station".into(),
                port: format!("/dev/ttyMEM{id}"),
                started_at: datetime!(2026-12-07 06:00 UTC),
                trace: Default::default(),
            };
            let mut run = RunRecord::begun(id, &start);
            run.outcome = Outcome::Passed;
            run
        })
        .collect()
}

fn ids_of(body: &str) -> Vec<i64> {
    let runs: Vec<serde_json::Value> = serde_json::from_str(body).expect("a JSON array");
    runs.iter().map(|r| r["id"].as_i64().expect("id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_ledgers_readers_serve_the_api_paged_with_404_and_503() {
    let env = Env::new(1, nrf91_sim::Latency::None, &[]).await;
    let mut config = env.config.clone();
    config.http = nrf_provd_daemon::config::HttpConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..nrf_provd_daemon::config::HttpConfig::default()
    };
    let station =
        nrf_provd_daemon::setup::station(&config, Sources::default()).expect("assemble station");
    let readers = Arc::new(MemoryReaders {
        runs: Arc::new(runs()),
        permits: Arc::new(Semaphore::new(1)),
    });
    // The one line that gives the API its reader.
    let server = HttpServer::start_with(&station, &config, readers.clone())
        .await
        .expect("server")
        .expect("listening");
    let addr = server.local_addr();
    let fetch = |path: &'static str| {
        tokio::task::spawn_blocking(move || get(addr, path, None).expect("get"))
    };

    // The station's own database is empty: these runs are the reader's.
    let all = fetch("/api/v1/runs").await.expect("request");
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(ids_of(&all.body), [1, 2, 3]);
    assert!(all.body.contains("not-this-station"), "{}", all.body);

    let page = fetch("/api/v1/runs?after=1&limit=1")
        .await
        .expect("request");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(ids_of(&page.body), [2]);
    assert_eq!(
        page.header("link"),
        Some("</api/v1/runs?after=2&limit=1>; rel=\"next\"")
    );

    let one = fetch("/api/v1/runs/3").await.expect("request");
    assert_eq!(one.status, 200, "{}", one.body);
    let run: serde_json::Value = serde_json::from_str(&one.body).expect("a run");
    assert_eq!(run["id"], 3);
    assert_eq!(run["port"], "/dev/ttyMEM3");
    assert_eq!(fetch("/api/v1/runs/9").await.expect("request").status, 404);

    // Its one reader taken: busy, at once.
    let held = server.readers().try_reader().expect("the idle reader");
    let busy = fetch("/api/v1/runs").await.expect("request");
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.header("retry-after"), Some("1"));
    drop(held);
    assert_eq!(fetch("/api/v1/runs/1").await.expect("request").status, 200);
    server.shutdown().await;
}
