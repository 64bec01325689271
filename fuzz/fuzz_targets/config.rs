//! `cargo fuzz run config`: the station config parser over arbitrary text,
//! no filesystem. The body lives in the library (`config::fuzz_parse`) so a
//! proptest runs it on stable in CI.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nrf_provd_daemon::config::fuzz_parse(data);
});
