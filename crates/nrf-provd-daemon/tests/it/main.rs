//! nrf-provd-daemon's integration tests, one binary: a module per subject.

mod config_errors;
