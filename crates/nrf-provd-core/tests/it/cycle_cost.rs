//! What one board's cycle costs the station, counted, not timed: the whole
//! plan in memory (a simulated board on `tokio::io::duplex`, tokio's paused
//! clock, the SQLite ledger in a temporary file), the second board of the
//! station measured (the first warms caches, as a running station's are).
//!
//! Counted: allocations made while the station's side of the run is polled
//! (a counting global allocator, switched on for that future only, so the
//! simulated board's own work is not counted, nor the writer thread's; each
//! ledger call includes the test's clock holder), the times that future was
//! woken, bytes and writes each way on the link, the ledger's commits (and
//! those of them that wait for the disk), rows written, pages written to
//! the WAL and SQL compiled, and log events at the default level and at
//! `debug`. Each count must stay within its tolerance ([`TOLERANCE`],
//! [`WAKEUP_TOLERANCE`], [`PAGES_TOLERANCE`]) of the
//! baseline in `cycle_cost.baseline`; making a
//! cycle cheaper and locking it in, or accepting a dearer one, is a
//! deliberate commit of that file, written by
//! `NRF_PROVD_CYCLE_BASELINE=write cargo test -p nrf-provd-core --test it
//! cycle_cost::`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use nrf_provd_core::ledger::{
    Binding, BindingOutcome, Claim, ClaimOutcome, ClaimThenCheck, DeviceCheck, DeviceHistory,
    Ledger, LedgerError, LedgerStatus, RunId, RunRecord, RunStart, ShiftChange, ShiftOnRecord,
    SqliteLedger,
};
use nrf_provd_core::plan::{
    Clock, FollowingClock, IdentityAuthority, KeysAuthority, PlanConfig, PlanContext, SeededRandom,
};
use nrf_provd_core::record::Outcome;
use nrf_provd_core::station::presence;
use nrf_provd_core::station::recorder::{self, RunSettings};
use nrf_provd_core::station::{Events, LedgerGate};
use nrf91_at::at::{Client, ClientOptions, DialectChoice};
use nrf91_at::modem::Modem;
use nrf91_sim::memory::Board;
use nrf91_sim::{Latency, SimOptions};
use nrf91_token::trust::TrustStore;
use time::macros::datetime;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio_util::sync::CancellationToken;

/// How far above its baseline a count may go before the test fails: room
/// for small drift (a dependency's update), none for a new allocation per
/// line, an extra write or an extra commit.
const TOLERANCE: f64 = 0.10;
/// Wake-ups get more: each ledger call is answered from the writer's thread,
/// and whether the answer is there at the next poll (no wake-up) or comes
/// later (one) depends on the threads' timing (32–37 seen for 37).
const WAKEUP_TOLERANCE: f64 = 0.35;
/// Pages written are exact for a fresh database and the same two boards,
/// and one more index on `runs` costs a cycle two pages (its insert at the
/// run's start, again at its finish): none of that room.
const PAGES_TOLERANCE: f64 = 0.05;

fn tolerance(name: &str) -> f64 {
    match name {
        "wakeups" => WAKEUP_TOLERANCE,
        "sql_pages_written" => PAGES_TOLERANCE,
        _ => TOLERANCE,
    }
}
const BASELINE_ENV: &str = "NRF_PROVD_CYCLE_BASELINE";

// ---- allocations, counted for one future on one thread ----

/// The test binary's allocator: the system's, counting the allocations made
/// on a thread while it is inside [`Counted::poll`].
pub struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static ALLOCATED: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation(size: usize) {
    // `try_with`: a thread being torn down has no locals left to count in.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            let _ = ALLOCATED.try_with(|n| n.set(n.get() + size as u64));
        }
    });
}

