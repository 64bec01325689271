//! Table-driven tests of framing + grammar + response assembly, without I/O.

use nrf91_at::at::Dialect;
use proptest::prelude::*;
use testkit::at::{Outcome, lines, run_script};

const MAX: usize = 16 * 1024;

/// Notifications, then the response lines or a substring of the error.
type Expected = (Vec<&'static str>, Result<Vec<&'static str>, &'static str>);

struct Case {
    name: &'static str,
    commands: &'static [&'static str],
    dialect: Dialect,
    max_line: usize,
    input: Vec<u8>,
    /// Expected (notifications, Ok lines | Err debug-substring) per command.
    expect: Vec<Expected>,
}

fn check(case: &Case, outcomes: &[Outcome]) {
    assert_eq!(outcomes.len(), case.expect.len(), "{}", case.name);
    for (i, (got, (notes, want))) in outcomes.iter().zip(&case.expect).enumerate() {
        assert_eq!(
            got.notifications, *notes,
            "{} cmd {i}: notifications",
            case.name
        );
        match (&got.result, want) {
            (Some(Ok(r)), Ok(ls)) => assert_eq!(*r, lines(ls), "{} cmd {i}", case.name),
            (Some(Err(e)), Err(sub)) => {
                assert!(e.contains(sub), "{} cmd {i}: {e} lacks {sub}", case.name)
            }
            (other, _) => panic!("{} cmd {i}: got {other:?}, want {want:?}", case.name),
        }
    }
}

fn pem() -> &'static str {
    "-----BEGIN CERTIFICATE-----\r\nMIIBOKxyzOK+/=\r\nABCDEF\r\n-----END CERTIFICATE-----\r\n"
}

