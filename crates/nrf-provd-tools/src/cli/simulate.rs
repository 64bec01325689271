//! `nrf-provd simulate`: N simulated nRF91 modems on pseudo-terminals until
//! SIGINT/SIGTERM.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::sim::{FaultSpec, FaultTargets, Fleet, Latency, SimDialect, SimOptions, control};

#[derive(Debug, clap::Args)]
#[command(after_help = FAULT_HELP)]
pub struct SimulateArgs {
    /// Number of modems.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Directory for the `ttySIM<i>` links (created if missing).
    /// Default: `$XDG_RUNTIME_DIR/nrf-provd-sim`, else `/tmp/nrf-provd-sim`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Write the modems' identity public keys here (trust-store CSV).
    #[arg(long)]
    pub trust_out: Option<PathBuf>,
    /// Which application relays AT commands on the UART.
    #[arg(long, value_enum, default_value_t = SimDialect::Raw)]
    pub dialect: SimDialect,
    /// `realistic` delays each reply like a real modem (key generation
    /// about 1.2 s); `none` answers at once.
    #[arg(long, value_enum, default_value_t = Latency::None)]
    pub latency: Latency,
    /// Pace output at this UART baud rate (10 bits a byte).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Seed for the fleet's identities and randomness; the same seed gives
    /// the same boards. Default: random (printed on stderr).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Make modems misbehave: TARGETS:FAULT, repeatable (grammar below).
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,
    /// What every board answers to `AT+CGMR`, e.g. `mfw_nrf9160_1.2.7`
    /// (an nRF9160 firmware makes the boards nRF9160s). Commands the
    /// firmware lacks answer ERROR: the token commands below 1.3.0,
    /// `%CLAIMTOKEN` below 1.3.4; NTN builds know them all.
    #[arg(long, value_name = "STRING")]
    pub firmware: Option<String>,
    /// Take commands on stdin, one a line, and answer each with one JSON
    /// line on stdout: `unplug I…`, `plug I…`, `replug [I…]`, `new I…` (another
    /// board, a fresh identity, in slot I, unplugged; its key is added to
    /// --trust-out: reload the station, then `plug I`), `stats`, `costs`, `quit`. Prints `{"ready":N}` after
    /// the listing; end of stdin quits. Each board logs the modelled cost of every command
    /// until `costs` takes it (used by `nrf-provd bench`).
    #[arg(long)]
    pub control: bool,
}

const FAULT_HELP: &str = "\
Fault specs (--fault TARGETS:FAULT):
  TARGETS: all | N | N-M                (modem indices)
  urc-storm          notifications at random moments, also inside replies
  garbage            bursts of noise bytes (ending in CRLF)
  unplug@CMD         board pulled halfway through the reply to CMD
  stall@CMD          CMD never answered (later commands are)
  cme=CODE@CMD       CMD fails with +CME ERROR: CODE (ERROR until AT+CMEE=1)
  bad-signature      token signatures have a flipped bit
  ignore-challenge   %ATTESTTOKEN ignores the host's challenge
  replay             every token is the first of its kind again
  wrong-uuid         tokens carry another UUID than %DEVICEUUID
  bad-digest         %KEYGEN digest does not match the DER
  claim-digest       %CLAIMTOKEN binds the digest of another ownership key
  claim-uuid         %CLAIMTOKEN names another device UUID
  untrusted-key      tokens signed by a key not in the trust file
  legacy-csr         CSR signatureAlgorithm with NULL parameters (old firmware)
  substitute=KIND@CMD
                     CMD (ATTESTTOKEN, KEYGEN or JWT) answered with a genuine token
                     of KIND (identity, keygen, keygen-pubkey, jwt) under CMD's own
                     prefix: a keyless board relaying tokens of a genuine one
  CMD is a command name such as KEYGEN, %KEYGEN or AT%KEYGEN.
Examples: --fault 2:bad-signature --fault all:urc-storm --fault 0-3:cme=518@KEYGEN
          --fault 0:cme=529@CLAIMTOKEN --fault 1:cme=528@CMNG
          --fault 1:substitute=keygen@ATTESTTOKEN";

fn default_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("nrf-provd-sim")
}

