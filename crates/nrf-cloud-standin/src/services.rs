//! The stand-in's services: claims (single, dry run, bulk CSV), unclaim,
//! onboarding and bulk operations. The gate in `mod.rs` has already
//! recorded the request, applied faults and checked the key.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::judge::{TokenDevice, device_type_name, read_token};
use super::{
    BulkOperation, Claimed, Endpoint, FailedShape, OnboardItem, ROW_LIMIT, Shared, Verdict, World,
    message,
};

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why a token cannot be claimed, as status and message.
type Refusal = (StatusCode, String);

/// Judge a claim token against the trusted device database and the claims
/// already made. Unknown on the real service: the status for a device that
/// is already claimed; the stand-in answers 409 Conflict (Nordic's
/// `claim_and_provision_device --unclaim` suggests a second claim fails).
fn judge(world: &World, token: &str) -> Result<TokenDevice, Refusal> {
    let device = read_token(token).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let uuid = device.device_uuid;
    match world.devices.get(&uuid) {
        None => Err((
            StatusCode::BAD_REQUEST,
            format!("Device {uuid} is not in the trusted device database"),
        )),
        Some(Verdict::Reject(reason)) => Err((StatusCode::BAD_REQUEST, reason.clone())),
        Some(Verdict::Accept) if world.claimed.contains_key(&uuid) => Err((
            StatusCode::CONFLICT,
            format!("Device {uuid} is already claimed"),
        )),
        Some(Verdict::Accept) => Ok(device),
    }
}

/// `{"claimToken": "...", "tags": ["..."]}`; the error is a 400's message.
fn claim_body(body: &[u8]) -> Result<(String, Vec<String>), String> {
    let bad = |m: &str| m.to_string();
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("Request body must be a JSON object"));
    };
    let token = match map.get("claimToken") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_string(),
        _ => return Err(bad("claimToken is required and must be a string")),
    };
    let tags = match map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("tags must be an array of strings"))?,
        Some(_) => return Err(bad("tags must be an array of strings")),
    };
    Ok((token, tags))
}

pub(super) async fn claimed_devices(
    State(shared): State<Arc<Shared>>,
    Extension(endpoint): Extension<Endpoint>,
    body: Bytes,
) -> Response {
    match endpoint {
        Endpoint::ClaimDryRun => dry_run(&shared, &body),
        Endpoint::Claim => claim_one(&shared, &body),
        _ => bulk_claim(&shared, &body),
    }
}

fn dry_run(shared: &Shared, body: &[u8]) -> Response {
    let (token, _) = match claim_body(body) {
        Ok(parsed) => parsed,
        Err(m) => return message(StatusCode::BAD_REQUEST, &m),
    };
    match judge(&shared.world(), &token) {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err((status, m)) => message(status, &m),
    }
}

fn claim_one(shared: &Shared, body: &[u8]) -> Response {
    let (token, tags) = match claim_body(body) {
        Ok(parsed) => parsed,
        Err(m) => return message(StatusCode::BAD_REQUEST, &m),
    };
    let mut world = shared.world();
    let device = match judge(&world, &token) {
        Ok(device) => device,
        Err((status, m)) => return message(status, &m),
    };
    world.claimed.insert(
        device.device_uuid,
        Claimed {
            device,
            tags: tags.clone(),
        },
    );
    let answer = json!({
        "id": device.device_uuid.to_string(),
        "deviceType": device_type_name(device.device_type),
        "firmwareId": device.firmware_uuid.to_string(),
        "tags": tags,
        "claimedAt": now(),
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// CSV rows of a request: quoted fields, no header; blank lines skipped.
/// The error is a 400's message.
fn csv_rows(body: &[u8]) -> Result<Vec<Vec<String>>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("Invalid CSV: {e}"))?;
        if rows.len() == ROW_LIMIT {
            return Err(format!("Too many rows: at most {ROW_LIMIT} per request"));
        }
        rows.push(record.iter().map(str::to_string).collect());
    }
    if rows.is_empty() {
        return Err("The CSV has no rows".into());
    }
    Ok(rows)
}

/// Unknown on the real service: the status of a bulk answer. The stand-in
/// answers 201 when it claimed at least one device, else 200 (Nordic's tool
/// accepts both).
fn bulk_claim(shared: &Shared, body: &[u8]) -> Response {
    let rows = match csv_rows(body) {
        Ok(rows) => rows,
        Err(m) => return message(StatusCode::BAD_REQUEST, &m),
    };
    // Whole-request checks first: a row that is not `token[,tags]` refuses
    // the request; a token that cannot be claimed fails its row only.
    let mut parsed = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let token = row.first().map(|t| t.trim()).unwrap_or_default();
        if row.len() > 2 || token.is_empty() {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("Row {i}: expected a claim token and an optional quoted tags column"),
            );
        }
        let tags: Vec<String> = row
            .get(1)
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        parsed.push((token.to_string(), tags));
    }
    let mut world = shared.world();
    let mut claimed_ids = Vec::new();
    let mut failed = Vec::new();
    for (i, (token, tags)) in parsed.into_iter().enumerate() {
        match judge(&world, &token) {
            Ok(device) => {
                world
                    .claimed
                    .insert(device.device_uuid, Claimed { device, tags });
                claimed_ids.push(device.device_uuid.to_string());
            }
            Err((_, reason)) => failed.push(match shared.config.failed_shape {
                FailedShape::Objects => json!({ "claimToken": token, "message": reason }),
                FailedShape::Strings => json!(format!("[{i}]: {reason}")),
            }),
        }
    }
    let status = if claimed_ids.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (
        status,
        Json(json!({ "claimedIds": claimed_ids, "failed": failed })),
    )
        .into_response()
}

