//! systemd: READY/STOPPING, the watchdog, and STATUS — the last as one
//! subscriber of the station's events.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::events::{EventConsumer, StationEvent};
use crate::record::Outcome;
use crate::sink::SinkHealth;

/// What the station has done this shift, counted from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shift {
    /// Ports watched now.
    pub ports: BTreeSet<String>,
    /// Ports with a board in the fixture now.
    pub boards_present: BTreeSet<String>,
    /// Boards that arrived (one per insertion).
    pub boards_seen: u64,
    pub runs_passed: u64,
    pub runs_failed: u64,
    pub runs_interrupted: u64,
    pub runs_collected: u64,
    /// Why the station takes no new board, while it does not.
    pub paused: Option<String>,
    /// Boards waiting for required traceability values: port → why.
    pub waiting: std::collections::BTreeMap<String, String>,
}

impl Shift {
    /// Fold one event in.
    pub fn apply(&mut self, event: &StationEvent) {
        match event {
            StationEvent::PortFound { port } => {
                self.ports.insert(port.clone());
            }
            StationEvent::PortGone { port } => {
                self.ports.remove(port);
                self.boards_present.remove(port);
                self.waiting.remove(port);
            }
            StationEvent::BoardArrived { port, .. } => {
                self.boards_seen += 1;
                self.boards_present.insert(port.clone());
            }
            StationEvent::BoardLeft { port } | StationEvent::StepStarted { port, .. } => {
                if matches!(event, StationEvent::BoardLeft { .. }) {
                    self.boards_present.remove(port);
                }
                self.waiting.remove(port);
            }
            StationEvent::BoardWaiting { port, reason } => {
                self.waiting.insert(port.clone(), reason.clone());
            }
            StationEvent::RunFinished { record, .. } => match record.outcome {
                Outcome::Passed => self.runs_passed += 1,
                Outcome::Interrupted => self.runs_interrupted += 1,
                Outcome::Collected => self.runs_collected += 1,
                Outcome::Failed | Outcome::InFlight => self.runs_failed += 1,
            },
            StationEvent::Paused { reason } => self.paused = Some(reason.clone()),
            StationEvent::Resumed => self.paused = None,
            StationEvent::ShiftChanged { .. }
            | StationEvent::StepFinished { .. }
            | StationEvent::TokenVerified { .. }
            | StationEvent::DeviceIdentified { .. } => {}
        }
    }

    pub fn runs(&self) -> u64 {
        self.runs_passed + self.runs_failed + self.runs_interrupted + self.runs_collected
    }

    /// systemd's STATUS line: boards and runs counted apart.
    pub fn status_line(&self) -> String {
        let mut line = format!(
            "ports {}, boards present {}, boards seen {}; runs {}: passed {}, failed {}, interrupted {}",
            self.ports.len(),
            self.boards_present.len(),
            self.boards_seen,
            self.runs(),
            self.runs_passed,
            self.runs_failed,
            self.runs_interrupted
        );
        if self.runs_collected > 0 {
            line.push_str(&format!(", collected {}", self.runs_collected));
        }
        if let Some(reason) = &self.paused {
            line.push_str(&format!("; PAUSED, taking no board: {reason}"));
        }
        if let Some(reason) = self.waiting.values().next() {
            line.push_str(&format!("; {} board(s) {reason}", self.waiting.len()));
        }
        line
    }
}

/// systemd's STATUS, kept up to date from the station's events: a
/// consumer ([`Station::follow`](super::Station::follow)); the shift's
/// counts at the end.
#[derive(Debug, Default)]
pub struct Status {
    pub shift: Shift,
    /// The downstream sinks, whose falling behind STATUS says too.
    sinks: Option<Arc<SinkHealth>>,
    /// The sinks' warning last told.
    sinks_warning: Option<String>,
}

impl Status {
    /// The status of a shift that has not begun, told to systemd.
    pub fn start() -> Status {
        let status = Status::default();
        notify_status(&status.line());
        status
    }

    /// Also say in STATUS when a sink falls behind.
    pub fn with_sinks(mut self, sinks: Arc<SinkHealth>) -> Status {
        self.sinks = Some(sinks);
        self
    }

