//! Test support shared by the workspace's integration tests (each crate's
//! `tests/it`). A dev-dependency only: nothing of the product depends on
//! it, and the edge test (`tests/it/crate_graph.rs`) holds that.
//!
//! - [`token`]: keys made in the test, tokens signed with them, a trust
//!   store that knows them;
//! - [`at`]: a scripted AT peer and the pure exchange driven by hand;
//! - [`sim`]: a host talking to simulated boards, and checks of what they
//!   sign;
//! - [`pg`]: a throwaway PostgreSQL cluster (with TLS when asked);
//! - [`mqtt`]: a throwaway Mosquitto broker on 127.0.0.1;
//! - [`fixtures`]: the repository's fixture files.

pub mod at;
pub mod fixtures;
pub mod mqtt;
pub mod pg;
pub mod sim;
pub mod token;
