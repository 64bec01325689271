//! The nrf-provd daemon and its commands, over the station core: the
//! station's TOML configuration and its checks, the HTTP server (page,
//! API, metrics), assembling a station from a configuration, and one file
//! per command of the command line the Debian package installs.
//!
//! - [`config`]: the TOML station config, every mistake at its position
//!   (`config::lenient`), read into the core's settings types;
//! - [`check`]: `check-config`, the daemon's start and SIGHUP: the config
//!   and every file it names;
//! - [`setup`]: a station from a config (ledger, trust, authorities, CA,
//!   ports, hand-off), reloads and `provision`;
//! - [`http`]: the station's own server, on a thread of its own;
//! - [`cli`]: the command line (the `Cli` definition, completions and man
//!   pages from it, one file per command);
//! - [`port_list`]: serial ports from sysfs; [`process`]: what `/proc`
//!   says about a process (the metrics', the bench's).

pub mod check;
pub mod cli;
pub mod config;
pub mod http;
pub mod port_list;
pub mod process;
pub mod setup;

// The crates below, under the names the modules use for them.
use nrf_cloud as cloud;
use nrf_provd_core::{ca, handoff, ledger, plan, record, sink, station};
use nrf91_at::{at, modem, serial};
use nrf91_token as token;
use nrf91_token::{text, trust};
