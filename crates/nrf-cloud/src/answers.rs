//! What nRF Cloud answers, parsed without I/O. Strict where the contract
//! is fixed (statuses, `claimedIds`, `bulkOpsRequestId`, `status`),
//! tolerant where it is silent (the shape of a bulk claim's `failed`).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::CloudError;
use super::requests::ClaimRow;

/// What nRF Cloud said about one row of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// Claimed (bulk claim) or onboarded (bulk operation).
    Done,
    /// Refused, with nRF Cloud's words.
    Failed(String),
    /// The answer does not say (a row neither listed as claimed nor as
    /// failed, or errors that could not be fetched): find out before
    /// re-sending.
    Unknown,
}

/// One row of a bulk claim and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRowResult {
    /// Index of the row in the request, from 0.
    pub row: usize,
    /// The device UUID read from the row's token (`None` when the token's
    /// first part does not decode).
    pub device_uuid: Option<Uuid>,
    pub outcome: RowOutcome,
}

/// The answer to a bulk claim, per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkClaim {
    /// The HTTP status (200 or 201 when accepted; a 4xx can also carry
    /// per-row failures).
    pub status: u16,
    /// One entry per row sent, in order.
    pub rows: Vec<ClaimRowResult>,
    /// `claimedIds` as nRF Cloud sent them.
    pub claimed_ids: Vec<String>,
    /// Entries of `failed` that name no row (kept as text).
    pub unmatched_failures: Vec<String>,
}

impl BulkClaim {
    pub fn claimed(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.outcome == RowOutcome::Done)
            .count()
    }
}

/// An answer to a single claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDevice {
    /// The claimed device's id (its UUID), when the answer names it.
    pub id: Option<String>,
}

/// State of a bulk operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkOpStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    /// A status this client does not know, kept as sent.
    Other(String),
}

impl BulkOpStatus {
    fn parse(text: &str) -> Self {
        match text {
            "PENDING" => BulkOpStatus::Pending,
            "IN_PROGRESS" => BulkOpStatus::InProgress,
            "SUCCEEDED" => BulkOpStatus::Succeeded,
            "FAILED" => BulkOpStatus::Failed,
            other => BulkOpStatus::Other(other.to_string()),
        }
    }

    /// SUCCEEDED or FAILED: polling can stop.
    pub fn is_final(&self) -> bool {
        matches!(self, BulkOpStatus::Succeeded | BulkOpStatus::Failed)
    }

    pub fn as_str(&self) -> &str {
        match self {
            BulkOpStatus::Pending => "PENDING",
            BulkOpStatus::InProgress => "IN_PROGRESS",
            BulkOpStatus::Succeeded => "SUCCEEDED",
            BulkOpStatus::Failed => "FAILED",
            BulkOpStatus::Other(s) => s,
        }
    }
}

/// One error of a bulk operation: `"[row]: message"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row number as nRF Cloud printed it; Nordic's tool reads it as a
    /// 0-based index into the CSV. `None` when the text names no row.
    pub row: Option<usize>,
    pub message: String,
}

/// A bulk operation (`GET bulk-ops-requests/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkOp {
    pub id: String,
    pub status: BulkOpStatus,
    pub endpoint: Option<String>,
    pub requested_at: Option<String>,
    pub completed_at: Option<String>,
    /// Where nRF Cloud keeps the errors of a FAILED operation (a separate
    /// download, fetched without the API key).
    pub error_summary_url: Option<String>,
    pub errors: Vec<RowError>,
    /// Why the errors of a FAILED operation are not known, if they are not.
    pub errors_unavailable: Option<String>,
}

impl BulkOp {
    /// What happened to row `row` (0-based) of the request: `Done` only
    /// when the operation succeeded, or failed with a known error list that
    /// does not name this row (as Nordic's tool reads it).
    pub fn row_outcome(&self, row: usize) -> RowOutcome {
        match self.status {
            BulkOpStatus::Succeeded => RowOutcome::Done,
            BulkOpStatus::Failed => {
                let mine: Vec<&str> = self
                    .errors
                    .iter()
                    .filter(|e| e.row == Some(row))
                    .map(|e| e.message.as_str())
                    .collect();
                if !mine.is_empty() {
                    RowOutcome::Failed(mine.join("; "))
                } else if self.errors_unavailable.is_some()
                    || self.errors.is_empty()
                    || self.errors.iter().any(|e| e.row.is_none())
                {
                    RowOutcome::Unknown
                } else {
                    RowOutcome::Done
                }
            }
            _ => RowOutcome::Unknown,
        }
    }
}

