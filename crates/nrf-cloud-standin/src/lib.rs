//! A stand-in nRF Cloud: a test double of the provisioning service and the
//! REST API on `127.0.0.1:0`, like the `nrf91-sim` crate is for modems. Tests,
//! benches and `bench` commands start it; nothing in production talks to it.
//!
//! Written from the contract in `reference/nrf91.md` ("Who verifies real
//! devices: nRF Cloud") and Nordic's `nrfcloud-utils`, not from the
//! client (`nrf-cloud`): it shares no types with it.
//!
//! What it checks, as the real services do: the bearer key (401), the JSON
//! and CSV shapes (400 with `{"message"}`), at most 1000 rows, and the claim
//! token: it reads the device UUID from the token's first part and looks it
//! up in its known devices. Where the contract is silent it decides, and the
//! decision is written next to the code ("Unknown on the real service").
//!
//! Faults are scripted per [`Endpoint`] ([`StandIn::fault`]): a status
//! (500, 503, 429 with `Retry-After`), a delay, malformed JSON, an arbitrary
//! body, or a connection closed without an answer. Every request is
//! recorded ([`StandIn::requests`]) with its headers, the key's value
//! replaced by whether it was right.

mod judge;
mod services;

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower::ServiceExt;
use uuid::Uuid;

pub use judge::{TokenDevice, read_token};

/// Rows one bulk request may carry (the contract's limit).
pub const ROW_LIMIT: usize = 1000;
/// Request bodies larger than this are refused with 413.
const BODY_LIMIT: usize = 16 << 20;

/// Which call a request is, as the stand-in classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST claimed-devices?dryrun=true`
    ClaimDryRun,
    /// `POST claimed-devices` with JSON
    Claim,
    /// `POST claimed-devices` with CSV
    BulkClaim,
    /// `DELETE claimed-devices/{uuid}`
    Unclaim,
    /// `POST devices` (REST API, onboarding CSV)
    Onboard,
    /// `GET bulk-ops-requests/{id}`
    BulkOp,
    /// `GET` of a bulk operation's error summary (no key needed)
    ErrorSummary,
    /// Anything else (404)
    Other,
}

/// What nRF Cloud's trusted device database says of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A genuine device that can be claimed.
    Accept,
    /// Refused with this message (400).
    Reject(String),
}

/// A scripted misbehaviour, applied to the next request(s) of an endpoint
/// before anything else (the key is not checked first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and `{"message"}`, and `Retry-After` if given.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Wait, then answer normally (the call's effect still happens).
    Delay(Duration),
    /// The endpoint's success status with a body that is not JSON.
    MalformedJson,
    /// This status, content type and body.
    Body {
        status: u16,
        content_type: String,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Close,
}

/// How a bulk claim lists its failed rows. Unknown on the real service
/// (Nordic's tool only prints the list), so both plausible shapes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailedShape {
    /// `[{"claimToken": "...", "message": "..."}]`
    #[default]
    Objects,
    /// `["[row]: message"]`, rows from 0, like bulk-operation errors.
    Strings,
}

/// Stand-in settings.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// The one API key it accepts.
    pub api_key: String,
    /// `GET`s of a bulk operation until it is final: the first answers
    /// PENDING, then IN_PROGRESS, the last SUCCEEDED or FAILED.
    pub polls_to_finish: u32,
    pub failed_shape: FailedShape,
}

impl Default for StandInConfig {
    fn default() -> Self {
        Self {
            api_key: "stand-in-api-key".into(),
            polls_to_finish: 3,
            failed_shape: FailedShape::default(),
        }
    }
}

/// Whether a request carried the right `Authorization: Bearer` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySeen {
    Missing,
    Correct,
    Wrong,
}

/// One request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub at: Instant,
    pub method: String,
    pub path_and_query: String,
    pub endpoint: Endpoint,
    /// Every header; `authorization`'s value is replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
    pub key: KeySeen,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A claimed device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub device: TokenDevice,
    pub tags: Vec<String>,
}

