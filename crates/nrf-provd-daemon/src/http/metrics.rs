//! `/metrics`: the station's events folded into Prometheus counters,
//! gauges and histograms (the `prometheus-client` crate, OpenMetrics text),
//! plus what is read at each scrape: the ledger's forwarding backlog,
//! process facts and build info. Every label value comes from a closed set
//! (outcomes, steps, reason codes, token kinds): no device, port or run
//! appears as a label.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::ledger::LedgerStatus;
use crate::ledger::deliveries::Backlog;
use crate::process::{self, Process};
use crate::station::StationEvent;
use crate::station::systemd::Shift;

/// What `/metrics` is served as.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    outcome: &'static str,
    /// The step that failed; `none` for a pass.
    step: &'static str,
    reason_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
    passed: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Why the server refused a request (the label of
/// `nrf_provd_http_requests_refused_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` named neither loopback, the address it came to, nor an
    /// allowed host (421).
    ForeignHost,
    /// `Origin` named another site (403).
    ForeignOrigin,
    /// No valid token where one is needed (401).
    NoToken,
    /// A change (the shift) without the operator's token (403).
    NotOperator,
    /// Every reader was busy (503).
    ReadersBusy,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::ForeignHost => "foreign_host",
            Refusal::ForeignOrigin => "foreign_origin",
            Refusal::NoToken => "no_token",
            Refusal::NotOperator => "not_operator",
            Refusal::ReadersBusy => "readers_busy",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Step durations: 5 ms to ~80 s (key generation takes about a second,
/// a stalled command tens of seconds).
fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Token verification: 20 µs (a signature check) to ~10 s (an authority
/// that asks a server).
fn verification_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_02, 2.0, 20))
}

/// Where the scrape-time facts come from.
pub trait ScrapeSource: Send + Sync + 'static {
    fn ledger_status(&self) -> LedgerStatus;

    /// The shared ledger's central claim round trips, when there is one.
    fn claim_seconds(&self) -> Option<Histogram> {
        None
    }

    /// Each downstream sink's backlog, when there are sinks.
    fn sinks(&self) -> Vec<Backlog> {
        Vec::new()
    }
}

impl ScrapeSource for crate::station::Station {
    fn ledger_status(&self) -> LedgerStatus {
        crate::station::Station::ledger_status(self)
    }

    fn claim_seconds(&self) -> Option<Histogram> {
        self.line().map(|line| line.claim_seconds().clone())
    }

    fn sinks(&self) -> Vec<Backlog> {
        self.sink_backlog()
    }
}

/// The registry and the metrics the event fold updates.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    steps: Family<StepLabels, Histogram, fn() -> Histogram>,
    verification: Family<KindLabels, Histogram, fn() -> Histogram>,
    boards_seen: Counter,
    boards_in_fixtures: Gauge,
    ports_watched: Gauge,
    paused: Gauge,
    boards_waiting: Gauge,
    events_missed: Counter,
    sse_clients: Gauge,
    clients_dropped: Counter,
    connections_refused: Counter,
    requests_refused: Family<RefusalLabels, Counter>,
}

