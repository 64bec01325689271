//! One session ("power-on to unplug") of one simulated board over its link,
//! any byte stream (a pty in [`super::fleet`], `tokio::io::duplex` in
//! [`super::memory`]): bytes in through the dialect front end, commands to
//! the modem, replies out with the modelled delay, baud pacing and the I/O
//! faults.
//!
//! Every timer and timestamp comes from tokio's clock, so under a paused
//! clock (`#[tokio::test(start_paused = true)]`) a realistic board answers
//! in virtual time: a 1.2 s `%KEYGEN` takes 1.2 s of tokio time. Only the
//! cost log's wall-clock stamps (`SystemTime`) are real time. A board on a
//! real link ([`SessionConfig::precise`]) waits for its reply deadlines on
//! a timerfd instead, to the tens of microseconds rather than tokio's
//! whole milliseconds ([`super::precise`]).
//!
//! I/O faults (see [`super::fault`]):
//! - `urc-storm`: after the host has first written, a notification every
//!   20-200 ms while idle, and inside replies (before the first line and
//!   between lines, so also between an information line and the result).
//!   The shell prints notifications only after `at events_enable`, and
//!   never inside a reply.
//! - `garbage`: a burst of 1-12 noise bytes ending in CRLF at power-on,
//!   now and then while idle (once the host has written) and before some
//!   replies.
//! - `stall@CMD`: CMD is not executed and never answered; the session goes
//!   on reading, so later commands are answered.
//! - `unplug@CMD`: CMD is executed, half of its reply is written, then the
//!   session ends with [`SessionEnd::Unplugged`]; the owner of the link
//!   pulls the board (a pty first lets the host read the half, see
//!   [`super::pty::PtyPort::drain`]).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::dialect::{FrontEvent, Frontend};
use super::fault::{Fault, FaultSet};
use super::modem::{Modem, line_fault_key};
use super::precise::PreciseTimer;
use super::timing::{CommandCost, CostLog, command_delay, pacing_chunk, wire_time};
use super::{Latency, SimDialect};

/// Notifications a real nRF91 sends unasked (formats from the AT reference).
const URCS: &[&str] = &[
    "+CEREG: 2,\"76C1\",\"0102DA04\",7",
    "+CEREG: 1,\"76C1\",\"0102DA04\",7,,,\"11100000\",\"11100000\"",
    "%CESQ: 54,2,22,3",
    "%XSIM: 1",
    "%MDMEV: SEARCH STATUS 1",
    "%MDMEV: SEARCH STATUS 2",
    "+CSCON: 1",
    "+CSCON: 0",
];
/// Bytes line noise is made of (no CR/LF inside a burst).
const NOISE: &[u8] = &[
    0x00, 0xff, 0xfe, 0x80, 0x1b, 0x7f, 0xaa, 0x55, b'~', b'#', 0xc3,
];

/// Everything a session needs besides the port and the modem.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub dialect: SimDialect,
    pub latency: Latency,
    pub baud: Option<u32>,
    pub faults: FaultSet,
    /// Randomness for fault timing; seeded so a run can be repeated.
    pub rng: StdRng,
    /// Where to log each answered command's modelled cost, if anywhere.
    pub costs: Option<CostLog>,
    /// Wait for reply deadlines on a timerfd (real time only: a pty), not on
    /// tokio's millisecond timers (which a paused clock drives).
    pub precise: bool,
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The unplug fault pulled the board.
    Unplugged,
    /// The host closed its end of the link (end of stream).
    HostClosed,
    /// The link failed.
    Io(io::Error),
}

/// What the session loop stopped for (errors aside).
enum Stop {
    Unplugged,
    HostClosed,
}

struct Session<S> {
    port: S,
    modem: Arc<Mutex<Modem>>,
    front: Frontend,
    cfg: SessionConfig,
    host_seen: bool,
    /// With [`SessionConfig::precise`], made at the first wait (a board
    /// that never waits holds no descriptor for it); else tokio's timers.
    timer: Option<PreciseTimer>,
}