// SAFETY: every call is passed to `System` unchanged; counting touches only
// const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// A future whose polls are counted, with the allocations they make.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: u64,
    allocations: u64,
    allocated: u64,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let (before_n, before_bytes) = (ALLOCATIONS.get(), ALLOCATED.get());
        COUNTING.set(true);
        let poll = self.inner.as_mut().poll(cx);
        COUNTING.set(false);
        self.polls += 1;
        self.allocations += ALLOCATIONS.get() - before_n;
        self.allocated += ALLOCATED.get() - before_bytes;
        poll
    }
}

// ---- the link ----

#[derive(Debug, Default)]
struct LinkCounts {
    writes: AtomicU64,
    bytes_out: AtomicU64,
    reads: AtomicU64,
    bytes_in: AtomicU64,
}

/// The station's end of the duplex, counting what crosses it.
struct CountingLink {
    inner: DuplexStream,
    counts: Arc<LinkCounts>,
}

impl AsyncRead for CountingLink {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.counts.reads.fetch_add(1, Ordering::Relaxed);
            self.counts
                .bytes_in
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for CountingLink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.counts.writes.fetch_add(1, Ordering::Relaxed);
            self.counts
                .bytes_out
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---- log events ----

#[derive(Debug, Default)]
struct LogCounts {
    /// Events at INFO and above: what a station logs by default.
    default_level: AtomicU64,
    /// DEBUG and TRACE events: what `--log debug` adds.
    debug: AtomicU64,
    spans: AtomicU64,
}

/// A subscriber for the test's thread that counts and keeps nothing.
struct CountingSubscriber(Arc<LogCounts>);

impl tracing::Subscriber for CountingSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let n = self.0.spans.fetch_add(1, Ordering::Relaxed);
        tracing::span::Id::from_u64(n + 1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        // The simulated boards' tasks share the thread; their log is not
        // the station's.
        if event.metadata().target().starts_with("nrf91_sim") {
            return;
        }
        let counter = if *event.metadata().level() <= tracing::Level::INFO {
            &self.0.default_level
        } else {
            &self.0.debug
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

// ---- the ledger, on a paused clock ----

/// The SQLite ledger, each call holding tokio's paused clock: its commits
/// run on the writer's thread, and a runtime with nothing else to do would
/// otherwise jump to its next timer (the run's deadline) while it waits. A
/// `spawn_blocking` task in flight holds the clock still (tokio's rule).
pub(crate) struct ClockHeld(pub(crate) Arc<SqliteLedger>);

async fn held<T>(call: impl Future<Output = T>) -> T {
    let (done, waiting) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        let _ = waiting.recv();
    });
    let answer = call.await;
    drop(done);
    let _ = holder.await;
    answer
}

#[async_trait::async_trait]
impl Ledger for ClockHeld {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        held(self.0.begin_run(start)).await
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        held(self.0.claim(run, claim)).await
    }

    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        held(self.0.finish_run(record)).await
    }

    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        held(self.0.bind(binding)).await
    }

    async fn probe(&self) -> Result<(), LedgerError> {
        held(self.0.probe()).await
    }

    async fn check_device(&self, check: &DeviceCheck) -> Result<DeviceHistory, LedgerError> {
        held(self.0.check_device(check)).await
    }

    async fn claim_then_check_device(
        &self,
        run: RunId,
        claim: &Claim,
        check: &DeviceCheck,
    ) -> Result<ClaimThenCheck, LedgerError> {
        held(self.0.claim_then_check_device(run, claim, check)).await
    }

    fn status(&self) -> LedgerStatus {
        self.0.status()
    }

    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        held(self.0.record_shift_change(change)).await
    }

    async fn shift_on_record(&self) -> Result<ShiftOnRecord, LedgerError> {
        held(self.0.shift_on_record()).await
    }
}

// ---- one cycle ----

type Counts = BTreeMap<&'static str, u64>;