impl Metrics {
    pub fn new(source: Arc<dyn ScrapeSource>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessFacts));
        let ours = registry.sub_registry_with_prefix("nrf_provd");
        let metrics = MetricsParts::default();
        ours.register(
            "runs",
            "Runs finished, by outcome, the step that failed and the reason code",
            metrics.runs.clone(),
        );
        // The unit in the name, no UNIT line: strict parsers refuse one
        // on a histogram.
        ours.register(
            "step_duration_seconds",
            "Duration of each plan step (retries included), by step and whether it passed",
            metrics.steps.clone(),
        );
        // The unit in the name, no UNIT line: strict parsers refuse one
        // on a histogram.
        ours.register(
            "token_verification_seconds",
            "Time to judge a token: decode and verify, and for an identity token the authorities' judgement",
            metrics.verification.clone(),
        );
        ours.register(
            "boards_seen",
            "Boards that arrived in a fixture (one per insertion)",
            metrics.boards_seen.clone(),
        );
        ours.register(
            "boards_in_fixtures",
            "Ports with a board in the fixture now",
            metrics.boards_in_fixtures.clone(),
        );
        ours.register(
            "ports_watched",
            "Serial ports the station watches now",
            metrics.ports_watched.clone(),
        );
        ours.register(
            "paused",
            "1 while the station takes no new board because the ledger cannot take a record",
            metrics.paused.clone(),
        );
        ours.register(
            "boards_waiting",
            "Boards that wait for a required traceability value (e.g. a work order) before their run",
            metrics.boards_waiting.clone(),
        );
        ours.register(
            "events_missed",
            "Station events the page or the metrics fell too far behind to see",
            metrics.events_missed.clone(),
        );
        ours.register(
            "http_sse_clients",
            "Station pages connected for live updates",
            metrics.sse_clients.clone(),
        );
        ours.register(
            "http_clients_dropped",
            "HTTP clients dropped because they stopped reading",
            metrics.clients_dropped.clone(),
        );
        ours.register(
            "http_connections_refused",
            "HTTP connections closed at once because too many were open, in all or from one client",
            metrics.connections_refused.clone(),
        );
        ours.register(
            "http_requests_refused",
            "HTTP requests refused, by reason: foreign_host (421), foreign_origin (403), no_token (401), readers_busy (503)",
            metrics.requests_refused.clone(),
        );
        ours.register(
            "build",
            "The running nrf-provd",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        if let Some(claims) = source.claim_seconds() {
            // The unit in the name, no UNIT line (as above).
            ours.register(
                "ledger_claim_seconds",
                "Round trip of each central claim (nonce, jti, key generation) the shared ledger accepted during a run",
                claims,
            );
        }
        ours.register_collector(Box::new(SinkFacts(Arc::clone(&source))));
        ours.register_collector(Box::new(LedgerFacts(source)));
        Metrics {
            registry,
            runs: metrics.runs,
            steps: metrics.steps,
            verification: metrics.verification,
            boards_seen: metrics.boards_seen,
            boards_in_fixtures: metrics.boards_in_fixtures,
            ports_watched: metrics.ports_watched,
            paused: metrics.paused,
            boards_waiting: metrics.boards_waiting,
            events_missed: metrics.events_missed,
            sse_clients: metrics.sse_clients,
            clients_dropped: metrics.clients_dropped,
            connections_refused: metrics.connections_refused,
            requests_refused: metrics.requests_refused,
        }
    }

    /// Fold one event in; `shift` has already seen it.
    pub fn apply(&self, event: &StationEvent, shift: &Shift) {
        match event {
            StationEvent::BoardArrived { .. } => {
                self.boards_seen.inc();
            }
            StationEvent::StepFinished { step, .. } => {
                self.steps
                    .get_or_create(&StepLabels {
                        step: step.name.as_str(),
                        passed: if step.passed { "true" } else { "false" },
                    })
                    .observe(step.duration.as_secs_f64());
            }
            StationEvent::TokenVerified { kind, took, .. } => {
                self.verification
                    .get_or_create(&KindLabels {
                        kind: kind.as_str(),
                    })
                    .observe(took.as_secs_f64());
            }
            StationEvent::RunFinished { record, .. } => {
                self.runs
                    .get_or_create(&RunLabels {
                        outcome: record.outcome.as_str(),
                        step: record.failed_step.map_or("none", |s| s.as_str()),
                        reason_code: record.reason_code.map_or("none", |c| c.as_str()),
                    })
                    .inc();
            }
            StationEvent::PortFound { .. }
            | StationEvent::PortGone { .. }
            | StationEvent::StepStarted { .. }
            | StationEvent::DeviceIdentified { .. }
            | StationEvent::BoardLeft { .. }
            | StationEvent::Paused { .. }
            | StationEvent::Resumed
            | StationEvent::BoardWaiting { .. }
            | StationEvent::ShiftChanged { .. } => {}
        }
        self.boards_waiting
            .set(i64::try_from(shift.waiting.len()).unwrap_or(i64::MAX));
        self.boards_in_fixtures
            .set(i64::try_from(shift.boards_present.len()).unwrap_or(i64::MAX));
        self.ports_watched
            .set(i64::try_from(shift.ports.len()).unwrap_or(i64::MAX));
        self.paused.set(i64::from(shift.paused.is_some()));
    }

    pub fn missed(&self, events: u64) {
        self.events_missed.inc_by(events);
    }

    pub fn client_dropped(&self) {
        self.clients_dropped.inc();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn refused(&self, why: Refusal) {
        self.requests_refused
            .get_or_create(&RefusalLabels {
                reason: why.as_str(),
            })
            .inc();
    }

    /// Counts a connected page while the guard lives.
    pub fn sse_client(self: &Arc<Self>) -> SseClient {
        self.sse_clients.inc();
        SseClient(Arc::clone(self))
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The metrics before they are registered.
struct MetricsParts {
    runs: Family<RunLabels, Counter>,
    steps: Family<StepLabels, Histogram, fn() -> Histogram>,
    verification: Family<KindLabels, Histogram, fn() -> Histogram>,
    boards_seen: Counter,
    boards_in_fixtures: Gauge,
    ports_watched: Gauge,
    paused: Gauge,
    boards_waiting: Gauge,
    events_missed: Counter,
    sse_clients: Gauge,
    clients_dropped: Counter,
    connections_refused: Counter,
    requests_refused: Family<RefusalLabels, Counter>,
}

impl Default for MetricsParts {
    fn default() -> Self {
        MetricsParts {
            runs: Family::default(),
            steps: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            verification: Family::new_with_constructor(verification_histogram as fn() -> Histogram),
            boards_seen: Counter::default(),
            boards_in_fixtures: Gauge::default(),
            ports_watched: Gauge::default(),
            paused: Gauge::default(),
            boards_waiting: Gauge::default(),
            events_missed: Counter::default(),
            sse_clients: Gauge::default(),
            clients_dropped: Counter::default(),
            connections_refused: Counter::default(),
            requests_refused: Family::default(),
        }
    }
}

/// A connected page (see [`Metrics::sse_client`]).
pub struct SseClient(Arc<Metrics>);

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.sse_clients.dec();
    }
}

