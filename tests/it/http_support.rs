//! The tests' HTTP client for the station's server: reqwest, called from
//! plain (blocking) test code. Each call runs on a thread of its own with
//! a single-threaded runtime, so it works inside an async test as well as
//! outside one.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use reqwest::header::AUTHORIZATION;

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

fn client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .tls_backend_preconfigured(tls)
        .build()
        .expect("HTTP client")
}

fn request(addr: SocketAddr, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
    let request = client().get(format!("http://{addr}{path}"));
    match token {
        Some(token) => request.header(AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

/// Run `work` on a runtime of its own thread and wait for it.
fn on_own_thread<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("the request's thread")
}

/// `GET path` with the bearer token when given: the whole answer.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Response, String> {
    let request = request(addr, path, token).timeout(Duration::from_secs(30));
    on_own_thread(async move {
        let response = request.send().await.map_err(|e| e.to_string())?;
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
        let body = response.text().await.map_err(|e| e.to_string())?;
        Ok(Response {
            status,
            headers,
            body,
        })
    })
}

/// An open `GET /events` feed, read line by line.
pub struct Feed {
    pub status: u16,
    lines: mpsc::Receiver<String>,
}

impl Feed {
    pub fn open(addr: SocketAddr, token: Option<&str>) -> Result<Feed, String> {
        let request = request(addr, "/events", token);
        let (opened, status) = mpsc::channel();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut response = match request.send().await {
                    Ok(response) => response,
                    Err(e) => {
                        let _ = opened.send(Err(e.to_string()));
                        return;
                    }
                };
                if opened.send(Ok(response.status().as_u16())).is_err() {
                    return;
                }
                let mut pending = String::new();
                while let Ok(Some(chunk)) = response.chunk().await {
                    pending.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        if send.send(line).is_err() {
                            return;
                        }
                    }
                }
            });
        });
        let status = status.recv().map_err(|e| e.to_string())??;
        Ok(Feed { status, lines })
    }

    /// Wait at most `timeout` for the next line of the feed; `Ok(None)` on
    /// a timeout, an error when the server closed it.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Option<String>, String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the server closed the feed".into()),
        }
    }
}
