//! The JSON API and the health check. A run has the shape `results
//! --format json` prints (the serde of [`RunRecord`]) for an engineer, and
//! that of [`RunRecord::summary`] (no token text, no CSR or certificate)
//! for a viewer ([`Role`]).
//!
//! Reads go through the server's own readers ([`RunReaders`]): when every
//! reader is busy the answer is 503 with `Retry-After`, at once.
//! `/api/v1/runs` is paged (at most [`MAX_RUNS`] runs; `after` is the
//! cursor) and streamed: one read picks the page's run ids, then the runs
//! are read and written [`RUNS_PER_PART`] at a time, a reader held only
//! while a part is read and serialised, never while a client reads it. A
//! client that reads slowly holds one part in memory, whatever the page,
//! and is dropped if the answer is not out within [`ANSWER_LIMIT`].

use std::io;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::App;
use super::auth::Role;
use super::conn::{ANSWER_LIMIT, AnswerDeadline};
use super::metrics::Refusal;
use std::sync::Arc;

use crate::ledger::{RunPage, RunReader, RunReaders, parse_since};
use crate::record::{RunId, RunRecord};

/// Runs `/api/v1/runs` returns when no `limit` is given.
pub const DEFAULT_RUNS: usize = 100;
/// The most runs one page holds.
pub const MAX_RUNS: usize = 1000;
/// Runs read and serialised at once: the part of an answer in memory
/// (about 8 KB a run with its tokens and certificates).
pub const RUNS_PER_PART: usize = 16;
/// What a 503 asks a client to wait before it tries again.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// `{"error": "..."}` with a status.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// 503: every reader is busy.
pub(super) fn busy(app: &App) -> Response {
    app.metrics.refused(Refusal::ReadersBusy);
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "every reader of the station's records is busy; try again shortly",
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A JSON answer that no cache keeps (it may hold token text).
fn json_answer(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
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
    /// At most this many runs (default 100, at most 1000).
    limit: Option<String>,
    /// The cursor: the runs after this run id, oldest first.
    after: Option<String>,
}

/// `GET /api/v1/runs?since=TIME&limit=N&after=ID`: with `after`, the first
/// `limit` runs after run `after`, and a `Link: <…>; rel="next"` header
/// when more may follow; without, the most recent `limit` runs. Oldest
/// first, only runs started at or after `since`.
pub async fn runs(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    deadline: Option<Extension<AnswerDeadline>>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "query parameters are `since` (RFC 3339 time or date), `limit` (1 to {MAX_RUNS}) and `after` (a run id)"
            ),
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
    let after = match query.after.as_deref().map(str::parse::<RunId>) {
        None => None,
        Some(Ok(id)) if id >= 0 => Some(id),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "after must be a run id (0 for the first page)",
            );
        }
    };
    let Some(reader) = app.readers.try_reader() else {
        return busy(&app);
    };
    let page = RunPage {
        since,
        after,
        limit,
    };
    let ids = match reader.page(page).await {
        Ok(ids) => ids,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    if let Some(Extension(deadline)) = deadline {
        deadline.within(ANSWER_LIMIT);
    }
    let next = match (after, ids.last()) {
        (Some(_), Some(&last)) if ids.len() == limit => Some(next_link(last, limit, since)),
        _ => None,
    };
    let mut response = json_answer(Body::from_stream(stream_runs(
        Arc::clone(&app.readers),
        reader,
        ids,
        role,
    )));
    if let Some(link) = next.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// The `Link` to the page after run `last`.
fn next_link(last: RunId, limit: usize, since: Option<time::OffsetDateTime>) -> String {
    let since = since.map_or_else(String::new, |t| {
        format!(
            "&since={}",
            crate::record::ser::rfc3339(&t.to_offset(time::UtcOffset::UTC))
        )
    });
    format!("</api/v1/runs?after={last}&limit={limit}{since}>; rel=\"next\"")
}

/// What a streamed answer has left to send.
struct Stream {
    pool: Arc<dyn RunReaders>,
    /// The reader that chose the page, used for the first part.
    held: Option<Box<dyn RunReader>>,
    parts: std::vec::IntoIter<Vec<RunId>>,
    role: Role,
    started: bool,
    done: bool,
}

/// The runs with `ids` as one JSON array, a part at a time.
fn stream_runs(
    pool: Arc<dyn RunReaders>,
    reader: Box<dyn RunReader>,
    ids: Vec<RunId>,
    role: Role,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> {
    let parts: Vec<Vec<RunId>> = ids.chunks(RUNS_PER_PART).map(<[_]>::to_vec).collect();
    let state = Stream {
        pool,
        held: Some(reader),
        parts: parts.into_iter(),
        role,
        started: false,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let Some(ids) = s.parts.next() else {
            s.done = true;
            let end: &'static [u8] = if s.started { b"]" } else { b"[]" };
            return Some((Ok(Bytes::from_static(end)), s));
        };
        let first = !s.started;
        s.started = true;
        let role = s.role;
        let reader = match s.held.take() {
            Some(reader) => Ok(reader),
            None => s.pool.reader().await,
        };
        let part = match reader {
            Ok(reader) => {
                reader
                    .render(ids, Box::new(move |runs| render(&runs, role, first)))
                    .await
            }
            Err(e) => Err(e),
        };
        match part {
            Ok(bytes) => Some((Ok(Bytes::from(bytes)), s)),
            // The status has been sent: end the answer unfinished, so the
            // client sees it is cut short.
            Err(e) => {
                s.done = true;
                Some((Err(io::Error::other(e.to_string())), s))
            }
        }
    })
}

/// `runs` as the role may see them, comma-separated, opening the array
/// when `first`.
fn render(runs: &[RunRecord], role: Role, first: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(runs.len() * 2 * 1024);
    for (i, run) in runs.iter().enumerate() {
        out.push(if first && i == 0 { b'[' } else { b',' });
        write_run(&mut out, run, role);
    }
    // What a slow client holds is this part: no more than it needs.
    out.shrink_to_fit();
    out
}

/// One run as the role may see it.
fn write_run(out: &mut Vec<u8>, run: &RunRecord, role: Role) {
    run.write_json(out, role == Role::Engineer);
}

/// `GET /api/v1/runs/{id}`: one run, or 404.
pub async fn run(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<RunId>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("run id must be a number, got {id:?}"),
        );
    };
    let Some(reader) = app.readers.try_reader() else {
        return busy(&app);
    };
    // Nothing rendered: no such run (a run's JSON is never empty).
    let found = reader
        .render(
            vec![id],
            Box::new(move |runs| {
                let mut out = Vec::new();
                if let Some(run) = runs.first() {
                    write_run(&mut out, run, role);
                }
                out
            }),
        )
        .await;
    match found {
        Ok(bytes) if bytes.is_empty() => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Ok(bytes) => json_answer(Body::from(bytes)),
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
        "no such page; see /, /metrics, /healthz, /api/v1/ports, /api/v1/runs, /api/v1/shift",
    )
}
