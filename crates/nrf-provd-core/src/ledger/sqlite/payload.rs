//! A run's bulky part — its steps, tokens and artifacts (certificates,
//! CSRs) — stored as one row of `run_payloads` (schema version 10): compact
//! JSON arrays compressed as one zstd frame against a fixed dictionary.
//!
//! Why one frame a run: the same device UUID, nonces and check names
//! recur across a run's steps, checks and tokens, and zstd finds them
//! within the frame; the dictionary (a simulated run's payload,
//! `payload-v1.dict`) gives it the shape every run shares, which a record
//! this small cannot teach it alone. A run takes about 1.3 KB here where
//! its three tables took about 10 KB (WITHOUT ROWID rows of a kilobyte or
//! more spill onto overflow pages of their own).
//!
//! `format` names the encoding: 1 is this one. The dictionary of a format
//! never changes (a stored run would no longer read); a better one is a
//! new format beside it.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use super::sql;
use crate::ledger::{
    Artifact, ArtifactKind, LedgerError, RunId, RunRecord, Step, StepRecord, TokenRecord, dbtime,
};
use crate::token::TokenKind;

/// zstd with `payload-v1.dict`.
pub const FORMAT_ZSTD_V1: i64 = 1;
const DICTIONARY_V1: &[u8] = include_bytes!("payload-v1.dict");
/// zstd's default level: most of the gain, a fraction of a millisecond.
const LEVEL: i32 = 3;
/// Bytes reserved for a run's JSON before it is compressed.
const JSON_CAPACITY: usize = 8 * 1024;
/// The largest payload a frame may claim to hold: a run's steps and tokens
/// are kilobytes; more is damage, not a record.
const MAX_PAYLOAD: u64 = 16 * 1024 * 1024;

/// The stored shape: arrays, not objects, and times as the database writes
/// them, so that every value comes back exactly. Written as [`StoredRef`].
#[derive(serde::Deserialize)]
struct Stored {
    /// name, started_at, duration in µs, passed, attempts, detail
    s: Vec<(String, String, i64, bool, u32, String)>,
    /// kind, text, authentic, checks_json
    t: Vec<(String, String, bool, String)>,
    /// kind, sec_tag, content
    a: Vec<(String, Option<u32>, String)>,
}

/// [`Stored`] borrowed from a run, for writing: the same JSON, no copies.
#[derive(serde::Serialize)]
struct StoredRef<'a> {
    s: Vec<(&'a str, String, i64, bool, u32, &'a str)>,
    t: Vec<(&'a str, &'a str, bool, &'a str)>,
    a: Vec<(&'a str, Option<u32>, &'a str)>,
}

/// A run's steps, tokens and artifacts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub steps: Vec<StepRecord>,
    pub tokens: Vec<TokenRecord>,
    pub artifacts: Vec<Artifact>,
}

fn corrupt(what: &'static str) -> impl Fn(std::io::Error) -> LedgerError {
    move |e| LedgerError::Corrupt {
        what,
        value: e.to_string(),
    }
}

/// The bytes to store of a run's parts (format [`FORMAT_ZSTD_V1`]).
fn pack(
    steps: &[StepRecord],
    tokens: &[TokenRecord],
    artifacts: &[Artifact],
) -> Result<Vec<u8>, LedgerError> {
    let stored = StoredRef {
        s: steps
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    dbtime::format(s.started_at),
                    i64::try_from(s.duration.as_micros()).unwrap_or(i64::MAX),
                    s.passed,
                    s.attempts,
                    s.detail.as_str(),
                )
            })
            .collect(),
        t: tokens
            .iter()
            .map(|t| {
                (
                    t.kind.as_str(),
                    t.text.as_str(),
                    t.authentic,
                    t.checks_json.as_str(),
                )
            })
            .collect(),
        a: artifacts
            .iter()
            .map(|a| (a.kind.as_str(), a.sec_tag, a.content.as_str()))
            .collect(),
    };
    // A provisioning run's JSON is 5-8 KB: sized once, not doubled into.
    let mut json = Vec::with_capacity(JSON_CAPACITY);
    serde_json::to_writer(&mut json, &stored)
        .map_err(|e| LedgerError::InvalidRecord(e.to_string()))?;
    // One compression context a thread (the station's workers pack a
    // run before its finish goes to the writer), the dictionary
    // loaded once. A single-shot frame records its content size.
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Compressor::with_dictionary(LEVEL, DICTIONARY_V1)
                    .map_err(corrupt("payload compressor"))?,
            );
        }
        let compressor = slot
            .as_mut()
            .ok_or(LedgerError::Task("no compressor".into()))?;
        compressor.compress(&json).map_err(corrupt("payload"))
    })
}

