//! What the client sends: the claim JSON, the bulk claim CSV and the
//! onboarding CSV, as `reference/nrf91.md` ("Who verifies real devices:
//! nRF Cloud") and Nordic's `nrfcloud-utils` (`nrf_cloud_diap.py`,
//! `claim_devices.py`, `nrf_cloud_onboard.py`) write them. Rows that would
//! not survive the trip are refused before anything is sent.

use serde_json::{Map, Value};

use super::CloudError;

/// At most this many rows in one bulk claim or onboarding request.
pub const MAX_ROWS: usize = 1000;

/// One device to claim: its `%ATTESTTOKEN` and provisioning tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    pub token: String,
    pub tags: Vec<String>,
}

/// One row of the onboarding CSV
/// (`deviceId,subType,tag1|tag2,APP|MODEM,"<PEM>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardRow {
    /// nRF Cloud checks `^[a-z0-9:_-]{1,128}$` (case-insensitive); the
    /// client leaves that verdict to nRF Cloud (it comes back per row).
    pub device_id: String,
    pub sub_type: String,
    pub tags: Vec<String>,
    /// Firmware types for FOTA, e.g. `APP`, `MODEM`.
    pub fw_types: Vec<String>,
    /// The device certificate, PEM.
    pub certificate_pem: String,
}

fn invalid(row: usize, problem: impl Into<String>) -> CloudError {
    CloudError::InvalidRow {
        row,
        problem: problem.into(),
    }
}

fn check_rows(rows: usize) -> Result<(), CloudError> {
    if rows == 0 {
        return Err(CloudError::InvalidRow {
            row: 0,
            problem: "no rows to send".into(),
        });
    }
    if rows > MAX_ROWS {
        return Err(CloudError::TooManyRows {
            rows,
            max: MAX_ROWS,
        });
    }
    Ok(())
}

/// A field that must stay on one CSV line and contain no `separator`.
fn check_field(
    row: usize,
    what: &str,
    text: &str,
    separator: Option<char>,
) -> Result<(), CloudError> {
    if text.chars().any(char::is_control) {
        return Err(invalid(
            row,
            format!("{what} {text:?} contains a control character"),
        ));
    }
    if let Some(sep) = separator.filter(|s| text.contains(*s)) {
        return Err(invalid(
            row,
            format!("{what} {text:?} contains {sep:?}, the list separator"),
        ));
    }
    Ok(())
}

/// The single-claim and dry-run JSON body.
pub(crate) fn claim_json(token: &str, tags: Option<&[String]>) -> Result<Vec<u8>, CloudError> {
    check_token(0, token)?;
    let mut body = Map::new();
    body.insert("claimToken".into(), Value::String(token.into()));
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        for tag in tags {
            check_tag(0, tag, ',')?;
        }
        body.insert("tags".into(), Value::from(tags.to_vec()));
    }
    serde_json::to_vec(&Value::Object(body)).map_err(|e| CloudError::Config(e.to_string()))
}

fn check_token(row: usize, token: &str) -> Result<(), CloudError> {
    if token.is_empty() {
        return Err(invalid(row, "empty claim token"));
    }
    // base64url "." base64url; anything else would need quoting the server
    // may not undo.
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')))
    {
        return Err(invalid(
            row,
            format!(
                "claim token contains {c:?}; expected base64url text as %ATTESTTOKEN prints it"
            ),
        ));
    }
    Ok(())
}

fn check_tag(row: usize, tag: &str, separator: char) -> Result<(), CloudError> {
    if tag.is_empty() {
        return Err(invalid(row, "empty tag"));
    }
    check_field(row, "tag", tag, Some(separator))
}

fn csv_error(e: csv::Error) -> CloudError {
    CloudError::Config(format!("cannot write CSV: {e}"))
}

/// The bulk claim CSV as Nordic's `claim_devices` writes it: no header,
/// every field quoted, `\n` line ends, one token per row and an optional
/// second column of comma-separated provisioning tags.
pub fn claim_csv(rows: &[ClaimRow]) -> Result<Vec<u8>, CloudError> {
    check_rows(rows.len())?;
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .quote_style(csv::QuoteStyle::Always)
        .terminator(csv::Terminator::Any(b'\n'))
        // Rows with and without a tags column mix.
        .flexible(true)
        .from_writer(Vec::new());
    for (i, row) in rows.iter().enumerate() {
        check_token(i, &row.token)?;
        for tag in &row.tags {
            check_tag(i, tag, ',')?;
        }
        if row.tags.is_empty() {
            out.write_record([row.token.as_str()]).map_err(csv_error)?;
        } else {
            out.write_record([row.token.as_str(), &row.tags.join(",")])
                .map_err(csv_error)?;
        }
    }
    out.into_inner()
        .map_err(|e| csv_error(e.into_error().into()))
}

/// The onboarding CSV: `deviceId,subType,tag1|tag2,APP|MODEM,"<PEM>"`, no
/// header, `\n` line ends, fields quoted where needed (the PEM always is).
pub fn onboard_csv(rows: &[OnboardRow]) -> Result<Vec<u8>, CloudError> {
    check_rows(rows.len())?;
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for (i, row) in rows.iter().enumerate() {
        if row.device_id.is_empty() {
            return Err(invalid(i, "empty device id"));
        }
        check_field(i, "device id", &row.device_id, Some(','))?;
        check_field(i, "sub type", &row.sub_type, Some(','))?;
        for tag in &row.tags {
            check_tag(i, tag, '|')?;
        }
        for fw in &row.fw_types {
            check_tag(i, fw, '|')?;
        }
        let pem = row.certificate_pem.trim();
        if !pem.starts_with("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(i, "certificate is not a PEM CERTIFICATE"));
        }
        out.write_record([
            row.device_id.as_str(),
            &row.sub_type,
            &row.tags.join("|"),
            &row.fw_types.join("|"),
            pem,
        ])
        .map_err(csv_error)?;
    }
    out.into_inner()
        .map_err(|e| csv_error(e.into_error().into()))
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
    fn claim_csv_quotes_every_field_like_nordics_tool() {
        let csv = claim_csv(&[
            row("AAA.BBB", &[]),
            row("CCC.DDD", &["nrf-cloud-onboarding", "line=3"]),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            String::from_utf8_lossy(&csv),
            "\"AAA.BBB\"\n\"CCC.DDD\",\"nrf-cloud-onboarding,line=3\"\n"
        );
    }

    #[test]
    fn claim_csv_refuses_what_would_change_the_rows() {
        assert!(matches!(
            claim_csv(&[row("A.B", &["a,b"])]),
            Err(CloudError::InvalidRow { row: 0, .. })
        ));
        assert!(matches!(
            claim_csv(&[row("A.B", &[]), row("A\".B", &[])]),
            Err(CloudError::InvalidRow { row: 1, .. })
        ));
        let many = vec![row("A.B", &[]); MAX_ROWS + 1];
        assert!(matches!(
            claim_csv(&many),
            Err(CloudError::TooManyRows {
                rows: 1001,
                max: 1000
            })
        ));
    }
}
