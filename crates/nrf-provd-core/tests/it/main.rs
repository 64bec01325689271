//! nrf-provd-core's integration tests, one binary: a module per subject.

mod ca_signing;
mod line_ledger;
mod names;
mod plan_fidelity;
mod plan_memory;
mod sink_outbox;
mod station_presence;
mod store_integrity;
mod store_records;
mod store_retention;
mod traceability;
