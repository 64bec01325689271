//! A simulated nRF91 modem that speaks AT over a pseudo-terminal, or over
//! any byte stream (an in-memory duplex for tests with a paused clock).
//!
//! Layers, from pure to I/O:
//! - [`syntax`]: AT command line syntax (name, `?`, `=?`, parameters).
//! - [`fault`]: the faults a board can show and their `--fault` grammar,
//!   among them the hostile board (`substitute=KIND@CMD`: genuine tokens of
//!   another kind under a token command's prefix).
//! - [`modem`]: modem state and command handling, `line -> Reply`, no I/O.
//!   Tokens are signed through `nrf91_token::encode` / `nrf91_token::cose`
//!   so the simulator and the verifier agree on the signing input.
//! - [`dialect`]: what the UART peer application adds (raw AT host, Serial LTE
//!   Modem, Zephyr shell): line assembly, echo, prompt, colours. No I/O.
//! - [`timing`]: the realistic latency table and baud-rate pacing.
//! - [`server`]: one session (one "power-on") of one modem over any
//!   `AsyncRead + AsyncWrite` link, including the I/O faults (notification
//!   storms, garbage, stall, unplug); timers on tokio's clock.
//! - `slot`: one board in its fixture slot (state across replugs, the
//!   running session, the trust file), whatever the link.
//! - [`pty`]: pseudo-terminal pairs exposed as `DIR/ttySIM<i>` symlinks.
//! - [`fleet`]: N modems on ptys, unplug/replug/swap, the trust file,
//!   statistics.
//! - [`memory`]: one modem on `tokio::io::duplex`, the same board without a
//!   pty.
//!
//! Behaviour follows `reference/nrf91.md`; where the reference is silent the
//! choice is documented next to the code (search for "Unknown on real").

pub mod control;
pub mod dialect;
pub mod fault;
pub mod fleet;
pub mod identity;
pub mod memory;
pub mod modem;
mod precise;
pub mod pty;
pub mod server;
mod slot;
pub mod syntax;
pub mod timing;

use std::time::Duration;

// The layers below, under the names the modules use for them.
use nrf91_at::{at, imei};
use nrf91_token as token;
use nrf91_token::trust;

pub use fault::{Fault, FaultSpec, FaultTargets};
pub use fleet::Fleet;
pub use identity::ModemIdentity;
pub use modem::Modem;
pub use timing::{CommandCost, CostLog};

/// Which application relays AT commands between the UART and the modem core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SimDialect {
    /// AT host library (`at_client` sample): no echo, `\r\n` line endings.
    #[default]
    Raw,
    /// Serial LTE Modem: like raw, and prints `Ready` after every boot.
    Slm,
    /// Zephyr shell with the `at` command: echo, `uart:~$ ` prompt, colours.
    Shell,
}

/// How long the simulated modem takes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Latency {
    /// Answer as fast as possible.
    #[default]
    None,
    /// Per-command delays of a real modem (the README's latency table).
    Realistic,
}

/// Options shared by every modem of a fleet.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    pub dialect: SimDialect,
    pub latency: Latency,
    /// Pace output bytes as a UART at this baud rate would (10 bits a byte).
    pub baud: Option<u32>,
    pub faults: Vec<FaultSpec>,
    /// Log the modelled cost of every answered command per slot (see
    /// [`Fleet::take_costs`]); off by default because the log grows until taken.
    pub cost_log: bool,
    /// Every board's `AT+CGMR` answer (`simulate --firmware`), e.g.
    /// `mfw_nrf9160_1.2.7`; see [`ModemIdentity::with_firmware`].
    pub firmware: Option<String>,
}

/// Counters of one simulated board (one fixture slot), kept across replugs.
///
/// `swap` starts a new board with fresh counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Complete command lines handled (including ones answered with an error).
    pub commands: u64,
    /// Identity attestation tokens issued (normally by `%ATTESTTOKEN`; the
    /// substitute fault counts a token by its kind, not by the command).
    pub attest_tokens: u64,
    /// Key-generation tokens issued.
    pub keygen_tokens: u64,
    /// JWTs issued.
    pub jwts: u64,
    /// Successful `%CMNG=0` writes.
    pub cmng_writes: u64,
    /// Sum of the modelled command delays (zero with [`Latency::None`]) plus
    /// the wire time of every byte in and out at the paced baud rate (zero
    /// without `baud`): the least time a host could have needed.
    pub modelled_busy: Duration,
    /// Power-ons: the first plug-in and every replug.
    pub sessions: u64,
}
