//! The simulated modems in a child process (`nrf-provd simulate --control`),
//! so that their CPU time and memory are not counted as the station's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::BenchError;
use crate::sim::control::{Answer, BoardStats, Cost, Request};
use crate::sim::{FaultSpec, Latency};

/// How long the simulator may take to start or to answer one request.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// What the simulator child is started with.
pub struct SimSpec<'a> {
    pub executable: &'a Path,
    pub count: usize,
    pub latency: Latency,
    pub baud: Option<u32>,
    pub seed: u64,
    pub faults: &'a [FaultSpec],
}

/// A running `simulate --control` child.
pub struct SimChild {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub ports_dir: PathBuf,
    pub trust_csv: String,
    /// Where the child's stderr goes (checked for panics).
    pub log: PathBuf,
}

fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> BenchError {
    move |source| BenchError::Simulator {
        detail: format!("{what}: {source}"),
    }
}

impl SimChild {
    /// Start the child with its ports in `dir/ports`, its trust file in
    /// `dir/trust.csv` and its stderr in `dir/simulator.log`; wait until
    /// every board is plugged.
    pub async fn start(spec: &SimSpec<'_>, dir: &Path) -> Result<SimChild, BenchError> {
        let ports_dir = dir.join("ports");
        let trust = dir.join("trust.csv");
        let log = dir.join("simulator.log");
        let stderr = std::fs::File::create(&log).map_err(io_error("simulator log"))?;
        let mut command = Command::new(spec.executable);
        command
            .arg("simulate")
            .arg("--control")
            .args(["--count", &spec.count.to_string()])
            .arg("--dir")
            .arg(&ports_dir)
            .arg("--trust-out")
            .arg(&trust)
            .args(["--seed", &spec.seed.to_string()])
            .args([
                "--latency",
                match spec.latency {
                    Latency::None => "none",
                    Latency::Realistic => "realistic",
                },
            ]);
        if let Some(baud) = spec.baud {
            command.args(["--baud", &baud.to_string()]);
        }
        for fault in spec.faults {
            command.arg("--fault").arg(fault.to_string());
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(io_error("cannot start `simulate`"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::Simulator {
                detail: "no pipes to the simulator".into(),
            });
        };
        let mut sim = SimChild {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            ports_dir,
            trust_csv: String::new(),
            log,
        };
        // The listing (one line a board), then {"ready":N}.
        loop {
            let line = sim.next_line().await?;
            if let Ok(Answer::Ready(_)) = serde_json::from_str::<Answer>(&line) {
                break;
            }
        }
        sim.trust_csv =
            std::fs::read_to_string(&trust).map_err(io_error("simulator trust file"))?;
        Ok(sim)
    }

    async fn next_line(&mut self) -> Result<String, BenchError> {
        match tokio::time::timeout(ANSWER_LIMIT, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(BenchError::Simulator {
                detail: format!("the simulator exited; see {}", self.log.display()),
            }),
            Ok(Err(e)) => Err(io_error("reading the simulator")(e)),
            Err(_) => Err(BenchError::Simulator {
                detail: format!("no answer within {ANSWER_LIMIT:?}"),
            }),
        }
    }

    /// Send one request and read its answer; an `error` answer is an error.
    pub async fn request(&mut self, request: &Request) -> Result<Answer, BenchError> {
        let line = format!("{request}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(io_error("writing to the simulator"))?;
        self.stdin
            .flush()
            .await
            .map_err(io_error("writing to the simulator"))?;
        let text = self.next_line().await?;
        match serde_json::from_str::<Answer>(&text) {
            Ok(Answer::Error(error)) => Err(BenchError::Simulator {
                detail: format!("{request:?}: {error}"),
            }),
            Ok(answer) => Ok(answer),
            Err(e) => Err(BenchError::Simulator {
                detail: format!("answer to {request:?} is not a control answer ({e}): {text}"),
            }),
        }
    }

    fn unexpected(request: &Request, answer: &Answer) -> BenchError {
        BenchError::Simulator {
            detail: format!("{request:?} answered with {answer:?}"),
        }
    }

    /// Pull and plug back `boards` (every board when empty).
    pub async fn replug(&mut self, boards: &[usize]) -> Result<(), BenchError> {
        let request = Request::Replug(boards.to_vec());
        match self.request(&request).await? {
            Answer::Replugged(_) => Ok(()),
            other => Err(Self::unexpected(&request, &other)),
        }
    }

    /// Every board's counters, in slot order.
    pub async fn stats(&mut self) -> Result<Vec<BoardStats>, BenchError> {
        match self.request(&Request::Stats).await? {
            Answer::Stats(boards) => Ok(boards),
            other => Err(Self::unexpected(&Request::Stats, &other)),
        }
    }

    /// Take every board's logged command costs, in slot order.
    pub async fn costs(&mut self) -> Result<Vec<Vec<Cost>>, BenchError> {
        match self.request(&Request::Costs).await? {
            Answer::Costs(costs) => Ok(costs),
            other => Err(Self::unexpected(&Request::Costs, &other)),
        }
    }

    /// Ask the child to quit and wait for it (killed after a grace period).
    pub async fn quit(&mut self) {
        let _ = self.request(&Request::Quit).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Lines of `log` that report a panic.
pub fn panics_in(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().filter(|l| l.contains("panicked at")).count())
        .unwrap_or(0)
}
