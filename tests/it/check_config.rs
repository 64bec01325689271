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
fn value_mistakes_and_the_files_named_are_reported_together() {
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
    // The files the config names are checked in the same pass, mistakes
    // in its values notwithstanding.
    for (needle, words) in [
        ("\"trusted-devices.csv\"", "cannot read the trust file"),
        ("\"ca.pem\"", "cannot read CA certificate"),
    ] {
        let (line, column) = position_of(text, needle);
        let expected = format!("{origin}:{line}:{column}: error: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{expected}… {words}\n{stdout}"
        );
    }
    let errors = stdout.lines().filter(|l| l.contains(": error: ")).count();
    assert_eq!(errors, 7, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("7 errors"), "{stderr}");
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
    let mut trust = nrf91_token::trust::TrustStore::new();
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

/// A trust file with one device key.
fn trust_csv() -> String {
    let mut trust = nrf91_token::trust::TrustStore::new();
    let device = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let spki =
        p256::pkcs8::EncodePublicKey::to_public_key_der(device.verifying_key()).expect("SPKI");
    trust
        .insert(uuid::Uuid::from_u128(1), spki.as_bytes())
        .expect("trusted key");
    trust.to_csv()
}

/// A directory with a valid trust file and a port, for configs whose only
/// problems are the ones a test puts in.
fn station_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("trusted-devices.csv"), trust_csv()).expect("trust");
    std::fs::create_dir(dir.path().join("ports")).expect("ports");
    std::fs::write(dir.path().join("ports/ttyACM0"), "").expect("port");
    dir
}

/// The lines of `output` that report an error.
fn errors(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains(": error: ")).collect()
}

/// The installer's config of issue 20: a misspelt key, a string for a
/// number, an unknown value, an unknown step and a trust file that is not
/// there. (needle, words of the message); the needle's first occurrence is
/// where the problem is reported.
const FIVE_MISTAKES: &str = r#"station_id = "line1-station01"
databse = "results.db"
trust_file = "missing-trust.csv"

[ports]
paths = ["ports/tty*"]
rescan_interval_ms = "fast"

[serial]
flow_control = "sometimes"

[plan]
steps = ["probe", "identify", "teleport", "attest"]
"#;

const FIVE_REPORTS: [(&str, &str); 5] = [
    (
        "databse",
        "unknown key `databse` at the top level; did you mean `database`?",
    ),
    ("\"missing-trust.csv\"", "cannot read the trust file"),
    (
        "\"fast\"",
        "ports.rescan_interval_ms: found string \"fast\", expected a whole number",
    ),
    (
        "\"sometimes\"",
        "serial.flow_control: unknown value \"sometimes\"; expected one of \"none\", \"rtscts\", \"xonxoff\"",
    ),
    (
        "\"teleport\"",
        "plan.steps: unknown value \"teleport\"; expected one of \"probe\", \"identify\"",
    ),
];

/// Each of `reports` is on its own line of `output`, at its needle's line
/// and column in `text`.
fn assert_reported(output: &str, text: &str, origin: &str, reports: &[(&str, &str)]) {
    for (needle, words) in reports {
        let (line, column) = position_of(text, needle);
        let at = format!("{origin}:{line}:{column}: error: ");
        let found = output
            .lines()
            .filter(|l| l.contains(&at) && l.contains(words))
            .count();
        assert_eq!(found, 1, "{at}… {words}\n{output}");
    }
}

#[test]
fn an_installers_five_mistakes_are_all_reported_in_one_run() {
    let dir = station_dir();
    let config = dir.path().join("station.toml");
    std::fs::write(&config, FIVE_MISTAKES).expect("write");
    let origin = config.display().to_string();

    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_reported(&stdout, FIVE_MISTAKES, &origin, &FIVE_REPORTS);
    assert_eq!(errors(&stdout).len(), 5, "nothing else: {stdout}");
    let lines: Vec<_> = errors(&stdout)
        .iter()
        .map(|l| l.split(": error: ").next().unwrap_or_default())
        .collect();
    let mut distinct = lines.clone();
    distinct.dedup();
    assert_eq!(distinct, lines, "each at its own line and column");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 errors, 0 warnings"), "{stderr}");

    // The daemon refuses to start with the same list.
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_reported(&stderr, FIVE_MISTAKES, &origin, &FIVE_REPORTS);
    assert_eq!(errors(&stderr).len(), 5, "{stderr}");
    assert!(
        stderr.contains("5 problem(s); the station does not start"),
        "{stderr}"
    );
}

