//! nrf-cloud's integration tests, one binary: a module per subject.

mod cloud_client;
