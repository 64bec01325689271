//! Configuration: the shipped files parse; every error names origin, line and
//! column and says what is expected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nrf_provd_daemon::config::{
    ConfigError, DialectChoice, FlowControl, LedgerMode, LineEnding, LogFormat, PasswordSource,
    Reprovision, StationConfig, Step,
};

const MINIMAL: &str = r#"
station_id = "s1"
database = "results.db"
trust_file = "trusted-devices.csv"

[ports]
paths = ["/dev/serial/by-id/*"]

[ca]
certificate = "ca.pem"
key = "ca.key"
"#;

fn err(text: &str) -> ConfigError {
    match StationConfig::parse(text, "station.toml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// Line and column of the first occurrence of `needle` (1-based).
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} not in text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

#[test]
fn shipped_station_toml_parses_with_documented_values() {
    let path = testkit::fixtures::repo().join("config/station.toml");
    let config = StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.station_id, "line1-station01");
    assert_eq!(
        config.database,
        PathBuf::from("/var/lib/nrf-provd/results.db")
    );
    assert_eq!(config.plan.steps, Step::default_plan());
    assert_eq!(config.plan.sec_tag, 16_842_753);
    assert_eq!(config.serial.flow_control, FlowControl::RtsCts);
    assert_eq!(config.timeouts.commands.keygen, Duration::from_secs(60));
    let ca = config.ca.unwrap_or_else(|| panic!("station.toml has [ca]"));
    assert_eq!(ca.validity_days, 3650);
    assert_eq!(ca.install, vec![PathBuf::from("/etc/nrf-provd/ca.pem")]);
    assert_eq!(config.http.listen, Some("127.0.0.1:9091".parse().unwrap()));
    assert_eq!(config.http.token_file, None);
}

#[test]
fn embedded_demo_config_parses() {
    let config = StationConfig::demo();
    assert_eq!(config.station_id, "demo");
    assert_eq!(config.serial.flow_control, FlowControl::None);
    assert!(config.plan.steps.contains(&Step::Jwt));
    assert!(config.ca.is_some());
}

#[test]
fn defaults_fill_what_is_left_out() {
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.ports.rescan_interval, Duration::from_millis(1000));
    assert!(config.ports.exclude.is_empty());
    assert_eq!(config.serial.baud, 115_200);
    assert_eq!(config.line_ending, LineEnding::Crlf);
    assert!(config.serial.dtr);
    assert_eq!(config.dialect, DialectChoice::Auto);
    assert_eq!(config.timeouts.commands.command, Duration::from_secs(5));
    assert_eq!(config.timeouts.commands.attest, Duration::from_secs(10));
    assert_eq!(config.timeouts.run, Duration::from_secs(180));
    assert_eq!(config.timeouts.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.plan.steps, Step::default_plan());
    assert_eq!(config.plan.sec_tag, 16_842_753);
    assert!(config.plan.delete_existing_key);
    assert_eq!(config.plan.csr_attributes, "CN={device_uuid}");
    assert_eq!(config.plan.retries, 1);
    assert_eq!(config.plan.jwt_exp_delta, 300);
    let ca = config.ca.unwrap_or_else(|| panic!("has [ca]"));
    assert_eq!(ca.validity_days, 3650);
    assert_eq!(ca.install, vec![ca.certificate.clone()]);
}

#[test]
fn fractional_timeouts_are_seconds() {
    let text = format!("{MINIMAL}\n[timeouts]\ncommand = 0.25\nshutdown_grace = 0\n");
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.timeouts.commands.command, Duration::from_millis(250));
    assert_eq!(config.timeouts.shutdown_grace, Duration::ZERO);
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("station.toml");
    std::fs::write(&path, MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    let config = StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.database, dir.path().join("results.db"));
    assert_eq!(
        config.trust_file,
        Some(dir.path().join("trusted-devices.csv"))
    );
    let ca = config.ca.unwrap_or_else(|| panic!("has [ca]"));
    assert_eq!(ca.key, dir.path().join("ca.key"));
    assert_eq!(ca.install, vec![dir.path().join("ca.pem")]);
}

#[test]
fn type_error_names_line_column_and_expected_type() {
    let text = MINIMAL.replace("[ports]", "[serial]\nbaud = \"fast\"\n\n[ports]");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"fast\"")));
    let message = e.to_string();
    let (line, column) = position_of(&text, "\"fast\"");
    assert!(
        message.starts_with(&format!("station.toml:{line}:{column}: ")),
        "{message}"
    );
    assert!(
        message.contains("found string \"fast\", expected a whole number from 0 to"),
        "says what was found and what is expected: {message}"
    );
}

#[test]
fn unknown_key_is_an_error_that_suggests_the_known_one() {
    let text = MINIMAL.replace("[ports]", "[ports]\nrescan_intervall_ms = 500");
    let e = err(&text);
    assert_eq!(
        e.position(),
        Some(position_of(&text, "rescan_intervall_ms"))
    );
    let message = e.to_string();
    assert!(
        message.contains("unknown key `rescan_intervall_ms` in [ports]"),
        "{message}"
    );
    assert!(
        message.contains("did you mean `rescan_interval_ms`?"),
        "{message}"
    );
}

