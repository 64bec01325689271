//! nrf91-at's integration tests, one binary: a module per subject.

mod at_client;
mod at_parse;
mod at_pty;
