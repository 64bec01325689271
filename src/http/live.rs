//! The page's live feed: one task folds the station's events into the
//! [`View`] and sends each change, serialised once, to every connected
//! page over Server-Sent Events. A page first gets the whole view
//! (`snapshot`), then each change (`update`, or `updates`: a JSON array of
//! those already waiting). A page that falls behind is
//! disconnected; its browser reconnects and starts from a fresh snapshot,
//! so a slow client costs the station nothing and never sees a wrong tile.

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
use super::view::{Tile, View};
use crate::station::StationEvent;
use crate::station::systemd::Shift;

/// Updates a page may fall behind by before it is disconnected.
const UPDATE_CAPACITY: usize = 1024;
/// Updates sent together at most, when several are waiting.
const BATCH: usize = 64;
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

    /// Fold one event in and tell the pages what changed. The change is
    /// sent while the view is locked, so a page that connects gets either
    /// the view before the change and then the change, or the view after.
    pub fn apply(&self, event: &StationEvent) {
        let mut view = self.view();
        if let Some(update) = view.apply(event, now_ms()) {
            if let Ok(json) = serde_json::to_string(&update) {
                let _ = self.updates.send(Arc::from(json));
            }
        }
    }

    /// The whole view as JSON, and the changes from then on.
    pub fn connect(&self) -> (String, broadcast::Receiver<Arc<str>>) {
        let view = self.view();
        let snapshot = serde_json::to_string(&view.snapshot(now_ms())).unwrap_or_default();
        (snapshot, self.updates.subscribe())
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

/// Feed the view from the station's events until they end or `stop`.
pub async fn follow_view(
    live: Arc<Live>,
    mut events: broadcast::Receiver<StationEvent>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => live.apply(&event),
            Err(RecvError::Lagged(missed)) => {
                metrics.missed(missed);
                warn!(
                    missed,
                    "the station page fell behind the station's events; tiles may be stale until their next run"
                );
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Feed the metrics from the station's events until they end or `stop`.
pub async fn follow_metrics(
    metrics: Arc<Metrics>,
    mut events: broadcast::Receiver<StationEvent>,
    stop: CancellationToken,
) {
    let mut shift = Shift::default();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                shift.apply(&event);
                metrics.apply(&event, &shift);
            }
            Err(RecvError::Lagged(missed)) => {
                metrics.missed(missed);
                warn!(
                    missed,
                    "metrics fell behind the station's events; counters are low by as many"
                );
            }
            Err(RecvError::Closed) => return,
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
        let first = match update {
            Ok(json) => json,
            // Behind (or the server is stopping): end the stream; the
            // browser reconnects and starts over from a snapshot.
            Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
        };
        // What else is already waiting goes in the same write: a burst of
        // steps costs one event, not one each.
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match feed.updates.try_recv() {
                Ok(json) => batch.push(json),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => return None,
            }
        }
        let event = match batch.as_slice() {
            [one] => Event::default().event("update").data(&**one),
            many => Event::default().event("updates").data(format!(
                "[{}]",
                many.iter().map(|j| &**j).collect::<Vec<_>>().join(",")
            )),
        };
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
