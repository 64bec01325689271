//! Seed corpora for the cargo-fuzz targets (`fuzz/`), from what real
//! traffic looks like rather than from nothing:
//!
//! ```text
//! cargo run -p nrf91-sim --example fuzz_corpus -- fuzz/seeds
//! ```
//!
//! writes `fuzz/seeds/<target>/<sha256 prefix>` for each target (committed;
//! libFuzzer keeps what it finds in the git-ignored `fuzz/corpus/<target>`):
//! - `at_framing`: what the host reads from a simulated board, one seed per
//!   command answer and one per whole session, in every simulator dialect
//!   (raw, SLM, shell) and under every fault, each behind the target's
//!   first byte (chunk size and line limit);
//! - `cmng`: the `%CMNG` list/read answers and the `+CGSN`,
//!   `%XMODEMUUID`, `+CCLK` answers of those sessions, behind the dialect
//!   byte the target reads;
//! - `tokens`: every token those sessions produced (each kind, and the faults
//!   that alter tokens: bad signature, replay, wrong UUID, bad digest, legacy
//!   CSR, substitutes), their decoded parts (COSE, CBOR, DER), and the real
//!   modem tokens of `tests/fixtures/real-modem-tokens.json`;
//! - `config`: `config/*.toml` and the TOML the tests parse (raw strings
//!   with `station_id` in `tests/**/*.rs`).
//!
//! The simulated boards run over in-memory links on tokio's paused clock, so
//! a stalled command costs no real time. The boards are seeded, so tokens and
//! answers repeat; which read window a storm's notification or a burst of
//! noise falls into can differ, so a rerun may add a few seeds (named by
//! content: nothing is written twice).
use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nrf91_at::at::client::{Exchange, Step};
use nrf91_at::at::codec::{LineCodec, frame_command};
use nrf91_at::at::{ClientOptions, Command, Dialect, Response, parse};
use nrf91_at::modem::{self, AttestToken, Jwt, JwtRequest, KeyFormat, Keygen, SetClock};
use nrf91_at::serial::LineEnding;
use nrf91_sim::memory::Board;
use nrf91_sim::{FaultSpec, FaultTargets, SimDialect, SimOptions};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Decoder;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const TAG: u32 = 16_842_753;

/// Every fault of the simulator's grammar, sized for seeds (a small flood).
const FAULTS: &[&str] = &[
    "urc-storm",
    "garbage",
    "unplug@KEYGEN",
    "unplug@CMNG",
    "stall@CGSN",
    "cme=518@KEYGEN",
    "cme=514@CMNG",
    "bad-signature",
    "ignore-challenge",
    "replay",
    "wrong-uuid",
    "bad-digest",
    "untrusted-key",
    "legacy-csr",
    "flood=3K@CMNG",
    "substitute=keygen@ATTESTTOKEN",
    "substitute=identity@KEYGEN",
    "substitute=keygen-pubkey@JWT",
    "substitute=jwt@KEYGEN",
];

/// The target's first byte for `at_framing`: `seed % 31 + 1` bytes a chunk,
/// `seed * 8 + 16` bytes a line. 0xFF: 9-byte chunks, 2056-byte lines;
/// 0xF8: byte by byte; 0x40: 3-byte chunks and 528-byte lines (a PEM read
/// is overlong).
const FRAMING_SEEDS: &[u8] = &[0xFF, 0xF8, 0x40];

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    // The repository: config/, tests/ and every crate's tests/.
    let root = &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut corpus = Corpus::new(&out)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let pem = std::fs::read_to_string(root.join("tests/fixtures/openssl-ca.pem"))?;
    let mut faults: Vec<Option<&str>> = vec![None];
    faults.extend(FAULTS.iter().copied().map(Some));
    for sim_dialect in [SimDialect::Raw, SimDialect::Slm, SimDialect::Shell] {
        for fault in &faults {
            let spec: Vec<FaultSpec> = match fault {
                Some(text) => vec![FaultSpec::new(FaultTargets::All, text.parse()?)],
                None => Vec::new(),
            };
            let session = runtime.block_on(run_session(sim_dialect, spec, &pem))?;
            session.add_to(&mut corpus)?;
        }
    }

    let fixtures = std::fs::read_to_string(root.join("tests/fixtures/real-modem-tokens.json"))?;
    let fixtures: serde_json::Value = serde_json::from_str(&fixtures)?;
    for entry in fixtures.as_object().into_iter().flat_map(|o| o.values()) {
        if let Some(token) = entry.get("token").and_then(|t| t.as_str()) {
            corpus.add_token(token)?;
            // As a raw-dialect answer too, for framing and the token parser.
            let answer = format!("%ATTESTTOKEN: \"{token}\"\r\nOK\r\n");
            for &seed in FRAMING_SEEDS {
                corpus.add("at_framing", &[&[seed], answer.as_bytes()].concat())?;
            }
        }
    }

    for path in config_files(root)? {
        corpus.add("config", &std::fs::read(&path)?)?;
    }
    for text in test_configs(root)? {
        corpus.add("config", text.as_bytes())?;
    }

    corpus.report();
    Ok(())
}