/// The ledger's forwarding state, read at each scrape; only where a shared
/// ledger is configured.
struct LedgerFacts(Arc<dyn ScrapeSource>);

impl std::fmt::Debug for LedgerFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerFacts")
    }
}

impl Collector for LedgerFacts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.0.ledger_status();
        let Some(reachable) = status.shared_reachable else {
            return Ok(());
        };
        gauge(
            &mut encoder,
            "ledger_forwarding_backlog",
            "Runs recorded locally and not yet forwarded to the shared ledger",
            None,
            clamp(status.backlog),
        )?;
        counter(
            &mut encoder,
            "ledger_conflicts",
            "Conflicts the shared ledger found after runs were recorded",
            status.conflicts,
        )?;
        gauge(
            &mut encoder,
            "ledger_shared_reachable",
            "1 when the shared ledger answered last time",
            None,
            i64::from(reachable),
        )
    }
}

/// One per-sink gauge: name, help, unit, value.
type SinkFamily = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&Backlog, time::OffsetDateTime) -> i64,
);

/// Each downstream sink's outbox, read at each scrape (as the sinks'
/// watcher last read it); labelled by the sink's name, a closed set (the
/// config's sinks).
struct SinkFacts(Arc<dyn ScrapeSource>);

impl std::fmt::Debug for SinkFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkFacts")
    }
}

impl Collector for SinkFacts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backlog = self.0.sinks();
        if backlog.is_empty() {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc();
        let families: [SinkFamily; 4] = [
            (
                "sink_backlog",
                "Finished runs not yet acknowledged by the sink (dead letters included)",
                None,
                |b, _| clamp(b.owed),
            ),
            (
                "sink_oldest_undelivered_age",
                "How long the oldest run the sink is owed has waited",
                Some(Unit::Seconds),
                |b, now| {
                    b.oldest_queued_at
                        .map_or(0, |t| (now - t).whole_seconds().max(0))
                },
            ),
            (
                "sink_retrying",
                "Owed runs that failed at least once and will be tried again",
                None,
                |b, _| clamp(b.retrying),
            ),
            (
                "sink_dead_letters",
                "Runs the sink refused for good, kept until retried (`nrf-provd deliveries`)",
                None,
                |b, _| clamp(b.dead),
            ),
        ];
        for (name, help, unit, value) in families {
            let metric = encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            let mut metric = metric;
            for b in &backlog {
                let labels = [("sink", b.sink.as_str())];
                let family = metric.encode_family(&labels)?;
                ConstGauge::new(value(b, now)).encode(family)?;
            }
        }
        Ok(())
    }
}

/// The process's own facts, under the names every Prometheus client uses.
#[derive(Debug)]
struct ProcessFacts;

impl Collector for ProcessFacts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let this = Process::This;
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            clamp(this.rss_kib().saturating_mul(1024)),
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            clamp(u64::try_from(this.open_fds()).unwrap_or(u64::MAX)),
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Limit of open file descriptors",
            None,
            clamp(process::max_fds()),
        )?;
        let cpu = ConstCounter::new(process::cpu().as_secs_f64());
        let metric = encoder.encode_descriptor(
            "process_cpu",
            "User and system CPU time",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            process::started(),
        )
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

/// Note the process start time now (called when the server starts).
pub fn note_start() {
    let _ = process::started();
}
