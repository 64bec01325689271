//! Secrets travel encrypted. The nRF Cloud API key goes with every request,
//! so a `[cloud]` URL in plain `http://` is refused unless it is this
//! machine (127.0.0.0/8, ::1, `localhost`): at config load, by
//! `check-config` and at the daemon's start, at the setting's line and
//! column. The ledger's password is never sent where the connection may be
//! plain text to another machine (`sslmode` disable or prefer): an error;
//! records alone in plain text, or TLS that authenticates nobody
//! (`require` without `sslrootcert`), are warnings.

use std::path::Path;
use std::process::{Command, Output};

use nrf_provd_core::ca::StationCa;
use nrf_provd_daemon::config::StationConfig;

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// A valid station config in `dir` (a CA, the `collect` authority, a port
/// pattern that matches), plus `extra`.
fn config(dir: &Path, extra: &str) -> String {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if !key.exists() {
        StationCa::generate("transit CA", DAY)
            .and_then(|ca| ca.write(&cert, &key))
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("ttyFAKE0"), "").unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in [
            (
                "nrfcloud-api-key",
                "0123456789abcdef0123456789abcdef01234567\n",
            ),
            ("ledger.password", "line-pw\n"),
        ] {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
            std::fs::set_permissions(dir.join(name), private).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    format!(
        r#"station_id = "s1"
database = "{dir}/results.db"

[ports]
paths = ["{dir}/ttyFAKE*"]

[identity]
authorities = ["collect"]

[ca]
certificate = "{cert}"
key = "{key}"
{extra}"#,
        dir = dir.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

fn nrf_provd(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(args)
        .arg(config)
        .env_remove("NRF_PROVD_LEDGER_PASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("nrf-provd: {e}"))
}

/// `check-config` on `text` written to `dir`: exit code and stdout.
fn check(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let out = nrf_provd(&["check-config"], &path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
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

#[test]
fn plain_http_to_another_machine_is_refused_for_every_cloud_url_at_its_setting() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let cloud = |setting: &str, url: &str| {
        config(
            d,
            &format!(
                "\n[cloud]\napi_key_file = \"{}\"\n{setting} = \"{url}\"\n",
                d.join("nrfcloud-api-key").display()
            ),
        )
    };
    let origin = d.join("station.toml").display().to_string();
    for setting in ["provisioning_url", "api_url"] {
        for remote in [
            "http://api.nrfcloud.com/v1/",
            "http://10.1.2.3:8080/v1/",
            "http://[2001:db8::1]/v1/",
            "http://localhost.example/v1/",
        ] {
            let text = cloud(setting, remote);
            let (line, column) = position_of(&text, &format!("\"{remote}\""));

            // At load (the daemon, `cloud claim`, `provision`).
            let e = StationConfig::parse(&text, "station.toml")
                .expect_err("plain http to another machine");
            assert_eq!(e.position(), Some((line, column)), "{setting}: {e}");
            assert!(e.to_string().contains("API key in clear"), "{e}");

            // check-config, at the setting.
            let (code, stdout) = check(d, &text);
            assert_eq!(code, Some(2), "{stdout}");
            let at = format!("{origin}:{line}:{column}: error: ");
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&at) && l.contains("API key in clear")),
                "{at}\n{stdout}"
            );

            // The daemon does not start.
            let out = nrf_provd(&["run", "--config"], &d.join("station.toml"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains("API key in clear"), "{stderr}");
        }
        for local in [
            "http://127.0.0.1:9/v1/",
            "http://127.0.0.53/v1/",
            "http://localhost:9/v1/",
            "http://[::1]:9/v1/",
            "https://api.nrfcloud.example/v1/",
        ] {
            let (code, stdout) = check(d, &cloud(setting, local));
            assert_eq!(code, Some(0), "{setting} = {local}: {stdout}");
        }
    }
}

#[test]
fn a_ledger_password_never_goes_to_another_machine_in_plain_text() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ca_file = d.join("ca.pem");
    let ledger = |url: &str, password: bool| {
        let password = if password {
            format!(
                "password_file = \"{}\"\n",
                d.join("ledger.password").display()
            )
        } else {
            String::new()
        };
        config(d, &format!("\n[ledger]\nurl = \"{url}\"\n{password}"))
    };
    let origin = d.join("station.toml").display().to_string();
    let finding = |text: &str, url: &str| {
        let (code, stdout) = check(d, text);
        let (line, column) = position_of(text, &format!("\"{url}\""));
        let at = format!("{origin}:{line}:{column}: ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&at))
            .map(str::to_owned);
        (code, line, stdout)
    };

    // A password, and a connection that may be plain text: refused.
    for url in [
        "postgres://nrf@db.line3.example/nrf_line".to_string(),
        "postgres://nrf@db.line3.example/nrf_line?sslmode=prefer".to_string(),
        "postgres://nrf@10.3.0.7:5433/nrf_line?sslmode=disable".to_string(),
        "postgres://nrf@localhost/nrf_line?hostaddr=10.3.0.7".to_string(),
    ] {
        let text = ledger(&url, true);
        let (code, line, stdout) = finding(&text, &url);
        assert_eq!(code, Some(2), "{url}: {stdout}");
        assert!(
            line.as_ref()
                .is_some_and(|l| l.contains("error: ledger.url")
                    && l.contains("the ledger password and every record could be read")
                    && l.contains("sslmode=verify-full")),
            "{url}: {stdout}"
        );
        let out = nrf_provd(&["run", "--config"], &d.join("station.toml"));
        assert_eq!(out.status.code(), Some(2), "the daemon does not start");
    }
    // The same, with the password from the environment.
    let url = "postgres://nrf@db.line3.example/nrf_line";
    std::fs::write(d.join("station.toml"), ledger(url, false)).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .arg("check-config")
        .arg(d.join("station.toml"))
        .env("NRF_PROVD_LEDGER_PASSWORD", "from-env")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(!stdout.contains("from-env"), "{stdout}");
    // And `results --ledger`, which reads the password from there.
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["results", "--ledger", url])
        .env("NRF_PROVD_LEDGER_PASSWORD", "from-env")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the ledger password and every record"),
        "{stderr}"
    );

    // No password: the records alone cross in plain text, a warning.
    let (code, line, stdout) = finding(&ledger(url, false), url);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        line.as_ref()
            .is_some_and(|l| l.contains("warning: ledger.url") && l.contains("every record")),
        "{stdout}"
    );
    // TLS without a CA: encrypted, the server not authenticated: a warning.
    let url = "postgres://nrf@db.line3.example/nrf_line?sslmode=require";
    let (code, line, stdout) = finding(&ledger(url, true), url);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        line.as_ref()
            .is_some_and(|l| l.contains("warning: ledger.url") && l.contains("pose as the server")),
        "{stdout}"
    );

    // Authenticated TLS, this machine, a socket: nothing to say.
    for url in [
        format!(
            "postgres://nrf@db.line3.example/nrf_line?sslmode=verify-full&sslrootcert={}",
            ca_file.display()
        ),
        format!(
            "postgres://nrf@db.line3.example/nrf_line?sslmode=verify-ca&sslrootcert={}",
            ca_file.display()
        ),
        "postgres://nrf@127.0.0.1:5433/nrf_line".to_string(),
        "postgres://nrf@[::1]/nrf_line?sslmode=disable".to_string(),
        "postgres://nrf@/nrf_line?host=/run/postgresql".to_string(),
    ] {
        let (code, stdout) = check(d, &ledger(&url, true));
        assert_eq!(code, Some(0), "{url}: {stdout}");
    }

    // A CA file that is no certificate is an error at the URL.
    std::fs::write(d.join("not-a-ca.pem"), "hello\n").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "postgres://nrf@db.line3.example/nrf_line?sslmode=verify-full&sslrootcert={}",
        d.join("not-a-ca.pem").display()
    );
    let (code, line, stdout) = finding(&ledger(&url, true), &url);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        line.as_ref()
            .is_some_and(|l| l.contains("error:") && l.contains("no certificate")),
        "{stdout}"
    );
}
