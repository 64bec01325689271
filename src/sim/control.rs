//! The control protocol of `nrf-provd simulate --control`: one command a
//! line in, one JSON object a line out. It lets another process (the
//! `bench` command) replug boards and read counters without sharing memory,
//! so the simulator's CPU time is never counted as the station's.
//!
//! | command        | answer                                                         |
//! |----------------|----------------------------------------------------------------|
//! | `replug`       | `{"replugged":[0,1,…]}`: every board pulled and plugged back   |
//! | `replug I J …` | the same for boards I, J, …                                    |
//! | `stats`        | `{"stats":[{"commands":…,"keygen_tokens":…,…},…]}` per board   |
//! | `costs`        | `{"costs":[[[received_us,delay_us,wire_in_us,wire_out_us,answered_us],…],…]}` per board, taken (each cost is reported once) |
//! | `quit`         | `{"quit":true}`, then the simulator exits                      |
//!
//! Anything else is answered `{"error":"…"}`. `received_us` (command line
//! complete) and `answered_us` (reply written and paced) are Unix times in
//! microseconds; the other fields are durations in microseconds.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Fleet;

/// What the caller should do after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Continue,
    Quit,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Handle one control line; returns the JSON answer (one line, no newline).
pub async fn handle(fleet: &Fleet, line: &str) -> (String, Next) {
    let mut words = line.split_whitespace();
    let answer = match words.next() {
        Some("replug") => replug(fleet, words.collect()).await,
        Some("stats") => {
            json!({ "stats": (0..fleet.len()).map(|i| stats(fleet, i)).collect::<Vec<_>>() })
        }
        Some("costs") => {
            let all: Vec<Vec<[u64; 5]>> = (0..fleet.len())
                .map(|i| {
                    fleet
                        .take_costs(i)
                        .iter()
                        .map(|c| {
                            let unix = |t: std::time::SystemTime| {
                                micros(t.duration_since(UNIX_EPOCH).unwrap_or_default())
                            };
                            [
                                unix(c.received),
                                micros(c.delay),
                                micros(c.wire_in),
                                micros(c.wire_out),
                                unix(c.answered),
                            ]
                        })
                        .collect()
                })
                .collect();
            json!({ "costs": all })
        }
        Some("quit") => return (json!({ "quit": true }).to_string(), Next::Quit),
        Some(other) => json!({ "error": format!("unknown command {other:?}") }),
        None => json!({ "error": "empty command" }),
    };
    (answer.to_string(), Next::Continue)
}

fn stats(fleet: &Fleet, i: usize) -> Value {
    let s = fleet.stats(i);
    json!({
        "commands": s.commands,
        "attest_tokens": s.attest_tokens,
        "keygen_tokens": s.keygen_tokens,
        "jwts": s.jwts,
        "cmng_writes": s.cmng_writes,
        "sessions": s.sessions,
        "modelled_busy_us": micros(s.modelled_busy),
    })
}

async fn replug(fleet: &Fleet, which: Vec<&str>) -> Value {
    let indices: Vec<usize> = if which.is_empty() {
        (0..fleet.len()).collect()
    } else {
        let mut indices = Vec::with_capacity(which.len());
        for word in which {
            match word.parse::<usize>() {
                Ok(i) if i < fleet.len() => indices.push(i),
                _ => {
                    return json!({
                        "error": format!("no board {word:?}: the fleet has {}", fleet.len())
                    });
                }
            }
        }
        indices
    };
    // Pull all first, then plug all back: like an operator swapping a tray.
    for &i in &indices {
        fleet.unplug(i).await;
    }
    for &i in &indices {
        if let Err(e) = fleet.replug(i).await {
            return json!({ "error": format!("replug {i}: {e}") });
        }
    }
    json!({ "replugged": indices })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Latency, SimOptions};

    fn parse(answer: &str) -> Value {
        serde_json::from_str(answer).unwrap()
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
        let mut costs = json!(null);
        for _ in 0..100 {
            let (answer, next) = handle(&fleet, "costs").await;
            assert_eq!(next, Next::Continue);
            costs = parse(&answer);
            if costs["costs"][1] != json!([]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(costs["costs"][0], json!([]));
        let one = &costs["costs"][1][0];
        assert_eq!(one[1], json!(5_000), "AT+CGSN is a 5 ms query");
        // Every byte of the reply at 10 bits a byte, 115200 baud.
        let bytes = answer.len() as u64;
        assert_eq!(one[3], json!(bytes * 10 * 1_000_000 / 115_200));
        // Answered no sooner than the modelled time after it was received.
        let (received, answered) = (one[0].as_u64().unwrap(), one[4].as_u64().unwrap());
        assert!(
            answered >= received + 5_000 + one[3].as_u64().unwrap() - 1,
            "{one}"
        );
        // Taken: reported once.
        assert_eq!(
            parse(&handle(&fleet, "costs").await.0)["costs"][1],
            json!([])
        );

        let stats = parse(&handle(&fleet, "stats").await.0);
        assert_eq!(stats["stats"][1]["commands"], json!(1));
        assert_eq!(stats["stats"][1]["sessions"], json!(1));

        let replugged = parse(&handle(&fleet, "replug 1").await.0);
        assert_eq!(replugged, json!({ "replugged": [1] }));
        let stats = parse(&handle(&fleet, "stats").await.0);
        assert_eq!(stats["stats"][0]["sessions"], json!(1));
        assert_eq!(stats["stats"][1]["sessions"], json!(2));
        assert!(fleet.is_plugged(1));

        let bad = parse(&handle(&fleet, "replug 7").await.0);
        assert!(bad["error"].as_str().unwrap().contains("no board"));
        let bad = parse(&handle(&fleet, "dance").await.0);
        assert!(bad["error"].as_str().unwrap().contains("unknown command"));
        assert_eq!(handle(&fleet, "quit").await.1, Next::Quit);
        fleet.shutdown().await;
    }
}
