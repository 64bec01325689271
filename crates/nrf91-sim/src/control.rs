//! The control protocol of `nrf-provd simulate --control`: one request a
//! line in, one JSON object a line out. It lets another process (the
//! `bench` command) replug boards and read counters without sharing memory,
//! so the simulator's CPU time is never counted as the station's. Both
//! sides use the types here: [`Request`] (words, so a person can type them)
//! and [`Answer`] (serde, externally tagged: `{"<variant>": <value>}`).
//!
//! | request        | answer                                                         |
//! |----------------|----------------------------------------------------------------|
//! | (at start)     | `{"ready":N}` after the listing: N boards are plugged          |
//! | `replug`       | `{"replugged":[0,1,…]}`: every board pulled and plugged back   |
//! | `replug I J …` | the same for boards I, J, …                                    |
//! | `unplug I …`   | `{"unplugged":[I,…]}`: boards pulled (a host reading them gets EOF) |
//! | `plug I …`     | `{"plugged":[I,…]}`: pulled boards plugged back (a plugged one is replugged) |
//! | `new I …`      | `{"new":[{"board":I,"device_uuid":…,"imei":…},…]}`: each board taken out and another (a fresh identity) put in its slot, unplugged; with `--trust-out` its key is added to the trust file, so a station can reload before `plug I` |
//! | `stats`        | `{"stats":[{"commands":…,"keygen_tokens":…,…},…]}` per board ([`BoardStats`]) |
//! | `costs`        | `{"costs":[[[received_us,delay_us,wire_in_us,wire_out_us,answered_us],…],…]}` per board, taken (each cost is reported once; [`Cost`]) |
//! | `quit`         | `{"quit":true}`, then the simulator exits                      |
//!
//! Anything else is answered `{"error":"…"}`. `received_us` (command line
//! complete) and `answered_us` (reply written and paced) are Unix times in
//! microseconds; the other fields are durations in microseconds.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{CommandCost, Fleet, ModemIdentity, SimStats};

/// A request line (see the module table). `Display` writes the line
/// `FromStr` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Pull and plug back these boards; every board when empty.
    Replug(Vec<usize>),
    /// Pull these boards (at least one).
    Unplug(Vec<usize>),
    /// Plug these boards back (at least one).
    Plug(Vec<usize>),
    /// Put an unplugged board with a fresh identity in each of these slots.
    New(Vec<usize>),
    Stats,
    Costs,
    Quit,
}

/// Why a request line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("empty command")]
    Empty,
    #[error("unknown command {0:?} (expected replug, unplug, plug, new, stats, costs or quit)")]
    Unknown(String),
    #[error("{command} takes no arguments, got {extra:?}")]
    Arguments {
        command: &'static str,
        extra: String,
    },
    #[error("no board {0:?}: a board is a number")]
    Board(String),
    #[error("{0} takes one or more board numbers")]
    NoBoards(&'static str),
}

impl FromStr for Request {
    type Err = RequestError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let mut words = line.split_whitespace();
        let command = words.next().ok_or(RequestError::Empty)?;
        let no_arguments =
            |request: Request, name: &'static str, mut words: std::str::SplitWhitespace<'_>| {
                match words.next() {
                    None => Ok(request),
                    Some(extra) => Err(RequestError::Arguments {
                        command: name,
                        extra: extra.to_owned(),
                    }),
                }
            };
        let boards = |words: std::str::SplitWhitespace<'_>| {
            words
                .map(|w| w.parse().map_err(|_| RequestError::Board(w.to_owned())))
                .collect::<Result<Vec<usize>, _>>()
        };
        let some_boards = |name: &'static str, words| match boards(words)? {
            list if list.is_empty() => Err(RequestError::NoBoards(name)),
            list => Ok(list),
        };
        match command {
            "replug" => boards(words).map(Request::Replug),
            "unplug" => some_boards("unplug", words).map(Request::Unplug),
            "plug" => some_boards("plug", words).map(Request::Plug),
            "new" => some_boards("new", words).map(Request::New),
            "stats" => no_arguments(Request::Stats, "stats", words),
            "costs" => no_arguments(Request::Costs, "costs", words),
            "quit" => no_arguments(Request::Quit, "quit", words),
            other => Err(RequestError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_boards = |f: &mut fmt::Formatter<'_>, name: &str, boards: &[usize]| {
            f.write_str(name)?;
            for board in boards {
                write!(f, " {board}")?;
            }
            Ok(())
        };
        match self {
            Request::Replug(boards) => with_boards(f, "replug", boards),
            Request::Unplug(boards) => with_boards(f, "unplug", boards),
            Request::Plug(boards) => with_boards(f, "plug", boards),
            Request::New(boards) => with_boards(f, "new", boards),
            Request::Stats => f.write_str("stats"),
            Request::Costs => f.write_str("costs"),
            Request::Quit => f.write_str("quit"),
        }
    }
}

