//! The nRF91 AT protocol, from bytes on a serial port to typed modem
//! commands.
//!
//! - [`at`]: framing ([`at::codec`]), response grammar ([`at::parse`]),
//!   the pure exchange and the async [`at::Client`], typed errors and the
//!   CME table; the `+CCLK` time text ([`at::cclk`]).
//! - [`modem`]: the nRF91 commands (identify, attest, keygen, JWT, credential
//!   storage, clock) with their response types.
//! - [`serial`]: opening a real port or a pseudo-terminal with the station's
//!   settings.
//! - [`imei`]: what makes 15 digits an IMEI (the Luhn check digit).
//!
//! No configuration, no command line, no records: whoever drives a modem
//! (the station, the `at` command, the simulator's tests) builds on this.

pub mod at;
pub mod imei;
pub mod modem;
pub mod serial;

// Device text is escaped before it reaches a log, and %KEYGEN's key
// formats are the tokens' own: both are nrf91-token's, under the names the
// modules use for them.
use nrf91_token as token;
use nrf91_token::text;

/// The sec_tag of nRF Cloud's own credentials: the one the modem's `%JWT`
/// signs with when no sec_tag is given, and a station plan's default.
pub const DEFAULT_SEC_TAG: u32 = 16_842_753;
