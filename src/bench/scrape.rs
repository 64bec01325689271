//! What a line's monitoring does to the station while the bench measures
//! it (`bench --scrape`): one page left open on the live feed, and every
//! second the page, `/metrics` and `/api/v1/ports` fetched, as an operator's
//! screen and a Prometheus server would. Plain blocking HTTP/1.1 on threads
//! of their own, whose CPU time is subtracted from the station's.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

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

/// `GET path` on a fresh connection (`Connection: close`), with the bearer
/// token when given.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write_request(&mut stream, addr, path, token, "close")?;
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader)?;
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw)?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&raw)? } else { raw };
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn write_request(
    stream: &mut TcpStream,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    connection: &str,
) -> io::Result<()> {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: {connection}\r\n\r\n"
    )
}

fn read_head(reader: &mut impl BufRead) -> io::Result<(u16, Vec<(String, String)>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers"));
        }
        let text = line.trim_end();
        if text.is_empty() {
            return Ok((status, headers));
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
}

/// A chunked body's bytes.
fn dechunk(mut raw: &[u8]) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked body");
    let mut body = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&raw[..end]).map_err(|_| bad())?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad())?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or_else(bad)?;
        body.extend_from_slice(chunk);
        raw = raw.get(size + 2..).ok_or_else(bad)?;
    }
}

/// An open `GET /events` feed, read line by line.
pub struct Feed {
    reader: BufReader<TcpStream>,
    pub status: u16,
}

impl Feed {
    pub fn open(addr: SocketAddr, token: Option<&str>) -> io::Result<Feed> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        write_request(&mut stream, addr, "/events", token, "keep-alive")?;
        let mut reader = BufReader::new(stream);
        let (status, _) = read_head(&mut reader)?;
        Ok(Feed { reader, status })
    }

    /// Wait at most `timeout` for the next bytes of the feed (chunk sizes
    /// and SSE lines alike); `Ok(None)` on a timeout, an error or EOF when
    /// the server closed it.
    pub fn next_line(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the feed",
            )),
            Ok(_) => Ok(Some(line)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// What the scraper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Scraped {
    pub requests: u64,
    pub failed: u64,
    pub bytes: u64,
    /// Bytes read from the live feed.
    pub feed_bytes: u64,
    /// CPU time of the scraper's own threads (subtracted from the station's).
    pub cpu: Duration,
}

/// The page, `/metrics` and `/api/v1/ports` every `every`, and one live feed.
pub struct Scraper {
    stop: Arc<AtomicBool>,
    poller: JoinHandle<(u64, u64, u64, Duration)>,
    feed: JoinHandle<(u64, Duration)>,
}

const PATHS: [&str; 4] = ["/", "/station.js", "/metrics", "/api/v1/ports"];

impl Scraper {
    pub fn start(addr: SocketAddr, every: Duration) -> Scraper {
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut requests, mut failed, mut bytes) = (0, 0, 0);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    for path in PATHS {
                        requests += 1;
                        match get(addr, path, None) {
                            Ok(r) if r.status == 200 => bytes += r.body.len() as u64,
                            _ => failed += 1,
                        }
                    }
                    next += every;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                (requests, failed, bytes, thread_cpu())
            })
        };
        let feed = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut read = 0u64;
                let mut feed = Feed::open(addr, None).ok();
                while !stop.load(Ordering::Relaxed) {
                    let Some(open) = feed.as_mut() else {
                        std::thread::sleep(Duration::from_millis(200));
                        feed = Feed::open(addr, None).ok();
                        continue;
                    };
                    match open.next_line(Duration::from_millis(200)) {
                        Ok(Some(line)) => read += line.len() as u64,
                        Ok(None) => {}
                        Err(_) => feed = None,
                    }
                }
                (read, thread_cpu())
            })
        };
        Scraper { stop, poller, feed }
    }

    pub fn finish(self) -> Scraped {
        self.stop.store(true, Ordering::Relaxed);
        let (requests, failed, bytes, poll_cpu) =
            self.poller.join().unwrap_or((0, 0, 0, Duration::ZERO));
        let (feed_bytes, feed_cpu) = self.feed.join().unwrap_or((0, Duration::ZERO));
        Scraped {
            requests,
            failed,
            bytes,
            feed_bytes,
            cpu: poll_cpu + feed_cpu,
        }
    }
}

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |u| {
        let micros = |t: nix::sys::time::TimeVal| {
            Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
        };
        micros(u.user_time()) + micros(u.system_time())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() -> io::Result<()> {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
        assert_eq!(dechunk(raw)?, b"Wikipedia");
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"10\r\nshort\r\n").is_err());
        Ok(())
    }
}
