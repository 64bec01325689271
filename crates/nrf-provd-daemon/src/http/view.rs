//! What the station page shows, folded from the station's events like
//! systemd's [`Shift`]: one tile per port, the shift's counters and the
//! last failures. Plain values and one `apply`, so the page's logic is
//! tested without a browser or a socket.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::record::{Outcome, ReasonCode, RunId, RunRecord, Step};
use crate::station::systemd::Shift;
use crate::station::{StationEvent, TraceSettings};

/// How many failures the page lists.
pub const LAST_FAILURES: usize = 8;

/// What a fixture slot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TileState {
    /// No board in the fixture.
    Idle,
    /// A board is being provisioned.
    Running,
    /// A board is there but waits for required traceability values
    /// (`board.waiting` says which).
    Waiting,
    Passed,
    Failed,
    /// Every check that needs no key passed; nobody vouched yet. Never a pass.
    Collected,
    /// The station stopped before the run finished.
    Interrupted,
}

impl TileState {
    fn of(outcome: Outcome) -> TileState {
        match outcome {
            Outcome::Passed => TileState::Passed,
            Outcome::Collected => TileState::Collected,
            Outcome::Interrupted => TileState::Interrupted,
            Outcome::Failed | Outcome::InFlight => TileState::Failed,
        }
    }
}

/// One downstream sink as the page shows it: what it still owes. Times
/// are absolute (Unix ms), so an unchanged backlog is an unchanged row and
/// the page works out ages itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkRow {
    /// Kind and URL or command, as in `/metrics` and `deliveries`.
    pub sink: String,
    pub owed: u64,
    pub retrying: u64,
    pub dead: u64,
    /// When the oldest owed run finished.
    pub oldest_ms: Option<i64>,
}

impl SinkRow {
    pub fn of(b: &crate::ledger::deliveries::Backlog) -> SinkRow {
        SinkRow {
            sink: b.sink.clone(),
            owed: b.owed,
            retrying: b.retrying,
            dead: b.dead,
            oldest_ms: b
                .oldest_queued_at
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()),
        }
    }
}

/// The board on a port, or the one that was there last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Board {
    pub run: Option<RunId>,
    /// When the board arrived (Unix ms).
    pub arrived_ms: Option<i64>,
    /// The step in progress, or the step that failed.
    pub step: Option<Step>,
    /// Steps begun so far (the current one included).
    pub steps_begun: usize,
    pub step_started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// The run's wall time, once finished.
    pub duration_ms: Option<i64>,
    pub outcome: Option<Outcome>,
    pub device_uuid: Option<String>,
    pub imei: Option<String>,
    pub reason_code: Option<ReasonCode>,
    /// Why, in words.
    pub reason: Option<String>,
    /// The work order the run was recorded under.
    pub work_order: Option<String>,
    /// What the board waits for before its run begins.
    pub waiting: Option<String>,
}

/// One fixture slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tile {
    pub port: String,
    /// `[traceability.fixtures]`' name for the port.
    pub fixture: Option<String>,
    pub state: TileState,
    /// The board now in the fixture (running or finished), or the last one
    /// when the fixture is empty.
    pub board: Board,
}

/// A failed run, for the list of last failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub port: String,
    pub run: RunId,
    pub finished_ms: i64,
    pub outcome: Outcome,
    pub step: Option<Step>,
    pub reason_code: Option<ReasonCode>,
    pub reason: Option<String>,
    pub device_uuid: Option<String>,
    pub imei: Option<String>,
}

/// The shift's counters as the page shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counters {
    pub ports: usize,
    pub boards_present: usize,
    pub boards_seen: u64,
    pub runs: u64,
    pub passed: u64,
    pub failed: u64,
    pub collected: u64,
    pub interrupted: u64,
    /// Passed ÷ finished runs, in percent; `None` before the first run.
    pub yield_percent: Option<f64>,
    /// Why the station takes no new board, while it does not.
    pub paused: Option<String>,
}

impl Counters {
    fn of(shift: &Shift) -> Counters {
        let runs = shift.runs();
        Counters {
            ports: shift.ports.len(),
            boards_present: shift.boards_present.len(),
            boards_seen: shift.boards_seen,
            runs,
            passed: shift.runs_passed,
            failed: shift.runs_failed,
            collected: shift.runs_collected,
            interrupted: shift.runs_interrupted,
            yield_percent: (runs > 0).then(|| 100.0 * shift.runs_passed as f64 / runs as f64),
            paused: shift.paused.clone(),
        }
    }
}

