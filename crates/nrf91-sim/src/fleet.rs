//! A fixture of N simulated boards, each on its own pty as `DIR/ttySIM<i>`.
//!
//! Each board is a [`Slot`] (see [`super::slot`]: the board persists across
//! unplug/replug, `swap` puts a different one in, faults belong to the
//! slot); this module adds the pseudo-terminal and its link.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::identity::ModemIdentity;
use super::pty::{PtyPort, remove_link_if_points_to};
use super::slot::{self, Slot, lock};
use super::timing::CommandCost;
use super::{SimOptions, SimStats};

/// How long a board pulled by the unplug fault waits for the host to read
/// the half reply before the pty closes (closing discards unread bytes).
const DRAIN_BEFORE_PULL: Duration = Duration::from_secs(2);

struct PtySlot {
    slot: Slot,
    link: PathBuf,
    /// The pty slave the link points at while plugged.
    slave: Mutex<Option<PathBuf>>,
}

/// N simulated modems on pseudo-terminals.
pub struct Fleet {
    slots: Vec<PtySlot>,
}

impl Fleet {
    /// Start `count` boards made from `seed`, linked as `dir/ttySIM0..`.
    /// Creates `dir` if needed; replaces stale `ttySIM*` symlinks.
    pub async fn start(
        dir: &Path,
        count: usize,
        seed: u64,
        options: SimOptions,
    ) -> io::Result<Fleet> {
        std::fs::create_dir_all(dir)?;
        let options = Arc::new(options);
        let fleet = Fleet {
            slots: (0..count)
                .map(|index| PtySlot {
                    slot: Slot::new(seed, index, Arc::clone(&options), true),
                    link: dir.join(format!("ttySIM{index}")),
                    slave: Mutex::new(None),
                })
                .collect(),
        };
        for index in 0..count {
            fleet.plug(index)?;
        }
        Ok(fleet)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The host-facing path of board `i` (it exists only while plugged).
    pub fn link(&self, i: usize) -> PathBuf {
        self.slots
            .get(i)
            .map_or_else(|| PathBuf::from(format!("ttySIM{i}")), |s| s.link.clone())
    }

    fn slot(&self, i: usize) -> &Slot {
        &self
            .slots
            .get(i)
            .unwrap_or_else(|| panic!("no simulated modem {i}: the fleet has {}", self.slots.len()))
            .slot
    }

    /// The identity of the board now in slot `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn identity(&self, i: usize) -> Arc<ModemIdentity> {
        self.slot(i).identity()
    }

    /// Counters of the board now in slot `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn stats(&self, i: usize) -> SimStats {
        self.slot(i).stats()
    }

    /// Take the modelled cost of every command slot `i` answered since the
    /// last call, oldest first. Empty unless [`SimOptions::cost_log`] is set.
    pub fn take_costs(&self, i: usize) -> Vec<CommandCost> {
        self.slots
            .get(i)
            .map(|s| s.slot.take_costs())
            .unwrap_or_default()
    }

    /// True while board `i` has a running session (its link exists).
    pub fn is_plugged(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.slot.is_plugged())
    }

    /// The trust file of the fleet ([`crate::trust::TrustStore`] format,
    /// sorted by UUID) with each board's identity key. Boards with the
    /// untrusted-key fault are left out (and sign with another key anyway).
    pub fn trust_csv(&self) -> String {
        slot::trust_csv(self.slots.iter().map(|s| &s.slot))
    }

    /// Power the board in slot `i` on: a pty pair and its link, then boot
    /// and a session.
    fn plug(&self, i: usize) -> io::Result<()> {
        let Some(pty_slot) = self.slots.get(i) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated modem {i}"),
            ));
        };
        let port = PtyPort::open(&pty_slot.link)?;
        *lock(&pty_slot.slave) = Some(port.slave_path().to_owned());
        pty_slot.slot.plug(port, |port| async move {
            // Let the host read the half before the pull discards it.
            port.drain(DRAIN_BEFORE_PULL).await;
        });
        Ok(())
    }

    /// Pull board `i`: close its pty (a host reading it gets EOF/EIO) and
    /// remove its link. No-op if it is not plugged.
    pub async fn unplug(&self, i: usize) {
        let Some(pty_slot) = self.slots.get(i) else {
            return;
        };
        pty_slot.slot.unplug().await;
        // The port removes its link when dropped; this covers a session
        // that ended before (the link is only removed if still ours).
        if let Some(slave) = lock(&pty_slot.slave).take() {
            remove_link_if_points_to(&pty_slot.link, &slave);
        }
    }

    /// Pull board `i` (if plugged) and plug it back: a new pty pair and link,
    /// the same board. The modem boots: functional mode 0, `AT+CMEE` off,
    /// clock unset; credentials, generated keys and counters persist.
    pub async fn replug(&self, i: usize) -> io::Result<()> {
        self.unplug(i).await;
        self.plug(i)
    }

    /// Put a different board in slot `i` (pull, swap, plug): fresh modem
    /// state and counters, the slot's faults.
    pub async fn swap(&self, i: usize, identity: ModemIdentity) -> io::Result<()> {
        self.replace(i, identity).await?;
        self.plug(i)
    }

    /// Take board `i` out and put a different, unplugged board in its slot
    /// (fresh modem state and counters, the slot's faults): `plug` it when
    /// the station trusts it.
    pub async fn replace(&self, i: usize, identity: ModemIdentity) -> io::Result<()> {
        self.unplug(i).await;
        let Some(pty_slot) = self.slots.get(i) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated modem {i}"),
            ));
        };
        pty_slot.slot.swap(identity);
        Ok(())
    }

    /// Stop every board and remove their links.
    pub async fn shutdown(self) {
        for i in 0..self.slots.len() {
            self.unplug(i).await;
        }
    }
}

impl Drop for Fleet {
    /// Best effort when a fleet is dropped without `shutdown` (a failing
    /// test): stop the sessions and remove the links now.
    fn drop(&mut self) {
        for pty_slot in &self.slots {
            pty_slot.slot.abort();
            if let Some(slave) = lock(&pty_slot.slave).take() {
                remove_link_if_points_to(&pty_slot.link, &slave);
            }
        }
    }
}
