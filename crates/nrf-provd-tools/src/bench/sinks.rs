//! `bench --sinks`: three downstream sinks delivering while the bench
//! measures — a webhook to a receiver on a thread of this process (its CPU
//! counts against the sinks), a command that discards the run and one that
//! appends it to a file in the bench's directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::BenchError;
use crate::sink::SinkConfig;

/// The three sinks, the webhook's receiver started and its secret written.
pub fn configs(dir: &Path) -> Result<Vec<SinkConfig>, BenchError> {
    let io = |source| BenchError::Dir {
        path: dir.to_owned(),
        source,
    };
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, "bench-webhook-secret").map_err(io)?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    std::thread::Builder::new()
        .name("bench-webhook".into())
        .spawn(move || receive(&listener))
        .map_err(io)?;
    let appended = dir.join("sink-command.jsonl");
    Ok(vec![
        SinkConfig::Webhook {
            url: format!("http://{addr}/runs"),
            secret_file: secret,
            timeout: Duration::from_secs(10),
        },
        SinkConfig::Command {
            run: vec!["sh".into(), "-c".into(), "cat > /dev/null".into()],
            timeout: Duration::from_secs(10),
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
            timeout: Duration::from_secs(10),
        },
    ])
}

/// Answer every request 204, one per connection, for the process's life.
fn receive(listener: &TcpListener) {
    for stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream);
        let mut length = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
            line.clear();
        }
        let mut body = vec![0u8; length];
        let _ = reader.read_exact(&mut body);
        let _ = reader
            .get_mut()
            .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
    }
}
