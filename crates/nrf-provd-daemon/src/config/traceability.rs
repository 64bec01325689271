//! `[traceability]`: the work order, lot, operator and product a station
//! starts with (an operator changes them while it runs), the fields a board
//! waits for, and each port's fixture, read into the core's
//! [`TraceSettings`] with every mistake at its position.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::Source;
use crate::record::{MAX_SHIFT_VALUE, Shift, ShiftField};
use crate::station::TraceSettings;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraceability {
    work_order: Option<Spanned<String>>,
    lot: Option<Spanned<String>>,
    operator: Option<Spanned<String>>,
    product: Option<Spanned<String>>,
    require: Option<Vec<Spanned<String>>>,
    fixtures: Option<BTreeMap<String, Spanned<String>>>,
}

/// `[traceability]`, every problem reported and its value left out.
pub(super) fn validate(src: &Source, raw: RawTraceability) -> TraceSettings {
    let mut start = Shift::default();
    for (field, value) in [
        (ShiftField::WorkOrder, raw.work_order),
        (ShiftField::Lot, raw.lot),
        (ShiftField::Operator, raw.operator),
        (ShiftField::Product, raw.product),
    ] {
        let Some(value) = value else { continue };
        let mut update = Shift::default();
        set(&mut update, field, value.get_ref().clone());
        match start.updated(&update) {
            Ok(next) => start = next,
            Err(why) => src.report(src.at(value.span(), format!("traceability.{why}"))),
        }
    }
    let mut require = Vec::new();
    for name in raw.require.unwrap_or_default() {
        match ShiftField::parse(name.get_ref()) {
            Some(field) if !require.contains(&field) => require.push(field),
            Some(_) => {}
            None => src.report(src.at(
                name.span(),
                format!(
                    "traceability.require: unknown field {:?}; expected some of {}",
                    name.get_ref(),
                    field_list()
                ),
            )),
        }
    }
    let mut fixtures = BTreeMap::new();
    for (port, name) in raw.fixtures.unwrap_or_default() {
        let text = name.get_ref().trim();
        let problem = if port.trim().is_empty() {
            Some("a fixture needs a port path or stable name as its key".to_string())
        } else if text.is_empty() {
            Some(format!("the fixture of {port:?} needs a name"))
        } else if text.chars().any(char::is_control) || text.chars().count() > MAX_SHIFT_VALUE {
            Some(format!(
                "the fixture name of {port:?} must be at most {MAX_SHIFT_VALUE} characters without control characters"
            ))
        } else {
            None
        };
        match problem {
            Some(why) => src.report(src.at(name.span(), format!("traceability.fixtures: {why}"))),
            None => {
                fixtures.insert(port, text.to_string());
            }
        }
    }
    TraceSettings {
        start,
        require,
        fixtures,
    }
}

fn set(shift: &mut Shift, field: ShiftField, value: String) {
    let slot = match field {
        ShiftField::WorkOrder => &mut shift.work_order,
        ShiftField::Lot => &mut shift.lot,
        ShiftField::Operator => &mut shift.operator,
        ShiftField::Product => &mut shift.product,
    };
    *slot = Some(value);
}

fn field_list() -> String {
    ShiftField::ALL
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