/// A one-line excerpt of an error body: nRF Cloud's `message` when the body
/// is JSON with one, else the text, whitespace collapsed, at most 300 chars.
pub(crate) fn error_message(body: &[u8], reason: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    if let Ok(ErrorBody { message }) = serde_json::from_slice(body) {
        return excerpt(&message, reason);
    }
    excerpt(&String::from_utf8_lossy(body), reason)
}

fn excerpt(text: &str, reason: &str) -> String {
    const MAX: usize = 300;
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return reason.to_string();
    }
    match collapsed.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

fn malformed(status: u16, detail: impl Into<String>) -> CloudError {
    CloudError::Malformed {
        status,
        detail: detail.into(),
    }
}

/// The answer's JSON as `T`: a body that is not JSON says so with an
/// excerpt; one of another shape names the field and what was expected
/// (`claimedIds[0]: invalid type: integer `1`, expected a string`).
fn answer<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, CloudError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        refused(status, body, &path, &e.into_inner())
    })?;
    json.end().map_err(|e| refused(status, body, ".", &e))?;
    Ok(value)
}

/// Why `body` is not the answer: not JSON at all, or `path` is wrong.
fn refused(status: u16, body: &[u8], path: &str, e: &serde_json::Error) -> CloudError {
    if e.is_data() {
        let place = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        return malformed(status, format!("{place}{e}"));
    }
    malformed(
        status,
        format!(
            "not JSON ({e}): {}",
            excerpt(&String::from_utf8_lossy(body), "empty body")
        ),
    )
}

/// The single-claim answer: any JSON object (the device).
#[derive(Deserialize)]
#[serde(expecting = "a JSON object")]
struct ClaimedAnswer {
    id: Option<String>,
}

/// The single-claim answer: any JSON object (the device), `id` if present.
pub(crate) fn parse_claimed(status: u16, body: &[u8]) -> Result<ClaimedDevice, CloudError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ClaimedDevice { id: None });
    }
    let ClaimedAnswer { id } = answer(status, body)?;
    Ok(ClaimedDevice { id })
}

/// The device UUID in a token's first part (tag 55799 around
/// `[msg_type, device_uuid, ...]`), to tie `claimedIds` to rows.
fn token_uuid(token: &str) -> Option<Uuid> {
    let first = token.split('.').next()?;
    let body = URL_SAFE_NO_PAD.decode(first.trim_end_matches('=')).ok()?;
    let fields = crate::token::attest::decode_body(&body).ok()?;
    Some(Uuid::from_bytes(fields.device_uuid))
}

/// Hints one entry of `failed` gives about its row.
#[derive(Default)]
struct FailureHints {
    index: Option<usize>,
    token: Option<String>,
    uuid: Option<Uuid>,
    text: String,
}

const TOKEN_KEYS: [&str; 2] = ["claimToken", "token"];
const UUID_KEYS: [&str; 4] = ["deviceId", "id", "uuid", "deviceUuid"];
const INDEX_KEYS: [&str; 2] = ["index", "row"];
const MESSAGE_KEYS: [&str; 4] = ["message", "reason", "error", "detail"];

fn hints_from_object(map: &Map<String, Value>) -> FailureHints {
    let get_str = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .map(str::to_string)
    };
    let index = INDEX_KEYS
        .iter()
        .find_map(|k| map.get(*k).and_then(Value::as_u64))
        .and_then(|n| usize::try_from(n).ok());
    let text = get_str(&MESSAGE_KEYS).unwrap_or_else(|| Value::Object(map.clone()).to_string());
    FailureHints {
        index,
        token: get_str(&TOKEN_KEYS),
        uuid: get_str(&UUID_KEYS).and_then(|s| Uuid::parse_str(&s).ok()),
        text,
    }
}

fn hints_from_text(text: &str) -> FailureHints {
    let error = parse_row_error(text);
    FailureHints {
        index: error.row,
        text: error.message,
        ..FailureHints::default()
    }
}

/// A bulk claim's answer: `claimedIds` as the contract says; `failed`,
/// whose shape it does not fix, as a list or a map of entries.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a JSON object")]
struct BulkClaimAnswer {
    claimed_ids: Option<Vec<String>>,
    failed: Option<Failed>,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "expected an array or object")]
enum Failed {
    List(Vec<FailedEntry>),
    /// From a row's token, UUID or index to its reason.
    Map(BTreeMap<String, FailedEntry>),
}

