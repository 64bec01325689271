//! `nrf-provd check-config`: every problem with a station's configuration
//! that can be found without running it, in one pass, each at the line and
//! column of the setting it is about. The daemon runs the same checks when
//! it starts (errors refuse the start, warnings are logged) and on SIGHUP
//! (errors keep the running configuration).
//!
//! Beyond what the config parser checks (syntax, unknown keys, types and
//! values, their order), this looks at the files named by whatever settings
//! could be read, mistakes elsewhere notwithstanding: missing, unreadable or
//! too open (the CA key, the nRF Cloud API key, the HTTP tokens, the ledger's
//! password and CA, the trust file, the CA certificates to install: their
//! own mode and every directory on their path, [`secure_file`]),
//! trust files that do not parse, a ledger URL that would send its password
//! (an error) or records (a warning) readable to another machine, port
//! patterns that match nothing right now (a warning: boards may come later),
//! and a database directory the service user cannot write.

use std::fmt;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sink::SinkConfig;

use crate::config::{
    ApiKeySource, ConfigError, LedgerUrl, PASSWORD_ENV, PasswordSource, StationConfig,
};

/// The system user the packaged unit runs the daemon as.
pub const SERVICE_USER: &str = "nrf-provd";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem, where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The config file (or the file a setting names, when it has no place
    /// in the config).
    pub origin: String,
    /// 1-based line and column of the setting, when known.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match self.at {
            Some((line, column)) => {
                write!(
                    f,
                    "{}:{line}:{column}: {level}: {}",
                    self.origin, self.message
                )
            }
            None => write!(f, "{}: {level}: {}", self.origin, self.message),
        }
    }
}

/// The findings of one check, errors and warnings together.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Whose rights the database directory is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The service user (`nrf-provd`) when it exists, else this user: what
    /// `check-config` asks, run by whoever installs the station.
    ServiceUser,
    /// This process: what the daemon asks of itself at start.
    ThisProcess,
}

/// Check the config file at `path`: every problem of its TOML and values,
/// and of the files named by whatever parts of it could be read, in one
/// report. The config as far as it could be read (`None` when the file
/// cannot be read or is not TOML); use it only when the report has no
/// error.
pub fn check_file(path: &Path, writer: Writer) -> (Option<StationConfig>, Report) {
    let origin = path.display().to_string();
    let mut report = Report::default();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(source) => {
            let problem = ConfigError::Read {
                path: path.to_owned(),
                source,
            };
            report.findings.push(from_config_error(&problem, &origin));
            return (None, report);
        }
    };
    let base = crate::config::directory_of(path);
    let checked = StationConfig::check_text(&text, &origin, Some(base));
    for problem in &checked.problems {
        report.findings.push(from_config_error(problem, &origin));
    }
    if let Some(config) = &checked.config {
        let mut files = check_settings(config, &text, &origin, writer);
        if !checked.problems.is_empty() {
            // A setting that is not in the file holds its default, which may
            // stand in for a key that was misspelt (and is reported): its
            // files are not what the station was meant to use.
            files.retain(|finding| finding.at.is_some());
        }
        report.findings.extend(files);
    }
    report
        .findings
        .sort_by_key(|f| f.at.unwrap_or((usize::MAX, 0)));
    (checked.config, report)
}

fn from_config_error(problem: &ConfigError, origin: &str) -> Finding {
    let (origin, message) = match problem {
        ConfigError::At {
            origin, message, ..
        }
        | ConfigError::Whole { origin, message } => (origin.clone(), message.clone()),
        other => (origin.to_string(), other.to_string()),
    };
    Finding {
        severity: Severity::Error,
        origin,
        at: problem.position(),
        message,
    }
}

