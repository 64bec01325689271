//! nrf-provd-tools's integration tests, one binary: the developers' binary
//! (`nrf-provd-dev`: `simulate`, `bench`) run as a user runs it, a module
//! per subject. The tests that run the product binary and the tools
//! together live in the root package's `tests/it`.

mod bench_cli;
mod line_bench;
mod sim_cli;
mod sim_control_station;