/// Run a session over `port` until the unplug fault fires, the host closes
/// its end or the link fails. Dropping the future (task abort) ends it too.
/// Pass `&mut port` to keep the link for what follows an unplug.
pub async fn run_session<S>(port: S, modem: Arc<Mutex<Modem>>, cfg: SessionConfig) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut session = Session {
        port,
        modem,
        front: Frontend::new(cfg.dialect),
        cfg,
        host_seen: false,
        timer: None,
    };
    match session.run().await {
        Ok(Stop::Unplugged) => SessionEnd::Unplugged,
        Ok(Stop::HostClosed) => SessionEnd::HostClosed,
        Err(e) => SessionEnd::Io(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn has(&self, fault: &Fault) -> bool {
        self.cfg.faults.has(fault)
    }

    fn lock_modem(&self) -> std::sync::MutexGuard<'_, Modem> {
        // A panic while holding the lock cannot leave the modem half-updated
        // in a way that matters to a simulator; keep serving.
        self.modem
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add_busy(&self, busy: Duration) {
        if !busy.is_zero() {
            self.lock_modem().add_busy(busy);
        }
    }

    async fn run(&mut self) -> io::Result<Stop> {
        if self.has(&Fault::Garbage) {
            let noise = self.noise();
            self.write(&noise).await?;
        }
        let boot = self.front.boot_output();
        self.write(&boot).await?;
        let mut buf = vec![0u8; 4096];
        let mut next_spontaneous = Instant::now() + self.spontaneous_gap();
        loop {
            let spontaneous =
                self.host_seen && (self.has(&Fault::UrcStorm) || self.has(&Fault::Garbage));
            let read = tokio::select! {
                read = self.port.read(&mut buf) => Some(read),
                () = tokio::time::sleep_until(next_spontaneous), if spontaneous => None,
            };
            let Some(read) = read else {
                self.spontaneous().await?;
                next_spontaneous = Instant::now() + self.spontaneous_gap();
                continue;
            };
            let n = read?;
            if n == 0 {
                return Ok(Stop::HostClosed);
            }
            let input = buf.get(..n).unwrap_or_default();
            if !input.is_empty() && !self.host_seen {
                self.host_seen = true;
                next_spontaneous = Instant::now() + self.spontaneous_gap();
            }
            self.add_busy(wire_time(self.cfg.baud, n));
            for event in self.front.feed(input) {
                match event {
                    FrontEvent::Output(bytes) => self.write(&bytes).await?,
                    FrontEvent::Command(line) => {
                        if self.command(&line).await? {
                            return Ok(Stop::Unplugged);
                        }
                    }
                }
            }
        }
    }

    fn spontaneous_gap(&mut self) -> Duration {
        Duration::from_millis(self.cfg.rng.gen_range(20..=200))
    }

    async fn spontaneous(&mut self) -> io::Result<()> {
        let want_urc = self.has(&Fault::UrcStorm);
        let want_noise = self.has(&Fault::Garbage);
        let bytes = match (want_urc, want_noise) {
            (true, true) if self.cfg.rng.gen_bool(0.5) => self.noise(),
            (_, false) | (true, true) => match self.urc() {
                Some(urc) => urc,
                None => return Ok(()),
            },
            (false, true) => self.noise(),
        };
        self.write(&bytes).await
    }

    fn urc(&mut self) -> Option<Vec<u8>> {
        let urc = URCS
            .choose(&mut self.cfg.rng)
            .copied()
            .unwrap_or("%XSIM: 1");
        self.front.render_urc(urc)
    }

    fn noise(&mut self) -> Vec<u8> {
        let len = self.cfg.rng.gen_range(1..=12);
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| NOISE.choose(&mut self.cfg.rng).copied().unwrap_or(0xff))
            .collect();
        bytes.extend_from_slice(b"\r\n");
        bytes
    }

    /// Handle one command line; returns true when the board was pulled.
    async fn command(&mut self, line: &str) -> io::Result<bool> {
        let received = SystemTime::now();
        let clock = Instant::now();
        let key = line_fault_key(line);
        if key.as_deref().is_some_and(|k| self.cfg.faults.stalls(k)) {
            return Ok(false);
        }
        if let Some(bytes) = key.as_deref().and_then(|k| self.cfg.faults.flood_for(k)) {
            let first = key
                .as_deref()
                .is_some_and(|k| self.lock_modem().first_time(&format!("flood@{k}")));
            if first {
                self.flood(key.as_deref().unwrap_or("X"), bytes).await?;
            }
        }
        let reply = self.lock_modem().handle(line, clock.into_std());
        let delay = command_delay(self.cfg.latency, reply.kind);
        let mut pieces = self.front.render_reply(&reply);
        if self.has(&Fault::UrcStorm) && pieces.len() > 1 {
            // Between every two lines with even odds, and at least once
            // between the last information line and the result.
            let last_gap = pieces.len() - 1;
            for gap in (1..pieces.len()).rev() {
                if gap == last_gap || self.cfg.rng.gen_bool(0.5) {
                    if let Some(urc) = self.urc() {
                        pieces.insert(gap, urc);
                    }
                }
            }
        }
        if self.has(&Fault::UrcStorm) && self.cfg.rng.gen_bool(0.3) {
            if let Some(urc) = self.urc() {
                pieces.insert(0, urc);
            }
        }
        if self.has(&Fault::Garbage) && self.cfg.rng.gen_bool(0.3) {
            let noise = self.noise();
            pieces.insert(0, noise);
        }
        self.add_busy(delay);
        // The delay counts from the command, so the simulator's own work
        // (signing a token) is inside it, as on a real modem.
        let ready = clock + delay;
        if !delay.is_zero() {
            self.sleep_until(ready).await?;
        }
        let output = pieces.concat();
        let unplug = key.as_deref().is_some_and(|k| self.cfg.faults.unplugs(k));
        let written = if unplug {
            output.len().div_ceil(2)
        } else {
            output.len()
        };
        self.write_from(output.get(..written).unwrap_or_default(), ready)
            .await?;
        self.log_cost(CommandCost {
            received,
            delay,
            // The line plus its terminator (CR LF).
            wire_in: wire_time(self.cfg.baud, line.len() + 2),
            wire_out: wire_time(self.cfg.baud, written),
            answered: SystemTime::now(),
        });
        Ok(unplug)
    }

    /// `bytes` of 1 KiB `%<CMD>: "AAA…"` lines, as fast as the link takes them.
    async fn flood(&mut self, command: &str, bytes: u64) -> io::Result<()> {
        let mut line = format!("%{command}: \"");
        line.push_str(&"A".repeat(1024 - line.len() - 3));
        line.push_str("\"\r\n");
        let chunk = line.repeat(64);
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            self.write(chunk.as_bytes().get(..n).unwrap_or_default())
                .await?;
            left -= n as u64;
        }
        Ok(())
    }

    fn log_cost(&self, cost: CommandCost) {
        if let Some(log) = &self.cfg.costs {
            log.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(cost);
        }
    }

    /// Wait for a reply deadline.
    async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        if self.cfg.precise && self.timer.is_none() {
            match PreciseTimer::new() {
                Ok(timer) => self.timer = Some(timer),
                Err(e) => {
                    tracing::warn!(error = %e, "no timerfd: replies paced to tokio's milliseconds");
                    self.cfg.precise = false;
                }
            }
        }
        match &mut self.timer {
            Some(timer) => timer.sleep_until(deadline).await,
            None => {
                tokio::time::sleep_until(deadline).await;
                Ok(())
            }
        }
    }

    /// Write for the host, paced at the configured baud rate.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_from(bytes, Instant::now()).await
    }

    /// Write paced as if the first bit left at `start`: deadlines are
    /// absolute, so a late wake-up is caught up rather than added.
    async fn write_from(&mut self, bytes: &[u8], start: Instant) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let Some(baud) = self.cfg.baud.filter(|b| *b > 0) else {
            self.port.write_all(bytes).await?;
            return self.port.flush().await;
        };
        self.add_busy(wire_time(Some(baud), bytes.len()));
        let mut sent = 0;
        for chunk in bytes.chunks(pacing_chunk(baud)) {
            sent += chunk.len();
            // A UART hands over a byte when its stop bit is done: release
            // each chunk when its wire time is over, so the host never sees
            // the end of a reply before a real wire would deliver it.
            self.sleep_until(start + wire_time(Some(baud), sent))
                .await?;
            self.port.write_all(chunk).await?;
            self.port.flush().await?;
        }
        Ok(())
    }
}
