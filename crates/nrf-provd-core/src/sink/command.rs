//! `kind = "command"`: run a program with the run's JSON on stdin; exit 0
//! acknowledges, anything else is retried (its stderr's tail kept as the
//! error). No shell: `run` is the program and its arguments.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{Delivery, RunJson, Sink, SinkConfig, SinkError};

/// How much of the program's stderr is kept as the error.
const STDERR_TAIL: usize = 1024;

pub struct CommandSink {
    name: String,
    run: Vec<String>,
    timeout: Duration,
}

impl CommandSink {
    pub fn new(run: Vec<String>, timeout: Duration) -> Result<CommandSink, SinkError> {
        let name = SinkConfig::Command {
            run: run.clone(),
            timeout,
        }
        .name();
        if run.first().is_none_or(String::is_empty) {
            return Err(SinkError::Invalid {
                sink: name,
                detail: "`run` names no program".into(),
            });
        }
        Ok(CommandSink { name, run, timeout })
    }

    async fn run_once(&self, run: &RunJson) -> Result<Delivery, String> {
        let mut child = Command::new(&self.run[0])
            .args(&self.run[1..])
            .env("NRF_PROVD_RUN_UID", run.uid.hyphenated().to_string())
            .env("NRF_PROVD_IDEMPOTENCY_KEY", &run.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A program that outlives its timeout is killed, not left behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.run[0]))?;
        let mut stdin = child.stdin.take();
        let mut stderr = child.stderr.take();
        let body = run.body.clone();
        let feed = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A program that does not read its stdin is its own business:
                // its exit status decides.
                let _ = stdin.write_all(&body).await;
                let _ = stdin.shutdown().await;
            }
            drop(stdin);
        };
        let drain = async move {
            let mut tail = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
            }
            tail
        };
        let (_, tail, status) = tokio::join!(feed, drain, child.wait());
        let status = status.map_err(|e| format!("waiting for {}: {e}", self.run[0]))?;
        if status.success() {
            return Ok(Delivery::Ack);
        }
        let tail = String::from_utf8_lossy(&tail);
        Ok(Delivery::Retry {
            after: None,
            error: format!("{status}: {}", tail.trim()),
        })
    }
}

#[async_trait]
impl Sink for CommandSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, run: &RunJson) -> Delivery {
        match tokio::time::timeout(self.timeout, self.run_once(run)).await {
            Ok(Ok(delivery)) => delivery,
            Ok(Err(error)) => Delivery::Retry { after: None, error },
            // Dropping the future kills the program (kill_on_drop).
            Err(_) => Delivery::Retry {
                after: None,
                error: format!(
                    "{} did not finish within {}s",
                    self.run[0],
                    self.timeout.as_secs_f64()
                ),
            },
        }
    }
}
