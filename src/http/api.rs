//! The JSON API and the health check. Runs have the shape `results
//! --format json` prints (the same serde of [`RunRecord`]).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::App;
use crate::ledger::{RunFilter, parse_since};
use crate::record::RunId;

/// Runs `/api/v1/runs` returns when no `limit` is given.
pub const DEFAULT_RUNS: usize = 100;
/// The most runs one request returns.
pub const MAX_RUNS: usize = 1000;

/// `{"error": "..."}` with a status.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// `GET /api/v1/ports`: every watched port's tile, sorted by port.
pub async fn ports(State(app): State<App>) -> Response {
    Json(app.live.tiles()).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// RFC 3339 time or date: runs started at or after it.
    since: Option<String>,
    /// The most recent this many (default 100, at most 1000).
    limit: Option<String>,
}

/// `GET /api/v1/runs?since=TIME&limit=N`: the most recent runs (started at
/// or after `since`), oldest first.
pub async fn runs(
    State(app): State<App>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameters are `since` (RFC 3339 time or date) and `limit` (1 to 1000)",
        );
    };
    let since = match query.since.as_deref().map(parse_since).transpose() {
        Ok(since) => since,
        Err(why) => return error(StatusCode::BAD_REQUEST, format!("since: {why}")),
    };
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_RUNS,
        Some(Ok(n)) if (1..=MAX_RUNS).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a number from 1 to {MAX_RUNS}"),
            );
        }
    };
    let filter = RunFilter {
        since,
        limit: Some(limit),
        ..RunFilter::default()
    };
    match app.runs.runs(&filter).await {
        Ok(runs) => Json(runs).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// `GET /api/v1/runs/{id}`: one run, or 404.
pub async fn run(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<RunId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("run id must be a number, got {id:?}"),
        );
    };
    match app.runs.run(id).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

/// `GET /healthz`: 200 while the station serves, 503 once it is stopping.
pub async fn healthz(State(app): State<App>) -> Response {
    let stopping = app.station.stopping();
    let status = if stopping {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "status": if stopping { "stopping" } else { "serving" },
        "runs_finished": app.station.runs_finished(),
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<App>) -> Response {
    (
        [
            (header::CONTENT_TYPE, super::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        app.metrics.render(),
    )
        .into_response()
}

/// Anything else.
pub async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such page; see /, /metrics, /healthz, /api/v1/ports, /api/v1/runs",
    )
}
