//! Station configuration: TOML, strict (unknown keys are errors), validated,
//! and every error names the file, line and column and says what is expected.
//!
//! Deserialisation goes through private `Raw*` structs whose validated fields
//! are `toml::Spanned`, so semantic errors (a sec_tag out of range, a step in
//! the wrong place, a bad glob) point at the offending value like syntax errors
//! do. The public structs hold plain, already-validated values.
//!
//! One pass reports every problem: deserialisation is lenient (`lenient`:
//! each mistake serde meets is reported and cut out, and serde runs again),
//! and validation goes on after a problem with a default in its place.
//! Keys a section cannot do without are `Option` in the `Raw*` structs and
//! reported missing by validation, since serde's "missing field" would end
//! the pass.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

mod ledger;
mod lenient;
mod retention;
mod sink;
mod traceability;
pub use crate::handoff::HandOff;
use crate::handoff::HandoffSettings;
pub use crate::ledger::postgres::{LedgerTls, LedgerUrl, SslMode, check_url as check_ledger_url};
pub use crate::ledger::{LedgerConfig, LedgerMode, PASSWORD_ENV, PasswordSource};
pub use crate::plan::{ConfirmUnsupported, PinCose, PlanConfig, Reprovision};
use crate::sink::SinkConfig;
pub use crate::station::TraceSettings;

/// The configuration `nrf-provd demo` starts from (paths are placeholders the
/// demo replaces).
pub const DEMO_TOML: &str = include_str!("../../../config/demo.toml");
const DEMO_ORIGIN: &str = "config/demo.toml (embedded)";

/// Largest sec_tag a host may use; higher values belong to the modem.
pub const SEC_TAG_MAX: u32 = 2_147_483_647;
/// sec_tags whose credentials "can be decrypted with Nordic tools" (AT
/// command reference, `%CMNG`): a test station's only (`test_station`).
pub const DEBUG_SEC_TAGS: std::ops::RangeInclusive<u32> = 2_147_483_648..=2_147_483_667;
pub use nrf91_at::DEFAULT_SEC_TAG;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}:{line}:{column}: {message}")]
    At {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Whole { origin: String, message: String },
    /// Every problem one pass found, in the order of the file.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// (line, column), both 1-based, when the error has a position.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::At { line, column, .. } => Some((*line, *column)),
            ConfigError::Many(all) => all.first().and_then(ConfigError::position),
            _ => None,
        }
    }

    /// Each problem on its own (one, or all of a [`ConfigError::Many`]).
    pub fn problems(&self) -> Vec<&ConfigError> {
        match self {
            ConfigError::Many(all) => all.iter().collect(),
            one => vec![one],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

// The engine's own types, so config and engine cannot drift.
pub use crate::at::{CommandTimeouts, DialectChoice};
pub use crate::serial::{FlowControl, LineEnding, Parity, SerialSettings};

/// The steps of the plan (their order rules live with each step's body in
/// `plan::steps`).
pub use crate::record::{Step, VerifiedBy};

fn step_list() -> String {
    Step::list()
}

#[derive(Debug, Clone, PartialEq)]
pub struct StationConfig {
    pub station_id: String,
    pub database: PathBuf,
    /// The device identity keys of the `keys` authority; set exactly when
    /// `identity.authorities` lists `keys`.
    pub trust_file: Option<PathBuf>,
    pub log_format: LogFormat,
    pub ports: PortsConfig,
    /// `[serial]`: how ports are opened.
    pub serial: SerialSettings,
    /// `[serial] line_ending`: what ends each command.
    pub line_ending: LineEnding,
    /// `[serial] dialect`: how commands are written, or detect it.
    pub dialect: DialectChoice,
    pub timeouts: Timeouts,
    pub plan: PlanConfig,
    pub ca: Option<CaConfig>,
    pub identity: IdentityConfig,
    /// `[cloud]`: nRF Cloud, for the `nrfcloud` authority and the hand-off.
    pub cloud: Option<CloudConfig>,
    /// `[http]`: the station page, the JSON API and `/metrics`.
    pub http: HttpConfig,
    /// `[ledger]`: the line's shared ledger; none = this station's SQLite only.
    pub ledger: Option<LedgerConfig>,
    /// `[traceability]`: work order, lot, operator, product to start with,
    /// the fields a board waits for, and each port's fixture.
    pub traceability: TraceSettings,
    /// `test_station`: Nordic's debug-decryptable sec_tags are allowed.
    pub test_station: bool,
    /// `[claim]`: the owner's ownership key for the claim step.
    pub claim: Option<ClaimConfig>,
    /// `[[sink]]`: where every finished run is delivered.
    pub sinks: Vec<SinkConfig>,
    /// Each of `sinks`' index among the file's `[[sink]]` tables (a sink
    /// with a mistake is left out, so the two may differ): where `check`
    /// reports a sink's file.
    pub sink_places: Vec<usize>,
    /// `[retention] keep_full`: how long a run keeps its payload; `None`
    /// keeps every run in full.
    pub keep_full: Option<Duration>,
}

/// `[claim]`: the ownership key the claim step writes and signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimConfig {
    /// P-256 private key, PEM, mode 0600.
    pub ownership_key: PathBuf,
    /// Where its public half is written (`%CMNG` type 9); also
    /// `plan.claim_sec_tag`.
    pub sec_tag: u32,
}

/// Where the daemon serves its page, API and metrics, and who may read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `None`: no server (`listen = ""`).
    pub listen: Option<SocketAddr>,
    /// A file holding the viewer's bearer token, which every request must
    /// carry (or the engineer's). Required when `listen` is not a loopback
    /// address.
    pub token_file: Option<PathBuf>,
    /// A file holding the engineer's bearer token: only a request carrying
    /// it sees token text, JWTs and certificates. None: nobody does.
    pub engineer_token_file: Option<PathBuf>,
    /// A file holding the operator's bearer token: a request carrying it
    /// (or the engineer's) may change the work order, lot, operator and
    /// product. None: only requests from this machine (loopback) may.
    pub operator_token_file: Option<PathBuf>,
    /// Host names and addresses (lower case, no port) a request may name in
    /// `Host` besides loopback ones and the address it arrived at.
    pub allowed_hosts: Vec<String>,
    /// Read-only database connections (a thread each) for the API: at most
    /// this many reads at once; more get 503.
    pub readers: usize,
}

/// `[http] readers` when not given.
pub const DEFAULT_HTTP_READERS: usize = 2;
/// The most `[http] readers` allowed (each is a thread and a connection).
pub const MAX_HTTP_READERS: usize = 8;

/// `[http] listen` when not given: loopback only, so nothing but the
/// station itself (or an SSH tunnel) reaches the page without a token.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9091);

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(DEFAULT_HTTP_LISTEN),
            token_file: None,
            engineer_token_file: None,
            operator_token_file: None,
            allowed_hosts: Vec::new(),
            readers: DEFAULT_HTTP_READERS,
        }
    }
}

