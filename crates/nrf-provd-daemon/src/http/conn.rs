//! The accept loop, and what keeps a client from costing the station: a
//! bounded number of connections in all and per client, counted as they
//! are accepted (before any request is read, so before any token is
//! checked), small socket and write buffers, a deadline for the request
//! head (idle connections included), and a write deadline — a client that
//! stops reading is dropped, never waited on.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

use super::metrics::Metrics;
use super::origin::Arrival;

/// Connections served at once; more are closed as soon as accepted. With
/// [`MAX_CONNECTIONS_PER_CLIENT`] and the buffers below, this is what
/// bounds the server's memory (each connection holds at most one part of
/// an answer, see `api`).
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one client (an IPv4 address, an IPv6 /64) may hold at once;
/// more are closed as soon as accepted, so one client, with or without a
/// token, cannot take the page away from the others.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
/// A write that cannot make progress for this long drops the client.
pub const WRITE_STALL_LIMIT: Duration = Duration::from_secs(10);
/// How long a client has to read an API answer ([`AnswerDeadline`]): the
/// largest page of whole records (~7.5 MB) at 125 KB/s.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(60);
/// A client must send its request head within this, also on a connection
/// kept alive between requests: an idle connection is closed after it.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Kernel send buffer of each client socket (inherited from the listener):
/// a stuck client holds at most this much kernel memory, and its stall is
/// noticed after this much, not after megabytes.
const SOCKET_SEND_BUFFER: u32 = 64 * 1024;
/// hyper's own read and write buffers per connection (hyper's minimum is 8 KiB).
const HTTP_BUFFER: usize = 32 * 1024;

/// Bind `addr` for the server.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SOCKET_SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serve `router` on `listener` until `stop`; then every connection is
/// closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let limits = Limits::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors or similar: let the moment pass.
                debug!(%err, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = limits.admit(peer.ip()) else {
            metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let arrival = Arrival {
            local: stream
                .local_addr()
                .map_or(IpAddr::from(Ipv6Addr::UNSPECIFIED), |a| a.ip()),
            peer: peer.ip(),
        };
        let router = router.clone();
        let metrics = Arc::clone(&metrics);
        connections.spawn(async move {
            let _slot = slot;
            let answer = AnswerDeadline::default();
            let io = TokioIo::new(WriteDeadline::new(
                stream,
                WRITE_STALL_LIMIT,
                answer.clone(),
            ));
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                // The answer before this one has been written.
                answer.clear();
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(arrival);
                request.extensions_mut().insert(answer.clone());
                router.clone().oneshot(request)
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(HTTP_BUFFER)
                .serve_connection(io, service)
                .await;
            if let Err(err) = served {
                if is_stall(&err) {
                    metrics.client_dropped();
                    debug!(%peer, "http client stopped reading, or read too slowly; dropped");
                } else {
                    debug!(%peer, %err, "http connection ended");
                }
            }
        });
    }
    connections.shutdown().await;
}

/// How many connections are open, in all and per client.
struct Limits {
    total: usize,
    per_client: usize,
    open: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One admitted connection; counted until dropped.
struct Slot {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Limits {
    fn new(total: usize, per_client: usize) -> Arc<Limits> {
        Arc::new(Limits {
            total,
            per_client,
            open: Mutex::new(Tally::default()),
        })
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `peer`, unless the server or that
    /// client is at its limit.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let client = client_of(peer);
        let mut tally = self.tally();
        let held = tally.by_client.get(&client).copied().unwrap_or(0);
        if tally.total >= self.total || held >= self.per_client {
            return None;
        }
        tally.total += 1;
        tally.by_client.insert(client, held + 1);
        Some(Slot {
            limits: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut tally = self.limits.tally();
        tally.total = tally.total.saturating_sub(1);
        if let Some(held) = tally.by_client.get_mut(&self.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                tally.by_client.remove(&self.client);
            }
        }
    }
}

/// Who a peer address counts as: an IPv4 address (also when it comes
/// mapped into IPv6), or an IPv6 /64, the least a site is given.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) if !v6.is_loopback() => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        other => other,
    }
}

/// Whether a connection ended because its client stopped reading.
fn is_stall(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return io.kind() == io::ErrorKind::TimedOut;
        }
        source = e.source();
    }
    false
}

