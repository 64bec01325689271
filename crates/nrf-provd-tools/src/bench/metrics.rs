//! What the bench measures about the station's process (its own for a
//! bench row, the daemon child's for a soak or crash bench): resident
//! memory, descriptors and threads ([`crate::process`]), sampled on a
//! thread whose own CPU time is subtracted where it counts.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{self, Process};

/// One reading of the process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Since the sampler started.
    pub at: Duration,
    pub rss_kib: u64,
    /// See [`Process::anon_kib`].
    pub anon_kib: u64,
    pub fds: usize,
    pub threads: u64,
}

impl Sample {
    fn now(start: Instant, watched: Process) -> Sample {
        let status = watched.status();
        Sample {
            at: start.elapsed(),
            rss_kib: status.rss_kib,
            anon_kib: status.anon_kib,
            fds: watched.open_fds(),
            threads: status.threads,
        }
    }
}

/// Samples memory, descriptors and threads every `every` on its own thread.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<(Vec<Sample>, Duration)>,
}

impl Sampler {
    pub fn start(every: Duration, watched: Process) -> Sampler {
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
            (samples, process::thread_cpu())
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
    fn the_sampler_reads_the_process_until_stopped() {
        let (samples, _cpu) = Sampler::start(Duration::from_millis(1), Process::This).finish();
        assert!(samples.len() >= 2);
        assert!(samples.iter().all(|s| s.rss_kib > 0 && s.anon_kib > 0));
        assert!(
            samples.iter().all(|s| s.threads >= 2),
            "the sampler is a thread"
        );
    }
}
