//! The page's live feed and the metrics' fold: one task reads the
//! station's events, folds them into the [`View`] and the [`Metrics`], and
//! sends what changed on the page, serialised once, to every connected page
//! over Server-Sent Events. A page first gets the whole view (`snapshot`),
//! then the changes (`updates`, a JSON array).
//!
//! The task wakes every [`FOLD_EVERY`] and takes every event waiting, not
//! once per event: a busy station (64 boards, ~1600 events a second) costs
//! it twenty wake-ups a second, and each page one write per wake-up. A page
//! that falls behind is disconnected; its browser reconnects and starts
//! from a fresh snapshot, so a slow client costs the station nothing and
//! never sees a wrong tile.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::App;
use super::metrics::{Metrics, SseClient};
use super::view::{SinkRow, Tile, View};
use crate::ledger::deliveries::Backlog;
use crate::station::StationEvent;
use crate::station::systemd::Shift;

/// How often the fold takes the events that arrived. The page is this much
/// behind the station at most; [`crate::station::events::EVENT_CAPACITY`]
/// events may arrive in between before any is missed.
pub const FOLD_EVERY: Duration = Duration::from_millis(50);
/// Messages a page may fall behind by before it is disconnected.
const UPDATE_CAPACITY: usize = 256;
/// How soon a browser retries after the connection drops.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing an idle stream and
/// lets a dead client's socket be noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The view and the feed of its changes.
pub struct Live {
    view: Mutex<View>,
    updates: broadcast::Sender<Arc<str>>,
}

impl Live {
    pub fn new(view: View) -> Arc<Live> {
        Arc::new(Live {
            view: Mutex::new(view),
            updates: broadcast::channel(UPDATE_CAPACITY).0,
        })
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fold `events` in and tell the pages what changed, as one message.
    /// It is sent while the view is locked, so a page that connects gets
    /// either the view before the change and then the change, or the view
    /// after.
    pub fn apply(&self, events: &[StationEvent]) {
        let now = now_ms();
        let mut view = self.view();
        let updates: Vec<_> = events.iter().filter_map(|e| view.apply(e, now)).collect();
        if updates.is_empty() {
            return;
        }
        if let Ok(json) = serde_json::to_string(&updates) {
            let _ = self.updates.send(Arc::from(json));
        }
    }

    /// The whole view as JSON, and the changes from then on.
    pub fn connect(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let view = self.view();
        let snapshot = serde_json::to_string(&view.snapshot(now_ms())).unwrap_or_default();
        (snapshot, self.updates.subscribe())
    }

    /// Take the sinks' backlog; the pages hear of it when it changed.
    pub fn set_sinks(&self, sinks: Vec<SinkRow>) {
        let mut view = self.view();
        if let Some(update) = view.set_sinks(sinks, now_ms()) {
            if let Ok(json) = serde_json::to_string(&[update]) {
                let _ = self.updates.send(Arc::from(json));
            }
        }
    }

    pub fn tiles(&self) -> Vec<Tile> {
        self.view().tiles()
    }
}

/// Wall-clock milliseconds since the Unix epoch (what the page shows times in).
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// How often the page takes the sinks' backlog (the sinks' watcher reads
/// it every [`crate::sink::health::REFRESH`]).
const SINKS_EVERY: u32 = 20;

/// Fold the station's events into the page and the metrics every
/// [`FOLD_EVERY`] until they end or `stop`; every [`SINKS_EVERY`] folds,
/// take `sinks()`' backlog too (sinks raise no events of their own).
pub async fn follow(
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    mut events: broadcast::Receiver<StationEvent>,
    sinks: impl Fn() -> Vec<Backlog>,
    stop: CancellationToken,
) {
    let mut folds = 0u32;
    let mut shift = Shift::default();
    let mut tick = tokio::time::interval(FOLD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let closed = loop {
            match events.try_recv() {
                Ok(event) => {
                    shift.apply(&event);
                    metrics.apply(&event, &shift);
                    batch.push(event);
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Lagged(missed)) => {
                    metrics.missed(missed);
                    warn!(
                        missed,
                        "the station page and metrics fell behind the station's events; tiles may be stale until their next run, counters are low by as many"
                    );
                }
                Err(TryRecvError::Closed) => break true,
            }
        };
        live.apply(&batch);
        batch.clear();
        if folds % SINKS_EVERY == 0 {
            live.set_sinks(sinks().iter().map(SinkRow::of).collect());
        }
        folds = folds.wrapping_add(1);
        if closed {
            return;
        }
    }
}

/// What one page's stream holds.
struct Feed {
    first: Option<String>,
    updates: broadcast::Receiver<Arc<str>>,
    stop: CancellationToken,
    _client: SseClient,
}

/// `GET /events`: the snapshot, then every update, as Server-Sent Events.
pub async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (snapshot, updates) = app.live.connect();
    let feed = Feed {
        first: Some(snapshot),
        updates,
        stop: app.stop.clone(),
        _client: app.metrics.sse_client(),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        if let Some(snapshot) = feed.first.take() {
            let event = Event::default()
                .event("snapshot")
                .retry(RECONNECT_AFTER)
                .data(snapshot);
            return Some((Ok(event), feed));
        }
        let update = tokio::select! {
            _ = feed.stop.cancelled() => return None,
            update = feed.updates.recv() => update,
        };
        match update {
            Ok(json) => Some((Ok(Event::default().event("updates").data(&*json)), feed)),
            // Behind (or the server is stopping): end the stream; the
            // browser reconnects and starts over from a snapshot.
            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
