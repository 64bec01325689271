//! A simulated board over an in-memory byte stream (`tokio::io::duplex`),
//! for tests that join the project's AT client (or the whole plan) and a
//! simulated modem without a pseudo-terminal, with tokio's paused clock:
//!
//! ```no_run
//! # async fn example() {
//! use nrf91_at::at::{Client, ClientOptions};
//! use nrf91_at::modem::Imei;
//! use nrf91_sim::{SimOptions, memory::Board};
//!
//! let (board, host) = Board::start(7, 0, SimOptions::default());
//! let (mut client, _notifications) = Client::new(host, ClientOptions::default());
//! let imei = client.send(&Imei::Bare).await;
//! # let _ = (board, imei);
//! # }
//! ```
//!
//! The board is the same as on a pty ([`super::slot`]: state kept across
//! replugs, the same faults, the same trust file); only the link differs.
//! Pulling the board (by [`Board::unplug`] or the unplug fault) drops its end:
//! the host reads what is buffered, then end of stream.

use std::sync::Arc;

use tokio::io::DuplexStream;

use super::identity::ModemIdentity;
use super::slot::{self, Slot};
use super::timing::CommandCost;
use super::{SimOptions, SimStats};

/// Bytes either direction buffers before a writer waits for the reader, as
/// a pty's buffer would make it.
pub const LINK_BUFFER: usize = 64 * 1024;

/// One simulated board on an in-memory link.
pub struct Board {
    slot: Slot,
}

impl Board {
    /// Plug in board `index` of a fleet made from `seed` (the same board a
    /// [`super::Fleet`] with that seed has in slot `index`, with the faults
    /// of `options` that target `index`). Returns the board and the host's
    /// end of its link.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the session runs on a task).
    pub fn start(seed: u64, index: usize, options: SimOptions) -> (Board, DuplexStream) {
        let board = Board {
            // In memory: tokio's timers, which a paused clock drives.
            slot: Slot::new(seed, index, Arc::new(options), false),
        };
        let host = board.plug();
        (board, host)
    }

    fn plug(&self) -> DuplexStream {
        let (host, link) = tokio::io::duplex(LINK_BUFFER);
        // Dropping the board's end is the pull: nothing to wait for.
        self.slot.plug(link, |link| async move { drop(link) });
        host
    }

    /// The board's factory identity.
    pub fn identity(&self) -> Arc<ModemIdentity> {
        self.slot.identity()
    }

    /// The board's counters (kept across replugs).
    pub fn stats(&self) -> SimStats {
        self.slot.stats()
    }

    /// Take the modelled cost of every command answered since the last
    /// call, oldest first. Empty unless [`SimOptions::cost_log`] is set.
    pub fn take_costs(&self) -> Vec<CommandCost> {
        self.slot.take_costs()
    }

    /// The trust file with this board's identity key, in the format
    /// [`super::Fleet::trust_csv`] writes (empty of keys under the
    /// untrusted-key fault).
    pub fn trust_csv(&self) -> String {
        slot::trust_csv([&self.slot])
    }

    /// True while the board's session runs: not pulled, and the host has
    /// not closed its end.
    pub fn is_plugged(&self) -> bool {
        self.slot.is_plugged()
    }

    /// Pull the board: the host's end reads what is buffered, then end of
    /// stream; its writes fail. No-op when not plugged.
    pub async fn unplug(&self) {
        self.slot.unplug().await;
    }

    /// Pull the board (if plugged) and plug it back on a new link: the same
    /// board, booted (functional mode 0, `AT+CMEE` off, clock unset;
    /// credentials, generated keys and counters persist).
    pub async fn replug(&self) -> DuplexStream {
        self.slot.unplug().await;
        self.plug()
    }

    /// Put a different board in the slot (pull, swap, plug): fresh modem
    /// state and counters, the same faults. Returns the new link.
    pub async fn swap(&self, identity: ModemIdentity) -> DuplexStream {
        self.slot.unplug().await;
        self.slot.swap(identity);
        self.plug()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.slot.abort();
    }
}
