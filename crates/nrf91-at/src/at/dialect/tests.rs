use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use serde::Deserialize;
use serde::de::IntoDeserializer;
use serde::de::value::{Error as DeError, StrDeserializer};

use super::*;
use crate::at::{AtError, Client, ClientOptions, Command, Deadline, DialectChoice, Response};

/// `name` as the config's serde reads it.
fn choice(name: &str) -> Result<DialectChoice, DeError> {
    let name: StrDeserializer<DeError> = name.into_deserializer();
    DialectChoice::deserialize(name)
}

#[test]
fn registry_names_are_unique_and_each_is_a_config_choice() {
    for (i, d) in ALL.iter().enumerate() {
        assert!(
            ALL[..i].iter().all(|e| e.as_str() != d.as_str()),
            "{d} registered twice"
        );
        assert_eq!(Dialect::named(d.as_str()), Some(*d));
        // The config and the CLI can choose it by its name.
        assert_eq!(choice(d.as_str()).expect("a choice").fixed(), Some(*d));
    }
    assert_eq!(choice("auto").unwrap().fixed(), None);
    assert!(choice("braces").is_err());
    assert_eq!(Dialect::named("auto"), None);
    // Detection tries the shell first (a raw host refuses it at once).
    assert_eq!(ALL.first(), Some(&Dialect::SHELL));
}

#[test]
fn framing_per_dialect() {
    let raw = |c| Dialect::RAW.rules().frame(c);
    let shell = |c| Dialect::SHELL.rules().frame(c);
    assert_eq!(raw("AT+CGSN"), "AT+CGSN");
    assert_eq!(raw("AT%CMNG=0,1,0,\"a\r\nb\""), "AT%CMNG=0,1,0,\"a\r\nb\"");
    assert_eq!(shell("AT+CGSN"), "at 'AT+CGSN'");
    assert_eq!(
        shell("AT%CMNG=0,1,0,\"a\r\nb\""),
        "at 'AT%CMNG=0,1,0,\"a\\nb\"'"
    );
    assert_eq!(shell("AT%JWT=0,0,\"it's\""), "at 'AT%JWT=0,0,\"it\\'s\"'");
}

#[test]
fn echo_recognition_per_dialect() {
    let echo =
        |d: Dialect, line: &str, cmd: &str| d.rules().is_echo(line, cmd, &d.rules().frame(cmd));
    let (raw, shell) = (Dialect::RAW, Dialect::SHELL);
    let long = "AT%KEYGEN=16842753,2,0,\"CN=abc\"";
    let table = [
        (raw, "AT+CGSN", "AT+CGSN", true),
        (
            raw,
            "AT%CMNG=0,1,0,\"a\nb\"",
            "AT%CMNG=0,1,0,\"a\r\nb\"",
            true,
        ),
        (raw, "at 'AT+CGSN'", "AT+CGSN", false),
        (raw, "352656100367872", "AT+CGSN", false),
        (shell, "at 'AT+CGSN'", "AT+CGSN", true),
        (shell, "at AT+CGSN", "AT+CGSN", true),
        (shell, "AT+CGSN", "AT+CGSN", true),
        // A wrapped echo arrives in pieces; a long piece is still echo.
        (shell, "16842753,2,0,\"CN=abc\"'", long, true),
        (shell, "CN=abc", long, false),
        (shell, "352656100367872", "AT+CGSN", false),
    ];
    for (d, line, cmd, want) in table {
        assert_eq!(echo(d, line, cmd), want, "{d}: {line:?} for {cmd:?}");
    }
}

#[test]
fn prompts_of_registered_dialects_are_removed() {
    assert_eq!(strip_prompts("uart:~$ uart:~$ OK"), "OK");
    assert_eq!(strip_prompts("rtt:~$ at 'AT'"), "at 'AT'");
    assert_eq!(strip_prompts("http://x:~$ y"), "http://x:~$ y");
    assert_eq!(strip_prompts("OK"), "OK");
}

#[test]
fn output_and_stored_credentials_per_dialect() {
    let (raw, shell) = (Dialect::RAW.rules(), Dialect::SHELL.rules());
    assert_eq!(raw.as_printed("a\r\nb".into()), "a\r\nb");
    assert_eq!(shell.as_printed("a\r\r\nb\r\n".into()), "a\r\nb\n");
    assert_eq!(raw.stored_credential("a\nb"), "a\nb");
    assert_eq!(shell.stored_credential("a\nb"), "a\r\nb");
    assert_eq!(shell.stored_credential("a\r\nb"), "a\r\nb");
}

/// A relay this crate does not know: commands go in braces, it echoes
/// them as `> <command>`, and it puts `| ` in front of the modem's
/// information lines.
struct Braces;

impl DialectRules for Braces {
    fn name(&self) -> &'static str {
        "braces"
    }

    fn frame(&self, command: &str) -> String {
        format!("{{{command}}}")
    }

    fn is_echo(&self, line: &str, command: &str, framed: &str) -> bool {
        line.strip_prefix("> ") == Some(command) || exact_echo(line, command, framed)
    }

    fn as_printed(&self, line: String) -> String {
        line.strip_prefix("| ").map(str::to_string).unwrap_or(line)
    }
}

/// `AT+CGMM`, typed as the modem commands are.
struct Model;

impl Command for Model {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT+CGMM".into()
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        r.lines.first().cloned().ok_or(AtError::Malformed {
            line: "(no model)".into(),
        })
    }
}

/// A new dialect plugs in by its rules alone: the client frames, strips
/// its echo and undoes its output translation without knowing it.
#[tokio::test]
async fn a_dialect_outside_the_registry_drives_the_client() {
    static BRACES: Braces = Braces;
    let dialect = Dialect::new(&BRACES);
    assert_eq!(dialect.as_str(), "braces");
    assert_eq!(Dialect::named("braces"), None, "not registered");
    let (ours, mut theirs) = duplex(4096);
    let options = ClientOptions {
        dialect,
        ..ClientOptions::default()
    };
    let (mut client, mut notifications) = Client::new(ours, options);
    let peer = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !got.ends_with(b"}\r\n") {
            let n = theirs.read(&mut buf).await.expect("read");
            assert_ne!(n, 0, "client closed");
            got.extend_from_slice(&buf[..n]);
        }
        theirs
            .write_all(b"> AT+CGMM\r\n+CEREG: 5\r\n| nRF9161-LACA\r\nOK\r\n")
            .await
            .expect("write");
        (got, theirs)
    });
    let model = tokio::time::timeout(Duration::from_secs(10), client.send(&Model))
        .await
        .expect("answered in time")
        .expect("answered OK");
    assert_eq!(model, "nRF9161-LACA");
    let (got, _theirs) = peer.await.unwrap();
    // The line ending the new client settles with, then the framed command.
    assert_eq!(String::from_utf8_lossy(&got), "\r\n{AT+CGMM}\r\n");
    assert_eq!(notifications.recv().await.unwrap().line, "+CEREG: 5");
}
