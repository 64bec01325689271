//! The integration tests that need the packaged binary (`nrf-provd`, with
//! `nrf-provd-dev` beside it where boards are simulated in another process)
//! or the whole station with simulated boards, one binary: a module per
//! subject, the shared set-ups (`station_support`, `http_support`) beside
//! them. The other tests live with their crates (`crates/*/tests/it`; the
//! developers' binary alone: `crates/nrf-provd-tools/tests/it`).

mod at_cli;
mod broken_pipe;
mod ca_create;
mod check_config;
mod cli_docs;
mod cloud_handoff;
mod crate_graph;
mod hostile_boards;
mod http_isolation;
mod http_readers;
mod http_station;
mod http_support;
mod identity_cloud;
mod line_hostile;
mod line_stations;
mod line_tls;
mod package_deb;
mod ports_cli;
mod secret_paths;
mod secrets_in_transit;
mod station_claim;
mod station_daemon;
mod station_flood;
mod station_line_rules;
mod station_page;
mod station_restart;
mod station_runs;
mod station_sinks;
mod station_store_faults;
mod station_support;
mod station_traceability;
mod station_trust;
mod store_results_cli;
mod systemd_unit;
mod token_cli;
