//! One fixture slot: a board (modem state, counters, cost log) and the
//! session of its current power-on, over any byte stream. [`super::Fleet`]
//! gives slots pseudo-terminals, [`super::memory::Board`] an in-memory duplex.
//!
//! A slot keeps its board across unplug/replug, like a board pulled and put
//! back; `swap` puts a different board in the slot. Faults belong to the
//! slot: a swapped-in board shows the same faults.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::fault::{Fault, FaultSet};
use super::identity::{ModemIdentity, derived_rng};
use super::modem::Modem;
use super::server::{SessionConfig, SessionEnd, run_session};
use super::timing::{CommandCost, CostLog};
use super::{SimOptions, SimStats};
use crate::token::cose::Signing;
use crate::trust::TrustStore;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a simulated board
    // half-updated in a way that matters; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One simulated board in its slot.
pub(crate) struct Slot {
    index: usize,
    seed: u64,
    options: Arc<SimOptions>,
    faults: FaultSet,
    modem: Arc<Mutex<Modem>>,
    /// The running session, while plugged.
    session: Mutex<Option<JoinHandle<()>>>,
    /// Modelled cost of every answered command, when the options ask for it.
    costs: Option<CostLog>,
    /// Sessions pace replies on a timerfd (a link in real time, a pty).
    precise: bool,
}

impl Slot {
    /// Board `index` of a fleet made from `seed`, not yet plugged. With
    /// `precise`, its replies are paced to the tens of microseconds on a
    /// timerfd: only for links in real time (see [`super::precise`]).
    pub fn new(seed: u64, index: usize, options: Arc<SimOptions>, precise: bool) -> Slot {
        let faults = FaultSet::for_index(&options.faults, index);
        let identity = ModemIdentity::from_seed(seed, u32::try_from(index).unwrap_or(u32::MAX))
            .with_firmware(options.firmware.as_deref());
        Slot {
            index,
            seed,
            modem: Arc::new(Mutex::new(signing(
                Modem::new(identity, faults.clone()),
                precise,
            ))),
            faults,
            session: Mutex::new(None),
            costs: options.cost_log.then(CostLog::default),
            options,
            precise,
        }
    }

    pub fn identity(&self) -> Arc<ModemIdentity> {
        lock(&self.modem).identity_arc()
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.modem).stats().clone()
    }

    /// See [`super::Fleet::take_costs`].
    pub fn take_costs(&self) -> Vec<CommandCost> {
        self.costs
            .as_ref()
            .map(|log| std::mem::take(&mut *lock(log)))
            .unwrap_or_default()
    }

    /// True while a session runs.
    pub fn is_plugged(&self) -> bool {
        lock(&self.session)
            .as_ref()
            .is_some_and(|task| !task.is_finished())
    }

    /// Power the board on over `link` (the board's end): boot the modem and
    /// run a session on a task. When the unplug fault ends the session,
    /// `pulled` gets the link before it is dropped (a pty lets the host
    /// read the half reply first). Must run inside a Tokio runtime.
    pub fn plug<S, F, Fut>(&self, link: S, pulled: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnOnce(S) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let sessions = {
            let mut modem = lock(&self.modem);
            modem.boot();
            modem.stats().sessions
        };
        let cfg = SessionConfig {
            dialect: self.options.dialect,
            latency: self.options.latency,
            baud: self.options.baud,
            faults: self.faults.clone(),
            rng: derived_rng(
                self.seed,
                u32::try_from(self.index).unwrap_or(u32::MAX),
                &format!("session {sessions}"),
            ),
            costs: self.costs.clone(),
            precise: self.precise,
        };
        let modem = Arc::clone(&self.modem);
        let index = self.index;
        let task = tokio::spawn(async move {
            let mut link = link;
            match run_session(&mut link, modem, cfg).await {
                SessionEnd::Unplugged => {
                    pulled(link).await;
                    tracing::info!(modem = index, "simulated board pulled by fault");
                }
                SessionEnd::HostClosed => {
                    tracing::info!(modem = index, "host closed the simulated board's link");
                }
                SessionEnd::Io(e) => {
                    tracing::warn!(modem = index, error = %e, "simulated board's link failed");
                }
            }
        });
        let old = lock(&self.session).replace(task);
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Pull the board: end its session, which drops the board's end of the
    /// link (the host reads what is buffered, then end of stream). No-op
    /// when not plugged.
    pub async fn unplug(&self) {
        let session = lock(&self.session).take();
        if let Some(task) = session {
            task.abort();
            // Cancelled, or already over: either way the link is dropped.
            let _ = task.await;
        }
    }

    /// End the session without waiting (for `Drop`).
    pub fn abort(&self) {
        if let Some(task) = lock(&self.session).take() {
            task.abort();
        }
    }

    /// Put a different board in the slot: fresh modem state and counters,
    /// the slot's faults. Call while unplugged.
    pub fn swap(&self, identity: ModemIdentity) {
        *lock(&self.modem) = signing(Modem::new(identity, self.faults.clone()), self.precise);
    }
}

/// A board in real time signs as cheaply as it can: its signing CPU is
/// taken from the station a bench measures beside it. One on a paused
/// clock (tests) signs deterministically, so its records repeat.
fn signing(modem: Modem, real_time: bool) -> Modem {
    modem.signing(match real_time {
        true => Signing::Randomised,
        false => Signing::Deterministic,
    })
}

/// The trust file ([`TrustStore`] format, sorted by UUID) with the identity
/// key of each slot's board. Boards with the untrusted-key fault are left
/// out (and sign with another key anyway).
pub(crate) fn trust_csv<'a>(slots: impl IntoIterator<Item = &'a Slot>) -> String {
    let mut store = TrustStore::new();
    for slot in slots {
        if slot.faults.has(&Fault::UntrustedKey) {
            continue;
        }
        let identity = slot.identity();
        if let Err(e) = store.insert(identity.device_uuid, &identity.public_key_spki_der()) {
            tracing::warn!(modem = slot.index, error = %e, "identity key left out of the trust file");
        }
    }
    store.to_csv()
}
