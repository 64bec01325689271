//! The daemon's own HTTP server: the live station page at `/`, its feed at
//! `/events` (Server-Sent Events), `/metrics` (Prometheus), the JSON API
//! (`/api/v1/ports`, `/api/v1/runs`, `/api/v1/runs/{id}`) and `/healthz`.
//!
//! The page and the metrics are subscribers of the station's events like
//! systemd's STATUS: they fold events, they never hold the station up. A
//! client that stops reading is dropped ([`conn`]); a page that falls
//! behind is disconnected and starts over ([`live`]). Every asset is in the
//! binary: no CDN, nothing fetched, works on a line with no internet.
//!
//! - [`view`]: what the page shows, folded from events (no I/O);
//! - [`live`]: the view's task and the SSE feed;
//! - [`metrics`]: the Prometheus registry, folded from events;
//! - [`api`]: JSON and health;
//! - [`auth`]: the bearer token for listening beyond loopback;
//! - [`conn`]: accept loop, connection limit, write deadline.

pub mod api;
pub mod auth;
pub mod conn;
pub mod live;
pub mod metrics;
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
use crate::ledger::{LedgerReader, SqliteLedger};
use crate::station::Station;
pub use auth::{AccessToken, TokenError};
use live::Live;
use metrics::Metrics;
use view::View;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("http: cannot read the runs for the API: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
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
    /// The API's own read-only connection to the records, so that a large
    /// read never waits in line with the station's commits.
    pub runs: Arc<dyn LedgerReader>,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server stops: live feeds end.
    pub stop: CancellationToken,
}

/// The running server.
pub struct HttpServer {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

impl HttpServer {
    /// Start serving `station` as `config`'s `[http]` says; `None` when it
    /// says not to (`listen = ""`). Call before the station serves, so the
    /// page sees its first ports.
    pub async fn start(
        station: &Arc<Station>,
        config: &StationConfig,
    ) -> Result<Option<HttpServer>, HttpError> {
        let Some(listen) = config.http.listen else {
            return Ok(None);
        };
        let token = config
            .http
            .token_file
            .as_deref()
            .map(AccessToken::load)
            .transpose()?;
        let runs = Arc::new(SqliteLedger::open_read_only(&config.database)?);
        HttpServer::start_on(station, listen, token, &config.station_id, runs)
            .await
            .map(Some)
    }

    /// Start serving `station` on `listen`, requiring `token` when given;
    /// the API reads runs from `runs`.
    pub async fn start_on(
        station: &Arc<Station>,
        listen: SocketAddr,
        token: Option<AccessToken>,
        station_id: &str,
        runs: Arc<dyn LedgerReader>,
    ) -> Result<HttpServer, HttpError> {
        metrics::note_start();
        let listener = conn::listen(listen).map_err(|source| HttpError::Listen {
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
            runs,
            live: Live::new(View::new(station_id, steps)),
            metrics: Arc::new(Metrics::new(Arc::clone(station) as _)),
            stop: stop.clone(),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(live::follow(
            Arc::clone(&app.live),
            Arc::clone(&app.metrics),
            station.subscribe(),
            stop.clone(),
        ));
        let metrics = Arc::clone(&app.metrics);
        tasks.spawn(conn::serve(
            listener,
            router(app, token),
            metrics,
            stop.clone(),
        ));
        Ok(HttpServer { addr, stop, tasks })
    }

    /// Where the server listens (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop: close the listener and every connection, end the feeds.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn router(app: App, token: Option<AccessToken>) -> Router {
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
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
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