/// An answer line: `{"<variant>": <value>}` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Printed once at start, after the listing: the number of boards.
    Ready(usize),
    Replugged(Vec<usize>),
    Unplugged(Vec<usize>),
    Plugged(Vec<usize>),
    New(Vec<NewBoard>),
    /// Per board, in slot order.
    Stats(Vec<BoardStats>),
    /// Per board, in slot order: the costs logged since the last `costs`.
    Costs(Vec<Vec<Cost>>),
    /// Always `true`; the simulator exits after this line.
    Quit(bool),
    Error(String),
}

impl Answer {
    /// The JSON line (without newline).
    pub fn to_line(&self) -> String {
        // Serialising these plain types cannot fail; an empty object would
        // make the reader report an unreadable answer.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A board put in a slot by `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBoard {
    pub board: usize,
    pub device_uuid: uuid::Uuid,
    pub imei: String,
}

/// The counters of one board ([`SimStats`]) as the control channel sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardStats {
    pub commands: u64,
    pub attest_tokens: u64,
    pub keygen_tokens: u64,
    pub jwts: u64,
    pub cmng_writes: u64,
    pub sessions: u64,
    pub modelled_busy_us: u64,
}

impl From<&SimStats> for BoardStats {
    fn from(s: &SimStats) -> Self {
        BoardStats {
            commands: s.commands,
            attest_tokens: s.attest_tokens,
            keygen_tokens: s.keygen_tokens,
            jwts: s.jwts,
            cmng_writes: s.cmng_writes,
            sessions: s.sessions,
            modelled_busy_us: micros(s.modelled_busy),
        }
    }
}

/// One answered command's modelled cost ([`CommandCost`]) in microseconds;
/// sent as the array `[received_us, delay_us, wire_in_us, wire_out_us,
/// answered_us]` to keep the `costs` line short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[u64; 5]", into = "[u64; 5]")]
pub struct Cost {
    /// Unix time the command line was complete.
    pub received_us: u64,
    pub delay_us: u64,
    pub wire_in_us: u64,
    pub wire_out_us: u64,
    /// Unix time the reply was written and its wire time was over.
    pub answered_us: u64,
}

impl From<[u64; 5]> for Cost {
    fn from([received_us, delay_us, wire_in_us, wire_out_us, answered_us]: [u64; 5]) -> Self {
        Cost {
            received_us,
            delay_us,
            wire_in_us,
            wire_out_us,
            answered_us,
        }
    }
}

impl From<Cost> for [u64; 5] {
    fn from(c: Cost) -> Self {
        [
            c.received_us,
            c.delay_us,
            c.wire_in_us,
            c.wire_out_us,
            c.answered_us,
        ]
    }
}

impl From<&CommandCost> for Cost {
    fn from(c: &CommandCost) -> Self {
        let unix = |t: SystemTime| micros(t.duration_since(UNIX_EPOCH).unwrap_or_default());
        Cost {
            received_us: unix(c.received),
            delay_us: micros(c.delay),
            wire_in_us: micros(c.wire_in),
            wire_out_us: micros(c.wire_out),
            answered_us: unix(c.answered),
        }
    }
}

