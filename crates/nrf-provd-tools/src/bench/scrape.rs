//! What a line's monitoring does to the station while the bench measures
//! it (`bench --scrape`): one page left open on the live feed, and every
//! second the page, `/metrics` and `/api/v1/ports` fetched, as an operator's
//! screen and a Prometheus server would. `reqwest` on a single-threaded
//! runtime on a thread of its own, whose CPU time is subtracted from the
//! station's; and the one read of `/metrics` the bench's claim column
//! comes from ([`histogram_quantile`]).

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::header::AUTHORIZATION;
use tokio_util::sync::CancellationToken;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client for the station's own server: plain HTTP on loopback (no
/// proxy), a new connection for every request as a scraper without
/// keep-alive makes (the costlier case for the server).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    // reqwest's rustls needs a provider even for plain HTTP: ring, the
    // project's one crypto stack (no certificate is ever checked here).
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    let builder = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(10));
    match tls {
        Ok(tls) => builder.tls_backend_preconfigured(tls).build(),
        Err(_) => builder.build(),
    }
}

/// `GET path` with the bearer token when given; the whole body, within 30 s.
pub async fn get(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<Response, reqwest::Error> {
    let mut request = client
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.text().await?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The `q` quantile (0..=1) of the histogram `family` in an OpenMetrics
/// text, in its unit: linear within the bucket it falls in, as
/// Prometheus' `histogram_quantile` reads it (the last finite bound when it
/// falls beyond). `None` without the family or any observation.
pub fn histogram_quantile(exposition: &str, family: &str, q: f64) -> Option<f64> {
    let prefix = format!("{family}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.split_once("} ")?;
            let bound = labels
                .split(',')
                .find_map(|label| label.trim().strip_prefix("le=\""))?
                .strip_suffix('"')?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            let count: f64 = value.split_whitespace().next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in &buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let share = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// What the scraper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Scraped {
    pub requests: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Bytes read from the live feed.
    pub feed_bytes: u64,
    /// CPU time of the scraper's own thread (subtracted from the station's).
    pub cpu: Duration,
}

/// The page, `/metrics` and `/api/v1/ports` every `every`, and one live feed.
pub struct Scraper {
    stop: CancellationToken,
    thread: JoinHandle<Scraped>,
}

const PATHS: [&str; 4] = ["/", "/station.js", "/metrics", "/api/v1/ports"];

impl Scraper {
    pub fn start(addr: SocketAddr, every: Duration) -> Scraper {
        let stop = CancellationToken::new();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let mut scraped = match (runtime, client()) {
                    (Ok(runtime), Ok(client)) => runtime.block_on(async {
                        let ((requests, failed, bytes), feed_bytes) = tokio::join!(
                            poll(&client, addr, every, &stop),
                            feed(&client, addr, &stop)
                        );
                        Scraped {
                            requests,
                            failed,
                            bytes,
                            feed_bytes,
                            cpu: Duration::ZERO,
                        }
                    }),
                    _ => Scraped {
                        failed: 1,
                        ..Scraped::default()
                    },
                };
                scraped.cpu = crate::process::thread_cpu();
                scraped
            })
        };
        Scraper { stop, thread }
    }

    pub fn finish(self) -> Scraped {
        self.stop.cancel();
        self.thread.join().unwrap_or_default()
    }
}

/// Every `every`: each of [`PATHS`]; (requests, failed, bytes).
async fn poll(
    client: &reqwest::Client,
    addr: SocketAddr,
    every: Duration,
    stop: &CancellationToken,
) -> (u64, u64, u64) {
    let (mut requests, mut failed, mut bytes) = (0, 0, 0);
    let mut next = Instant::now();
    while !stop.is_cancelled() {
        for path in PATHS {
            requests += 1;
            match get(client, addr, path, None).await {
                Ok(r) if r.status == 200 => bytes += r.body.len() as u64,
                _ => failed += 1,
            }
        }
        next += every;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
    (requests, failed, bytes)
}

/// One page's live feed, opened again whenever it ends; the bytes read.
async fn feed(client: &reqwest::Client, addr: SocketAddr, stop: &CancellationToken) -> u64 {
    let url = format!("http://{addr}/events");
    let mut read = 0u64;
    while !stop.is_cancelled() {
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            opened = client.get(&url).send() => opened,
        };
        if let Ok(mut response) = opened {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return read,
                    chunk = response.chunk() => match chunk {
                        Ok(Some(bytes)) => read += bytes.len() as u64,
                        Ok(None) | Err(_) => break,
                    },
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "\
# TYPE nrf_provd_ledger_claim_seconds histogram
nrf_provd_ledger_claim_seconds_sum 0.5
nrf_provd_ledger_claim_seconds_count 100
nrf_provd_ledger_claim_seconds_bucket{le=\"0.001\"} 50
nrf_provd_ledger_claim_seconds_bucket{le=\"0.002\"} 90
nrf_provd_ledger_claim_seconds_bucket{le=\"0.004\"} 100
nrf_provd_ledger_claim_seconds_bucket{le=\"+Inf\"} 100
# EOF
";

    #[test]
    fn quantiles_are_read_linearly_within_their_bucket() {
        let q = |q| histogram_quantile(EXPOSITION, "nrf_provd_ledger_claim_seconds", q);
        let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-12);
        // Half of them in the first bucket: its bound.
        assert!(close(q(0.5), 0.001), "{:?}", q(0.5));
        // 70th of 100: half-way through (0.001, 0.002].
        assert!(close(q(0.7), 0.0015), "{:?}", q(0.7));
        // 99th: nine tenths through (0.002, 0.004].
        assert!(close(q(0.99), 0.0038), "{:?}", q(0.99));
        // Beyond the last finite bound: that bound.
        let beyond = EXPOSITION.replace("+Inf\"} 100", "+Inf\"} 200");
        assert_eq!(
            histogram_quantile(&beyond, "nrf_provd_ledger_claim_seconds", 0.99),
            Some(0.004)
        );
        assert_eq!(histogram_quantile(EXPOSITION, "other", 0.99), None);
        let empty = "nrf_provd_ledger_claim_seconds_bucket{le=\"+Inf\"} 0\n";
        assert_eq!(
            histogram_quantile(empty, "nrf_provd_ledger_claim_seconds", 0.99),
            None
        );
    }
}
