//! The station daemon as a child process (`nrf-provd run`), for the crash
//! bench and the soak: the process measured and killed is the daemon alone,
//! not the harness and its bookkeeping.
//!
//! The daemon logs JSON; the harness reads its one line per run
//! (`station::RUN_LOG`) to learn which port finished, with which run and
//! outcome.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::BenchError;
use super::child::SimChild;
use crate::record::{Outcome, RunId};

/// A finished run as the daemon reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub port: String,
    pub run: RunId,
    pub outcome: Outcome,
    /// The rest of the line: `<step> <code>: <words>` for a failure.
    pub detail: String,
}

/// A running `nrf-provd run` child.
pub struct DaemonChild {
    child: Child,
    runs: mpsc::UnboundedReceiver<Reported>,
    /// Where its HTTP server listens, from its "station ready" line.
    http: Option<oneshot::Receiver<SocketAddr>>,
    pub pid: u32,
}

/// The daemon's configuration for a simulator's boards, written to
/// `dir/station.toml`: the embedded demo configuration (`config/demo.toml`)
/// with its files in `dir` (a fresh CA, the simulator's trust file, the
/// database), JSON logs, and whatever `tweak` changes.
pub fn write_config(
    dir: &Path,
    sim: &SimChild,
    tweak: impl FnOnce(&mut toml::Table),
) -> Result<PathBuf, BenchError> {
    let files = crate::demo::station_config(dir, &sim.ports_dir, &sim.trust_csv)?;
    let invalid = |e: &dyn std::fmt::Display| BenchError::Invalid(format!("daemon config: {e}"));
    let mut table: toml::Table = crate::config::DEMO_TOML.parse().map_err(|e| invalid(&e))?;
    let text = |p: &Path| toml::Value::String(p.display().to_string());
    table.insert("station_id".into(), "bench".into());
    table.insert("database".into(), text(&files.database));
    if let Some(trust_file) = &files.trust_file {
        table.insert("trust_file".into(), text(trust_file));
    }
    table.insert("log_format".into(), "json".into());
    // The page and /metrics are served as in production, on a port of the
    // kernel's choosing: benches and tests run side by side.
    let mut http = toml::Table::new();
    http.insert("listen".into(), "127.0.0.1:0".into());
    table.insert("http".into(), http.into());
    let section = |table: &mut toml::Table, name: &str| -> Result<toml::Table, BenchError> {
        match table.remove(name) {
            Some(toml::Value::Table(t)) => Ok(t),
            _ => Err(invalid(&format!("config/demo.toml has no [{name}]"))),
        }
    };
    let mut ports = section(&mut table, "ports")?;
    ports.insert(
        "paths".into(),
        toml::Value::Array(
            files
                .ports
                .paths
                .iter()
                .map(|p| p.as_str().into())
                .collect(),
        ),
    );
    table.insert("ports".into(), ports.into());
    if let Some(ca) = &files.ca {
        let mut section = section(&mut table, "ca")?;
        section.insert("certificate".into(), text(&ca.certificate));
        section.insert("key".into(), text(&ca.key));
        section.insert(
            "install".into(),
            toml::Value::Array(ca.install.iter().map(|p| text(p)).collect()),
        );
        table.insert("ca".into(), section.into());
    }
    tweak(&mut table);
    let path = dir.join("station.toml");
    std::fs::write(&path, table.to_string()).map_err(|source| BenchError::Dir {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The HTTP address in the daemon's "station ready" line, if this is it.
fn ready_line(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "station ready" {
        return None;
    }
    let url = fields.get("http")?.as_str()?;
    url.strip_prefix("http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

/// Read one JSON log line; `Some` when it is a run line.
fn run_line(line: &str) -> Option<Reported> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("target")?.as_str()? != crate::station::RUN_LOG {
        return None;
    }
    let fields = value.get("fields")?;
    let message = fields.get("message")?.as_str()?;
    let (verdict, detail) = message.split_once(' ').unwrap_or((message, ""));
    // The port is a field of the outermost span (`port`, then `run`); the
    // daemon logs the span list, not the current span again beside it.
    let port = value
        .get("spans")?
        .as_array()?
        .iter()
        .find_map(|span| span.get("port")?.as_str())?;
    Some(Reported {
        port: port.to_string(),
        run: fields.get("run")?.as_i64()?,
        outcome: Outcome::parse(&verdict.to_lowercase())?,
        detail: detail.to_string(),
    })
}

impl DaemonChild {
    /// Start `executable run --config config`; its stderr is copied to
    /// `log` and its run lines are read.
    pub fn start(executable: &Path, config: &Path, log: &Path) -> Result<DaemonChild, BenchError> {
        let io = |what: &'static str| {
            move |source: std::io::Error| BenchError::Simulator {
                detail: format!("daemon: {what}: {source}"),
            }
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io("log"))?;
        let mut child = Command::new(executable)
            .args(["--log", "info", "--log-format", "json", "run", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("start"))?;
        let pid = child.id().unwrap_or(0);
        let stderr = child.stderr.take().ok_or_else(|| BenchError::Simulator {
            detail: "daemon: no stderr".into(),
        })?;
        let (tx, runs) = mpsc::unbounded_channel();
        let (ready, http) = oneshot::channel();
        tokio::spawn(async move {
            use std::io::Write;
            let mut ready = Some(ready);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = writeln!(file, "{line}");
                if let Some(addr) = ready.is_some().then(|| ready_line(&line)).flatten() {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(addr);
                    }
                }
                if let Some(run) = run_line(&line) {
                    if tx.send(run).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(DaemonChild {
            child,
            runs,
            http: Some(http),
            pid,
        })
    }

    /// Where the daemon's HTTP server listens, once it has said it is
    /// ready (call once).
    pub async fn http_addr(&mut self) -> Result<SocketAddr, BenchError> {
        let gone = || BenchError::Simulator {
            detail: "daemon: no \"station ready\" line with an http address".into(),
        };
        let ready = self.http.take().ok_or_else(gone)?;
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .map_err(|_| gone())?
            .map_err(|_| gone())
    }

    /// The next run the daemon reports; `None` when it has exited.
    pub async fn next_run(&mut self) -> Option<Reported> {
        self.runs.recv().await
    }

    /// A run reported so far, without waiting.
    pub fn try_next_run(&mut self) -> Option<Reported> {
        self.runs.try_recv().ok()
    }

    /// SIGKILL, as a crash or an expired shutdown grace would.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM and wait (at most `limit`): the graceful stop. Then the run
    /// lines still unread.
    pub async fn stop(mut self, limit: Duration) -> Result<Vec<Reported>, BenchError> {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .map_err(|_| BenchError::Stalled(limit))?
            .map_err(|e| BenchError::Simulator {
                detail: format!("daemon: wait: {e}"),
            })?;
        if !status.success() {
            return Err(BenchError::Simulator {
                detail: format!("daemon exited with {status}"),
            });
        }
        let mut rest = Vec::new();
        while let Some(run) = self.runs.recv().await {
            rest.push(run);
        }
        Ok(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_address_is_read_from_the_ready_line() {
        let line = r#"{"timestamp":"2026-12-07T02:42:04Z","level":"INFO","fields":{"message":"station ready","config":"/tmp/x/station.toml","http":"http://127.0.0.1:40123/"},"target":"nrf_provd::cli::station"}"#;
        assert_eq!(ready_line(line), "127.0.0.1:40123".parse().ok());
        assert_eq!(ready_line(&line.replace("station ready", "stopped")), None);
        assert_eq!(ready_line("not json"), None);
    }

    #[test]
    fn run_lines_are_read_from_the_json_log() {
        let line = r#"{"timestamp":"2026-12-02T02:42:04Z","level":"INFO","fields":{"message":"FAILED keygen timeout: no answer","run":12,"device":"-","imei":"-"},"target":"nrf_provd::run","spans":[{"port":"/tmp/x/ttySIM3","name":"port"},{"id":12,"name":"run"}]}"#;
        assert_eq!(
            run_line(line),
            Some(Reported {
                port: "/tmp/x/ttySIM3".into(),
                run: 12,
                outcome: Outcome::Failed,
                detail: "keygen timeout: no answer".into(),
            })
        );
        assert_eq!(
            run_line(r#"{"target":"nrf_provd::station","fields":{}}"#),
            None
        );
        assert_eq!(run_line("not json"), None);
        let passed = line.replace("FAILED keygen timeout: no answer", "PASSED");
        assert_eq!(run_line(&passed).map(|r| r.outcome), Some(Outcome::Passed));
    }
}
