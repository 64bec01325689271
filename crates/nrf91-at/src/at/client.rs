//! The AT client: one command in flight, a deadline per command,
//! notifications routed to a channel.
//!
//! [`Exchange`] is the sans-IO core (frames in, outcome out); [`Client`] only
//! adds the port, the clock and the channel around it.
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::Dialect;
use super::codec::{Frame, LineCodec, frame_command};
use super::command::{Command, Deadline};
use super::error::{AtError, cme_code_for_text, cme_meaning};
use super::parse::{
    CommandContext, FinalResult, LineClass, classify, find_imei, is_notification_idle,
};
use crate::serial::LineEnding;

/// Capacity of the notification channel; beyond it notifications are
/// dropped and counted, so a storm can neither block the reader nor grow
/// memory.
pub const NOTIFICATION_CAPACITY: usize = 256;

/// How long the line must stay quiet for [`Client::settle`] to trust it.
const QUIET: Duration = Duration::from_millis(200);
/// The longest [`Client::settle`] waits for quiet: a modem may still be
/// answering a command a killed host sent (key generation takes seconds).
const SETTLE_MAX: Duration = Duration::from_secs(3);

/// The most one response may hold (information lines, in bytes): the
/// largest real answer, a `%CMNG` read of a 4 KiB PEM, is well under it.
/// Past it the command fails `overlong` and the port is settled.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// Per-attempt deadline while detecting the dialect.
const DETECT_ATTEMPT: Duration = Duration::from_millis(500);

/// The deadline of each class of command ([`Deadline`]): the one place
/// these defaults live (the station config's `[timeouts]` fills the same
/// struct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTimeouts {
    /// Any command without a slower class of its own.
    pub command: Duration,
    /// `%ATTESTTOKEN` (the modem signs).
    pub attest: Duration,
    /// `%KEYGEN`: key generation is the slowest command.
    pub keygen: Duration,
    /// `%JWT` (the modem signs).
    pub jwt: Duration,
    /// `%CMNG` (credential writes go to flash).
    pub cmng: Duration,
    /// `+CFUN=` (going offline may wait for a network detach).
    pub cfun: Duration,
}

impl Default for CommandTimeouts {
    fn default() -> Self {
        CommandTimeouts {
            command: Duration::from_secs(5),
            attest: Duration::from_secs(10),
            keygen: Duration::from_secs(60),
            jwt: Duration::from_secs(10),
            cmng: Duration::from_secs(10),
            cfun: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub dialect: Dialect,
    pub line_ending: LineEnding,
    pub timeouts: CommandTimeouts,
    /// Longest accepted line; enough for a `%CMNG` read of a 4 KiB PEM.
    pub max_line: usize,
    /// Most bytes one response may hold (see [`MAX_RESPONSE`]).
    pub max_response: usize,
}

impl CommandTimeouts {
    /// The deadline of a class, never shorter than the general one.
    pub fn of(&self, deadline: Deadline) -> Duration {
        let specific = match deadline {
            Deadline::Command => self.command,
            Deadline::Attest => self.attest,
            Deadline::Keygen => self.keygen,
            Deadline::Jwt => self.jwt,
            Deadline::Cmng => self.cmng,
            Deadline::Cfun => self.cfun,
        };
        specific.max(self.command)
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            dialect: Dialect::RAW,
            line_ending: LineEnding::Crlf,
            timeouts: CommandTimeouts::default(),
            max_line: 16 * 1024,
            max_response: MAX_RESPONSE,
        }
    }
}

/// An unsolicited line, stamped when it was read.
#[derive(Debug, Clone)]
pub struct Notification {
    pub received: SystemTime,
    pub line: String,
}

/// The information lines of a successful command (echo, prompts and
/// notifications removed, the dialect's output translation undone: see
/// [`super::dialect::DialectRules::as_printed`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub lines: Vec<String>,
}

