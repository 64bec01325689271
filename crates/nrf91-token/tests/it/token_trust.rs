//! The trust file: format, errors with file and line, conflicts, round trip.

use base64::{Engine, engine::general_purpose::STANDARD};
use nrf91_token::trust::{TrustError, TrustStore};
use secure_file::UnsafeFile;
use testkit::token::*;
use uuid::Uuid;

fn line(uuid: Uuid, spki_der: &[u8]) -> String {
    format!("{uuid},{}", STANDARD.encode(spki_der))
}

#[test]
fn header_comments_blank_lines_and_quotes_are_accepted() {
    let (a, b) = (random_key(), random_key());
    let other = Uuid::from_u128(9);
    let text = format!(
        "# station 7 devices\ndevice_uuid,public_key\n\n{}  # first board\n\"{other}\" , \"{}\"\n",
        line(DEVICE, &spki(&a)),
        STANDARD.encode(spki(&b))
    );
    let store = TrustStore::parse(&text).expect("parses");
    assert_eq!(store.len(), 2);
    assert_eq!(
        store.get(&DEVICE).expect("known").spki_der(),
        spki(&a).as_slice()
    );
    assert_eq!(
        store.get(&other).expect("known").spki_der(),
        spki(&b).as_slice()
    );
    assert!(store.get(&Uuid::from_u128(1)).is_none());
}

#[test]
fn file_without_header_is_accepted_and_empty_file_is_empty() {
    let store = TrustStore::parse(&line(DEVICE, &spki(&random_key()))).expect("parses");
    assert_eq!(store.len(), 1);
    assert!(
        TrustStore::parse("# nothing\n\n")
            .expect("parses")
            .is_empty()
    );
}

#[test]
fn bad_entries_are_reported_with_their_line() {
    let good = line(DEVICE, &spki(&random_key()));
    for (bad, needle) in [
        ("not-a-uuid,AAAA".to_string(), "device_uuid"),
        (format!("{DEVICE},!!!"), "base64"),
        (format!("{DEVICE},{}", STANDARD.encode(b"not der")), "P-256"),
        (format!("{DEVICE}"), "fields"),
    ] {
        let text = format!("device_uuid,public_key\n{good}\n{bad}\n");
        let err = TrustStore::parse(&text).expect_err("bad line");
        let msg = err.to_string();
        assert!(matches!(err, TrustError::Line { line: 3, .. }), "{msg}");
        assert!(msg.contains("line 3") && msg.contains(needle), "{msg}");
    }
}

#[test]
fn same_uuid_with_two_different_keys_is_an_error_but_a_repeat_is_not() {
    let (a, b) = (random_key(), random_key());
    let repeat = format!("{}\n{}\n", line(DEVICE, &spki(&a)), line(DEVICE, &spki(&a)));
    assert_eq!(TrustStore::parse(&repeat).expect("repeat is fine").len(), 1);
    let conflict = format!("{}\n{}\n", line(DEVICE, &spki(&a)), line(DEVICE, &spki(&b)));
    let msg = TrustStore::parse(&conflict)
        .expect_err("conflict")
        .to_string();
    assert!(
        msg.contains("line 2") && msg.contains("different key"),
        "{msg}"
    );
    let mut store = TrustStore::new();
    store.insert(DEVICE, &spki(&a)).expect("first");
    assert!(matches!(
        store.insert(DEVICE, &spki(&b)),
        Err(TrustError::Conflict { .. })
    ));
}

#[test]
fn load_names_the_file_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trust.csv");
    std::fs::write(&path, "device_uuid,public_key\nbroken\n").expect("write");
    let msg = TrustStore::load(&path).expect_err("bad").to_string();
    assert!(msg.contains("trust.csv") && msg.contains("line 2"), "{msg}");
    let missing = TrustStore::load(&dir.path().join("absent.csv"))
        .expect_err("missing")
        .to_string();
    assert!(missing.contains("absent.csv"), "{missing}");
}

