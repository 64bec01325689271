//! `kind = "webhook"`: an HTTP POST of the run's JSON, signed and keyed so
//! that a receiver can check who sent it and apply it once:
//! `Idempotency-Key: <run uid>` (`<run uid>:amended` when a line's conflict amended it) and
//! `X-Nrf-Provd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<body>">`
//! (the scheme payment providers use, so receivers reuse their check).
//! 2xx acknowledges; 4xx other than 408 and 429 is a dead letter with the
//! answer kept; anything else (5xx, 408, 429, no answer) is retried,
//! after `Retry-After` when the receiver gives one. TLS is rustls with the
//! system's trust store (as for nRF Cloud); plain `http://` only to this
//! machine.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::{StatusCode, Url, header};
use secure_file::Holds;
use sha2::Sha256;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{Delivery, RunJson, Sink, SinkError};
use crate::cloud::is_loopback_host;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Nrf-Provd-Signature";
/// A secret file longer than this is not a secret but a mistake.
const MAX_SECRET: u64 = 4096;
/// How much of a refusing answer is kept with the dead letter.
const MAX_ANSWER: usize = 1024;

/// A webhook URL as configured: https, or http to this machine only (the
/// signature and the records would cross the network in clear); no
/// credentials (they would show in the sink's name and logs).
pub fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    let loopback = url.host_str().is_some_and(is_loopback_host);
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "{text:?}: plain http:// to another machine would send the runs in clear; use https:// \
                 (http:// is for this machine only: 127.0.0.0/8, ::1, localhost)"
            ));
        }
        other => return Err(format!("{text:?}: scheme {other}:// is not http(s)://")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?} must not carry credentials (the signature authenticates the station)"
        ));
    }
    Ok(url)
}

/// Why a webhook's secret file is not used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: cannot read the webhook secret: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Unsafe(#[from] secure_file::UnsafeFile),
    #[error("{}: the webhook secret is empty or longer than {MAX_SECRET} bytes", path.display())]
    Size { path: std::path::PathBuf },
}

/// The webhook secret from `path`: refused when others may read it (or
/// its directories let others replace it); trailing whitespace dropped.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    let file = secure_file::open(path, "webhook secret", Holds::Secret)
        .map_err(|refusal| refusal.into_error(io))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_SECRET + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let len = bytes.trim_ascii_end().len();
    if len == 0 || bytes.len() as u64 > MAX_SECRET {
        return Err(SecretError::Size {
            path: path.to_owned(),
        });
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct WebhookSink {
    name: String,
    url: Url,
    secret: Zeroizing<Vec<u8>>,
    http: reqwest::Client,
}

impl WebhookSink {
    pub fn new(url: &str, secret_file: &Path, timeout: Duration) -> Result<WebhookSink, SinkError> {
        let name = format!("webhook {url}");
        let invalid = |detail: String| SinkError::Invalid {
            sink: name.clone(),
            detail,
        };
        let url = check_url(url).map_err(&invalid)?;
        let secret = read_secret(secret_file).map_err(|e| invalid(e.to_string()))?;
        let tls = crate::cloud::tls_config().map_err(|e| invalid(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would send the run somewhere not configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        Ok(WebhookSink {
            name,
            url,
            secret,
            http,
        })
    }
}

/// A receiver's `Retry-After`: seconds, or an HTTP date.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let text = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    Duration::try_from(at - OffsetDateTime::now_utc()).ok()
}

/// What to keep of an answer: its status and the start of its body, on
/// one line.
fn answer_text(status: StatusCode, body: &[u8]) -> String {
    let body = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]);
    let body: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("{status}: {}", body.trim())
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, run: &RunJson) -> Delivery {
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let sent = self
            .http
            .post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", &run.key)
            .header(SIGNATURE_HEADER, signature(&self.secret, t, &run.body))
            .body(run.body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return Delivery::Retry {
                    after: None,
                    error: if e.is_timeout() {
                        "no answer in time".to_string()
                    } else {
                        e.without_url().to_string()
                    },
                };
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        if status.is_success() {
            return Delivery::Ack;
        }
        // The body only matters for what is kept; a receiver that never
        // finishes it is cut off by the client's timeout.
        let body = response.bytes().await.unwrap_or_default();
        let answer = answer_text(status, &body);
        let retryable = status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || !status.is_client_error();
        if retryable {
            Delivery::Retry {
                after,
                error: answer,
            }
        } else {
            Delivery::Dead { answer }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_the_time_a_dot_and_the_body() {
        // Computed independently: Python's hmac.new(b"s3cret",
        // b'1700000000.{"a":1}', hashlib.sha256).hexdigest().
        assert_eq!(
            signature(b"s3cret", 1_700_000_000, b"{\"a\":1}"),
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn plain_http_goes_only_to_this_machine() {
        assert!(check_url("http://127.0.0.1:8080/runs").is_ok());
        assert!(check_url("http://localhost/runs").is_ok());
        assert!(check_url("https://mes.example/runs").is_ok());
        let refused = check_url("http://mes.example/runs").unwrap_err();
        assert!(refused.contains("in clear"), "{refused}");
        assert!(check_url("https://user:pw@mes.example/").is_err());
        assert!(check_url("ftp://mes.example/").is_err());
    }
}
