//! The Debian package, end to end on the machine the test runs on: build it
//! (scripts/package-deb, packaging the binary this test build made), lintian
//! finds no errors, `apt-get install ./nrf-provd_*.deb` creates the service
//! user and directories with the right owners and modes and installs every
//! file, the unit passes `systemd-analyze verify`, the technician's steps
//! work (`nrf-provd` on the PATH, `ca create --owner nrf-provd`, completions),
//! the developers' tools are not in it (no `simulate`, `demo`, `bench`, none
//! of the simulator's, the bench's or the stand-in's code),
//! a reinstall keeps a configured station, and removal then purge leave the
//! results database and the CA and say so.
//!
//! It changes the machine (installs a package, adds a system user), so it
//! runs only where that is allowed: `CI=true` (CI is a throwaway machine,
//! run as root) or `NRF_PROVD_PACKAGE_TEST=1`. Elsewhere it says it skipped.
//! When it runs, a missing tool (cargo-deb, lintian, apt-get, dpkg,
//! systemd-analyze) or not being root is a failure, never a skip.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PACKAGE: &str = "nrf-provd";
const STATE_DIR: &str = "/var/lib/nrf-provd";
const CONF_DIR: &str = "/etc/nrf-provd";
const UNIT: &str = "/usr/lib/systemd/system/nrf-provd.service";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Why the test may not change this machine, if it may not.
fn not_allowed() -> Option<&'static str> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let asked = std::env::var("NRF_PROVD_PACKAGE_TEST").is_ok_and(|v| v == "1");
    (!ci && !asked).then_some(
        "it installs a package and adds a system user; set NRF_PROVD_PACKAGE_TEST=1 \
         (CI=true does) to run it on a machine that may be changed",
    )
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run and require success; returns stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "`{program} {}` failed ({:?}):\n{}\n{}",
        args.join(" "),
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn tool_present(program: &str, probe: &[&str]) -> bool {
    Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn owner(path: &str) -> (String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    (user, group)
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", PACKAGE])
        .stdout
        .starts_with(b"install ok installed")
}

/// Puts the machine back as the test found it, also when an assertion
/// fails half-way: purges the package, and removes the user and the
/// directories the package keeps on purge when they were not there before.
struct Restore {
    user_existed: bool,
    state_existed: bool,
    conf_existed: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // Known to dpkg at all (installed, or removed with conffiles left).
        if run("dpkg-query", &["-W", PACKAGE]).status.success() {
            let _ = run("apt-get", &["purge", "-y", "-q", PACKAGE]);
        }
        if !self.state_existed {
            let _ = std::fs::remove_dir_all(STATE_DIR);
        }
        if !self.conf_existed {
            let _ = std::fs::remove_dir_all(CONF_DIR);
        }
        if !self.user_existed {
            let _ = run("deluser", &["--system", "--quiet", "nrf-provd"]);
            let _ = run("delgroup", &["--system", "--quiet", "nrf-provd"]);
        }
    }
}

