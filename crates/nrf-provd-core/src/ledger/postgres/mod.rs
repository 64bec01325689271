//! The line's shared ledger: PostgreSQL.
//!
//! Every station of a line forwards its runs here (see [`super::line`]),
//! and in `required` mode makes its claims here during the run. The
//! UNIQUE constraints on `claims` and `authority_bindings` (every identity
//! authority's state: `pin`'s pins) are the line's replay defence;
//! `devices` and `live_devices` are its device registry. The schema is
//! migrated by the first station that reaches the server (versions in
//! `nrf_provd_migrations`, serialised by an advisory lock).
//!
//! Connections come from a small pool (deadpool) and are made lazily: a
//! station starts and records locally while the server is down, and the
//! pool reconnects by itself once it is back. TCP with TLS as the URL's
//! `sslmode` says ([`tls`]), or a Unix socket. The password never appears
//! in logs or errors: the URL is shown as [`PgSettings::shown`], rebuilt
//! without it; and it is never sent where the connection may be plain text
//! to another machine.

mod forward;
mod read;
pub mod tls;
mod url;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::OnceCell;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

use super::{
    Binding, BindingOutcome, ClaimKind, DeviceCheck, DeviceHistory, LedgerError, RunId, Sighting,
};
use crate::ledger::outbox::Conflict;
use crate::ledger::{LedgerConfig, PASSWORD_ENV, PasswordSource};
use secure_file::{self, Holds};

pub use forward::Forwarded;
pub use url::{LedgerTls, LedgerUrl, SslMode, check_url};

/// Schema migrations, applied in order. Append only.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_line", include_str!("migrations/0001_line.sql")),
    (
        "0002_pin_keys",
        include_str!("migrations/0002_pin_keys.sql"),
    ),
    (
        "0003_traceability",
        include_str!("migrations/0003_traceability.sql"),
    ),
    (
        "0004_authority_bindings",
        include_str!("migrations/0004_authority_bindings.sql"),
    ),
];

/// Advisory lock key serialising migrations across stations ("nrfprovd").
const MIGRATION_LOCK: i64 = 0x6e72_6670_726f_7664;

/// The advisory lock key of one bound value of one authority: the first 8
/// bytes of the SHA-256 of both (a collision only makes two bindings wait
/// for each other). Whoever binds a value on the line holds it until its
/// transaction ends: [`PostgresLedger::bind`] and the forwarder.
pub fn value_lock(authority: &str, value: &[u8]) -> i64 {
    use sha2::{Digest, Sha256};
    // The name's length first: no two (authority, value) pairs hash alike.
    let digest = Sha256::new()
        .chain_update((authority.len() as u64).to_be_bytes())
        .chain_update(authority)
        .chain_update(value)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// How to reach the server.
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    shown: String,
    pub claim_timeout: Duration,
    pub pool_size: usize,
}

impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &self.shown)
            .field("claim_timeout", &self.claim_timeout)
            .finish_non_exhaustive()
    }
}

impl PgSettings {
    /// Settings from `[ledger]` (or `results --ledger`): the URL, and the
    /// password from its file or the environment.
    pub fn new(ledger: &LedgerConfig) -> Result<PgSettings, LedgerError> {
        let refused = |context| move |detail| LedgerError::Postgres { context, detail };
        let url = LedgerUrl::parse(&ledger.url).map_err(refused("ledger URL"))?;
        let mut config = url.config.clone();
        match &ledger.password {
            PasswordSource::File(path) => {
                let password = read_password(path)?;
                config.password(password.as_bytes());
            }
            PasswordSource::Environment => {
                if let Some(password) = std::env::var_os(PASSWORD_ENV) {
                    config.password(password.as_encoded_bytes());
                }
            }
        }
        // A secret travels encrypted: never a password in plain text to
        // another machine (check-config warns of the rest).
        url.exposure(config.get_password().is_some())
            .map_err(refused("ledger URL"))?;
        let tls = tls::connector(&url.tls).map_err(refused("ledger TLS"))?;
        config.connect_timeout(ledger.connect_timeout);
        config.application_name("nrf-provd");
        // TCP keepalives: a server that vanished is noticed, not waited on.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        let shown = shown(&config);
        Ok(PgSettings {
            config,
            tls,
            shown,
            claim_timeout: ledger.claim_timeout,
            pool_size: ledger.pool_size,
        })
    }

