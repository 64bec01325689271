//! `cargo fuzz run cmng`: the `%CMNG` list/read parsers and the other modem
//! answers (`+CGSN`, `%XMODEMUUID`, `+CCLK`) as the client assembles them.
//! The body lives in the library (`modem::fuzz_cmng`) so a proptest runs it
//! on stable in CI.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nrf91_at::modem::fuzz_cmng(data);
});
