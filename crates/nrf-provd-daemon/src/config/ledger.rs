//! `[ledger]`: the line's shared PostgreSQL ledger, read into
//! [`LedgerConfig`] with every mistake at its position.
//!
//! The URL never carries the password (a station's config is readable by
//! others): it comes from `password_file` (refused when group or others can
//! read it, checked when the ledger is opened) or from the environment
//! variable [`crate::ledger::PASSWORD_ENV`]. Errors never echo the URL.
//! TLS follows libpq's `sslmode` and `sslrootcert` in the URL
//! ([`crate::ledger::postgres::LedgerUrl`]).

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{Seconds, Source};
use crate::ledger::postgres::check_url;
use crate::ledger::{LedgerConfig, LedgerMode, MAX_BATCH, MAX_POOL, PasswordSource};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    url: Option<Spanned<String>>,
    password_file: Option<PathBuf>,
    mode: Option<LedgerMode>,
    connect_timeout: Option<Spanned<Seconds>>,
    claim_timeout: Option<Spanned<Seconds>>,
    batch_size: Option<Spanned<i64>>,
    forward_interval: Option<Spanned<Seconds>>,
    pool_size: Option<Spanned<i64>>,
}

/// `[ledger]`, every problem reported with a default in its place; `None`
/// when its URL is missing or wrong.
pub(super) fn validate(
    src: &Source,
    raw: RawLedger,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Option<LedgerConfig> {
    let d = LedgerConfig::for_url(String::new());
    let url = src.required(
        raw.url,
        &["ledger"],
        src.span_of(&["ledger"]),
        "url",
        "the line's PostgreSQL, e.g. url = \"postgres://nrf@db.line3.example/nrf_line\"",
    );
    let url = url.and_then(|url| match check_url(url.get_ref()) {
        Ok(()) => Some(url.into_inner()),
        Err(why) => {
            src.report(src.at(url.span(), format!("ledger.url {why}")));
            None
        }
    });
    let count = |value: Option<Spanned<i64>>, max: usize, message: String, default: usize| {
        let value = value.map(|n| {
            let span = n.span();
            Spanned::new(span, usize::try_from(n.into_inner()).unwrap_or(0))
        });
        super::checked(src, value, |n| (1..=max).contains(n), &message, default)
    };
    let batch_size = count(
        raw.batch_size,
        MAX_BATCH,
        format!("ledger.batch_size must be between 1 and {MAX_BATCH} runs, e.g. 500"),
        d.batch_size,
    );
    let pool_size = count(
        raw.pool_size,
        MAX_POOL,
        format!("ledger.pool_size must be between 1 and {MAX_POOL} connections, e.g. 16"),
        d.pool_size,
    );
    let seconds = |value, name, default| super::seconds(src, value, name, default, false);
    let connect_timeout = seconds(
        raw.connect_timeout,
        "ledger.connect_timeout",
        d.connect_timeout,
    );
    let claim_timeout = seconds(raw.claim_timeout, "ledger.claim_timeout", d.claim_timeout);
    let forward_interval = seconds(
        raw.forward_interval,
        "ledger.forward_interval",
        d.forward_interval,
    );
    Some(LedgerConfig {
        pool_size,
        url: url?,
        password: match raw.password_file {
            Some(path) => PasswordSource::File(resolve(path)),
            None => PasswordSource::Environment,
        },
        mode: raw.mode.unwrap_or_default(),
        connect_timeout,
        claim_timeout,
        batch_size,
        forward_interval,
    })
}