/// Write the trust file. Mode 0644: it holds public keys only, and the
/// station daemon may run as another user than the simulator.
/// The lines of both trust files, each once, `old`'s first.
fn merge_trust(old: &str, new: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut merged = String::new();
    for line in old.lines().chain(new.lines()) {
        if seen.insert(line) {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    merged
}

fn write_trust(path: &std::path::Path, csv: &str) -> std::io::Result<()> {
    // Whole or not at all: a station may re-read it (SIGHUP) at any time.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    file.write_all(csv.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub async fn run(args: SimulateArgs) -> ExitCode {
    if args.count == 0 {
        return super::error_exit("--count must be at least 1");
    }
    if let Some(spec) = args.faults.iter().find(|spec| match spec.targets {
        FaultTargets::All => false,
        FaultTargets::Range(first, _) => first >= args.count,
    }) {
        return super::error_exit(format!(
            "--fault {spec}: there are only {} modem(s)",
            args.count
        ));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let dir = args.dir.unwrap_or_else(default_dir);
    let options = SimOptions {
        dialect: args.dialect,
        latency: args.latency,
        baud: args.baud,
        faults: args.faults,
        cost_log: args.control,
        firmware: args.firmware,
    };
    // Install the handlers before the links exist, so an early signal still
    // cleans up.
    let signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let mut terminate = match signals {
        Ok(s) => s,
        Err(e) => return super::error_exit(format!("cannot handle SIGTERM: {e}")),
    };
    let fleet = match Fleet::start(&dir, args.count, seed, options).await {
        Ok(fleet) => fleet,
        Err(e) => {
            return super::error_exit(format!(
                "cannot start simulated modems in {}: {e}",
                dir.display()
            ));
        }
    };
    eprintln!("nrf-provd simulate: {} modem(s), seed {seed}", fleet.len());
    if let Some(path) = &args.trust_out {
        if let Err(e) = write_trust(path, &fleet.trust_csv()) {
            fleet.shutdown().await;
            return super::error_exit(format!("cannot write trust file {}: {e}", path.display()));
        }
    }
    let mut listing = String::new();
    for i in 0..fleet.len() {
        let identity = fleet.identity(i);
        listing.push_str(&format!(
            "{} {} {}\n",
            fleet.link(i).display(),
            identity.device_uuid,
            identity.imei
        ));
    }
    let mut stdout = std::io::stdout().lock();
    let printed = stdout
        .write_all(listing.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    if let Err(e) = printed {
        fleet.shutdown().await;
        return super::error_exit(format!("cannot write to stdout: {e}"));
    }
    if args.control {
        return controlled(fleet, terminate, args.trust_out.as_deref()).await;
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    fleet.shutdown().await;
    ExitCode::SUCCESS
}

/// Serve the control protocol until `quit`, end of stdin or a signal.
async fn controlled(
    fleet: Fleet,
    mut terminate: tokio::signal::unix::Signal,
    trust_out: Option<&std::path::Path>,
) -> ExitCode {
    // Every board ever in the fleet stays trusted: a board taken out may
    // come back, and a reload that drops keys would be refused anyway.
    let mut trusted = fleet.trust_csv();
    // A plain thread reads stdin: a blocking read cannot be cancelled, and
    // on Tokio's blocking pool it would hold up the exit after a signal.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let status = match say(&control::Answer::Ready(fleet.len()).to_line()) {
        Ok(()) => loop {
            let line = tokio::select! {
                _ = tokio::signal::ctrl_c() => break ExitCode::SUCCESS,
                _ = terminate.recv() => break ExitCode::SUCCESS,
                line = lines.recv() => line,
            };
            let Some(line) = line else {
                break ExitCode::SUCCESS;
            };
            let (mut answer, next) = control::handle(&fleet, &line).await;
            if let (control::Answer::New(_), Some(path)) = (&answer, trust_out) {
                trusted = merge_trust(&trusted, &fleet.trust_csv());
                if let Err(e) = write_trust(path, &trusted) {
                    answer = control::Answer::Error(format!(
                        "new board(s) plugged, but the trust file {} could not be written: {e}",
                        path.display()
                    ));
                }
            }
            if let Err(e) = say(&answer.to_line()) {
                break super::error_exit(format!("cannot write to stdout: {e}"));
            }
            if next == control::Next::Quit {
                break ExitCode::SUCCESS;
            }
        },
        Err(e) => super::error_exit(format!("cannot write to stdout: {e}")),
    };
    fleet.shutdown().await;
    status
}

/// One line on stdout, flushed (the reader waits for it).
fn say(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(line.as_bytes())?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}
