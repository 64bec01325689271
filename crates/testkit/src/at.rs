//! Shared helpers for the AT engine tests: a sans-IO script runner and a
//! scripted peer for byte streams (duplex or pty master).

use bytes::BytesMut;
use nrf91_at::at::client::{Exchange, Step};
use nrf91_at::at::codec::{Frame, LineCodec};
use nrf91_at::at::{AtError, Dialect, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;

/// What one command produced: notifications seen while it ran, and its
/// outcome rendered with `{:?}` (AtError has no PartialEq) or `None` if the
/// stream ended first.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub notifications: Vec<String>,
    pub result: Option<Result<Response, String>>,
}

/// Decode `chunks` in order and run `commands` one after another over the
/// resulting frames, like the client does but without I/O.
pub fn run_script(
    commands: &[&str],
    dialect: Dialect,
    max_line: usize,
    chunks: &[&[u8]],
) -> Vec<Outcome> {
    let mut codec = LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut frames: Vec<Frame> = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(f) = codec.decode(&mut buf).expect("decoder never errors") {
            frames.push(f);
        }
    }
    while let Some(f) = codec.decode_eof(&mut buf).expect("decoder never errors") {
        frames.push(f);
    }
    let mut frames = frames.into_iter();
    let mut out = Vec::new();
    for cmd in commands {
        let mut ex = Exchange::new(cmd, dialect);
        let mut outcome = Outcome {
            notifications: vec![],
            result: None,
        };
        for frame in frames.by_ref() {
            match ex.feed(frame) {
                Step::Pending => {}
                Step::Notify(n) => outcome.notifications.push(n),
                Step::Done(r) => {
                    outcome.result = Some(r.map_err(|e: AtError| format!("{e:?}")));
                    break;
                }
            }
        }
        out.push(outcome);
    }
    out
}

pub fn lines(ls: &[&str]) -> Response {
    Response {
        lines: ls.iter().map(|s| s.to_string()).collect(),
    }
}

/// One exchange of a scripted peer: wait for `expect` (a command without its
/// line ending; leading line terminators are skipped), then write `reply`.
pub struct PeerStep {
    pub expect: Vec<u8>,
    pub reply: Vec<u8>,
}

pub fn step(expect: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) -> PeerStep {
    PeerStep {
        expect: expect.as_ref().to_vec(),
        reply: reply.as_ref().to_vec(),
    }
}

/// Read one command line of exactly `expect.len()` bytes plus CRLF.
pub async fn read_command<R: AsyncRead + Unpin>(io: &mut R, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.len() < len + 2 {
        if io.read(&mut byte).await.expect("peer read") == 0 {
            panic!(
                "client closed the stream; got {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        if got.is_empty() && matches!(byte[0], b'\r' | b'\n' | 0) {
            continue; // settle()'s lone line ending, or a previous CRLF tail
        }
        got.push(byte[0]);
    }
    got
}

/// Play `steps`, asserting each command, then return the stream (still open).
pub fn script_peer<T>(mut io: T, steps: Vec<PeerStep>) -> JoinHandle<T>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        for s in steps {
            let got = read_command(&mut io, s.expect.len()).await;
            let mut want = s.expect.clone();
            want.extend_from_slice(b"\r\n");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "command sent by the client"
            );
            io.write_all(&s.reply).await.expect("peer write");
            io.flush().await.expect("peer flush");
        }
        io
    })
}