#[test]
fn unknown_top_level_key_is_an_error() {
    let text = format!("statoin_id = \"x\"\n{MINIMAL}");
    let e = err(&text);
    assert_eq!(e.position(), Some((1, 1)));
    assert!(e.to_string().contains("statoin_id"), "{e}");
}

#[test]
fn sec_tag_out_of_range_points_at_the_value() {
    for bad in ["2147483668", "-1", "4294967295"] {
        let text = format!("{MINIMAL}\n[plan]\nsec_tag = {bad}\n");
        let e = err(&text);
        assert_eq!(e.position(), Some(position_of(&text, bad)), "{e}");
        assert!(e.to_string().contains("between 0 and 2147483647"), "{e}");
    }
    let text = format!("{MINIMAL}\n[plan]\nsec_tag = 2147483647\n");
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.plan.sec_tag, 2_147_483_647);
}

#[test]
fn unknown_step_lists_the_valid_steps() {
    let text = format!("{MINIMAL}\n[plan]\nsteps = [\"probe\", \"atest\"]\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"atest\"")));
    let message = e.to_string();
    assert!(message.contains("atest"), "{message}");
    assert!(
        message.contains("attest") && message.contains("keygen"),
        "{message}"
    );
}

#[test]
fn steps_out_of_order_are_rejected_at_the_step() {
    let cases = [
        // (steps, offending step, what the message mentions)
        (
            r#"["probe", "offline", "certify", "keygen"]"#,
            "\"certify\"",
            "keygen",
        ),
        (
            r#"["probe", "offline", "confirm", "install"]"#,
            "\"confirm\"",
            "install",
        ),
        (r#"["probe", "attest", "keygen"]"#, "\"keygen\"", "offline"),
        (r#"["identify", "probe"]"#, "\"probe\"", "first"),
        (r#"["probe", "restore", "identify"]"#, "\"restore\"", "last"),
        (r#"["probe", "identify", "probe"]"#, "\"probe\"\n", "twice"),
    ];
    for (steps, offender, mention) in cases {
        let text = format!("{MINIMAL}\n[plan]\nsteps = {steps}\n");
        let e = err(&text);
        // The offending element: the last occurrence for duplicates.
        let offset = text.rfind(offender.trim_end()).unwrap_or_default();
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        assert_eq!(e.position(), Some((line, column)), "{steps}: {e}");
        assert!(e.to_string().contains(mention), "{steps}: {e}");
    }
}

#[test]
fn csr_placeholders_are_checked() {
    let text = format!("{MINIMAL}\n[plan]\ncsr_attributes = \"CN={{serial}}\"\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"CN={serial}\"")));
    assert!(e.to_string().contains("{device_uuid}"), "{e}");

    // {imei} needs identify before keygen.
    let text = format!(
        "{MINIMAL}\n[plan]\nsteps = [\"probe\", \"offline\", \"attest\", \"keygen\"]\ncsr_attributes = \"CN={{imei}}\"\n"
    );
    let e = err(&text);
    assert!(e.to_string().contains("identify"), "{e}");
}

#[test]
fn render_attributes_fills_placeholders() {
    let text = format!(
        "{MINIMAL}\n[plan]\ncsr_attributes = \"O=Acme,CN={{device_uuid}},serialNumber={{imei}}\"\n"
    );
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config
            .plan
            .render_attributes("50503041-3633-4261-803d-1e2b8f70111a", "351358815178345"),
        "O=Acme,CN=50503041-3633-4261-803d-1e2b8f70111a,serialNumber=351358815178345"
    );
}

#[test]
fn certify_without_ca_section_is_an_error() {
    let text = MINIMAL.replace("[ca]\ncertificate = \"ca.pem\"\nkey = \"ca.key\"\n", "");
    let e = err(&text);
    assert!(e.to_string().contains("[ca]"), "{e}");
    // Without certify and install the CA is not needed.
    let text = format!("{text}\n[plan]\nsteps = [\"probe\", \"identify\", \"attest\"]\n");
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(config.ca.is_none());
}

#[test]
fn bad_glob_and_relative_port_are_rejected() {
    let text = MINIMAL.replace("/dev/serial/by-id/*", "/dev/tty[ACM");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"/dev/tty[ACM\"")));
    assert!(e.to_string().contains("glob"), "{e}");

    // Text with no file behind it: a relative port has nothing to be
    // relative to.
    let text = MINIMAL.replace("/dev/serial/by-id/*", "ttyACM0");
    let e = err(&text);
    assert!(e.to_string().contains("absolute"), "{e}");
}

#[test]
fn relative_port_patterns_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = MINIMAL.replace("/dev/serial/by-id/*", "ports/tty*");
    let path = dir.path().join("station.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let config = StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.ports.paths,
        vec![dir.path().join("ports/tty*").display().to_string()]
    );
}