impl Payload {
    /// What [`pack`] stored as `format`.
    pub fn unpack(format: i64, bytes: &[u8]) -> Result<Payload, LedgerError> {
        if format != FORMAT_ZSTD_V1 {
            return Err(LedgerError::Corrupt {
                what: "run payload format",
                value: format.to_string(),
            });
        }
        let size = zstd::zstd_safe::get_frame_content_size(bytes)
            .ok()
            .flatten()
            .filter(|&n| n <= MAX_PAYLOAD)
            .ok_or_else(|| LedgerError::Corrupt {
                what: "run payload",
                value: format!("a frame of {} bytes without a plausible size", bytes.len()),
            })?;
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let json = DECOMPRESSOR.with_borrow_mut(|slot| {
            if slot.is_none() {
                *slot = Some(
                    zstd::bulk::Decompressor::with_dictionary(DICTIONARY_V1)
                        .map_err(corrupt("payload decompressor"))?,
                );
            }
            let decompressor = slot
                .as_mut()
                .ok_or(LedgerError::Task("no decompressor".into()))?;
            decompressor
                .decompress(bytes, usize::try_from(size).unwrap_or(0))
                .map_err(corrupt("run payload"))
        })?;
        let stored: Stored = serde_json::from_slice(&json).map_err(|e| LedgerError::Corrupt {
            what: "run payload",
            value: e.to_string(),
        })?;
        Stored::into_payload(stored)
    }
}