/// Two boards of one fleet, provisioned one after the other by a station
/// with the full plan (keys authority, the fixed CA) over one SQLite ledger;
/// the counts of the second.
async fn second_cycle(ledger_dir: PathBuf) -> Counts {
    let options = || SimOptions {
        latency: Latency::Realistic,
        ..SimOptions::default()
    };
    let (first, first_host) = Board::start(2026, 0, options());
    let (second, second_host) = Board::start(2026, 1, options());
    let mut trust = TrustStore::parse(&first.trust_csv()).expect("trust file");
    let identity = second.identity();
    trust
        .insert(identity.device_uuid, &identity.public_key_spki_der())
        .expect("second board's key");
    let ca = super::plan_memory::fixed_ca(&ledger_dir);
    let sqlite = Arc::new(SqliteLedger::open(&ledger_dir.join("results.db")).expect("ledger"));
    let gate = LedgerGate::new(Arc::new(ClockHeld(Arc::clone(&sqlite))), Events::default());
    let trust = Arc::new(trust);
    let clock: Arc<dyn Clock> =
        Arc::new(FollowingClock::starting_at(datetime!(2026-12-01 08:00 UTC)));
    let authorities: Vec<Arc<dyn IdentityAuthority>> =
        vec![Arc::new(KeysAuthority::new(Arc::clone(&trust)))];
    let ctx = PlanContext {
        plan: PlanConfig::default(),
        authorities,
        trust,
        ca_install_pem: Some(ca.certificate_pem()),
        ca: Some(Arc::new(ca)),
        ownership: None,
        certificate_validity: Duration::from_secs(30 * 86_400),
        ledger: gate.clone(),
        clock,
        random: Arc::new(SeededRandom::new(42)),
    };
    let settings = RunSettings {
        station_id: "cycle-cost".into(),
        run_timeout: Duration::from_secs(180),
    };
    let abort = CancellationToken::new();
    let events = Events::default();
    // A subscriber such as the station page's, so events are made and sent.
    let _page = events.subscribe();

    // As the station does for each board: find it, then record its run.
    let cycle = |host: DuplexStream, link: Arc<LinkCounts>| {
        let (ctx, gate, settings, abort, events) = (&ctx, &gate, &settings, &abort, &events);
        async move {
            let link = CountingLink {
                inner: host,
                counts: link,
            };
            let mut modem = Modem::new(Client::new(link, ClientOptions::default()).0);
            let arrival = presence::probe(&mut modem, DialectChoice::Auto, None)
                .await
                .expect("the board answers");
            let recorder = recorder::Recorder {
                ctx,
                gate,
                settings,
                abort,
                events,
                trace: &Default::default(),
            };
            match recorder.run(&mut modem, arrival, "duplex").await {
                recorder::Recorded::Run(record) => *record,
                recorder::Recorded::NotBegun(e) => panic!("the ledger refused a run: {e}"),
            }
        }
    };

    // Counting from before the first cycle: installing SQLite's authorizer
    // expires every prepared statement, which the first cycle re-prepares.
    let writer = sqlite.count_work().await.expect("count the writer's work");
    let warm = cycle(first_host, Arc::default()).await;
    assert_eq!(warm.outcome, Outcome::Passed, "{warm:#?}");

    let link = Arc::new(LinkCounts::default());
    let log = Arc::new(LogCounts::default());
    let sql_before = writer.counts();
    let pages_before = sqlite.pages_written().await.expect("pages written");
    let record = {
        let _log = tracing::subscriber::set_default(CountingSubscriber(Arc::clone(&log)));
        let mut counted = Counted {
            inner: Box::pin(cycle(second_host, Arc::clone(&link))),
            polls: 0,
            allocations: 0,
            allocated: 0,
        };
        let record = (&mut counted).await;
        (
            record,
            counted.polls,
            counted.allocations,
            counted.allocated,
        )
    };
    let (record, polls, allocations, allocated) = record;
    assert_eq!(record.outcome, Outcome::Passed, "{record:#?}");
    let sql_after = writer.counts();
    let pages_after = sqlite.pages_written().await.expect("pages written");
    let relaxed = |n: &AtomicU64| n.load(Ordering::Relaxed);
    BTreeMap::from([
        ("allocations", allocations),
        ("allocated_bytes", allocated),
        ("wakeups", polls),
        ("link_writes", relaxed(&link.writes)),
        ("link_bytes_out", relaxed(&link.bytes_out)),
        ("link_reads", relaxed(&link.reads)),
        ("link_bytes_in", relaxed(&link.bytes_in)),
        ("sql_commits", sql_after.commits - sql_before.commits),
        (
            "sql_durable_commits",
            sql_after.durable_commits - sql_before.durable_commits,
        ),
        ("sql_rows_written", sql_after.rows - sql_before.rows),
        ("sql_pages_written", pages_after - pages_before),
        ("sql_compiled", sql_after.compiled - sql_before.compiled),
        ("log_events_default", relaxed(&log.default_level)),
        ("log_events_debug", relaxed(&log.debug)),
        ("log_spans", relaxed(&log.spans)),
    ])
}

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/cycle_cost.baseline")
}