/// One entry of `failed`: its fields are looked through for hints
/// ([`hints_from_object`]), text is read as `"[row]: message"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum FailedEntry {
    Fields(Map<String, Value>),
    Text(String),
    Other(Value),
}

/// Parse a bulk claim answer (200/201, or a 4xx that carries `failed`).
pub(crate) fn parse_bulk_claim(
    status: u16,
    body: &[u8],
    rows: &[ClaimRow],
) -> Result<BulkClaim, CloudError> {
    let BulkClaimAnswer {
        claimed_ids,
        failed,
    } = answer(status, body)?;
    let claimed_ids = match claimed_ids {
        Some(ids) => ids,
        None if !(200..300).contains(&status) => Vec::new(),
        None => return Err(malformed(status, "no claimedIds in the answer")),
    };
    let failures: Vec<FailureHints> = match failed {
        None => Vec::new(),
        Some(Failed::List(items)) => items
            .into_iter()
            .map(|item| match item {
                FailedEntry::Fields(m) => hints_from_object(&m),
                FailedEntry::Text(s) => hints_from_text(&s),
                FailedEntry::Other(other) => FailureHints {
                    text: other.to_string(),
                    ..FailureHints::default()
                },
            })
            .collect(),
        // A map from a row's token, UUID or index to its reason.
        Some(Failed::Map(m)) => m
            .into_iter()
            .map(|(key, value)| {
                let mut hints = match value {
                    FailedEntry::Fields(inner) => hints_from_object(&inner),
                    FailedEntry::Text(text) => FailureHints {
                        text,
                        ..FailureHints::default()
                    },
                    FailedEntry::Other(other) => FailureHints {
                        text: other.to_string(),
                        ..FailureHints::default()
                    },
                };
                hints.index = hints.index.or_else(|| key.parse().ok());
                hints.uuid = hints.uuid.or_else(|| Uuid::parse_str(&key).ok());
                hints.token = hints.token.or(Some(key));
                hints
            })
            .collect(),
    };

    let uuids: Vec<Option<Uuid>> = rows.iter().map(|r| token_uuid(&r.token)).collect();
    let mut by_uuid: HashMap<Uuid, Vec<usize>> = HashMap::new();
    for (i, uuid) in uuids.iter().enumerate() {
        if let Some(u) = uuid {
            by_uuid.entry(*u).or_default().push(i);
        }
    }
    let mut outcomes = vec![RowOutcome::Unknown; rows.len()];
    for id in &claimed_ids {
        if let Some(found) = Uuid::parse_str(id).ok().and_then(|u| by_uuid.get(&u)) {
            for &i in found {
                outcomes[i] = RowOutcome::Done;
            }
        }
    }
    let mut unmatched = Vec::new();
    for hint in failures {
        let matched: Vec<usize> = if let Some(i) = hint
            .token
            .as_deref()
            .and_then(|t| rows.iter().position(|r| r.token == t))
        {
            vec![i]
        } else if let Some(found) = hint.uuid.and_then(|u| by_uuid.get(&u)) {
            found.clone()
        } else if let Some(i) = hint.index.filter(|i| *i < rows.len()) {
            vec![i]
        } else {
            // Free text: a row is named by its token or its UUID.
            (0..rows.len())
                .filter(|&i| {
                    hint.text.contains(&rows[i].token)
                        || uuids[i].is_some_and(|u| hint.text.contains(&u.to_string()))
                })
                .collect()
        };
        let mut used = false;
        for i in matched {
            if outcomes[i] != RowOutcome::Done {
                outcomes[i] = match &outcomes[i] {
                    RowOutcome::Failed(before) => {
                        RowOutcome::Failed(format!("{before}; {}", hint.text))
                    }
                    _ => RowOutcome::Failed(hint.text.clone()),
                };
                used = true;
            }
        }
        if !used {
            unmatched.push(hint.text);
        }
    }
    Ok(BulkClaim {
        status,
        rows: outcomes
            .into_iter()
            .zip(uuids)
            .enumerate()
            .map(|(row, (outcome, device_uuid))| ClaimRowResult {
                row,
                device_uuid,
                outcome,
            })
            .collect(),
        claimed_ids,
        unmatched_failures: unmatched,
    })
}

