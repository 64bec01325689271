//! The crate graph is the layer table (ARCHITECTURE.md): each workspace
//! crate depends only on the crates its layer may use, the test doubles
//! are nobody's normal dependency but the tools', nothing goes round in a
//! circle, and the crates meant to be used alone do not drag in a runtime,
//! a database, a command line or an HTTP stack. Read from `cargo metadata`
//! and `cargo tree`, so a new upward edge fails here, in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// What each crate may use as a normal dependency, lowest first. A crate
/// added to the workspace must be added here (and to ARCHITECTURE.md).
const MAY_USE: &[(&str, &[&str])] = &[
    ("secure-file", &[]),
    ("nrf91-token", &["secure-file"]),
    ("nrf91-at", &["nrf91-token"]),
    ("nrf-cloud", &["secure-file", "nrf91-token"]),
    ("nrf-cloud-standin", &[]),
    ("nrf91-sim", &["nrf91-token", "nrf91-at"]),
    (
        "nrf-provd-core",
        &["secure-file", "nrf91-token", "nrf91-at", "nrf-cloud"],
    ),
    (
        "nrf-provd-daemon",
        &[
            "secure-file",
            "nrf91-token",
            "nrf91-at",
            "nrf-cloud",
            "nrf-provd-core",
        ],
    ),
    (
        "nrf-provd-tools",
        &[
            "secure-file",
            "nrf91-token",
            "nrf91-at",
            "nrf-cloud",
            "nrf-cloud-standin",
            "nrf91-sim",
            "nrf-provd-core",
            "nrf-provd-daemon",
        ],
    ),
    (
        "testkit",
        &["nrf91-token", "nrf91-at", "nrf91-sim", "nrf-provd-core"],
    ),
    ("nrf-provd", &["nrf-provd-daemon"]),
];

/// Test doubles and test support: a normal dependency of these crates only
/// (a dev-dependency of any).
const DOUBLES: &[(&str, &[&str])] = &[
    ("nrf91-sim", &["nrf-provd-tools", "testkit"]),
    ("nrf-cloud-standin", &["nrf-provd-tools"]),
    ("testkit", &[]),
    ("nrf-provd-tools", &[]),
];

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(args)
        .args(["--offline", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{cargo} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each workspace crate's dependencies on the others: (normal, dev).
fn workspace_edges() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> {
    let metadata: Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps"]))
            .expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    packages
        .iter()
        .map(|package| {
            let name = package["name"].as_str().unwrap_or_default().to_string();
            let (mut normal, mut dev) = (BTreeSet::new(), BTreeSet::new());
            for dep in package["dependencies"].as_array().into_iter().flatten() {
                let Some(dep_name) = dep["name"].as_str() else {
                    continue;
                };
                // The workspace's own crates (a crate's dev-dependency on
                // itself, for its features in tests, is no edge).
                if !members.contains(dep_name) || dep_name == name {
                    continue;
                }
                match dep["kind"].as_str() {
                    Some("dev") => dev.insert(dep_name.to_string()),
                    _ => normal.insert(dep_name.to_string()),
                };
            }
            (name, (normal, dev))
        })
        .collect()
}

#[test]
fn every_crate_uses_only_what_its_layer_may() {
    let edges = workspace_edges();
    let table: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let crates: BTreeSet<&str> = edges.keys().map(String::as_str).collect();
    assert_eq!(
        crates,
        table.keys().copied().collect(),
        "the workspace's crates and the layer table (MAY_USE, ARCHITECTURE.md) must name the same crates"
    );
    let mut wrong = Vec::new();
    for (name, (normal, _)) in &edges {
        let allowed = table[name.as_str()];
        for dep in normal {
            if !allowed.contains(&dep.as_str()) {
                wrong.push(format!("{name} -> {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies the layer table does not allow (see ARCHITECTURE.md): {wrong:?}"
    );
}

#[test]
fn test_doubles_and_tools_are_no_product_crates_dependency() {
    let edges = workspace_edges();
    let mut wrong = Vec::new();
    for (double, users) in DOUBLES {
        for (name, (normal, _)) in &edges {
            if normal.contains(*double) && !users.contains(&name.as_str()) {
                wrong.push(format!("{name} -> {double}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a test double or tool as a normal dependency: {wrong:?}"
    );
}

#[test]
fn no_crate_depends_on_itself_round_a_circle() {
    // Kahn's algorithm over the normal edges: what is left has a circle.
    let edges = workspace_edges();
    let mut left: BTreeMap<String, BTreeSet<String>> = edges
        .iter()
        .map(|(name, (normal, _))| (name.clone(), normal.clone()))
        .collect();
    loop {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !left.contains_key(d)))
            .map(|(name, _)| name.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for name in ready {
            left.remove(&name);
        }
    }
    assert!(left.is_empty(), "crates in a circle: {left:?}");
}

/// The names of the crates `cargo tree` lists for `args` (normal edges).
fn tree(args: &[&str]) -> BTreeSet<String> {
    let mut full = vec![
        "tree", "-e", "normal", "--prefix", "none", "--format", "{p}",
    ];
    full.extend_from_slice(args);
    cargo(&full)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

fn assert_none_of(args: &[&str], banned: &[&str]) {
    let names = tree(args);
    assert!(names.len() > 1, "cargo tree {args:?} listed {names:?}");
    let found: Vec<&&str> = banned.iter().filter(|b| names.contains(**b)).collect();
    assert!(
        found.is_empty(),
        "cargo tree {args:?} -e normal holds {found:?}"
    );
}

#[test]
fn the_token_crate_needs_no_runtime_database_cli_or_http() {
    assert_none_of(
        &["-p", "nrf91-token"],
        &["tokio", "rusqlite", "clap", "axum", "reqwest"],
    );
    // Its builders add nothing of the kind either.
    assert_none_of(
        &["-p", "nrf91-token", "--features", "encode"],
        &["tokio", "rusqlite", "clap", "axum", "reqwest"],
    );
}

#[test]
fn the_at_crate_needs_no_cli_database_or_http() {
    assert_none_of(
        &["-p", "nrf91-at"],
        &["clap", "rusqlite", "axum", "reqwest"],
    );
}

#[test]
fn the_core_needs_no_cli_or_http_server() {
    assert_none_of(
        &["-p", "nrf-provd-core"],
        &["clap", "axum", "nrf91-sim", "nrf-cloud-standin"],
    );
}

#[test]
fn the_packaged_binary_is_built_without_simulator_stand_in_or_tools() {
    // What scripts/package-deb builds: the root package (the developers'
    // binary is nrf-provd-tools's).
    assert_none_of(
        &["-p", "nrf-provd"],
        &[
            "nrf91-sim",
            "nrf-cloud-standin",
            "nrf-provd-tools",
            "testkit",
        ],
    );
    assert!(tree(&["-p", "nrf-provd"]).contains("nrf-provd-daemon"));
}
