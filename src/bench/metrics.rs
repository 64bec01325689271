//! What the bench measures about its own process (the station side):
//! CPU time from `getrusage`, resident memory and open descriptors from
//! `/proc/self`, sampled on a thread whose own CPU time is subtracted.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::time::TimeVal;

fn timeval(t: TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u64::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

fn cpu_of(who: UsageWho) -> Duration {
    getrusage(who).map_or(Duration::ZERO, |u| {
        timeval(u.user_time()) + timeval(u.system_time())
    })
}

/// User plus system CPU time of every thread of this process so far.
pub fn process_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_SELF)
}

/// Resident set size of this process, in KiB (`VmRSS`; 0 if unreadable).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Heap bytes the allocator has handed out and not had back, in KiB
/// (glibc `mallinfo2`: `uordblks + hblkhd`). Unlike RSS it does not count
/// memory freed but kept by the allocator, so a leak shows here first.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use_kib() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's
    // statistics under its own locks and returns a plain struct by value.
    let info = unsafe { nix::libc::mallinfo2() };
    u64::try_from(info.uordblks.saturating_add(info.hblkhd) / 1024).ok()
}

/// Not available outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use_kib() -> Option<u64> {
    None
}

/// Open file descriptors of this process (not counting the one used to
/// list them).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.count().saturating_sub(1))
        .unwrap_or(0)
}

/// 1-, 5- and 15-minute load averages of the machine.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0));
    [
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
    ]
}

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    pub rss_kib: u64,
    /// See [`heap_in_use_kib`].
    pub heap_kib: Option<u64>,
    pub fds: usize,
}

impl Sample {
    fn now(start: Instant) -> Sample {
        Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(),
            heap_kib: heap_in_use_kib(),
            fds: open_fds(),
        }
    }
}

/// Samples RSS and descriptors every `every` on its own thread.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<(Vec<Sample>, Duration)>,
}

impl Sampler {
    pub fn start(every: Duration) -> Sampler {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                samples.push(Sample::now(start));
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Take a last sample so short rows still see their end state.
            samples.push(Sample::now(start));
            (samples, cpu_of(UsageWho::RUSAGE_THREAD))
        });
        Sampler { stop, thread }
    }

    /// Stop; the samples and the CPU time the sampler itself used.
    pub fn finish(self) -> (Vec<Sample>, Duration) {
        let _ = self.stop.send(());
        self.thread
            .join()
            .unwrap_or_else(|_| (Vec::new(), Duration::ZERO))
    }
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1); `None` if empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_process_reads_itself() {
        assert!(rss_kib() > 0);
        assert!(open_fds() >= 3);
        // Work until the counter has moved by 5 ms of CPU; a counter that
        // does not follow the work never gets there.
        let before = process_cpu();
        let mut x = 0u64;
        let mut rounds = 0u64;
        while process_cpu().saturating_sub(before) < Duration::from_millis(5) {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            rounds += 1;
            assert!(
                rounds < 100_000,
                "process CPU time did not advance with work"
            );
        }
        std::hint::black_box(x);
        let (samples, _cpu) = Sampler::start(Duration::from_millis(1)).finish();
        assert!(samples.len() >= 2);
        assert!(samples.iter().all(|s| s.rss_kib > 0));
    }
}