#[test]
fn other_values_are_checked_with_positions() {
    let cases = [
        (
            "[plan]\nkey_usage = \"10101\"\n",
            "\"10101\"",
            "9 characters",
        ),
        ("[plan]\njwt_audience = \"a\\\"b\"\n", "\"a\\\"b\"", "`\"`"),
        ("[plan]\njwt_exp_delta = 0\n", "0\n", "at least 1"),
        ("[timeouts]\ncommand = -1\n", "-1", "seconds"),
        ("[timeouts]\nkeygen = 0\n", "0\n", "more than zero"),
        ("[serial]\nflow_control = \"rts\"\n", "\"rts\"", "rtscts"),
        ("[serial]\nline_ending = \"crlf \"\n", "\"crlf \"", "crlf"),
    ];
    for (section, value, mention) in cases {
        let text = format!("{MINIMAL}\n{section}");
        let e = err(&text);
        let offset = text.rfind(value).unwrap_or_default();
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        assert_eq!(e.position(), Some((line, column)), "{section}: {e}");
        assert!(e.to_string().contains(mention), "{section}: {e}");
    }
}

#[test]
fn syntax_error_has_a_position() {
    let text = "station_id = \"s1\nx";
    let e = err(text);
    assert!(matches!(e.position(), Some((1, _))), "{e}");
}

#[test]
fn missing_file_names_the_file() {
    let e = StationConfig::load(Path::new("/nonexistent/station.toml"))
        .err()
        .unwrap_or_else(|| panic!("no such file"));
    assert!(e.to_string().contains("/nonexistent/station.toml"), "{e}");
}

#[test]
fn timeout_of_the_wrong_type_asks_for_seconds() {
    let text = format!("{MINIMAL}\n[timeouts]\ncommand = \"5s\"\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"5s\"")));
    assert!(e.to_string().contains("number of seconds"), "{e}");
}

#[test]
fn unknown_keys_in_every_section_are_errors_with_positions() {
    for (section, key) in [
        ("[plan]\n", "sectag"),
        ("[serial]\n", "partiy"),
        ("[timeouts]\n", "probe"),
    ] {
        let text = format!("{MINIMAL}\n{section}{key} = 1\n");
        let e = err(&text);
        assert_eq!(
            e.position(),
            Some(position_of(&text, &format!("{key} = 1"))),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("unknown key `{key}`")),
            "{e}"
        );
    }
    let text = MINIMAL.replace("key = \"ca.key\"", "key = \"ca.key\"\nvalidity = 30");
    let e = err(&text);
    assert_eq!(
        e.position(),
        Some(position_of(&text, "validity = 30")),
        "{e}"
    );
    assert!(e.to_string().contains("validity_days"), "{e}");
}

#[test]
fn reload_max_drop_must_be_a_share() {
    for bad in ["1.5", "-0.1"] {
        let text = format!("{MINIMAL}\n[identity]\nreload_max_drop = {bad}\n");
        let e = err(&text);
        assert_eq!(e.position(), Some(position_of(&text, bad)), "{e}");
        assert!(e.to_string().contains("share between 0 and 1"), "{e}");
    }
    let text = format!("{MINIMAL}\n[identity]\nreload_max_drop = 0.1\n");
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.identity.reload_max_drop, 0.1);
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.identity.reload_max_drop, 1.0);
}

/// MINIMAL without its trust file, with `extra` appended.
fn without_trust(extra: &str) -> String {
    format!(
        "{}\n{extra}",
        MINIMAL.replace("trust_file = \"trusted-devices.csv\"\n", "")
    )
}

#[test]
fn identity_authorities_are_checked_in_order_and_point_at_the_entry() {
    // (authorities, offending entry, words in the message)
    let cases = [
        (
            r#"["keys", "nrfclod"]"#,
            "\"nrfclod\"",
            "expected keys, nrfcloud, pin or collect",
        ),
        (r#"["keys", "keys"]"#, "\"keys\"]", "listed twice"),
        (
            r#"["keys", "collect", "pin"]"#,
            "\"pin\"",
            "would never be asked",
        ),
        (
            r#"["pin", "keys"]"#,
            "\"keys\"",
            "only `keys` may come before",
        ),
    ];
    for (list, needle, words) in cases {
        let text = format!("{MINIMAL}\n[identity]\nauthorities = {list}\n");
        let e = err(&text);
        let at = text.rfind(needle).map(|offset| {
            let before = &text[..offset];
            (
                before.matches('\n').count() + 1,
                offset - before.rfind('\n').map_or(0, |i| i + 1) + 1,
            )
        });
        // Other problems may follow from it (an unused trust file); this
        // one is reported at its entry.
        assert!(
            e.problems()
                .iter()
                .any(|p| p.position() == at && p.to_string().contains(words)),
            "{list}: {e}"
        );
    }
    let text = format!("{MINIMAL}\n[identity]\nauthorities = []\n");
    assert!(err(&text).to_string().contains("empty"), "{}", err(&text));
}

#[test]
fn the_trust_file_goes_with_the_keys_authority() {
    // `keys` is the default and needs the file.
    let e = err(&without_trust(""));
    assert!(e.to_string().contains("no trust_file"), "{e}");
    // A trust file no authority reads is a mistake, not a silent no-op.
    let text = format!("{MINIMAL}\n[identity]\nauthorities = [\"pin\"]\n");
    let e = err(&text);
    assert_eq!(
        e.position(),
        Some(position_of(&text, "\"trusted-devices.csv\""))
    );
    assert!(e.to_string().contains("never be read"), "{e}");
    // pin and collect need neither a trust file nor a cloud.
    for by in ["pin", "collect"] {
        let text = without_trust(&format!("[identity]\nauthorities = [\"{by}\"]\n"));
        let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.trust_file, None);
        assert_eq!(config.identity.authorities.len(), 1);
    }
}