    /// The URL without its password, for logs and errors.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// One plain connection, no schema of ours (the bench makes and drops
    /// its schemas with it).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, LedgerError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(pg_error("connect"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// `postgres://user@host:port/db` without a password; a socket directory as
/// `?host=`. Built from the parsed settings, never from the text given.
fn shown(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or("");
    let mut tcp = Vec::new();
    let mut sockets = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = config.get_ports().get(i).or(config.get_ports().first());
        match host {
            Host::Tcp(name) => tcp.push(match port {
                Some(port) => format!("{name}:{port}"),
                None => name.clone(),
            }),
            Host::Unix(dir) => sockets.push(dir.display().to_string()),
        }
    }
    let mut text = format!("postgres://{user}@{}/{db}", tcp.join(","));
    if !sockets.is_empty() {
        text.push_str(&format!("?host={}", sockets.join(",")));
    }
    text
}

/// The password file: its first line, refused when group or others may
/// read it or replace it (it is a secret, like a key: [`secure_file`]).
pub fn read_password(path: &Path) -> Result<zeroize::Zeroizing<String>, LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.to_owned(),
        action: "cannot read ledger password file",
        source,
    };
    let file = secure_file::open(path, "ledger password file", Holds::Secret)
        .map_err(|refusal| refusal.into_error(io))?;
    let text = zeroize::Zeroizing::new(std::io::read_to_string(file).map_err(io)?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(LedgerError::Postgres {
            context: "ledger password file",
            detail: format!("{} is empty", path.display()),
        });
    }
    Ok(zeroize::Zeroizing::new(line.to_owned()))
}

/// The line's shared ledger on a PostgreSQL server.
#[derive(Clone)]
pub struct PostgresLedger {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    shown: String,
    claim_timeout: Duration,
    /// Set once the schema is current (retried until it is).
    schema: OnceCell<()>,
}

/// The name this ledger goes by in errors.
pub(crate) const NAME: &str = "PostgreSQL";

/// A driver error as a ledger error: a server that cannot be reached (or
/// is going away, or asks to try again) is [`LedgerError::Unreachable`];
/// an error in what was asked is not.
pub fn pg_error(context: &'static str) -> impl Fn(tokio_postgres::Error) -> LedgerError {
    move |e| {
        use tokio_postgres::error::SqlState;
        // A certificate refused is no outage: waiting will not clear it.
        if let Some(detail) = tls::failure(&e) {
            return LedgerError::Postgres { context, detail };
        }
        let transient = match e.code() {
            None => true, // no server answer: I/O, closed, timeout
            Some(code) => {
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                        SqlState::TOO_MANY_CONNECTIONS,
                        SqlState::T_R_SERIALIZATION_FAILURE,
                        SqlState::T_R_DEADLOCK_DETECTED,
                        SqlState::QUERY_CANCELED,
                    ]
                    .contains(code)
            }
        };
        let detail = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        let data = e.code().is_some_and(|code| {
            ["22", "23"]
                .iter()
                .any(|class| code.code().starts_with(class))
        });
        if transient {
            LedgerError::Unreachable {
                ledger: NAME,
                detail: format!("{context}: {detail}"),
            }
        } else if data {
            LedgerError::PostgresData { context, detail }
        } else {
            LedgerError::Postgres { context, detail }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> LedgerError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_error("connect")(e),
        other => LedgerError::Unreachable {
            ledger: NAME,
            detail: format!("connect: {other}"),
        },
    }
}

