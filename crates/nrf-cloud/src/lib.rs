//! nRF Cloud: a client of its provisioning service and REST API (its
//! stand-in for tests is the `nrf-cloud-standin` crate).
//!
//! - [`CloudClient`]: claim dry run (nRF Cloud judges a `%ATTESTTOKEN`),
//!   claim, bulk claim, onboarding and bulk-operation polling; timeouts,
//!   retries with backoff for transport failures, 5xx and 429 (honouring
//!   `Retry-After`), never for other 4xx.
//! - [`ApiKey`]: from a file that group and others cannot read, or from an
//!   environment variable; never shown or logged.
//! - [`CloudError`]: typed outcomes; [`CloudError::reason`] gives the run's
//!   reason code (`cloud_rejected` or `cloud_unreachable`), never a pass.
//!
//! Layers: [`requests`] (what is sent) and [`answers`] (what comes back),
//! both without I/O; [`retry`] (backoff, `Retry-After`); `client` (HTTP).

pub mod answers;
mod client;
mod error;
mod key;
pub mod requests;
pub mod retry;
mod settings;

// The tokens nRF Cloud judges are nrf91-token's.
use nrf91_token as token;

pub use answers::{
    BulkClaim, BulkOp, BulkOpStatus, ClaimRowResult, ClaimedDevice, RowError, RowOutcome,
};
pub use client::{CloudClient, tls_config};
pub use error::{CloudError, CloudReason};
pub use key::{ApiKey, ApiKeyError};
pub use requests::{ClaimRow, MAX_ROWS, OnboardRow};
pub use settings::{API_URL, CloudSettings, PROVISIONING_URL, is_loopback_host};