/// What the caller should do after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    Quit,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Handle one control line; returns the answer.
pub async fn handle(fleet: &Fleet, line: &str) -> (Answer, Next) {
    let request = match line.parse::<Request>() {
        Ok(request) => request,
        Err(e) => return (Answer::Error(e.to_string()), Next::Continue),
    };
    let answer = match request {
        Request::Replug(boards) => replug(fleet, boards).await,
        Request::Unplug(boards) => match check_boards(fleet, &boards) {
            Err(answer) => answer,
            Ok(()) => {
                for &i in &boards {
                    fleet.unplug(i).await;
                }
                Answer::Unplugged(boards)
            }
        },
        Request::Plug(boards) => match check_boards(fleet, &boards) {
            Err(answer) => answer,
            Ok(()) => {
                for &i in &boards {
                    if let Err(e) = fleet.replug(i).await {
                        return (Answer::Error(format!("plug {i}: {e}")), Next::Continue);
                    }
                }
                Answer::Plugged(boards)
            }
        },
        Request::New(boards) => match check_boards(fleet, &boards) {
            Err(answer) => answer,
            Ok(()) => {
                let mut new = Vec::with_capacity(boards.len());
                for &i in &boards {
                    let identity = ModemIdentity::from_seed(rand::random(), 0);
                    let (device_uuid, imei) = (identity.device_uuid, identity.imei.clone());
                    if let Err(e) = fleet.replace(i, identity).await {
                        return (Answer::Error(format!("new {i}: {e}")), Next::Continue);
                    }
                    new.push(NewBoard {
                        board: i,
                        device_uuid,
                        imei,
                    });
                }
                Answer::New(new)
            }
        },
        Request::Stats => Answer::Stats(
            (0..fleet.len())
                .map(|i| BoardStats::from(&fleet.stats(i)))
                .collect(),
        ),
        Request::Costs => Answer::Costs(
            (0..fleet.len())
                .map(|i| fleet.take_costs(i).iter().map(Cost::from).collect())
                .collect(),
        ),
        Request::Quit => return (Answer::Quit(true), Next::Quit),
    };
    (answer, Next::Continue)
}

/// An error answer unless every board is in the fleet.
fn check_boards(fleet: &Fleet, boards: &[usize]) -> Result<(), Answer> {
    match boards.iter().find(|i| **i >= fleet.len()) {
        Some(bad) => Err(Answer::Error(format!(
            "no board {bad}: the fleet has {}",
            fleet.len()
        ))),
        None => Ok(()),
    }
}

