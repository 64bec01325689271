//! nrf-provd-core's integration tests, one binary: a module per subject.

/// Counts the allocations of the futures `cycle_cost` measures (and nothing
/// else: counting is off unless that test's future is being polled).
#[global_allocator]
static ALLOCATOR: cycle_cost::CountingAllocator = cycle_cost::CountingAllocator;

mod ca_signing;
mod cycle_cost;
mod handoff_sink;
mod line_ledger;
mod line_sink;
mod names;
mod plan_fidelity;
mod plan_memory;
mod sink_outbox;
mod station_presence;
mod store_integrity;
mod store_records;
mod store_retention;
mod traceability;
