//! A fixture of N simulated boards, each on its own pty as `DIR/ttySIM<i>`.
//!
//! A slot keeps its board (modem state, credential store, counters) across
//! unplug/replug, like a board pulled and put back; `swap` puts a different
//! board in the slot. Faults belong to the slot: a swapped-in board shows
//! the same faults.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::JoinHandle;

use super::fault::{Fault, FaultSet};
use super::identity::{ModemIdentity, derived_rng};
use super::modem::Modem;
use super::pty::{PtyPort, remove_link_if_points_to};
use super::server::{SessionConfig, SessionEnd, run_session};
use super::timing::{CommandCost, CostLog};
use super::{SimOptions, SimStats};
use crate::trust::TrustStore;

struct Slot {
    index: usize,
    link: PathBuf,
    faults: FaultSet,
    modem: Arc<Mutex<Modem>>,
    /// The running session and the pty slave path its link points at.
    session: Mutex<Option<(JoinHandle<()>, PathBuf)>>,
    /// Modelled cost of every answered command, when the options ask for it.
    costs: Option<CostLog>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// N simulated modems on pseudo-terminals.
pub struct Fleet {
    seed: u64,
    options: SimOptions,
    slots: Vec<Slot>,
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
        let mut fleet = Fleet {
            seed,
            options,
            slots: Vec::with_capacity(count),
        };
        for index in 0..count {
            let faults = FaultSet::for_index(&fleet.options.faults, index);
            let identity = ModemIdentity::from_seed(seed, u32::try_from(index).unwrap_or(u32::MAX));
            fleet.slots.push(Slot {
                index,
                link: dir.join(format!("ttySIM{index}")),
                modem: Arc::new(Mutex::new(Modem::new(identity, faults.clone()))),
                faults,
                session: Mutex::new(None),
                costs: fleet.options.cost_log.then(CostLog::default),
            });
        }
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
        self.slots
            .get(i)
            .unwrap_or_else(|| panic!("no simulated modem {i}: the fleet has {}", self.slots.len()))
    }

    /// The identity of the board now in slot `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn identity(&self, i: usize) -> Arc<ModemIdentity> {
        lock(&self.slot(i).modem).identity_arc()
    }

    /// Counters of the board now in slot `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn stats(&self, i: usize) -> SimStats {
        lock(&self.slot(i).modem).stats().clone()
    }

    /// Take the modelled cost of every command slot `i` answered since the
    /// last call, oldest first. Empty unless [`SimOptions::cost_log`] is set.
    pub fn take_costs(&self, i: usize) -> Vec<CommandCost> {
        self.slots
            .get(i)
            .and_then(|s| s.costs.as_ref())
            .map(|log| std::mem::take(&mut *lock(log)))
            .unwrap_or_default()
    }

    /// True while board `i` has a running session (its link exists).
    pub fn is_plugged(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| {
            lock(&s.session)
                .as_ref()
                .is_some_and(|(task, _)| !task.is_finished())
        })
    }

    /// The trust file of the fleet ([`TrustStore`] format, sorted by UUID)
    /// with each board's identity key. Boards with the untrusted-key fault
    /// are left out (and sign with another key anyway).
    pub fn trust_csv(&self) -> String {
        let mut store = TrustStore::new();
        for slot in &self.slots {
            if slot.faults.has(&Fault::UntrustedKey) {
                continue;
            }
            let identity = lock(&slot.modem).identity_arc();
            if let Err(e) = store.insert(identity.device_uuid, &identity.public_key_spki_der()) {
                tracing::warn!(modem = slot.index, error = %e, "identity key left out of the trust file");
            }
        }
        store.to_csv()
    }

    /// Power the board in slot `i` on: boot the modem, make a pty pair and
    /// its link, start the session.
    fn plug(&self, i: usize) -> io::Result<()> {
        let Some(slot) = self.slots.get(i) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated modem {i}"),
            ));
        };
        let sessions = {
            let mut modem = lock(&slot.modem);
            modem.boot();
            modem.stats().sessions
        };
        let port = PtyPort::open(&slot.link)?;
        let slave = port.slave_path().to_owned();
        let cfg = SessionConfig {
            dialect: self.options.dialect,
            latency: self.options.latency,
            baud: self.options.baud,
            faults: slot.faults.clone(),
            rng: derived_rng(
                self.seed,
                u32::try_from(slot.index).unwrap_or(u32::MAX),
                &format!("session {sessions}"),
            ),
            costs: slot.costs.clone(),
        };
        let modem = Arc::clone(&slot.modem);
        let index = slot.index;
        let task = tokio::spawn(async move {
            match run_session(port, modem, cfg).await {
                SessionEnd::Unplugged => {
                    tracing::info!(modem = index, "simulated board pulled by fault")
                }
                SessionEnd::Io(e) => {
                    tracing::warn!(modem = index, error = %e, "simulated board pty failed")
                }
            }
        });
        *lock(&slot.session) = Some((task, slave));
        Ok(())
    }

    /// Pull board `i`: close its pty (a host reading it gets EOF/EIO) and
    /// remove its link. No-op if it is not plugged.
    pub async fn unplug(&self, i: usize) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let session = lock(&slot.session).take();
        if let Some((task, slave)) = session {
            task.abort();
            let _ = task.await;
            remove_link_if_points_to(&slot.link, &slave);
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
        self.unplug(i).await;
        let Some(slot) = self.slots.get(i) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated modem {i}"),
            ));
        };
        *lock(&slot.modem) = Modem::new(identity, slot.faults.clone());
        self.plug(i)
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
        for slot in &self.slots {
            if let Some((task, slave)) = lock(&slot.session).take() {
                task.abort();
                remove_link_if_points_to(&slot.link, &slave);
            }
        }
    }
}
