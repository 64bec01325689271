//! `nrf-provd ca create`: the CA it writes is a CA (extensions, subject,
//! validity, key mode), loads as the station CA, signs device certificates
//! in a real run against a simulated board when its printed `[ca]` lines are
//! pasted into the config, and is never overwritten without `--force`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::station_support::{Env, binary};
use der::{Decode, DecodePem, Encode};
use nrf_provd_core::ca::StationCa;
use nrf91_sim::Latency;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};

const DAY: Duration = Duration::from_secs(86_400);

fn ca_create(args: &[&str]) -> Output {
    Command::new(binary())
        .args(["ca", "create"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run nrf-provd: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn certificate(path: &Path) -> Certificate {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"))
}

fn ext<T: for<'a> Decode<'a>>(
    cert: &Certificate,
    oid: const_oid::ObjectIdentifier,
) -> Option<(bool, T)> {
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == oid)?;
    Some((ext.critical, T::from_der(ext.extn_value.as_bytes()).ok()?))
}

/// Does `issuer`'s key verify `cert`'s signature?
fn verifies(cert: &Certificate, issuer: &Certificate) -> bool {
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap_or_else(|e| panic!("{e}"));
    let key = VerifyingKey::from_public_key_der(&spki).unwrap_or_else(|e| panic!("{e}"));
    let tbs = cert
        .tbs_certificate
        .to_der()
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    DerSignature::from_bytes(sig).is_ok_and(|sig| key.verify(&tbs, &sig).is_ok())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn creates_a_ca_that_loads_and_signs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("etc");
    let created = ca_create(&[
        "--out",
        out.to_str().unwrap_or_default(),
        "--subject",
        "CN=Line 3 CA,O=Acme",
        "--days",
        "30",
    ]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let (cert_path, key_path) = (out.join("ca.pem"), out.join("ca.key"));
    assert_eq!(mode(&key_path), 0o600);
    assert_eq!(mode(&cert_path), 0o644);
    let key_pem = std::fs::read_to_string(&key_path).unwrap_or_default();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");

    // The printed lines are TOML naming both files by absolute path.
    let printed = text(&created.stdout);
    let toml: toml::Table = printed
        .parse()
        .unwrap_or_else(|e| panic!("{e}:\n{printed}"));
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(toml["ca"]["certificate"].as_str(), abs(&cert_path).to_str());
    assert_eq!(toml["ca"]["key"].as_str(), abs(&key_path).to_str());

    let ca_cert = certificate(&cert_path);
    let tbs = &ca_cert.tbs_certificate;
    assert_eq!(tbs.subject.to_string(), "CN=Line 3 CA,O=Acme");
    assert_eq!(tbs.issuer, tbs.subject, "self-signed");
    assert!(verifies(&ca_cert, &ca_cert));
    let lifetime =
        tbs.validity.not_after.to_unix_duration() - tbs.validity.not_before.to_unix_duration();
    assert_eq!(lifetime, 30 * DAY);

    use const_oid::db::rfc5280 as oid;
    let (critical, bc) = ext::<BasicConstraints>(&ca_cert, oid::ID_CE_BASIC_CONSTRAINTS)
        .unwrap_or_else(|| panic!("basicConstraints"));
    assert!(critical && bc.ca);
    let (critical, ku) =
        ext::<KeyUsage>(&ca_cert, oid::ID_CE_KEY_USAGE).unwrap_or_else(|| panic!("keyUsage"));
    assert!(critical);
    assert!(ku.0.contains(KeyUsages::KeyCertSign) && ku.0.contains(KeyUsages::CRLSign));
    assert!(ext::<SubjectKeyIdentifier>(&ca_cert, oid::ID_CE_SUBJECT_KEY_IDENTIFIER).is_some());

    // The station loads it and signs device certificates that chain to it.
    let station_ca = StationCa::load(&cert_path, &key_path).unwrap_or_else(|e| panic!("{e}"));
    let device_key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let spki = device_key
        .public_key()
        .to_public_key_der()
        .unwrap_or_else(|e| panic!("{e}"));
    let device = station_ca
        .sign_device(
            "50503041-3633-4261-803d-1e2b8f70111a",
            spki.as_bytes(),
            nrf_provd_core::ca::Issuance::now(DAY),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let device_cert = Certificate::from_der(&device.der).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(device_cert.tbs_certificate.issuer, tbs.subject);
    assert!(verifies(&device_cert, &ca_cert));
}

#[test]
fn default_subject_names_the_host() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().to_str().unwrap_or_default();
    let created = ca_create(&["--out", out]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let subject = certificate(&dir.path().join("ca.pem"))
        .tbs_certificate
        .subject
        .to_string();
    let host = nix::unistd::gethostname().unwrap_or_default();
    let expected = format!("CN=nrf-provd station CA {}", host.to_string_lossy());
    assert!(
        expected.starts_with(&subject) && subject.len() > "CN=nrf-provd station CA".len(),
        "{subject} is not {expected}"
    );
}

#[test]
fn existing_files_are_kept_without_force() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().to_str().unwrap_or_default();
    assert_eq!(ca_create(&["--out", out]).status.code(), Some(0));
    let cert_path = dir.path().join("ca.pem");
    let key_path = dir.path().join("ca.key");
    let (cert_before, key_before) = (
        std::fs::read(&cert_path).unwrap_or_default(),
        std::fs::read(&key_path).unwrap_or_default(),
    );

    let again = ca_create(&["--out", out]);
    assert_eq!(again.status.code(), Some(2));
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("ca.key") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&cert_path).unwrap_or_default(), cert_before);
    assert_eq!(std::fs::read(&key_path).unwrap_or_default(), key_before);

    // Only the certificate there (the key moved away): still refused, and
    // no key is left behind without its certificate.
    std::fs::remove_file(&key_path).unwrap_or_else(|e| panic!("{e}"));
    let again = ca_create(&["--out", out]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("ca.pem"),
        "{}",
        text(&again.stderr)
    );
    assert!(!key_path.exists());
    assert_eq!(std::fs::read(&cert_path).unwrap_or_default(), cert_before);

    let forced = ca_create(&["--out", out, "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced.stderr));
    assert_ne!(std::fs::read(&cert_path).unwrap_or_default(), cert_before);
    assert_eq!(mode(&key_path), 0o600);
    StationCa::load(&cert_path, &key_path).unwrap_or_else(|e| panic!("{e}"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_out_directory_others_can_write_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    // The directory itself, or one above it: whoever may write there can
    // swap the key (or, with --owner, what root gives away) for their own.
    for (mode, open, out) in [
        (0o777, "open-777", "open-777"),
        (0o775, "open-775", "open-775"),
        (0o757, "open-757", "open-757/ca"),
    ] {
        let open = dir.path().join(open);
        std::fs::create_dir(&open).unwrap_or_else(|e| panic!("{e}"));
        chmod(&open, mode);
        let out = dir.path().join(out);
        let refused = ca_create(&["--out", out.to_str().unwrap_or_default()]);
        let stderr = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{mode:o}: {stderr}");
        let open = std::fs::canonicalize(&open).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            stderr.contains(&format!(
                "directory {} is writable by group or others (mode {mode:04o})",
                open.display()
            )),
            "{stderr}"
        );
        let written: Vec<_> = std::fs::read_dir(&out)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(written.is_empty(), "{mode:o}: wrote {written:?}");
        chmod(&open, 0o755);
        let made = ca_create(&["--out", out.to_str().unwrap_or_default()]);
        assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    }
}

#[test]
fn owner_is_given_to_the_new_files_and_a_planted_symlink_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().to_str().unwrap_or_default();
    assert_eq!(ca_create(&["--out", out]).status.code(), Some(0));
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    for name in ["ca.key", "ca.pem", "ca.key.tmp"] {
        let path = dir.path().join(name);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&victim, &path).unwrap_or_else(|e| panic!("{e}"));
    }
    let me = nix::unistd::geteuid();
    let owner = if me.is_root() {
        nix::unistd::User::from_name("nobody").ok().flatten()
    } else {
        nix::unistd::User::from_uid(me).ok().flatten()
    }
    .unwrap_or_else(|| panic!("a user to give the files to"));
    let made = ca_create(&["--out", out, "--force", "--owner", &owner.name]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));

    use std::os::unix::fs::MetadataExt;
    let victim_meta = std::fs::metadata(&victim).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap_or_default(),
        "precious\n"
    );
    assert_eq!(
        (victim_meta.uid(), victim_meta.mode() & 0o777),
        (me.as_raw(), 0o644)
    );
    for (name, want) in [("ca.key", 0o600), ("ca.pem", 0o644)] {
        let meta =
            std::fs::symlink_metadata(dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(meta.file_type().is_file(), "{name} is a file of its own");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o777),
            (owner.uid.as_raw(), owner.gid.as_raw(), want),
            "{name}"
        );
    }
    StationCa::load(&dir.path().join("ca.pem"), &dir.path().join("ca.key"))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_arguments_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("ca");
    let out = out.to_str().unwrap_or_default();
    for (args, says) in [
        (vec!["--subject", "Line 3 CA"], "RFC 4514"),
        (vec!["--subject", "CN="], "empty"),
        (vec!["--days", "0"], "--days"),
        (vec!["--owner", "no-such-user-nrf-provd"], "no such user"),
    ] {
        let mut full = vec!["--out", out];
        full.extend(&args);
        let output = ca_create(&full);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!dir.path().join("ca").exists(), "{args:?} wrote something");
    }
}

/// The technician's path: `ca create`, paste its output as the config's
/// `[ca]`, provision a board; the device certificate chains to that CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_run_uses_the_created_ca() {
    let env = Env::new(1, Latency::None, &[]).await;
    let ca_dir = env.dir.path().join("made-ca");
    let created = ca_create(&["--out", ca_dir.to_str().unwrap_or_default()]);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let paste = text(&created.stdout);
    let config = env.write_config(|config| {
        let at = config.find("[ca]").unwrap_or(config.len());
        config.truncate(at);
        config.push_str(&paste);
    });

    let port = env.port(0);
    let run = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["provision", "--json", "--port", &port, "--config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("run provision: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let record: serde_json::Value =
        serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(record["outcome"], "passed");
    let device_pem = record["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["kind"] == "device_certificate")
        .and_then(|a| a["content"].as_str())
        .unwrap_or_else(|| panic!("no device certificate in {record}"));
    let device = Certificate::from_pem(device_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let ca_cert = certificate(&ca_dir.join("ca.pem"));
    assert_eq!(
        device.tbs_certificate.issuer,
        ca_cert.tbs_certificate.subject
    );
    assert!(verifies(&device, &ca_cert), "signed by the created CA");
}