impl Stored {
    fn into_payload(self) -> Result<Payload, LedgerError> {
        let steps = self
            .s
            .into_iter()
            .map(|(name, started_at, micros, passed, attempts, detail)| {
                let name = name.parse::<Step>().map_err(|_| LedgerError::Corrupt {
                    what: "step name",
                    value: name,
                })?;
                Ok(StepRecord {
                    name,
                    started_at: dbtime::parse(&started_at).ok_or(LedgerError::Corrupt {
                        what: "step start time",
                        value: started_at,
                    })?,
                    duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                    passed,
                    attempts,
                    detail,
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        let tokens = self
            .t
            .into_iter()
            .map(|(kind, text, authentic, checks_json)| {
                Ok(TokenRecord {
                    kind: TokenKind::parse(&kind).ok_or(LedgerError::Corrupt {
                        what: "token kind",
                        value: kind,
                    })?,
                    text,
                    authentic,
                    checks_json,
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        let artifacts = self
            .a
            .into_iter()
            .map(|(kind, sec_tag, content)| {
                Ok(Artifact {
                    kind: ArtifactKind::parse(&kind).ok_or(LedgerError::Corrupt {
                        what: "artifact kind",
                        value: kind,
                    })?,
                    sec_tag,
                    content,
                })
            })
            .collect::<Result<_, LedgerError>>()?;
        Ok(Payload {
            steps,
            tokens,
            artifacts,
        })
    }
}

impl Payload {
    /// What exports and the hand-off read, and nothing else (retention's
    /// trim of a device's latest pass): the last identity token (the last
    /// authentic one when there is one: `attest-csv`'s), the last device
    /// certificate (`onboard-csv`'s, the onboarding queue's) and the attest
    /// and install steps without their detail (when the token was taken;
    /// whether the certificate was installed).
    pub fn for_exports(&self) -> Payload {
        let token = self
            .tokens
            .iter()
            .rev()
            .find(|t| t.kind == TokenKind::Identity && t.authentic)
            .or_else(|| {
                self.tokens
                    .iter()
                    .rev()
                    .find(|t| t.kind == TokenKind::Identity)
            });
        let certificate = self
            .artifacts
            .iter()
            .rev()
            .find(|a| a.kind == ArtifactKind::DeviceCertificate);
        Payload {
            steps: self
                .steps
                .iter()
                .filter(|s| matches!(s.name, Step::Attest | Step::Install))
                .map(|s| StepRecord {
                    detail: String::new(),
                    ..s.clone()
                })
                .collect(),
            tokens: token.cloned().into_iter().collect(),
            artifacts: certificate.cloned().into_iter().collect(),
        }
    }

    /// The last identity token (the claim queue's).
    pub fn identity_token(&self) -> Option<&str> {
        self.tokens
            .iter()
            .rev()
            .find(|t| t.kind == TokenKind::Identity)
            .map(|t| t.text.as_str())
    }

    /// The last device certificate (the onboarding queue's).
    pub fn device_certificate(&self) -> Option<&str> {
        self.artifacts
            .iter()
            .rev()
            .find(|a| a.kind == ArtifactKind::DeviceCertificate)
            .map(|a| a.content.as_str())
    }
}

/// Run `run`'s payload trimmed to [`Payload::for_exports`], and the bytes
/// it has now; `None` when it has no payload.
pub(super) fn trimmed(tx: &Connection, run: RunId) -> Result<Option<(Payload, i64)>, LedgerError> {
    let stored: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT format, body FROM run_payloads WHERE run_id = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([run], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(sql("read run payload"))?;
    let Some((format, body)) = stored else {
        return Ok(None);
    };
    let trimmed = Payload::unpack(format, &body)?.for_exports();
    Ok(Some((
        trimmed,
        i64::try_from(body.len()).unwrap_or(i64::MAX),
    )))
}

/// A run's payload compressed for storing, with what the hand-off's queues
/// need to know of it. Made on the caller's thread: the station has one
/// writer, and a burst of boards finishing together would otherwise wait
/// for every one of their compressions in turn (issue 25).
pub(super) struct Packed {
    /// None when the run has no steps, tokens or artifacts.
    body: Option<Vec<u8>>,
    claimable: bool,
    onboardable: bool,
}

impl Packed {
    pub(super) fn of(record: &RunRecord) -> Result<Packed, LedgerError> {
        Packed::parts(&record.steps, &record.tokens, &record.artifacts)
    }

    fn parts(
        steps: &[StepRecord],
        tokens: &[TokenRecord],
        artifacts: &[Artifact],
    ) -> Result<Packed, LedgerError> {
        let empty = steps.is_empty() && tokens.is_empty() && artifacts.is_empty();
        Ok(Packed {
            body: match empty {
                true => None,
                false => Some(pack(steps, tokens, artifacts)?),
            },
            // The hand-off's claim queue takes a run with an identity token;
            // the onboarding queue one whose install passed and that has a
            // device certificate.
            claimable: tokens.iter().any(|t| t.kind == TokenKind::Identity),
            onboardable: steps.iter().any(|s| s.name == Step::Install && s.passed)
                && artifacts
                    .iter()
                    .any(|a| a.kind == ArtifactKind::DeviceCertificate),
        })
    }
}

/// Store `packed` as run `run`'s payload; its bytes stored.
pub(super) fn store(tx: &Connection, run: RunId, packed: &Packed) -> Result<usize, LedgerError> {
    let Some(body) = &packed.body else {
        return Ok(0);
    };
    tx.prepare_cached(
        "INSERT INTO run_payloads (run_id, format, body, claimable, onboardable)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            run,
            FORMAT_ZSTD_V1,
            body,
            packed.claimable,
            packed.onboardable,
        ])
    })
    .map_err(sql("store run payload"))?;
    Ok(body.len())
}

/// Store `payload` as run `run`'s; its bytes stored.
pub(super) fn insert(tx: &Connection, run: RunId, payload: &Payload) -> Result<usize, LedgerError> {
    let packed = Packed::parts(&payload.steps, &payload.tokens, &payload.artifacts)?;
    store(tx, run, &packed)
}

/// The payloads of the runs `selected` returns.
pub(super) fn read(
    conn: &Connection,
    selected: &str,
    selected_params: &[&dyn rusqlite::ToSql],
) -> Result<HashMap<RunId, Payload>, LedgerError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, format, body FROM run_payloads WHERE run_id IN ({selected})"
        ))
        .map_err(sql("query run payloads"))?;
    let rows = stmt
        .query_map(selected_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .map_err(sql("query run payloads"))?;
    let mut payloads = HashMap::new();
    for row in rows {
        let (run, format, body) = row.map_err(sql("read run payload"))?;
        payloads.insert(run, Payload::unpack(format, &body)?);
    }
    Ok(payloads)
}

/// The same from the three tables of schema versions 1 to 9 (a read-only
/// view of an older database, and the migration that moves them).
pub(super) fn read_tables(
    conn: &Connection,
    selected: &str,
    selected_params: &[&dyn rusqlite::ToSql],
) -> Result<HashMap<RunId, Payload>, LedgerError> {
    let mut payloads: HashMap<RunId, Payload> = HashMap::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, name, started_at, duration_us, passed, attempts, detail
             FROM steps WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query steps"))?;
    let rows = stmt
        .query_map(selected_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                (
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, bool>(4)?,
                    row.get::<_, u32>(5)?,
                    row.get::<_, String>(6)?,
                ),
            ))
        })
        .map_err(sql("query steps"))?;
    let mut stored: HashMap<RunId, Stored> = HashMap::new();
    let empty = || Stored {
        s: Vec::new(),
        t: Vec::new(),
        a: Vec::new(),
    };
    for row in rows {
        let (run, step) = row.map_err(sql("read step"))?;
        stored.entry(run).or_insert_with(empty).s.push(step);
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, kind, text, authentic, checks_json
             FROM tokens WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query tokens"))?;
    let rows = stmt
        .query_map(selected_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                (
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, String>(4)?,
                ),
            ))
        })
        .map_err(sql("query tokens"))?;
    for row in rows {
        let (run, token) = row.map_err(sql("read token"))?;
        stored.entry(run).or_insert_with(empty).t.push(token);
    }
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, kind, sec_tag, content
             FROM artifacts WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query artifacts"))?;
    let rows = stmt
        .query_map(selected_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                (
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<u32>>(2)?,
                    row.get::<_, String>(3)?,
                ),
            ))
        })
        .map_err(sql("query artifacts"))?;
    for row in rows {
        let (run, artifact) = row.map_err(sql("read artifact"))?;
        stored.entry(run).or_insert_with(empty).a.push(artifact);
    }
    for (run, parts) in stored {
        payloads.insert(run, parts.into_payload()?);
    }
    Ok(payloads)
}