/// `{"bulkOpsRequestId": "..."}` of an accepted onboarding request.
pub(crate) fn parse_onboard(status: u16, body: &[u8]) -> Result<String, CloudError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", expecting = "a JSON object")]
    struct OnboardAnswer {
        bulk_ops_request_id: Option<String>,
    }
    let OnboardAnswer {
        bulk_ops_request_id,
    } = answer(status, body)?;
    match bulk_ops_request_id {
        Some(id) if !id.trim().is_empty() => Ok(id),
        _ => Err(malformed(status, "no bulkOpsRequestId in the answer")),
    }
}

/// `"[row]: message"`, or the whole text when it names no row.
pub(crate) fn parse_row_error(text: &str) -> RowError {
    let parsed = text.strip_prefix('[').and_then(|rest| {
        let (inside, message) = rest.split_once("]:")?;
        let row = inside.trim().parse::<usize>().ok()?;
        Some(RowError {
            row: Some(row),
            message: message.trim().to_string(),
        })
    });
    parsed.unwrap_or_else(|| RowError {
        row: None,
        message: text.trim().to_string(),
    })
}

/// One error of a bulk operation as sent: `"[row]: message"`, or an
/// object whose fields are looked through like a claim's failure.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorEntry {
    Text(String),
    Fields(Map<String, Value>),
    Other(Value),
}

impl From<ErrorEntry> for RowError {
    fn from(entry: ErrorEntry) -> RowError {
        match entry {
            ErrorEntry::Text(s) => parse_row_error(&s),
            ErrorEntry::Fields(m) => {
                let hints = hints_from_object(&m);
                RowError {
                    row: hints.index,
                    message: hints.text,
                }
            }
            ErrorEntry::Other(other) => RowError {
                row: None,
                message: other.to_string(),
            },
        }
    }
}

/// `GET bulk-ops-requests/{id}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "a JSON object")]
struct BulkOpAnswer {
    status: Option<String>,
    errors: Option<Vec<ErrorEntry>>,
    bulk_ops_request_id: Option<String>,
    endpoint: Option<String>,
    requested_at: Option<String>,
    completed_at: Option<String>,
    error_summary_url: Option<String>,
}

/// `GET bulk-ops-requests/{id}`: `status` is required; errors may be inline.
pub(crate) fn parse_bulk_op(
    status: u16,
    body: &[u8],
    asked_id: &str,
) -> Result<BulkOp, CloudError> {
    let op: BulkOpAnswer = answer(status, body)?;
    let state = op
        .status
        .ok_or_else(|| malformed(status, "no status in the bulk operation"))?;
    Ok(BulkOp {
        id: op
            .bulk_ops_request_id
            .unwrap_or_else(|| asked_id.to_string()),
        status: BulkOpStatus::parse(&state),
        endpoint: op.endpoint,
        requested_at: op.requested_at,
        completed_at: op.completed_at,
        error_summary_url: op.error_summary_url,
        errors: op
            .errors
            .unwrap_or_default()
            .into_iter()
            .map(RowError::from)
            .collect(),
        errors_unavailable: None,
    })
}

