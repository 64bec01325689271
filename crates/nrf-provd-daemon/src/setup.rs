//! Building a station from its configuration: the one place demo, bench,
//! tests and the daemon assemble ledger, trust, authorities, CA and ports
//! (the station itself takes the parts, [`station::Parts`], and knows no
//! configuration).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::at::{AtError, ClientOptions, Dialect};
use crate::ca::StationCa;
use crate::cloud::{ApiKey, CloudClient};
use crate::config::{ApiKeySource, HandOff, StationConfig, VerifiedBy};
use crate::handoff::Handoff;
use crate::ledger::backends;
use crate::ledger::line::ForwardSettings;
use crate::ledger::{Ledger, LedgerError, LedgerReader, LineLedger};
use crate::plan::PlanContext;
use crate::plan::authority::{self, AuthorityParts};
use crate::trust::{TrustError, TrustStore};

use crate::record::RunRecord;
use crate::station::{
    DaemonHandoff, Events, LedgerGate, Parts, PortOptions, ProvisionError, RunSettings, Sources,
    Station,
};

/// Why the station could not be assembled from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("database {path}: {source}")]
    Ledger { path: PathBuf, source: LedgerError },
    #[error("shared ledger: {0}")]
    SharedLedger(LedgerError),
    #[error("trust file: {0}")]
    Trust(#[from] TrustError),
    #[error("station CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("claim: {0}")]
    Ownership(#[from] nrf_provd_core::ownership::OwnershipKeyError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("nRF Cloud: {0}")]
    Cloud(String),
    #[error("port {path}: {source}")]
    Port { path: PathBuf, source: AtError },
    /// `[traceability] require` names a value that is not set.
    #[error("traceability: {0}")]
    Untraced(String),
    #[error("{0}")]
    Sink(#[from] crate::sink::SinkError),
    #[error("cannot start the sinks' thread: {0}")]
    Thread(std::io::Error),
}

/// The station `config` describes: its SQLite ledger (and the line's
/// behind it), trust file, CA and ports, with the clock and random source
/// of `sources`.
pub fn station(config: &StationConfig, sources: Sources) -> Result<Arc<Station>, SetupError> {
    let OpenedLedger {
        ledger,
        reader,
        recovered,
        line,
    } = open_ledger(config)?;
    station_with_ledger(config, ledger, reader, recovered, line, sources)
}

/// The station `config` describes over a ledger of the caller's (a test's
/// ledger that fails on purpose); `line` is the composite behind it when
/// there is a shared ledger.
pub fn station_with_ledger(
    config: &StationConfig,
    ledger: Arc<dyn Ledger>,
    reader: Arc<dyn LedgerReader>,
    recovered: usize,
    line: Option<Arc<LineLedger>>,
    sources: Sources,
) -> Result<Arc<Station>, SetupError> {
    let gate = LedgerGate::new(ledger, Events::default());
    let ctx = plan_context(config, gate.clone(), &sources)?;
    let handoff = handoff(config)?;
    Ok(Station::new(Parts {
        gate,
        ctx,
        options: port_options(config),
        reader,
        recovered,
        line,
        sources,
        handoff,
        trace: config.traceability.clone(),
    }))
}

/// Re-read `config`: a new trust file, CA and port list. Runs in flight
/// keep the context they started with. A config that does not load, or a
/// trust file that would drop more keys than `identity.reload_max_drop`
/// allows, changes nothing and says why.
pub fn reload(station: &Station, config: &StationConfig) -> Result<(), SetupError> {
    let running = station.context();
    let ctx = plan_context(config, station.ledger(), station.sources())?;
    if let Some(trust_file) = &config.trust_file {
        if !running.trust.is_empty() {
            running.trust.check_replacement(
                &ctx.trust,
                trust_file,
                config.identity.reload_max_drop,
            )?;
        }
    }
    station.replace(ctx, &port_options(config));
    Ok(())
}

/// `nrf-provd provision`: the station `config` describes, on one port,
/// once: the record (durable unless it says `store`).
pub async fn provision_port(config: &StationConfig, port: &Path) -> Result<RunRecord, SetupError> {
    let station = station(config, Sources::default())?;
    station.provision(port).await.map_err(|e| match e {
        ProvisionError::Port { path, source } => SetupError::Port { path, source },
        ProvisionError::NotBegun(source) => SetupError::Ledger {
            path: config.database.clone(),
            source,
        },
        ProvisionError::Untraced(why) => SetupError::Untraced(why),
    })
}

/// The station's ledger, as [`open_ledger`] assembled it.
pub struct OpenedLedger {
    pub ledger: Arc<dyn Ledger>,
    /// The station's own records (its SQLite).
    pub reader: Arc<dyn LedgerReader>,
    /// Runs found in flight from an earlier crash, now interrupted.
    pub recovered: usize,
    /// With `[ledger]`: the composite that forwards to the line's ledger.
    pub line: Option<Arc<LineLedger>>,
}

/// Open the configured ledger: the station's SQLite database, and with
/// `[ledger]` the line's PostgreSQL behind it, its forwarder started (on
/// the current tokio runtime). Never waits for the server.
pub fn open_ledger(config: &StationConfig) -> Result<OpenedLedger, SetupError> {
    let sqlite = backends::local::open(&config.database).map_err(|source| SetupError::Ledger {
        path: config.database.clone(),
        source,
    })?;
    let recovered = sqlite.recovered();
    let reader: Arc<dyn LedgerReader> = Arc::new(sqlite.clone());
    let Some(line) = &config.ledger else {
        return Ok(OpenedLedger {
            ledger: Arc::new(sqlite),
            reader,
            recovered,
            line: None,
        });
    };
    let composite = Arc::new(
        backends::line::open(sqlite, line, &config.station_id, config.timeouts.run)
            .map_err(SetupError::SharedLedger)?,
    );
    composite.start_forwarding(ForwardSettings {
        batch_size: line.batch_size,
        interval: line.forward_interval,
    });
    Ok(OpenedLedger {
        ledger: composite.clone(),
        reader,
        recovered,
        line: Some(composite),
    })
}

/// The plan context `config` describes, over an already open ledger
/// (SIGHUP reloads keep the station's ledger and sources).
pub fn plan_context(
    config: &StationConfig,
    ledger: Arc<dyn Ledger>,
    sources: &Sources,
) -> Result<PlanContext, SetupError> {
    let trust = Arc::new(match &config.trust_file {
        Some(path) => load_trust(path)?,
        None => TrustStore::new(),
    });
    let parts = AuthorityParts {
        trust: &trust,
        ledger: &ledger,
        clock: &sources.clock,
        pin_cose: config.identity.pin_cose,
        cloud: &|| cloud_client(config),
    };
    let authorities = config
        .identity
        .authorities
        .iter()
        .map(|&by| authority::authority(by, &parts))
        .collect::<Result<Vec<_>, _>>()?;
    let (ca, ca_install_pem, validity) = match &config.ca {
        Some(ca_config) => {
            let ca = StationCa::load(&ca_config.certificate, &ca_config.key)?;
            let mut pem = String::new();
            for path in &ca_config.install {
                pem.push_str(&crate::ca::read_install_pem(path)?);
            }
            let validity = Duration::from_secs(u64::from(ca_config.validity_days) * 86_400);
            (
                Some(Arc::new(ca)),
                (!pem.is_empty()).then_some(pem),
                validity,
            )
        }
        None => (None, None, Duration::ZERO),
    };
    let ownership = match &config.claim {
        Some(claim) => Some(Arc::new(nrf_provd_core::ownership::OwnershipKey::load(
            &claim.ownership_key,
        )?)),
        None => None,
    };
    Ok(PlanContext {
        plan: config.plan.clone(),
        ownership,
        authorities,
        trust,
        ca,
        ca_install_pem,
        certificate_validity: validity,
        ledger,
        clock: Arc::clone(&sources.clock),
        random: Arc::clone(&sources.random),
    })
}

/// The nRF Cloud client `[cloud]` describes, with its API key read now.
pub fn cloud_client(config: &StationConfig) -> Result<Arc<CloudClient>, SetupError> {
    let cloud = config
        .cloud
        .as_ref()
        .ok_or_else(|| SetupError::Cloud("the configuration has no [cloud] section".into()))?;
    let key = match &cloud.api_key {
        ApiKeySource::File(path) => ApiKey::from_file(path),
        ApiKeySource::Env(name) => ApiKey::from_env(name),
    }
    .map_err(|e| SetupError::Cloud(e.to_string()))?;
    let client = CloudClient::new(cloud.settings.clone(), key)
        .map_err(|e| SetupError::Cloud(e.to_string()))?;
    Ok(Arc::new(client))
}

/// The daemon's hand-off to nRF Cloud, when `[cloud] hand_off` is not off:
/// the client (its API key read now) and the database's hand-off state on a
/// connection of its own, holding the hand-off lock for the daemon's life.
pub fn handoff(config: &StationConfig) -> Result<Option<DaemonHandoff>, SetupError> {
    let Some(cloud) = config.cloud.as_ref().filter(|c| c.hand_off != HandOff::Off) else {
        return Ok(None);
    };
    let client = cloud_client(config)?;
    let ledger =
        backends::local::handoff(&config.database, false).map_err(|source| SetupError::Ledger {
            path: config.database.clone(),
            source,
        })?;
    Ok(Some(DaemonHandoff {
        handoff: Arc::new(Handoff::new(client, ledger, cloud.handoff_settings())),
        mode: cloud.hand_off,
        every: cloud.hand_off_every,
        // A `collect` station's runs are claimed by nRF Cloud later: that
        // is what the hand-off is for.
        include_collected: config.identity.uses(VerifiedBy::Collect),
    }))
}

/// The delivery tasks of the config's `[[sink]]`s, on a thread of their
/// own and woken by `runs_finished` (the station's
/// [`Station::watch_runs_finished`]), from the outbox in the station's database (which the station
/// has opened, and so migrated, first), and the watcher of their backlog
/// and the line's (whose delivery task is the line ledger's forwarder).
/// `None` without sinks or a line: the outbox then only learns that none
/// is configured. Each sink's files (a webhook's secret) are read now.
pub async fn sinks(
    config: &StationConfig,
    runs_finished: Option<tokio::sync::watch::Receiver<u64>>,
) -> Result<Option<crate::sink::Deliveries>, SetupError> {
    let ledger_error = |source| SetupError::Ledger {
        path: config.database.clone(),
        source,
    };
    let store = backends::local::deliveries(&config.database).map_err(ledger_error)?;
    let on_line = config.ledger.is_some();
    store.configure_line(on_line).await.map_err(ledger_error)?;
    if config.sinks.is_empty() && !on_line {
        // Sinks a former config named owe nothing more.
        store.configure(Vec::new()).await.map_err(ledger_error)?;
        return Ok(None);
    }
    let deliveries = crate::sink::start(store, config.sinks.clone(), runs_finished)
        .await
        .map_err(|e| match e {
            crate::sink::StartError::Sink(e) => SetupError::Sink(e),
            crate::sink::StartError::Ledger(source) => ledger_error(source),
            crate::sink::StartError::Thread(source) => SetupError::Thread(source),
        })?;
    for sink in &config.sinks {
        info!(sink = %sink.name(), "delivering every finished run");
    }
    Ok(Some(deliveries))
}

/// The trust file, refused when it holds no key; its size and digest logged.
fn load_trust(path: &Path) -> Result<TrustStore, SetupError> {
    let trust = TrustStore::load(path)?;
    if trust.is_empty() {
        return Err(TrustError::Empty {
            path: path.to_path_buf(),
        }
        .into());
    }
    info!(
        trusted = trust.len(),
        file = %path.display(),
        sha256 = trust.file_sha256().unwrap_or_default(),
        "trusted device identity keys loaded"
    );
    Ok(trust)
}

/// How to find and talk to the configured ports.
pub fn port_options(config: &StationConfig) -> PortOptions {
    PortOptions {
        patterns: config.ports.paths.clone(),
        exclude: config.ports.exclude.clone(),
        rescan_interval: config.ports.rescan_interval,
        serial: config.serial.clone(),
        client: ClientOptions {
            dialect: config.dialect.fixed().unwrap_or(Dialect::RAW),
            line_ending: config.line_ending,
            timeouts: config.timeouts.commands.clone(),
            ..ClientOptions::default()
        },
        dialect: config.dialect,
        run: RunSettings {
            station_id: config.station_id.clone(),
            run_timeout: config.timeouts.run,
        },
        shutdown_grace: config.timeouts.shutdown_grace,
    }
}
