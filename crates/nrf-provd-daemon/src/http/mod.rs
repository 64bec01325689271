//! The daemon's own HTTP server: the live station page at `/`, its feed at
//! `/events` (Server-Sent Events), `/metrics` (Prometheus), the JSON API
//! (`/api/v1/ports`, `/api/v1/runs`, `/api/v1/runs/{id}`, `/api/v1/shift`)
//! and `/healthz`.
//!
//! The server never holds a run up. It runs on a thread of its own (its
//! own single-threaded runtime), so no request ever runs on a thread the
//! station's tasks use; it reads the records through readers of its own
//! (read-only connections on their own threads, a bounded number at once;
//! the station's commits have the writer's thread to themselves); the page
//! and the metrics fold the station's events like systemd's STATUS does. A
//! client that stops reading is dropped ([`conn`]); a page that falls
//! behind is disconnected and starts over ([`live`]). Every asset is in the
//! binary: no CDN, nothing fetched, works on a line with no internet.
//!
//! - [`view`]: what the page shows, folded from events (no I/O);
//! - [`live`]: the view's task and the SSE feed;
//! - [`metrics`]: the Prometheus registry, folded from events;
//! - [`api`]: JSON (paged, streamed) and health;
//! - [`shift`]: the work order, lot, operator and product, read and changed;
//! - [`origin`]: only the station's own names in `Host` and `Origin`;
//! - [`auth`]: the viewer's, the operator's and the engineer's tokens;
//! - [`conn`]: accept loop, connection limits in all and per client,
//!   deadlines.

pub mod api;
pub mod auth;
pub mod conn;
pub mod live;
pub mod metrics;
pub mod origin;
pub mod shift;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::StationConfig;
use crate::ledger::RunReaders;
use crate::ledger::backends;
use crate::station::Station;
pub use auth::{Access, AccessToken, Role, TokenError};
use live::Live;
use metrics::Metrics;
use origin::Origins;
use view::View;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("http: cannot read the runs for the API: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("http: cannot start the server's thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "http: cannot listen on {addr}: {source}; set [http] listen to another address, or to \"\" to turn the station page off"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every handler sees.
#[derive(Clone)]
pub struct App {
    pub station: Arc<Station>,
    /// The API's own readers of the records (never the writer's).
    pub readers: Arc<dyn RunReaders>,
    /// Who may see what.
    pub access: Access,
    /// The names a request may use for the station.
    pub origins: Origins,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server stops: live feeds end.
    pub stop: CancellationToken,
}

/// The running server.
pub struct HttpServer {
    addr: SocketAddr,
    readers: Arc<dyn RunReaders>,
    stop: CancellationToken,
    /// Sent when the server's thread has closed every connection and ended.
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl HttpServer {
    /// Start serving `station` as `config`'s `[http]` says; `None` when it
    /// says not to (`listen = ""`). Call before the station serves, so the
    /// page sees its first ports.
    pub async fn start(
        station: &Arc<Station>,
        config: &StationConfig,
    ) -> Result<Option<HttpServer>, HttpError> {
        if config.http.listen.is_none() {
            return Ok(None);
        }
        let readers = backends::local::readers(&config.database, config.http.readers)?;
        Self::start_with(station, config, readers).await
    }

    /// [`start`](Self::start), reading the records through `readers` (any
    /// ledger's) rather than the station's database.
    pub async fn start_with(
        station: &Arc<Station>,
        config: &StationConfig,
        readers: Arc<dyn RunReaders>,
    ) -> Result<Option<HttpServer>, HttpError> {
        let Some(listen) = config.http.listen else {
            return Ok(None);
        };
        let access = Access::load(&config.http)?;
        metrics::note_start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpError::Thread)?;
        let listener = {
            // The listener belongs to the server's runtime.
            let _inside = runtime.enter();
            conn::listen(listen)
        }
        .map_err(|source| HttpError::Listen {
            addr: listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Listen {
            addr: listen,
            source,
        })?;
        let stop = CancellationToken::new();
        let steps = station.context().plan.steps.len();
        let app = App {
            station: Arc::clone(station),
            readers: Arc::clone(&readers),
            access,
            origins: Origins::new(&config.http.allowed_hosts),
            live: Live::new(View::new(
                &config.station_id,
                steps,
                config.traceability.clone(),
            )),
            metrics: Arc::new(Metrics::new(Arc::clone(station) as _)),
            stop: stop.clone(),
        };
        let events = station.subscribe();
        let (done, ended) = tokio::sync::oneshot::channel();
        let serving = stop.clone();
        std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tasks = JoinSet::new();
                    let station = Arc::clone(&app.station);
                    tasks.spawn(live::follow(
                        Arc::clone(&app.live),
                        Arc::clone(&app.metrics),
                        events,
                        move || station.sink_backlog(),
                        serving.clone(),
                    ));
                    let metrics = Arc::clone(&app.metrics);
                    tasks.spawn(conn::serve(listener, router(app), metrics, serving));
                    while tasks.join_next().await.is_some() {}
                });
                drop(runtime);
                let _ = done.send(());
            })
            .map_err(HttpError::Thread)?;
        Ok(Some(HttpServer {
            addr,
            readers,
            stop,
            ended: Some(ended),
        }))
    }

    /// Where the server listens (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The readers the API reads the records through (a test takes one to
    /// see what a client gets when they are all busy).
    pub fn readers(&self) -> Arc<dyn RunReaders> {
        Arc::clone(&self.readers)
    }

    /// Stop: close the listener and every connection, end the feeds, and
    /// wait until the server's thread has ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(ended) = self.ended.take() {
            let _ = ended.await;
        }
    }
}

impl Drop for HttpServer {
    /// Not shut down (an early return): the server's thread ends by itself.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/station.css", get(page::css))
        .route("/station.js", get(page::js))
        .route("/events", get(live::events))
        .route("/metrics", get(api::metrics))
        .route("/healthz", get(api::healthz))
        .route("/api/v1/ports", get(api::ports))
        .route("/api/v1/runs", get(api::runs))
        .route("/api/v1/runs/{id}", get(api::run))
        .route("/api/v1/shift", get(shift::show).post(shift::set))
        .fallback(api::not_found)
        // The last layer runs first: the origin, then the token.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_access,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            origin::require_own_origin,
        ))
        .with_state(app)
}

/// The page's files, compiled in.
mod page {
    use super::*;

    const INDEX: &str = include_str!("page/index.html");
    const CSS: &str = include_str!("page/station.css");
    const JS: &str = include_str!("page/station.js");

    fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
        (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response()
    }

    pub async fn index() -> axum::response::Response {
        let mut response = asset("text/html; charset=utf-8", INDEX);
        // Only the page's own files; nothing from anywhere else.
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
        response
    }

    pub async fn css() -> axum::response::Response {
        asset("text/css; charset=utf-8", CSS)
    }

    pub async fn js() -> axum::response::Response {
        asset("text/javascript; charset=utf-8", JS)
    }
}