/// The host's side of one session: each command and the bytes read for it.
struct Session {
    dialect: Dialect,
    answers: Vec<(String, Vec<u8>)>,
}

impl Session {
    fn add_to(&self, corpus: &mut Corpus) -> Result<()> {
        let whole: Vec<u8> = self.answers.iter().flat_map(|(_, b)| b.clone()).collect();
        corpus.add("at_framing", &[&[0xFF], whole.as_slice()].concat())?;
        // What the `cmng` target reads: 0 raw, 1 shell.
        let dialect_byte = u8::from(self.dialect == Dialect::SHELL);
        for (cmd, bytes) in &self.answers {
            for &seed in FRAMING_SEEDS {
                corpus.add("at_framing", &[&[seed], bytes.as_slice()].concat())?;
            }
            let upper = cmd.to_ascii_uppercase();
            if ["%CMNG=1", "%CMNG=2", "+CGSN", "%XMODEMUUID", "+CCLK"]
                .iter()
                .any(|c| upper.contains(c))
            {
                corpus.add("cmng", &[&[dialect_byte], bytes.as_slice()].concat())?;
            }
            let response = assemble(cmd, self.dialect, bytes);
            for prefix in ["%ATTESTTOKEN:", "%KEYGEN:", "%JWT:"] {
                if let Some(token) = response
                    .as_ref()
                    .and_then(|r| modem::parse_token(r, prefix).ok())
                {
                    corpus.add_token(&token)?;
                }
            }
        }
        Ok(())
    }
}

/// The response the client would make of `bytes` for `cmd`, if it ends OK.
fn assemble(cmd: &str, dialect: Dialect, bytes: &[u8]) -> Option<Response> {
    let mut codec = LineCodec::new(ClientOptions::default().max_line);
    let mut buf = bytes::BytesMut::from(bytes);
    let mut exchange = Exchange::new(cmd, dialect);
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        if let Step::Done(result) = exchange.feed(frame) {
            return result.ok();
        }
    }
    None
}

/// What a provisioning host asks, and a few things it should not.
fn script(pem: &str, dialect: Dialect) -> Result<Vec<String>> {
    let now = time::OffsetDateTime::from_unix_timestamp(1_796_110_200)?;
    let content = if dialect == Dialect::SHELL {
        pem.to_string()
    } else {
        modem::pem_crlf(pem)
    };
    let jwt = JwtRequest {
        exp_delta: Some(600),
        subject: Some("nrf-352656100367872".into()),
        audience: None,
        key: None,
    };
    Ok(vec![
        "AT".into(),
        "AT+CMEE=1".into(),
        "AT+CGSN=1".into(),
        "AT+CGSN".into(),
        "AT+CGMM".into(),
        "AT+CGMR".into(),
        "AT%XMODEMUUID".into(),
        "AT%DEVICEUUID".into(),
        "AT%HWVERSION".into(),
        "AT+CFUN?".into(),
        "AT+CFUN=4".into(),
        "AT+CFUN?".into(),
        "AT+CCLK?".into(),
        SetClock(now).text(),
        "AT+CCLK?".into(),
        AttestToken { challenge: None }.text(),
        AttestToken {
            challenge: Some([0x5a; 16]),
        }
        .text(),
        "AT%CMNG=1".into(),
        format!("AT%CMNG=3,{TAG},2"),
        Keygen::new(TAG, KeyFormat::Csr, Some("CN=fuzz,O=Nordic"), None)?.text(),
        Keygen::new(TAG, KeyFormat::PublicKey, None, Some("101010000"))?.text(),
        format!("AT%CMNG=0,{TAG},0,\"{content}\""),
        "AT%CMNG=1".into(),
        format!("AT%CMNG=1,{TAG}"),
        format!("AT%CMNG=2,{TAG},0"),
        format!("AT%CMNG=2,{TAG},1"),
        Jwt::new(&jwt)?.text(),
        Jwt::new(&JwtRequest::default())?.text(),
        "AT+CFUN=1".into(),
        Keygen::new(TAG, KeyFormat::Csr, None, None)?.text(),
        "AT+CFUN=0".into(),
        format!("AT%CMNG=3,{TAG},0"),
        "AT%CMNG=2,99,0".into(),
        "AT+XNOSUCH".into(),
    ])
}