/// The whole page, sent when a client connects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub now_ms: i64,
    pub station_id: String,
    pub steps_in_plan: usize,
    pub counters: Counters,
    /// The work order, lot, operator and product the next board runs under.
    pub traceability: crate::record::Shift,
    /// Fields a board waits for (`[traceability] require`).
    pub required: Vec<crate::record::ShiftField>,
    /// Sorted by port.
    pub tiles: Vec<Tile>,
    /// Newest first.
    pub failures: Vec<Failure>,
    /// The downstream sinks (`[[sink]]`), in the config's order.
    pub sinks: Vec<SinkRow>,
}

/// What one event changed, sent to connected clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    pub now_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<Tile>,
    /// A port no longer watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The traceability values, when an operator changed them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceability: Option<crate::record::Shift>,
    /// Every sink, when any sink's backlog changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<SinkRow>>,
}

/// The page's state.
#[derive(Debug, Clone)]
pub struct View {
    station_id: String,
    steps_in_plan: usize,
    shift: Shift,
    trace: TraceSettings,
    traceability: crate::record::Shift,
    tiles: BTreeMap<String, Tile>,
    failures: VecDeque<Failure>,
    sinks: Vec<SinkRow>,
}

impl View {
    /// `trace`: the fixtures, required fields and the values the station
    /// starts with.
    pub fn new(station_id: impl Into<String>, steps_in_plan: usize, trace: TraceSettings) -> View {
        View {
            station_id: station_id.into(),
            steps_in_plan,
            traceability: trace.start.clone(),
            trace,
            shift: Shift::default(),
            tiles: BTreeMap::new(),
            failures: VecDeque::with_capacity(LAST_FAILURES),
            sinks: Vec::new(),
        }
    }

    /// Take the sinks' backlog as last read; an update when it changed.
    pub fn set_sinks(&mut self, sinks: Vec<SinkRow>, now_ms: i64) -> Option<Update> {
        if sinks == self.sinks {
            return None;
        }
        self.sinks = sinks;
        Some(Update {
            now_ms,
            tile: None,
            gone: None,
            counters: None,
            failure: None,
            traceability: None,
            sinks: Some(self.sinks.clone()),
        })
    }

    pub fn snapshot(&self, now_ms: i64) -> Snapshot {
        Snapshot {
            now_ms,
            station_id: self.station_id.clone(),
            steps_in_plan: self.steps_in_plan,
            traceability: self.traceability.clone(),
            required: self.trace.require.clone(),
            counters: Counters::of(&self.shift),
            tiles: self.tiles.values().cloned().collect(),
            failures: self.failures.iter().cloned().collect(),
            sinks: self.sinks.clone(),
        }
    }

    /// Every tile, sorted by port.
    pub fn tiles(&self) -> Vec<Tile> {
        self.tiles.values().cloned().collect()
    }

