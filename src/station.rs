//! The station: one supervisor task per port. Each waits for a board,
//! runs the plan once, commits the record, then waits until the board is
//! removed (or a different device answers) before taking the next one.
//!
//! Ports come from paths and globs and are rescanned for hot-plug. SIGTERM
//! stops taking boards and lets runs in flight finish within a grace period;
//! SIGHUP reloads the trust file and the port list.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_serial::SerialStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::at::{AtError, Client, ClientOptions, Dialect, DialectChoice};
use crate::ca::StationCa;
use crate::config::StationConfig;
use crate::modem::Modem;
use crate::plan::{self, PlanContext};
use crate::serial::{self, SerialSettings};
use crate::store::{DeviceInfo, Outcome, RunRecord, RunStart, StepRecord, Store};
use crate::trust::TrustStore;

/// How the station finds and talks to its ports.
#[derive(Debug, Clone)]
pub struct PortOptions {
    pub station_id: String,
    /// Paths and glob patterns, e.g. `/dev/serial/by-id/*-if00`.
    pub patterns: Vec<String>,
    pub exclude: Vec<String>,
    pub rescan_interval: Duration,
    pub serial: SerialSettings,
    pub client: ClientOptions,
    pub dialect: DialectChoice,
    /// Upper bound on one whole run; past it the run fails with `timeout`.
    pub run_timeout: Duration,
    /// How long runs in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Something a user watching the station wants to see.
#[derive(Debug, Clone)]
pub enum StationEvent {
    BoardFound {
        port: String,
    },
    StepFinished {
        port: String,
        step: StepRecord,
    },
    RunFinished {
        port: String,
        record: Box<RunRecord>,
    },
    BoardLeft {
        port: String,
    },
}

/// Counters reported to systemd's STATUS and to the demo summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub seen: AtomicU64,
    pub passed: AtomicU64,
    pub failed: AtomicU64,
    pub interrupted: AtomicU64,
}

impl Counters {
    pub fn status_line(&self) -> String {
        format!(
            "boards seen {}, passed {}, failed {}, interrupted {}",
            self.seen.load(Ordering::Relaxed),
            self.passed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.interrupted.load(Ordering::Relaxed)
        )
    }
}

/// State shared by the scanner and all supervisors.
pub struct Station {
    options: RwLock<PortOptions>,
    ctx: RwLock<Arc<PlanContext>>,
    pub counters: Counters,
    events: broadcast::Sender<StationEvent>,
    /// Cancelled on SIGTERM: take no new boards.
    stop: CancellationToken,
    /// Cancelled when the grace period ends: cut runs in flight short.
    abort: CancellationToken,
}

