//! Is a board there, and is it still the same one? The checks a port runs
//! before a run (presence, which also finds the dialect once per board) and
//! after it (departure), over any modem link.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::at::{AtError, Dialect, DialectChoice};
use crate::modem::{Imei, Modem};
use crate::plan::{Arrival, Link};

/// Sleep for `interval` unless `stop` is cancelled first.
pub async fn pause(stop: &CancellationToken, interval: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(interval) => {}
    }
}

/// Is a board answering? Finds the dialect when it is automatic, trying
/// first the one the port's last board spoke (`known`), if any.
pub async fn probe<T: Link>(
    modem: &mut Modem<T>,
    dialect: DialectChoice,
    known: Option<Dialect>,
) -> Result<Arrival, AtError> {
    match dialect.fixed() {
        None => {
            let dialect = modem.client().detect_dialect_trying_first(known).await?;
            Ok(Arrival {
                dialect,
                detected: true,
            })
        }
        Some(fixed) => {
            modem.client().set_dialect(fixed);
            modem
                .client()
                .command_with_timeout("AT", Duration::from_secs(1))
                .await?;
            Ok(Arrival {
                dialect: fixed,
                detected: false,
            })
        }
    }
}

/// Poll until a board answers. `None` when the link went away or `stop`
/// was cancelled (no record is made for an empty fixture).
pub async fn wait_for_board<T: Link>(
    modem: &mut Modem<T>,
    dialect: DialectChoice,
    known: Option<Dialect>,
    stop: &CancellationToken,
    interval: Duration,
) -> Option<Arrival> {
    while !stop.is_cancelled() {
        match probe(modem, dialect, known).await {
            Ok(arrival) => return Some(arrival),
            Err(AtError::Disconnected { .. } | AtError::Io(_)) => return None,
            Err(err) => debug!(%err, "no board answering"),
        }
        pause(stop, interval).await;
    }
    None
}

/// How a board's time on the port ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    Unplugged,
    OtherBoard,
    Shutdown,
}

/// Departure polls that fail this many times in a row find the dialect
/// again: the board may have been reset into another application, or the
/// dialect was taken from answers meant for someone else.
pub const REDETECT_AFTER: u32 = 3;

/// How often a board left in its fixture is asked who it is: soon after
/// its run (boards are usually pulled at once), then half as often at each
/// answer from the same board, down to once every `cap`. A poll that finds
/// nobody answering goes back to `first`: a board is being swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeparturePolls {
    pub first: Duration,
    pub cap: Duration,
}

impl DeparturePolls {
    /// The interval after `current` when the same board answered.
    fn backed_off(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.cap).max(self.first)
    }
}

/// After a run: watch the link and poll who answers until the board is
/// unplugged, another board answers, or `stop` is cancelled. A board left
/// in its fixture is never provisioned twice. `still_there` says whether
/// the port itself still exists (a USB port's device node goes away with
/// the board). Between polls the link is read, so a port that ends (a USB
/// unplug, a closed pty) is noticed at once, not at the next poll; the
/// polls are for a plain UART, where a pulled board only falls silent.
pub async fn wait_for_departure<T: Link>(
    modem: &mut Modem<T>,
    provisioned: Option<&str>,
    stop: &CancellationToken,
    polls: DeparturePolls,
    still_there: impl Fn() -> bool,
) -> Departure {
    let mut failures = 0;
    let mut interval = polls.first;
    loop {
        let listened = tokio::select! {
            _ = stop.cancelled() => return Departure::Shutdown,
            listened = modem.client().listen(interval) => listened,
        };
        if let Err(AtError::Disconnected { .. } | AtError::Io(_)) = listened {
            return Departure::Unplugged;
        }
        if !still_there() {
            return Departure::Unplugged;
        }
        match answering_imei(modem).await {
            // A board whose IMEI we never learned counts as the same board
            // while it answers: better idle than loop on it.
            Ok(Some(now)) if provisioned.is_some_and(|p| p != now) => {
                return Departure::OtherBoard;
            }
            Ok(_) => {
                failures = 0;
                interval = polls.backed_off(interval);
            }
            Err(AtError::Disconnected { .. } | AtError::Io(_)) => return Departure::Unplugged,
            // Silent or refusing: powered off in its fixture, being swapped,
            // or spoken to in the wrong dialect.
            Err(err) => {
                debug!(%err, "board silent");
                interval = polls.first;
                failures += 1;
                if failures >= REDETECT_AFTER {
                    failures = 0;
                    match modem.client().detect_dialect().await {
                        Ok(dialect) => debug!(?dialect, "dialect found again"),
                        Err(AtError::Disconnected { .. } | AtError::Io(_)) => {
                            return Departure::Unplugged;
                        }
                        Err(err) => debug!(%err, "no dialect answers"),
                    }
                }
            }
        }
    }
}

/// The IMEI of whatever board answers: the IMEI is on every nRF91 (the
/// device UUID command is not), so it tells one board from the next. An
/// answer without one is a board that answers, but not with an IMEI.
async fn answering_imei<T: Link>(modem: &mut Modem<T>) -> Result<Option<String>, AtError> {
    match modem.send(&Imei::Bare).await {
        Ok(field) => Ok(crate::imei::check(&field).is_ok().then_some(field)),
        Err(AtError::Malformed { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