pub(super) async fn unclaim(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
) -> Response {
    let removed = Uuid::parse_str(&uuid)
        .ok()
        .and_then(|u| shared.world().claimed.remove(&u));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => message(
            StatusCode::NOT_FOUND,
            &format!("Device {uuid} is not claimed"),
        ),
    }
}

fn valid_device_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

const FW_TYPES: [&str; 6] = [
    "APP",
    "MODEM",
    "BOOT",
    "SOFTDEVICE",
    "BOOTLOADER",
    "MDM_FULL",
];

fn valid_certificate(pem: &str) -> bool {
    let pem = pem.trim();
    let Some(inner) = pem
        .strip_prefix("-----BEGIN CERTIFICATE-----")
        .and_then(|rest| rest.strip_suffix("-----END CERTIFICATE-----"))
    else {
        return false;
    };
    let b64: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .is_ok_and(|der| !der.is_empty())
}

/// What is wrong with one onboarding row, if anything (checked when the
/// request arrives; reported through the bulk operation, as nRF Cloud does).
fn row_problem(world: &World, seen: &[OnboardItem], row: &[String]) -> Option<String> {
    let [id, _sub_type, _tags, fw_types, certificate] = row else {
        return Some("Expected 5 columns".into());
    };
    if !valid_device_id(id) {
        return Some(format!(
            "Invalid device id {id:?}: must match ^[a-z0-9:_-]{{1,128}}$"
        ));
    }
    if let Some(bad) = fw_types
        .split('|')
        .filter(|t| !t.is_empty())
        .find(|t| !FW_TYPES.contains(t))
    {
        return Some(format!("Invalid firmware type {bad:?}"));
    }
    if !valid_certificate(certificate) {
        return Some("The device certificate is not a PEM certificate".into());
    }
    let key = id.to_ascii_lowercase();
    if seen.iter().any(|item| item.device_id == key) {
        return Some(format!("Device {id} appears twice in the request"));
    }
    match world.onboarded.get(&key) {
        // The same device with the same certificate: onboarding again is a no-op.
        Some(existing) if existing.trim() != certificate.trim() => Some(format!(
            "Device {id} already exists in account with different attributes"
        )),
        _ => None,
    }
}

pub(super) async fn onboard(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if json_sent {
        return message(
            StatusCode::BAD_REQUEST,
            "Expected an onboarding CSV (text/csv)",
        );
    }
    let rows = match csv_rows(&body) {
        Ok(rows) => rows,
        Err(m) => return message(StatusCode::BAD_REQUEST, &m),
    };
    if let Some(i) = rows.iter().position(|r| r.len() != 5) {
        return message(
            StatusCode::BAD_REQUEST,
            &format!("Row {i}: expected 5 columns: deviceId,subType,tags,fwTypes,certificate"),
        );
    }
    let mut world = shared.world();
    let mut items = Vec::with_capacity(rows.len());
    let mut errors = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if let Some(problem) = row_problem(&world, &items, row) {
            errors.push(format!("[{i}]: {problem}"));
        }
        items.push(OnboardItem {
            device_id: row[0].to_ascii_lowercase(),
            certificate: row[4].clone(),
        });
    }
    world.next_op += 1;
    let id = format!("01STANDIN{:017}", world.next_op);
    world.bulk_ops.insert(
        id.clone(),
        BulkOperation {
            polls: 0,
            requested_at: now(),
            completed_at: None,
            items,
            errors,
        },
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({ "bulkOpsRequestId": id })),
    )
        .into_response()
}

pub(super) async fn bulk_op(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let polls_to_finish = shared.config.polls_to_finish.max(1);
    let mut guard = shared.world();
    let world = &mut *guard;
    let Some(op) = world.bulk_ops.get_mut(&id) else {
        return message(
            StatusCode::NOT_FOUND,
            &format!("Bulk operation {id} not found"),
        );
    };
    op.polls = op.polls.saturating_add(1);
    let status = if op.polls >= polls_to_finish {
        if op.completed_at.is_none() {
            op.completed_at = Some(now());
            let failed_rows: Vec<usize> = op
                .errors
                .iter()
                .filter_map(|e| e.strip_prefix('[')?.split_once(']')?.0.parse().ok())
                .collect();
            for (i, item) in op.items.iter().enumerate() {
                if !failed_rows.contains(&i) {
                    world
                        .onboarded
                        .insert(item.device_id.clone(), item.certificate.clone());
                }
            }
        }
        if op.errors.is_empty() {
            "SUCCEEDED"
        } else {
            "FAILED"
        }
    } else if op.polls == 1 {
        "PENDING"
    } else {
        "IN_PROGRESS"
    };
    let mut answer = json!({
        "bulkOpsRequestId": id,
        "status": status,
        "endpoint": "PROVISION_DEVICES",
        "requestedAt": op.requested_at,
        "uploadedDataUrl": format!("{}/files/bulk-ops-requests/{id}.csv", shared.base),
    });
    if let Some(done) = &op.completed_at {
        answer["completedAt"] = json!(done);
    }
    if status == "FAILED" {
        answer["errorSummaryUrl"] =
            json!(format!("{}/files/bulk-ops-requests/{id}.json", shared.base));
    }
    (StatusCode::OK, Json(answer)).into_response()
}

pub(super) async fn error_summary(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
) -> Response {
    let world = shared.world();
    let op = file
        .strip_suffix(".json")
        .and_then(|id| world.bulk_ops.get(id))
        .filter(|op| op.completed_at.is_some() && !op.errors.is_empty());
    match op {
        Some(op) => (StatusCode::OK, Json(json!({ "errors": op.errors }))).into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

pub(super) async fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not Found")
}