    /// The shift's line, and the sinks that are behind.
    fn line(&self) -> String {
        match &self.sinks_warning {
            Some(warning) => format!("{}; WARNING {warning}", self.shift.status_line()),
            None => self.shift.status_line(),
        }
    }
}

impl Status {
    /// Tell systemd the line when it changed; whether it did.
    fn refresh(&mut self, shift_changed: bool) -> bool {
        let warning = self.sinks.as_ref().and_then(|s| s.warning());
        let changed = shift_changed || warning != self.sinks_warning;
        if changed {
            self.sinks_warning = warning;
            notify_status(&self.line());
        }
        changed
    }
}

impl EventConsumer for Status {
    fn apply(&mut self, event: &StationEvent) {
        let before = self.shift.clone();
        self.shift.apply(event);
        let shift_changed = self.shift != before;
        self.refresh(shift_changed);
    }

    /// A sink falls behind (or catches up) on an idle station too.
    fn tick(&mut self) {
        self.refresh(false);
    }

    fn missed(&mut self, missed: u64) {
        warn!(
            missed,
            "status fell behind the station's events; counts may be low"
        );
    }
}

fn notify_status(line: &str) {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(line)]);
}

/// Tell systemd the station serves (no-op outside systemd).
/// Tell systemd that start-up needs `by` more from now (a migration of a
/// large database): `TimeoutStartSec` would otherwise kill it mid-way. A
/// no-op outside systemd.
pub fn extend_start_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::ExtendTimeoutUsec(usec)]);
}

pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Tell systemd the station is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}

/// Ping systemd's watchdog at half its interval, when it is enabled.
pub fn spawn_watchdog() {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_when_a_board_waits_for_a_work_order_until_it_runs() {
        let mut shift = Shift::default();
        shift.apply(&StationEvent::BoardWaiting {
            port: "a".into(),
            reason: "waiting for work_order: set it".into(),
        });
        assert!(
            shift
                .status_line()
                .ends_with("; 1 board(s) waiting for work_order: set it"),
            "{}",
            shift.status_line()
        );
        shift.apply(&StationEvent::StepStarted {
            port: "a".into(),
            run: 1,
            step: crate::record::Step::Probe,
        });
        assert!(!shift.status_line().contains("waiting"));
    }

    #[test]
    fn status_counts_boards_and_runs_apart_and_says_when_paused() {
        let mut shift = Shift::default();
        for port in ["a", "b"] {
            shift.apply(&StationEvent::PortFound { port: port.into() });
        }
        shift.apply(&StationEvent::BoardArrived {
            port: "a".into(),
            dialect: crate::at::Dialect::RAW,
        });
        assert_eq!(
            shift.status_line(),
            "ports 2, boards present 1, boards seen 1; runs 0: passed 0, failed 0, interrupted 0"
        );
        shift.apply(&StationEvent::Paused {
            reason: "database is locked".into(),
        });
        assert!(
            shift
                .status_line()
                .ends_with("; PAUSED, taking no board: database is locked"),
            "{}",
            shift.status_line()
        );
        shift.apply(&StationEvent::Resumed);
        assert!(!shift.status_line().contains("PAUSED"));
    }

    #[test]
    fn a_sink_falling_behind_on_an_idle_station_reaches_status_at_the_next_tick() {
        let health = Arc::new(SinkHealth::default());
        let mut status = Status::default().with_sinks(Arc::clone(&health));
        status.tick();
        assert!(!status.line().contains("WARNING"), "{}", status.line());
        health.set(vec![crate::ledger::deliveries::Backlog {
            sink: "command mes-push".into(),
            owed: 1,
            oldest_queued_at: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)),
            retrying: 1,
            dead: 0,
        }]);
        // No station event: the tick alone tells systemd.
        status.tick();
        assert!(
            status
                .line()
                .contains("WARNING sink command mes-push behind: 1 owed"),
            "{}",
            status.line()
        );
        health.set(Vec::new());
        status.tick();
        assert!(!status.line().contains("WARNING"), "{}", status.line());
    }
}