#[test]
fn nrfcloud_needs_a_cloud_section_with_one_api_key_source() {
    let e = err(&without_trust("[identity]\nauthorities = [\"nrfcloud\"]\n"));
    assert!(e.to_string().contains("no [cloud] section"), "{e}");

    let base = "[identity]\nauthorities = [\"nrfcloud\"]\n\n[cloud]\n";
    let e = err(&without_trust(base));
    assert!(e.to_string().contains("api_key_file"), "{e}");
    let text = without_trust(&format!(
        "{base}api_key_file = \"k\"\napi_key_env = \"NRF_CLOUD_API_KEY\"\n"
    ));
    assert!(err(&text).to_string().contains("not both"));
    let text = without_trust(&format!(
        "{base}api_key_file = \"k\"\nhand_off = \"claim-all\"\n"
    ));
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"claim-all\"")));
    let text = without_trust(&format!(
        "{base}api_key_file = \"k\"\nstage = \"staging\"\n"
    ));
    assert!(err(&text).to_string().contains("unknown nRF Cloud stage"));
    let text = without_trust(&format!(
        "{base}api_key_file = \"k\"\nclaim_tags = [\"a,b\"]\n"
    ));
    assert_eq!(err(&text).position(), Some(position_of(&text, "\"a,b\"")));

    let text = without_trust(&format!(
        "{base}api_key_file = \"nrfcloud-api-key\"\nstage = \"dev\"\nrequest_timeout = 3\n\
         claim_tags = [\"line1\"]\nhand_off = \"claim+onboard\"\nhand_off_every = 30\n"
    ));
    let bad = without_trust(&format!("{base}api_key_file = \"k\"\nbulk_op_poll = 0\n"));
    let (line, column) = position_of(&bad, "bulk_op_poll = 0");
    assert_eq!(
        err(&bad).position(),
        Some((line, column + "bulk_op_poll = ".len()))
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("station.toml");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let config = StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let cloud = config.cloud.unwrap_or_else(|| panic!("has [cloud]"));
    assert_eq!(
        cloud.settings.provisioning_url.as_str(),
        "https://api.provisioning.dev.nrfcloud.com/v1/"
    );
    assert_eq!(cloud.settings.request_timeout, Duration::from_secs(3));
    assert_eq!(
        cloud.api_key,
        nrf_provd_daemon::config::ApiKeySource::File(dir.path().join("nrfcloud-api-key"))
    );
    assert_eq!(cloud.claim_tags, vec!["line1".to_string()]);
    assert_eq!(
        cloud.hand_off,
        nrf_provd_daemon::config::HandOff::ClaimAndOnboard
    );
    assert_eq!(cloud.hand_off_every, Duration::from_secs(30));
    assert_eq!(cloud.bulk_op_poll, Duration::from_secs(5), "Nordic's 5 s");
    assert_eq!(
        cloud.onboard_fw_types,
        vec!["APP".to_string(), "MODEM".to_string()]
    );
}

#[test]
fn http_listens_on_loopback_by_default_and_can_be_turned_off() {
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen, Some("127.0.0.1:9091".parse().unwrap()));
    assert_eq!(config.http.token_file, None);
    let off = format!("{MINIMAL}\n[http]\nlisten = \"\"\n");
    let config = StationConfig::parse(&off, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen, None);
    let v6 = format!("{MINIMAL}\n[http]\nlisten = \"[::1]:8080\"\n");
    let config = StationConfig::parse(&v6, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen, Some("[::1]:8080".parse().unwrap()));
}

#[test]
fn http_listen_must_be_an_address_and_port() {
    for bad in ["localhost:9091", "9091", "127.0.0.1", "127.0.0.1:99999"] {
        let text = format!("{MINIMAL}\n[http]\nlisten = \"{bad}\"\n");
        let e = err(&text);
        assert_eq!(
            e.position(),
            Some(position_of(&text, &format!("\"{bad}\""))),
            "{bad}"
        );
        let message = e.to_string();
        assert!(
            message.contains("http.listen must be an IP address and port"),
            "{message}"
        );
        assert!(message.contains("\"\" to turn the server off"), "{message}");
    }
}