/// Runs converted a statement in the migration to version 10.
const MOVE_BATCH: i64 = 2_000;

/// The migration to version 10's Rust half: every run's rows of the three
/// tables into one payload row, oldest first, then the tables dropped.
/// Progress is logged; systemd hears of it through the progress handler.
pub(super) fn move_into_payloads(tx: &Connection, path: &Path) -> Result<(), LedgerError> {
    let total: i64 = tx
        .query_row("SELECT COUNT(*) FROM runs", [], |row| row.get(0))
        .map_err(sql("count runs to convert"))?;
    let started = Instant::now();
    let mut reported = started;
    let mut after: RunId = 0;
    let mut moved: i64 = 0;
    loop {
        let last: Option<RunId> = tx
            .query_row(
                "SELECT MAX(id) FROM (SELECT id FROM runs WHERE id > ?1 ORDER BY id LIMIT ?2)",
                params![after, MOVE_BATCH],
                |row| row.get(0),
            )
            .map_err(sql("convert runs"))?;
        let Some(last) = last else { break };
        let selected = "SELECT id FROM runs WHERE id > ? AND id <= ?";
        let parts = read_tables(tx, selected, &[&after, &last])?;
        let mut runs: Vec<_> = parts.into_iter().collect();
        runs.sort_by_key(|(run, _)| *run);
        for (run, payload) in &runs {
            insert(tx, *run, payload)?;
        }
        moved += i64::try_from(runs.len()).unwrap_or(0);
        after = last;
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            tracing::info!(
                database = %path.display(),
                runs = after,
                of = total,
                seconds = started.elapsed().as_secs(),
                "moving runs into compact payloads"
            );
        }
    }
    tx.execute_batch("DROP TABLE steps; DROP TABLE tokens; DROP TABLE artifacts;")
        .map_err(sql("drop the tables moved"))?;
    if moved > 0 {
        tracing::info!(database = %path.display(), runs = moved, seconds = started.elapsed().as_secs_f64(), "runs moved into compact payloads");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_comes_back_exactly_and_garbage_is_an_error_not_a_panic() {
        let at = dbtime::parse("2026-12-07T05:22:55.355526Z").unwrap();
        let payload = Payload {
            steps: vec![StepRecord {
                name: Step::Attest,
                started_at: at,
                duration: Duration::from_micros(55_928),
                passed: true,
                attempts: 2,
                detail: "nonce 846a… = challenge \u{202e} ünïcode".into(),
            }],
            tokens: vec![TokenRecord {
                kind: TokenKind::Identity,
                text: "2dn3hQFQcCNTDkU1ROKAk5A0pj4x.0oRDoQEmoQRBIfZYQGl1zF".into(),
                authentic: false,
                checks_json: r#"[{"name":"kind","passed":true}]"#.into(),
            }],
            artifacts: vec![Artifact {
                kind: ArtifactKind::DeviceCertificate,
                sec_tag: Some(16_842_753),
                content: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            }],
        };
        let packed = pack(&payload.steps, &payload.tokens, &payload.artifacts).unwrap();
        assert_eq!(Payload::unpack(FORMAT_ZSTD_V1, &packed).unwrap(), payload);
        assert!(Payload::unpack(2, &packed).is_err());
        for garbage in [&b""[..], b"\x28\xb5\x2f\xfd", &packed[..packed.len() / 2]] {
            assert!(Payload::unpack(FORMAT_ZSTD_V1, garbage).is_err());
        }
    }
}
