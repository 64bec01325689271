//! The station core: what a run is and how it is recorded, without a
//! configuration file, a command line or an HTTP server.
//!
//! - [`record`]: the domain's records and codes (`RunRecord`, `Step`,
//!   `ReasonCode`, `Outcome`, `VerifiedBy`).
//! - [`plan`]: the provisioning plan, one file per step, the identity
//!   authorities that vouch for a device, the line-wide device rules, and
//!   the clock and random source it is given ([`plan::PlanContext`]).
//! - [`ledger`]: the write and read traits and their implementations
//!   (SQLite, the line's PostgreSQL behind it, in memory), exports,
//!   summaries, the hand-off's state.
//! - [`station`]: one supervisor per port, board presence, the recorder,
//!   the ledger's health gate, events, systemd; made of
//!   [`station::Parts`] (the daemon assembles them from its config).
//! - [`ca`]: the station CA that signs device certificates.
//! - [`ownership`]: the owner's ownership key (the claim step's).
//! - [`handoff`]: handing devices off to nRF Cloud.
//! - [`sink`]: every finished run delivered to each downstream (an MES, a
//!   site's script), from the outbox in the station's SQLite.
//!
//! Settings are the core's own types (`plan::PlanConfig`,
//! `ledger::LedgerConfig`, `handoff::HandOff`, ...); reading them from a
//! file is the daemon's job.

pub mod ca;
pub mod handoff;
pub mod ledger;
pub mod ownership;
pub mod plan;
pub mod record;
pub mod sink;
pub mod station;

// The crates below, under the names the modules use for them.
use nrf_cloud as cloud;
use nrf91_at::{DEFAULT_SEC_TAG, at, imei, modem, serial};
use nrf91_token as token;
use nrf91_token::{text, trust};