/// Who judges a device's identity, and how the station guards that source.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// Asked in this order; only `keys` can pass a device on to the next
    /// (when the trust file does not list it), so it alone may come first
    /// of two.
    pub authorities: Vec<VerifiedBy>,
    /// Largest share (0..=1) of the trusted keys a SIGHUP reload may drop;
    /// a reload dropping more keeps the running keys. A reload that would
    /// leave no key at all is always refused.
    pub reload_max_drop: f64,
    /// `pin`: whether the `%ATTESTTOKEN` and `%KEYGEN` signatures must
    /// verify under the pinned key (`identity.pin_cose`).
    pub pin_cose: PinCose,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            authorities: vec![VerifiedBy::Keys],
            reload_max_drop: 1.0,
            pin_cose: PinCose::default(),
        }
    }
}

impl IdentityConfig {
    pub fn uses(&self, authority: VerifiedBy) -> bool {
        self.authorities.contains(&authority)
    }
}

/// Where the nRF Cloud API key comes from; the key itself is read when the
/// station starts (see [`crate::cloud::ApiKey`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeySource {
    /// A file only its owner can read (refused otherwise).
    File(PathBuf),
    /// An environment variable (e.g. from systemd's `LoadCredential=`).
    Env(String),
}

/// `[cloud]`: how to reach nRF Cloud and what to tell it.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudConfig {
    /// Base URLs, timeouts and retries.
    pub settings: crate::cloud::CloudSettings,
    pub api_key: ApiKeySource,
    /// Provisioning tags sent with each claim.
    pub claim_tags: Vec<String>,
    /// Onboarding CSV columns: sub type, tags and firmware types.
    pub onboard_sub_type: String,
    pub onboard_tags: Vec<String>,
    pub onboard_fw_types: Vec<String>,
    pub hand_off: HandOff,
    /// How often the daemon hands off what is waiting (`hand_off` not off).
    pub hand_off_every: Duration,
    /// How often an onboarding bulk operation is polled (Nordic's tool: 5 s).
    pub bulk_op_poll: Duration,
}