impl Station {
    pub fn new(options: PortOptions, ctx: PlanContext) -> Arc<Self> {
        Arc::new(Self {
            options: RwLock::new(options),
            ctx: RwLock::new(Arc::new(ctx)),
            counters: Counters::default(),
            events: broadcast::channel(1024).0,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StationEvent> {
        self.events.subscribe()
    }

    /// Swap in a new plan context (new trust store) and port list. Runs in
    /// flight keep the context they started with.
    pub fn reload(&self, ctx: PlanContext, patterns: Vec<String>, exclude: Vec<String>) {
        *write(&self.ctx) = Arc::new(ctx);
        let mut options = write(&self.options);
        options.patterns = patterns;
        options.exclude = exclude;
    }

    /// The context a new run starts with.
    pub fn context(&self) -> Arc<PlanContext> {
        Arc::clone(&read(&self.ctx))
    }

    fn options(&self) -> PortOptions {
        read(&self.options).clone()
    }

    /// Begin a graceful shutdown: no new boards; after `grace`, runs still
    /// in flight are cut short and recorded as interrupted.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Scan for ports and supervise each until shutdown; returns when every
    /// supervisor has finished.
    pub async fn serve(self: Arc<Self>) {
        let mut supervisors: JoinSet<()> = JoinSet::new();
        // Which port each supervisor task serves: a task that ends (port
        // gone) or panics frees its port for the next scan.
        let mut running: HashMap<tokio::task::Id, PathBuf> = HashMap::new();
        loop {
            for port in scan(&self.options()) {
                if running.values().any(|p| *p == port) {
                    continue;
                }
                info!(port = %port.display(), "port found");
                let station = Arc::clone(&self);
                let span = info_span!("port", port = %port.display());
                let path = port.clone();
                let handle = supervisors
                    .spawn(async move { station.supervise(&path).await }.instrument(span));
                running.insert(handle.id(), port);
            }
            let interval = self.options().rescan_interval;
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(done) = supervisors.join_next_with_id() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(err) => {
                            error!(%err, "port supervisor failed; the port will be picked up again");
                            err.id()
                        }
                    };
                    running.remove(&id);
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
        info!("stopping: waiting for runs in flight");
        let grace = self.options().shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while supervisors.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(?grace, "grace period over: interrupting runs in flight");
            self.abort.cancel();
            while supervisors.join_next().await.is_some() {}
        }
    }

    /// One port's life: open, wait for a board, provision it, wait for it
    /// to leave, repeat. Returns on shutdown or when the port is no longer
    /// wanted (removed from the config and gone).
    async fn supervise(self: &Arc<Self>, port: &Path) {
        'open: while !self.stopping() {
            let options = self.options();
            let stream = match serial::open(port, &options.serial) {
                Ok(stream) => stream,
                Err(err) => {
                    if !port.exists() && !scan(&options).contains(port) {
                        debug!(%err, "port gone");
                        return;
                    }
                    debug!(%err, "cannot open port yet");
                    self.pause(options.rescan_interval).await;
                    continue;
                }
            };
            let mut modem = open_modem(stream, &options);
            loop {
                if !self.wait_for_board(&mut modem, &options).await {
                    continue 'open;
                }
                let port_name = port.display().to_string();
                let _ = self.events.send(StationEvent::BoardFound {
                    port: port_name.clone(),
                });
                let record = self.provision(&mut modem, port, &options).await;
                let imei = record.device.imei.clone();
                let disconnected = record
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("disconnected"));
                let _ = self.events.send(StationEvent::RunFinished {
                    port: port_name.clone(),
                    record: Box::new(record),
                });
                if disconnected {
                    continue 'open;
                }
                match self
                    .wait_for_departure(&mut modem, port, &options, imei)
                    .await
                {
                    Departure::Unplugged => {
                        let _ = self
                            .events
                            .send(StationEvent::BoardLeft { port: port_name });
                        continue 'open;
                    }
                    Departure::OtherBoard => {
                        let _ = self
                            .events
                            .send(StationEvent::BoardLeft { port: port_name });
                        continue;
                    }
                    Departure::Shutdown => return,
                }
            }
        }
    }

    /// Sleep for `interval` unless shutdown starts first.
    async fn pause(&self, interval: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }

    /// Poll the open port until a board answers. False when the port went
    /// away or shutdown began (no record is made for an empty fixture).
    async fn wait_for_board(&self, modem: &mut Modem<SerialStream>, options: &PortOptions) -> bool {
        while !self.stopping() {
            match presence(modem, options.dialect).await {
                Ok(()) => return true,
                Err(AtError::Disconnected { .. }) | Err(AtError::Io(_)) => return false,
                Err(err) => debug!(%err, "no board answering"),
            }
            self.pause(options.rescan_interval).await;
        }
        false
    }

