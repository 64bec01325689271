//! What the kernel says about a process and the machine: the one reader of
//! `/proc` and `getrusage`, for the daemon's `/metrics` (its own process)
//! and the bench (its own process, or the daemon it started).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage};
use nix::sys::time::TimeVal;

/// The process a reading is of: this one, or another by its id (a child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    This,
    Pid(u32),
}

impl Process {
    fn proc_dir(self) -> String {
        match self {
            Process::This => "/proc/self".into(),
            Process::Pid(pid) => format!("/proc/{pid}"),
        }
    }

    /// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`), or a
    /// plain count (`Threads`); 0 once the process is gone.
    fn status_field(self, field: &str) -> u64 {
        std::fs::read_to_string(format!("{}/status", self.proc_dir()))
            .map_or(0, |status| status_value(&status, field))
    }

    /// Memory and threads in one read of `/proc/<pid>/status` (what a
    /// sampler wants each time; each field alone is a read of its own).
    pub fn status(self) -> Status {
        let text =
            std::fs::read_to_string(format!("{}/status", self.proc_dir())).unwrap_or_default();
        let field = |name: &str| status_value(&text, name);
        Status {
            rss_kib: field("VmRSS"),
            anon_kib: field("RssAnon"),
            threads: field("Threads"),
        }
    }

    /// Start the kernel's high-water mark of resident memory (`VmHWM`,
    /// [`Process::peak_rss_kib`]) again from what is resident now, so
    /// that it covers only what follows; false if the kernel refused.
    pub fn reset_peak_rss(self) -> bool {
        std::fs::write(format!("{}/clear_refs", self.proc_dir()), "5").is_ok()
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
            Process::This => count.saturating_sub(1),
            Process::Pid(_) => count,
        }
    }

    /// When the process started (Unix seconds): the kernel's boot time plus
    /// the process's start in clock ticks since boot.
    pub fn start_time(self) -> Option<i64> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.proc_dir())).ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        start_seconds(&stat, &boot, ticks)
    }
}

/// Memory and threads of a process ([`Process::status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `RssAnon`, KiB.
    pub anon_kib: u64,
    pub threads: u64,
}

/// A field of a `/proc/<pid>/status` text: its number (KiB for sizes),
/// 0 when absent.
fn status_value(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `starttime` is field 22 of `/proc/<pid>/stat`; the command name
/// (field 2, in parentheses) may hold spaces, so count after its `)`.
fn start_seconds(stat: &str, proc_stat: &str, ticks_per_second: i64) -> Option<i64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start_ticks: i64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    (ticks_per_second > 0).then(|| boot + start_ticks / ticks_per_second)
}

/// When this process started (Unix seconds), read once; if `/proc`
/// cannot say, when it was first asked.
pub fn started() -> i64 {
    static STARTED: OnceLock<i64> = OnceLock::new();
    *STARTED.get_or_init(|| {
        Process::This
            .start_time()
            .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp())
    })
}

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
pub fn cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_SELF)
}

/// User plus system CPU time of the calling thread so far.
pub fn thread_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_THREAD)
}

/// User plus system CPU time of this process's children that have been
/// waited for (a daemon child's whole life, once it has exited).
pub fn children_cpu() -> Duration {
    cpu_of(UsageWho::RUSAGE_CHILDREN)
}

/// CPU time of this process's threads named one of `names` (as the
/// threads named themselves; the kernel keeps 15 bytes), from each
/// thread's `schedstat` (nanoseconds, where `getrusage` counts ticks for
/// another thread). A thread that has exited counts no more.
pub fn threads_cpu(names: &[&str]) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| names.contains(&comm.trim_end()))
        })
        .filter_map(|task| task_cpu(&task.path()))
        .sum()
}

/// CPU time of this process's main thread: the one `main` runs on, which
/// the runtime's `block_on` keeps for the command's own future (the
/// station's tasks run on the worker threads).
pub fn main_thread_cpu() -> Duration {
    let main = format!("/proc/self/task/{}", std::process::id());
    task_cpu(Path::new(&main)).unwrap_or_default()
}

/// A thread's CPU time from its `schedstat` (nanoseconds on the CPU).
fn task_cpu(task: &Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let nanos = stat.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// This process's limit on open descriptors (the soft one).
pub fn max_fds() -> u64 {
    getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _hard)| soft)
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

/// The machine's processor model (`/proc/cpuinfo`).
pub fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, m)| m.trim().to_string())
}

/// The running kernel's release.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_boot_time_plus_start_ticks() {
        let stat = "4242 (nrf provd) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 4 0 12345 1000000 300";
        assert_eq!(
            start_seconds(stat, "cpu 1 2 3\nbtime 1700000000\n", 100),
            Some(1_700_000_123)
        );
        assert_eq!(start_seconds("garbage", "btime 1", 100), None);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let this = Process::This.start_time().unwrap_or(0);
        assert!(
            this <= now && this > now - 3600,
            "this test process started {this}, now {now}"
        );
    }

    #[test]
    fn the_process_reads_itself() {
        assert!(Process::This.rss_kib() > 0);
        assert!(Process::This.open_fds() >= 3);
        assert!(Process::This.threads() >= 1);
        // Work until the counter has moved by 5 ms of CPU; a counter that
        // does not follow the work never gets there.
        let before = cpu();
        let mut x = 0u64;
        let mut rounds = 0u64;
        while cpu().saturating_sub(before) < Duration::from_millis(5) {
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
        let me = Process::Pid(std::process::id());
        assert!(me.rss_kib() > 0 && me.open_fds() >= 3);
        assert_eq!(Process::Pid(u32::MAX).rss_kib(), 0, "no such process");
        assert!(max_fds() > 0);
    }

    /// The bench subtracts the main thread's CPU as its own: it must be the
    /// main thread's, not the calling thread's (a test runs on another).
    #[test]
    fn the_main_thread_s_cpu_is_not_the_calling_thread_s() {
        let main_before = main_thread_cpu();
        let mine_before = thread_cpu();
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let mine = thread_cpu().saturating_sub(mine_before);
        let main = main_thread_cpu().saturating_sub(main_before);
        assert!(
            mine >= Duration::from_millis(100),
            "this thread ran {mine:?}"
        );
        assert!(
            main < mine / 2,
            "main thread {main:?} while this one ran {mine:?}"
        );
        assert!(main_before > Duration::ZERO, "the main thread has run");
    }

    #[test]
    fn one_read_of_status_gives_memory_and_threads_and_the_peak_can_start_again() {
        let text =
            "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nThreads:\t7\n";
        assert_eq!(status_value(text, "VmRSS"), 1024);
        assert_eq!(status_value(text, "RssAnon"), 512);
        assert_eq!(status_value(text, "Threads"), 7);
        assert_eq!(status_value(text, "VmSwap"), 0, "absent");
        let status = Process::This.status();
        assert!(status.rss_kib > 0 && status.anon_kib > 0 && status.threads >= 1);
        // A 64 MiB buffer touched and freed raises the peak; after the
        // reset the peak is what is resident now again.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        drop(big);
        let raised = Process::This.peak_rss_kib();
        assert!(Process::This.reset_peak_rss(), "clear_refs refused");
        assert!(Process::This.peak_rss_kib() < raised);
    }
}
