//! Told, not polled: the directories the port patterns name are watched
//! with inotify, so a port that appears (udev making `/dev/ttyACM0` or a
//! `/dev/serial/by-id` link, a simulator's pty link) is taken at once and
//! an idle station does not read its directories several times a second.
//! A pattern whose directory cannot be watched (it does not exist yet, or
//! has wildcards) keeps the scan every `rescan_interval`; a watched station
//! still scans every [`WATCHED_RESCAN`], in case an event was lost.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::debug;

/// The scan of a station whose every pattern is watched: a safety net.
pub const WATCHED_RESCAN: Duration = Duration::from_secs(10);

/// How long after a first change the scan waits for the rest of a burst:
/// short beside the 400 ms a new port's line takes to settle.
const COALESCE: Duration = Duration::from_millis(50);

/// Wildcards of a port pattern (as `glob` reads them).
const WILDCARDS: &[char] = &['*', '?', '['];

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify instance on the patterns' directories.
pub struct PortWatch {
    fd: AsyncFd<Fd>,
    watched: BTreeSet<PathBuf>,
}

impl PortWatch {
    /// None when inotify is not available (the station then polls).
    pub fn new() -> Option<PortWatch> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| debug!(%e, "inotify unavailable: ports are polled"))
            .ok()?;
        // SAFETY: `Fd` owns the inotify descriptor, nothing else closes it,
        // and `as_raw_fd` returns that one descriptor for as long as the
        // `AsyncFd` holds it (tokio's condition for registering a raw fd).
        let fd = unsafe { AsyncFd::register_with_interest(Fd(inotify), Interest::READABLE) }
            .map_err(|e| debug!(%e, "inotify unavailable: ports are polled"))
            .ok()?;
        Some(PortWatch {
            fd,
            watched: BTreeSet::new(),
        })
    }

    /// Watch the directory of every pattern not watched yet; true when all
    /// of them are (then a scan every [`WATCHED_RESCAN`] is enough).
    /// Patterns change on reload; a directory no longer named stays
    /// watched, which costs only a scan when something changes in it.
    pub fn follow(&mut self, patterns: &[String]) -> bool {
        let mut all = true;
        for pattern in patterns {
            let Some(dir) = directory_of(pattern) else {
                all = false;
                continue;
            };
            if self.watched.contains(&dir) {
                continue;
            }
            let events = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_ONLYDIR;
            match self.fd.get_ref().0.add_watch(dir.as_path(), events) {
                Ok(_) => {
                    self.watched.insert(dir);
                }
                Err(e) => {
                    debug!(dir = %dir.display(), %e, "cannot watch; polled instead");
                    all = false;
                }
            }
        }
        all
    }

    /// Until something changed in a watched directory. Events go on being
    /// read for [`COALESCE`] after the first, so a burst of them (a fixture
    /// of 128 boards replugged at once: 256 events) makes one scan, not one
    /// per board.
    pub async fn changed(&self) {
        loop {
            let Ok(mut ready) = self.fd.readable().await else {
                // The descriptor is broken: never wake (the scan interval
                // still does).
                return std::future::pending().await;
            };
            match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(_)) => {
                    tokio::time::sleep(COALESCE).await;
                    while self.fd.get_ref().0.read_events().is_ok() {}
                    return;
                }
                Ok(Err(e)) => {
                    // Returning would have the scanner ask again at once and,
                    // should the error last, spin; the scan interval wakes it.
                    debug!(%e, "inotify read failed; waiting for the next scan");
                    return std::future::pending().await;
                }
                Err(_would_block) => continue,
            }
        }
    }
}

/// The directory a pattern's ports are in, when it has no wildcards.
fn directory_of(pattern: &str) -> Option<PathBuf> {
    let dir = Path::new(pattern).parent()?;
    let text = dir.to_str()?;
    (!text.is_empty() && !text.contains(WILDCARDS)).then(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_of_a_pattern_is_watched_only_without_wildcards() {
        assert_eq!(
            directory_of("/dev/serial/by-id/*-if00"),
            Some(PathBuf::from("/dev/serial/by-id"))
        );
        assert_eq!(directory_of("/dev/ttyACM0"), Some(PathBuf::from("/dev")));
        assert_eq!(directory_of("/dev/*/ttyACM0"), None);
        assert_eq!(directory_of("ttyACM0"), None);
    }

    #[tokio::test]
    async fn a_missing_directory_is_polled_until_it_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("by-id");
        let patterns = vec![missing.join("*-if00").display().to_string()];
        let mut watch = PortWatch::new().expect("inotify");
        assert!(!watch.follow(&patterns));
        std::fs::create_dir(&missing).expect("mkdir");
        assert!(watch.follow(&patterns));
    }

    #[tokio::test]
    async fn a_link_made_in_a_watched_directory_wakes_the_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut watch = PortWatch::new().expect("inotify");
        assert!(watch.follow(&[dir.path().join("ttySIM*").display().to_string()]));
        std::os::unix::fs::symlink("/dev/null", dir.path().join("ttySIM0")).expect("link");
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the new link is told");
    }
}