    /// Run the plan once and commit its record before returning it.
    async fn provision(
        &self,
        modem: &mut Modem<SerialStream>,
        port: &Path,
        options: &PortOptions,
    ) -> RunRecord {
        self.counters.seen.fetch_add(1, Ordering::Relaxed);
        let ctx = self.context();
        let port_name = port.display().to_string();
        let events = self.events.clone();
        let on_step = move |step: &StepRecord| {
            let _ = events.send(StationEvent::StepFinished {
                port: port_name.clone(),
                step: step.clone(),
            });
        };
        let record = run_recorded(&ctx, modem, port, options, &self.abort, &on_step).await;
        let counter = match record.outcome {
            Outcome::Passed => &self.counters.passed,
            Outcome::Interrupted => &self.counters.interrupted,
            _ => &self.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        notify_status(&self.counters);
        record
    }

    /// After a run: poll who answers until the board is unplugged, another
    /// board answers, or shutdown begins. A board left in its fixture is
    /// never provisioned twice.
    async fn wait_for_departure(
        &self,
        modem: &mut Modem<SerialStream>,
        port: &Path,
        options: &PortOptions,
        provisioned: Option<String>,
    ) -> Departure {
        loop {
            self.pause(options.rescan_interval.max(Duration::from_millis(200)))
                .await;
            if self.stopping() {
                return Departure::Shutdown;
            }
            if !port.exists() {
                return Departure::Unplugged;
            }
            match answering_imei(modem).await {
                // A board whose IMEI we never learned counts as the same
                // board while it answers: better idle than loop on it.
                Ok(Some(now)) if provisioned.as_ref().is_some_and(|p| *p != now) => {
                    return Departure::OtherBoard;
                }
                Ok(_) => {}
                Err(AtError::Disconnected { .. }) | Err(AtError::Io(_)) => {
                    return Departure::Unplugged;
                }
                // Silent: powered off in its fixture, or being swapped.
                Err(err) => debug!(%err, "board silent"),
            }
        }
    }
}

enum Departure {
    Unplugged,
    OtherBoard,
    Shutdown,
}

/// The IMEI of whatever board answers on `modem`. The IMEI is on every
/// nRF91 (the device UUID command is not), so it tells one board from the
/// next on the same port.
async fn answering_imei(modem: &mut Modem<SerialStream>) -> Result<Option<String>, AtError> {
    let response = modem.client().command("AT+CGSN").await?;
    Ok(response
        .lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.len() == 15 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string))
}

fn open_modem(stream: SerialStream, options: &PortOptions) -> Modem<SerialStream> {
    let (client, mut notifications) = Client::new(stream, options.client.clone());
    // Notifications are logged, never mistaken for answers.
    tokio::spawn(
        async move {
            while let Some(n) = notifications.recv().await {
                debug!(line = %n.line, "notification");
            }
        }
        .in_current_span(),
    );
    Modem::new(client)
}

/// Is a board answering? Also settles the dialect when it is automatic.
async fn presence(modem: &mut Modem<SerialStream>, dialect: DialectChoice) -> Result<(), AtError> {
    match dialect {
        DialectChoice::Auto => modem.client().detect_dialect().await.map(|_| ()),
        DialectChoice::Raw | DialectChoice::Shell => {
            let fixed = if dialect == DialectChoice::Raw {
                Dialect::Raw
            } else {
                Dialect::Shell
            };
            modem.client().set_dialect(fixed);
            modem
                .client()
                .command_with_timeout("AT", Duration::from_secs(1))
                .await
                .map(|_| ())
        }
    }
}