/// The error summary file: `{"errors": ["[row]: message", ...]}`.
pub(crate) fn parse_error_summary(status: u16, body: &[u8]) -> Result<Vec<RowError>, CloudError> {
    #[derive(Deserialize)]
    #[serde(expecting = "a JSON object")]
    struct ErrorSummary {
        errors: Option<Vec<ErrorEntry>>,
    }
    let summary: ErrorSummary = answer(status, body)?;
    match summary.errors {
        Some(errors) => Ok(errors.into_iter().map(RowError::from).collect()),
        None => Err(malformed(status, "no errors list in the error summary")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(token: &str, tags: &[&str]) -> ClaimRow {
        ClaimRow {
            token: token.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn row_errors_name_their_row() {
        assert_eq!(
            parse_row_error("[3]: Invalid device id"),
            RowError {
                row: Some(3),
                message: "Invalid device id".into()
            }
        );
        assert_eq!(parse_row_error("something broke").row, None);
        assert_eq!(parse_row_error("[x]: no").row, None);
    }

    #[test]
    fn error_message_prefers_message_and_cuts_long_text() {
        assert_eq!(
            error_message(br#"{"message":"Bad token"}"#, "Bad Request"),
            "Bad token"
        );
        assert_eq!(error_message(b"", "Bad Request"), "Bad Request");
        let long = "x".repeat(1000);
        assert!(error_message(long.as_bytes(), "r").chars().count() <= 301);
        assert_eq!(
            error_message(b"<html>\n <b>oops</b>\n</html>", "r"),
            "<html> <b>oops</b> </html>"
        );
    }

    #[test]
    fn bulk_claim_answer_must_list_claimed_ids() {
        let rows = [row("A.B", &[])];
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"claimedIds": "x"}"#,
            br#"{"claimedIds": [1]}"#,
        ] {
            assert!(
                matches!(
                    parse_bulk_claim(200, bad, &rows),
                    Err(CloudError::Malformed { .. })
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let ok = parse_bulk_claim(
            200,
            br#"{"claimedIds": [], "failed": ["[0]: nope"]}"#,
            &rows,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.rows[0].outcome, RowOutcome::Failed("nope".into()));
    }

    /// A refused answer says which field is wrong and what was expected.
    #[test]
    fn a_malformed_answer_names_its_field() {
        let rows = [row("A.B", &[])];
        let detail = |result: Result<BulkClaim, CloudError>| match result {
            Err(CloudError::Malformed { detail, .. }) => detail,
            other => panic!("{other:?}"),
        };
        let d = detail(parse_bulk_claim(200, br#"{"claimedIds": [1]}"#, &rows));
        assert!(
            d.starts_with("claimedIds[0]: invalid type: integer `1`, expected a string"),
            "{d}"
        );
        let d = detail(parse_bulk_claim(
            200,
            br#"{"claimedIds": [], "failed": 3}"#,
            &rows,
        ));
        assert!(
            d.starts_with("failed: ") && d.contains("expected an array or object"),
            "{d}"
        );
        let d = detail(parse_bulk_claim(200, b"[]", &rows));
        assert!(d.contains("expected a JSON object"), "{d}");
        let d = detail(parse_bulk_claim(200, b"<html>oops</html>", &rows));
        assert!(
            d.starts_with("not JSON (") && d.ends_with("<html>oops</html>"),
            "{d}"
        );
        let d = detail(parse_bulk_claim(200, br#"{"claimedIds": []} {}"#, &rows));
        assert!(d.starts_with("not JSON (trailing characters"), "{d}");
        match parse_bulk_op(200, br#"{"status": 7}"#, "X") {
            Err(CloudError::Malformed { detail, .. }) => {
                assert!(
                    detail.starts_with("status: invalid type: integer `7`"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_as_a_map_from_token_to_reason() {
        let rows = [row("A.B", &[]), row("C.D", &[])];
        let ok = parse_bulk_claim(
            200,
            br#"{"claimedIds": [], "failed": {"C.D": "already claimed"}}"#,
            &rows,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.rows[0].outcome, RowOutcome::Unknown);
        assert_eq!(
            ok.rows[1].outcome,
            RowOutcome::Failed("already claimed".into())
        );
    }

    #[test]
    fn bulk_op_row_outcomes() {
        let mut op = parse_bulk_op(200, br#"{"status":"FAILED","errors":["[1]: bad id"]}"#, "X")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(op.id, "X");
        assert_eq!(op.row_outcome(0), RowOutcome::Done);
        assert_eq!(op.row_outcome(1), RowOutcome::Failed("bad id".into()));
        op.errors.clear();
        assert_eq!(op.row_outcome(0), RowOutcome::Unknown);
        assert!(matches!(
            parse_bulk_op(200, br#"{"bulkOpsRequestId":"X"}"#, "X"),
            Err(CloudError::Malformed { .. })
        ));
    }

    proptest::proptest! {
        /// No answer panics the parsers, whatever its bytes.
        #[test]
        fn any_answer_parses_or_is_refused(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let rows = [row("A.B", &[])];
            let _ = parse_bulk_claim(200, &body, &rows);
            let _ = parse_bulk_claim(400, &body, &rows);
            let _ = parse_bulk_op(200, &body, "X");
            let _ = parse_error_summary(200, &body);
            let _ = parse_onboard(202, &body);
            let _ = parse_claimed(201, &body);
            let _ = error_message(&body, "r");
        }

        /// JSON-shaped answers with odd field types are refused, not panicked on.
        #[test]
        fn json_answers_with_any_field_types(value in json_value()) {
            let rows = [row("A.B", &[]), row("C.D", &[])];
            for key in ["claimedIds", "failed", "status", "errors", "bulkOpsRequestId"] {
                let body = serde_json::json!({ key: value.clone() }).to_string();
                let _ = parse_bulk_claim(200, body.as_bytes(), &rows);
                let _ = parse_bulk_op(200, body.as_bytes(), "X");
                let _ = parse_error_summary(200, body.as_bytes());
                let _ = parse_onboard(202, body.as_bytes());
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[\\[\\]0-9a-zA-Z.: -]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z0-9]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
