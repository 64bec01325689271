//! Time and randomness, from outside the plan: production uses the OS, a
//! test fixes both (a clock that starts at a known instant and follows
//! tokio's clock, a seeded random source) and can then assert an exact
//! record.

use std::sync::Mutex;

use rand::{RngCore, SeedableRng, rngs::StdRng};
use time::OffsetDateTime;
use tokio::time::Instant;

/// Where the plan reads the time.
pub trait Clock: Send + Sync {
    /// Wall-clock UTC: record times, the modem's `+CCLK`, JWT windows.
    fn now_utc(&self) -> OffsetDateTime;
    /// Monotonic: step and run durations. tokio's, so a paused test clock
    /// drives it.
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that reads `start` when made and then advances with tokio's
/// clock: under `#[tokio::test(start_paused = true)]` every time it shows
/// is exact.
#[derive(Debug, Clone, Copy)]
pub struct FollowingClock {
    start: OffsetDateTime,
    at: Instant,
}

impl FollowingClock {
    pub fn starting_at(start: OffsetDateTime) -> Self {
        FollowingClock {
            start,
            at: Instant::now(),
        }
    }
}

impl Clock for FollowingClock {
    fn now_utc(&self) -> OffsetDateTime {
        self.start + self.at.elapsed()
    }
}

/// Where the plan gets random bytes: attestation challenges, certificate
/// serial numbers.
pub trait RandomSource: Send + Sync {
    fn fill(&self, bytes: &mut [u8]);

    fn bytes16(&self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        self.fill(&mut bytes);
        bytes
    }
}

/// The operating system's random source.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&self, bytes: &mut [u8]) {
        rand::rngs::OsRng.fill_bytes(bytes);
    }
}

/// A repeatable random source, for tests. Never for a station: its
/// challenges are predictable.
#[derive(Debug)]
pub struct SeededRandom(Mutex<StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, bytes: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fill_bytes(bytes);
    }
}