/// An answer not within `limit`: the server is as good as unreachable.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, LedgerError>>,
) -> Result<T, LedgerError> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(LedgerError::Unreachable {
            ledger: NAME,
            detail: format!("{what}: no answer within {limit:?}"),
        })
    })
}

impl PostgresLedger {
    /// A ledger on the server `settings` name. Connects lazily: this never
    /// waits for the server.
    pub fn new(settings: &PgSettings) -> Result<PostgresLedger, LedgerError> {
        let manager = Manager::from_config(
            settings.config.clone(),
            settings.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let connect = settings
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect))
            .wait_timeout(Some(connect))
            .build()
            .map_err(|e| LedgerError::Postgres {
                context: "connection pool",
                detail: e.to_string(),
            })?;
        Ok(PostgresLedger {
            inner: Arc::new(Inner {
                pool,
                shown: settings.shown.clone(),
                claim_timeout: settings.claim_timeout,
                schema: OnceCell::new(),
            }),
        })
    }

    /// Where the server is, without the password.
    pub fn shown(&self) -> &str {
        &self.inner.shown
    }

    pub fn claim_timeout(&self) -> Duration {
        self.inner.claim_timeout
    }

    /// A connection to a server whose schema is current.
    async fn client(&self) -> Result<deadpool_postgres::Object, LedgerError> {
        let mut client = self.inner.pool.get().await.map_err(pool_error)?;
        if self.inner.schema.get().is_none() {
            migrate(&mut client).await?;
            let _ = self.inner.schema.set(());
        }
        Ok(client)
    }

    /// Reach the server and bring its schema up to date.
    pub async fn connect(&self) -> Result<(), LedgerError> {
        self.client().await.map(drop)
    }

    /// Claim `value` for `run` line-wide. `None`: fresh (or already this
    /// run's); else the run that claimed it first.
    pub async fn claim(
        &self,
        kind: ClaimKind,
        value: &str,
        run: &Sighting,
    ) -> Result<Option<Sighting>, LedgerError> {
        let client = self.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO claims (kind, value, run_uid, station_id, port, claimed_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, value) DO NOTHING",
                &[
                    &kind.as_str(),
                    &value,
                    &run.run_uid,
                    &run.station_id,
                    &run.port,
                    &run.at,
                ],
            )
            .await
            .map_err(pg_error("claim"))?;
        if inserted == 1 {
            return Ok(None);
        }
        let row = client
            .query_one(
                "SELECT run_uid, station_id, port, claimed_at FROM claims
                 WHERE kind = $1 AND value = $2",
                &[&kind.as_str(), &value],
            )
            .await
            .map_err(pg_error("look up claim"))?;
        let first = Sighting {
            run_uid: row.get(0),
            station_id: row.get(1),
            port: row.get(2),
            at: row.get(3),
        };
        Ok((first.run_uid != run.run_uid).then_some(first))
    }

    /// Bind a value to its subject line-wide on first sight, unless the
    /// authority has it bound to another subject. Serialised per authority
    /// and value (an advisory lock for the transaction), so two stations
    /// cannot bind one value to two subjects.
    pub async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        let error = pg_error("bind");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&error)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&value_lock(&binding.authority, &binding.value)],
        )
        .await
        .map_err(&error)?;
        let stored = |row: tokio_postgres::Row| Binding {
            authority: row.get(0),
            subject: row.get(1),
            value: row.get(2),
            at: row.get(3),
            station_id: row.get(4),
            port: row.get(5),
            run_uid: row.get(6),
        };
        const COLUMNS: &str = "authority, subject, value, bound_at, station_id, port, run_uid";
        let other = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM authority_bindings
                     WHERE authority = $1 AND value = $2 AND subject <> $3
                     ORDER BY bound_at LIMIT 1"
                ),
                &[&binding.authority, &binding.value, &binding.subject],
            )
            .await
            .map_err(pg_error("look up bound value"))?
            .map(stored);
        if other.is_none() {
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO authority_bindings ({COLUMNS})
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (authority, subject) DO NOTHING"
                    ),
                    &[
                        &binding.authority,
                        &binding.subject,
                        &binding.value,
                        &binding.at,
                        &binding.station_id,
                        &binding.port,
                        &binding.run_uid,
                    ],
                )
                .await
                .map_err(&error)?;
            if inserted == 1 {
                tx.commit().await.map_err(&error)?;
                return Ok(BindingOutcome::Bound);
            }
        }
        let first = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM authority_bindings WHERE authority = $1 AND subject = $2"
                ),
                &[&binding.authority, &binding.subject],
            )
            .await
            .map_err(pg_error("look up binding"))?
            .map(stored);
        tx.commit().await.map_err(&error)?;
        Ok(BindingOutcome::decide(&binding.value, first, other))
    }

    /// Mark the device as running in `check`'s run for at most `hold`
    /// (unless another run holds it now), note the sighting in the
    /// registry, and say what the line knows of the device. One statement:
    /// one round trip, one commit.
    pub async fn check_device(
        &self,
        check: &DeviceCheck,
        hold: Duration,
    ) -> Result<DeviceHistory, LedgerError> {
        let client = self.client().await?;
        let seen = &check.seen;
        let error = pg_error("check device");
        let row = client
            .query_one(
                "WITH held AS (
                     INSERT INTO live_devices AS l (device_uuid, run_uid, station_id, port, since,
                         expires_at)
                     VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
                     ON CONFLICT (device_uuid) DO UPDATE SET run_uid = excluded.run_uid,
                         station_id = excluded.station_id, port = excluded.port,
                         since = excluded.since, expires_at = excluded.expires_at
                     WHERE l.expires_at < now() OR l.run_uid = excluded.run_uid
                        OR (l.station_id = excluded.station_id AND l.port = excluded.port)
                     RETURNING 1
                 ), seen AS (
                     INSERT INTO devices AS d (device_uuid, imei, first_seen, first_station,
                         first_port, last_seen, last_station, last_port, last_run_uid)
                     VALUES ($1, $7, $5, $3, $4, $5, $3, $4, $2)
                     ON CONFLICT (device_uuid) DO UPDATE SET imei = COALESCE(excluded.imei, d.imei),
                         last_seen = excluded.last_seen, last_station = excluded.last_station,
                         last_port = excluded.last_port, last_run_uid = excluded.last_run_uid
                     RETURNING provisioned, last_passed_at, last_passed_station, last_passed_port,
                         last_passed_run_uid
                 )
                 SELECT (SELECT count(*) FROM held), seen.*,
                        h.station_id, h.port, h.run_uid, h.since
                 FROM seen LEFT JOIN live_devices h ON h.device_uuid = $1",
                &[
                    &check.device_uuid,
                    &seen.run_uid,
                    &seen.station_id,
                    &seen.port,
                    &seen.at,
                    &hold.as_secs_f64(),
                    &check.imei,
                ],
            )
            .await
            .map_err(&error)?;
        let held: i64 = row.get(0);
        let holder = |row: &tokio_postgres::Row, at: usize| -> Option<Sighting> {
            Some(Sighting {
                station_id: row.get::<_, Option<String>>(at)?,
                port: row.get::<_, Option<String>>(at + 1)?,
                run_uid: row.get::<_, Option<Uuid>>(at + 2)?,
                at: row.get::<_, Option<time::OffsetDateTime>>(at + 3)?,
            })
        };
        let running = if held == 1 {
            None
        } else {
            // The statement saw the holder as it was when it began; one
            // that committed meanwhile is read now.
            match holder(&row, 6) {
                Some(holder) => Some(holder),
                None => client
                    .query_opt(
                        "SELECT station_id, port, run_uid, since FROM live_devices
                         WHERE device_uuid = $1",
                        &[&check.device_uuid],
                    )
                    .await
                    .map_err(&error)?
                    .and_then(|row| holder(&row, 0)),
            }
        };
        let provisioned: i64 = row.get(1);
        let last_passed = match (row.get(2), row.get(3), row.get(4), row.get(5)) {
            (Some(at), Some(station_id), Some(port), Some(run_uid)) => Some(Sighting {
                station_id,
                port,
                run_uid,
                at,
            }),
            _ => None,
        };
        Ok(DeviceHistory {
            running,
            passed: u64::try_from(provisioned).unwrap_or(0),
            last_passed,
        })
    }

    /// The run is over: the device is free for another run anywhere.
    pub async fn release_device(
        &self,
        device_uuid: Uuid,
        run_uid: Uuid,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM live_devices WHERE device_uuid = $1 AND run_uid = $2",
                &[&device_uuid, &run_uid],
            )
            .await
            .map_err(pg_error("release device"))?;
        Ok(())
    }

    /// A station started at `since`: runs it had in flight before are over.
    pub async fn station_started(
        &self,
        station_id: &str,
        since: time::OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM live_devices WHERE station_id = $1 AND since < $2",
                &[&station_id, &since],
            )
            .await
            .map_err(pg_error("clear devices of an earlier start"))?;
        Ok(())
    }

    /// Conflicts found on `station_id`'s runs and not yet delivered to it
    /// (oldest first, at most `limit`), with their ids for [`Self::delivered`].
    pub async fn undelivered_conflicts(
        &self,
        station_id: &str,
        limit: i64,
    ) -> Result<Vec<(i64, Conflict)>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, run_uid, kind, value, other_run_uid, other_station, other_port,
                        other_at, found_at
                 FROM conflicts WHERE station_id = $1 AND NOT delivered ORDER BY id LIMIT $2",
                &[&station_id, &limit],
            )
            .await
            .map_err(pg_error("read conflicts"))?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get(0),
                    Conflict {
                        run_uid: row.get(1),
                        kind: row.get(2),
                        value: row.get(3),
                        other: Sighting {
                            run_uid: row.get(4),
                            station_id: row.get(5),
                            port: row.get(6),
                            at: row.get(7),
                        },
                        found_at: row.get(8),
                    },
                )
            })
            .collect())
    }

    /// The station recorded these conflicts.
    pub async fn delivered(&self, ids: &[i64]) -> Result<(), LedgerError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE conflicts SET delivered = true WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(pg_error("mark conflicts delivered"))?;
        Ok(())
    }

    /// Runs of `station_id` stored, for checks.
    pub async fn station_runs(&self, station_id: &str) -> Result<Vec<(Uuid, RunId)>, LedgerError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT uid, local_id FROM runs WHERE station_id = $1 ORDER BY local_id",
                &[&station_id],
            )
            .await
            .map_err(pg_error("read runs"))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}

/// Bring the schema up to date, one station at a time.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), LedgerError> {
    let context = "migrate schema";
    let error = pg_error(context);
    let tx = client.transaction().await.map_err(&error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(&error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS nrf_provd_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(&error)?;
    let applied: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM nrf_provd_migrations",
            &[],
        )
        .await
        .map_err(&error)?
        .get(0);
    let supported = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if applied > supported {
        return Err(LedgerError::Postgres {
            context,
            detail: format!(
                "schema version {applied} is newer than this nrf-provd supports ({supported}); use a newer nrf-provd"
            ),
        });
    }
    let applied_count = usize::try_from(applied).unwrap_or(0);
    for (index, (name, migration)) in MIGRATIONS.iter().enumerate().skip(applied_count) {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(migration).await.map_err(&error)?;
        tx.execute(
            "INSERT INTO nrf_provd_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )
        .await
        .map_err(&error)?;
    }
    tx.commit().await.map_err(&error)?;
    if applied_count < MIGRATIONS.len() {
        tracing::info!(
            from = applied,
            to = supported,
            "shared ledger schema migrated"
        );
    }
    Ok(())
}