    /// Fold one event in (`now_ms`: when it arrived); what changed, if
    /// anything a client shows.
    pub fn apply(&mut self, event: &StationEvent, now_ms: i64) -> Option<Update> {
        let before = Counters::of(&self.shift);
        self.shift.apply(event);
        let counters = Counters::of(&self.shift);
        let mut update = Update {
            now_ms,
            tile: None,
            gone: None,
            counters: (counters != before).then_some(counters),
            failure: None,
            traceability: None,
            sinks: None,
        };
        match event {
            StationEvent::PortFound { port } => {
                update.tile = Some(self.tile(port).clone());
            }
            StationEvent::PortGone { port } => {
                self.tiles.remove(port);
                update.gone = Some(port.clone());
            }
            StationEvent::BoardArrived { port, .. } => {
                let tile = self.tile(port);
                tile.state = TileState::Running;
                tile.board = Board {
                    arrived_ms: Some(now_ms),
                    ..Board::default()
                };
                update.tile = Some(tile.clone());
            }
            StationEvent::StepStarted { port, run, step } => {
                let tile = self.tile(port);
                tile.state = TileState::Running;
                tile.board.waiting = None;
                let board = &mut tile.board;
                if board.run != Some(*run) {
                    board.run = Some(*run);
                    board.arrived_ms.get_or_insert(now_ms);
                }
                board.step = Some(*step);
                board.steps_begun += 1;
                board.step_started_ms = Some(now_ms);
                update.tile = Some(tile.clone());
            }
            StationEvent::RunFinished { port, record } => {
                let tile = self.tile(port);
                tile.state = TileState::of(record.outcome);
                tile.board = finished_board(&tile.board, record, now_ms);
                update.tile = Some(tile.clone());
                if tile.state != TileState::Passed {
                    let failure = failure_of(port, record, now_ms);
                    if self.failures.len() == LAST_FAILURES {
                        self.failures.pop_back();
                    }
                    self.failures.push_front(failure.clone());
                    update.failure = Some(failure);
                }
            }
            StationEvent::DeviceIdentified {
                port,
                run,
                device_uuid,
                imei,
            } => {
                let tile = self.tile(port);
                if tile.board.run == Some(*run) {
                    tile.board.device_uuid = device_uuid.map(|u| u.to_string());
                    tile.board.imei = imei.clone();
                    update.tile = Some(tile.clone());
                }
            }
            StationEvent::BoardLeft { port } => {
                let tile = self.tile(port);
                tile.state = TileState::Idle;
                update.tile = Some(tile.clone());
            }
            StationEvent::BoardWaiting { port, reason } => {
                let tile = self.tile(port);
                tile.state = TileState::Waiting;
                tile.board.waiting = Some(reason.clone());
                update.tile = Some(tile.clone());
            }
            StationEvent::ShiftChanged { shift } => {
                self.traceability = shift.clone();
                update.traceability = Some(shift.clone());
            }
            StationEvent::StepFinished { .. }
            | StationEvent::TokenVerified { .. }
            | StationEvent::Paused { .. }
            | StationEvent::Resumed => {}
        }
        let changed = update.tile.is_some()
            || update.gone.is_some()
            || update.counters.is_some()
            || update.traceability.is_some();
        changed.then_some(update)
    }

    fn tile(&mut self, port: &str) -> &mut Tile {
        let trace = &self.trace;
        self.tiles.entry(port.to_string()).or_insert_with(|| Tile {
            port: port.to_string(),
            fixture: trace.fixture_of(port),
            state: TileState::Idle,
            board: Board::default(),
        })
    }
}

fn finished_board(running: &Board, record: &RunRecord, now_ms: i64) -> Board {
    let duration_ms = record
        .finished_at
        .map(|end| (end - record.started_at).whole_milliseconds())
        .and_then(|ms| i64::try_from(ms).ok());
    Board {
        run: Some(record.id),
        arrived_ms: running.arrived_ms,
        step: record.failed_step,
        steps_begun: running.steps_begun,
        step_started_ms: None,
        finished_ms: Some(now_ms),
        duration_ms,
        outcome: Some(record.outcome),
        device_uuid: record.device.device_uuid.map(|u| u.to_string()),
        imei: record.device.imei.clone(),
        reason_code: record.reason_code,
        reason: record.reason.clone(),
        work_order: record.trace.work_order.clone(),
        waiting: None,
    }
}

