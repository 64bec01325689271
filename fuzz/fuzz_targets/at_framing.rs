//! Framing + grammar + typed parsers over arbitrary bytes: must never panic.
//! Run: `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run at_framing` (stable) or
//! `cargo +nightly fuzz run at_framing`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    nrf91_at::at::fuzz_framing(data);
});
