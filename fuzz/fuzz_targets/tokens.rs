//! `cargo +nightly fuzz run tokens`: every token decoder and the verifier
//! over arbitrary bytes. The body lives in the library
//! (`token::fuzz_decode`) so a proptest runs it on stable in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nrf91_token::fuzz_decode(data);
});
