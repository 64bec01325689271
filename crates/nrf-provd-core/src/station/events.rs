//! What the station tells whoever watches it: one event per thing a person
//! cares about. systemd's STATUS, the demo's live view, and later the HTTP
//! page and metrics are all subscribers of the same stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::at::Dialect;
use crate::plan::PlanObserver;
use crate::record::{DeviceInfo, RunId, RunRecord, Shift, Step, StepRecord};
use crate::token::TokenKind;

/// Events a subscriber may fall this far behind before it misses some.
pub const EVENT_CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
pub enum StationEvent {
    /// A port matched the configured paths and is being watched.
    PortFound { port: String },
    /// A port is no longer there (or no longer configured).
    PortGone { port: String },
    /// A board answered on a port.
    BoardArrived { port: String, dialect: Dialect },
    StepStarted {
        port: String,
        run: RunId,
        step: Step,
    },
    StepFinished {
        port: String,
        run: RunId,
        step: StepRecord,
    },
    /// A token was judged (decode, verify, and for an identity token the
    /// authorities) in `took`.
    TokenVerified {
        port: String,
        run: RunId,
        kind: TokenKind,
        took: Duration,
    },
    /// The identify step read who the board says it is (not proven yet:
    /// attest proves the UUID), so the page can show it while it runs.
    DeviceIdentified {
        port: String,
        run: RunId,
        device_uuid: Option<uuid::Uuid>,
        imei: Option<String>,
    },
    /// A run ended and its record is durable (or could not be made so:
    /// then the record says `store`, never passed).
    RunFinished {
        port: String,
        record: Arc<RunRecord>,
    },
    /// The board was unplugged, or another board answers on the port.
    BoardLeft { port: String },
    /// A board answered but waits for required traceability values
    /// (`reason` says which); its run begins once they are set.
    BoardWaiting { port: String, reason: String },
    /// An operator changed the station-wide traceability values; the next
    /// board runs under `shift`.
    ShiftChanged { shift: Shift },
    /// The station takes no new board: the ledger cannot take a record.
    Paused { reason: String },
    /// The ledger takes records again.
    Resumed,
}

impl StationEvent {
    /// The port the event is about, if any.
    pub fn port(&self) -> Option<&str> {
        match self {
            StationEvent::PortFound { port }
            | StationEvent::PortGone { port }
            | StationEvent::BoardArrived { port, .. }
            | StationEvent::StepStarted { port, .. }
            | StationEvent::StepFinished { port, .. }
            | StationEvent::TokenVerified { port, .. }
            | StationEvent::DeviceIdentified { port, .. }
            | StationEvent::RunFinished { port, .. }
            | StationEvent::BoardLeft { port }
            | StationEvent::BoardWaiting { port, .. } => Some(port),
            StationEvent::Paused { .. }
            | StationEvent::Resumed
            | StationEvent::ShiftChanged { .. } => None,
        }
    }
}

/// The sending side, cloned by every supervisor.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<StationEvent>);

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(EVENT_CAPACITY).0)
    }
}

impl Events {
    /// Publish; nobody listening is fine.
    pub fn send(&self, event: StationEvent) {
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StationEvent> {
        self.0.subscribe()
    }
}

/// Whoever folds the station's events (systemd's STATUS; a log, a
/// webhook): one implementation, started with [`follow`] (or
/// [`Station::follow`](super::Station::follow)) where the station starts.
/// It never holds the station up: one that falls more than
/// [`EVENT_CAPACITY`] events behind misses some, and is told how many.
pub trait EventConsumer: Send + 'static {
    /// The next event, in order.
    fn apply(&mut self, event: &StationEvent);

    /// `missed` events went by unseen.
    fn missed(&mut self, missed: u64) {
        let _ = missed;
    }

    /// Every [`TICK`] whether or not events came: for what changes
    /// without a station event (the sinks' backlog).
    fn tick(&mut self) {}
}

/// How often [`follow`] calls [`EventConsumer::tick`].
pub const TICK: std::time::Duration = std::time::Duration::from_secs(2);

/// Fold `events` into `consumer` until the stream closes (the station's
/// last handle dropped); then hand the consumer back.
pub async fn follow<C: EventConsumer>(
    mut events: broadcast::Receiver<StationEvent>,
    mut consumer: C,
) -> C {
    use broadcast::error::RecvError;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => consumer.apply(&event),
                Err(RecvError::Lagged(missed)) => consumer.missed(missed),
                Err(RecvError::Closed) => return consumer,
            },
            _ = tick.tick() => consumer.tick(),
        }
    }
}

/// Turns the plan's step notifications into station events for one run.
pub(crate) struct RunObserver<'a> {
    pub events: &'a Events,
    pub port: &'a str,
    pub run: RunId,
}

impl PlanObserver for RunObserver<'_> {
    fn step_started(&self, step: Step) {
        self.events.send(StationEvent::StepStarted {
            port: self.port.to_string(),
            run: self.run,
            step,
        });
    }

    fn step_finished(&self, record: &StepRecord) {
        self.events.send(StationEvent::StepFinished {
            port: self.port.to_string(),
            run: self.run,
            step: record.clone(),
        });
    }

    fn device_identified(&self, device: &DeviceInfo) {
        self.events.send(StationEvent::DeviceIdentified {
            port: self.port.to_string(),
            run: self.run,
            device_uuid: device.device_uuid,
            imei: device.imei.clone(),
        });
    }

    fn token_verified(&self, kind: TokenKind, took: Duration) {
        self.events.send(StationEvent::TokenVerified {
            port: self.port.to_string(),
            run: self.run,
            kind,
            took,
        });
    }
}
