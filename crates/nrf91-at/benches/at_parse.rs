//! Parse throughput: bytes → LineCodec → Exchange (framing + grammar +
//! assembly) over a realistic mix of responses and notifications.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nrf91_at::at::Dialect;
use nrf91_at::at::client::{Exchange, Step};
use nrf91_at::at::codec::LineCodec;
use nrf91_at::at::{Command, Response};
use nrf91_at::modem::{AttestToken, CredentialType, Imei, ListCredentials, ReadCredential};
use tokio_util::codec::Decoder;

/// One round of traffic: (command, bytes the modem sends back).
fn traffic() -> Vec<(&'static str, Vec<u8>)> {
    let token = format!("{}.{}", "A".repeat(180), "B".repeat(120));
    let pem: String = (0..50).map(|_| format!("{}\r\n", "M".repeat(64))).collect();
    let sha = "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1";
    vec![
        ("AT+CGSN=1", b"+CGSN: \"352656100367872\"\r\nOK\r\n".to_vec()),
        (
            "AT%ATTESTTOKEN",
            format!("%ATTESTTOKEN: \"{token}\"\r\n+CEREG: 5,\"4400\",\"0001\",7\r\nOK\r\n").into_bytes(),
        ),
        (
            "AT%CMNG=1",
            (0..8)
                .map(|i| format!("%CMNG: {i},0,\"{sha}\"\r\n"))
                .chain(std::iter::once("OK\r\n".to_string()))
                .collect::<String>()
                .into_bytes(),
        ),
        (
            "AT%CMNG=2,1,0",
            format!("%CMNG: 1,0,\"{sha}\",\"-----BEGIN CERTIFICATE-----\r\n{pem}-----END CERTIFICATE-----\r\n\"\r\nOK\r\n").into_bytes(),
        ),
    ]
}

fn run(traffic: &[(&str, Vec<u8>)], stream: &[u8]) -> usize {
    let mut codec = LineCodec::new(16 * 1024);
    let mut buf = BytesMut::from(stream);
    let mut done = 0;
    let mut i = 0;
    let mut ex = Exchange::new(traffic[0].0, Dialect::RAW);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Step::Done(r) = ex.feed(frame) {
            black_box(r.ok());
            done += 1;
            i = (i + 1) % traffic.len();
            ex = Exchange::new(traffic[i].0, Dialect::RAW);
        }
    }
    done
}

const ATTEST: AttestToken = AttestToken { challenge: None };
const LIST: ListCredentials = ListCredentials { sec_tag: None };
const READ: ReadCredential = ReadCredential {
    sec_tag: 1,
    kind: CredentialType::RootCa,
};

/// The text of the `i`th command of [`traffic`], as the station builds it.
fn command_text(i: usize) -> String {
    match i {
        0 => Imei::Quoted.text(),
        1 => ATTEST.text(),
        2 => LIST.text(),
        _ => READ.text(),
    }
}

/// The answer of the `i`th command parsed, as the station parses it.
fn parse_answer(i: usize, r: &Response) -> bool {
    match i {
        0 => black_box(Imei::Quoted.parse(r)).is_ok(),
        1 => black_box(ATTEST.parse(r)).is_ok(),
        2 => black_box(LIST.parse(r)).is_ok(),
        _ => black_box(READ.parse(r)).is_ok(),
    }
}

/// Whole exchanges as the station makes them: each command's text built,
/// its response assembled from the bytes, its answer parsed. Returns the
/// number of answers that parsed.
fn run_typed(commands: usize, stream: &[u8]) -> usize {
    let mut codec = LineCodec::new(16 * 1024);
    let mut buf = BytesMut::from(stream);
    let mut parsed = 0;
    let mut i = 0;
    let mut ex = Exchange::new(&command_text(i), Dialect::RAW);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Step::Done(r) = ex.feed(frame) {
            if r.is_ok_and(|r| parse_answer(i, &r)) {
                parsed += 1;
            }
            i = (i + 1) % commands;
            ex = Exchange::new(&command_text(i), Dialect::RAW);
        }
    }
    parsed
}

fn bench(c: &mut Criterion) {
    let traffic = traffic();
    let round: Vec<u8> = traffic.iter().flat_map(|(_, b)| b.clone()).collect();
    let stream: Vec<u8> = round.repeat(100);
    let line_count = stream.iter().filter(|&&b| b == b'\n').count() as u64;
    eprintln!(
        "at_parse: {} bytes, {} physical lines per iteration",
        stream.len(),
        line_count
    );
    let mut g = c.benchmark_group("at_parse");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("bytes", |b| b.iter(|| run(&traffic, black_box(&stream))));
    g.throughput(Throughput::Elements(line_count));
    g.bench_function("lines", |b| b.iter(|| run(&traffic, black_box(&stream))));
    let exchanges = (traffic.len() * 100) as u64;
    assert_eq!(run_typed(traffic.len(), &stream), exchanges as usize);
    g.throughput(Throughput::Elements(exchanges));
    g.bench_function("exchanges", |b| {
        b.iter(|| run_typed(traffic.len(), black_box(&stream)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
