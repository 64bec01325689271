//! A ledger URL as libpq reads it: `sslmode` and `sslrootcert` taken out
//! of the query (tokio-postgres knows neither `verify-*` nor
//! `sslrootcert`), the rest for the driver; what would cross the network
//! in clear ([`LedgerUrl::exposure`]). Errors never repeat the URL.

use std::path::PathBuf;

use crate::ledger::PASSWORD_ENV;

/// libpq's `sslmode`: whether the connection is encrypted, and whether the
/// server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, strum::IntoStaticStr, strum::EnumString)]
#[strum(serialize_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, else plain text (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked only against a
    /// `sslrootcert` given (as libpq).
    Require,
    /// TLS, the certificate signed by a CA in `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host of the URL.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// TLS or no connection at all.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// How the connection to the ledger is protected: the URL's `sslmode` and
/// `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerTls {
    pub mode: SslMode,
    /// CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
}

impl LedgerTls {
    /// Encrypted, and the server proved it holds a certificate of the CA.
    pub fn authenticates(&self) -> bool {
        self.mode.requires_tls() && self.root_cert.is_some()
    }
}

/// A ledger URL, read.
#[derive(Debug, Clone)]
pub struct LedgerUrl {
    /// The driver's settings: the URL without `sslmode` and `sslrootcert`
    /// (tokio-postgres knows neither `verify-*` nor `sslrootcert`), its
    /// own TLS mode set from [`Self::tls`].
    pub config: tokio_postgres::Config,
    pub tls: LedgerTls,
}