fn failure_of(port: &str, record: &RunRecord, now_ms: i64) -> Failure {
    Failure {
        port: port.to_string(),
        run: record.id,
        finished_ms: now_ms,
        outcome: record.outcome,
        step: record.failed_step,
        reason_code: record.reason_code,
        reason: record.reason.clone(),
        device_uuid: record.device.device_uuid.map(|u| u.to_string()),
        imei: record.device.imei.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::at::Dialect;
    use crate::record::RunStart;

    const PORT: &str = "/dev/nrf91/000960123456-if00";

    fn record(id: RunId, outcome: Outcome) -> Arc<RunRecord> {
        let start = RunStart {
            uid: uuid::Uuid::nil(),
            station_id: "s".into(),
            port: PORT.into(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            trace: Default::default(),
        };
        let mut record = RunRecord::begun(id, &start);
        record.device.imei = Some("351358811234563".into());
        record.finished_at = Some(start.started_at + time::Duration::milliseconds(2050));
        match outcome {
            Outcome::Passed => record.outcome = Outcome::Passed,
            other => record.fail(
                other,
                Some(Step::Attest),
                ReasonCode::Signature,
                "identity token signature does not verify",
            ),
        }
        Arc::new(record)
    }

    fn port() -> String {
        PORT.to_string()
    }

    #[test]
    fn the_sinks_backlog_is_in_the_snapshot_and_an_update_only_when_it_changes() {
        let mut view = View::new("s", 3, TraceSettings::default());
        let backlog = crate::ledger::deliveries::Backlog {
            sink: "webhook https://mes.example/runs".into(),
            owed: 2,
            oldest_queued_at: Some(time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(5)),
            retrying: 1,
            dead: 0,
        };
        let rows = vec![SinkRow::of(&backlog)];
        let update = view.set_sinks(rows.clone(), 9).expect("a change");
        assert_eq!(update.sinks.as_deref(), Some(&rows[..]));
        assert_eq!(rows[0].oldest_ms, Some(5000));
        assert_eq!(
            view.set_sinks(rows.clone(), 10),
            None,
            "unchanged: no update"
        );
        assert_eq!(view.snapshot(11).sinks, rows);
        let caught_up = crate::ledger::deliveries::Backlog {
            owed: 0,
            oldest_queued_at: None,
            retrying: 0,
            ..backlog
        };
        let update = view.set_sinks(vec![SinkRow::of(&caught_up)], 12);
        assert_eq!(update.and_then(|u| u.sinks).map(|s| s[0].owed), Some(0));
    }

    #[test]
    fn a_board_that_waits_for_its_work_order_says_so_until_it_runs() {
        let trace = TraceSettings {
            require: vec![crate::record::ShiftField::WorkOrder],
            fixtures: [(PORT.to_string(), "F01".to_string())].into(),
            ..TraceSettings::default()
        };
        let mut view = View::new("line1", 10, trace);
        let found = view.apply(&StationEvent::PortFound { port: port() }, 1);
        assert_eq!(
            found.and_then(|u| u.tile).and_then(|t| t.fixture),
            Some("F01".into())
        );
        let waiting = StationEvent::BoardWaiting {
            port: port(),
            reason: "waiting for work_order".into(),
        };
        let tile = view.apply(&waiting, 2).and_then(|u| u.tile);
        assert_eq!(tile.as_ref().map(|t| t.state), Some(TileState::Waiting));
        assert_eq!(
            tile.and_then(|t| t.board.waiting),
            Some("waiting for work_order".into())
        );
        let shift = crate::record::Shift {
            work_order: Some("WO-1".into()),
            ..Default::default()
        };
        let update = view.apply(
            &StationEvent::ShiftChanged {
                shift: shift.clone(),
            },
            3,
        );
        assert_eq!(update.and_then(|u| u.traceability), Some(shift.clone()));
        assert_eq!(view.snapshot(4).traceability, shift);
        let started = StationEvent::StepStarted {
            port: port(),
            run: 1,
            step: Step::Probe,
        };
        let tile = view.apply(&started, 5).and_then(|u| u.tile);
        assert_eq!(tile.as_ref().map(|t| t.state), Some(TileState::Running));
        assert_eq!(tile.and_then(|t| t.board.waiting), None);
    }

    #[test]
    fn a_tile_goes_idle_running_finished_idle() {
        let mut view = View::new("line1", 10, TraceSettings::default());
        let found = view.apply(&StationEvent::PortFound { port: port() }, 1);
        assert_eq!(
            found.and_then(|u| u.tile).map(|t| t.state),
            Some(TileState::Idle)
        );

        let arrived = StationEvent::BoardArrived {
            port: port(),
            dialect: Dialect::RAW,
        };
        let update = view
            .apply(&arrived, 2)
            .unwrap_or_else(|| panic!("an update"));
        assert_eq!(update.tile.map(|t| t.state), Some(TileState::Running));
        assert_eq!(update.counters.map(|c| c.boards_seen), Some(1));

        for (i, step) in [Step::Probe, Step::Identify, Step::Attest]
            .into_iter()
            .enumerate()
        {
            let started = StationEvent::StepStarted {
                port: port(),
                run: 7,
                step,
            };
            let tile = view.apply(&started, 10 + i as i64).and_then(|u| u.tile);
            let tile = tile.unwrap_or_else(|| panic!("a tile"));
            assert_eq!(tile.board.step, Some(step));
            assert_eq!(tile.board.steps_begun, i + 1);
            assert_eq!(tile.board.run, Some(7));
            if step == Step::Identify {
                // The board says who it is: the running tile shows it.
                let identified = StationEvent::DeviceIdentified {
                    port: port(),
                    run: 7,
                    device_uuid: Some(uuid::Uuid::from_u128(7)),
                    imei: Some("351358811234563".into()),
                };
                let tile = view.apply(&identified, 11).and_then(|u| u.tile);
                let tile = tile.unwrap_or_else(|| panic!("a tile"));
                assert_eq!(tile.state, TileState::Running);
                assert_eq!(tile.board.imei.as_deref(), Some("351358811234563"));
                assert_eq!(
                    tile.board.device_uuid,
                    Some(uuid::Uuid::from_u128(7).to_string())
                );
            }
        }

        let finished = StationEvent::RunFinished {
            port: port(),
            record: record(7, Outcome::Failed),
        };
        let update = view
            .apply(&finished, 20)
            .unwrap_or_else(|| panic!("an update"));
        let tile = update.tile.unwrap_or_else(|| panic!("a tile"));
        assert_eq!(tile.state, TileState::Failed);
        assert_eq!(tile.board.step, Some(Step::Attest));
        assert_eq!(tile.board.reason_code, Some(ReasonCode::Signature));
        assert_eq!(tile.board.duration_ms, Some(2050));
        assert_eq!(tile.board.imei.as_deref(), Some("351358811234563"));
        let failure = update.failure.unwrap_or_else(|| panic!("a failure"));
        assert_eq!(failure.run, 7);
        let counters = update.counters.unwrap_or_else(|| panic!("counters"));
        assert_eq!((counters.runs, counters.failed), (1, 1));
        assert_eq!(counters.yield_percent, Some(0.0));

        let left = view.apply(&StationEvent::BoardLeft { port: port() }, 30);
        let tile = left
            .and_then(|u| u.tile)
            .unwrap_or_else(|| panic!("a tile"));
        assert_eq!(tile.state, TileState::Idle);
        assert_eq!(
            tile.board.outcome,
            Some(Outcome::Failed),
            "keeps the last board"
        );
    }

    #[test]
    fn collected_is_its_own_state_and_listed_not_passed() {
        let mut view = View::new("line1", 10, TraceSettings::default());
        let finished = StationEvent::RunFinished {
            port: port(),
            record: record(1, Outcome::Collected),
        };
        let update = view
            .apply(&finished, 5)
            .unwrap_or_else(|| panic!("an update"));
        assert_eq!(update.tile.map(|t| t.state), Some(TileState::Collected));
        assert!(update.failure.is_some(), "a collected run is not a pass");
        let counters = update.counters.unwrap_or_else(|| panic!("counters"));
        assert_eq!((counters.passed, counters.collected), (0, 1));
    }

    #[test]
    fn failures_keep_the_newest_few_and_passes_are_not_failures() {
        let mut view = View::new("line1", 10, TraceSettings::default());
        for id in 1..=20 {
            let outcome = if id % 2 == 0 {
                Outcome::Passed
            } else {
                Outcome::Failed
            };
            view.apply(
                &StationEvent::RunFinished {
                    port: port(),
                    record: record(id, outcome),
                },
                id,
            );
        }
        let snapshot = view.snapshot(100);
        let ids: Vec<RunId> = snapshot.failures.iter().map(|f| f.run).collect();
        assert_eq!(ids, vec![19, 17, 15, 13, 11, 9, 7, 5]);
        assert_eq!(snapshot.counters.yield_percent, Some(50.0));
    }

    #[test]
    fn a_port_that_goes_away_loses_its_tile_and_pauses_show_in_the_counters() {
        let mut view = View::new("line1", 10, TraceSettings::default());
        view.apply(&StationEvent::PortFound { port: port() }, 1);
        let gone = view.apply(&StationEvent::PortGone { port: port() }, 2);
        assert_eq!(gone.and_then(|u| u.gone), Some(port()));
        assert!(view.tiles().is_empty());
        let paused = StationEvent::Paused {
            reason: "database: disk full".into(),
        };
        let update = view.apply(&paused, 3).and_then(|u| u.counters);
        assert_eq!(
            update.and_then(|c| c.paused).as_deref(),
            Some("database: disk full")
        );
        let resumed = view
            .apply(&StationEvent::Resumed, 4)
            .and_then(|u| u.counters);
        assert_eq!(resumed.map(|c| c.paused), Some(None));
    }
}