#[test]
fn http_beyond_loopback_needs_a_token_file() {
    let text = format!("{MINIMAL}\n[http]\nlisten = \"0.0.0.0:9091\"\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"0.0.0.0:9091\"")));
    assert!(e.to_string().contains("needs http.token_file"), "{e}");

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("station.toml");
    let with_token =
        format!("{MINIMAL}\n[http]\nlisten = \"0.0.0.0:9091\"\ntoken_file = \"http.token\"\n");
    std::fs::write(&path, with_token).unwrap_or_else(|e| panic!("{e}"));
    let config = StationConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.http.listen, Some("0.0.0.0:9091".parse().unwrap()));
    assert_eq!(config.http.token_file, Some(dir.path().join("http.token")));
}

#[test]
fn unknown_http_key_is_an_error() {
    let text = format!("{MINIMAL}\n[http]\nport = 9091\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "port = 9091")));
    assert!(
        e.to_string().contains("listen"),
        "lists what is expected: {e}"
    );
}

#[test]
fn http_roles_hosts_and_readers_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}\n[http]\ntoken_file = \"viewer.token\"\nengineer_token_file = \"engineer.token\"\nallowed_hosts = [\"Station07.Line.Example.\", \"192.0.2.7\", \"[2001:db8::7]\"]\nreaders = 4\n"
    );
    let config = StationConfig::parse(&text, "/etc/nrf-provd/station.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.http.engineer_token_file,
        Some(PathBuf::from("/etc/nrf-provd/engineer.token"))
    );
    assert_eq!(
        config.http.allowed_hosts,
        ["station07.line.example", "192.0.2.7", "2001:db8::7"]
    );
    assert_eq!(config.http.readers, 4);
    let defaults = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.http.readers, 2);
    assert!(defaults.http.allowed_hosts.is_empty());
    assert_eq!(defaults.http.engineer_token_file, None);

    for (bad, expected) in [
        ("allowed_hosts = [\"http://station07\"]", "http://station07"),
        ("allowed_hosts = [\"station07:9091\"]", "station07:9091"),
        ("allowed_hosts = [\"*.line.example\"]", "*.line.example"),
        ("readers = 0", "0"),
        ("readers = 9", "9"),
    ] {
        let text = format!("{MINIMAL}\n[http]\n{bad}\n");
        let e = err(&text);
        let at = position_of(&text, bad);
        let value_at = bad.find(expected).expect("value") + at.1;
        assert!(
            e.position()
                .is_some_and(|(line, column)| line == at.0 && column >= at.1 && column <= value_at),
            "{bad}: {e}"
        );
        assert!(
            e.to_string().contains("allowed_hosts")
                || e.to_string().contains("readers must be 1 to 8"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn without_a_ledger_section_the_station_is_on_its_own() {
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.ledger, None);
    assert_eq!(config.plan.reprovision, Reprovision::Allow);
    let demo = StationConfig::demo();
    assert_eq!(demo.ledger, None, "the demo needs no server");
}

#[test]
fn a_ledger_section_is_read_with_defaults_and_relative_paths() {
    let text = format!(
        "{MINIMAL}\n[ledger]\nurl = \"postgres://nrf@db.line3.example:5433/nrf_line\"\npassword_file = \"ledger.password\"\nmode = \"deferred\"\nbatch_size = 200\nclaim_timeout = 1.5\n"
    );
    let config = StationConfig::parse(&text, "/etc/nrf-provd/station.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let ledger = config.ledger.unwrap_or_else(|| panic!("[ledger] is read"));
    assert_eq!(ledger.url, "postgres://nrf@db.line3.example:5433/nrf_line");
    assert_eq!(
        ledger.password,
        PasswordSource::File(PathBuf::from("/etc/nrf-provd/ledger.password"))
    );
    assert_eq!(ledger.mode, LedgerMode::Deferred);
    assert_eq!(ledger.batch_size, 200);
    assert_eq!(ledger.claim_timeout, Duration::from_millis(1500));
    assert_eq!(ledger.connect_timeout, Duration::from_secs(5));
    assert_eq!(ledger.forward_interval, Duration::from_secs(5));
    assert_eq!(ledger.pool_size, 16);

    let text =
        format!("{MINIMAL}\n[ledger]\nurl = \"postgres://nrf@/line?host=/run/postgresql\"\n");
    let ledger = StationConfig::parse(&text, "station.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .ledger
        .unwrap_or_else(|| panic!("[ledger] is read"));
    assert_eq!(ledger.mode, LedgerMode::Required, "required unless said");
    assert_eq!(ledger.password, PasswordSource::Environment);
}

#[test]
fn ledger_values_are_checked_with_positions_and_never_echo_the_url() {
    let cases = [
        (
            "url = \"mysql://nrf@db/line\"",
            "\"mysql://nrf@db/line\"",
            "PostgreSQL URL",
        ),
        (
            "url = \"postgres://nrf:s3cret-pw@db/line\"",
            "\"postgres://nrf:s3cret-pw@db/line\"",
            "must not hold a password",
        ),
        (
            "url = \"postgres://nrf@db/line?sslmode=verify-full\"",
            "\"postgres://nrf@db/line?sslmode=verify-full\"",
            "without sslrootcert",
        ),
        (
            "url = \"postgres://nrf@db/line\"\nmode = \"eventually\"",
            "\"eventually\"",
            "required",
        ),
        (
            "url = \"postgres://nrf@db/line\"\nbatch_size = 0",
            "0",
            "between 1 and",
        ),
        (
            "url = \"postgres://nrf@db/line\"\nclaim_timeout = 0",
            "0",
            "more than zero",
        ),
        (
            "url = \"postgres://nrf@db/line\"\npool_size = 1000",
            "1000",
            "between 1 and 256",
        ),
        (
            "url = \"postgres://nrf@db/line\"\npassword = \"x\"",
            "password = \"x\"",
            "unknown key `password`",
        ),
    ];
    for (body, value, mention) in cases {
        let text = format!("{MINIMAL}\n[ledger]\n{body}\n");
        let e = err(&text);
        let offset = text.rfind(value).unwrap_or_default();
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        assert_eq!(e.position(), Some((line, column)), "{body}: {e}");
        let message = e.to_string();
        assert!(message.contains(mention), "{body}: {e}");
        assert!(
            !message.contains("s3cret-pw"),
            "the password is never shown: {e}"
        );
    }
    let e = err(&format!("{MINIMAL}\n[ledger]\nmode = \"deferred\"\n"));
    assert!(
        e.to_string().contains("missing key `url` in [ledger]"),
        "{e}"
    );
}

#[test]
fn reprovision_is_a_plan_policy() {
    for (value, want) in [
        ("allow", Reprovision::Allow),
        ("warn", Reprovision::Warn),
        ("refuse", Reprovision::Refuse),
    ] {
        let text = format!("{MINIMAL}\n[plan]\nreprovision = \"{value}\"\n");
        let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.plan.reprovision, want);
    }
    let text = format!("{MINIMAL}\n[plan]\nreprovision = \"never\"\n");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "\"never\"")), "{e}");
    assert!(e.to_string().contains("refuse"), "{e}");
}

