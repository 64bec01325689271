//! The station: one supervisor task per port. Each waits for a board,
//! runs the plan once, records it, then waits until the board is removed
//! (or a different device answers) before taking the next one.
//!
//! Ports come from paths and globs and are rescanned for hot-plug. SIGTERM
//! stops taking boards and lets runs in flight finish within a grace period;
//! SIGHUP reloads the trust file, the CA and the port list.
//!
//! - [`parts`]: what a station is made of (the daemon's `setup` builds
//!   them from a configuration);
//! - [`presence`]: is a board there, is it still the same one;
//! - [`recorder`]: one run, begun and finished in the ledger;
//! - [`shift`]: traceability (work order, lot, operator, product,
//!   fixture), changed while the station runs;
//! - [`events`]: what the station tells its subscribers;
//! - [`systemd`]: READY/STATUS/WATCHDOG/STOPPING, STATUS from the events.

pub mod events;
pub mod gate;
pub mod parts;
pub mod presence;
pub mod recorder;
pub mod shift;
pub mod systemd;
pub mod watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::at::{AtError, Client, ClientOptions, Dialect, DialectChoice};
use crate::ledger::{Ledger, LedgerError, LedgerReader};
use crate::modem::Modem;
use crate::plan::{Link, PlanContext};
use crate::record::{Outcome, ReasonCode, RunRecord};
use crate::serial::{self, SerialSettings};
use crate::text::Escaped;

pub use events::{EventConsumer, Events, StationEvent};
pub use gate::LedgerGate;
pub use parts::{DaemonHandoff, Parts, Sources};
pub use presence::Departure;
pub use recorder::RunSettings;
pub use shift::{ShiftBoard, ShiftError, TraceSettings};

/// How the station finds and talks to its ports.
#[derive(Debug, Clone)]
pub struct PortOptions {
    /// Paths and glob patterns, e.g. `/dev/serial/by-id/*-if00`.
    pub patterns: Vec<String>,
    pub exclude: Vec<String>,
    pub rescan_interval: Duration,
    pub serial: SerialSettings,
    pub client: ClientOptions,
    pub dialect: DialectChoice,
    pub run: RunSettings,
    /// How long runs in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

/// Why `provision` recorded no run.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("port {path}: {source}")]
    Port { path: PathBuf, source: AtError },
    /// The ledger would not begin the run.
    #[error(transparent)]
    NotBegun(LedgerError),
    /// `[traceability] require` names values that are not set.
    #[error("{0}")]
    Untraced(String),
}

/// How often a finished board is asked whether it is still there: at first
/// (boards are usually pulled at once after their run)...
const DEPARTURE_POLL: Duration = Duration::from_millis(200);
/// ...and at the least while it stays: a board swapped on a plain UART
/// (no end of stream) is noticed within this, and an idle board costs one
/// exchange per this.
const DEPARTURE_POLL_MAX: Duration = Duration::from_secs(2);
/// How often a board is asked on a port that ended with its last board
/// ([`PortMemory::ends_with_board`]): the port's end tells of a pull at
/// once, so the polls are only a net should a port not end the next time.
const ENDED_PORT_POLL: Duration = Duration::from_secs(10);

/// The longest a port waits before it tries again to open (udev still
/// setting its mode, a link to a pty that was just replaced) or to find a
/// board answering on it, however long the rescan interval: the port watch
/// tells the scanner, not a port's supervisor.
const PORT_RETRY_MAX: Duration = Duration::from_secs(1);

