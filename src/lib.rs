//! nrf-provd: provision and authenticate Nordic nRF91 modems on factory
//! test stations. See ARCHITECTURE.md for the crate graph and data flow.

// The crates below, under the names the modules have always used.
pub use nrf_cloud as cloud;
pub use nrf_provd_core::{ca, handoff, ledger, plan, record, station};
pub use nrf91_at::{DEFAULT_SEC_TAG, at, imei, modem, serial};
pub use nrf91_sim as sim;
pub use nrf91_token as token;
pub use nrf91_token::{text, trust};
pub use secure_file;

pub mod bench;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod port_list;
pub mod process;
pub mod setup;