fn render(counts: &Counts) -> String {
    let mut text = String::from(
        "# One cycle's work (tests/it/cycle_cost.rs); a change to this file is a\n\
         # deliberate, reviewed change of what a cycle costs.\n",
    );
    for (name, value) in counts {
        text.push_str(&format!("{name} = {value}\n"));
    }
    text
}

fn parse(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.split_once('=').expect("`name = value`");
            let value = value.trim().parse().expect("a count");
            (name.trim().to_string(), value)
        })
        .collect()
}

/// Every count above its baseline by more than the tolerance, in words.
pub(crate) fn over_baseline(counts: &Counts, baseline: &BTreeMap<String, u64>) -> Vec<String> {
    let mut over = Vec::new();
    for (name, &value) in counts {
        match baseline.get(*name) {
            None => over.push(format!("{name} = {value} has no baseline")),
            Some(&base) => {
                let allowed = (base as f64 * (1.0 + tolerance(name))).floor() as u64;
                if value > allowed {
                    over.push(format!(
                        "{name} = {value}, baseline {base} (at most {allowed})"
                    ));
                }
            }
        }
    }
    over
}

#[tokio::test(start_paused = true)]
async fn one_cycle_does_no_more_work_than_its_baseline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counts = second_cycle(dir.path().to_path_buf()).await;
    eprintln!("cycle_cost: {counts:?}");
    let path = baseline_path();
    if std::env::var(BASELINE_ENV).as_deref() == Ok("write") {
        std::fs::write(&path, render(&counts)).expect("write the baseline");
    }
    let baseline = parse(&std::fs::read_to_string(&path).expect("tests/it/cycle_cost.baseline"));
    for (name, &base) in &baseline {
        let now = counts.get(name.as_str()).copied().unwrap_or(0);
        if (now as f64) < base as f64 * (1.0 - 2.0 * TOLERANCE) {
            eprintln!(
                "cycle_cost: {name} = {now}, well under its baseline {base}: \
                 lock the gain in with {BASELINE_ENV}=write"
            );
        }
    }
    let over = over_baseline(&counts, &baseline);
    assert!(
        over.is_empty(),
        "one cycle does more work than its baseline ({}):\n  {}\n\
         If that is intended, write the new baseline with {BASELINE_ENV}=write and commit it.",
        path.display(),
        over.join("\n  ")
    );
}

#[test]
fn a_count_over_its_tolerance_fails_and_one_within_passes() {
    let baseline = BTreeMap::from([("sql_commits".to_string(), 5), ("allocations".into(), 1000)]);
    let within = BTreeMap::from([("sql_commits", 5), ("allocations", 1100)]);
    assert!(over_baseline(&within, &baseline).is_empty());
    let one_more_commit = BTreeMap::from([("sql_commits", 6), ("allocations", 1000)]);
    assert_eq!(over_baseline(&one_more_commit, &baseline).len(), 1);
    let unknown = BTreeMap::from([("sql_commits", 5), ("allocations", 1000), ("new", 1)]);
    assert_eq!(over_baseline(&unknown, &baseline).len(), 1);
}
