//! When a session's modelled delays and paced bytes end.
//!
//! Tokio's timers round every deadline up to its next millisecond tick and
//! wake a little after it: about 1 ms late per command, some 20 ms per
//! provisioning cycle of ~20 commands, all of it charged to the host by
//! `nrf-provd bench` (its physical limit is the modelled time). A board on a
//! pty therefore sleeps on a timerfd of its own, which the kernel fires
//! within microseconds of the deadline. Boards in memory keep tokio's
//! timers: their tests run under tokio's paused clock, which a timerfd
//! would not follow.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Which clock a session's delays and pacing sleep on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timers {
    /// Tokio's (follows a paused clock; ~1 ms granularity).
    #[default]
    Tokio,
    /// A timerfd per session (real time, microseconds); tokio's if the
    /// kernel will not give one.
    Kernel,
}

/// A session's sleeper.
pub(crate) enum Sleeper {
    Tokio,
    Kernel(AsyncFd<Fd>),
}

/// The timerfd, registered by its raw descriptor.
pub(crate) struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Sleeper {
    pub fn new(timers: Timers) -> Sleeper {
        match timers {
            Timers::Tokio => Sleeper::Tokio,
            Timers::Kernel => Sleeper::kernel().unwrap_or_else(|e| {
                tracing::debug!(error = %e, "no timerfd: pacing on tokio's timers");
                Sleeper::Tokio
            }),
        }
    }

    fn kernel() -> io::Result<Sleeper> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: `Fd` owns the timerfd, nothing else closes it, and
        // `as_raw_fd` returns that one descriptor for as long as the
        // `AsyncFd` holds it (tokio's condition for registering a raw fd).
        let fd = unsafe { AsyncFd::register_with_interest(Fd(timer), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Sleeper::Kernel(fd))
    }

    /// Sleep until `deadline` (at once if it has passed).
    pub async fn until(&mut self, deadline: Instant) -> io::Result<()> {
        let fd = match self {
            Sleeper::Tokio => {
                tokio::time::sleep_until(deadline).await;
                return Ok(());
            }
            Sleeper::Kernel(fd) => fd,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        fd.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(left)),
            TimerSetTimeFlags::empty(),
        )?;
        loop {
            let mut ready = fd.readable().await?;
            // The expiry count (8 bytes); none yet is a stale readiness.
            match ready.try_io(|fd| {
                nix::unistd::read(fd.as_raw_fd(), &mut [0u8; 8])
                    .map(drop)
                    .map_err(io::Error::from)
            }) {
                Ok(read) => return read,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sleep for `duration`.
    #[cfg(test)]
    pub async fn sleep(&mut self, duration: std::time::Duration) -> io::Result<()> {
        self.until(Instant::now() + duration).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_kernel_timer_wakes_at_its_deadline_not_before() {
        let mut sleeper = Sleeper::new(Timers::Kernel);
        assert!(matches!(sleeper, Sleeper::Kernel(_)), "a timerfd on Linux");
        for ms in [3u64, 1, 7] {
            let start = Instant::now();
            sleeper
                .sleep(Duration::from_millis(ms))
                .await
                .expect("slept");
            assert!(start.elapsed() >= Duration::from_millis(ms), "{ms} ms");
        }
        // A deadline already passed returns at once.
        sleeper
            .until(Instant::now() - Duration::from_millis(1))
            .await
            .expect("no sleep");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_timers_follow_a_paused_clock() {
        let mut sleeper = Sleeper::new(Timers::Tokio);
        let start = Instant::now();
        sleeper
            .sleep(Duration::from_secs(3600))
            .await
            .expect("slept");
        assert_eq!(start.elapsed(), Duration::from_secs(3600));
    }
}