async fn replug(fleet: &Fleet, boards: Vec<usize>) -> Answer {
    let indices: Vec<usize> = if boards.is_empty() {
        (0..fleet.len()).collect()
    } else {
        if let Some(bad) = boards.iter().find(|i| **i >= fleet.len()) {
            return Answer::Error(format!("no board {bad}: the fleet has {}", fleet.len()));
        }
        boards
    };
    // Pull all first, then plug all back: like an operator swapping a tray.
    for &i in &indices {
        fleet.unplug(i).await;
    }
    for &i in &indices {
        if let Err(e) = fleet.replug(i).await {
            return Answer::Error(format!("replug {i}: {e}"));
        }
    }
    Answer::Replugged(indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Latency, SimOptions};

    #[test]
    fn requests_read_back_what_they_write() {
        for request in [
            Request::Replug(vec![]),
            Request::Replug(vec![0, 7, 12]),
            Request::Unplug(vec![3]),
            Request::Plug(vec![1, 2]),
            Request::New(vec![0]),
            Request::Stats,
            Request::Costs,
            Request::Quit,
        ] {
            assert_eq!(request.to_string().parse::<Request>(), Ok(request));
        }
        assert_eq!("  replug   1  2 ".parse(), Ok(Request::Replug(vec![1, 2])));
        assert_eq!("".parse::<Request>(), Err(RequestError::Empty));
        assert!(matches!(
            "dance".parse::<Request>(),
            Err(RequestError::Unknown(_))
        ));
        assert!(matches!(
            "replug x".parse::<Request>(),
            Err(RequestError::Board(_))
        ));
        assert!(matches!(
            "stats 1".parse::<Request>(),
            Err(RequestError::Arguments { .. })
        ));
        for bare in ["unplug", "plug", "new"] {
            assert!(
                matches!(bare.parse::<Request>(), Err(RequestError::NoBoards(_))),
                "{bare} needs a board"
            );
        }
    }

    #[test]
    fn answers_are_readable_json_lines_that_parse_back() {
        let cost = Cost {
            received_us: 1,
            delay_us: 2,
            wire_in_us: 3,
            wire_out_us: 4,
            answered_us: 5,
        };
        let cases = [
            (Answer::Ready(2), r#"{"ready":2}"#),
            (Answer::Replugged(vec![0, 1]), r#"{"replugged":[0,1]}"#),
            (
                Answer::Costs(vec![vec![cost], vec![]]),
                r#"{"costs":[[[1,2,3,4,5]],[]]}"#,
            ),
            (Answer::Quit(true), r#"{"quit":true}"#),
            (Answer::Error("no".into()), r#"{"error":"no"}"#),
        ];
        for (answer, line) in cases {
            assert_eq!(answer.to_line(), line);
            assert_eq!(serde_json::from_str::<Answer>(line).unwrap(), answer);
        }
        let stats = Answer::Stats(vec![BoardStats {
            commands: 3,
            ..BoardStats::default()
        }])
        .to_line();
        assert!(
            stats.starts_with(r#"{"stats":[{"commands":3,"attest_tokens":0,"#),
            "{stats}"
        );
    }

    #[tokio::test]
    async fn replug_stats_and_costs_answer_in_json() {
        let dir = tempfile::tempdir().unwrap();
        let options = SimOptions {
            latency: Latency::Realistic,
            baud: Some(115_200),
            cost_log: true,
            ..SimOptions::default()
        };
        let fleet = Fleet::start(dir.path(), 2, 5, options).await.unwrap();

        // One command on board 1, by hand through its pty.
        let link = fleet.link(1);
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut host = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(link)
                .unwrap();
            host.write_all(b"AT+CGSN\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while !got.ends_with(b"OK\r\n") {
                let n = host.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        })
        .await
        .unwrap();
        assert!(answer.ends_with(b"OK\r\n"));

        // Logged once the paced reply is over, which may be just after the
        // host has read it.
        let mut costs = Vec::new();
        for _ in 0..100 {
            let (answer, next) = handle(&fleet, "costs").await;
            assert_eq!(next, Next::Continue);
            let Answer::Costs(all) = answer else {
                panic!("{answer:?}")
            };
            costs = all;
            if !costs[1].is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(costs[0].is_empty());
        let one = costs[1][0];
        assert_eq!(one.delay_us, 5_000, "AT+CGSN is a 5 ms query");
        // Every byte of the reply at 10 bits a byte, 115200 baud.
        let bytes = answer.len() as u64;
        assert_eq!(one.wire_out_us, bytes * 10 * 1_000_000 / 115_200);
        // Answered no sooner than the modelled time after it was received.
        assert!(
            one.answered_us >= one.received_us + 5_000 + one.wire_out_us - 1,
            "{one:?}"
        );
        // Taken: reported once.
        assert_eq!(
            handle(&fleet, "costs").await.0,
            Answer::Costs(vec![vec![], vec![]])
        );

        let sessions = |answer: Answer| match answer {
            Answer::Stats(boards) => boards.iter().map(|b| b.sessions).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let (stats, _) = handle(&fleet, "stats").await;
        let Answer::Stats(boards) = &stats else {
            panic!("{stats:?}")
        };
        assert_eq!(boards[1].commands, 1);
        assert_eq!(sessions(stats), [1, 1]);

        assert_eq!(
            handle(&fleet, "replug 1").await.0,
            Answer::Replugged(vec![1])
        );
        assert_eq!(sessions(handle(&fleet, "stats").await.0), [1, 2]);
        assert!(fleet.is_plugged(1));

        let Answer::Error(bad) = handle(&fleet, "replug 7").await.0 else {
            panic!("replug 7 answered")
        };
        assert!(bad.contains("no board 7"), "{bad}");
        let Answer::Error(bad) = handle(&fleet, "dance").await.0 else {
            panic!("dance answered")
        };
        assert!(bad.contains("unknown command"), "{bad}");
        assert_eq!(
            handle(&fleet, "quit").await,
            (Answer::Quit(true), Next::Quit)
        );
        fleet.shutdown().await;
    }
}