/// What the files a parsed config names hold: the checks the daemon also
/// runs at start. `text` is the config's own text (for positions).
pub fn check_settings(
    config: &StationConfig,
    text: &str,
    origin: &str,
    writer: Writer,
) -> Vec<Finding> {
    let places = Places::new(text);
    let mut findings = Vec::new();
    let mut add = |severity, key: &[&str], message: String| {
        findings.push(Finding {
            severity,
            origin: origin.to_string(),
            at: places.at(key),
            message,
        });
    };

    if let Some(trust_file) = &config.trust_file {
        match crate::trust::TrustStore::load(trust_file) {
            Ok(store) if store.is_empty() => add(
                Severity::Error,
                &["trust_file"],
                format!(
                    "{}: no trusted device keys in the file; the `keys` authority could pass nobody",
                    trust_file.display()
                ),
            ),
            Ok(_) => {}
            Err(e @ crate::trust::TrustError::Io { .. }) => add(
                Severity::Error,
                &["trust_file"],
                format!("cannot read the trust file {e}"),
            ),
            Err(e) => add(Severity::Error, &["trust_file"], e.to_string()),
        }
    }

    if let Some(ca) = &config.ca {
        if let Err(e) = crate::ca::StationCa::load(&ca.certificate, &ca.key) {
            let text = e.to_string();
            let key = ca.key.display().to_string();
            let setting = if text.starts_with(&key) {
                "key"
            } else {
                "certificate"
            };
            add(Severity::Error, &["ca", setting], text);
        }
        let mut chain = String::new();
        for path in &ca.install {
            match crate::ca::read_install_pem(path) {
                Ok(pem) => chain.push_str(&pem),
                Err(e) => add(Severity::Error, &["ca", "install"], e.to_string()),
            }
        }
        // Written as one %CMNG, as install writes it: a chain longer than
        // the modem's AT buffer would fail every board.
        let write = crate::modem::WriteCredential::new(
            config.plan.sec_tag,
            crate::modem::CredentialType::RootCa,
            &crate::modem::pem_crlf(&chain),
        );
        if let Err(e @ crate::at::AtError::TooLong { .. }) = write {
            add(
                Severity::Error,
                &["ca", "install"],
                format!("{e}: install fewer CA certificates"),
            );
        }
    }

    if let Some(claim) = &config.claim {
        if let Err(e) = nrf_provd_core::ownership::OwnershipKey::load(&claim.ownership_key) {
            add(Severity::Error, &["claim", "ownership_key"], e.to_string());
        }
    }

    if let Some(cloud) = &config.cloud {
        match &cloud.api_key {
            ApiKeySource::File(path) => {
                if let Err(e) = crate::cloud::ApiKey::from_file(path) {
                    add(Severity::Error, &["cloud", "api_key_file"], e.to_string());
                }
            }
            ApiKeySource::Env(name) => {
                if std::env::var_os(name).is_none() {
                    add(
                        Severity::Warning,
                        &["cloud", "api_key_env"],
                        format!(
                            "{name} is not set here; the daemon needs it in its own environment \
                             (e.g. systemd's Environment= or LoadCredential=)"
                        ),
                    );
                }
            }
        }
    }

    let token_files = [
        ("token_file", &config.http.token_file),
        ("operator_token_file", &config.http.operator_token_file),
        ("engineer_token_file", &config.http.engineer_token_file),
    ];
    let mut tokens_read = true;
    for (key, file) in token_files {
        if let Some(Err(e)) = file.as_deref().map(crate::http::AccessToken::load) {
            add(Severity::Error, &["http", key], e.to_string());
            tokens_read = false;
        }
    }
    if tokens_read {
        if let Err(e) = crate::http::Access::load(&config.http) {
            let key = match e {
                crate::http::TokenError::SameAsOperator { .. } => "operator_token_file",
                _ => "engineer_token_file",
            };
            add(Severity::Error, &["http", key], e.to_string());
        }
    }

    for (sink, index) in config.sinks.iter().zip(&config.sink_places) {
        let problem = match sink {
            SinkConfig::Webhook { secret_file, .. } => {
                crate::sink::webhook::read_secret(secret_file)
                    .err()
                    .map(|e| ("secret_file", e.to_string()))
            }
            SinkConfig::Mqtt {
                password_file: Some(file),
                ..
            } => crate::sink::mqtt::read_password(file)
                .err()
                .map(|e| ("password_file", e.to_string())),
            _ => None,
        };
        if let Some((key, e)) = problem {
            add(
                Severity::Error,
                &["sink", &index.to_string(), key],
                format!("sink `{}`: {e}", sink.name()),
            );
        }
    }

    if let Some(ledger) = &config.ledger {
        let password = match &ledger.password {
            PasswordSource::File(path) => {
                if let Err(e) = crate::ledger::postgres::read_password(path) {
                    add(Severity::Error, &["ledger", "password_file"], e.to_string());
                }
                true
            }
            PasswordSource::Environment => std::env::var_os(PASSWORD_ENV).is_some(),
        };
        if let Ok(url) = LedgerUrl::parse(&ledger.url) {
            match url.exposure(password) {
                Err(why) => add(
                    Severity::Error,
                    &["ledger", "url"],
                    format!("ledger.url {why}"),
                ),
                Ok(Some(why)) => add(
                    Severity::Warning,
                    &["ledger", "url"],
                    format!("ledger.url {why}"),
                ),
                Ok(None) => {}
            }
            if let Some(ca) = &url.tls.root_cert {
                if let Err(why) = crate::ledger::postgres::tls::load_roots(ca) {
                    add(Severity::Error, &["ledger", "url"], why);
                }
            }
        }
    }

    for pattern in &config.ports.paths {
        let matched = glob::glob(pattern).map_or(0, |paths| paths.flatten().count());
        if matched == 0 {
            add(
                Severity::Warning,
                &["ports", "paths"],
                format!(
                    "{pattern} matches no port right now (boards may be plugged in later; \
                     `nrf-provd ports` lists what is there)"
                ),
            );
        }
    }

    if let Some(problem) = database_problem(&config.database, writer) {
        add(problem.0, &["database"], problem.1);
    }
    findings.sort_by_key(|f| f.at.unwrap_or((usize::MAX, 0)));
    findings
}