/// State shared by the scanner and all supervisors.
pub struct Station {
    options: RwLock<PortOptions>,
    ctx: RwLock<Arc<PlanContext>>,
    /// The ledger (behind its health gate) and sources every reload keeps.
    ledger: Arc<LedgerGate>,
    /// The station's own records, for reading (API, bench, checks).
    reader: Arc<dyn LedgerReader>,
    /// With a shared ledger: the composite behind `ledger` (bench figures).
    line: Option<Arc<crate::ledger::LineLedger>>,
    /// Runs finished since start: exact, where event subscribers may lag;
    /// a watcher wakes once per run, not once per event.
    finished: tokio::sync::watch::Sender<u64>,
    sources: Sources,
    events: Events,
    /// Runs the ledger found in flight from an earlier crash.
    recovered: usize,
    /// Cancelled on SIGTERM: take no new boards.
    stop: CancellationToken,
    /// Cancelled when the grace period ends: cut runs in flight short.
    abort: CancellationToken,
    /// `[cloud] hand_off`: the daemon's hand-off task, started by `serve`.
    handoff: Option<DaemonHandoff>,
    /// Work order, lot, operator, product; each port's fixture.
    shift: ShiftBoard,
    /// The downstream sinks' health, once the daemon has started them.
    sinks: std::sync::OnceLock<Arc<crate::sink::SinkHealth>>,
    /// What each port's boards taught the station ([`PortMemory`]): kept
    /// here, not by the port's supervisor, which ends whenever a USB port
    /// goes away with its board.
    ports: RwLock<HashMap<String, PortMemory>>,
}

/// What the station learnt of a port from the boards it held.
#[derive(Debug, Clone, Copy, Default)]
struct PortMemory {
    /// The dialect its last board spoke, asked first of the next.
    dialect: Option<Dialect>,
    /// Its last board's leaving ended the port (a USB port on the board's
    /// own interface chip, a pty): no board can be swapped there unseen,
    /// so one left in its fixture is asked who it is only every
    /// [`ENDED_PORT_POLL`]. A board that leaves without ending the port (a
    /// plain UART, an adapter of the fixture's) unlearns it.
    ends_with_board: bool,
}

impl Station {
    /// The station made of `parts`; [`Station::serve`] starts it.
    pub fn new(parts: Parts) -> Arc<Station> {
        Arc::new(Station {
            options: RwLock::new(parts.options),
            ctx: RwLock::new(Arc::new(parts.ctx)),
            events: parts.gate.events().clone(),
            ledger: parts.gate,
            reader: parts.reader,
            line: parts.line,
            finished: tokio::sync::watch::Sender::new(0),
            sources: parts.sources,
            recovered: parts.recovered,
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            handoff: parts.handoff,
            shift: ShiftBoard::new(parts.trace),
            sinks: std::sync::OnceLock::new(),
            ports: RwLock::default(),
        })
    }

    /// The traceability values runs begin with now, and the settings.
    pub fn shift(&self) -> &ShiftBoard {
        &self.shift
    }

