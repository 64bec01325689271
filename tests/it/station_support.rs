//! Shared set-up for station tests: simulated boards on pseudo-terminals, a
//! station configuration pointing at them, and helpers to watch the runs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nrf_provd_core::ledger::{LedgerReader, RunFilter, SqliteLedger};
use nrf_provd_core::record::RunRecord;
use nrf_provd_core::station::{Sources, Station, StationEvent};
use nrf_provd_daemon::config::StationConfig;
use nrf91_sim::{FaultSpec, Fleet, Latency, SimOptions};
use tokio::sync::broadcast;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub fleet: Fleet,
    pub config: StationConfig,
}

impl Env {
    /// `count` simulated boards with `faults`, and a demo-like config for them.
    pub async fn new(count: usize, latency: Latency, faults: &[&str]) -> Env {
        let options = SimOptions {
            latency,
            faults: faults
                .iter()
                .map(|f| f.parse::<FaultSpec>().expect("fault spec"))
                .collect(),
            ..SimOptions::default()
        };
        Env::with_options(count, options).await
    }

    pub async fn with_options(count: usize, options: SimOptions) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = dir.path().join("ports");
        let fleet = Fleet::start(&ports, count, 7, options)
            .await
            .expect("start fleet");
        let mut config =
            nrf_provd_tools::demo::station_config(dir.path(), &ports, &fleet.trust_csv())
                .expect("station config");
        config.ports.rescan_interval = Duration::from_millis(100);
        Env { dir, fleet, config }
    }

    pub fn port(&self, i: usize) -> String {
        self.fleet.link(i).display().to_string()
    }

    /// Start the station in this process.
    pub fn station(
        &self,
    ) -> (
        Arc<Station>,
        broadcast::Receiver<StationEvent>,
        tokio::task::JoinHandle<()>,
    ) {
        let station = nrf_provd_daemon::setup::station(&self.config, Sources::default())
            .expect("assemble station");
        let events = station.subscribe();
        let serving = tokio::spawn(Arc::clone(&station).serve());
        (station, events, serving)
    }

    /// The demo configuration's trust file.
    pub fn trust_file(&self) -> &Path {
        self.config
            .trust_file
            .as_deref()
            .expect("the demo config has a trust file")
    }

    /// Write the config as TOML for a daemon child process.
    pub fn write_config(&self, tweak: impl FnOnce(&mut String)) -> PathBuf {
        let c = &self.config;
        let ca = c.ca.as_ref().expect("demo config has a CA");
        let mut text = format!(
            r#"station_id = "test"
database = "{db}"
trust_file = "{trust}"

[ports]
paths = ["{ports}"]
rescan_interval_ms = 100

[serial]
flow_control = "none"

[timeouts]
command = 5
keygen = 30
run = 60
shutdown_grace = 20

[plan]
steps = ["probe", "identify", "offline", "attest", "keygen", "certify", "install", "confirm", "jwt", "restore"]

[ca]
certificate = "{cert}"
key = "{key}"

[http]
listen = "127.0.0.1:0"
"#,
            db = c.database.display(),
            trust = self.trust_file().display(),
            ports = c.ports.paths[0],
            cert = ca.certificate.display(),
            key = ca.key.display(),
        );
        tweak(&mut text);
        let path = self.dir.path().join("station.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub async fn runs(&self) -> Vec<RunRecord> {
        runs_in(&self.config.database).await
    }
}

/// Every run recorded in the database at `db` (none when there is none).
pub async fn runs_in(db: &Path) -> Vec<RunRecord> {
    match SqliteLedger::open_read_only(db) {
        Ok(reader) => reader.runs(&RunFilter::default()).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

/// Collect `n` finished runs from the station's events (panics after a
/// generous deadline: a hang is a failure, not a timing assertion).
pub async fn finished_runs(
    events: &mut broadcast::Receiver<StationEvent>,
    n: usize,
) -> Vec<RunRecord> {
    let mut runs = Vec::new();
    while runs.len() < n {
        let event = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .expect("station made no progress for 120 s")
            .expect("event channel");
        if let StationEvent::RunFinished { record, .. } = event {
            runs.push(std::sync::Arc::unwrap_or_clone(record));
        }
    }
    runs
}

/// The packaged binary: the daemon and the station's commands.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_nrf-provd")
}

/// The developers' binary: the product's commands and `simulate`, `demo`,
/// `bench`. It is nrf-provd-tools's, so cargo sets no `CARGO_BIN_EXE_` for it
/// here; testing the workspace (`scripts/test`, `cargo test --workspace`)
/// builds it beside `nrf-provd`, since its own crate's tests run it.
pub fn dev_binary() -> &'static std::path::Path {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::path::Path::new(binary()).with_file_name("nrf-provd-dev");
        assert!(
            path.is_file(),
            "{} is not built: run the tests of the whole workspace \
             (scripts/test, or `cargo test --workspace`), which builds it",
            path.display()
        );
        path
    })
}