/// A config with no problem at all (in a [`station_dir`]).
const CLEAN: &str = r#"station_id = "s1"
database = "results.db"
trust_file = "trusted-devices.csv"

[ports]
paths = ["ports/tty*"]
rescan_interval_ms = 500

[serial]
flow_control = "none"

[plan]
steps = ["probe", "identify", "attest"]
sec_tag = 42
"#;

#[test]
fn each_class_of_mistake_is_reported_alone_at_its_place() {
    let dir = station_dir();
    let d = dir.path();
    let config = d.join("station.toml");
    let origin = config.display().to_string();
    std::fs::write(&config, CLEAN).expect("write");
    let out = check(&config);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    std::fs::write(d.join("open.csv"), trust_csv()).expect("trust");
    chmod(&d.join("open.csv"), 0o666);
    std::fs::write(
        d.join("garbled.csv"),
        "device_uuid,public_key\nnot-a-uuid,AAAA\n",
    )
    .expect("trust");
    // (class, the line changed, its mistake, where it is reported, the words)
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "unknown key, one edit from a known one",
            "database = ",
            "databse = ",
            "databse",
            "unknown key `databse` at the top level; did you mean `database`?",
        ),
        (
            "unknown key in a table",
            "sec_tag = 42",
            "sec_tag = 42\nsectag = 1",
            "sectag",
            "unknown key `sectag` in [plan]; did you mean `sec_tag`?",
        ),
        (
            "unknown key, nothing near",
            "sec_tag = 42",
            "sec_tag = 42\ncolour = \"red\"",
            "colour",
            "unknown key `colour` in [plan]; expected one of `steps`, `sec_tag`",
        ),
        (
            "wrong type",
            "rescan_interval_ms = 500",
            "rescan_interval_ms = \"fast\"",
            "\"fast\"",
            "ports.rescan_interval_ms: found string \"fast\", expected a whole number, 0 or more",
        ),
        (
            "unknown variant",
            "\"none\"",
            "\"sometimes\"",
            "\"sometimes\"",
            "serial.flow_control: unknown value \"sometimes\"; expected one of \"none\", \"rtscts\", \"xonxoff\"",
        ),
        (
            "unknown variant, one edit from a known one",
            "\"none\"",
            "\"rtscst\"",
            "\"rtscst\"",
            "did you mean \"rtscts\"?",
        ),
        (
            "unknown step",
            "\"identify\", \"attest\"",
            "\"identify\", \"atest\"",
            "\"atest\"",
            "plan.steps: unknown value \"atest\"; expected one of \"probe\", \"identify\", \"offline\", \"attest\"",
        ),
        (
            "out of range",
            "sec_tag = 42",
            "sec_tag = 4294967295",
            "4294967295",
            "plan.sec_tag must be between 0 and 2147483647",
        ),
        (
            "out of range for its type",
            "rescan_interval_ms = 500",
            "rescan_interval_ms = -5",
            "-5",
            "ports.rescan_interval_ms: found integer `-5`, expected a whole number, 0 or more",
        ),
        (
            "bad step order",
            "[\"probe\", \"identify\"",
            "[\"identify\", \"probe\"",
            "\"probe\"",
            "step `probe` must come first",
        ),
        (
            "missing key",
            "paths = [\"ports/tty*\"]\n",
            "",
            "[ports]",
            "missing key `paths` in [ports]",
        ),
        (
            "missing file",
            "\"trusted-devices.csv\"",
            "\"nowhere.csv\"",
            "\"nowhere.csv\"",
            "cannot read the trust file",
        ),
        (
            "unreadable file",
            "\"trusted-devices.csv\"",
            "\"ports\"",
            "\"ports\"",
            "trust file is not a regular file",
        ),
        (
            "file too open",
            "\"trusted-devices.csv\"",
            "\"open.csv\"",
            "\"open.csv\"",
            "writable by group or others",
        ),
        (
            "file does not parse",
            "\"trusted-devices.csv\"",
            "\"garbled.csv\"",
            "\"garbled.csv\"",
            "garbled.csv: line 2",
        ),
    ];
    for (class, from, to, needle, words) in cases {
        assert_eq!(CLEAN.matches(from).count(), 1, "{class}: {from}");
        let text = CLEAN.replace(from, to);
        std::fs::write(&config, &text).expect("write");
        let out = check(&config);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{class}: {stdout}");
        assert_reported(&stdout, &text, &origin, &[(needle, words)]);
        assert_eq!(errors(&stdout).len(), 1, "{class}: only this: {stdout}");
    }
}