/// One row of an onboarding request.
#[derive(Debug, Clone)]
struct OnboardItem {
    device_id: String,
    certificate: String,
}

/// A bulk operation and its fate, decided when it was submitted.
#[derive(Debug, Clone)]
struct BulkOperation {
    polls: u32,
    requested_at: String,
    completed_at: Option<String>,
    items: Vec<OnboardItem>,
    /// `"[row]: message"` per failed row.
    errors: Vec<String>,
}

#[derive(Debug, Default)]
struct World {
    devices: HashMap<Uuid, Verdict>,
    claimed: HashMap<Uuid, Claimed>,
    /// Lower-case device id → certificate PEM.
    onboarded: HashMap<String, String>,
    bulk_ops: HashMap<String, BulkOperation>,
    next_op: u64,
    faults: HashMap<Endpoint, VecDeque<Fault>>,
    requests: Vec<RecordedRequest>,
}

struct Shared {
    config: StandInConfig,
    base: String,
    world: Mutex<World>,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stand-in; stops when dropped.
pub struct StandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn").field("addr", &self.addr).finish()
    }
}

/// Closes one connection without an answer (see [`Fault::Close`]).
#[derive(Clone)]
struct Hangup(Arc<Notify>);

impl StandIn {
    /// Start on `127.0.0.1:0`.
    pub async fn start(config: StandInConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            base: format!("http://{addr}"),
            world: Mutex::new(World::default()),
        });
        let router = router(shared.clone());
        let task = tokio::spawn(serve(listener, router));
        Ok(Self { addr, shared, task })
    }

    /// Base URL of the provisioning service (ends in `/v1/`).
    pub fn provisioning_url(&self) -> String {
        format!("http://{}/provisioning/v1/", self.addr)
    }

    /// Base URL of the REST API (ends in `/v1/`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1/", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.shared.config.api_key
    }

    /// Put a device into the trusted device database.
    pub fn add_device(&self, device_uuid: Uuid, verdict: Verdict) {
        self.shared.world().devices.insert(device_uuid, verdict);
    }

    /// Apply `fault` to the next `times` requests of `endpoint` (after any
    /// faults already scripted for it).
    pub fn fault(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut world = self.shared.world();
        let queue = world.faults.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.world().requests.clone()
    }

    /// The requests to one endpoint.
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.shared
            .world()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .cloned()
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.world().requests.clear();
    }

    /// Claimed devices by UUID.
    pub fn claimed(&self) -> HashMap<Uuid, Claimed> {
        self.shared.world().claimed.clone()
    }

    /// Unclaim everything (a bench's next round).
    pub fn forget_claims(&self) {
        self.shared.world().claimed.clear();
    }

    /// Onboarded device ids (lower case), sorted.
    pub fn onboarded(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.world().onboarded.keys().cloned().collect();
        ids.sort();
        ids
    }
}

async fn serve(listener: TcpListener, router: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or similar: let the moment pass.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let router = router.clone();
        tokio::spawn(async move {
            let hangup = Arc::new(Notify::new());
            let mark = Hangup(hangup.clone());
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(mark.clone());
                    let router = router.clone();
                    async move {
                        let response: Result<Response, Infallible> =
                            router.oneshot(request.map(Body::new)).await;
                        response
                    }
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection closes the socket mid-request.
            tokio::select! {
                _ = connection => {}
                _ = hangup.notified() => {}
            }
        });
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/provisioning/v1/claimed-devices",
            post(services::claimed_devices),
        )
        .route(
            "/provisioning/v1/claimed-devices/{uuid}",
            delete(services::unclaim),
        )
        .route("/api/v1/devices", post(services::onboard))
        .route("/api/v1/bulk-ops-requests/{id}", get(services::bulk_op))
        .route(
            "/files/bulk-ops-requests/{file}",
            get(services::error_summary),
        )
        .fallback(services::not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// A JSON error answer as nRF Cloud gives them: `{"message": ...}`.
fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text }))).into_response()
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `POST claimed-devices` carries JSON or CSV. Nordic's tool sends the CSV
/// without a Content-Type (it names the header `contentType`), so without
/// one the body decides.
fn claim_kind(headers: &HeaderMap, body: &[u8]) -> Endpoint {
    match content_type(headers) {
        Some(ct) if ct.starts_with("text/csv") || ct.starts_with("text/plain") => {
            Endpoint::BulkClaim
        }
        Some(ct) if ct.starts_with("application/json") => Endpoint::Claim,
        _ => match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Endpoint::Claim,
            _ => Endpoint::BulkClaim,
        },
    }
}

fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Endpoint {
    let dry_run = query.is_some_and(|q| q.split('&').any(|p| p == "dryrun=true"));
    match (method, path) {
        (&Method::POST, "/provisioning/v1/claimed-devices") if dry_run => Endpoint::ClaimDryRun,
        (&Method::POST, "/provisioning/v1/claimed-devices") => claim_kind(headers, body),
        (&Method::DELETE, p) if p.starts_with("/provisioning/v1/claimed-devices/") => {
            Endpoint::Unclaim
        }
        (&Method::POST, "/api/v1/devices") => Endpoint::Onboard,
        (&Method::GET, p) if p.starts_with("/api/v1/bulk-ops-requests/") => Endpoint::BulkOp,
        (&Method::GET, p) if p.starts_with("/files/bulk-ops-requests/") => Endpoint::ErrorSummary,
        _ => Endpoint::Other,
    }
}

fn success_status(endpoint: Endpoint) -> StatusCode {
    match endpoint {
        Endpoint::ClaimDryRun | Endpoint::Onboard => StatusCode::ACCEPTED,
        Endpoint::Claim => StatusCode::CREATED,
        Endpoint::Unclaim => StatusCode::NO_CONTENT,
        _ => StatusCode::OK,
    }
}

/// Every request passes here: read the body, classify, record, apply a
/// scripted fault, check the key; then the service runs.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    let endpoint = classify(
        &parts.method,
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        &body,
    );
    let expected = format!("Bearer {}", shared.config.api_key);
    let key = match parts.headers.get(header::AUTHORIZATION) {
        None => KeySeen::Missing,
        Some(v) if v.as_bytes() == expected.as_bytes() => KeySeen::Correct,
        Some(_) => KeySeen::Wrong,
    };
    let recorded = RecordedRequest {
        at: Instant::now(),
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |pq| pq.to_string()),
        endpoint,
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = if name == header::AUTHORIZATION {
                    "<redacted>".to_string()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.to_string(), value)
            })
            .collect(),
        key,
        content_type: content_type(&parts.headers),
        body: body.to_vec(),
    };
    let fault = {
        let mut world = shared.world();
        world.requests.push(recorded);
        world
            .faults
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
    };
    match fault {
        None => {}
        Some(Fault::Delay(wait)) => tokio::time::sleep(wait).await,
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response =
                message(status, &format!("stand-in fault: HTTP {}", status.as_u16()));
            if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Fault::MalformedJson) => {
            return (
                success_status(endpoint),
                [(header::CONTENT_TYPE, "application/json")],
                "{\"claimedIds\": [\"50503041-36",
            )
                .into_response();
        }
        Some(Fault::Body {
            status,
            content_type,
            body,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
        }
        Some(Fault::Close) => {
            if let Some(Hangup(hangup)) = parts.extensions.get::<Hangup>() {
                hangup.notify_one();
            }
            // The connection is dropped under this future.
            std::future::pending::<()>().await;
        }
    }
    // The error summary stands for a pre-signed download: no key.
    if endpoint != Endpoint::ErrorSummary && key != KeySeen::Correct {
        return message(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    parts.extensions.insert(endpoint);
    next.run(Request::from_parts(parts, Body::from(body))).await
}
