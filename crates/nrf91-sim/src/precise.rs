//! A timer to the tens of microseconds, for boards on real links.
//!
//! Tokio's timers fire on whole milliseconds: a deadline is rounded up to
//! the next tick of its wheel. A simulated board that paced its replies with
//! them answered every command up to a millisecond after its modelled time,
//! about 20 ms a provisioning cycle, and `nrf-provd bench` counted that
//! against the host (`sim_overshoot_ms`, issue 25). A timerfd on
//! `CLOCK_MONOTONIC` (the clock of `std::time::Instant`) wakes within the
//! kernel's timer slack, 50 µs by default.
//!
//! Only for real time: under a paused tokio clock virtual time never reaches
//! a timerfd, so boards on in-memory links keep tokio's timers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

pub(crate) struct PreciseTimer(AsyncFd<Fd>);

/// The timerfd, as tokio registers it.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl PreciseTimer {
    pub(crate) fn new() -> io::Result<PreciseTimer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `Fd` owns the timerfd, nothing else closes it, and
        // `as_raw_fd` returns that one descriptor for as long as the
        // `AsyncFd` holds it (tokio's condition for registering a raw fd).
        let fd = unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }?;
        Ok(PreciseTimer(fd))
    }

    /// Return at `deadline` (at once if it has passed).
    pub(crate) async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            self.0.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(left)),
                TimerSetTimeFlags::empty(),
            )?;
            let mut ready = self.0.readable().await?;
            // Reading takes the expiry; `WouldBlock` (not yet) clears the
            // readiness by itself. Either way the loop checks the clock, so
            // a stale expiry from an abandoned wait never ends this one early.
            if let Ok(read) = ready.try_io(|fd| {
                let mut expirations = [0u8; 8];
                nix::unistd::read(fd.as_raw_fd(), &mut expirations).map_err(io::Error::from)
            }) {
                read?;
                ready.clear_ready();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // How precise the wake-ups are is measured by `nrf-provd bench`
    // (`sim_overshoot_ms`), not here: these only check it is never early.

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        let mut timer = PreciseTimer::new().expect("timerfd");
        for i in 0..20u64 {
            // Deadlines between tokio's ticks.
            let deadline = Instant::now() + Duration::from_micros(300 + 37 * i);
            timer.sleep_until(deadline).await.expect("sleep");
            assert!(Instant::now() >= deadline);
        }
        // A passed deadline returns at once.
        timer
            .sleep_until(Instant::now() - Duration::from_millis(1))
            .await
            .expect("past deadline");
    }

    #[tokio::test]
    async fn an_abandoned_wait_does_not_end_the_next_one_early() {
        let mut timer = PreciseTimer::new().expect("timerfd");
        // One wait abandoned long before its deadline, another abandoned
        // just before its 1 ms one, whose expiry is then left unread.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(5),
            timer.sleep_until(Instant::now() + Duration::from_secs(3600)),
        );
        assert!(abandoned.await.is_err());
        let _ = tokio::time::timeout(
            Duration::ZERO,
            timer.sleep_until(Instant::now() + Duration::from_millis(1)),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let deadline = Instant::now() + Duration::from_millis(20);
        timer.sleep_until(deadline).await.expect("sleep");
        assert!(Instant::now() >= deadline);
    }
}
