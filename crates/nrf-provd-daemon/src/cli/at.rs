//! `nrf-provd at`: send AT commands to one port and print the answers.
//!
//! Exit status: 0 when every command ended `OK`; 1 when one ended `ERROR`,
//! `+CME ERROR` or `+CMS ERROR` (the rest still run); 2 on timeout,
//! disconnect, open failure or bad arguments (nothing further is sent).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::mpsc;

use super::choice::{DialectArg, FlowControlArg, LineEndingArg};
use super::{EXIT_ERROR, EXIT_FAIL, error_exit};
use crate::at::{AtError, Client, ClientOptions, DialectChoice, Notification};
use crate::serial::{self, SerialSettings};

#[derive(Debug, clap::Args)]
pub struct AtArgs {
    /// Serial port, e.g. /dev/ttyACM0 or /dev/serial/by-id/...
    #[arg(long)]
    pub port: PathBuf,
    /// Command dialect: raw AT host / SLM, Zephyr shell (`at '...'`), or detect.
    #[arg(long, value_enum, default_value_t = DialectArg::Auto)]
    pub dialect: DialectArg,
    /// Deadline per command: seconds (2.5) or with a unit (500ms, 1m)
    /// [default: per command, 5 s for most].
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    #[arg(long, value_enum, default_value_t = FlowControlArg::RtsCts)]
    pub flow_control: FlowControlArg,
    #[arg(long, value_enum, default_value_t = LineEndingArg::Crlf)]
    pub line_ending: LineEndingArg,
    /// AT commands, sent in turn, e.g. AT+CGSN 'AT%XMODEMUUID'.
    #[arg(required = true)]
    pub commands: Vec<String>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let timeout = super::parse_duration(s)?;
    if timeout.is_zero() {
        return Err(format!("{s:?}: a deadline must be longer than zero"));
    }
    Ok(timeout)
}

fn print_notifications(rx: &mut mpsc::Receiver<Notification>) {
    let mut out = std::io::stdout().lock();
    while let Ok(n) = rx.try_recv() {
        print_line(&mut out, "[urc] ", &n.line);
    }
}

/// One line of the board's answer for the terminal: a line break inside
/// it (a multi-line value such as a PEM) stays a line break, every other
/// control character is escaped (`\r`, `\x1b`), so the board cannot act
/// on the terminal.
fn print_line(out: &mut impl Write, prefix: &str, line: &str) {
    for piece in line.split('\n') {
        let piece = piece.strip_suffix('\r').unwrap_or(piece);
        let _ = writeln!(out, "{prefix}{}", crate::text::Escaped(piece));
    }
}

pub async fn run(args: AtArgs) -> ExitCode {
    let settings = SerialSettings {
        baud: args.baud,
        flow_control: args.flow_control.into(),
        ..SerialSettings::default()
    };
    let port = match serial::open(&args.port, &settings) {
        Ok(p) => p,
        Err(e) => return error_exit(e),
    };
    let options = ClientOptions {
        dialect: DialectChoice::from(args.dialect)
            .fixed()
            .unwrap_or(crate::at::Dialect::RAW),
        line_ending: args.line_ending.into(),
        ..ClientOptions::default()
    };
    let (mut client, mut rx) = Client::new(port, options);
    if let Err(e) = client.settle().await {
        return error_exit(e);
    }
    if args.dialect == DialectArg::Auto {
        match client.detect_dialect().await {
            Ok(d) => tracing::info!(dialect = ?d, "dialect detected"),
            Err(e) => {
                print_notifications(&mut rx);
                return error_exit(format!("dialect detection failed: {e}"));
            }
        }
    }
    let mut status = 0u8;
    for cmd in &args.commands {
        let timeout = args
            .timeout
            .unwrap_or_else(|| crate::modem::deadline_for_text(cmd, &client.options().timeouts));
        let result = client.command_with_timeout(cmd, timeout).await;
        print_notifications(&mut rx);
        match result {
            Ok(response) => {
                let mut out = std::io::stdout().lock();
                for line in &response.lines {
                    print_line(&mut out, "", line);
                }
            }
            Err(e @ (AtError::Error { .. } | AtError::Cme { .. } | AtError::Cms { .. })) => {
                eprintln!("{e}");
                status = EXIT_FAIL;
            }
            Err(AtError::Timeout {
                command,
                waited,
                partial_lines,
            }) => {
                let mut out = std::io::stdout().lock();
                for line in &partial_lines {
                    print_line(&mut out, "", line);
                }
                eprintln!("error: `{command}`: no final result within {waited:?}");
                return ExitCode::from(EXIT_ERROR);
            }
            Err(e) => return error_exit(e),
        }
    }
    if client.dropped_notifications() > 0 {
        eprintln!(
            "warning: {} notifications dropped (channel full)",
            client.dropped_notifications()
        );
    }
    ExitCode::from(status)
}