impl CloudConfig {
    /// What the hand-off sends besides the devices, and how long it follows
    /// a bulk operation.
    pub fn handoff_settings(&self) -> HandoffSettings {
        HandoffSettings {
            claim_tags: self.claim_tags.clone(),
            onboard_sub_type: self.onboard_sub_type.clone(),
            onboard_tags: self.onboard_tags.clone(),
            onboard_fw_types: self.onboard_fw_types.clone(),
            batch_size: crate::cloud::MAX_ROWS,
            poll_every: self.bulk_op_poll,
            op_deadline: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortsConfig {
    /// Port paths and glob patterns, e.g. `/dev/serial/by-id/*`.
    pub paths: Vec<String>,
    /// Glob patterns removed from what `paths` matched.
    pub exclude: Vec<String>,
    pub rescan_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Each command class's deadline (`command`, `attest`, `keygen`, `jwt`,
    /// `cmng`, `cfun`).
    pub commands: CommandTimeouts,
    /// A whole run on one board.
    pub run: Duration,
    /// How long runs in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            commands: CommandTimeouts::default(),
            run: Duration::from_secs(180),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
    pub validity_days: u32,
    /// CA certificates written to the modem as type 0 (root CA).
    pub install: Vec<PathBuf>,
}

/// A configuration read as far as it could be: every problem found, and
/// the settings with a default standing in for each one that was wrong (so
/// the files the rest names can still be checked).
#[derive(Debug)]
pub struct Checked {
    /// `None` when the text is not TOML.
    pub config: Option<StationConfig>,
    /// Every problem, in the order of the file.
    pub problems: Vec<ConfigError>,
    origin: String,
}

impl Checked {
    /// The config when there is no problem; else every problem.
    pub fn into_result(mut self) -> Result<StationConfig, ConfigError> {
        match (self.config, self.problems.len()) {
            (Some(config), 0) => Ok(config),
            (_, 1) => Err(self.problems.remove(0)),
            // Text that is not TOML always comes with its problem.
            (None, 0) => Err(ConfigError::Whole {
                origin: self.origin,
                message: "cannot be read".into(),
            }),
            _ => Err(ConfigError::Many(self.problems)),
        }
    }
}

impl StationConfig {
    /// Read and validate a configuration file. Relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        parse_with_base(&text, &origin, Some(directory_of(path)))
    }

    /// Check configuration text: every problem, and what could be read.
    /// `origin` names it in problems; relative paths are resolved against
    /// `base` (the file's directory).
    pub fn check_text(text: &str, origin: &str, base: Option<&Path>) -> Checked {
        check_with_base(text, origin, base)
    }

    /// Parse configuration text. `origin` names it in errors; when it is a
    /// file path, relative paths are resolved against that file's directory.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        parse_with_base(text, origin, Path::new(origin).parent())
    }

    /// The embedded `config/demo.toml`.
    pub fn demo() -> Self {
        // The file is compiled in and covered by a test, so this cannot fail
        // at run time for anything a user does.
        #[allow(clippy::expect_used)]
        parse_with_base(DEMO_TOML, DEMO_ORIGIN, None).expect("embedded config/demo.toml is valid")
    }
}

/// The directory a config file's relative paths are relative to (`.` for
/// a bare file name, as `check-config station.toml` gives).
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Fuzz body for the config parser (the `config` cargo-fuzz target and a
/// proptest call it): check arbitrary text (invalid UTF-8 replaced, as a
/// file read lossily would be) without touching the filesystem. Must never
/// panic; every problem must name `fuzz.toml` and a position inside the
/// text; text with no problem must give a config.
pub fn fuzz_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let checked = StationConfig::check_text(&text, "fuzz.toml", None);
    // What could be read is usable even with problems (check-config checks
    // the files it names).
    if let Some(config) = &checked.config {
        let _ = config.plan.render_attributes("{imei}", "{device_uuid}");
    }
    assert!(checked.config.is_some() || !checked.problems.is_empty());
    let lines = text.matches('\n').count() + 1;
    for problem in &checked.problems {
        let message = problem.to_string();
        assert!(message.starts_with("fuzz.toml"), "{message}");
        if let Some((line, column)) = problem.position() {
            assert!(
                (1..=lines).contains(&line) && column >= 1,
                "{line}:{column} outside {lines} lines: {message}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Raw (as written) structures. A required key is an `Option` here (see
// `Source::required`), so its absence is one problem among the others.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    station_id: Option<Spanned<String>>,
    database: Option<PathBuf>,
    trust_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    log_format: LogFormat,
    ports: Option<RawPorts>,
    #[serde(default)]
    serial: RawSerial,
    #[serde(default)]
    timeouts: RawTimeouts,
    plan: Option<RawPlan>,
    ca: Option<RawCa>,
    #[serde(default)]
    identity: RawIdentity,
    cloud: Option<RawCloud>,
    #[serde(default)]
    http: RawHttp,
    ledger: Option<ledger::RawLedger>,
    #[serde(default)]
    traceability: traceability::RawTraceability,
    test_station: Option<bool>,
    claim: Option<RawClaim>,
    /// `[[sink]]`, each a downstream.
    #[serde(default)]
    sink: Vec<sink::RawSink>,
    retention: Option<retention::RawRetention>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaim {
    ownership_key: Option<PathBuf>,
    sec_tag: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Spanned<String>>,
    token_file: Option<PathBuf>,
    engineer_token_file: Option<PathBuf>,
    operator_token_file: Option<PathBuf>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    readers: Option<Spanned<i64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    authorities: Option<Spanned<Vec<Spanned<String>>>>,
    reload_max_drop: Option<Spanned<f64>>,
    pin_cose: Option<PinCose>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    stage: Option<Spanned<String>>,
    provisioning_url: Option<Spanned<String>>,
    api_url: Option<Spanned<String>>,
    api_key_file: Option<PathBuf>,
    api_key_env: Option<Spanned<String>>,
    request_timeout: Option<Spanned<Seconds>>,
    attempts: Option<Spanned<u32>>,
    #[serde(default)]
    claim_tags: Vec<Spanned<String>>,
    #[serde(default)]
    onboard_sub_type: String,
    #[serde(default)]
    onboard_tags: Vec<Spanned<String>>,
    onboard_fw_types: Option<Vec<Spanned<String>>>,
    hand_off: Option<Spanned<String>>,
    hand_off_every: Option<Spanned<Seconds>>,
    bulk_op_poll: Option<Spanned<Seconds>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPorts {
    paths: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    rescan_interval_ms: Option<Spanned<u64>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSerial {
    baud: Option<Spanned<u32>>,
    data_bits: Option<Spanned<u8>>,
    parity: Option<Parity>,
    stop_bits: Option<Spanned<u8>>,
    flow_control: Option<FlowControl>,
    line_ending: Option<LineEnding>,
    dtr: Option<bool>,
    dialect: Option<DialectChoice>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    command: Option<Spanned<Seconds>>,
    attest: Option<Spanned<Seconds>>,
    keygen: Option<Spanned<Seconds>>,
    jwt: Option<Spanned<Seconds>>,
    cmng: Option<Spanned<Seconds>>,
    cfun: Option<Spanned<Seconds>>,
    run: Option<Spanned<Seconds>>,
    shutdown_grace: Option<Spanned<Seconds>>,
}

/// A TOML integer or float read as seconds, so a wrong type says "seconds"
/// rather than "f64".
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds, e.g. 5 or 0.5")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v as f64))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    steps: Option<Spanned<Vec<Spanned<Step>>>>,
    sec_tag: Option<Spanned<i64>>,
    delete_existing_key: Option<bool>,
    csr_attributes: Option<Spanned<String>>,
    key_usage: Option<Spanned<String>>,
    retries: Option<u32>,
    jwt_exp_delta: Option<Spanned<u32>>,
    jwt_audience: Option<Spanned<String>>,
    reprovision: Option<Reprovision>,
    min_firmware: Option<Spanned<String>>,
    confirm_unsupported: Option<ConfirmUnsupported>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    validity_days: Option<Spanned<u32>>,
    install: Option<Vec<PathBuf>>,
}

// ---------------------------------------------------------------------------
// Parsing and validation.

/// Turns byte spans into `origin:line:column` errors, and collects them:
/// validation goes on after a problem (with the default in its place), so
/// one pass reports every problem it can find.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
    problems: std::cell::RefCell<Vec<ConfigError>>,
    /// What lenient deserialisation cut out (already reported).
    cuts: Vec<lenient::Cut>,
    /// The document as written, for the place of a table.
    doc: Option<toml_edit::Table>,
}

impl Source<'_> {
    fn report(&self, problem: ConfigError) {
        self.problems.borrow_mut().push(problem);
    }

    /// Whether `name` in `parent` (a key of a table, or a value of a list)
    /// was cut out for a mistake already reported, or a cut one was one
    /// edit from it: its absence is that mistake, not another.
    fn cut_out(&self, parent: &[&str], name: &str) -> bool {
        self.cuts.iter().any(|cut| {
            cut.parent
                .iter()
                .map(String::as_str)
                .eq(parent.iter().copied())
                && (cut.name.as_deref() == Some(name) || cut.meant.as_deref() == Some(name))
        })
    }

    /// Where the table or key at `path` is written: its span, or the span
    /// of its name for a table made by dotted keys (which has none).
    fn span_of(&self, path: &[&str]) -> Option<Range<usize>> {
        let (last, parents) = path.split_last()?;
        let mut table: &dyn toml_edit::TableLike = self.doc.as_ref()?;
        for name in parents {
            table = table.get(name)?.as_table_like()?;
        }
        let item = table.get(last)?;
        item.span().or_else(|| table.key(last)?.span())
    }

    /// The span of the `index`th table of the array of tables at `path`
    /// (`[[sink]]`); the file's start when it has none.
    fn span_of_array_element(&self, path: &[&str], index: usize) -> Range<usize> {
        let (last, parents) = match path.split_last() {
            Some(split) => split,
            None => return 0..0,
        };
        let found = || {
            let mut table: &dyn toml_edit::TableLike = self.doc.as_ref()?;
            for name in parents {
                table = table.get(name)?.as_table_like()?;
            }
            let array = table.get(last)?.as_array_of_tables()?;
            array.get(index)?.span()
        };
        found().unwrap_or(0..0)
    }

    /// Whether anything was cut out of the table or list at `parent`.
    fn cut_in(&self, parent: &[&str]) -> bool {
        let parent = parent.iter().copied();
        self.cuts
            .iter()
            .any(|cut| cut.parent.iter().map(String::as_str).eq(parent.clone()))
    }

    /// `value`, or a "missing key" problem at its table (`table_span`; the
    /// file when the key belongs at the top level).
    fn required<T>(
        &self,
        value: Option<T>,
        table: &[&str],
        table_span: Option<Range<usize>>,
        key: &str,
        hint: &str,
    ) -> Option<T> {
        if value.is_none() {
            self.missing(table, table_span, key, hint);
        }
        value
    }

    /// A "missing key" problem at its table (`table_span`; the file when
    /// the key belongs at the top level), unless the key was cut out.
    fn missing(&self, table: &[&str], table_span: Option<Range<usize>>, key: &str, hint: &str) {
        if self.cut_out(table, key) {
            return;
        }
        let message = format!(
            "missing key `{key}` {}: {hint}",
            lenient::table_place(table)
        );
        self.report(match table_span {
            Some(span) => self.at(span, message),
            None => self.whole(message),
        });
    }

    /// The value, or `fallback` with the problem reported.
    fn keep<T>(&self, result: Result<T, ConfigError>, fallback: T) -> T {
        result.unwrap_or_else(|problem| {
            self.report(problem);
            fallback
        })
    }

    /// Every problem reported, in file order.
    fn finish(self) -> Vec<ConfigError> {
        let mut problems = self.problems.into_inner();
        problems.sort_by_key(|p| p.position().unwrap_or((usize::MAX, 0)));
        problems
    }

    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::At {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole {
            origin: self.origin.to_owned(),
            message: message.into(),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn parse_with_base(
    text: &str,
    origin: &str,
    base: Option<&Path>,
) -> Result<StationConfig, ConfigError> {
    check_with_base(text, origin, base).into_result()
}

fn check_with_base(text: &str, origin: &str, base: Option<&Path>) -> Checked {
    let mut src = Source {
        text,
        origin,
        problems: Default::default(),
        cuts: Vec::new(),
        doc: None,
    };
    let Some(read) = lenient::deserialize::<RawConfig>(&src) else {
        return Checked {
            config: None,
            problems: src.finish(),
            origin: origin.to_owned(),
        };
    };
    src.cuts = read.cuts;
    src.doc = Some(read.doc);
    let config = validate(&src, read.value, base);
    Checked {
        config: Some(config),
        problems: src.finish(),
        origin: origin.to_owned(),
    }
}

/// The config from what deserialised, every problem reported into `src`
/// and a default standing in for each setting that was wrong.
fn validate(src: &Source, raw: RawConfig, base: Option<&Path>) -> StationConfig {
    let base = base.filter(|b| !b.as_os_str().is_empty());
    let resolve = |p: PathBuf| match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    };

    let station_id = src
        .required(
            raw.station_id,
            &[],
            None,
            "station_id",
            "name the station, e.g. station_id = \"line3-station07\"",
        )
        .map_or_else(String::new, |id| {
            src.keep(validate_station_id(src, id), String::new())
        });
    let ports = validate_ports(src, raw.ports, base);
    let line_ending = raw.serial.line_ending.unwrap_or_default();
    let dialect = raw.serial.dialect.unwrap_or_default();
    let serial = validate_serial(src, raw.serial);
    let timeouts = validate_timeouts(src, raw.timeouts);
    let test_station = raw.test_station.unwrap_or(false);
    let (mut plan, plan_span) = match raw.plan {
        Some(plan) => {
            let span = src.span_of(&["plan"]).unwrap_or(0..0);
            (validate_plan(src, plan, test_station), span)
        }
        None => (PlanConfig::default(), 0..0),
    };
    let has_claim = raw.claim.is_some() || src.cut_out(&[], "claim");
    let claim = raw
        .claim
        .and_then(|claim| validate_claim(src, claim, test_station, &resolve));
    if let Some(claim) = &claim {
        plan.claim_sec_tag = claim.sec_tag;
    }
    if !has_claim {
        if let Some(step) = plan
            .steps
            .iter()
            .copied()
            .find(|s| crate::plan::steps::rules(*s).needs_claim)
        {
            src.report(src.at(
                plan_span.clone(),
                format!(
                    "the plan has step `{step}` but there is no [claim] section; add [claim] \
                     with `ownership_key` (the owner's P-256 private key, PEM, mode 0600), or \
                     remove `{step}` from plan.steps"
                ),
            ));
        }
    }
    let has_ca = raw.ca.is_some() || src.cut_out(&[], "ca");
    let ca = raw.ca.and_then(|ca| validate_ca(src, ca));
    let identity_span = raw
        .identity
        .authorities
        .as_ref()
        .map_or(0..0, Spanned::span);
    let identity = validate_identity(src, raw.identity);
    let trust_file = match (raw.trust_file, identity.uses(VerifiedBy::Keys)) {
        (Some(file), true) => Some(resolve(file.into_inner())),
        (None, true) if src.cut_out(&[], "trust_file") => None,
        (None, true) => {
            src.report(src.at(
                identity_span.clone(),
                "identity.authorities lists `keys` (the default) but there is no trust_file; \
                 set trust_file to the CSV of device identity keys, or choose other authorities",
            ));
            None
        }
        (Some(file), false) => {
            src.report(src.at(
                file.span(),
                "trust_file is set but identity.authorities does not list `keys`, so it would \
                 never be read; remove it, or add \"keys\" to identity.authorities",
            ));
            None
        }
        (None, false) => None,
    };
    let has_cloud = raw.cloud.is_some() || src.cut_out(&[], "cloud");
    let cloud = raw
        .cloud
        .and_then(|cloud| validate_cloud(src, cloud, &resolve));
    if !has_cloud && identity.uses(VerifiedBy::Nrfcloud) {
        src.report(src.at(
            identity_span,
            "identity.authorities lists `nrfcloud` but there is no [cloud] section; \
             add [cloud] with api_key_file (or api_key_env)",
        ));
    }
    let http = validate_http(src, raw.http);
    let traceability = traceability::validate(src, raw.traceability);
    let ledger = raw
        .ledger
        .and_then(|ledger| ledger::validate(src, ledger, resolve));
    let (sink_places, sinks) = sink::validate(src, raw.sink, &station_id, resolve)
        .into_iter()
        .unzip();
    let keep_full = retention::validate(src, raw.retention);
    if !has_ca {
        if let Some(step) = plan
            .steps
            .iter()
            .copied()
            .find(|s| crate::plan::steps::rules(*s).needs_ca)
        {
            src.report(src.at(
                plan_span,
                format!(
                    "the plan has step `{step}` but there is no [ca] section; \
                     add [ca] with `certificate` and `key`, or remove `{step}` from plan.steps"
                ),
            ));
        }
    }
    StationConfig {
        station_id,
        database: raw
            .database
            .map(&resolve)
            .unwrap_or_else(crate::ledger::default_db_path),
        trust_file,
        log_format: raw.log_format,
        ports,
        serial,
        line_ending,
        dialect,
        timeouts,
        plan,
        ca: ca.map(|ca| CaConfig {
            certificate: resolve(ca.certificate),
            key: resolve(ca.key),
            validity_days: ca.validity_days,
            install: ca.install.into_iter().map(&resolve).collect(),
        }),
        identity,
        cloud,
        http: HttpConfig {
            token_file: http.token_file.map(&resolve),
            engineer_token_file: http.engineer_token_file.map(&resolve),
            operator_token_file: http.operator_token_file.map(&resolve),
            ..http
        },
        ledger,
        traceability,
        test_station,
        claim,
        sinks,
        sink_places,
        keep_full,
    }
}

/// A sec_tag a host may write (`what` names the setting): 0 to
/// 2147483647, or on a test station also Nordic's debug-decryptable
/// 2147483648 to 2147483667; `None` with the problem reported.
fn validate_sec_tag(
    src: &Source,
    tag: &Spanned<i64>,
    what: &str,
    test_station: bool,
) -> Option<u32> {
    let value = *tag.get_ref();
    let problem = match u32::try_from(value) {
        Ok(v) if v <= SEC_TAG_MAX => return Some(v),
        Ok(v) if DEBUG_SEC_TAGS.contains(&v) && test_station => return Some(v),
        Ok(v) if DEBUG_SEC_TAGS.contains(&v) => format!(
            "{what} {v} is in Nordic's debug-decryptable range {}-{}: credentials there can be \
             decrypted with Nordic's tools, so only a test station may use it (set \
             test_station = true); a production line uses 0 to {SEC_TAG_MAX}",
            DEBUG_SEC_TAGS.start(),
            DEBUG_SEC_TAGS.end()
        ),
        _ => format!(
            "{what} must be between 0 and {SEC_TAG_MAX} (higher values are the modem's own), got {value}"
        ),
    };
    src.report(src.at(tag.span(), problem));
    None
}

/// `[claim]`; `None` when it names no ownership key.
fn validate_claim(
    src: &Source,
    raw: RawClaim,
    test_station: bool,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Option<ClaimConfig> {
    let sec_tag = raw
        .sec_tag
        .and_then(|tag| validate_sec_tag(src, &tag, "claim.sec_tag", test_station))
        .unwrap_or(crate::plan::DEFAULT_CLAIM_SEC_TAG);
    let ownership_key = src.required(
        raw.ownership_key,
        &["claim"],
        src.span_of(&["claim"]),
        "ownership_key",
        "the owner's P-256 private key (PEM, mode 0600), e.g. ownership_key = \"/etc/nrf-provd/ownership-key.pem\"",
    )?;
    Some(ClaimConfig {
        ownership_key: resolve(ownership_key),
        sec_tag,
    })
}

fn validate_http(src: &Source, raw: RawHttp) -> HttpConfig {
    let listen = match raw.listen {
        None => Some(DEFAULT_HTTP_LISTEN),
        Some(text) if text.get_ref().trim().is_empty() => None,
        Some(text) => match text.get_ref().trim().parse::<SocketAddr>() {
            Err(_) => {
                src.report(src.at(
                    text.span(),
                    format!(
                        "http.listen must be an IP address and port, e.g. \"127.0.0.1:9091\", \"[::1]:9091\" or \"0.0.0.0:9091\", or \"\" to turn the server off; got {:?}",
                        text.get_ref()
                    ),
                ));
                None
            }
            Ok(addr) => {
                if !addr.ip().is_loopback() && raw.token_file.is_none() {
                    src.report(src.at(
                        text.span(),
                        format!(
                            "http.listen {addr} is reachable from other machines, so it needs http.token_file: a file (mode 0600) holding the bearer token every request must carry"
                        ),
                    ));
                }
                Some(addr)
            }
        },
    };
    let allowed_hosts = raw
        .allowed_hosts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|host| match normal_host(host.get_ref()) {
            Some(name) => Some(name),
            None => {
                src.report(src.at(
                    host.span(),
                    format!(
                        "http.allowed_hosts: {:?} is not a host name or IP address; list names and addresses without scheme or port, e.g. [\"station07.line.example\", \"192.0.2.7\"]",
                        host.get_ref()
                    ),
                ));
                None
            }
        })
        .collect();
    let readers = match raw.readers {
        None => DEFAULT_HTTP_READERS,
        Some(n) => match usize::try_from(*n.get_ref()) {
            Ok(count @ 1..=MAX_HTTP_READERS) => count,
            _ => {
                src.report(src.at(
                    n.span(),
                    format!("http.readers must be 1 to {MAX_HTTP_READERS}"),
                ));
                DEFAULT_HTTP_READERS
            }
        },
    };
    HttpConfig {
        listen,
        token_file: raw.token_file,
        engineer_token_file: raw.engineer_token_file,
        operator_token_file: raw.operator_token_file,
        allowed_hosts,
        readers,
    }
}

/// A host as `Host` headers are compared with it: an IP address in its
/// usual text (IPv6 without brackets), or a DNS name in lower case without
/// a final dot; `None` when `text` is neither.
pub fn normal_host(text: &str) -> Option<String> {
    let text = text.trim();
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
}

fn validate_identity(src: &Source, raw: RawIdentity) -> IdentityConfig {
    let d = IdentityConfig::default();
    let authorities = match raw.authorities {
        None => d.authorities.clone(),
        Some(list) => {
            let span = list.span();
            let mut authorities = Vec::new();
            let authorities_known: Vec<&str> = VerifiedBy::ALL.iter().map(|v| v.as_str()).collect();
            for item in list.into_inner() {
                let Some(by) = VerifiedBy::parse(item.get_ref()) else {
                    src.report(src.at(
                        item.span(),
                        format!(
                            "unknown identity authority {:?}; expected {}{}",
                            item.get_ref(),
                            one_of(&authorities_known),
                            suggestion(item.get_ref(), &authorities_known),
                        ),
                    ));
                    continue;
                };
                if authorities.contains(&by) {
                    src.report(src.at(item.span(), format!("`{by}` is listed twice")));
                    continue;
                }
                // Only `keys` passes a device it does not know to the next
                // authority; the others always decide.
                if let Some(last) = authorities.last().filter(|a| **a != VerifiedBy::Keys) {
                    src.report(src.at(
                        item.span(),
                        format!(
                            "`{by}` would never be asked: `{last}` decides every device it sees; \
                             only `keys` may come before another authority"
                        ),
                    ));
                    continue;
                }
                authorities.push(by);
            }
            if authorities.is_empty() && src.problems.borrow().is_empty() {
                src.report(src.at(
                    span,
                    "identity.authorities is empty; list who judges a device, e.g. [\"keys\"]",
                ));
            }
            if authorities.is_empty() {
                d.authorities.clone()
            } else {
                authorities
            }
        }
    };
    let reload_max_drop = match raw.reload_max_drop {
        Some(share) if !(0.0..=1.0).contains(share.get_ref()) => {
            src.report(src.at(
                share.span(),
                "identity.reload_max_drop must be a share between 0 and 1, e.g. 0.1 to refuse a reload that drops more than a tenth of the trusted keys",
            ));
            d.reload_max_drop
        }
        Some(share) => share.into_inner(),
        None => d.reload_max_drop,
    };
    IdentityConfig {
        authorities,
        reload_max_drop,
        pin_cose: raw.pin_cose.unwrap_or_default(),
    }
}

/// `[cloud]`, every problem reported with a default in its place; `None`
/// when it names no usable API key source.
fn validate_cloud(
    src: &Source,
    raw: RawCloud,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
) -> Option<CloudConfig> {
    use crate::cloud::CloudSettings;
    let mut settings = match &raw.stage {
        Some(stage) => CloudSettings::for_stage(stage.get_ref()).unwrap_or_else(|e| {
            src.report(src.at(stage.span(), e.to_string()));
            CloudSettings::default()
        }),
        None => CloudSettings::default(),
    };
    // Each URL's error at its own setting (http:// only to this machine).
    let base_url = |what, url: &Spanned<String>| {
        CloudSettings::base_url(what, url.get_ref())
            .map_err(|e| src.report(src.at(url.span(), e.to_string())))
            .ok()
    };
    if let Some(url) = raw
        .provisioning_url
        .as_ref()
        .and_then(|u| base_url("provisioning", u))
    {
        settings.provisioning_url = url;
    }
    if let Some(url) = raw.api_url.as_ref().and_then(|u| base_url("API", u)) {
        settings.api_url = url;
    }
    settings.request_timeout = seconds(
        src,
        raw.request_timeout,
        "cloud.request_timeout",
        settings.request_timeout,
        false,
    );
    settings.max_attempts = checked(
        src,
        raw.attempts,
        |attempts| *attempts > 0,
        "cloud.attempts must be at least 1 (1 = never retry)",
        settings.max_attempts,
    );
    let api_key = match (raw.api_key_file, raw.api_key_env) {
        (Some(file), None) => Some(ApiKeySource::File(resolve(file))),
        (None, Some(env)) if !env.get_ref().is_empty() => Some(ApiKeySource::Env(env.into_inner())),
        (None, Some(env)) => {
            src.report(src.at(env.span(), "cloud.api_key_env is empty"));
            None
        }
        (Some(_), Some(env)) => {
            src.report(src.at(
                env.span(),
                "set one of cloud.api_key_file and cloud.api_key_env, not both",
            ));
            None
        }
        (None, None)
            if src.cut_out(&["cloud"], "api_key_file")
                || src.cut_out(&["cloud"], "api_key_env") =>
        {
            None
        }
        (None, None) => {
            src.report(src.at(
                src.span_of(&["cloud"]).unwrap_or(0..0),
                "[cloud] needs the nRF Cloud API key: api_key_file = \"/etc/nrf-provd/nrfcloud-api-key\" \
                 (mode 0600) or api_key_env = \"NRF_CLOUD_API_KEY\"",
            ));
            None
        }
    };
    // Tags with a problem are reported and left out.
    let tags = |list: Vec<Spanned<String>>, what: &str, separator: char| {
        list.into_iter()
            .filter_map(|tag| {
                let text = tag.get_ref();
                if text.is_empty() || text.contains(separator) || text.chars().any(char::is_control) {
                    src.report(src.at(
                        tag.span(),
                        format!("{what}: {text:?} must be non-empty, on one line and without {separator:?}"),
                    ));
                    None
                } else {
                    Some(tag.into_inner())
                }
            })
            .collect::<Vec<_>>()
    };
    let claim_tags = tags(raw.claim_tags, "cloud.claim_tags", ',');
    let onboard_tags = tags(raw.onboard_tags, "cloud.onboard_tags", '|');
    let onboard_fw_types = match raw.onboard_fw_types {
        Some(list) => tags(list, "cloud.onboard_fw_types", '|'),
        None => vec!["APP".into(), "MODEM".into()],
    };
    let hand_off = match raw.hand_off {
        Some(h) => HandOff::parse(h.get_ref()).unwrap_or_else(|| {
            let known: Vec<&str> = HandOff::ALL.iter().map(|h| h.as_str()).collect();
            src.report(src.at(
                h.span(),
                format!(
                    "cloud.hand_off {:?}: expected \"off\", \"claim\" or \"claim+onboard\"{}",
                    h.get_ref(),
                    suggestion(h.get_ref(), &known),
                ),
            ));
            HandOff::Off
        }),
        None => HandOff::Off,
    };
    let hand_off_every = seconds(
        src,
        raw.hand_off_every,
        "cloud.hand_off_every",
        Duration::from_secs(60),
        false,
    );
    let bulk_op_poll = seconds(
        src,
        raw.bulk_op_poll,
        "cloud.bulk_op_poll",
        Duration::from_secs(5),
        false,
    );
    Some(CloudConfig {
        settings,
        api_key: api_key?,
        claim_tags,
        onboard_sub_type: raw.onboard_sub_type,
        onboard_tags,
        onboard_fw_types,
        hand_off,
        hand_off_every,
        bulk_op_poll,
    })
}

/// "; did you mean \"x\"?" when `found` is one edit from a known value.
/// `a, b or c`.
fn one_of(known: &[&str]) -> String {
    match known.split_last() {
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn suggestion(found: &str, known: &[&str]) -> String {
    lenient::did_you_mean(found, known)
        .map(|name| format!("; did you mean {name:?}?"))
        .unwrap_or_default()
}

fn validate_station_id(src: &Source, id: Spanned<String>) -> Result<String, ConfigError> {
    let span = id.span();
    let id = id.into_inner();
    if id.trim().is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(src.at(
            span,
            "station_id must be 1 to 64 printable characters, e.g. \"line3-station07\"",
        ));
    }
    Ok(id)
}

/// A port pattern, absolute or relative to the config file's directory
/// (`base`), checked as a glob; the pattern to scan with.
fn validate_glob(
    src: &Source,
    pattern: &Spanned<String>,
    what: &str,
    base: Option<&Path>,
) -> Result<String, ConfigError> {
    let text = pattern.get_ref();
    let full = if text.starts_with('/') {
        text.clone()
    } else if let Some(dir) = base {
        dir.join(text).display().to_string()
    } else {
        return Err(src.at(
            pattern.span(),
            format!(
                "{what} must be an absolute path or glob, e.g. \"/dev/serial/by-id/*\" \
                 (a relative one is relative to the config file's directory)"
            ),
        ));
    };
    glob::Pattern::new(&full).map_err(|e| {
        src.at(
            pattern.span(),
            format!(
                "{what} `{text}` is not a valid glob: {} (at character {})",
                e.msg,
                e.pos + 1
            ),
        )
    })?;
    Ok(full)
}

fn validate_ports(src: &Source, raw: Option<RawPorts>, base: Option<&Path>) -> PortsConfig {
    const EXAMPLE: &str = "e.g. [\"/dev/serial/by-id/*\"]";
    let hint = format!("list the ports to watch: paths = {EXAMPLE}");
    let present = raw.is_some();
    if !present {
        src.missing(&[], None, "ports", &format!("add [ports] and {hint}"));
    }
    let raw = raw.unwrap_or_default();
    let paths = match raw.paths {
        Some(listed) => {
            if listed.get_ref().is_empty() && !src.cut_in(&["ports", "paths"]) {
                src.report(src.at(
                    listed.span(),
                    format!("ports.paths must list at least one path or glob, {EXAMPLE}"),
                ));
            }
            listed
                .get_ref()
                .iter()
                .filter_map(|path| {
                    let checked = validate_glob(src, path, "ports.paths entry", base);
                    checked.map_err(|problem| src.report(problem)).ok()
                })
                .collect()
        }
        None => {
            // Without [ports] at all, that is the problem (reported above).
            if present {
                src.missing(&["ports"], src.span_of(&["ports"]), "paths", &hint);
            }
            Vec::new()
        }
    };
    let exclude = raw
        .exclude
        .iter()
        .filter_map(|path| {
            let checked = validate_glob(src, path, "ports.exclude entry", base);
            checked.map_err(|problem| src.report(problem)).ok()
        })
        .collect();
    let rescan_interval = match raw.rescan_interval_ms {
        Some(ms) if *ms.get_ref() == 0 => {
            src.report(src.at(
                ms.span(),
                "ports.rescan_interval_ms must be at least 1 (milliseconds)",
            ));
            Duration::from_millis(1000)
        }
        Some(ms) => Duration::from_millis(ms.into_inner()),
        None => Duration::from_millis(1000),
    };
    PortsConfig {
        paths,
        exclude,
        rescan_interval,
    }
}

/// The value when `ok` holds for it, else `default` with `message` reported
/// at the value; `default` when absent.
fn checked<T>(
    src: &Source,
    value: Option<Spanned<T>>,
    ok: impl Fn(&T) -> bool,
    message: &str,
    default: T,
) -> T {
    match value {
        Some(v) if !ok(v.get_ref()) => {
            src.report(src.at(v.span(), message));
            default
        }
        Some(v) => v.into_inner(),
        None => default,
    }
}

fn validate_serial(src: &Source, raw: RawSerial) -> SerialSettings {
    let defaults = SerialSettings::default();
    let baud = checked(
        src,
        raw.baud,
        |b| *b > 0,
        "serial.baud must be a positive rate, e.g. 115200",
        defaults.baud,
    );
    let data_bits = checked(
        src,
        raw.data_bits,
        |d| (5..=8).contains(d),
        "serial.data_bits must be 5, 6, 7 or 8",
        defaults.data_bits,
    );
    let stop_bits = checked(
        src,
        raw.stop_bits,
        |b| (1..=2).contains(b),
        "serial.stop_bits must be 1 or 2",
        defaults.stop_bits,
    );
    SerialSettings {
        baud,
        data_bits,
        parity: raw.parity.unwrap_or(defaults.parity),
        stop_bits,
        flow_control: raw.flow_control.unwrap_or(defaults.flow_control),
        dtr: raw.dtr.unwrap_or(defaults.dtr),
        exclusive: defaults.exclusive,
    }
}

/// A number of seconds (more than zero, or zero too when `allow_zero`);
/// `default` when absent, or with the problem reported when invalid.
fn seconds(
    src: &Source,
    value: Option<Spanned<Seconds>>,
    name: &str,
    default: Duration,
    allow_zero: bool,
) -> Duration {
    let Some(value) = value else {
        return default;
    };
    let secs = value.get_ref().0;
    let ok = secs.is_finite() && (secs > 0.0 || (allow_zero && secs == 0.0));
    match ok.then(|| Duration::try_from_secs_f64(secs).ok()).flatten() {
        Some(duration) => duration,
        None => {
            let expected = if allow_zero {
                "zero or more"
            } else {
                "more than zero"
            };
            src.report(src.at(
                value.span(),
                format!("{name} must be a number of seconds, {expected} (e.g. 5 or 0.5)"),
            ));
            default
        }
    }
}

fn validate_timeouts(src: &Source, raw: RawTimeouts) -> Timeouts {
    let d = Timeouts::default();
    let c = &d.commands;
    Timeouts {
        commands: CommandTimeouts {
            command: seconds(src, raw.command, "timeouts.command", c.command, false),
            attest: seconds(src, raw.attest, "timeouts.attest", c.attest, false),
            keygen: seconds(src, raw.keygen, "timeouts.keygen", c.keygen, false),
            jwt: seconds(src, raw.jwt, "timeouts.jwt", c.jwt, false),
            cmng: seconds(src, raw.cmng, "timeouts.cmng", c.cmng, false),
            cfun: seconds(src, raw.cfun, "timeouts.cfun", c.cfun, false),
        },
        run: seconds(src, raw.run, "timeouts.run", d.run, false),
        shutdown_grace: seconds(
            src,
            raw.shutdown_grace,
            "timeouts.shutdown_grace",
            d.shutdown_grace,
            true,
        ),
    }
}

/// Placeholders a CSR attribute template may use.
const PLACEHOLDERS: [&str; 2] = ["device_uuid", "imei"];

/// Placeholder names used in a CSR attribute template, or what is wrong with it.
fn template_placeholders(template: &str) -> Result<Vec<&str>, String> {
    if template.contains('"') {
        return Err(
            "must not contain `\"` (the value is sent inside a quoted AT parameter)".into(),
        );
    }
    if template.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        let tail = &rest[open..];
        if tail.starts_with('}') {
            return Err("has a `}` without a matching `{`".into());
        }
        let close = tail
            .find('}')
            .ok_or_else(|| "has a `{` without a closing `}`".to_owned())?;
        let name = &tail[1..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "uses unknown placeholder `{{{name}}}`; expected `{{device_uuid}}` or `{{imei}}`"
            ));
        }
        used.push(name);
        rest = &tail[close + 1..];
    }
    Ok(used)
}

fn quoted_text(src: &Source, value: &Spanned<String>, name: &str) -> Result<(), ConfigError> {
    let text = value.get_ref();
    if text.contains('"') || text.chars().any(char::is_control) {
        return Err(src.at(
            value.span(),
            format!("plan.{name} must not contain `\"` or control characters (it is sent inside a quoted AT parameter)"),
        ));
    }
    Ok(())
}

fn validate_plan(src: &Source, raw: RawPlan, test_station: bool) -> PlanConfig {
    let d = PlanConfig::default();

    let sec_tag = raw
        .sec_tag
        .and_then(|tag| validate_sec_tag(src, &tag, "plan.sec_tag", test_station))
        .unwrap_or(d.sec_tag);
    let min_firmware = raw.min_firmware.and_then(|text| {
        let version = crate::modem::FirmwareVersion::parse(text.get_ref());
        if version.is_none() {
            src.report(src.at(
                text.span(),
                format!(
                    "plan.min_firmware must be a modem firmware version x.y.z, e.g. \"2.0.0\", got {:?}",
                    text.get_ref()
                ),
            ));
        }
        version
    });

    let (csr_attributes, csr_span, placeholders) = match raw.csr_attributes {
        Some(attrs) => match template_placeholders(attrs.get_ref()) {
            Ok(used) => {
                let used = used.into_iter().map(str::to_owned).collect::<Vec<_>>();
                (attrs.get_ref().clone(), Some(attrs.span()), used)
            }
            Err(why) => {
                src.report(src.at(attrs.span(), format!("plan.csr_attributes {why}")));
                (d.csr_attributes.clone(), None, Vec::new())
            }
        },
        None => (
            d.csr_attributes.clone(),
            None,
            vec!["device_uuid".to_owned()],
        ),
    };

    let key_usage = match raw.key_usage {
        Some(ku) => {
            let text = ku.get_ref();
            if text.len() != 9 || !text.bytes().all(|b| b == b'0' || b == b'1') {
                src.report(src.at(
                    ku.span(),
                    "plan.key_usage must be 9 characters of 0 and 1 in X.509 keyUsage order, e.g. \"101010000\"",
                ));
                None
            } else {
                Some(ku.into_inner())
            }
        }
        None => None,
    };

    if let Some(aud) = &raw.jwt_audience {
        src.keep(quoted_text(src, aud, "jwt_audience"), ());
    }

    let steps_span = raw.steps.as_ref().map(Spanned::span);
    let steps = match raw.steps {
        Some(steps) => steps.into_inner(),
        None => Step::default_plan()
            .into_iter()
            .map(|s| Spanned::new(0..0, s))
            .collect(),
    };
    if steps.is_empty() && !src.cut_in(&["plan", "steps"]) {
        src.report(src.at(
            steps_span.clone().unwrap_or(0..0),
            format!("plan.steps must list at least one step: {}", step_list()),
        ));
    } else if !steps.is_empty() {
        validate_order(src, &steps);
    }
    let has = |step: Step| steps.iter().any(|s| *s.get_ref() == step);
    let index = |step: Step| steps.iter().position(|s| *s.get_ref() == step);
    if min_firmware.is_some()
        && !has(Step::Identify)
        && !src.cut_out(&["plan", "steps"], "identify")
    {
        src.report(src.at(
            steps_span.clone().unwrap_or(0..0),
            "plan.min_firmware needs step `identify` in plan.steps: it reads the firmware (AT+CGMR)",
        ));
    }

    // The CSR subject is rendered when keygen runs: the values it uses must
    // be known by then.
    if let Some(keygen) = index(Step::Keygen) {
        for (placeholder, source) in [("device_uuid", Step::Attest), ("imei", Step::Identify)] {
            if placeholders.iter().any(|p| p == placeholder)
                && index(source).is_none_or(|i| i >= keygen)
                && !src.cut_out(&["plan", "steps"], source.as_str())
            {
                let span = csr_span
                    .clone()
                    .or_else(|| steps.get(keygen).map(Spanned::span))
                    .unwrap_or(0..0);
                src.report(src.at(
                    span,
                    format!(
                        "plan.csr_attributes uses {{{placeholder}}}, which is known only after step `{source}`; put `{source}` before `keygen`"
                    ),
                ));
            }
        }
    }

    let jwt_exp_delta = match raw.jwt_exp_delta {
        Some(delta) if *delta.get_ref() == 0 && has(Step::Jwt) => {
            src.report(src.at(
                delta.span(),
                "plan.jwt_exp_delta must be at least 1 second: with 0 the modem leaves out iat/exp and the token's time window cannot be checked",
            ));
            d.jwt_exp_delta
        }
        Some(delta) => delta.into_inner(),
        None => d.jwt_exp_delta,
    };

    PlanConfig {
        steps: steps.into_iter().map(Spanned::into_inner).collect(),
        sec_tag,
        delete_existing_key: raw.delete_existing_key.unwrap_or(d.delete_existing_key),
        csr_attributes,
        key_usage,
        retries: raw.retries.unwrap_or(d.retries),
        jwt_exp_delta,
        jwt_audience: raw.jwt_audience.map(Spanned::into_inner),
        reprovision: raw.reprovision.unwrap_or_default(),
        min_firmware,
        confirm_unsupported: raw.confirm_unsupported.unwrap_or_default(),
        claim_sec_tag: d.claim_sec_tag,
    }
}

/// Order rules: each step listed once, and each step's own rules (what
/// must come before it, where it must stand; see `plan::steps`).
fn validate_order(src: &Source, steps: &[Spanned<Step>]) {
    use crate::plan::steps::{Place, rules};
    let last = steps.len() - 1;
    for (i, step) in steps.iter().enumerate() {
        let name = *step.get_ref();
        if let Some(first) = steps[..i].iter().position(|s| *s.get_ref() == name) {
            let (line, _) = line_column(src.text, steps[first].span().start);
            src.report(src.at(
                step.span(),
                format!(
                    "step `{name}` is listed twice (first on line {line}); each step runs once"
                ),
            ));
            continue;
        }
        let rules = rules(name);
        match rules.place {
            Place::First(why) if i != 0 => {
                src.report(src.at(step.span(), format!("step `{name}` must come first: {why}")));
            }
            Place::Last(why) if i != last => {
                src.report(src.at(step.span(), format!("step `{name}` must come last: {why}")));
            }
            _ => {}
        }
        for (needed, why) in rules.needs {
            // A misspelt `needed` was cut out and reported already.
            let misspelt = src.cut_out(&["plan", "steps"], needed.as_str());
            if !misspelt && !steps[..i].iter().any(|s| s.get_ref() == needed) {
                src.report(src.at(
                    step.span(),
                    format!("step `{name}` needs step `{needed}` before it: {why}"),
                ));
            }
        }
    }
}

struct ValidCa {
    certificate: PathBuf,
    key: PathBuf,
    validity_days: u32,
    install: Vec<PathBuf>,
}

/// `[ca]`, or `None` (reported) when it lacks its certificate or key.
fn validate_ca(src: &Source, raw: RawCa) -> Option<ValidCa> {
    let span = src.span_of(&["ca"]);
    let validity_days = checked(
        src,
        raw.validity_days,
        |days| *days > 0,
        "ca.validity_days must be at least 1, e.g. 3650",
        3650,
    );
    let certificate = src.required(
        raw.certificate,
        &["ca"],
        span.clone(),
        "certificate",
        "the station CA's certificate (PEM), e.g. certificate = \"/etc/nrf-provd/ca.pem\"",
    );
    let key = src.required(
        raw.key,
        &["ca"],
        span,
        "key",
        "the station CA's private key (PEM, mode 0600), e.g. key = \"/etc/nrf-provd/ca.key\"",
    );
    let (certificate, key) = (certificate?, key?);
    let install = raw.install.unwrap_or_else(|| vec![certificate.clone()]);
    Some(ValidCa {
        certificate,
        key,
        validity_days,
        install,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_characters_not_bytes() {
        let text = "a = 1\nb = \"é\" x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes; the x after it is column 9.
        let x = text.rfind('x').unwrap_or_default();
        assert_eq!(line_column(text, x), (2, 9));
    }

    #[test]
    fn templates_list_their_placeholders() {
        assert_eq!(
            template_placeholders("O=Acme,CN={device_uuid}-{imei}"),
            Ok(vec!["device_uuid", "imei"])
        );
        assert!(template_placeholders("CN={serial}").is_err());
        assert!(template_placeholders("CN={device_uuid").is_err());
        assert!(template_placeholders("CN=}x").is_err());
        assert!(template_placeholders("CN=\"x\"").is_err());
    }
}
