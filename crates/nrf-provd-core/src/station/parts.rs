//! What a station is made of. The daemon's `setup` assembles these from a
//! configuration; tests and tools may assemble them otherwise.

use std::sync::Arc;
use std::time::Duration;

use crate::handoff::{HandOff, Handoff};
use crate::ledger::{LedgerReader, LineLedger};
use crate::plan::{Clock, OsRandom, PlanContext, RandomSource, SystemClock};

use super::shift::TraceSettings;
use super::{LedgerGate, PortOptions};

/// Where a station's time and randomness come from.
#[derive(Clone)]
pub struct Sources {
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn RandomSource>,
}

impl Default for Sources {
    /// The operating system's clock and random source.
    fn default() -> Self {
        Sources {
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
        }
    }
}

/// The daemon's hand-off to nRF Cloud, which [`super::Station::serve`]
/// runs beside the ports.
pub struct DaemonHandoff {
    pub handoff: Arc<Handoff>,
    pub mode: HandOff,
    pub every: Duration,
    pub include_collected: bool,
}

/// Everything [`super::Station::new`] takes.
pub struct Parts {
    /// The station's ledger behind its health gate; the station's events
    /// are the gate's.
    pub gate: Arc<LedgerGate>,
    /// The context runs start with (made over `gate`).
    pub ctx: PlanContext,
    pub options: PortOptions,
    /// The station's own records, for reading (API, bench, checks).
    pub reader: Arc<dyn LedgerReader>,
    /// Runs the ledger found in flight from an earlier crash.
    pub recovered: usize,
    /// With a shared ledger: the composite behind `gate`.
    pub line: Option<Arc<LineLedger>>,
    /// The clock and random source every reload keeps.
    pub sources: Sources,
    pub handoff: Option<DaemonHandoff>,
    /// `[traceability]`: start values, required fields, fixtures.
    pub trace: TraceSettings,
}
