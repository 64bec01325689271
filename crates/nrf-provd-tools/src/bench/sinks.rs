//! `bench --sinks`: the three kinds of sink a line configures, delivering
//! while the bench measures — a webhook to a receiver on a thread of this
//! process (its CPU is the receiver's, not the station's, and is left out),
//! MQTT to a Mosquitto broker of its own (Debian's `mosquitto`) and a
//! command that appends the run to a file in the bench's directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::BenchError;
use crate::sink::SinkConfig;

/// The webhook receiver's thread (see [`crate::process::threads_cpu`]).
pub const RECEIVER_THREAD: &str = "bench-webhook";
/// Where Debian's `mosquitto` package installs the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The sinks of one row, with the broker they publish to (stopped when
/// this drops).
pub struct BenchSinks {
    pub configs: Vec<SinkConfig>,
    broker: Child,
}

impl Drop for BenchSinks {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

/// The three sinks, the webhook's receiver and the broker started and the
/// webhook's secret written, all in `dir`.
pub fn start(dir: &Path) -> Result<BenchSinks, BenchError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BenchError::Dir { path, source }
    };
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, "bench-webhook-secret").map_err(io(&secret))?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&secret))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io(dir))?;
    let addr = listener.local_addr().map_err(io(dir))?;
    std::thread::Builder::new()
        .name(RECEIVER_THREAD.into())
        .spawn(move || receive(&listener))
        .map_err(io(dir))?;
    let (broker, port) = broker(&dir.join("mosquitto"))?;
    let appended = dir.join("sink-command.jsonl");
    let timeout = Duration::from_secs(10);
    Ok(BenchSinks {
        configs: vec![
            SinkConfig::Webhook {
                url: format!("http://{addr}/runs"),
                secret_file: secret,
                timeout,
            },
            SinkConfig::Mqtt {
                url: format!("mqtt://127.0.0.1:{port}"),
                topic: "factory/bench/runs".into(),
                client_id: "nrf-provd-bench".into(),
                username: None,
                password_file: None,
                timeout,
            },
            SinkConfig::Command {
                run: vec![
                    "sh".into(),
                    "-c".into(),
                    format!(
                        "cat >> '{}' && echo >> '{}'",
                        appended.display(),
                        appended.display()
                    ),
                ],
                timeout,
            },
        ],
        broker,
    })
}

/// A throwaway Mosquitto on a free loopback port, listening when this
/// returns.
fn broker(dir: &Path) -> Result<(Child, u16), BenchError> {
    let missing = |detail: String| {
        BenchError::Invalid(format!(
            "bench --sinks publishes to a Mosquitto broker of its own: {detail} \
             (Debian: apt-get install mosquitto)"
        ))
    };
    if !Path::new(MOSQUITTO).exists() {
        return Err(missing(format!("no {MOSQUITTO}")));
    }
    let io = |path: PathBuf| move |source| BenchError::Dir { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_owned()))?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(io(dir.to_owned()))?
        .port();
    // As root Mosquitto would switch to its own user.
    let user = match nix::unistd::geteuid().is_root() {
        true => "user root\n",
        false => "",
    };
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{user}log_dest stderr\n"),
    )
    .map_err(io(conf.clone()))?;
    let log = dir.join("mosquitto.log");
    let mut child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(io(log.clone()))?)
        .spawn()
        .map_err(|e| missing(e.to_string()))?;
    for _ in 0..200 {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok((child, port));
        }
        if let Ok(Some(status)) = child.try_wait() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(missing(format!("it exited ({status}): {}", said.trim())));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(missing(format!(
        "it did not listen on port {port} within 10 s"
    )))
}

/// Answer every request 204, keeping the connection open as an MES's
/// server would (the webhook sink delivers one run at a time, so one
/// connection at a time is served), for the process's life.
fn receive(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        while answer_one(&mut reader) {}
    }
}

/// Read one request and answer it; `false` once the connection is done.
fn answer_one(reader: &mut BufReader<TcpStream>) -> bool {
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok()
        && reader
            .get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .is_ok()
}
