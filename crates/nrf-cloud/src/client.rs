//! The HTTP client: one `send` with timeouts, retries and a capped body
//! read, and one method per nRF Cloud call on top of it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use rustls_platform_verifier::BuilderVerifierExt;

use super::answers::{self, BulkClaim, BulkOp, BulkOpStatus, ClaimedDevice, RowOutcome};
use super::requests::{self, ClaimRow, OnboardRow};
use super::{ApiKey, CloudError, CloudSettings, retry};

const JSON: &str = "application/json";
const CSV: &str = "text/csv";

/// A client of nRF Cloud's provisioning service and REST API.
///
/// Every call is retried on transport failures, 5xx and 429 (honouring
/// `Retry-After`), never on other 4xx; see [`CloudSettings`] for the limits.
pub struct CloudClient {
    http: reqwest::Client,
    settings: CloudSettings,
    /// `Bearer <key>`, marked sensitive so that no `Debug` prints it.
    auth: HeaderValue,
    key_source: String,
}

impl std::fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudClient")
            .field("provisioning_url", &self.settings.provisioning_url.as_str())
            .field("api_url", &self.settings.api_url.as_str())
            .field("key", &self.key_source)
            .finish_non_exhaustive()
    }
}

/// An answer that was not retried: its status and (capped) body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    truncated: bool,
}

impl Answer {
    fn code(&self) -> u16 {
        self.status.as_u16()
    }

    fn reason(&self) -> String {
        let code = self.status.as_u16();
        match self.status.canonical_reason() {
            Some(r) => format!("HTTP {code} {r}"),
            None => format!("HTTP {code}"),
        }
    }

    /// The error for an answer that is not the expected success: a 4xx is
    /// nRF Cloud's refusal, anything else (a redirect, another 2xx) is not
    /// what the contract says.
    fn unexpected(&self, expected: &str) -> CloudError {
        if self.status.is_client_error() {
            CloudError::Rejected {
                status: self.code(),
                message: answers::error_message(&self.body, &self.reason()),
            }
        } else {
            CloudError::Malformed {
                status: self.code(),
                detail: format!(
                    "expected {expected}, got {}: {}",
                    self.reason(),
                    answers::error_message(&self.body, "empty body")
                ),
            }
        }
    }

    /// The body of a success, refused when it was cut at the size cap.
    fn success_body(&self, max: usize) -> Result<&[u8], CloudError> {
        if self.truncated {
            return Err(CloudError::Malformed {
                status: self.code(),
                detail: format!("answer longer than {max} bytes"),
            });
        }
        Ok(&self.body)
    }
}

