//! What the bench measures about the station's process (its own for a
//! bench row, the daemon child's for a soak or crash bench): CPU time from
//! `getrusage`, resident memory, descriptors and threads from `/proc`,
//! sampled on a thread whose own CPU time is subtracted where it counts.

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

/// User plus system CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_THREAD)
}

/// User plus system CPU time of every thread of this process so far.
pub fn process_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_SELF)
}

/// The process a reading is of: this one (a bench row's station runs
/// here) or a child (the daemon of a soak or crash bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    This,
    Pid(u32),
}

impl Watched {
    fn proc_dir(self) -> String {
        match self {
            Watched::This => "/proc/self".into(),
            Watched::Pid(pid) => format!("/proc/{pid}"),
        }
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`), or a
    /// plain count (`Threads`); 0 once the process is gone.
    fn status_field(self, field: &str) -> u64 {
        std::fs::read_to_string(format!("{}/status", self.proc_dir()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Resident set size in KiB (`VmRSS`).
    pub fn rss_kib(self) -> u64 {
        self.status_field("VmRSS")
    }

    /// The largest resident set size the process has had, in KiB
    /// (`VmHWM`, the kernel's own high-water mark: nothing between two
    /// samples is missed).
    pub fn peak_rss_kib(self) -> u64 {
        self.status_field("VmHWM")
    }

    /// Anonymous resident memory in KiB (`RssAnon`): the heap and the
    /// thread stacks, without the executable's pages. A leak shows here.
    pub fn anon_kib(self) -> u64 {
        self.status_field("RssAnon")
    }

    pub fn threads(self) -> u64 {
        self.status_field("Threads")
    }

    /// Open file descriptors (for this process, not counting the one used
    /// to list them).
    pub fn open_fds(self) -> usize {
        let count = std::fs::read_dir(format!("{}/fd", self.proc_dir()))
            .map(|dir| dir.count())
            .unwrap_or(0);
        match self {
            Watched::This => count.saturating_sub(1),
            Watched::Pid(_) => count,
        }
    }
}

/// Resident set size of this process, in KiB (`VmRSS`; 0 if unreadable).
pub fn rss_kib() -> u64 {
    Watched::This.rss_kib()
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    Watched::This.open_fds()
}

/// User plus system CPU time of this process's children that have been
/// waited for (a daemon child's whole life, once it has exited).
pub fn children_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_CHILDREN)
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
    /// See [`Watched::anon_kib`].
    pub anon_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

impl Sample {
    fn now(start: Instant, watched: Watched) -> Sample {
        Sample {
            at: start.elapsed(),
            rss_kib: watched.rss_kib(),
            anon_kib: watched.anon_kib(),
            fds: watched.open_fds(),
            threads: watched.threads(),
        }
    }
}

/// Samples memory, descriptors and threads every `every` on its own thread.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<(Vec<Sample>, Duration)>,
}

impl Sampler {
    pub fn start(every: Duration, watched: Watched) -> Sampler {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                samples.push(Sample::now(start, watched));
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            // Take a last sample so short rows still see their end state.
            samples.push(Sample::now(start, watched));
            (samples, thread_cpu())
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
        let (samples, _cpu) = Sampler::start(Duration::from_millis(1), Watched::This).finish();
        assert!(samples.len() >= 2);
        assert!(samples.iter().all(|s| s.rss_kib > 0 && s.anon_kib > 0));
        assert!(
            samples.iter().all(|s| s.threads >= 2),
            "the sampler is a thread"
        );
        let me = Watched::Pid(std::process::id());
        assert!(me.rss_kib() > 0 && me.open_fds() >= 3);
        assert_eq!(Watched::Pid(u32::MAX).rss_kib(), 0, "no such process");
    }
}
