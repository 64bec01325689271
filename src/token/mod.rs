//! Attestation tokens: decoding, the COSE signing input, verification.
pub mod cose;
pub mod encode;
