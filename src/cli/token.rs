//! `nrf-provd parse` and `nrf-provd verify`.
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use uuid::Uuid;

use super::{EXIT_FAIL, error_exit};
use crate::token::{self, Expectations, Token};
use crate::trust::TrustStore;

#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Token text, quoted token, or a whole `%ATTESTTOKEN: "…"` / `%KEYGEN: "…"`
    /// / `%JWT: "…"` line. `-` or nothing reads standard input.
    pub token: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Token text, quoted token, or a whole response line; `-` or nothing reads stdin.
    pub token: Option<String>,
    /// Trust file: CSV `device_uuid,public_key` (base64 SPKI DER of P-256 keys).
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// Challenge sent with `AT%ATTESTTOKEN` (32 hex digits): the nonce must equal it.
    #[arg(long, value_name = "HEX32", value_parser = parse_challenge)]
    pub challenge: Option<[u8; 16]>,
    /// sec_tag requested with `AT%KEYGEN`.
    #[arg(long, value_name = "N")]
    pub sec_tag: Option<u32>,
    /// Device UUID seen elsewhere (e.g. `AT%DEVICEUUID`): the token must name it.
    #[arg(long, value_name = "UUID")]
    pub device_uuid: Option<Uuid>,
    /// Common name the CSR must carry.
    #[arg(long, value_name = "CN")]
    pub common_name: Option<String>,
    /// Expected JWT issuer (`iss`).
    #[arg(long, value_name = "ISS")]
    pub issuer: Option<String>,
    /// Time for JWT `iat`/`exp` checks, unix seconds (default: now).
    #[arg(long, value_name = "SECONDS")]
    pub now: Option<i64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_challenge(text: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes, expected 16 (32 hex digits)", b.len()))
}

/// The token text from the argument or stdin. Stdin may hold a whole AT
/// response: blank lines and a final `OK` are skipped.
fn input(arg: Option<&str>) -> Result<String, String> {
    let text = match arg {
        Some(text) if text != "-" => return Ok(text.to_string()),
        _ => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|e| format!("reading standard input: {e}"))?;
            buf
        }
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "OK")
        .collect();
    match lines.as_slice() {
        [] => Err("no token on standard input".into()),
        [one] => Ok(one.to_string()),
        many => many
            .iter()
            .find(|l| l.starts_with('%'))
            .map(|l| l.to_string())
            .ok_or_else(|| {
                format!(
                    "{} lines on standard input; give one token (or one %…: line)",
                    many.len()
                )
            }),
    }
}

fn decode_input(arg: Option<&str>) -> Result<Token, String> {
    let text = input(arg)?;
    token::decode(&text).map_err(|e| e.to_string())
}

pub async fn parse(args: ParseArgs) -> ExitCode {
    let token = match decode_input(args.token.as_deref()) {
        Ok(token) => token,
        Err(e) => return error_exit(e),
    };
    if args.json {
        println!("{}", token.to_json());
    } else {
        print!("{}", token.describe());
    }
    ExitCode::SUCCESS
}

pub async fn verify(args: VerifyArgs) -> ExitCode {
    let trust = match TrustStore::load(&args.trust) {
        Ok(trust) => trust,
        Err(e) => return error_exit(format!("trust file: {e}")),
    };
    let token = match decode_input(args.token.as_deref()) {
        Ok(token) => token,
        Err(e) => return error_exit(e),
    };
    let now = args.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    });
    let expect = Expectations {
        challenge: args.challenge,
        sec_tag: args.sec_tag,
        device_uuid: args.device_uuid,
        common_name: args.common_name,
        now: Some(now),
        jwt_issuer: args.issuer,
    };
    let verdict = token::verify::verify(&token, &trust, &expect);
    let authentic = verdict.authentic();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "authentic": authentic,
                "kind": token.kind(),
                "device_uuid": token.device_uuid().map(|u| u.to_string()),
                "checks": verdict.checks,
                "token": token.to_json(),
            })
        );
    } else {
        let device = token
            .device_uuid()
            .map_or_else(|| "unknown device".to_string(), |u| format!("device {u}"));
        println!(
            "{}: {} token of {device}",
            if authentic {
                "AUTHENTIC"
            } else {
                "NOT AUTHENTIC"
            },
            token.kind()
        );
        for check in &verdict.checks {
            println!(
                "  {:<4} {:<14} {}",
                if check.passed { "ok" } else { "FAIL" },
                check.name,
                check.detail
            );
        }
        if !verdict.checks.iter().any(|c| c.name == "signature") {
            println!("  FAIL signature      not checked: no trusted key for this device");
        }
    }
    if authentic {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAIL)
    }
}