/// Build the .deb from this test build's packaged binary (`nrf-provd`,
/// which links none of the tools; `nrf-provd-dev` is the one with them);
/// returns its path.
fn build_package(work: &Path) -> PathBuf {
    let out = work.join("out");
    let output = Command::new(repo().join("scripts/package-deb"))
        .args(["--fast", "--output"])
        .arg(&out)
        .env("NRF_PROVD_BIN", env!("CARGO_BIN_EXE_nrf-provd"))
        .env("CARGO_TARGET_DIR", work.join("target"))
        .output()
        .unwrap_or_else(|e| panic!("scripts/package-deb: {e}"));
    assert!(
        output.status.success(),
        "scripts/package-deb failed:\n{}",
        text(&output.stderr)
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    let deb = debs[0].clone();
    let name = deb.file_name().map(|n| n.to_string_lossy().into_owned());
    assert!(
        name.as_deref()
            .is_some_and(|n| n.starts_with(&format!("{PACKAGE}_{}-1_", env!("CARGO_PKG_VERSION")))),
        "{name:?}"
    );
    deb
}

fn apt_install(deb: &Path, reinstall: bool) -> Output {
    let deb = deb.display().to_string();
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    if reinstall {
        args.push("--reinstall");
    }
    args.push(&deb);
    let output = run("apt-get", &args);
    assert!(
        output.status.success(),
        "apt-get install {deb}:\n{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Text only the simulator, the bench and the nRF Cloud stand-in hold:
/// each marker with a binary that has it, to show the marker is real.
fn tool_markers() -> [(&'static str, &'static str, PathBuf); 3] {
    let dev = crate::station_support::dev_binary().to_path_buf();
    // This test binary runs the stand-in (cloud_handoff, identity_cloud).
    let tests = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    [
        ("the simulator", "unknown fault", dev.clone()),
        ("the bench", "boards/min", dev),
        ("the nRF Cloud stand-in", "stand-in fault: HTTP", tests),
    ]
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The developers' tools are not in the package: `simulate`, `demo` and
/// `bench` are no commands of the installed binary and have no man page,
/// and none of the simulator's, the bench's or the stand-in's code is in it.
fn tools_are_not_in_the_package(installed: &[u8]) {
    for tool in ["simulate", "demo", "bench"] {
        let out = run("nrf-provd", &[tool, "--help"]);
        let said = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "nrf-provd {tool}: {said}");
        assert!(said.contains("unrecognized subcommand"), "{tool}: {said}");
        let page = format!("/usr/share/man/man1/nrf-provd-{tool}.1.gz");
        assert!(!Path::new(&page).exists(), "{page}");
    }
    let completion = std::fs::read_to_string("/usr/share/bash-completion/completions/nrf-provd")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!completion.contains("simulate") && !completion.contains("bench"));
    for (what, marker, having) in tool_markers() {
        let there = std::fs::read(&having).unwrap_or_else(|e| panic!("{}: {e}", having.display()));
        assert!(
            holds(&there, marker),
            "{what}'s {marker:?} is in {}",
            having.display()
        );
        assert!(
            !holds(installed, marker),
            "{what} is in the package's binary ({marker:?})"
        );
    }
}

#[test]
fn package_installs_configures_and_removes_cleanly() {
    if let Some(why) = not_allowed() {
        // Straight to stderr: libtest hides a passing test's eprintln!.
        let _ = writeln!(std::io::stderr(), "package_deb: skipped: {why}");
        return;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "the package test installs a package: run it as root (CI does)"
    );
    for (tool, probe, package) in [
        (
            "cargo-deb",
            &["--version"][..],
            "cargo install cargo-deb --locked",
        ),
        ("lintian", &["--version"][..], "apt-get install lintian"),
        ("apt-get", &["--version"][..], "apt"),
        ("dpkg-deb", &["--version"][..], "dpkg"),
        (
            "systemd-analyze",
            &["--version"][..],
            "apt-get install systemd",
        ),
        ("strip", &["--version"][..], "apt-get install binutils"),
    ] {
        assert!(
            tool_present(tool, probe),
            "{tool} is missing ({package}; scripts/test-deps installs it)"
        );
    }
    assert!(
        !installed(),
        "{PACKAGE} is already installed here; the test would replace and remove it"
    );
    let _restore = Restore {
        user_existed: nix::unistd::User::from_name("nrf-provd")
            .ok()
            .flatten()
            .is_some(),
        state_existed: Path::new(STATE_DIR).exists(),
        conf_existed: Path::new(CONF_DIR).exists(),
    };
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let deb = build_package(work.path());
    let deb_arg = deb.display().to_string();

    // Lintian: no errors (the warnings left are listed in the README).
    let lint = run("lintian", &["--fail-on", "error", &deb_arg]);
    let lint_text = format!("{}{}", text(&lint.stdout), text(&lint.stderr));
    assert!(lint.status.success(), "lintian:\n{lint_text}");
    assert!(
        !lint_text.lines().any(|l| l.starts_with("E:")),
        "lintian errors:\n{lint_text}"
    );

    apt_install(&deb, false);
    assert!(installed());

    // The service user: own group, dialout, no login, home = state dir.
    let passwd = ok("getent", &["passwd", "nrf-provd"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.get(5), Some(&STATE_DIR), "{passwd}");
    assert_eq!(fields.get(6), Some(&"/usr/sbin/nologin"), "{passwd}");
    let uid: u32 = fields
        .get(2)
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    assert!(uid < 1000, "a system user: {passwd}");
    assert_eq!(ok("id", &["-gn", "nrf-provd"]).trim(), "nrf-provd");
    let groups = ok("id", &["-Gn", "nrf-provd"]);
    assert!(
        groups.split_whitespace().any(|g| g == "dialout"),
        "{groups}"
    );

    // Directories and files, owners and modes.
    assert_eq!(mode(STATE_DIR), 0o700);
    assert_eq!(owner(STATE_DIR), ("nrf-provd".into(), "nrf-provd".into()));
    assert_eq!(mode(CONF_DIR), 0o755);
    assert_eq!(owner(CONF_DIR), ("root".into(), "root".into()));
    for (path, want) in [
        ("/usr/bin/nrf-provd", 0o755),
        (UNIT, 0o644),
        ("/usr/lib/udev/rules.d/90-nrf-provd.rules", 0o644),
        ("/usr/lib/modules-load.d/nrf-provd.conf", 0o644),
        ("/etc/nrf-provd/station.toml", 0o644),
        ("/usr/share/doc/nrf-provd/examples/station.toml", 0o644),
        ("/usr/share/doc/nrf-provd/copyright", 0o644),
        ("/usr/share/doc/nrf-provd/changelog.Debian.gz", 0o644),
        ("/usr/share/bash-completion/completions/nrf-provd", 0o644),
        ("/usr/share/zsh/vendor-completions/_nrf-provd", 0o644),
        ("/usr/share/fish/vendor_completions.d/nrf-provd.fish", 0o644),
        ("/usr/share/man/man1/nrf-provd.1.gz", 0o644),
        ("/usr/share/man/man1/nrf-provd-ca-create.1.gz", 0o644),
        ("/usr/share/man/man1/nrf-provd-run.1.gz", 0o644),
    ] {
        assert_eq!(mode(path), want, "{path}");
        assert_eq!(owner(path).0, "root", "{path}");
    }
    let read =
        |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        read(Path::new(UNIT)),
        read(&repo().join("systemd/nrf-provd.service"))
    );
    assert_eq!(
        read(Path::new("/etc/nrf-provd/station.toml")),
        read(&repo().join("config/station.toml"))
    );
    let modules = text(&read(Path::new("/usr/lib/modules-load.d/nrf-provd.conf")));
    let modules: Vec<&str> = modules
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(modules, ["cdc_acm", "usbserial"]);
    let conffiles = text(&read(Path::new("/var/lib/dpkg/info/nrf-provd.conffiles")));
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/nrf-provd/station.toml"),
        "{conffiles}"
    );

    // The unit verifies (its ExecStart binary now exists) and is neither
    // enabled nor started.
    ok("systemd-analyze", &["verify", UNIT]);
    let enabled = run("systemctl", &["is-enabled", "nrf-provd.service"]);
    assert_eq!(
        text(&enabled.stdout).trim(),
        "disabled",
        "{}",
        text(&enabled.stderr)
    );
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/nrf-provd.service").exists());

    // The technician's steps, with the installed binary from the PATH.
    let found = ok("sh", &["-c", "command -v nrf-provd"]);
    assert_eq!(found.trim(), "/usr/bin/nrf-provd");
    assert_eq!(
        ok("nrf-provd", &["--version"]).trim(),
        format!("nrf-provd {}", env!("CARGO_PKG_VERSION"))
    );
    tools_are_not_in_the_package(&read(Path::new("/usr/bin/nrf-provd")));
    let paste = ok(
        "nrf-provd",
        &["ca", "create", "--out", CONF_DIR, "--owner", "nrf-provd"],
    );
    assert!(
        paste.contains("certificate = \"/etc/nrf-provd/ca.pem\""),
        "{paste}"
    );
    assert_eq!(mode("/etc/nrf-provd/ca.key"), 0o600);
    assert_eq!(owner("/etc/nrf-provd/ca.key").0, "nrf-provd");
    // The service user can read its key.
    ok(
        "runuser",
        &[
            "-u",
            "nrf-provd",
            "--",
            "head",
            "-c",
            "1",
            "/etc/nrf-provd/ca.key",
        ],
    );
    // check-config on the installed example: with the CA in place, the one
    // thing left is the trust file it names (at its line), then nothing.
    let check = run(
        "nrf-provd",
        &["check-config", "/etc/nrf-provd/station.toml"],
    );
    let said = format!("{}{}", text(&check.stdout), text(&check.stderr));
    assert_eq!(check.status.code(), Some(2), "{said}");
    assert!(
        said.contains("/etc/nrf-provd/station.toml:")
            && said.contains("/etc/nrf-provd/trusted-devices.csv"),
        "names the missing trust file at its setting: {said}"
    );
    let errors: Vec<&str> = said.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "only the trust file is missing: {said}");
    std::fs::write(
        "/etc/nrf-provd/trusted-devices.csv",
        "device_uuid,public_key\n50363154-3931-44f0-8022-121b6401627d,MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZKgDx0O0FKa7i1yFoxYngNdV5Csyi4rEPHcFTfeBVtkkJX+G0QZs+yesfzIaPs91b4x5xYN/g28k63gkeVMJwA==\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let check = run(
        "nrf-provd",
        &["check-config", "/etc/nrf-provd/station.toml"],
    );
    let said = format!("{}{}", text(&check.stdout), text(&check.stderr));
    assert!(
        matches!(check.status.code(), Some(0 | 1)),
        "no errors left (warnings, e.g. no board plugged in, are fine): {said}"
    );
    let completion = ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/nrf-provd && complete -p nrf-provd",
        ],
    );
    assert!(completion.contains("nrf-provd"), "{completion}");

    // A configured station survives a reinstall (an upgrade to the same
    // version): dpkg keeps the edited conffile and the CA.
    let configured = "\n# configured for line 3 by the package test\n";
    let mut toml = read(Path::new("/etc/nrf-provd/station.toml"));
    toml.extend_from_slice(configured.as_bytes());
    std::fs::write("/etc/nrf-provd/station.toml", &toml).unwrap_or_else(|e| panic!("{e}"));
    let key = read(Path::new("/etc/nrf-provd/ca.key"));
    apt_install(&deb, true);
    assert_eq!(read(Path::new("/etc/nrf-provd/station.toml")), toml);
    assert_eq!(read(Path::new("/etc/nrf-provd/ca.key")), key);
    let enabled = run("systemctl", &["is-enabled", "nrf-provd.service"]);
    assert_eq!(text(&enabled.stdout).trim(), "disabled");

    // Removal leaves the results database; purge too, and says where.
    let db = Path::new(STATE_DIR).join("results.db");
    std::fs::write(&db, b"the station's records").unwrap_or_else(|e| panic!("{e}"));
    ok("apt-get", &["remove", "-y", "-q", PACKAGE]);
    assert!(!Path::new("/usr/bin/nrf-provd").exists());
    assert!(!Path::new(UNIT).exists());
    assert!(db.is_file(), "remove keeps the results database");
    assert!(
        Path::new("/etc/nrf-provd/station.toml").is_file(),
        "remove keeps conffiles"
    );

    let purge = run("apt-get", &["purge", "-y", "-q", PACKAGE]);
    assert!(purge.status.success(), "{}", text(&purge.stderr));
    let said = format!("{}{}", text(&purge.stdout), text(&purge.stderr));
    assert!(said.contains("kept /var/lib/nrf-provd"), "{said}");
    assert!(said.contains("kept /etc/nrf-provd"), "{said}");
    assert!(db.is_file(), "purge keeps the results database");
    assert!(
        Path::new("/etc/nrf-provd/ca.key").is_file(),
        "purge keeps the CA"
    );
    assert!(
        !Path::new("/etc/nrf-provd/station.toml").exists(),
        "purge removes the conffile"
    );
    assert!(
        !run("dpkg-query", &["-W", PACKAGE]).status.success(),
        "dpkg forgot the package"
    );
}