impl Response {
    /// Text after `prefix` (e.g. `"%ATTESTTOKEN:"`; the colon is implied if
    /// missing) on the first line that has it, trimmed.
    pub fn first_with_prefix(&self, prefix: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| after_prefix(l, prefix))
    }

    /// Like [`Self::first_with_prefix`], for every matching line.
    pub fn all_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines
            .iter()
            .filter_map(move |l| after_prefix(l, prefix))
    }

    /// Lines without a `+X:`/`%X:` prefix (IMEI, `AT+CGMR` output).
    pub fn bare_lines(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .map(String::as_str)
            .filter(|l| super::parse::split_prefix(l).is_none())
    }
}

/// `line` minus `prefix` (case-insensitive, colon implied), trimmed.
fn after_prefix<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let name = prefix.strip_suffix(':').unwrap_or(prefix);
    let head = line.get(..name.len())?;
    if !head.eq_ignore_ascii_case(name) {
        return None;
    }
    line.get(name.len()..)?.strip_prefix(':').map(str::trim)
}

/// Result of feeding one frame to an [`Exchange`].
#[derive(Debug)]
pub enum Step {
    Pending,
    Notify(String),
    Done(Result<Response, AtError>),
}

/// Sans-IO assembly of one command's response from decoded frames.
#[derive(Debug, Clone)]
pub struct Exchange {
    ctx: CommandContext,
    lines: Vec<String>,
    overlong: Option<usize>,
    /// Bytes of information lines so far, and the most allowed.
    bytes: usize,
    max_bytes: usize,
}

impl Exchange {
    pub fn new(command: &str, dialect: Dialect) -> Self {
        Self::with_limit(command, dialect, MAX_RESPONSE)
    }

    /// An exchange whose response may hold at most `max_bytes` of lines.
    pub fn with_limit(command: &str, dialect: Dialect, max_bytes: usize) -> Self {
        Exchange {
            ctx: CommandContext::new(command, dialect),
            lines: Vec::new(),
            overlong: None,
            bytes: 0,
            max_bytes,
        }
    }

    pub fn feed(&mut self, frame: Frame) -> Step {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Overlong { length } => {
                self.overlong = Some(self.overlong.unwrap_or(0).max(length));
                return self.count(length);
            }
        };
        match classify(&line, &self.ctx) {
            LineClass::Echo => Step::Pending,
            LineClass::Info => {
                let step = self.count(line.len());
                if matches!(step, Step::Pending) {
                    self.lines.push(self.ctx.dialect().rules().as_printed(line));
                }
                step
            }
            LineClass::Notification => Step::Notify(line),
            LineClass::Final(result) => Step::Done(self.finish(result)),
        }
    }

    /// Count `len` more bytes of response; past the limit the command is
    /// done, failed `overlong`, without waiting for its end (a flood may
    /// never end before the deadline, and must not grow memory until then).
    fn count(&mut self, len: usize) -> Step {
        self.bytes = self.bytes.saturating_add(len);
        if self.bytes > self.max_bytes {
            self.lines = Vec::new();
            return Step::Done(Err(AtError::Overlong {
                command: self.ctx.command().to_string(),
                length: self.bytes,
            }));
        }
        Step::Pending
    }

    fn finish(&mut self, result: FinalResult) -> Result<Response, AtError> {
        let command = self.ctx.command().to_string();
        match result {
            FinalResult::Ok => match self.overlong {
                Some(length) => Err(AtError::Overlong { command, length }),
                None => Ok(Response {
                    lines: std::mem::take(&mut self.lines),
                }),
            },
            FinalResult::Error => Err(AtError::Error { command }),
            FinalResult::Cme(code) => Err(AtError::Cme {
                command,
                code,
                meaning: cme_meaning(code),
            }),
            FinalResult::CmeText(text) => {
                let code = cme_code_for_text(&text).unwrap_or(0);
                tracing::debug!(text = %crate::text::Escaped(&text), "verbose +CME ERROR");
                Err(AtError::Cme {
                    command,
                    code,
                    meaning: if code == 0 {
                        "unknown"
                    } else {
                        cme_meaning(code)
                    },
                })
            }
            FinalResult::Cms(code) => Err(AtError::Cms { command, code }),
            FinalResult::CmsText(text) => {
                tracing::debug!(text = %crate::text::Escaped(&text), "verbose +CMS ERROR");
                Err(AtError::Cms { command, code: 0 })
            }
        }
    }

    /// Information lines received so far (for a timeout report).
    pub fn partial_lines(&self) -> &[String] {
        &self.lines
    }
}