fn cases() -> Vec<Case> {
    let sha = "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1";
    vec![
        Case {
            name: "notification between information line and OK",
            commands: &["AT%ATTESTTOKEN"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"%ATTESTTOKEN: \"2dn3.0oRD\"\r\n+CEREG: 5,\"4400\",\"0001\",7\r\nOK\r\n".to_vec(),
            expect: vec![(
                vec!["+CEREG: 5,\"4400\",\"0001\",7"],
                Ok(vec!["%ATTESTTOKEN: \"2dn3.0oRD\""]),
            )],
        },
        Case {
            name: "base64 lines containing OK are information",
            commands: &["AT%KEYGEN=17,2,0"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"%KEYGEN: \"MIIBOKAwOK.OKOK\"\r\nOK\r\n".to_vec(),
            expect: vec![(vec![], Ok(vec!["%KEYGEN: \"MIIBOKAwOK.OKOK\""]))],
        },
        Case {
            name: "bare base64 line OK-ish then OK",
            commands: &["AT+CGMR"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"OKAY\r\n OK1\r\nOK\r\n".to_vec(),
            expect: vec![(vec![], Ok(vec!["OKAY", "OK1"]))],
        },
        Case {
            name: "+CME ERROR: 518",
            commands: &["AT%KEYGEN=17,2,0"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"+CME ERROR: 518\r\n".to_vec(),
            expect: vec![(vec![], Err("code: 518, meaning: \"not allowed in active state"))],
        },
        Case {
            name: "plain ERROR and +CMS ERROR",
            commands: &["AT%DEVICEUUID", "AT+CMGS"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"ERROR\r\n+CMS ERROR: 301\r\n".to_vec(),
            expect: vec![(vec![], Err("Error {")), (vec![], Err("code: 301"))],
        },
        Case {
            name: "shell echo, prompt and ANSI colours",
            commands: &["AT+CGSN"],
            dialect: Dialect::SHELL,
            max_line: MAX,
            input: b"\x1b[1;32muart:~$ \x1b[mat 'AT+CGSN'\r\n\x1b[m352656100367872\r\nOK\r\n\r\n\x1b[1;32muart:~$ \x1b[m".to_vec(),
            expect: vec![(vec![], Ok(vec!["352656100367872"]))],
        },
        Case {
            name: "shell log lines are notifications",
            commands: &["AT+CGMM"],
            dialect: Dialect::SHELL,
            max_line: MAX,
            input: b"at 'AT+CGMM'\r\n[00:00:03.141,592] <inf> lte: registered\r\nnRF9161-LACA\r\nOK\r\n".to_vec(),
            expect: vec![(
                vec!["[00:00:03.141,592] <inf> lte: registered"],
                Ok(vec!["nRF9161-LACA"]),
            )],
        },
        Case {
            name: "overlong line then a good response",
            commands: &["AT%CMNG=2,1,0", "AT+CGSN"],
            dialect: Dialect::RAW,
            max_line: 64,
            input: [
                b"%CMNG: 1,0,\"".as_slice(),
                &[b'A'; 300],
                b"\"\r\nOK\r\n352656100367872\r\nOK\r\n",
            ]
            .concat(),
            expect: vec![
                (vec![], Err("Overlong")),
                (vec![], Ok(vec!["352656100367872"])),
            ],
        },
        Case {
            name: "multi-line PEM inside quotes stays one line",
            commands: &["AT%CMNG=2,16842753,0"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: format!("%CMNG: 16842753,0,\"{sha}\",\"{}\"\r\nOK\r\n", pem()).into_bytes(),
            expect: vec![(
                vec![],
                Ok(vec![Box::leak(
                    format!("%CMNG: 16842753,0,\"{sha}\",\"{}\"", pem()).into_boxed_str(),
                )]),
            )],
        },
        Case {
            name: "garbage (with a stray quote) before the response",
            commands: &["AT+CGSN=1"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"\xff\xfe\x00garb\"age\r\n+CGSN: \"352656100367872\"\r\nOK\r\n".to_vec(),
            expect: vec![(
                vec![],
                Ok(vec!["\u{fffd}\u{fffd}", "garb\"age", "+CGSN: \"352656100367872\""]),
            )],
        },
        Case {
            name: "CR-only and LF-only terminators, raw echo",
            commands: &["AT+CFUN?"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"AT+CFUN?\r+CFUN: 4\nOK\r".to_vec(),
            expect: vec![(vec![], Ok(vec!["+CFUN: 4"]))],
        },
        Case {
            name: "URC that shares the command's prefix belongs to a read, not a set",
            commands: &["AT+CEREG?", "AT+CEREG=5"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"+CEREG: 5,1,\"4400\"\r\nOK\r\n+CEREG: 1\r\nOK\r\n".to_vec(),
            expect: vec![
                (vec![], Ok(vec!["+CEREG: 5,1,\"4400\""])),
                (vec!["+CEREG: 1"], Ok(vec![])),
            ],
        },
        Case {
            name: "SLM Ready banner",
            commands: &["AT+CGMR"],
            dialect: Dialect::RAW,
            max_line: MAX,
            input: b"Ready\r\nmfw_nrf91x1_2.0.1\r\nOK\r\n".to_vec(),
            expect: vec![(vec!["Ready"], Ok(vec!["mfw_nrf91x1_2.0.1"]))],
        },
    ]
}

#[test]
fn table_whole_input() {
    for case in cases() {
        let got = run_script(case.commands, case.dialect, case.max_line, &[&case.input]);
        check(&case, &got);
    }
}

#[test]
fn split_at_every_byte_boundary_equals_whole() {
    for case in cases() {
        let whole = run_script(case.commands, case.dialect, case.max_line, &[&case.input]);
        for k in 0..=case.input.len() {
            let (a, b) = case.input.split_at(k);
            let split = run_script(case.commands, case.dialect, case.max_line, &[a, b]);
            assert_eq!(split, whole, "{}: split at {k}", case.name);
        }
        let bytes: Vec<&[u8]> = case.input.chunks(1).collect();
        let one_by_one = run_script(case.commands, case.dialect, case.max_line, &bytes);
        assert_eq!(one_by_one, whole, "{}: byte by byte", case.name);
    }
}

proptest! {
    /// Any chunking of any response gives the same outcome as the whole.
    #[test]
    fn arbitrary_chunking_is_invisible(
        body in proptest::collection::vec(
            prop_oneof![
                Just(b"OK\r\n".to_vec()),
                Just(b"+CEREG: 5\r\n".to_vec()),
                Just(b"%CMNG: 1,0,\"AB\r\nCD\"\r\n".to_vec()),
                Just(b"\x1b[1;32muart:~$ \x1b[m".to_vec()),
                Just(b"\r".to_vec()),
                Just(b"\"".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..20),
            ],
            0..12,
        ),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let input: Vec<u8> = body.concat();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&input[last..p]);
            last = p;
        }
        chunks.push(&input[last..]);
        let cmds = &["AT%CMNG=1", "AT+CGSN"];
        let whole = run_script(cmds, Dialect::SHELL, 48, &[&input]);
        let split = run_script(cmds, Dialect::SHELL, 48, &chunks);
        prop_assert_eq!(split, whole);
    }

    /// The cargo-fuzz body, exercised on stable by CI: nothing may panic.
    #[test]
    fn fuzz_framing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        nrf91_at::at::fuzz_framing(&data);
    }
}

proptest! {
    /// The `cmng` cargo-fuzz body, exercised on stable by CI: arbitrary
    /// bytes never panic the `%CMNG`, `+CGSN`, `%XMODEMUUID`, `+CCLK` parsers
    /// (and what they accept holds what they promise).
    #[test]
    fn fuzz_cmng_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        nrf91_at::modem::fuzz_cmng(&data);
    }

    /// Plausible answers, mostly well formed, in both dialects: a `%CMNG`
    /// list reads back as the entries printed, and the body holds on them.
    #[test]
    fn fuzz_cmng_on_cmng_answers(
        entries in proptest::collection::vec((any::<u32>(), any::<u8>(), "[0-9A-Fa-f]{64}"), 0..6),
        content in "[ -~\r\n]{0,200}",
        noise in proptest::collection::vec(any::<u8>(), 0..8),
        shell in any::<bool>(),
    ) {
        let mut text = String::new();
        for (tag, kind, sha) in &entries {
            text.push_str(&format!("%CMNG: {tag},{kind},\"{sha}\"\r\n"));
        }
        let list = nrf91_at::modem::parse_cmng_list(&nrf91_at::at::Response {
            lines: text.lines().map(str::to_string).collect(),
        });
        let list = list.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(list.len(), entries.len());
        for (got, (tag, kind, sha)) in list.iter().zip(&entries) {
            prop_assert_eq!(got.sec_tag, *tag);
            prop_assert_eq!(got.kind.code(), *kind);
            prop_assert_eq!(&got.sha256, &sha.to_ascii_uppercase());
        }
        if let Some((tag, kind, sha)) = entries.first() {
            let content = content.replace('"', "");
            text.push_str(&format!("%CMNG: {tag},{kind},\"{sha}\",\"{content}\"\r\n"));
        }
        text.push_str("OK\r\n");
        let mut data = vec![u8::from(shell)];
        data.extend_from_slice(&noise);
        data.extend_from_slice(text.as_bytes());
        nrf91_at::modem::fuzz_cmng(&data);
    }
}
