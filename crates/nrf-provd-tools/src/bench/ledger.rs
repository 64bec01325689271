//! The bench's ledger column: the rows' stations on a line's PostgreSQL
//! (`--ledger URL`), each row in a schema of its own that the bench makes
//! and drops, so it never touches the tables a line uses. Also the
//! forwarder's backfill rate: a backlog of runs like the bench's own,
//! forwarded from a fresh SQLite to a fresh schema.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{LedgerConfig, LedgerMode};
use crate::ledger::{
    Claim, ClaimKind, LedgerError, LineLedger, PgSettings, PostgresLedger, RunRecord, SqliteLedger,
};

/// Where the bench's stations keep their line.
#[derive(Debug, Clone)]
pub struct BenchLedger {
    /// A PostgreSQL URL without a password ($NRF_PROVD_LEDGER_PASSWORD).
    pub url: String,
    pub mode: LedgerMode,
    /// Runs in the backfill measurement (0: none).
    pub backfill: usize,
}

/// A schema of the bench's own, dropped with everything in it.
pub struct Schema {
    admin: tokio_postgres::Client,
    pub name: String,
    /// The bench's URL with this schema as its search path.
    pub url: String,
}

impl BenchLedger {
    /// `[ledger]` for a station of the bench in `schema`.
    pub fn config(&self, schema: &Schema) -> LedgerConfig {
        LedgerConfig {
            mode: self.mode,
            ..LedgerConfig::for_url(schema.url.clone())
        }
    }

    /// A fresh schema `nrf_provd_bench_<pid>_<label>`.
    pub async fn schema(&self, label: &str) -> Result<Schema, LedgerError> {
        let settings = PgSettings::new(&LedgerConfig::for_url(self.url.clone()))?;
        let admin = settings.connect().await?;
        let name = format!("nrf_provd_bench_{}_{label}", std::process::id());
        admin
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            ))
            .await
            .map_err(crate::ledger::postgres::pg_error("create the bench schema"))?;
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}options=-c%20search_path%3D{name}", self.url);
        Ok(Schema { admin, name, url })
    }
}

impl Schema {
    pub async fn drop_all(self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await;
    }
}

/// How fast the forwarder sends a backlog.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Backfill {
    pub runs: usize,
    pub batch: usize,
    pub seconds: f64,
    pub runs_per_second: f64,
}

/// `count` runs shaped like `templates` (cycling through them) with fresh
/// uids, devices and claims, recorded as made by `station_id`: a history
/// or a backlog as a line makes it, one run per device.
pub fn copies(
    templates: &[RunRecord],
    count: usize,
    station_id: &str,
) -> Vec<(RunRecord, Vec<Claim>)> {
    let now = time::OffsetDateTime::now_utc();
    templates
        .iter()
        .cycle()
        .take(if templates.is_empty() { 0 } else { count })
        .map(|template| {
            let mut run = template.clone();
            run.uid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
            run.station_id = station_id.into();
            run.device.device_uuid =
                Some(uuid::Builder::from_random_bytes(rand::random()).into_uuid());
            let claims = [
                ClaimKind::AttestNonce,
                ClaimKind::KeygenNonce,
                ClaimKind::JwtJti,
            ]
            .into_iter()
            .map(|kind| Claim {
                kind,
                value: hex::encode(rand::random::<[u8; 16]>()),
                at: now,
            })
            .collect();
            (run, claims)
        })
        .collect()
}

/// Forward `count` runs shaped like `templates` (fresh uids, devices and
/// claims) from a new SQLite in `dir` to a new schema, `batch` per
/// transaction.
pub async fn backfill(
    ledger: &BenchLedger,
    templates: &[RunRecord],
    dir: &Path,
    batch: usize,
) -> Result<Option<Backfill>, LedgerError> {
    if ledger.backfill == 0 || templates.is_empty() {
        return Ok(None);
    }
    let schema = ledger.schema("backfill").await?;
    let local = SqliteLedger::open(&dir.join("backfill.db"))?;
    let copies = copies(templates, ledger.backfill, "bench-backfill");
    local.record_finished(copies).await?;
    let settings = PgSettings::new(&ledger.config(&schema))?;
    let central = PostgresLedger::new(&settings)?;
    central.connect().await?; // the schema is made before the clock starts
    let line = LineLedger::new(
        local,
        central,
        LedgerMode::Deferred,
        "bench-backfill",
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let sent = line.forward_now(batch).await?;
    let seconds = started.elapsed().as_secs_f64();
    schema.drop_all().await;
    let runs = usize::try_from(sent).unwrap_or(usize::MAX);
    Ok(Some(Backfill {
        runs,
        batch,
        seconds,
        runs_per_second: runs as f64 / seconds.max(1e-9),
    }))
}