/// Errors that mean the port is gone (USB unplug, closed pty master).
fn io_to_at(e: std::io::Error) -> AtError {
    use nix::libc;
    use std::io::ErrorKind;
    let gone_errno = matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENXIO | libc::ENODEV | libc::EBADF)
    );
    let gone_kind = matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::UnexpectedEof
    );
    if gone_errno || gone_kind {
        AtError::Disconnected {
            detail: e.to_string(),
        }
    } else {
        AtError::Io(e)
    }
}

/// An AT client over any byte stream (serial port, pty, in-memory duplex).
pub struct Client<T> {
    io: Framed<T, LineCodec>,
    options: ClientOptions,
    notifications: mpsc::Sender<Notification>,
    dropped: u64,
    /// Set once the stream ended or failed: every later call fails at once.
    gone: Option<String>,
    /// A deadline cut a write short: the peer holds half a command line.
    torn_write: bool,
    /// The line may hold answers meant for someone else (just opened, or a
    /// command timed out or overflowed): settle before the next command.
    unsettled: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Client<T> {
    pub fn new(io: T, options: ClientOptions) -> (Self, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(NOTIFICATION_CAPACITY);
        let codec = LineCodec::new(options.max_line);
        let client = Client {
            io: Framed::new(io, codec),
            options,
            notifications: tx,
            dropped: 0,
            gone: None,
            torn_write: false,
            unsettled: true,
        };
        (client, rx)
    }

    pub fn dialect(&self) -> Dialect {
        self.options.dialect
    }

    pub fn set_dialect(&mut self, d: Dialect) {
        self.options.dialect = d;
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Notifications dropped because the channel was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.dropped
    }

    /// The underlying stream (e.g. to change port settings).
    pub fn get_mut(&mut self) -> &mut T {
        self.io.get_mut()
    }

    /// Run a typed command: its text, within its class's deadline, its
    /// answer parsed (a parser's refusal is [`AtError::Malformed`]).
    pub async fn send<C: Command + Sync>(&mut self, cmd: &C) -> Result<C::Response, AtError> {
        let timeout = self.options.timeouts.of(C::DEADLINE);
        let response = self.command_with_timeout(&cmd.text(), timeout).await?;
        cmd.parse(&response)
    }

    /// Send the free-text command `cmd` (typed by hand, or a probe) and
    /// wait for its final result until `timeout`, which the caller states
    /// (it also covers writing: a port held by flow control times out too).
    pub async fn command_with_timeout(
        &mut self,
        cmd: &str,
        timeout: Duration,
    ) -> Result<Response, AtError> {
        if self.unsettled {
            self.settle().await?;
        }
        self.drain_pending();
        self.check_alive()?;
        let mut exchange =
            Exchange::with_limit(cmd, self.options.dialect, self.options.max_response);
        let mut bytes = Vec::new();
        if self.torn_write {
            // Terminate the half-written line so the peer rejects it alone.
            bytes.extend_from_slice(self.options.line_ending.bytes());
        }
        bytes.extend(frame_command(
            cmd,
            self.options.dialect,
            self.options.line_ending,
        ));
        tracing::debug!(command = cmd, dialect = ?self.options.dialect, "AT send");
        let deadline = Instant::now() + timeout;
        let outcome = tokio::time::timeout_at(deadline, self.exchange(&mut exchange, &bytes)).await;
        let result = match outcome {
            Ok(result) => result,
            Err(_) => Err(AtError::Timeout {
                command: cmd.to_string(),
                waited: timeout,
                partial_lines: exchange.partial_lines().to_vec(),
            }),
        };
        // Its answer (or the rest of a flood) may still come: it must not
        // be taken for the next command's.
        if matches!(
            result,
            Err(AtError::Timeout { .. } | AtError::Overlong { .. })
        ) {
            self.unsettled = true;
        }
        match &result {
            Ok(r) => tracing::debug!(command = cmd, lines = r.lines.len(), "AT ok"),
            Err(e) => tracing::debug!(command = cmd, error = %e, "AT failed"),
        }
        result
    }

    async fn exchange(&mut self, ex: &mut Exchange, bytes: &[u8]) -> Result<Response, AtError> {
        self.write(bytes).await?;
        loop {
            let frame = self.next_frame().await?;
            match ex.feed(frame) {
                Step::Pending => {}
                Step::Notify(line) => self.notify(line),
                Step::Done(result) => return result,
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), AtError> {
        self.torn_write = true;
        let io = self.io.get_mut();
        let written = async {
            io.write_all(bytes).await?;
            io.flush().await
        }
        .await;
        written.map_err(|e| self.fail(e))?;
        self.torn_write = false;
        Ok(())
    }

    async fn next_frame(&mut self) -> Result<Frame, AtError> {
        match self.io.next().await {
            Some(Ok(frame)) => Ok(frame),
            Some(Err(e)) => Err(self.fail(e)),
            None => Err(self.end_of_stream()),
        }
    }

    fn fail(&mut self, e: std::io::Error) -> AtError {
        let err = io_to_at(e);
        // Framed ends the stream after a read error, so the port is done
        // either way.
        self.gone = Some(err.to_string());
        err
    }

    fn end_of_stream(&mut self) -> AtError {
        let detail = "end of stream (device closed or unplugged)".to_string();
        self.gone = Some(detail.clone());
        AtError::Disconnected { detail }
    }

    fn check_alive(&self) -> Result<(), AtError> {
        match &self.gone {
            Some(detail) => Err(AtError::Disconnected {
                detail: detail.clone(),
            }),
            None => Ok(()),
        }
    }

    fn notify(&mut self, line: String) {
        tracing::debug!(line = %crate::text::Escaped(&line), "notification");
        let n = Notification {
            received: SystemTime::now(),
            line,
        };
        match self.notifications.try_send(n) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.dropped += 1,
            // Nobody listens: nothing to count.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Route lines that arrived while idle, without waiting: prefixed lines
    /// and banners become notifications, anything else (a late answer to a
    /// timed-out command, boot noise) is discarded so it cannot be taken for
    /// the next command's response.
    fn drain_pending(&mut self) {
        if self.gone.is_some() {
            return;
        }
        while let Some(item) = self.io.next().now_or_never() {
            match item {
                Some(Ok(Frame::Line(line))) if is_notification_idle(&line) => self.notify(line),
                Some(Ok(frame)) => tracing::debug!(?frame, "discarding stale input"),
                Some(Err(e)) => {
                    let _ = self.fail(e);
                    return;
                }
                None => {
                    let _ = self.end_of_stream();
                    return;
                }
            }
        }
    }

    /// Read for `duration` with no command in flight, routing notifications
    /// to the channel (e.g. to catch `Ready` after a reset). Other lines are
    /// discarded.
    pub async fn listen(&mut self, duration: Duration) -> Result<(), AtError> {
        self.check_alive()?;
        let deadline = Instant::now() + duration;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => return Ok(()),
                Ok(Ok(Frame::Line(line))) if is_notification_idle(&line) => self.notify(line),
                Ok(Ok(frame)) => tracing::debug!(?frame, "listen: discarding"),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Make the line trustworthy before a command: wait until it is quiet
    /// (answers still on their way, boot noise; at most a few seconds),
    /// write one line ending (ends a command line a killed host left half
    /// written), and wait for quiet again. Notifications still go to the
    /// channel; everything else is discarded. Done by itself when a client
    /// is new and after a command timed out or overflowed.
    pub async fn settle(&mut self) -> Result<(), AtError> {
        self.check_alive()?;
        self.unsettled = false;
        self.until_quiet().await?;
        let ending = self.options.line_ending.bytes();
        match tokio::time::timeout(QUIET, self.write(ending)).await {
            Ok(result) => result?,
            Err(_) => tracing::debug!("settle: line ending not written (flow control?)"),
        }
        self.until_quiet().await?;
        self.io.read_buffer_mut().clear();
        self.io.codec_mut().reset();
        Ok(())
    }

    /// Read until nothing arrives for [`QUIET`], at most [`SETTLE_MAX`].
    async fn until_quiet(&mut self) -> Result<(), AtError> {
        let give_up = Instant::now() + SETTLE_MAX;
        loop {
            let quiet = (Instant::now() + QUIET).min(give_up);
            match tokio::time::timeout_at(quiet, self.next_frame()).await {
                Err(_) => return Ok(()),
                Ok(Ok(Frame::Line(line))) if is_notification_idle(&line) => self.notify(line),
                Ok(Ok(frame)) => tracing::debug!(?frame, "settle: discarding"),
                Ok(Err(e)) => return Err(e),
            }
            if Instant::now() >= give_up {
                tracing::debug!("settle: the line did not go quiet; going on");
                return Ok(());
            }
        }
    }

    /// Find the dialect the way Nordic's tools do: send `AT+CGSN` in each
    /// registered dialect ([`super::dialect::ALL`], shell first), up to 3
    /// rounds, and take the form whose answer has a 15-digit IMEI followed
    /// by `OK`.
    ///
    /// A port can hold answers meant for someone else (a host killed while
    /// the modem worked on its command): an answer that does not fit makes
    /// the client settle before the next try, and a dialect that seems to
    /// work is confirmed with a second, different command (`AT+CGSN=1` must
    /// name the same IMEI) before it is believed. Sets the client's dialect.
    pub async fn detect_dialect(&mut self) -> Result<Dialect, AtError> {
        self.detect_dialect_trying_first(None).await
    }

    /// [`Client::detect_dialect`], trying `first` before the others: the
    /// dialect the last board on this port spoke (a fixture's boards nearly
    /// always run one firmware), which spares a board of that dialect the
    /// other's refusal and the settle after it (400 ms on every raw board).
    pub async fn detect_dialect_trying_first(
        &mut self,
        first: Option<Dialect>,
    ) -> Result<Dialect, AtError> {
        let order: Vec<Dialect> = first
            .into_iter()
            .chain(
                super::dialect::ALL
                    .iter()
                    .copied()
                    .filter(|d| Some(*d) != first),
            )
            .collect();
        let original = self.options.dialect;
        let mut last_error = None;
        for _round in 0..3 {
            for &dialect in &order {
                self.options.dialect = dialect;
                let outcome = match self.command_with_timeout("AT+CGSN", DETECT_ATTEMPT).await {
                    Ok(r) => match r.lines.iter().find_map(|l| find_imei(l)) {
                        Some(imei) => {
                            let imei = imei.to_string();
                            self.confirm(&imei).await
                        }
                        None => Err(AtError::Malformed {
                            line: format!("no IMEI in the answer {:?}", r.lines),
                        }),
                    },
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {
                        tracing::debug!(?dialect, "dialect detected and confirmed");
                        return Ok(dialect);
                    }
                    Err(e @ AtError::Disconnected { .. }) => {
                        self.options.dialect = original;
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::debug!(?dialect, error = %e, "not this dialect (yet)");
                        // A timeout settles by itself before the next try;
                        // an answer that did not fit may have been someone
                        // else's, with ours still on its way.
                        if !matches!(e, AtError::Timeout { .. }) {
                            self.unsettled = true;
                        }
                        last_error = Some(e);
                    }
                }
            }
        }
        self.options.dialect = original;
        Err(last_error.unwrap_or(AtError::Malformed {
            line: "no 15-digit IMEI in any AT+CGSN answer".to_string(),
        }))
    }

    /// `AT+CGSN=1` in the current dialect names `imei`: the answers line up
    /// with the commands.
    async fn confirm(&mut self, imei: &str) -> Result<(), AtError> {
        let r = self
            .command_with_timeout("AT+CGSN=1", DETECT_ATTEMPT)
            .await?;
        let confirmed = r
            .first_with_prefix("+CGSN:")
            .and_then(find_imei)
            .is_some_and(|again| again == imei);
        if confirmed {
            Ok(())
        } else {
            Err(AtError::Malformed {
                line: format!("AT+CGSN=1 did not confirm IMEI {imei}: {:?}", r.lines),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(
        ex: &mut Exchange,
        lines: &[&str],
    ) -> (Vec<String>, Option<Result<Response, AtError>>) {
        let mut notes = Vec::new();
        for l in lines {
            match ex.feed(Frame::Line(l.to_string())) {
                Step::Pending => {}
                Step::Notify(n) => notes.push(n),
                Step::Done(r) => return (notes, Some(r)),
            }
        }
        (notes, None)
    }

    #[test]
    fn urc_between_info_and_ok() {
        let mut ex = Exchange::new("AT%ATTESTTOKEN", Dialect::RAW);
        let (notes, done) = feed_all(&mut ex, &["%ATTESTTOKEN: \"a.b\"", "+CEREG: 5", "OK"]);
        assert_eq!(notes, vec!["+CEREG: 5"]);
        let r = done.unwrap().unwrap();
        assert_eq!(r.first_with_prefix("%ATTESTTOKEN:"), Some("\"a.b\""));
        assert_eq!(r.first_with_prefix("%attesttoken"), Some("\"a.b\""));
        assert_eq!(r.first_with_prefix("%ATTEST"), None);
    }

    #[test]
    fn overlong_fails_the_command_after_its_final() {
        let mut ex = Exchange::new("AT%CMNG=2,1,0", Dialect::RAW);
        assert!(matches!(
            ex.feed(Frame::Overlong { length: 99 }),
            Step::Pending
        ));
        match ex.feed(Frame::Line("OK".into())) {
            Step::Done(Err(AtError::Overlong { length, .. })) => assert_eq!(length, 99),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shell_output_translation_is_undone_in_information_lines() {
        let mut ex = Exchange::new("AT%CMNG=2,1,0", Dialect::SHELL);
        let (_, done) = feed_all(&mut ex, &["%CMNG: 1,0,\"AB\",\"x\r\r\ny\r\n\"", "OK"]);
        assert_eq!(
            done.unwrap().unwrap().lines,
            ["%CMNG: 1,0,\"AB\",\"x\r\ny\n\""]
        );
        let mut ex = Exchange::new("AT%CMNG=2,1,0", Dialect::RAW);
        let (_, done) = feed_all(&mut ex, &["%CMNG: 1,0,\"AB\",\"x\r\ny\"", "OK"]);
        assert_eq!(
            done.unwrap().unwrap().lines,
            ["%CMNG: 1,0,\"AB\",\"x\r\ny\""]
        );
    }

    #[test]
    fn a_class_deadline_is_never_shorter_than_the_general_one() {
        let t = CommandTimeouts {
            command: Duration::from_secs(5),
            attest: Duration::from_secs(11),
            keygen: Duration::from_secs(60),
            jwt: Duration::from_secs(12),
            cmng: Duration::from_secs(13),
            cfun: Duration::from_secs(14),
        };
        let secs = |d| t.of(d).as_secs();
        assert_eq!(secs(Deadline::Keygen), 60);
        assert_eq!(secs(Deadline::Attest), 11);
        assert_eq!(secs(Deadline::Jwt), 12);
        assert_eq!(secs(Deadline::Cmng), 13);
        assert_eq!(secs(Deadline::Cfun), 14);
        assert_eq!(secs(Deadline::Command), 5);
        let slow = CommandTimeouts {
            command: Duration::from_secs(90),
            ..t
        };
        assert_eq!(slow.of(Deadline::Command).as_secs(), 90);
        assert_eq!(slow.of(Deadline::Jwt).as_secs(), 90);
    }
}