const STATION_TOML: &str = include_str!("../../../../config/station.toml");

proptest::proptest! {
    /// The cargo-fuzz body (`fuzz/fuzz_targets/config.rs`), exercised on
    /// stable by CI: arbitrary bytes never panic the parser.
    #[test]
    fn fuzz_parse_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        nrf_provd_daemon::config::fuzz_parse(&data);
    }

    /// The shipped config with bytes overwritten, inserted or cut: mostly
    /// still TOML, so the validators (not only the TOML syntax) see it.
    #[test]
    fn fuzz_parse_never_panics_on_edited_configs(
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), 0u8..3, proptest::prelude::any::<u8>()),
            1..8,
        )
    ) {
        let mut text = STATION_TOML.as_bytes().to_vec();
        for (at, kind, byte) in edits {
            let i = at.index(text.len() + 1);
            match kind {
                0 if i < text.len() => text[i] = byte,
                1 => text.insert(i, byte),
                _ if i < text.len() => {
                    text.remove(i);
                }
                _ => {}
            }
        }
        nrf_provd_daemon::config::fuzz_parse(&text);
    }
}

#[test]
fn every_mistake_in_the_toml_is_reported_in_one_parse() {
    let text = format!(
        "{MINIMAL}\n[serial]\nbaud = \"fast\"\nparity = \"sometimes\"\npartiy = \"even\"\n\n\
         [plan]\nsteps = [\"probe\", \"teleport\", 7, \"identify\"]\nsec_tag = -1\n"
    );
    let e = err(&text);
    let problems = e.problems();
    let at = |needle: &str| {
        let offset = text.rfind(needle).unwrap_or_else(|| panic!("{needle}"));
        let before = &text[..offset];
        Some((
            before.matches('\n').count() + 1,
            offset - before.rfind('\n').map_or(0, |i| i + 1) + 1,
        ))
    };
    let expected = [
        (at("\"fast\""), "serial.baud: found string \"fast\""),
        (
            at("\"sometimes\""),
            "serial.parity: unknown value \"sometimes\"",
        ),
        (
            at("partiy"),
            "unknown key `partiy` in [serial]; did you mean `parity`?",
        ),
        (at("\"teleport\""), "plan.steps: unknown value \"teleport\""),
        (at("7,"), "plan.steps: found integer `7`"),
        (at("-1"), "plan.sec_tag must be between 0 and"),
    ];
    assert_eq!(problems.len(), expected.len(), "{e}");
    for ((position, words), problem) in expected.iter().zip(&problems) {
        assert_eq!(problem.position(), *position, "{problem}");
        assert!(problem.to_string().contains(words), "{problem}");
    }
}

