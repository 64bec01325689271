//! A byte-level AT host for driving simulated modems over their pty links
//! (for exact bytes: echo, prompts, noise; `sim_with_client.rs` drives them
//! with the project's own AT client), and token checks, independent of the
//! project's decoders, that verify what a modem returns against a trust CSV.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ciborium::value::Value;
use nrf91_at::serial::{self, FlowControl, SerialSettings};
use nrf91_sim::SimDialect;
use nrf91_token::cose;
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};
use spki::DecodePublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Upper bound for anything a test waits for; only a hang ever hits it.
pub const GUARD: Duration = Duration::from_secs(30);

/// One host-side connection to a simulated modem.
pub struct Host {
    port: serial::Port,
    pending: Vec<u8>,
    dialect: SimDialect,
}

/// Is `line` a final result code?
pub fn is_final(line: &str) -> bool {
    line == "OK" || line == "ERROR" || line.starts_with("+CME ERROR: ")
}

/// Remove ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Host {
    /// Open the port as a station would (115200 8N1, no flow control).
    pub fn open(path: &Path, dialect: SimDialect) -> Host {
        let settings = SerialSettings {
            flow_control: FlowControl::None,
            ..SerialSettings::default()
        };
        let port = serial::open(path, &settings)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Host {
            port,
            pending: Vec::new(),
            dialect,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).await.unwrap();
        self.port.flush().await.unwrap();
    }

    /// Read once into the pending buffer; `None` when the board is gone
    /// (EOF or EIO), `Some(0)` never.
    pub async fn read_more(&mut self) -> Option<usize> {
        let mut buf = [0u8; 4096];
        match self.port.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Some(n)
            }
        }
    }

    /// Everything that arrives within `window` (for "nothing comes" checks).
    pub async fn read_for(&mut self, window: Duration) -> Vec<u8> {
        let _ =
            tokio::time::timeout(window, async { while self.read_more().await.is_some() {} }).await;
        std::mem::take(&mut self.pending)
    }

    /// Read until `done(pending)`; returns and clears the buffer.
    pub async fn until(&mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        tokio::time::timeout(GUARD, async {
            while !done(&self.pending) {
                if self.read_more().await.is_none() {
                    panic!(
                        "board gone while waiting; got {:?}",
                        String::from_utf8_lossy(&self.pending)
                    );
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer; got {:?}",
                String::from_utf8_lossy(&self.pending)
            )
        });
        std::mem::take(&mut self.pending)
    }

    /// Read until the board is gone; returns what came before.
    pub async fn until_gone(&mut self) -> Vec<u8> {
        tokio::time::timeout(GUARD, async { while self.read_more().await.is_some() {} })
            .await
            .expect("board still there");
        std::mem::take(&mut self.pending)
    }

    /// The lines of `text` a host keeps: ANSI stripped, CRs trimmed, empty
    /// lines, shell echo and prompts dropped.
    fn lines_of(&self, text: &str, sent: &str) -> Vec<String> {
        strip_ansi(text)
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .map(|l| l.trim_start_matches("uart:~$ "))
            .filter(|l| !l.is_empty() && *l != "uart:~$" && *l != sent)
            .map(str::to_owned)
            .collect()
    }

    /// The line this host types for an AT command in its dialect.
    pub fn typed(&self, command: &str) -> String {
        match self.dialect {
            SimDialect::Raw | SimDialect::Slm => command.to_owned(),
            // Nordic's tools: single-quoted, CR removed, LF escaped.
            SimDialect::Shell => format!("at '{}'", command.replace('\r', "").replace('\n', "\\n")),
        }
    }

    /// Send an AT command and read up to its final result; returns every
    /// line (notifications included) ending with the final result.
    pub async fn command(&mut self, command: &str) -> Vec<String> {
        let typed = self.typed(command);
        self.send(format!("{typed}\r\n").as_bytes()).await;
        let shell = self.dialect == SimDialect::Shell;
        let raw = self
            .until(|buf| {
                let text = strip_ansi(&String::from_utf8_lossy(buf));
                let has_final = text.split('\n').any(|l| is_final(l.trim_end_matches('\r')));
                has_final && (!shell || text.ends_with("uart:~$ "))
            })
            .await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = self.lines_of(&text, &typed);
        if let Some(end) = lines.iter().position(|l| is_final(l)) {
            lines.truncate(end + 1);
        }
        lines
    }

    /// The final result of a command.
    pub async fn result(&mut self, command: &str) -> String {
        self.command(command).await.pop().unwrap_or_default()
    }

    /// The information lines of a command that must end `OK`, without
    /// notifications (lines starting with `+CEREG`, `%CESQ`, ...).
    pub async fn ok(&mut self, command: &str) -> Vec<String> {
        let mut lines = self.command(command).await;
        assert_eq!(
            lines.last().map(String::as_str),
            Some("OK"),
            "{command}: {lines:?}"
        );
        lines.pop();
        lines.retain(|l| !is_urc(l));
        lines
    }
}