/// A daemon child process (`nrf-provd run --log info`) whose log lines the
/// test can wait for: the station's own account of what it did, instead of
/// sleeping and hoping.
pub struct Daemon {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
    /// Where the next `wait_for_log` starts looking in `log`.
    cursor: usize,
    /// Run lines `runs_finished` has handed out.
    runs_seen: usize,
}

impl Daemon {
    /// The daemon logging its own lines plus each step as it finishes.
    pub fn spawn(config: &Path) -> Daemon {
        Daemon::spawn_logging(config, Some("info,nrf_provd_core::plan=debug"))
    }

    /// The daemon with `--log FILTER`, or at its default level with `None`
    /// (e.g. with `nrf91_at=debug` every AT command sent is a line).
    pub fn spawn_logging(config: &Path, filter: Option<&str>) -> Daemon {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(binary());
        if let Some(filter) = filter {
            command.args(["--log", filter]);
        }
        command
            .env_remove("NRF_PROVD_LOG")
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        // A daemon outlives a test that fails (or a test binary that is
        // killed) unless told otherwise: it dies with the thread that
        // started it. Drop covers the normal end of a test.
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the new
        // process; it allocates nothing and is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().expect("spawn nrf-provd run");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
            cursor: 0,
            runs_seen: 0,
        }
    }

    /// Read what the daemon wrote until `done` holds on the log (panics after
    /// a generous deadline, or when the daemon's stderr closes first).
    async fn read_until(&mut self, what: &str, done: impl Fn(&Daemon) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !done(self) {
            match self.lines.try_recv() {
                Ok(line) => self.log.push(line),
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no {what} within 120 s; log:\n{}",
                        self.log.join("\n")
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("daemon exited before {what}; log:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// The next log line (after the last one this found) containing every
    /// one of `needles`.
    pub async fn wait_for_log(&mut self, needles: &[&str]) -> String {
        let found = |d: &Daemon| {
            d.log[d.cursor.min(d.log.len())..]
                .iter()
                .position(|l| needles.iter().all(|n| l.contains(n)))
        };
        self.read_until(&format!("log line with {needles:?}"), |d| {
            found(d).is_some()
        })
        .await;
        let at = self.cursor + found(self).unwrap_or_default();
        self.cursor = at + 1;
        self.log[at].clone()
    }

    /// Where the daemon's HTTP server listens, from its "station ready"
    /// line (call before waiting for later lines).
    pub async fn http_addr(&mut self) -> std::net::SocketAddr {
        let line = self.wait_for_log(&["station ready", "http=http://"]).await;
        let rest = &line[line.find("http=http://").expect("http field") + "http=http://".len()..];
        let addr = rest.split('/').next().expect("address");
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    /// Wait for `n` more runs to finish (the station's one line per run,
    /// wherever they are in the log); returns those lines. Later
    /// `wait_for_log`s look after the last of them.
    pub async fn runs_finished(&mut self, n: usize) -> Vec<String> {
        let run_lines = |d: &Daemon| -> Vec<usize> {
            d.log
                .iter()
                .enumerate()
                .filter(|(_, l)| l.contains(nrf_provd_core::station::RUN_LOG))
                .map(|(i, _)| i)
                .collect()
        };
        let want = self.runs_seen + n;
        self.read_until(&format!("{want} run lines"), |d| run_lines(d).len() >= want)
            .await;
        let at = run_lines(self)[self.runs_seen..want].to_vec();
        self.runs_seen = want;
        if let Some(last) = at.last() {
            self.cursor = self.cursor.max(last + 1);
        }
        at.iter().map(|&i| self.log[i].clone()).collect()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal daemon");
    }

    /// SIGTERM, wait for the exit (bounded); its status and every line it
    /// logged, the last ones included.
    pub async fn stop_with_log(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut status = None;
        for _ in 0..600 {
            status = self.child.try_wait().expect("wait");
            if status.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(status) = status else {
            let _ = self.child.kill();
            panic!("daemon did not exit within 60 s");
        };
        // stderr is closed now: the reader thread ends after the last line.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }

    /// SIGTERM, then wait for the exit (bounded) and return its status.
    pub async fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        panic!("daemon did not exit within 60 s");
    }
}

impl Drop for Daemon {
    /// A daemon a test did not stop (it failed, or it returned early) is
    /// killed and reaped, not left running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `nrf-provd run` on `config` expecting it to refuse to start: its exit
/// status and stderr.
pub fn refused_start(config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .output()
        .expect("run nrf-provd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
