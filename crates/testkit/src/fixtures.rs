//! The repository's fixtures (`tests/fixtures/`), wherever a test runs from.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Real modem outputs with the fields each decodes to.
pub const REAL_MODEM_TOKENS: &str = include_str!("../../../tests/fixtures/real-modem-tokens.json");

/// A station CA certificate made with OpenSSL.
pub const OPENSSL_CA_PEM: &str = include_str!("../../../tests/fixtures/openssl-ca.pem");

/// The repository's root (where `config/`, `systemd/` and `tests/` are).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of `tests/fixtures/`.
pub fn path(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// Each case of [`REAL_MODEM_TOKENS`]: its name, the token text and the
/// fields it must decode to.
pub fn token_cases() -> Vec<(String, String, Map<String, Value>)> {
    let all: Value = serde_json::from_str(REAL_MODEM_TOKENS).expect("fixture JSON");
    let obj = all.as_object().expect("object");
    obj.iter()
        .filter_map(|(name, case)| {
            let token = case.get("token")?.as_str()?.to_string();
            let expect = case.get("expect")?.as_object()?.clone();
            Some((name.clone(), token, expect))
        })
        .collect()
}

/// `json` has every field of `expect` with its value.
pub fn assert_fields(name: &str, json: &Value, expect: &Map<String, Value>) {
    for (field, want) in expect {
        assert_eq!(
            json.get(field),
            Some(want),
            "{name}: field {field} in {json}"
        );
    }
}