/// Notification prefixes the simulator uses.
pub fn is_urc(line: &str) -> bool {
    [
        "+CEREG:",
        "%CESQ:",
        "%XSIM:",
        "%MDMEV:",
        "+CSCON:",
        "AT event handler:",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

/// The quoted token of `%NAME: "<token>"`.
pub fn quoted_token(line: &str) -> String {
    let (_, quoted) = line.split_once(": \"").expect("quoted value");
    quoted.strip_suffix('"').expect("closing quote").to_owned()
}

pub fn b64url(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// Trust CSV (`device_uuid,public_key`) to keys.
pub fn trust_keys(csv: &str) -> HashMap<Uuid, VerifyingKey> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("device_uuid,public_key"));
    lines
        .map(|l| {
            let (uuid, key) = l.split_once(',').unwrap();
            let der = STANDARD.decode(key).unwrap();
            (
                uuid.parse().unwrap(),
                VerifyingKey::from_public_key_der(&der).unwrap(),
            )
        })
        .collect()
}

fn self_described(bytes: &[u8]) -> Vec<Value> {
    let Value::Tag(55799, inner) = ciborium::from_reader(bytes).unwrap() else {
        panic!("not tag 55799")
    };
    let Value::Array(items) = *inner else {
        panic!("not an array")
    };
    items
}

fn bytes_at(items: &[Value], i: usize) -> Vec<u8> {
    items[i].as_bytes().unwrap().clone()
}

/// Verify a COSE_Sign1 (tag 18) against `key`; `detached` is the payload
/// when the payload slot is null. Returns the signed payload.
pub fn verify_cose(
    cose_bytes: &[u8],
    key: &VerifyingKey,
    detached: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let Value::Tag(18, inner) = ciborium::from_reader(cose_bytes).unwrap() else {
        panic!("not tag 18")
    };
    let Value::Array(items) = *inner else {
        panic!()
    };
    let [Value::Bytes(protected), _, payload, Value::Bytes(sig)] = items.as_slice() else {
        panic!("shape")
    };
    let payload = match (payload, detached) {
        (Value::Null, Some(body)) => body.to_vec(),
        (Value::Bytes(p), None) => p.clone(),
        other => panic!("payload slot {other:?}"),
    };
    let sig = Signature::from_slice(sig).map_err(|e| e.to_string())?;
    key.verify(&cose::sig_structure(protected, &payload), &sig)
        .map_err(|_| "bad signature".to_owned())?;
    Ok(payload)
}

/// What an attestation token says.
#[derive(Debug)]
pub struct Attest {
    pub device_uuid: Uuid,
    pub device_type: i128,
    pub firmware_uuid: Uuid,
    pub nonce: [u8; 16],
}

/// Decode an attestation token and verify it with the key the trust file
/// holds for the UUID inside it.
pub fn verify_attest(token: &str, trust: &HashMap<Uuid, VerifyingKey>) -> Result<Attest, String> {
    let (body_b64, cose_b64) = token.split_once('.').unwrap();
    let body = b64url(body_b64);
    let items = self_described(&body);
    let attest = Attest {
        device_uuid: Uuid::from_slice(&bytes_at(&items, 1)).unwrap(),
        device_type: items[2].as_integer().unwrap().into(),
        firmware_uuid: Uuid::from_slice(&bytes_at(&items, 3)).unwrap(),
        nonce: bytes_at(&items, 4).try_into().unwrap(),
    };
    let key = trust.get(&attest.device_uuid).ok_or("unknown device")?;
    verify_cose(&b64url(cose_b64), key, Some(&body))?;
    Ok(attest)
}

/// What a key-generation token says.
#[derive(Debug)]
pub struct Keygen {
    pub der: Vec<u8>,
    pub payload_id: i128,
    pub device_uuid: Uuid,
    pub sec_tag_cbor: Vec<u8>,
    pub digest: Vec<u8>,
}

/// Decode a `%KEYGEN` token and verify it with the trust file key of the
/// UUID inside it.
pub fn verify_keygen(token: &str, trust: &HashMap<Uuid, VerifyingKey>) -> Result<Keygen, String> {
    let (der_b64, cose_b64) = token.split_once('.').unwrap();
    let cose_bytes = b64url(cose_b64);
    let Value::Tag(18, inner) = ciborium::from_reader(cose_bytes.as_slice()).unwrap() else {
        panic!()
    };
    let Value::Array(parts) = *inner else {
        panic!()
    };
    let payload = parts[2].as_bytes().unwrap().clone();
    let items = self_described(&payload);
    let keygen = Keygen {
        der: b64url(der_b64),
        payload_id: items[0].as_integer().unwrap().into(),
        device_uuid: Uuid::from_slice(&bytes_at(&items, 1)).unwrap(),
        sec_tag_cbor: bytes_at(&items, 2),
        digest: bytes_at(&items, 3),
    };
    let key = trust.get(&keygen.device_uuid).ok_or("unknown device")?;
    verify_cose(&cose_bytes, key, None)?;
    Ok(keygen)
}

/// Verify a JWT with `key`; returns (header, claims).
pub fn verify_jwt(
    jwt: &str,
    key: &VerifyingKey,
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let mut parts = jwt.split('.');
    let (h, c, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let sig = Signature::from_slice(&b64url(s)).map_err(|e| e.to_string())?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| "bad signature".to_owned())?;
    Ok((
        serde_json::from_slice(&b64url(h)).unwrap(),
        serde_json::from_slice(&b64url(c)).unwrap(),
    ))
}