#[test]
fn what_follows_from_a_mistake_is_not_reported_as_another() {
    // (text, the one problem expected)
    let cases = [
        // A required key of the wrong type is not also "missing".
        (
            MINIMAL.replace("station_id = \"s1\"", "station_id = 7"),
            "station_id: found integer `7`",
        ),
        (
            MINIMAL.replace("paths = [", "paths = 5 #["),
            "ports.paths: found integer `5`",
        ),
        // Nor is a misspelt one.
        (
            MINIMAL.replace("certificate = ", "certficate = "),
            "did you mean `certificate`?",
        ),
        // A list whose only entry was wrong is not also "empty".
        (
            format!("{MINIMAL}\n[plan]\nsteps = [\"teleport\"]\n"),
            "unknown value \"teleport\"",
        ),
        // A misspelt step is not also missing before the steps that need it.
        (
            format!(
                "{MINIMAL}\n[plan]\nsteps = [\"probe\", \"identfy\", \"offline\", \"attest\", \"keygen\"]\ncsr_attributes = \"CN={{imei}}\"\n"
            ),
            "did you mean \"identify\"?",
        ),
        // A misspelt section is not also missing.
        (
            MINIMAL.replace("[ca]", "[cq]"),
            "unknown key `cq` at the top level; did you mean `ca`?",
        ),
    ];
    for (text, words) in cases {
        let e = err(&text);
        assert_eq!(e.problems().len(), 1, "{text}\n{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
    // A required key that is simply not there is reported where its table is.
    let text = MINIMAL.replace("key = \"ca.key\"\n", "");
    let e = err(&text);
    assert_eq!(e.position(), Some(position_of(&text, "[ca]")), "{e}");
    assert!(e.to_string().contains("missing key `key` in [ca]"), "{e}");
    let e = err(&MINIMAL.replace("station_id = \"s1\"", ""));
    assert!(
        e.to_string()
            .contains("missing key `station_id` at the top level"),
        "{e}"
    );
}

#[test]
fn dotted_keys_are_read_like_tables() {
    let text = MINIMAL.replace("[ports]\npaths", "ports.paths").replace(
        "[ca]\ncertificate = \"ca.pem\"\nkey",
        "ca.certificate = \"ca.pem\"\nca.key",
    );
    let text = format!("plan.sec_tag = 7\n{text}");
    let config =
        StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert_eq!(config.plan.sec_tag, 7);
    assert_eq!(config.ports.paths, vec!["/dev/serial/by-id/*".to_string()]);
    let e = err(&format!("ports.pathz = 1\n{text}"));
    assert!(e.to_string().contains("did you mean `paths`?"), "{e}");
}

#[test]
fn a_file_of_mistakes_is_read_as_far_as_a_hundred() {
    let junk: String = (0..150).map(|i| format!("junk{i} = {i}\n")).collect();
    let e = err(&format!("{junk}{MINIMAL}"));
    let problems = e.problems();
    assert_eq!(problems.len(), 101, "{e}");
    assert_eq!(problems[0].position(), Some((1, 1)));
    assert!(
        problems[100]
            .to_string()
            .contains("more than 100 mistakes; fix these and check again"),
        "{e}"
    );
}

#[test]
fn traceability_is_read_and_every_mistake_in_it_reported() {
    let good = format!(
        "{MINIMAL}\n[traceability]\nwork_order = \" WO-1234 \"\nproduct = \"ACME-TRACKER rev C\"\n\
         require = [\"work_order\", \"lot\"]\n[traceability.fixtures]\n\"/dev/nrf91/by-fixture/01\" = \"F01\"\n"
    );
    let config = StationConfig::parse(&good, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    let trace = &config.traceability;
    assert_eq!(trace.start.work_order.as_deref(), Some("WO-1234"));
    assert_eq!(trace.start.product.as_deref(), Some("ACME-TRACKER rev C"));
    assert_eq!(trace.start.lot, None);
    assert_eq!(trace.require.len(), 2);
    assert_eq!(
        trace.fixture_of("/dev/nrf91/by-fixture/01").as_deref(),
        Some("F01")
    );
    assert_eq!(trace.fixture_of("/dev/nrf91/by-fixture/02"), None);

    let bad = format!(
        "{MINIMAL}\n[traceability]\nlot = \"L\\u001b[2J\"\nrequire = [\"work_order\", \"colour\"]\n\
         shift = \"night\"\n[traceability.fixtures]\n\"/dev/ttyACM0\" = \"\"\n"
    );
    let e = err(&bad);
    let problems: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
    let found =
        |needle: &str, at: &str| {
            let (line, column) = position_of(&bad, at);
            assert!(
                problems.iter().any(|p| p.contains(needle)
                    && p.starts_with(&format!("station.toml:{line}:{column}:"))),
                "{needle} at {line}:{column}: {problems:#?}"
            );
        };
    found("traceability.lot: a control character", "\"L\\u001b");
    found("unknown field \"colour\"", "\"colour\"");
    found("shift", "shift = ");
    found("needs a name", "\"\"\n");
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn nordic_debug_sec_tags_are_a_test_station_s_only() {
    // 2147483648..=2147483667: credentials Nordic's tools can decrypt.
    for (setting, table) in [
        ("sec_tag", "[plan]"),
        ("sec_tag", "[claim]\nownership_key = \"o.pem\""),
    ] {
        for tag in ["2147483648", "2147483667"] {
            let text = format!("{MINIMAL}\n{table}\n{setting} = {tag}\n");
            let e = err(&text);
            assert_eq!(e.position(), Some(position_of(&text, tag)), "{e}");
            assert!(
                e.to_string()
                    .contains("debug-decryptable range 2147483648-2147483667")
                    && e.to_string().contains("test_station = true"),
                "{e}"
            );
            let test = format!("test_station = true\n{text}");
            let config =
                StationConfig::parse(&test, "station.toml").unwrap_or_else(|e| panic!("{e}"));
            assert!(config.test_station);
            let got = if table == "[plan]" {
                config.plan.sec_tag
            } else {
                config.plan.claim_sec_tag
            };
            assert_eq!(got.to_string(), tag);
        }
        // Above the debug range: the modem's own, even on a test station.
        let text = format!("test_station = true\n{MINIMAL}\n{table}\n{setting} = 2147483668\n");
        let e = err(&text);
        assert!(e.to_string().contains("between 0 and 2147483647"), "{e}");
    }
}

#[test]
fn the_claim_step_needs_a_claim_section_and_min_firmware_is_a_version() {
    let steps =
        "steps = [\"probe\", \"identify\", \"offline\", \"attest\", \"claim\", \"restore\"]";
    let text = format!("{MINIMAL}\n[plan]\n{steps}\n");
    let e = err(&text);
    assert!(
        e.to_string()
            .contains("the plan has step `claim` but there is no [claim] section"),
        "{e}"
    );
    let text = format!(
        "{MINIMAL}\n[plan]\n{steps}\nmin_firmware = \"2.0.0\"\nconfirm_unsupported = \"skip\"\n\n[claim]\nownership_key = \"owner.pem\"\n"
    );
    let config = StationConfig::parse(&text, "/etc/nrf-provd/station.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let claim = config.claim.expect("[claim]");
    assert_eq!(
        claim.ownership_key,
        PathBuf::from("/etc/nrf-provd/owner.pem")
    );
    assert_eq!(claim.sec_tag, 16_842_754);
    assert_eq!(config.plan.claim_sec_tag, 16_842_754);
    assert_eq!(
        config.plan.min_firmware.map(|v| v.to_string()).as_deref(),
        Some("2.0.0")
    );
    assert_eq!(
        config.plan.confirm_unsupported,
        nrf_provd_daemon::config::ConfirmUnsupported::Skip
    );
    // claim is not in the default plan: a config without steps needs no [claim].
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(!config.plan.steps.contains(&Step::Claim));
    for bad in ["\"2.0\"", "\"v2.0.0\"", "\"2.0.0.1\""] {
        let text = format!("{MINIMAL}\n[plan]\nmin_firmware = {bad}\n");
        let e = err(&text);
        assert_eq!(e.position(), Some(position_of(&text, bad)), "{e}");
        assert!(
            e.to_string()
                .contains("plan.min_firmware must be a modem firmware version x.y.z"),
            "{e}"
        );
    }
    let text = format!(
        "{MINIMAL}\n[plan]\nsteps = [\"probe\", \"offline\", \"attest\"]\nmin_firmware = \"2.0.0\"\n"
    );
    assert!(
        err(&text)
            .to_string()
            .contains("plan.min_firmware needs step `identify`")
    );
    let text = format!("{MINIMAL}\n[claim]\nsec_tag = 5\n");
    assert!(
        err(&text)
            .to_string()
            .contains("missing key `ownership_key`"),
        "{}",
        err(&text)
    );
}

#[test]
fn retention_keep_full_is_a_duration_and_absent_keeps_everything() {
    let config = StationConfig::parse(MINIMAL, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.keep_full, None, "no [retention]: every run in full");
    let text = format!("{MINIMAL}\n[retention]\nkeep_full = \"90d\"\n");
    let config = StationConfig::parse(&text, "station.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.keep_full, Some(Duration::from_secs(90 * 24 * 3600)));
    for bad in ["\"soon\"", "\"0s\""] {
        let text = format!("{MINIMAL}\n[retention]\nkeep_full = {bad}\n");
        let e = err(&text);
        assert_eq!(e.position(), Some(position_of(&text, bad)), "{e}");
        assert!(e.to_string().contains("retention.keep_full"), "{e}");
    }
    let text = format!("{MINIMAL}\n[retention]\nkeep = \"90d\"\n");
    assert!(err(&text).to_string().contains("keep_full"));
}
