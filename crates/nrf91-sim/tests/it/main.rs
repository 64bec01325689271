//! nrf91-sim's integration tests, one binary: a module per subject.

mod sim_dialects;
mod sim_faults;
mod sim_fidelity;
mod sim_fleet;
mod sim_memory;
mod sim_with_client;