/// rustls with ring (one crypto stack with `token`), TLS 1.2/1.3, the
/// system's trust store.
pub fn tls_config() -> Result<rustls::ClientConfig, CloudError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CloudError::Config(format!("TLS versions: {e}")))?
        .with_platform_verifier()
        .map_err(|e| CloudError::Config(format!("TLS certificate verifier: {e}")))?
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A transport failure in one line, with its causes (e.g. "connection
/// refused"), for `Unreachable::last` and the log.
fn describe(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no answer within {:.1} s", timeout.as_secs_f64());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry::parse_retry_after(value, SystemTime::now())
}

/// Read at most `max` bytes of the body; the flag says it was cut.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A request body: content type and bytes (cheap to clone per attempt).
type Payload = Option<(&'static str, Bytes)>;

impl CloudClient {
    pub fn new(settings: CloudSettings, key: ApiKey) -> Result<Self, CloudError> {
        settings.check()?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| CloudError::Config(format!("{key}: not usable in an HTTP header")))?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .timeout(settings.request_timeout)
            .connect_timeout(settings.connect_timeout)
            // A redirect would be outside the contract; never follow one
            // with the key.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nrf-provd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloudError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            settings,
            auth,
            key_source: key.source().to_string(),
        })
    }

    pub fn settings(&self) -> &CloudSettings {
        &self.settings
    }

    fn url(base: &Url, path: &str) -> Result<Url, CloudError> {
        base.join(path)
            .map_err(|e| CloudError::Config(format!("{base}{path}: {e}")))
    }

    /// One call with retries. Returns the first answer that is not retried
    /// (401/403 become `Unauthorized` here); the caller judges its status.
    async fn send(
        &self,
        call: &'static str,
        method: Method,
        url: Url,
        payload: Payload,
        with_key: bool,
    ) -> Result<Answer, CloudError> {
        let s = &self.settings;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, JSON);
            if with_key {
                request = request.header(AUTHORIZATION, self.auth.clone());
            }
            if let Some((content_type, bytes)) = &payload {
                request = request
                    .header(CONTENT_TYPE, *content_type)
                    .body(bytes.clone());
            }
            let outcome = async {
                let response = request.send().await?;
                let status = response.status();
                let wait = retry_after(response.headers());
                let (body, truncated) = read_capped(response, s.max_body).await?;
                Ok::<_, reqwest::Error>((
                    Answer {
                        status,
                        body,
                        truncated,
                    },
                    wait,
                ))
            }
            .await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let (failure, asked_wait) = match outcome {
                Err(e) => (describe(&e, s.request_timeout), None),
                Ok((answer, wait))
                    if answer.status.is_server_error()
                        || answer.status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let failure = format!(
                        "{}: {}",
                        answer.reason(),
                        answers::error_message(&answer.body, "no message")
                    );
                    (failure, wait)
                }
                Ok((answer, _)) => {
                    tracing::debug!(call, %method, %url, attempt, status = answer.code(), elapsed_ms, "nRF Cloud answered");
                    if matches!(answer.code(), 401 | 403) {
                        return Err(CloudError::Unauthorized {
                            status: answer.code(),
                            message: answers::error_message(&answer.body, &answer.reason()),
                        });
                    }
                    return Ok(answer);
                }
            };
            if let Some(wait) = asked_wait.filter(|w| *w > s.retry_after_max) {
                return Err(CloudError::Unreachable {
                    attempts: attempt,
                    last: format!(
                        "{failure}; nRF Cloud asked to retry after {} s, longer than the {} s this client waits",
                        wait.as_secs(),
                        s.retry_after_max.as_secs()
                    ),
                });
            }
            if attempt >= s.max_attempts {
                tracing::warn!(call, %url, attempt, elapsed_ms, "nRF Cloud unreachable: {failure}");
                return Err(CloudError::Unreachable {
                    attempts: attempt,
                    last: failure,
                });
            }
            let backoff = {
                let mut rng = rand::thread_rng();
                retry::backoff(attempt, s.backoff_base, s.backoff_max, &mut rng)
            };
            // Never earlier than the server asked.
            let wait = asked_wait.map_or(backoff, |asked| asked.max(backoff));
            tracing::warn!(call, %url, attempt, elapsed_ms, wait_ms = wait.as_millis() as u64, "nRF Cloud: {failure}; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// Can this device be claimed? nRF Cloud judges the `%ATTESTTOKEN`
    /// (`POST claimed-devices?dryrun=true`): `Ok` only on 202.
    pub async fn claim_dry_run(&self, attest_token: &str) -> Result<(), CloudError> {
        let body = requests::claim_json(attest_token, None)?;
        let url = Self::url(
            &self.settings.provisioning_url,
            "claimed-devices?dryrun=true",
        )?;
        let answer = self
            .send(
                "claim_dry_run",
                Method::POST,
                url,
                Some((JSON, body.into())),
                true,
            )
            .await?;
        if answer.status == StatusCode::ACCEPTED {
            Ok(())
        } else {
            Err(answer.unexpected("202 Accepted"))
        }
    }

    /// Claim one device, with provisioning tags.
    pub async fn claim(
        &self,
        attest_token: &str,
        tags: &[String],
    ) -> Result<ClaimedDevice, CloudError> {
        let body = requests::claim_json(attest_token, Some(tags))?;
        let url = Self::url(&self.settings.provisioning_url, "claimed-devices")?;
        let answer = self
            .send("claim", Method::POST, url, Some((JSON, body.into())), true)
            .await?;
        match answer.code() {
            200 | 201 => {
                answers::parse_claimed(answer.code(), answer.success_body(self.settings.max_body)?)
            }
            _ => Err(answer.unexpected("201 Created")),
        }
    }

    /// Claim up to 1000 devices in one CSV request; the answer says per row
    /// what happened. More rows, or rows that cannot be written, are refused
    /// before anything is sent.
    pub async fn bulk_claim(&self, rows: &[ClaimRow]) -> Result<BulkClaim, CloudError> {
        let body = requests::claim_csv(rows)?;
        let url = Self::url(&self.settings.provisioning_url, "claimed-devices")?;
        let answer = self
            .send(
                "bulk_claim",
                Method::POST,
                url,
                Some((CSV, body.into())),
                true,
            )
            .await?;
        match answer.code() {
            200 | 201 => answers::parse_bulk_claim(
                answer.code(),
                answer.success_body(self.settings.max_body)?,
                rows,
            ),
            // A refusal may still list the rows that failed.
            400..=499 if !answer.truncated => {
                answers::parse_bulk_claim(answer.code(), &answer.body, rows)
                    .ok()
                    .filter(|c| c.rows.iter().any(|r| r.outcome != RowOutcome::Unknown))
                    .ok_or_else(|| answer.unexpected("200 OK"))
            }
            _ => Err(answer.unexpected("200 OK or 201 Created")),
        }
    }

    /// Send up to 1000 device certificates to onboard; returns the bulk
    /// operation's id (follow it with [`CloudClient::wait_bulk_op`]).
    pub async fn onboard(&self, rows: &[OnboardRow]) -> Result<String, CloudError> {
        let body = requests::onboard_csv(rows)?;
        let url = Self::url(&self.settings.api_url, "devices")?;
        let answer = self
            .send("onboard", Method::POST, url, Some((CSV, body.into())), true)
            .await?;
        if answer.status == StatusCode::ACCEPTED {
            answers::parse_onboard(answer.code(), answer.success_body(self.settings.max_body)?)
        } else {
            Err(answer.unexpected("202 Accepted"))
        }
    }

    /// The state of a bulk operation (one `GET`, errors only if inline).
    pub async fn bulk_op(&self, id: &str) -> Result<BulkOp, CloudError> {
        let mut url = Self::url(&self.settings.api_url, "bulk-ops-requests")?;
        url.path_segments_mut()
            .map_err(|_| CloudError::Config("API base URL cannot take a path".into()))?
            .push(id);
        let answer = self.send("bulk_op", Method::GET, url, None, true).await?;
        if answer.status == StatusCode::OK {
            answers::parse_bulk_op(
                answer.code(),
                answer.success_body(self.settings.max_body)?,
                id,
            )
        } else {
            Err(answer.unexpected("200 OK"))
        }
    }

    /// Poll a bulk operation every `poll_every` until it is SUCCEEDED or
    /// FAILED (then with its per-row errors), or `deadline` has passed.
    pub async fn wait_bulk_op(
        &self,
        id: &str,
        poll_every: Duration,
        deadline: Duration,
    ) -> Result<BulkOp, CloudError> {
        let started = Instant::now();
        loop {
            let mut op = self.bulk_op(id).await?;
            if op.status.is_final() {
                if op.status == BulkOpStatus::Failed && op.errors.is_empty() {
                    self.fetch_errors(&mut op).await;
                }
                return Ok(op);
            }
            if started.elapsed() + poll_every > deadline {
                return Err(CloudError::StillRunning {
                    id: id.to_string(),
                    status: op.status.as_str().to_string(),
                    waited_s: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(poll_every).await;
        }
    }

    /// Download a FAILED operation's error summary. The URL is a separate
    /// store, so the API key is not sent there.
    async fn fetch_errors(&self, op: &mut BulkOp) {
        let Some(link) = op.error_summary_url.clone() else {
            op.errors_unavailable = Some("FAILED without errors or errorSummaryUrl".into());
            return;
        };
        let url = match Url::parse(&link) {
            Ok(url) => url,
            Err(e) => {
                op.errors_unavailable = Some(format!("errorSummaryUrl {link:?}: {e}"));
                return;
            }
        };
        // Plain http only when the API itself is (a stand-in, a test).
        let allowed = url.scheme() == "https"
            || (url.scheme() == "http" && self.settings.api_url.scheme() == "http");
        if !allowed {
            op.errors_unavailable = Some(format!("errorSummaryUrl {link:?}: not an https URL"));
            return;
        }
        let result = match self
            .send("bulk_op_errors", Method::GET, url, None, false)
            .await
        {
            Ok(answer) if answer.status == StatusCode::OK => answer
                .success_body(self.settings.max_body)
                .and_then(|body| answers::parse_error_summary(answer.code(), body)),
            Ok(answer) => Err(answer.unexpected("200 OK")),
            Err(e) => Err(e),
        };
        match result {
            Ok(errors) => op.errors = errors,
            Err(e) => op.errors_unavailable = Some(e.to_string()),
        }
    }
}
