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
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The scan of a station whose every pattern is watched: a safety net.
pub const WATCHED_RESCAN: Duration = Duration::from_secs(10);

/// How long after a first change the scan waits for the rest of a burst:
/// short beside the 400 ms a new port's line takes to settle.
const COALESCE: Duration = Duration::from_millis(50);

/// Wildcards of a port pattern (as `glob` reads them).
const WILDCARDS: &[char] = &['*', '?', '['];

/// The first look at a link that could not be opened; each next one
/// waits twice as long, up to the pause.
const LINK_FIRST_LOOK: Duration = Duration::from_millis(5);

/// How [`link_changed`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkWait {
    /// The link was removed, made, or made again (pointing anywhere).
    Changed,
    /// The pause is over and the port is as it was.
    PauseOver,
    Stopped,
}

/// A symlink as it stands: a link removed and made again is another one
/// (its change time), even when it names the same device again (device
/// numbers are reused: a pty's at once, a `ttyACM`'s when the board comes
/// back) and has the same inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    target: PathBuf,
    inode: u64,
    changed: (i64, i64),
}

impl LinkState {
    /// `port` as it stands, if it is a symlink.
    pub fn of(port: &Path) -> Option<LinkState> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(port).ok()?;
        if !meta.file_type().is_symlink() {
            return None;
        }
        Some(LinkState {
            target: std::fs::read_link(port).ok()?,
            inode: meta.ino(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Wait up to `pause` for the link `port` to change from `was`, the link
/// as it stood before an open of it failed (`None`: no link there, or the
/// port is no link): removed, made, or made again.
///
/// A link whose device has gone is being removed or made again for the
/// board's new device (udev with a `by-id` link, the simulator with its
/// pty's), within milliseconds, and one may be made between a failed open
/// and the look after it; the whole pause made such a board start up to a
/// rescan interval after the others (at 256 boards replugged together, a
/// few a round ~180 ms late: the round's last runs, so its wall time, issue
/// 25). Opening the same link again before it changes is what the pause is
/// for: the device number it names may have been given to another board.
/// A device node that cannot be opened yet waits the pause.
pub async fn link_changed(
    stop: &CancellationToken,
    port: &Path,
    was: Option<&LinkState>,
    pause: Duration,
) -> LinkWait {
    let deadline = tokio::time::Instant::now() + pause;
    let mut look = LINK_FIRST_LOOK;
    loop {
        let wake = (tokio::time::Instant::now() + look).min(deadline);
        tokio::select! {
            _ = stop.cancelled() => return LinkWait::Stopped,
            () = tokio::time::sleep_until(wake) => {}
        }
        if LinkState::of(port).as_ref() != was {
            return LinkWait::Changed;
        }
        if wake >= deadline {
            return LinkWait::PauseOver;
        }
        look = look.saturating_mul(2);
    }
}

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

    /// A dangling link, as a pulled board leaves it for a moment, and how
    /// it stands.
    fn dangling(dir: &Path) -> (PathBuf, LinkState) {
        let link = dir.join("ttySIM0");
        std::os::unix::fs::symlink(dir.join("pts-7"), &link).expect("link");
        let was = LinkState::of(&link).expect("a link");
        (link, was)
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_made_again_ends_the_wait_before_the_pause_even_naming_the_same_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let hour = Duration::from_secs(3600);
        let (link, was) = dangling(dir.path());
        let started = tokio::time::Instant::now();
        let waiting = link_changed(&stop, &link, Some(&was), hour);
        let again = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Made again for the board's new device, which got the same
            // number (a pty's is reused at once).
            // A file takes the freed inode should the filesystem reuse it,
            // and a pause past the clock's tick gives the link a new ctime:
            // a link made again is told by either.
            std::fs::remove_file(&link).expect("unlink");
            std::fs::write(dir.path().join("held"), b"").expect("file");
            std::thread::sleep(Duration::from_millis(20));
            std::os::unix::fs::symlink(dir.path().join("pts-7"), &link).expect("link");
        };
        let (waited, ()) = tokio::join!(waiting, again);
        assert_eq!(waited, LinkWait::Changed);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        std::fs::remove_file(&link).expect("unlink");
        assert_eq!(
            link_changed(&stop, &link, Some(&was), hour).await,
            LinkWait::Changed,
            "a removed link has changed"
        );
        // Made between a failed open (no link) and the look after it.
        std::os::unix::fs::symlink(dir.path().join("pts-8"), &link).expect("link");
        assert_eq!(
            link_changed(&stop, &link, None, hour).await,
            LinkWait::Changed,
            "a link made where there was none has changed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_left_as_it_was_waits_the_whole_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = CancellationToken::new();
        let pause = Duration::from_millis(200);
        let (link, was) = dangling(dir.path());
        // Its device coming back under the same link is no change: that
        // number may be another board's now.
        std::fs::write(dir.path().join("pts-7"), b"").expect("device");
        let started = tokio::time::Instant::now();
        assert_eq!(
            link_changed(&stop, &link, Some(&was), pause).await,
            LinkWait::PauseOver
        );
        assert_eq!(started.elapsed(), pause);
        // A port that is no link (a device node that cannot be opened yet)
        // waits the pause too.
        let node = dir.path().join("pts-7");
        assert_eq!(LinkState::of(&node), None);
        let started = tokio::time::Instant::now();
        assert_eq!(
            link_changed(&stop, &node, None, pause).await,
            LinkWait::PauseOver
        );
        assert_eq!(started.elapsed(), pause);
        stop.cancel();
        assert_eq!(
            link_changed(&stop, &link, Some(&was), pause).await,
            LinkWait::Stopped
        );
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
