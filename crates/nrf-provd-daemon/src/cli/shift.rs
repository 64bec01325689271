//! `nrf-provd shift set|show`: the work order, lot, operator and product
//! the running daemon traces the next board by. The command finds the
//! daemon's API from its config (`[http] listen`, on this machine) and
//! talks to it, so a change is recorded by the daemon like one made on the
//! station page. It sends the operator's token (`[http]
//! operator_token_file`, or `--token-file`); with none configured, the
//! daemon takes a change from this machine without one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

use crate::config::StationConfig;
use crate::http::auth::read_token;
use crate::record::{Shift, ShiftChange, ShiftField};

/// How long the daemon may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read.
const ANSWER_LIMIT: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct ShiftArgs {
    #[command(subcommand)]
    pub command: ShiftCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ShiftCommand {
    /// Change the values the next board is traced by (an empty value clears one).
    Set(SetArgs),
    /// Show the values, the fields a board waits for, the fixtures and the latest changes.
    Show(ShowArgs),
}

/// Where the daemon is and how to speak to it.
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The running daemon's configuration (its `[http] listen` and tokens).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The token to send [default: the config's `[http] operator_token_file`,
    /// else its `token_file`, else none].
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("fields").required(true).multiple(true)))]
pub struct SetArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The work order, e.g. WO-1234.
    #[arg(long, value_name = "WO", group = "fields")]
    pub work_order: Option<String>,
    /// The lot (batch).
    #[arg(long, value_name = "LOT", group = "fields")]
    pub lot: Option<String>,
    /// Who handles the boards.
    #[arg(long, value_name = "NAME", group = "fields")]
    pub operator: Option<String>,
    /// The product: part number and revision.
    #[arg(long, value_name = "PRODUCT", group = "fields")]
    pub product: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the daemon's JSON answer.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ShiftArgs) -> ExitCode {
    match args.command {
        ShiftCommand::Set(args) => set(args).await,
        ShiftCommand::Show(args) => show(args).await,
    }
}

async fn set(args: SetArgs) -> ExitCode {
    let update = Shift {
        work_order: args.work_order,
        lot: args.lot,
        operator: args.operator,
        product: args.product,
    };
    let body = match serde_json::to_vec(&update) {
        Ok(body) => body,
        Err(e) => return super::error_exit(e),
    };
    #[derive(serde::Deserialize)]
    struct Answer {
        changed: bool,
        shift: Shift,
        change: Option<ShiftChange>,
    }
    let answer: Answer = match call(&args.daemon, "POST", Some(body)).await {
        Ok(answer) => answer,
        Err(e) => return super::error_exit(e),
    };
    match (answer.changed, answer.change) {
        (true, Some(change)) => {
            for line in change_lines(&change) {
                println!("{line}");
            }
            println!("the next board is traced by these values");
        }
        _ => println!("no change"),
    }
    print_shift(&answer.shift);
    ExitCode::SUCCESS
}

async fn show(args: ShowArgs) -> ExitCode {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct Answer {
        shift: Shift,
        required: Vec<ShiftField>,
        missing: Vec<ShiftField>,
        fixtures: std::collections::BTreeMap<String, String>,
        history: Vec<ShiftChange>,
    }
    let answer: Answer = match call(&args.daemon, "GET", None).await {
        Ok(answer) => answer,
        Err(e) => return super::error_exit(e),
    };
    if args.json {
        return match serde_json::to_string_pretty(&answer) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => super::error_exit(e),
        };
    }
    print_shift(&answer.shift);
    if !answer.required.is_empty() {
        let names = |fields: &[ShiftField]| {
            fields
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("required:   {}", names(&answer.required));
        if !answer.missing.is_empty() {
            println!("boards wait for: {}", names(&answer.missing));
        }
    }
    for (port, fixture) in &answer.fixtures {
        println!(
            "fixture:    {} = {}",
            shown(Some(fixture)),
            shown(Some(port))
        );
    }
    if !answer.history.is_empty() {
        println!("changes (latest last):");
        for change in &answer.history {
            for line in change_lines(change) {
                println!("  {line}");
            }
        }
    }
    ExitCode::SUCCESS
}

/// Device-like text (what a scanner typed) as a terminal may show it.
fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "-".into(), |v| crate::text::escape(v).into_owned())
}

fn print_shift(shift: &Shift) {
    for field in ShiftField::ALL {
        println!("{:<11} {}", format!("{field}:"), shown(shift.get(field)));
    }
}

/// `<time> by <who>: <field> <old> → <new>`, one line per field changed.
fn change_lines(change: &ShiftChange) -> Vec<String> {
    let at = crate::record::ser::rfc3339(&change.at);
    ShiftField::ALL
        .into_iter()
        .filter(|f| change.old.get(*f) != change.new.get(*f))
        .map(|f| {
            format!(
                "{at} by {}: {f} {} -> {}",
                shown(Some(&change.by)),
                shown(change.old.get(f)),
                shown(change.new.get(f))
            )
        })
        .collect()
}

/// The daemon's API address on this machine: its `[http] listen`, a
/// wildcard address read as loopback.
fn daemon_addr(config: &StationConfig) -> Result<SocketAddr, String> {
    let listen = config.http.listen.ok_or_else(|| {
        "the daemon serves no API ([http] listen = \"\"); set [http] listen to change the shift while it runs".to_string()
    })?;
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, listen.port()))
}

/// `method` on `/api/v1/shift` with `body` (JSON); the answer, or the
/// daemon's error in words.
async fn call<T: serde::de::DeserializeOwned>(
    daemon: &DaemonArgs,
    method: &str,
    body: Option<Vec<u8>>,
) -> Result<T, String> {
    let config = StationConfig::load(&daemon.config).map_err(|e| e.to_string())?;
    let addr = daemon_addr(&config)?;
    let token_file = daemon
        .token_file
        .clone()
        .or_else(|| config.http.operator_token_file.clone())
        .or_else(|| config.http.token_file.clone());
    let token = token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach the daemon's API at {addr}: {e}; is the daemon running with this config?"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri("/api/v1/shift")
            .header(header::HOST, addr.to_string());
        if let Some(token) = &token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body)),
            None => request.body(Body::empty()),
        }
        .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), ANSWER_LIMIT)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok::<_, String>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the daemon at {addr} did not answer within {ANSWER_TIMEOUT:?}"))??;
    if status != StatusCode::OK {
        let why = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(format!(
            "the daemon refused ({status}): {}",
            crate::text::escape(&why)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the daemon's answer does not read: {e}"))
}
