//! The AT protocol engine: framing ([`codec`]), response grammar
//! ([`parse`]), dialects ([`dialect`]), typed commands ([`command`]), the
//! async [`Client`] and typed errors ([`AtError`]); the `+CCLK` time text
//! ([`cclk`]), shared by host and simulator.
//!
//! Data flow: bytes → [`codec::LineCodec`] (lines, prompts/ANSI removed,
//! overlong lines as items) → [`parse::classify`] (final │ echo │
//! notification │ information) → [`client::Exchange`] → [`Client`] →
//! [`Command::parse`].
pub mod cclk;
pub mod client;
pub mod codec;
pub mod command;
pub mod dialect;
pub mod error;
pub mod parse;

pub use client::{Client, ClientOptions, CommandTimeouts, Notification, Response};
pub use command::{Command, Deadline};
pub use dialect::{Dialect, DialectChoice};
pub use error::{AtError, cme_meaning};

/// Fuzz body for framing + grammar (the `at_framing` cargo-fuzz target and a
/// proptest call it): decode `data` in chunks whose sizes come from the data
/// itself, classify every frame for a few commands in every dialect, and run
/// the typed response parsers on every line. Must never panic.
pub fn fuzz_framing(data: &[u8]) {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(seed % 31) + 1;
    let max_line = usize::from(seed) * 8 + 16;
    let mut codec = codec::LineCodec::new(max_line);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in body.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            frames.push(frame);
        }
    }
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push(frame);
    }
    const COMMANDS: &[&str] = &["AT+CGSN=1", "AT%CMNG=1", "AT+CEREG?", "AT%KEYGEN=1,2,0"];
    for &dialect in dialect::ALL {
        for cmd in COMMANDS {
            let mut exchange = client::Exchange::new(cmd, dialect);
            for frame in &frames {
                if let client::Step::Done(result) = exchange.feed(frame.clone()) {
                    if let Ok(response) = result {
                        crate::modem::fuzz_parsers(&response);
                    }
                    exchange = client::Exchange::new(cmd, dialect);
                }
            }
        }
    }
    for frame in &frames {
        if let codec::Frame::Line(line) = frame {
            let _ = parse::final_result(line);
            if let Some((_, rest)) = parse::split_prefix(line) {
                let _ = parse::params(rest);
            }
            crate::modem::fuzz_parsers(&Response {
                lines: vec![line.clone()],
            });
        }
    }
}
