//! The developers' tools around nrf-provd, which the Debian package does
//! not install: `bench` (throughput, soak, crash, abusive API clients),
//! the `demo`, and `simulate` (simulated boards on pseudo-terminals), with
//! the command line of `nrf-provd-dev` that adds them to the product's
//! commands.
//!
//! - [`bench`]: the measurements (see its module documentation);
//! - [`demo`]: the README's first command, and the working directory the
//!   bench shares with it;
//! - [`cli`]: `DevCli` (the product's commands and these three).

pub mod bench;
pub mod cli;
pub mod demo;

// The crates below, under the names the modules use for them.
use nrf_provd_core::{ca, ledger, record, sink, station};
use nrf_provd_daemon::{config, http, process, setup};
use nrf91_sim as sim;
use nrf91_token as token;
use nrf91_token::text;