/// Begin a run in the store, run the plan under the run deadline and the
/// abort token, and commit the finished record. The record is durable
/// before this returns.
pub async fn run_recorded(
    ctx: &Arc<PlanContext>,
    modem: &mut Modem<SerialStream>,
    port: &Path,
    options: &PortOptions,
    abort: &CancellationToken,
    on_step: plan::StepObserver<'_>,
) -> RunRecord {
    let started_at = OffsetDateTime::now_utc();
    let start = RunStart {
        station_id: options.station_id.clone(),
        port: port.display().to_string(),
        started_at,
    };
    let store = Arc::clone(&ctx.store);
    let id = match tokio::task::spawn_blocking(move || store.begin_run(&start)).await {
        Ok(Ok(id)) => id,
        Ok(Err(err)) => return unrecorded(options, port, started_at, format!("store: {err}")),
        Err(err) => return unrecorded(options, port, started_at, format!("store: {err}")),
    };
    let mut record = RunRecord {
        id,
        station_id: options.station_id.clone(),
        port: port.display().to_string(),
        started_at,
        finished_at: None,
        outcome: Outcome::InFlight,
        failed_step: None,
        reason: None,
        device: DeviceInfo::default(),
        steps: Vec::new(),
        tokens: Vec::new(),
        artifacts: Vec::new(),
    };
    let result = {
        // A span per run; the plan fills in the device once it knows it.
        let span = info_span!("run", id = record.id, device = tracing::field::Empty);
        let run = plan::run(ctx, modem, &mut record, on_step).instrument(span);
        tokio::select! {
            result = tokio::time::timeout(options.run_timeout, run) => Some(result),
            _ = abort.cancelled() => None,
        }
    };
    match result {
        Some(Ok(Ok(()))) => record.outcome = Outcome::Passed,
        Some(Ok(Err(failure))) => {
            record.outcome = Outcome::Failed;
            record.failed_step = Some(failure.step.to_string());
            record.reason = Some(failure.reason());
        }
        Some(Err(_elapsed)) => {
            record.outcome = Outcome::Failed;
            record.failed_step = Some(current_step(ctx, &record));
            record.reason = Some(format!("timeout: run exceeded {:?}", options.run_timeout));
        }
        None => {
            record.outcome = Outcome::Interrupted;
            record.failed_step = Some(current_step(ctx, &record));
            record.reason = Some("interrupted: station shutting down".into());
        }
    }
    record.finished_at = Some(OffsetDateTime::now_utc());
    let store = Arc::clone(&ctx.store);
    let to_commit = record.clone();
    let committed = match tokio::task::spawn_blocking(move || store.finish_run(&to_commit)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = committed {
        // Not durable, so not done: the operator must not see a pass. The
        // row stays in_flight and becomes interrupted when the store reopens.
        error!(%err, run = record.id, "could not commit run");
        record.outcome = Outcome::Failed;
        record.failed_step = Some("record".into());
        record.reason = Some(format!("store: {err}"));
    }
    info!(
        run = record.id,
        outcome = record.outcome.as_str(),
        device = ?record.device.device_uuid,
        reason = record.reason.as_deref().unwrap_or(""),
        "run finished"
    );
    record
}

/// The step a run was in when it was cut short: the one after the last
/// recorded step.
fn current_step(ctx: &PlanContext, record: &RunRecord) -> String {
    ctx.plan
        .steps
        .get(record.steps.len())
        .map_or_else(|| "restore".into(), |s| s.to_string())
}

/// A record for a run the store refused to begin (disk full, permissions):
/// reported as failed, never as passed.
fn unrecorded(
    options: &PortOptions,
    port: &Path,
    started_at: OffsetDateTime,
    reason: String,
) -> RunRecord {
    warn!(%reason, "run not recorded");
    RunRecord {
        id: 0,
        station_id: options.station_id.clone(),
        port: port.display().to_string(),
        started_at,
        finished_at: Some(OffsetDateTime::now_utc()),
        outcome: Outcome::Failed,
        failed_step: Some("record".into()),
        reason: Some(reason),
        device: DeviceInfo::default(),
        steps: Vec::new(),
        tokens: Vec::new(),
        artifacts: Vec::new(),
    }
}

/// Every existing path matched by the patterns, minus the excluded ones.
pub fn scan(options: &PortOptions) -> BTreeSet<PathBuf> {
    let excluded: Vec<glob::Pattern> = options
        .exclude
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect();
    options
        .patterns
        .iter()
        .filter_map(|pattern| glob::glob(pattern).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|path| !excluded.iter().any(|x| x.matches_path(path)))
        .collect()
}

/// Tell systemd how the station is doing (no-op outside systemd).
pub fn notify_status(counters: &Counters) {
    let _ = sd_notify::notify(
        false,
        &[sd_notify::NotifyState::Status(&counters.status_line())],
    );
}

/// Ping systemd's watchdog at half its interval, when it is enabled.
pub fn spawn_watchdog() {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why the station could not be assembled from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("database {path}: {source}")]
    Store {
        path: PathBuf,
        source: crate::store::StoreError,
    },
    #[error("trust file: {0}")]
    Trust(#[from] crate::trust::TrustError),
    #[error("station CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("CA certificate to install {path}: {source}")]
    Install {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("port {path}: {source}")]
    Port { path: PathBuf, source: AtError },
}

/// Build the port options and the plan context a configuration describes:
/// opens the database, loads the trust file and the CA.
pub fn assemble(config: &StationConfig) -> Result<(PortOptions, PlanContext), SetupError> {
    let store = Store::open(&config.database).map_err(|source| SetupError::Store {
        path: config.database.clone(),
        source,
    })?;
    let ctx = plan_context(config, Arc::new(store))?;
    Ok((port_options(config), ctx))
}

/// The plan context for `config` with an already open store (SIGHUP reload
/// and the demo reuse the station's store).
pub fn plan_context(config: &StationConfig, store: Arc<Store>) -> Result<PlanContext, SetupError> {
    let trust = TrustStore::load(&config.trust_file)?;
    if trust.is_empty() {
        return Err(crate::trust::TrustError::Empty {
            path: config.trust_file.clone(),
        }
        .into());
    }
    info!(
        trusted = trust.len(),
        file = %config.trust_file.display(),
        sha256 = trust.file_sha256().unwrap_or_default(),
        "trusted device identity keys loaded"
    );
    let (ca, ca_install_pem, validity) = match &config.ca {
        Some(ca_config) => {
            let ca = StationCa::load(&ca_config.certificate, &ca_config.key)?;
            let mut pem = String::new();
            for path in &ca_config.install {
                let text = std::fs::read_to_string(path).map_err(|source| SetupError::Install {
                    path: path.clone(),
                    source,
                })?;
                pem.push_str(&text);
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
    Ok(PlanContext {
        plan: config.plan.clone(),
        timeouts: config.timeouts.clone(),
        dialect: config.serial.dialect,
        trust: Arc::new(trust),
        ca,
        ca_install_pem,
        store,
        certificate_validity: validity,
    })
}

/// How to find and talk to the configured ports.
pub fn port_options(config: &StationConfig) -> PortOptions {
    let serial = SerialSettings {
        baud: config.serial.baud,
        flow_control: config.serial.flow_control,
        line_ending: config.serial.line_ending,
        dtr: config.serial.dtr,
        ..SerialSettings::default()
    };
    let client = ClientOptions {
        dialect: Dialect::Raw,
        line_ending: config.serial.line_ending,
        default_timeout: config.timeouts.command,
        keygen_timeout: config.timeouts.keygen,
        token_timeout: config.timeouts.attest,
        ..ClientOptions::default()
    };
    PortOptions {
        station_id: config.station_id.clone(),
        patterns: config.ports.paths.clone(),
        exclude: config.ports.exclude.clone(),
        rescan_interval: config.ports.rescan_interval,
        serial,
        client,
        dialect: config.serial.dialect,
        run_timeout: config.timeouts.run,
        shutdown_grace: config.timeouts.shutdown_grace,
    }
}

/// `nrf-provd provision`: open one port, run the plan once, commit the
/// record and return it.
pub async fn provision_port(
    ctx: Arc<PlanContext>,
    port: &Path,
    options: &PortOptions,
) -> Result<RunRecord, SetupError> {
    let stream = serial::open(port, &options.serial).map_err(|source| SetupError::Port {
        path: port.to_path_buf(),
        source,
    })?;
    let mut modem = open_modem(stream, options);
    let never = CancellationToken::new();
    let progress = |step: &StepRecord| {
        info!(step = %step.name, passed = step.passed, detail = %step.detail, "step");
    };
    Ok(run_recorded(&ctx, &mut modem, port, options, &never, &progress).await)
}
