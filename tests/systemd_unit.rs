//! The shipped unit: the daemon may serve its page on loopback and nothing
//! wider, and systemd's own exposure score stays at or under 1.5.

use std::path::Path;
use std::process::Command;

fn unit() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/nrf-provd.service")
}

#[test]
fn the_unit_allows_loopback_only() {
    let text = std::fs::read_to_string(unit()).expect("unit");
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(settings.contains(&"IPAddressAllow=localhost"), "{text}");
    assert!(settings.contains(&"IPAddressDeny=any"), "{text}");
    assert!(
        settings.contains(&"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"),
        "{text}"
    );
    assert!(
        !settings.iter().any(|l| l.starts_with("PrivateNetwork=")),
        "a private network namespace would hide the page from the host"
    );
}

#[test]
fn systemd_rates_the_unit_at_or_under_1_5() {
    let analyze = "/usr/bin/systemd-analyze";
    if !Path::new(analyze).exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{analyze} is missing (systemd; scripts/test-deps installs it)"
        );
        eprintln!("SKIPPED systemd_unit: {analyze} is missing; run scripts/test-deps");
        return;
    }
    // --threshold is on systemd's 0–100 scale: 15 is the 1.5 it prints.
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(unit())
        .output()
        .expect("systemd-analyze");
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall level");
    eprintln!("{overall}");
    assert!(out.status.success(), "{overall}\n{report}");
}
