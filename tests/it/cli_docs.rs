//! Help, completions and man pages come from the one clap definition: every
//! command's help reads as words (no rustdoc link syntax), the completion
//! scripts know every subcommand, and `man --out` writes a page per command.

use std::process::Command;

use nrf_provd_daemon::cli::docs;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
}

/// Every command path: `[]`, `["run"]`, `["ca"]`, `["ca", "create"]`, …
fn command_paths(cmd: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    for sub in cmd.get_subcommands() {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_owned());
        command_paths(sub, path, out);
    }
}

fn all_paths() -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut cmd = docs::command();
    cmd.build();
    command_paths(&cmd, Vec::new(), &mut paths);
    // clap's own `help` subcommands take no --help and get no man page.
    paths.retain(|path| !path.iter().any(|name| name == "help"));
    paths
}

#[test]
fn every_help_text_is_free_of_rustdoc_links() {
    let paths = all_paths();
    assert!(
        paths.len() > 10,
        "every subcommand and nested one: {paths:?}"
    );
    for path in paths {
        let output = binary()
            .args(&path)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let help = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{path:?} --help");
        // [`Foo`], [`Foo`](path), [text][ref]; a bracketed default may hold `code`.
        for pattern in ["[`", "`](", "]["] {
            assert!(
                !help.contains(pattern),
                "`nrf-provd {} --help` shows rustdoc syntax {pattern:?}:\n{help}",
                path.join(" ")
            );
        }
    }
}

#[test]
fn completions_know_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let output = binary()
            .args(["completions", shell])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        for sub in [
            "run",
            "provision",
            "results",
            "ca",
            "create",
            "ports",
            "man",
        ] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        // A value of an enum option completes too.
        assert!(
            script.contains("attest-csv"),
            "{shell}: results --format values"
        );
    }
    let bad = binary()
        .args(["completions", "tcsh"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_pages_for_every_command() {
    let main = binary()
        .arg("man")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(main.status.code(), Some(0));
    let page = String::from_utf8_lossy(&main.stdout);
    assert!(
        page.starts_with(".ie"),
        "roff: {}",
        &page[..page.len().min(80)]
    );
    assert!(page.contains(".TH nrf-provd 1"), "{page}");
    assert!(
        page.contains("ports"),
        "the main page lists the subcommands"
    );

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("man1");
    let written = binary()
        .args(["man", "--out"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        written.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let listed = String::from_utf8_lossy(&written.stdout);
    let expected: Vec<String> = all_paths()
        .iter()
        .map(|path| {
            let mut name = vec!["nrf-provd".to_owned()];
            name.extend(path.iter().cloned());
            format!("{}.1", name.join("-"))
        })
        .collect();
    for name in &expected {
        let file = out.join(name);
        assert!(file.is_file(), "{name} missing; listed:\n{listed}");
        assert!(
            listed.contains(&file.display().to_string()),
            "{name} not listed"
        );
    }
    let create = std::fs::read_to_string(out.join("nrf-provd-ca-create.1")).unwrap_or_default();
    assert!(create.contains("\\-\\-force"), "{create}");
}