#[test]
fn to_csv_is_sorted_and_parses_back_to_the_same_store() {
    let mut store = TrustStore::new();
    for n in [3u128, 1, 2] {
        store
            .insert(Uuid::from_u128(n), &spki(&random_key()))
            .expect("insert");
    }
    let csv = store.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "device_uuid,public_key");
    assert!(lines[1].starts_with(&Uuid::from_u128(1).to_string()));
    assert!(lines[3].starts_with(&Uuid::from_u128(3).to_string()));
    let back = TrustStore::parse(&csv).expect("parses");
    assert_eq!(back.to_csv(), csv);
}

#[test]
fn a_trust_file_others_can_write_is_refused_and_a_tight_one_names_its_digest() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trusted-devices.csv");
    let text = format!("{}\n", line(DEVICE, &spki(&random_key())));
    std::fs::write(&path, &text).expect("write");
    for loose in [0o666, 0o646, 0o664] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).expect("chmod");
        let err = TrustStore::load(&path).expect_err("writable file accepted");
        assert!(
            matches!(err, TrustError::Unsafe(UnsafeFile::Writable { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let store = TrustStore::load(&path).expect("0644 is fine");
    use sha2::Digest;
    assert_eq!(
        store.file_sha256(),
        Some(hex::encode(sha2::Sha256::digest(text.as_bytes())))
    );
}

#[test]
fn a_replacement_must_keep_a_key_and_drop_no_more_than_allowed() {
    let keys: Vec<_> = (0..10).map(|_| random_key()).collect();
    let store_of = |n: usize| {
        let mut store = TrustStore::new();
        for (i, key) in keys.iter().take(n).enumerate() {
            store
                .insert(Uuid::from_u128(i as u128 + 1), &spki(key))
                .expect("insert");
        }
        store
    };
    let running = store_of(10);
    let path = std::path::Path::new("trusted-devices.csv");
    assert!(matches!(
        running.check_replacement(&TrustStore::new(), path, 1.0),
        Err(TrustError::Empty { .. })
    ));
    assert!(running.check_replacement(&store_of(1), path, 1.0).is_ok());
    let err = running
        .check_replacement(&store_of(8), path, 0.1)
        .expect_err("20% dropped, 10% allowed");
    assert!(
        err.to_string().contains("keeping the running keys"),
        "{err}"
    );
    assert!(running.check_replacement(&store_of(9), path, 0.1).is_ok());
    assert!(
        store_of(0)
            .check_replacement(&store_of(3), path, 0.0)
            .is_ok()
    );
}

/// Issue 18: one key under two device UUIDs, and the nil UUID, are refused,
/// naming both lines; line numbers count blank and comment lines.
#[test]
fn one_key_under_two_uuids_and_the_nil_uuid_are_refused_naming_the_lines() {
    let key = random_key();
    let other = Uuid::from_u128(9);
    let text = format!(
        "device_uuid,public_key\n\n{}\n# the same board again?\n\n{}\n",
        line(DEVICE, &spki(&key)),
        line(other, &spki(&key)),
    );
    let Err(TrustError::Line {
        line: at, problem, ..
    }) = TrustStore::parse(&text)
    else {
        panic!("one key under two UUIDs was accepted");
    };
    assert_eq!(at, 6);
    assert_eq!(
        problem,
        format!(
            "the key of device {other} is also listed for device {DEVICE} on line 3: one identity key belongs to one device"
        )
    );
    // The same UUID with another key names the first line too.
    let text = format!(
        "# two keys\n{}\n{}\n",
        line(DEVICE, &spki(&key)),
        line(DEVICE, &spki(&random_key()))
    );
    let Err(TrustError::Line {
        line: at, problem, ..
    }) = TrustStore::parse(&text)
    else {
        panic!("two keys for one UUID were accepted");
    };
    assert_eq!(at, 3);
    assert!(problem.contains("(first on line 2)"), "{problem}");
    // The nil UUID names no device.
    let Err(TrustError::Line {
        line: at, problem, ..
    }) = TrustStore::parse(&line(Uuid::nil(), &spki(&key)))
    else {
        panic!("the nil UUID was accepted");
    };
    assert_eq!(at, 1);
    assert!(problem.contains("nil UUID"), "{problem}");
    // The same line twice is harmless.
    let twice = format!("{0}\n{0}\n", line(DEVICE, &spki(&key)));
    assert_eq!(TrustStore::parse(&twice).expect("parses").len(), 1);
}
