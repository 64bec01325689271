//! `/api/v1/shift`: the work order, lot, operator and product the next
//! board runs under. `GET` (any role): the values, the fields a board waits
//! for, the fixtures and the latest changes. `POST` (an operator, an
//! engineer, or with no operator token configured a client on this
//! machine): a JSON object naming the fields to change (an empty string
//! clears one), recorded in the ledger before it applies (who, when, old →
//! new). The JSON content type is required: a plain HTML form from another
//! site cannot send it, on top of the `Origin` and fetch-metadata checks
//! every request passes ([`super::origin`]).

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::App;
use super::api::{busy, error};
use super::auth::Role;
use super::metrics::Refusal;
use super::origin::Arrival;
use crate::record::Shift;
use crate::station::ShiftError;

/// Changes `GET` lists.
pub const HISTORY: usize = 20;

/// `GET /api/v1/shift`.
pub async fn show(State(app): State<App>) -> Response {
    let Some(reader) = app.readers.try_reader() else {
        return busy(&app);
    };
    let history = match reader.shift_changes(HISTORY).await {
        Ok(history) => history,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let board = app.station.shift();
    Json(serde_json::json!({
        "shift": board.current(),
        "required": board.settings().require,
        "missing": board.missing(),
        "fixtures": board.settings().fixtures,
        "history": history,
    }))
    .into_response()
}

/// `POST /api/v1/shift`: `{"work_order": "WO-1234", "lot": "", …}`.
pub async fn set(
    State(app): State<App>,
    Extension(role): Extension<Role>,
    arrival: Option<Extension<Arrival>>,
    body: Result<Json<Shift>, JsonRejection>,
) -> Response {
    let peer = arrival.map(|Extension(a)| a.peer);
    if !app.access.may_change_shift(role, peer) {
        app.metrics.refused(Refusal::NotOperator);
        return error(
            StatusCode::FORBIDDEN,
            "changing the shift needs the operator's token (or the engineer's)",
        );
    }
    let update = match body {
        Ok(Json(update)) => update,
        Err(rejection) => {
            return error(
                rejection.status(),
                format!(
                    "send a JSON object (Content-Type: application/json) with any of work_order, lot, operator, product: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    // Who, for the record: the role, or this machine without a token.
    let by = match role {
        Role::Viewer => "local",
        role => role.as_str(),
    };
    match app.station.change_shift(&update, by).await {
        Ok(change) => Json(serde_json::json!({
            "changed": change.is_some(),
            "shift": app.station.shift().current(),
            "change": change,
        }))
        .into_response(),
        Err(ShiftError::Invalid(why)) => error(StatusCode::BAD_REQUEST, why),
        Err(err @ ShiftError::Ledger(_)) => error(StatusCode::SERVICE_UNAVAILABLE, err.to_string()),
    }
}