#[test]
fn a_config_given_by_its_bare_name_is_relative_to_the_working_directory() {
    let dir = station_dir();
    std::fs::write(dir.path().join("station.toml"), CLEAN).expect("write");
    // As an installer in /etc/nrf-provd would type it: the relative port
    // pattern and trust file are found next to the config.
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["check-config", "station.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("station.toml: ok"), "{stdout}");
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

#[test]
fn production_sec_tag_rules_and_the_ownership_key_file_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = dir.path().join("owner.pem");
    std::fs::write(
        &owner,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    chmod(&owner, 0o644);
    let text = r#"station_id = "s1"
trust_file = "trusted-devices.csv"

[ports]
paths = ["/dev/serial/by-id/*"]

[plan]
sec_tag = 2147483650
steps = ["probe", "identify", "offline", "attest", "claim", "restore"]

[claim]
ownership_key = "owner.pem"
sec_tag = 3000000000
"#;
    let config = dir.path().join("station.toml");
    std::fs::write(&config, text).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let origin = config.display().to_string();
    for (needle, words) in [
        (
            "2147483650",
            "plan.sec_tag 2147483650 is in Nordic's debug-decryptable range",
        ),
        (
            "3000000000",
            "claim.sec_tag must be between 0 and 2147483647",
        ),
    ] {
        let (line, column) = position_of(text, needle);
        let expected = format!("{origin}:{line}:{column}: error: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains(words)),
            "{expected}{words} in:\n{stdout}"
        );
    }
    // The ownership key is a secret: refused when others can read it.
    assert!(
        stdout.contains("ownership key is readable by group or others"),
        "{stdout}"
    );
    // A test station may use the debug range; the key, once private, must
    // still be a key.
    chmod(&owner, 0o600);
    std::fs::write(
        &config,
        format!(
            "test_station = true\n{}",
            text.replace("3000000000", "16842754")
        ),
    )
    .expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("debug-decryptable"), "{stdout}");
    assert!(stdout.contains("not a P-256 private key"), "{stdout}");
}

#[test]
fn a_ca_chain_too_long_for_the_modem_s_at_buffer_is_reported_at_install() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = std::fs::read_to_string(testkit::fixtures::path("openssl-ca.pem")).expect("CA");
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, one.repeat(4096 / one.len() + 1)).expect("write");
    let text = r#"station_id = "s1"
trust_file = "trusted-devices.csv"

[ports]
paths = ["/dev/serial/by-id/*"]

