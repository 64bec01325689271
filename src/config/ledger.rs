//! `[ledger]`: the line's shared PostgreSQL ledger, and `plan.reprovision`.
//!
//! The URL never carries the password (a station's config is readable by
//! others): it comes from `password_file` (refused when group or others can
//! read it, checked when the ledger is opened) or from the environment
//! variable [`PASSWORD_ENV`]. Errors never echo the URL.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Seconds, Source};

/// Environment variable the ledger password is read from when no
/// `password_file` is configured.
pub const PASSWORD_ENV: &str = "NRF_PROVD_LEDGER_PASSWORD";

/// Where claims are made during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LedgerMode {
    /// In PostgreSQL, during the run: while it cannot be reached no run
    /// passes (`ledger_unreachable`); records are still written locally.
    #[default]
    Required,
    /// Locally during the run, checked by PostgreSQL when forwarded; a clash
    /// found then is recorded on both runs as `conflict`.
    Deferred,
}

impl LedgerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerMode::Required => "required",
            LedgerMode::Deferred => "deferred",
        }
    }
}

/// What a station does with a device that already passed (on this station
/// or, with a shared ledger, anywhere on the line): `plan.reprovision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reprovision {
    /// Provision it again.
    #[default]
    Allow,
    /// Provision it again, and say so in the record and the log.
    Warn,
    /// Fail the run (`reprovision`).
    Refuse,
}

/// Where the ledger password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file holding only the password (a trailing newline is dropped).
    File(PathBuf),
    /// [`PASSWORD_ENV`], if set; else no password (peer or trust auth).
    Environment,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerConfig {
    /// `postgres://user@host:port/db` or `postgres://user@/db?host=/run/postgresql`,
    /// without a password.
    pub url: String,
    pub password: PasswordSource,
    pub mode: LedgerMode,
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One central claim, pin or device check during a run (`required`).
    pub claim_timeout: Duration,
    /// Runs forwarded in one transaction.
    pub batch_size: usize,
    /// How soon the forwarder looks again when idle or after a failure.
    pub forward_interval: Duration,
    /// Connections to the server at most (claims of runs on many ports at
    /// once, and the forwarder); count them against `max_connections`.
    pub pool_size: usize,
}

impl LedgerConfig {
    /// Defaults for a URL given on the command line (`results --ledger`).
    pub fn for_url(url: String) -> LedgerConfig {
        LedgerConfig {
            url,
            password: PasswordSource::Environment,
            mode: LedgerMode::default(),
            connect_timeout: Duration::from_secs(5),
            claim_timeout: Duration::from_secs(5),
            batch_size: 500,
            forward_interval: Duration::from_secs(5),
            pool_size: 16,
        }
    }
}

/// Largest `batch_size`: PostgreSQL takes at most 65535 parameters per
/// statement, far more than the forwarder's arrays need, but a transaction
/// of more runs would hold the line's locks for long.
pub const MAX_BATCH: usize = 10_000;

/// Largest `pool_size`.
pub const MAX_POOL: usize = 256;

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

/// What is wrong with a ledger URL, in words that never repeat it.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(
            "must be a PostgreSQL URL, e.g. \"postgres://nrf@db.line3.example/nrf_line\" or \"postgres://nrf@/nrf_line?host=/run/postgresql\"".into(),
        );
    }
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("is not a valid PostgreSQL URL ({e})"))?;
    if config.get_password().is_some() {
        return Err(format!(
            "must not hold a password (the URL is shown in logs and the config is readable by others); put it in ledger.password_file (mode 0600) or ${PASSWORD_ENV}"
        ));
    }
    if config.get_hosts().is_empty() {
        return Err("names no host: give one (`@db.example`) or a socket directory (`?host=/run/postgresql`)".into());
    }
    use tokio_postgres::config::SslMode;
    if !matches!(config.get_ssl_mode(), SslMode::Disable | SslMode::Prefer) {
        return Err("asks for TLS, which this build does not speak to PostgreSQL; use a Unix socket or the line's own network and leave sslmode out".into());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_are_checked_without_being_repeated() {
        assert_eq!(check_url("postgres://nrf@db.example/line"), Ok(()));
        assert_eq!(
            check_url("postgresql://nrf@/line?host=/run/postgresql"),
            Ok(())
        );
        for bad in [
            "mysql://nrf@db/line",
            "postgres://nrf:hunter2@db.example/line",
            "postgres://nrf@db.example/line?sslmode=require",
            "postgres://nrf@db.example:notaport/line",
        ] {
            let why = check_url(bad).expect_err(bad);
            assert!(!why.contains("hunter2") && !why.contains(bad), "{why}");
        }
    }
}