/// The time by which the answer being written must be out, if it has one:
/// set by a handler for its answer (it finds this among the request's
/// extensions), cleared when the next request comes on the connection. A
/// client that reads, but too slowly to finish in time, is dropped too.
#[derive(Debug, Clone, Default)]
pub struct AnswerDeadline(Arc<Mutex<Option<Instant>>>);

impl AnswerDeadline {
    /// The answer must be out within `limit` from now.
    pub fn within(&self, limit: Duration) {
        *self.lock() = Some(Instant::now() + limit);
    }

    fn clear(&self) {
        *self.lock() = None;
    }

    fn get(&self) -> Option<Instant> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A TCP stream whose writes fail with `TimedOut` once they have made no
/// progress for `limit` (the client stopped reading), or once the answer's
/// deadline has passed (it reads too slowly).
pub struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    answer: AnswerDeadline,
    /// When writes last stopped making progress.
    stalled_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    pub fn new(inner: TcpStream, limit: Duration, answer: AnswerDeadline) -> WriteDeadline {
        WriteDeadline {
            inner,
            limit,
            answer,
            stalled_since: None,
            timer: None,
        }
    }

    /// Pending writes start the stall clock; progress stops it. The
    /// answer's deadline holds either way.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let answer_due = self.answer.get();
        if answer_due.is_some_and(|due| Instant::now() >= due) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client read its answer too slowly",
            )));
        }
        match poll {
            Poll::Ready(result) => {
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let stall_due = *self.stalled_since.get_or_insert_with(Instant::now) + self.limit;
                let due = answer_due.map_or(stall_due, |answer| answer.min(stall_due));
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn each_client_and_the_server_have_their_limits() {
        let limits = Limits::new(5, 2);
        let ip = |text: &str| text.parse::<IpAddr>().expect("ip");
        let a: Vec<Slot> = (0..2)
            .filter_map(|_| limits.admit(ip("192.0.2.1")))
            .collect();
        assert_eq!(a.len(), 2);
        assert!(
            limits.admit(ip("192.0.2.1")).is_none(),
            "a third from one client"
        );
        assert!(
            limits.admit(ip("::ffff:192.0.2.1")).is_none(),
            "the same client over IPv6"
        );
        let b1 = limits.admit(ip("2001:db8::1")).expect("another client");
        let b2 = limits.admit(ip("2001:db8::2")).expect("the same /64");
        assert!(
            limits.admit(ip("2001:db8::3")).is_none(),
            "the /64 is one client"
        );
        let c1 = limits
            .admit(ip("198.51.100.1"))
            .expect("a fifth connection");
        assert!(
            limits.admit(ip("198.51.100.2")).is_none(),
            "the server is full"
        );
        drop(b1);
        let c2 = limits.admit(ip("198.51.100.2")).expect("a slot came free");
        drop((a, b2, c1, c2));
        assert_eq!(limits.tally().total, 0);
        assert!(limits.tally().by_client.is_empty());
    }

    #[tokio::test]
    async fn a_peer_that_never_reads_fails_the_write_after_the_limit() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpSocket::new_v4()?;
        peer.set_recv_buffer_size(4096)?;
        let _peer = peer.connect(listener.local_addr()?).await?;
        let (stream, _) = listener.accept().await?;
        let mut stream = WriteDeadline::new(
            stream,
            Duration::from_millis(200),
            AnswerDeadline::default(),
        );
        let chunk = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(err) = stream.write_all(&chunk).await {
                break err;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "writes to a peer that never reads kept succeeding"
            );
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        Ok(())
    }

    #[tokio::test]
    async fn a_peer_that_reads_too_slowly_fails_the_write_at_the_answers_deadline() -> io::Result<()>
    {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpSocket::new_v4()?;
        peer.set_recv_buffer_size(4096)?;
        let mut peer = peer.connect(listener.local_addr()?).await?;
        let (stream, _) = listener.accept().await?;
        // It reads all the time, a little: never a stall.
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reading = Arc::clone(&read);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = peer.read(&mut buf).await {
                reading.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let answer = AnswerDeadline::default();
        let mut stream = WriteDeadline::new(stream, Duration::from_secs(60), answer.clone());
        answer.within(Duration::from_millis(300));
        let chunk = vec![0u8; 64 * 1024];
        let started = tokio::time::Instant::now();
        let err = loop {
            if let Err(err) = stream.write_all(&chunk).await {
                break err;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "writes to a slow reader kept succeeding past the deadline"
            );
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(300));
        reader.abort();
        assert!(
            read.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the peer was reading"
        );
        Ok(())
    }
}
