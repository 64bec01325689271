//! Pseudo-terminal pairs: the simulated board owns the master side; the slave
//! is exposed as a symlink (like `/dev/serial/by-id/...`) for the host.
//!
//! The slave is put in raw mode right away (no echo, no CR/LF translation)
//! so the board never reads its own output back. The board keeps a slave fd
//! open too, so the master does not see EIO while no host has the port
//! open. Dropping a [`PtyPort`] closes both fds (a host reading the slave
//! gets EOF or EIO, as on a pulled USB board) and removes the symlink.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::pty::{OpenptyResult, openpty};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// TIOCINQ: bytes in a tty's input queue that nobody has read yet.
nix::ioctl_read_bad!(tiocinq, nix::libc::TIOCINQ, nix::libc::c_int);

/// The board's end of one pseudo-terminal pair, plus the host-facing link.
pub struct PtyPort {
    master: Option<AsyncFd<File>>,
    slave: Option<OwnedFd>,
    slave_path: PathBuf,
    link: PathBuf,
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

fn set_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(nix_io)?;
    Ok(())
}

impl PtyPort {
    /// Create a pair and point `link` at its slave (replacing a stale
    /// symlink). Must run inside a Tokio runtime.
    pub fn open(link: &Path) -> io::Result<Self> {
        let OpenptyResult { master, slave } = openpty(None, None).map_err(nix_io)?;
        // Children spawned by the host process must not keep the pair alive.
        set_cloexec(&master)?;
        set_cloexec(&slave)?;
        let mut termios = tcgetattr(slave.as_fd()).map_err(nix_io)?;
        cfmakeraw(&mut termios);
        tcsetattr(slave.as_fd(), SetArg::TCSANOW, &termios).map_err(nix_io)?;
        let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).map_err(nix_io)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(nix_io)?;
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd()))?;
        replace_symlink(&slave_path, link)?;
        // SAFETY: the `File` owns the master fd; nothing else closes or
        // replaces that fd while the `AsyncFd` holds it.
        let master = unsafe { AsyncFd::register(File::from(master))? };
        Ok(Self {
            master: Some(master),
            slave: Some(slave),
            slave_path,
            link: link.to_owned(),
        })
    }

    /// The `/dev/pts/N` path of the slave.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// The host-facing symlink.
    pub fn link(&self) -> &Path {
        &self.link
    }

    fn master(&self) -> io::Result<&AsyncFd<File>> {
        self.master
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "pty closed"))
    }
}

/// What the host wrote; waits without blocking the runtime.
impl AsyncRead for PtyPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let master = self.master()?;
        loop {
            let mut guard = ready!(master.poll_read_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().read(buf.initialize_unfilled())) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Bytes for the host; waits while the pty buffer is full.
impl AsyncWrite for PtyPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let master = self.master()?;
        loop {
            let mut guard = ready!(master.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(bytes)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    /// A pty has no user-space buffer: written is handed over.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The board hangs up by dropping the port.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl PtyPort {
    /// Bytes written for the host that it has not read yet.
    pub fn unread_by_host(&self) -> io::Result<usize> {
        let slave = self
            .slave
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "pty closed"))?;
        let mut count: nix::libc::c_int = 0;
        // SAFETY: TIOCINQ writes one c_int through the pointer, which points
        // at a live local; the fd is an open tty.
        unsafe { tiocinq(slave.as_raw_fd(), &mut count) }.map_err(nix_io)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Wait (up to `max`) until the host has read what was written. Closing
    /// the master hangs the slave up and discards unread input, so a board
    /// pulled "after sending half a reply" must let those bytes arrive first.
    pub async fn drain(&self, max: Duration) {
        let start = tokio::time::Instant::now();
        // The kernel moves written bytes to the slave's queue asynchronously.
        tokio::time::sleep(Duration::from_millis(20)).await;
        while start.elapsed() < max && self.unread_by_host().is_ok_and(|n| n > 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for PtyPort {
    fn drop(&mut self) {
        // Close first (the host sees the hang-up), then remove the link, but
        // only if it is still ours: a replug may already have replaced it.
        drop(self.master.take());
        drop(self.slave.take());
        remove_link_if_points_to(&self.link, &self.slave_path);
    }
}

/// Point `link` at `target`, replacing an existing symlink (never a file).
fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(link)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a symlink", link.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::os::unix::fs::symlink(target, link)
}

/// Remove `link` if it is a symlink to `target`.
pub(crate) fn remove_link_if_points_to(link: &Path, target: &Path) {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        let _ = std::fs::remove_file(link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn link_points_at_a_raw_slave_and_goes_away_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ttySIM0");
        let port = PtyPort::open(&link).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), port.slave_path());
        let termios = tcgetattr(port.slave.as_ref().unwrap().as_fd()).unwrap();
        assert!(
            !termios
                .local_flags
                .contains(nix::sys::termios::LocalFlags::ECHO)
        );
        drop(port);
        assert!(std::fs::symlink_metadata(&link).is_err());
    }

    #[tokio::test]
    async fn bytes_cross_in_both_directions() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ttySIM0");
        let mut port = PtyPort::open(&link).unwrap();
        let mut host = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&link)
            .unwrap();
        host.write_all(b"AT\r\n").unwrap();
        let mut buf = [0u8; 16];
        let n = port.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"AT\r\n");
        port.write_all(b"OK\r\n").await.unwrap();
        let n = host.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"OK\r\n");
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ttySIM0");
        std::fs::write(&link, b"x").unwrap();
        assert!(PtyPort::open(&link).is_err());
    }
}
