//! nrf91-token's integration tests, one binary: a module per subject.

mod token_claim;
mod token_fixtures;
mod token_mutations;
mod token_props;
mod token_trust;
mod token_verify;
mod verdict_kinds;