/// Whether `writer` can create and write the database.
fn database_problem(database: &Path, writer: Writer) -> Option<(Severity, String)> {
    let dir = database.parent().filter(|d| !d.as_os_str().is_empty())?;
    let service = match writer {
        Writer::ServiceUser => nix::unistd::User::from_name(SERVICE_USER).ok().flatten(),
        Writer::ThisProcess => None,
    };
    let who = service
        .as_ref()
        .map_or_else(|| "this user".to_string(), |u| format!("user {}", u.name));
    let Ok(meta) = std::fs::metadata(dir) else {
        // systemd's StateDirectory= makes /var/lib/nrf-provd at start.
        let made_by_systemd = dir == Path::new("/var/lib/nrf-provd");
        return Some(if made_by_systemd {
            (
                Severity::Warning,
                format!(
                    "{} does not exist yet; systemd creates it when the service starts (StateDirectory=)",
                    dir.display()
                ),
            )
        } else {
            (
                Severity::Error,
                format!("{}: the database directory does not exist", dir.display()),
            )
        });
    };
    let writable = |path: &Path, meta: &std::fs::Metadata| match &service {
        Some(user) => writable_by(meta, user),
        None => nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok(),
    };
    if !writable(dir, &meta) {
        return Some((
            Severity::Error,
            format!(
                "{}: {who} cannot write the database directory (the database and its journal live there)",
                dir.display()
            ),
        ));
    }
    if let Ok(file) = std::fs::metadata(database) {
        if !writable(database, &file) {
            return Some((
                Severity::Error,
                format!("{}: {who} cannot write the database", database.display()),
            ));
        }
    }
    None
}

/// Whether `user` may write a file with these owner, group and mode bits.
fn writable_by(meta: &std::fs::Metadata, user: &nix::unistd::User) -> bool {
    let mode = meta.mode();
    if user.uid.is_root() {
        return true;
    }
    if meta.uid() == user.uid.as_raw() {
        return mode & 0o200 != 0;
    }
    let name = std::ffi::CString::new(user.name.clone()).unwrap_or_default();
    let groups = nix::unistd::getgrouplist(&name, user.gid).unwrap_or_default();
    if groups.iter().any(|g| g.as_raw() == meta.gid()) {
        return mode & 0o020 != 0;
    }
    mode & 0o002 != 0
}

/// Where settings are in the config text, by key path (`["ca", "key"]`).
struct Places<'a> {
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
}

impl<'a> Places<'a> {
    fn new(text: &'a str) -> Self {
        Places {
            text,
            doc: toml_edit::ImDocument::parse(text).ok(),
        }
    }

    fn span(&self, key: &[&str]) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let (last, tables) = key.split_last()?;
        let mut table = doc.as_table();
        let mut names = tables.iter();
        while let Some(name) = names.next() {
            let item = table.get(name)?;
            // An array of tables (`[[sink]]`) is followed by an element's index.
            table = match item.as_array_of_tables() {
                Some(array) => array.get(names.next()?.parse().ok()?)?,
                None => item.as_table()?,
            };
        }
        table.get(last)?.span()
    }

    fn at(&self, key: &[&str]) -> Option<(usize, usize)> {
        let span = self.span(key)?;
        let before = self.text.get(..span.start)?;
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Some((line, before[line_start..].chars().count() + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_find_nested_settings() {
        let text = "station_id = \"s\"\n\n[ca]\ncertificate = \"c\"\nkey = \"k\"\n";
        let places = Places::new(text);
        assert_eq!(places.at(&["station_id"]), Some((1, 14)));
        assert_eq!(places.at(&["ca", "key"]), Some((5, 7)));
        assert_eq!(places.at(&["ca", "nothing"]), None);
        assert_eq!(places.at(&["http", "token_file"]), None);
    }

    #[test]
    fn findings_print_like_compiler_messages() {
        let finding = Finding {
            severity: Severity::Warning,
            origin: "station.toml".into(),
            at: Some((3, 9)),
            message: "no port".into(),
        };
        assert_eq!(finding.to_string(), "station.toml:3:9: warning: no port");
    }
}