/// Run the script against a fresh simulated board and keep what came back.
async fn run_session(sim: SimDialect, faults: Vec<FaultSpec>, pem: &str) -> Result<Session> {
    let dialect = match sim {
        SimDialect::Raw | SimDialect::Slm => Dialect::RAW,
        SimDialect::Shell => Dialect::SHELL,
    };
    let options = SimOptions {
        dialect: sim,
        faults,
        ..SimOptions::default()
    };
    let (_board, mut host) = Board::start(7, 0, options);
    let mut answers = Vec::new();
    // Boot output (SLM's Ready, the shell's prompt, garbage) comes unasked.
    answers.push((String::new(), read_answer(&mut host, "").await.0));
    if dialect == Dialect::SHELL {
        // So notifications are printed (urc-storm) as a shell user would see them.
        let cmd = "at events_enable";
        host.write_all(format!("{cmd}\r\n").as_bytes()).await?;
        answers.push((cmd.to_string(), read_answer(&mut host, cmd).await.0));
    }
    for cmd in script(pem, dialect)? {
        if host
            .write_all(&frame_command(&cmd, dialect, LineEnding::Crlf))
            .await
            .is_err()
        {
            break; // pulled (unplug fault)
        }
        let (bytes, pulled) = read_answer(&mut host, &cmd).await;
        answers.push((cmd, bytes));
        if pulled {
            break;
        }
    }
    Ok(Session { dialect, answers })
}

/// Read until a final result line has come and the line is quiet for a
/// moment, the board is pulled (then true), or 2 s of (virtual) time pass
/// unanswered.
async fn read_answer(host: &mut DuplexStream, cmd: &str) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    let give_up = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let wait = if has_final(&out) || cmd.is_empty() {
            Duration::from_millis(5)
        } else {
            give_up.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, host.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(_) => return (out, false),
        }
    }
}

fn has_final(bytes: &[u8]) -> bool {
    bytes
        .split(|b| *b == b'\n')
        .map(nrf91_at::at::codec::clean_line)
        .any(|line| parse::final_result(&line).is_some())
}

fn config_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("config"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Raw string literals (`r#"…"#`) holding a station config in the tests
/// (`tests/` and each crate's).
fn test_configs(root: &Path) -> Result<Vec<String>> {
    let mut sources = Vec::new();
    let mut dirs = vec![root.join("tests")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        let tests = entry?.path().join("tests");
        if tests.is_dir() {
            dirs.push(tests);
        }
    }
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    sources.sort();
    let mut configs = Vec::new();
    for path in sources {
        let text = std::fs::read_to_string(&path)?;
        let mut rest = text.as_str();
        while let Some(start) = rest.find("r#\"") {
            let body = &rest[start + 3..];
            let Some(end) = body.find("\"#") else { break };
            let literal = &body[..end];
            if literal.contains("station_id") {
                configs.push(literal.to_string());
            }
            rest = &body[end + 2..];
        }
    }
    Ok(configs)
}

/// Seeds on disk, one directory per target, named by content.
struct Corpus {
    dir: PathBuf,
    counts: BTreeMap<&'static str, (usize, usize)>,
}

impl Corpus {
    fn new(dir: &Path) -> Result<Self> {
        for target in ["at_framing", "tokens", "config", "cmng"] {
            std::fs::create_dir_all(dir.join(target))?;
        }
        Ok(Corpus {
            dir: dir.to_owned(),
            counts: BTreeMap::new(),
        })
    }

    fn add(&mut self, target: &'static str, bytes: &[u8]) -> Result<()> {
        let name = hex::encode(&Sha256::digest(bytes)[..8]);
        let path = self.dir.join(target).join(name);
        if !path.exists() {
            std::fs::write(&path, bytes)?;
            let count = self.counts.entry(target).or_default();
            count.0 += 1;
            count.1 += bytes.len();
        }
        Ok(())
    }

    /// A token's text and each of its decoded parts.
    fn add_token(&mut self, token: &str) -> Result<()> {
        self.add("tokens", token.as_bytes())?;
        for part in token.split('.') {
            if let Ok(raw) = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')) {
                self.add("tokens", &raw)?;
            }
        }
        Ok(())
    }

    fn report(&self) {
        for (target, (files, bytes)) in &self.counts {
            println!(
                "{}: {files} new seeds, {bytes} bytes",
                self.dir.join(target).display()
            );
        }
        if self.counts.is_empty() {
            println!("{}: no new seeds", self.dir.display());
        }
    }
}