impl LedgerUrl {
    /// Read `url`; what is wrong with it, in words that never repeat it.
    pub fn parse(url: &str) -> Result<LedgerUrl, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "must be a PostgreSQL URL, e.g. \"postgres://nrf@db.line3.example/nrf_line?sslmode=verify-full&sslrootcert=/etc/nrf-provd/ledger-ca.pem\" or \"postgres://nrf@/nrf_line?host=/run/postgresql\"".into(),
            );
        }
        let (rest, tls) = take_tls(url)?;
        let mut config: tokio_postgres::Config = rest
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
        use tokio_postgres::config::{Host, SslMode as DriverMode};
        let sockets = config
            .get_hosts()
            .iter()
            .filter(|h| matches!(h, Host::Unix(_)))
            .count();
        let only_sockets = sockets == config.get_hosts().len() && config.get_hostaddrs().is_empty();
        if tls.mode.requires_tls() && sockets > 0 && !only_sockets {
            return Err(format!(
                "mixes socket directories with TCP hosts under sslmode={}: a socket never speaks TLS; give the socket a URL of its own",
                tls.mode.as_str()
            ));
        }
        // As libpq: no TLS over a Unix socket (the server offers none there).
        config.ssl_mode(match tls.mode {
            _ if only_sockets => DriverMode::Disable,
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverMode::Require,
        });
        Ok(LedgerUrl { config, tls })
    }

    /// TCP hosts that are not this machine (loopback: 127.0.0.0/8, ::1,
    /// `localhost`); by `hostaddr` where one is given, as it is what is
    /// connected to.
    pub fn remote_hosts(&self) -> Vec<String> {
        use tokio_postgres::config::Host;
        let hosts = self.config.get_hosts();
        let addrs = self.config.get_hostaddrs();
        (0..hosts.len().max(addrs.len()))
            .filter_map(|i| match (addrs.get(i), hosts.get(i)) {
                (Some(addr), _) => (!addr.is_loopback()).then(|| addr.to_string()),
                (None, Some(Host::Tcp(name))) => {
                    (!crate::cloud::is_loopback_host(name)).then(|| name.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// What would cross the network unprotected: `Err` when the password
    /// would (refused: a secret travels encrypted), a warning when only
    /// the records would, or when the server is not authenticated.
    pub fn exposure(&self, password: bool) -> Result<Option<String>, String> {
        let remote = self.remote_hosts();
        if remote.is_empty() {
            return Ok(None);
        }
        let hosts = remote.join(", ");
        let mode = self.tls.mode.as_str();
        let fix = "use sslmode=verify-full with sslrootcert=<the server's CA file> (README, \"A line of stations\")";
        if !self.tls.mode.requires_tls() {
            let may_be_plain = format!(
                "reaches {hosts} over TCP with sslmode={mode}, which may not encrypt (prefer goes on in plain text when the server, or anyone on the way, declines TLS)"
            );
            return if password {
                Err(format!(
                    "{may_be_plain}: the ledger password and every record could be read on the way; {fix}"
                ))
            } else {
                Ok(Some(format!(
                    "{may_be_plain}: every record could be read on the way (and a password, once one is set, is refused); {fix}"
                )))
            };
        }
        if !self.tls.authenticates() {
            return Ok(Some(format!(
                "reaches {hosts} with sslmode={mode} and no sslrootcert: encrypted, but anyone on the way can pose as the server and be sent the password and the records; {fix}"
            )));
        }
        Ok(None)
    }
}

/// Take `sslmode` and `sslrootcert` out of the URL's query (percent-decoded,
/// as tokio-postgres decodes the rest); the URL without them.
fn take_tls(url: &str) -> Result<(String, LedgerTls), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), LedgerTls::default()));
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| "is not a valid PostgreSQL URL (a parameter is not UTF-8)".to_string())
    };
    let mut tls = LedgerTls::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_str() {
            "sslmode" => {
                let value = decode(value)?;
                tls.mode = value
                    .parse()
                    .map_err(|_| "has an sslmode that is not one of disable, prefer, require, verify-ca, verify-full")?;
            }
            "sslrootcert" => tls.root_cert = Some(PathBuf::from(decode(value)?)),
            _ => kept.push(pair),
        }
    }
    if let Some(path) = &tls.root_cert {
        if !path.is_absolute() {
            return Err("sslrootcert must be the absolute path of a PEM file of the CA certificate(s) that signed the server's (libpq's `system` is not supported: name the CA)".into());
        }
        if tls.mode == SslMode::Disable {
            return Err("has sslrootcert with sslmode=disable, which never uses it; use sslmode=verify-full".into());
        }
    }
    if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) && tls.root_cert.is_none() {
        return Err(format!(
            "has sslmode={} without sslrootcert=<the absolute path of the CA certificate(s) (PEM) that signed the server's>",
            tls.mode.as_str()
        ));
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

/// What is wrong with a ledger URL, in words that never repeat it.
pub fn check_url(url: &str) -> Result<(), String> {
    LedgerUrl::parse(url).map(drop)
}

#[cfg(test)]
mod tests {
    use super::{LedgerUrl, SslMode, check_url};

    #[test]
    fn sslmode_words_are_libpqs() {
        for (mode, word) in [
            (SslMode::Disable, "disable"),
            (SslMode::Prefer, "prefer"),
            (SslMode::Require, "require"),
            (SslMode::VerifyCa, "verify-ca"),
            (SslMode::VerifyFull, "verify-full"),
        ] {
            assert_eq!(mode.as_str(), word);
            assert_eq!(word.parse::<SslMode>().ok(), Some(mode));
        }
        assert!("verify_full".parse::<SslMode>().is_err());
    }

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
            "postgres://nrf@db.example:notaport/line",
            "postgres://nrf@db.example/line?sslmode=verify-full",
            "postgres://nrf@db.example/line?sslmode=verify-ca&application_name=hunter2",
            "postgres://nrf@db.example/line?sslmode=hunter2",
            "postgres://nrf@db.example/line?sslmode=verify-full&sslrootcert=ca.pem",
            "postgres://nrf@db.example/line?sslmode=disable&sslrootcert=/etc/ca.pem",
            "postgres://nrf@db.example,%2Frun%2Fpostgresql/line?sslmode=require",
        ] {
            let why = check_url(bad).expect_err(bad);
            assert!(!why.contains("hunter2") && !why.contains(bad), "{why}");
        }
    }

    #[test]
    fn libpq_ssl_settings_are_read_and_the_driver_gets_the_rest() {
        use tokio_postgres::config::SslMode as DriverMode;
        let url = LedgerUrl::parse(
            "postgres://nrf@db.example:5433/line?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fnrf%20provd%2Fca.pem",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            url.tls.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/nrf provd/ca.pem"))
        );
        assert_eq!(url.config.get_ssl_mode(), DriverMode::Require);
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert_eq!(url.config.get_ports(), &[5433]);
        for (mode, driver) in [
            ("disable", DriverMode::Disable),
            ("prefer", DriverMode::Prefer),
            ("require", DriverMode::Require),
        ] {
            let url = LedgerUrl::parse(&format!("postgres://nrf@db/line?sslmode={mode}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(url.config.get_ssl_mode(), driver, "{mode}");
        }
        let url = LedgerUrl::parse("postgres://nrf@db/line").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.tls.mode, SslMode::Prefer, "libpq's default");
        // A socket has no TLS: require there is met by the socket itself.
        let url = LedgerUrl::parse("postgres://nrf@/line?host=/run/postgresql&sslmode=require")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.config.get_ssl_mode(), DriverMode::Disable);
    }

    #[test]
    fn only_hosts_beyond_loopback_are_exposed() {
        let exposure = |url: &str, password: bool| {
            LedgerUrl::parse(url)
                .unwrap_or_else(|e| panic!("{e}"))
                .exposure(password)
        };
        for local in [
            "postgres://nrf@localhost/line",
            "postgres://nrf@127.0.0.1:5433/line",
            "postgres://nrf@127.8.9.10/line",
            "postgres://nrf@[::1]:5433/line",
            "postgres://nrf@/line?host=/run/postgresql",
            "postgres://nrf@db.example/line?hostaddr=127.0.0.1",
        ] {
            assert_eq!(exposure(local, true), Ok(None), "{local}");
        }
        for remote in [
            "postgres://nrf@db.example/line",
            "postgres://nrf@10.0.0.5/line?sslmode=disable",
            "postgres://nrf@localhost/line?hostaddr=10.0.0.5",
            "postgres://nrf@localhost,db.example/line?sslmode=prefer",
        ] {
            let why = exposure(remote, true).expect_err(remote);
            assert!(
                why.contains("password") && why.contains("verify-full"),
                "{why}"
            );
            let warning = exposure(remote, false).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                warning.is_some_and(|w| w.contains("every record")),
                "{remote}"
            );
        }
        let unauthenticated = exposure("postgres://nrf@db.example/line?sslmode=require", true);
        assert!(
            unauthenticated
                .as_ref()
                .is_ok_and(|w| w.as_ref().is_some_and(|w| w.contains("pose as the server"))),
            "{unauthenticated:?}"
        );
        for authenticated in [
            "postgres://nrf@db.example/line?sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "postgres://nrf@db.example/line?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
            "postgres://nrf@db.example/line?sslmode=require&sslrootcert=/etc/ca.pem",
        ] {
            assert_eq!(exposure(authenticated, true), Ok(None), "{authenticated}");
        }
    }
}
