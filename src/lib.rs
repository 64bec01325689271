//! nrf-provd: provision and authenticate Nordic nRF91 modems on factory
//! test stations. See ARCHITECTURE.md for the module map and data flow.

/// The sec_tag of nRF Cloud's own credentials, which the modem's `%JWT`
/// signs with when no sec_tag is given, and the plan's default.
pub const DEFAULT_SEC_TAG: u32 = 16_842_753;

pub mod at;
pub mod bench;
pub mod ca;
pub mod check;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod demo;
pub mod handoff;
pub mod http;
pub mod imei;
pub mod ledger;
pub mod modem;
pub mod plan;
pub mod port_list;
pub mod process;
pub mod record;
pub mod secure_file;
pub mod serial;
pub mod setup;
pub mod sim;
pub mod station;
pub mod text;
pub mod token;
pub mod trust;
