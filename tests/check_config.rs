//! `nrf-provd check-config`: every problem in one pass, each at its line and
//! column; the files a config names are checked too; exit 0 / 1 / 2. The
//! daemon refuses to start on the same errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["check-config"])
        .arg(config)
        .output()
        .expect("run check-config")
}

/// 1-based line and column of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let before = &text[..offset];
    (
        before.matches('\n').count() + 1,
        offset - before.rfind('\n').map_or(0, |i| i + 1) + 1,
    )
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn five_mistakes_at_once_are_all_reported_with_their_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = r#"station_id = ""
trust_file = "trusted-devices.csv"

[ports]
paths = ["/dev/serial/by-id/*"]

[serial]
baud = 0

[timeouts]
command = -1

[plan]
sec_tag = 4294967295

[ca]
certificate = "ca.pem"
key = "ca.key"
validity_days = 0
"#;
    let config = dir.path().join("station.toml");
    std::fs::write(&config, text).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let origin = config.display().to_string();
    for (needle, words) in [
        ("\"\"", "station_id must be 1 to 64"),
        ("0\n\n[timeouts]", "serial.baud must be a positive rate"),
        ("-1", "timeouts.command must be a number of seconds"),
        ("4294967295", "plan.sec_tag must be between 0 and"),
        ("0\n", "ca.validity_days must be at least 1"),
    ] {
        let (line, column) = if needle == "0\n" {
            position_of(text, "validity_days = 0")
        } else {
            position_of(text, needle)
        };
        let column = if needle == "0\n" {
            column + "validity_days = ".len()
        } else {
            column
        };
        let expected = format!("{origin}:{line}:{column}: error: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{expected}… {words}\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 errors, 0 warnings"), "{stderr}");
}

#[test]
fn the_files_a_config_names_are_checked_and_warnings_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["ca", "create", "--out"])
        .arg(d)
        .output()
        .expect("ca create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(d.join("trusted-devices.csv"), "not,a,trust\nfile\n").expect("trust");
    std::fs::write(d.join("nrfcloud-api-key"), "0123456789abcdef0123\n").expect("key");
    chmod(&d.join("nrfcloud-api-key"), 0o644);
    let key = std::fs::read_dir(d)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("ca create wrote a key");
    chmod(&key, 0o644);
    let cert = key.with_extension("pem");
    let text = format!(
        r#"station_id = "s1"
database = "results.db"
trust_file = "trusted-devices.csv"

[ports]
paths = ["nothing-here/tty*"]

[identity]
authorities = ["keys", "nrfcloud"]

[ca]
certificate = "{cert}"
key = "{key}"

[cloud]
api_key_file = "nrfcloud-api-key"
"#,
        cert = cert.display(),
        key = key.display()
    );
    let config = d.join("station.toml");
    std::fs::write(&config, &text).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let origin = config.display().to_string();
    for (needle, level, words) in [
        ("\"trusted-devices.csv\"", "error", "trusted-devices.csv"),
        (
            "[\"nothing-here/tty*\"]",
            "warning",
            "matches no port right now",
        ),
        (
            &format!("\"{}\"", key.display()),
            "error",
            "readable by group or others",
        ),
        ("\"nrfcloud-api-key\"", "error", "nrfcloud-api-key"),
    ] {
        let (line, column) = position_of(&text, needle);
        let expected = format!("{origin}:{line}:{column}: {level}: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{expected}… {words}\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("0123456789abcdef0123"),
        "the key is never shown"
    );

    // The daemon refuses to start on the same errors, all of them listed.
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("readable by group or others"), "{stderr}");
    assert!(stderr.contains("nrfcloud-api-key"), "{stderr}");
    assert!(stderr.contains("the station does not start"), "{stderr}");

    // Fixed: only the warning is left, exit 1; with a port there, exit 0.
    chmod(&key, 0o600);
    chmod(&d.join("nrfcloud-api-key"), 0o600);
    let mut trust = nrf_provd::trust::TrustStore::new();
    let device = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let spki =
        p256::pkcs8::EncodePublicKey::to_public_key_der(device.verifying_key()).expect("SPKI");
    trust
        .insert(uuid::Uuid::from_u128(1), spki.as_bytes())
        .expect("trusted key");
    std::fs::write(d.join("trusted-devices.csv"), trust.to_csv()).expect("trust");
    chmod(&d.join("trusted-devices.csv"), 0o644);
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    std::fs::create_dir(d.join("nothing-here")).expect("dir");
    std::fs::write(d.join("nothing-here/ttyACM0"), "").expect("port");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(": ok"), "{stdout}");
}

#[test]
fn the_engineers_token_file_is_checked_like_the_viewers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let text = r#"station_id = "s1"
database = "results.db"

[ports]
paths = ["/dev/null"]

[identity]
authorities = ["collect"]

[plan]
steps = ["probe", "identify", "attest"]

[http]
token_file = "viewer.token"
engineer_token_file = "engineer.token"
"#;
    let config = d.join("station.toml");
    std::fs::write(&config, text).expect("write");
    std::fs::write(d.join("viewer.token"), "a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1\n").expect("token");
    chmod(&d.join("viewer.token"), 0o600);
    std::fs::write(
        d.join("engineer.token"),
        "e9b2c4d6f8a0e1c3b5d7f9a1c3e5b7d9\n",
    )
    .expect("token");
    chmod(&d.join("engineer.token"), 0o640);
    let origin = config.display().to_string();
    let (line, column) = position_of(text, "\"engineer.token\"");
    let at = format!("{origin}:{line}:{column}: error: ");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("readable by group or others")),
        "{at}\n{stdout}"
    );
    assert!(!stdout.contains("e9b2c4d6"), "the token is never shown");

    // Private, but the viewer's token: a viewer would be an engineer.
    chmod(&d.join("engineer.token"), 0o600);
    std::fs::copy(d.join("viewer.token"), d.join("engineer.token")).expect("copy");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&at) && l.contains("same token")),
        "{at}\n{stdout}"
    );

    std::fs::write(
        d.join("engineer.token"),
        "e9b2c4d6f8a0e1c3b5d7f9a1c3e5b7d9\n",
    )
    .expect("token");
    let out = check(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