[ca]
certificate = "ca.pem"
key = "ca.key"
install = ["chain.pem"]
"#;
    let config = dir.path().join("station.toml");
    std::fs::write(&config, text).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (line, column) = position_of(text, "[\"chain.pem\"]");
    let expected = format!("{}:{line}:{column}: error: ", config.display());
    assert!(
        stdout.lines().any(|l| l.starts_with(&expected)
            && l.contains("the modem's AT command buffer takes at most 4096")
            && l.contains("install fewer CA certificates")),
        "{expected} in:\n{stdout}"
    );
    // One certificate fits.
    std::fs::write(&chain, &one).expect("write");
    let out = check(&config);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("AT command buffer"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `[[sink]]`: a webhook that would send the runs in clear to another
/// machine, a webhook secret others can read, a command with no program,
/// an unknown kind and a key of another kind: every one at its place.
#[test]
fn sink_mistakes_are_reported_at_their_places() {
    let dir = station_dir();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    chmod(&secret, 0o644);
    let text = format!(
        r#"{CLEAN}
[[sink]]
kind = "webhook"
url = "http://mes.example/runs"
secret_file = "webhook.secret"

[[sink]]
kind = "webhook"
url = "https://mes.example/runs"
secret_file = "webhook.secret"
run = ["/bin/true"]

[[sink]]
kind = "command"
run = []

[[sink]]
kind = "amqp"
"#
    );
    let config = dir.path().join("station.toml");
    std::fs::write(&config, &text).expect("write");
    let origin = config.display().to_string();
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_reported(
        &stdout,
        &text,
        &origin,
        &[
            (
                "\"http://mes.example/runs\"",
                "plain http:// to another machine would send the runs in clear",
            ),
            (
                "[\"/bin/true\"]",
                "`run` is not a setting of a \"webhook\" sink",
            ),
            ("[]", "sink run names no program"),
            (
                "\"amqp\"",
                "sink kind \"amqp\": expected webhook, command or mqtt",
            ),
        ],
    );
    // The secret of the one webhook that could be read, refused for its mode.
    let secret_errors: Vec<_> = errors(&stdout)
        .into_iter()
        .filter(|l| {
            l.contains("webhook secret") && l.contains("sink `webhook https://mes.example/runs`")
        })
        .collect();
    assert_eq!(secret_errors.len(), 1, "{stdout}");
    assert_eq!(errors(&stdout).len(), 5, "nothing else: {stdout}");

    // Loopback http:// and a 0600 secret are fine.
    chmod(&secret, 0o600);
    let fine = format!(
        "{CLEAN}\n[[sink]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/runs\"\nsecret_file = \"webhook.secret\"\n\
         \n[[sink]]\nkind = \"command\"\nrun = [\"/usr/local/bin/mes-push\", \"--json\"]\ntimeout = \"10s\"\n"
    );
    std::fs::write(&config, &fine).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(errors(&stdout).is_empty(), "{stdout}");
}

/// An mqtt `[[sink]]`: plain mqtt:// to another machine, a wildcard topic,
/// a password file others can read, a password without a user and a key
/// of another kind: every one at its place; loopback mqtt:// and mqtts://
/// with a 0600 password are fine.
#[test]
fn mqtt_sink_mistakes_are_reported_at_their_places() {
    let dir = station_dir();
    let password = dir.path().join("mqtt.password");
    std::fs::write(&password, "pw\n").expect("password");
    chmod(&password, 0o644);
    let text = format!(
        r#"{CLEAN}
[[sink]]
kind = "mqtt"
url = "mqtt://broker.example:1883"

[[sink]]
kind = "mqtt"
url = "mqtts://broker.example"
topic = "factory/+/runs"

[[sink]]
kind = "mqtt"
url = "mqtts://broker.example:8883"
username = "station"
password_file = "mqtt.password"
secret_file = "mqtt.secret"

[[sink]]
kind = "mqtt"
url = "mqtts://other.example"
password_file = "nobody.password"
"#
    );
    let config = dir.path().join("station.toml");
    std::fs::write(&config, &text).expect("write");
    let origin = config.display().to_string();
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_reported(
        &stdout,
        &text,
        &origin,
        &[
            (
                "\"mqtt://broker.example:1883\"",
                "plain mqtt:// to another machine would send the runs and the password in clear",
            ),
            (
                "\"factory/+/runs\"",
                "a wildcard (or NUL) cannot be published to",
            ),
            (
                "\"mqtt.secret\"",
                "`secret_file` is not a setting of a \"mqtt\" sink",
            ),
            ("\"nobody.password\"", "`password_file` needs `username`"),
        ],
    );
    assert_eq!(errors(&stdout).len(), 5, "nothing else: {stdout}");

    chmod(&password, 0o600);
    let fine = format!(
        "{CLEAN}\n[[sink]]\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n\
         \n[[sink]]\nkind = \"mqtt\"\nurl = \"mqtts://broker.example\"\ntopic = \"factory/{{station_id}}/runs\"\n\
         username = \"station\"\npassword_file = \"mqtt.password\"\n"
    );
    std::fs::write(&config, &fine).expect("write");
    let out = check(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(errors(&stdout).is_empty(), "{stdout}");
}