    /// Change the station-wide traceability values (`by`: who), for the
    /// next board on; recorded in the ledger first.
    pub async fn change_shift(
        &self,
        update: &crate::record::Shift,
        by: &str,
    ) -> Result<Option<crate::record::ShiftChange>, ShiftError> {
        self.shift
            .change(
                update,
                by,
                self.ledger.as_ref(),
                self.sources.clock.as_ref(),
                &self.events,
            )
            .await
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StationEvent> {
        self.events.subscribe()
    }

    /// Start `consumer` on the station's events, from now until the
    /// station's last handle is dropped; the task returns the consumer.
    pub fn follow<C: EventConsumer>(&self, consumer: C) -> tokio::task::JoinHandle<C> {
        tokio::spawn(events::follow(self.subscribe(), consumer))
    }

    /// The station's records.
    pub fn reader(&self) -> Arc<dyn LedgerReader> {
        Arc::clone(&self.reader)
    }

    /// How the ledger is doing (forwarding backlog, conflicts).
    pub fn ledger_status(&self) -> crate::ledger::LedgerStatus {
        self.ledger.status()
    }

    /// The line's ledger, when the station forwards to one.
    pub fn line(&self) -> Option<Arc<crate::ledger::LineLedger>> {
        self.line.clone()
    }

    /// Runs finished since the station started.
    pub fn runs_finished(&self) -> u64 {
        *self.finished.borrow()
    }

    /// The count of runs finished, to wait on (a bench waiting for a round).
    pub fn watch_runs_finished(&self) -> tokio::sync::watch::Receiver<u64> {
        self.finished.subscribe()
    }

    /// Tell the station its sinks' health (for `/metrics`); once.
    pub fn attach_sinks(&self, health: Arc<crate::sink::SinkHealth>) {
        let _ = self.sinks.set(health);
    }

    /// Each sink's backlog as last read; none without sinks.
    pub fn sink_backlog(&self) -> Vec<crate::ledger::deliveries::Backlog> {
        self.sinks.get().map(|h| h.backlog()).unwrap_or_default()
    }

    /// Runs the ledger found in flight when the station started (an earlier
    /// crash), now recorded as interrupted.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    /// The ledger behind the station's health gate, which a new context
    /// is made over (a reload).
    pub fn ledger(&self) -> Arc<dyn Ledger> {
        Arc::clone(&self.ledger) as Arc<dyn Ledger>
    }

    /// The clock and random source the station was made with.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// A reload: runs from now on start with `ctx` and the ports are found
    /// by `ports`' patterns; runs in flight keep the context they started
    /// with.
    pub fn replace(&self, ctx: PlanContext, ports: &PortOptions) {
        let trusted = ctx.trust.len();
        *write(&self.ctx) = Arc::new(ctx);
        let mut options = write(&self.options);
        options.patterns = ports.patterns.clone();
        options.exclude = ports.exclude.clone();
        info!(trusted, "reloaded trust file, CA and ports");
    }

    /// The context a new run starts with.
    pub fn context(&self) -> Arc<PlanContext> {
        Arc::clone(&read(&self.ctx))
    }

    fn options(&self) -> PortOptions {
        read(&self.options).clone()
    }

    /// `nrf-provd provision`: open one port, wait briefly for a board, run
    /// the plan once and return the record (durable unless it says
    /// `store`).
    pub async fn provision(&self, port: &Path) -> Result<RunRecord, ProvisionError> {
        let options = self.options();
        let stream: serial::Port =
            serial::open(port, &options.serial).map_err(|source| ProvisionError::Port {
                path: port.to_path_buf(),
                source,
            })?;
        let mut modem = open_modem(stream, &options.client);
        let arrival = presence::probe(&mut modem, options.dialect, None)
            .await
            .map_err(|source| ProvisionError::Port {
                path: port.to_path_buf(),
                source,
            })?;
        let missing = self.shift.missing();
        if !missing.is_empty() {
            return Err(ProvisionError::Untraced(shift::waiting_reason(&missing)));
        }
        let port_name = port.display().to_string();
        let trace = self.shift.trace_for(&port_name);
        let ctx = self.context();
        let never = CancellationToken::new();
        let recorder = recorder::Recorder {
            ctx: &ctx,
            gate: &self.ledger,
            settings: &options.run,
            abort: &never,
            events: &self.events,
            trace: &trace,
        };
        match recorder.run(&mut modem, arrival, &port_name).await {
            recorder::Recorded::Run(record) => Ok(*record),
            recorder::Recorded::NotBegun(source) => Err(ProvisionError::NotBegun(source)),
        }
    }

    /// Begin a graceful shutdown: no new boards; after the grace period,
    /// runs still in flight are cut short and recorded as interrupted.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Scan for ports and supervise each until shutdown; returns when every
    /// supervisor has finished.
    pub async fn serve(self: Arc<Self>) {
        self.shift
            .resume(
                self.ledger.as_ref(),
                self.sources.clock.as_ref(),
                &self.events,
            )
            .await;
        // Retries the ledger while it cannot take records; stops with the
        // station, after the last supervisor (so deferred records get every
        // chance).
        let healer_stop = CancellationToken::new();
        let healer = tokio::spawn(Arc::clone(&self.ledger).keep_trying(healer_stop.clone()));
        // The hand-off to nRF Cloud: its own task and database connection,
        // so a slow nRF Cloud never holds a run up. Stops with the station.
        let handoff_stop = CancellationToken::new();
        let handoff = self.handoff.as_ref().map(|h| {
            tokio::spawn(Arc::clone(&h.handoff).serve(
                h.mode,
                h.every,
                h.include_collected,
                handoff_stop.clone(),
            ))
        });
        let mut supervisors: JoinSet<()> = JoinSet::new();
        // Which port each supervisor task serves: a task that ends (port
        // gone) or panics frees its port for the next scan.
        let mut running: HashMap<tokio::task::Id, PathBuf> = HashMap::new();
        // New ports are told by inotify where their directory can be
        // watched (watch.rs); polled every `rescan_interval` where not.
        let mut watch = watch::PortWatch::new();
        // A supervisor that ends because the station stops must not have
        // its port found again.
        while !self.stopping() {
            // One copy of the options a pass (a reload may replace them).
            let options = self.options();
            let watched = watch.as_mut().is_some_and(|w| w.follow(&options.patterns));
            let found: Vec<PathBuf> = {
                let taken: HashSet<&PathBuf> = running.values().collect();
                scan(&options)
                    .into_iter()
                    .filter(|port| !taken.contains(port))
                    .collect()
            };
            for port in found {
                info!(port = %port.display(), "port found");
                self.events.send(StationEvent::PortFound {
                    port: port.display().to_string(),
                });
                let station = Arc::clone(&self);
                let span = info_span!("port", port = %port.display());
                let path = port.clone();
                let handle = supervisors
                    .spawn(async move { station.supervise(&path).await }.instrument(span));
                running.insert(handle.id(), port);
            }
            let interval = match watched {
                true => options.rescan_interval.max(watch::WATCHED_RESCAN),
                false => options.rescan_interval,
            };
            let told = async {
                match &watch {
                    Some(watch) => watch.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                () = told => {}
                Some(done) = supervisors.join_next_with_id() => {
                    // Every supervisor that has ended by now, for one scan:
                    // a fixture's boards unplugged together end theirs in
                    // the same few milliseconds.
                    let mut ended = vec![done];
                    while let Some(done) = supervisors.try_join_next_with_id() {
                        ended.push(done);
                    }
                    for done in ended {
                        let id = match done {
                            Ok((id, ())) => id,
                            Err(err) => {
                                error!(%err, "port supervisor failed; the port will be picked up again");
                                err.id()
                            }
                        };
                        if let Some(port) = running.remove(&id) {
                            self.events.send(StationEvent::PortGone {
                                port: port.display().to_string(),
                            });
                        }
                    }
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
        handoff_stop.cancel();
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
        let waiting = self.ledger.deferred();
        if waiting > 0 {
            warn!(
                waiting,
                "stopping with runs the database did not take; they are kept beside it and recorded at the next start"
            );
        }
        healer_stop.cancel();
        let _ = healer.await;
        if let Some(handoff) = handoff {
            let _ = handoff.await;
        }
    }

    /// One port's life: open, wait for a board, provision it, wait for it
    /// to leave, repeat. Returns on shutdown or when the port is no longer
    /// wanted (removed from the config and gone).
    async fn supervise(self: &Arc<Self>, port: &Path) {
        let port_name = port.display().to_string();
        while !self.stopping() {
            let options = self.options();
            // As it stood before the open: a link made again just after
            // a failed open is told from the one that failed.
            let before = watch::LinkState::of(port);
            let stream = match serial::open(port, &options.serial) {
                Ok(stream) => stream,
                Err(err) => {
                    // Gone when its directory entry is: what a scan lists
                    // (scanning here cost a fixture of n boards replugged
                    // together n scans of n entries). A link whose device
                    // is gone is not: it is being pointed at the board's
                    // new device, and the open is retried after a pause —
                    // at once, it could open a device number another
                    // board's replug has just reused; unless the link
                    // is removed or made again first (`watch::link_changed`).
                    if std::fs::symlink_metadata(port).is_err() {
                        debug!(%err, "port gone");
                        return;
                    }
                    debug!(%err, "cannot open port yet");
                    let pause = options.rescan_interval.min(PORT_RETRY_MAX);
                    watch::link_changed(&self.stop, port, before.as_ref(), pause).await;
                    continue;
                }
            };
            let mut modem = open_modem(stream, &options.client);
            self.serve_link(&mut modem, &port_name, &options, || port.exists())
                .await;
        }
    }

    fn port_memory(&self, port: &str) -> PortMemory {
        read(&self.ports).get(port).copied().unwrap_or_default()
    }

    fn learn(&self, port: &str, lesson: impl FnOnce(&mut PortMemory)) {
        lesson(write(&self.ports).entry(port.to_string()).or_default());
    }

    /// Boards on one open link, one after another, until the link goes
    /// away or the station stops.
    async fn serve_link<T: Link>(
        &self,
        modem: &mut Modem<T>,
        port: &str,
        options: &PortOptions,
        still_there: impl Fn() -> bool,
    ) {
        let mut arrived = false;
        loop {
            let known = self.port_memory(port).dialect;
            let Some(arrival) = presence::wait_for_board(
                modem,
                options.dialect,
                known,
                &self.stop,
                options.rescan_interval.min(PORT_RETRY_MAX),
            )
            .await
            else {
                return;
            };
            if arrival.detected && known != Some(arrival.dialect) {
                self.learn(port, |m| m.dialect = Some(arrival.dialect));
            }
            if !arrived {
                arrived = true;
                self.events.send(StationEvent::BoardArrived {
                    port: port.to_string(),
                    dialect: arrival.dialect,
                });
            }
            // Take no board until the values it must be traced by are set;
            // then find it again (it may have left while it waited).
            if !self.shift.missing().is_empty() {
                if !self
                    .shift
                    .wait_until_complete(port, &self.events, &self.stop)
                    .await
                {
                    return;
                }
                continue;
            }
            // Take no board while the ledger cannot record its run.
            if !self.ledger.wait_open(&self.stop).await {
                return;
            }
            let trace = self.shift.trace_for(port);
            let ctx = self.context();
            let recorded = recorder::Recorder {
                ctx: &ctx,
                gate: &self.ledger,
                settings: &options.run,
                abort: &self.abort,
                events: &self.events,
                trace: &trace,
            }
            .run(modem, arrival, port)
            .await;
            let record = match recorded {
                recorder::Recorded::Run(record) => *record,
                // The gate is shut now: wait for it, then find the board again.
                recorder::Recorded::NotBegun(err) => {
                    debug!(%err, "run not begun; waiting for the database");
                    continue;
                }
            };
            arrived = false;
            let imei = record.device.imei.clone();
            let disconnected = record.reason_code == Some(ReasonCode::Disconnected);
            log_run(&record);
            self.finished.send_modify(|runs| *runs += 1);
            self.events.send(StationEvent::RunFinished {
                port: port.to_string(),
                record: Arc::new(record),
            });
            if disconnected {
                self.learn(port, |m| m.ends_with_board = true);
                self.events.send(StationEvent::BoardLeft {
                    port: port.to_string(),
                });
                return;
            }
            let polls = match self.port_memory(port).ends_with_board {
                // Its end says the board left: polls only in case it lied.
                true => presence::DeparturePolls {
                    first: ENDED_PORT_POLL.max(options.rescan_interval),
                    cap: ENDED_PORT_POLL.max(options.rescan_interval),
                },
                false => presence::DeparturePolls {
                    first: options.rescan_interval.max(DEPARTURE_POLL),
                    cap: DEPARTURE_POLL_MAX.max(options.rescan_interval),
                },
            };
            let departure = presence::wait_for_departure(
                modem,
                imei.as_deref(),
                &self.stop,
                polls,
                &still_there,
            )
            .await;
            if departure != Departure::Shutdown {
                let ended = departure == Departure::Unplugged;
                self.learn(port, |m| m.ends_with_board = ended);
            }
            match departure {
                Departure::Shutdown => return,
                Departure::Unplugged | Departure::OtherBoard => {
                    self.events.send(StationEvent::BoardLeft {
                        port: port.to_string(),
                    });
                    if departure == Departure::Unplugged {
                        return;
                    }
                }
            }
        }
    }
}

/// The one line per run an operator reads: `PASSED`, or `FAILED <step>
/// <reason>`, with the run, device UUID and IMEI (the port is the span's).
fn log_run(record: &RunRecord) {
    let device = record
        .device
        .device_uuid
        .map_or_else(|| "-".to_string(), |u| u.to_string());
    let imei = record.device.imei.as_deref().unwrap_or("-");
    let verdict = match (record.outcome, record.failed_step) {
        (Outcome::Passed, _) => "PASSED".to_string(),
        (Outcome::Collected, _) => "COLLECTED".to_string(),
        (outcome, step) => format!(
            "{} {}{}",
            outcome.as_str().to_uppercase(),
            step.map_or_else(String::new, |s| format!("{s} ")),
            record.reason_line().unwrap_or_default()
        ),
    };
    // Device text is escaped: a CR or an escape sequence from a board
    // cannot forge a line of this log or act on a terminal.
    info!(target: RUN_LOG, run = record.id, device = %device, imei = %Escaped(imei), "{}", Escaped(&verdict));
}

/// The log target of the one line per run (`--log nrf_provd::run=info`).
pub const RUN_LOG: &str = "nrf_provd::run";

fn open_modem<T: Link + 'static>(stream: T, options: &ClientOptions) -> Modem<T> {
    let (client, mut notifications) = Client::new(stream, options.clone());
    // Notifications are logged, never mistaken for answers.
    tokio::spawn(
        async move {
            while let Some(n) = notifications.recv().await {
                debug!(line = %Escaped(&n.line), "notification");
            }
        }
        .in_current_span(),
    );
    Modem::new(client)
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
        .flat_map(|pattern| matching(pattern))
        .filter(|path| !excluded.iter().any(|x| x.matches_path(path)))
        .collect()
}

/// The existing paths `pattern` matches, as `glob::glob` finds them. A
/// pattern whose wildcards are all in its last component (the usual
/// `/dev/serial/by-id/*-if00`) costs one read of its directory: `glob`
/// would look up every component of the path first, and the station scans
/// every `rescan_interval`.
fn matching(pattern: &str) -> Vec<PathBuf> {
    const WILDCARDS: &[char] = &['*', '?', '['];
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return globbed(pattern);
    };
    if dir
        .to_str()
        .is_none_or(|d| d.contains(WILDCARDS) || d.is_empty())
    {
        return globbed(pattern);
    }
    if !name.contains(WILDCARDS) {
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let Ok(name) = glob::Pattern::new(name) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| name.matches_with(n, glob::MatchOptions::new()))
        })
        .map(|entry| entry.path())
        .collect()
}

fn globbed(pattern: &str) -> Vec<PathBuf> {
    glob::glob(pattern)
        .map(|paths| paths.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globbed_sorted(pattern: &str) -> Vec<PathBuf> {
        let mut paths = globbed(pattern);
        paths.sort();
        paths
    }

    #[test]
    fn matching_finds_what_glob_finds() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["ttySIM0", "ttySIM1", "ttySIM10", ".ttySIM-hidden", "other"] {
            std::fs::write(dir.path().join(name), b"").expect("file");
        }
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        std::fs::write(dir.path().join("sub/ttySIM2"), b"").expect("file");
        let base = dir.path().display().to_string();
        for pattern in [
            format!("{base}/ttySIM*"),
            format!("{base}/ttySIM?"),
            format!("{base}/*"),
            format!("{base}/[to]*"),
            format!("{base}/ttySIM1"),
            format!("{base}/absent"),
            format!("{base}/*/ttySIM*"),
            format!("{base}/absent-dir/*"),
        ] {
            let mut found = matching(&pattern);
            found.sort();
            assert_eq!(found, globbed_sorted(&pattern), "{pattern}");
        }
        let mut found = matching(&format!("{base}/ttySIM*"));
        found.sort();
        let names: Vec<_> = found
            .iter()
            .filter_map(|p| p.file_name()?.to_str())
            .collect();
        assert_eq!(names, ["ttySIM0", "ttySIM1", "ttySIM10"]);
    }
}
