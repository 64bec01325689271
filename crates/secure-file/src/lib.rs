//! Files that hold a secret or decide trust (the CA key, the nRF Cloud API
//! key, the HTTP token, the ledger's password and CA, the trust file),
//! opened only when nobody but their owner and root can change them, as
//! OpenSSH's StrictModes checks `~/.ssh`: the file's own mode, and every
//! directory on its path once symlinks are resolved. A directory that group
//! or others may write lets them rename the file away and put their own in
//! its place, whatever the file's own mode says. The one exception is a
//! directory of root's with the sticky bit (`/tmp`): there only an entry's
//! owner may rename or remove it. A directory must also belong to root or
//! to the file's owner: anyone else could do the same.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a file holds decides what its own mode may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// A secret (a key, a token, a password): only its owner may read it.
    Secret,
    /// What decides trust (the trust file, a CA certificate): others may
    /// read it, only its owner may write it.
    Trust,
}

/// Why a file is not used. Names the file, and the directory at fault.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeFile {
    #[error("{}: {what} is not a regular file", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    #[error(
        "{}: {what} is readable by group or others (mode {mode:03o}); refusing to use it — run `chmod 600 {}`",
        path.display(), path.display()
    )]
    Readable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "{}: {what} is writable by group or others (mode {mode:03o}); whoever can write it decides what it says — run `chmod go-w {}`",
        path.display(), path.display()
    )]
    Writable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("{}: {what} refused: {problem}", path.display())]
    Directory {
        what: &'static str,
        path: PathBuf,
        problem: UnsafeDirectory,
    },
}

/// A directory on a file's path that others could change.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeDirectory {
    #[error(
        "directory {} is writable by group or others (mode {mode:04o}) and is not root's with the sticky bit, so they can put another file in place of what it holds — run `chmod go-w {}` or use another directory",
        dir.display(), dir.display()
    )]
    Writable { dir: PathBuf, mode: u32 },
    #[error(
        "directory {} belongs to {owner}, neither root nor the file's owner, who can put another file in place of what it holds — use another directory",
        dir.display()
    )]
    Owner { dir: PathBuf, owner: String },
}

/// Why [`open`] gave no file.
#[derive(Debug)]
pub enum Refusal {
    /// It could not be opened or looked at (the caller names the file).
    Io(std::io::Error),
    Unsafe(UnsafeFile),
}

impl Refusal {
    /// The caller's error: `io` for an I/O error, else the unsafe file.
    pub fn into_error<E: From<UnsafeFile>>(self, io: impl FnOnce(std::io::Error) -> E) -> E {
        match self {
            Refusal::Io(e) => io(e),
            Refusal::Unsafe(problem) => problem.into(),
        }
    }
}

/// Open `path` for reading when it and its path are safe for what it
/// `holds`; `what` names it in errors ("CA key"). The file is opened by its
/// canonical path without following a last symlink, so it is the file whose
/// directories were checked.
pub fn open(path: &Path, what: &'static str, holds: Holds) -> Result<File, Refusal> {
    let canonical = std::fs::canonicalize(path).map_err(Refusal::Io)?;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK; // a FIFO must not block the open
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(&canonical)
        .map_err(Refusal::Io)?;
    let meta = file.metadata().map_err(Refusal::Io)?;
    let refuse = |problem| Refusal::Unsafe(problem);
    if !meta.is_file() {
        return Err(refuse(UnsafeFile::NotAFile {
            what,
            path: path.to_owned(),
        }));
    }
    let mode = meta.mode() & 0o777;
    match holds {
        Holds::Secret if mode & 0o077 != 0 => {
            return Err(refuse(UnsafeFile::Readable {
                what,
                path: path.to_owned(),
                mode,
            }));
        }
        Holds::Trust if mode & 0o022 != 0 => {
            return Err(refuse(UnsafeFile::Writable {
                what,
                path: path.to_owned(),
                mode,
            }));
        }
        _ => {}
    }
    let parent = canonical.parent().unwrap_or(Path::new("/"));
    match check_directories(parent, meta.uid()) {
        Ok(()) => Ok(file),
        Err(DirectoryCheck::Io(e)) => Err(Refusal::Io(e)),
        Err(DirectoryCheck::Unsafe(problem)) => Err(refuse(UnsafeFile::Directory {
            what,
            path: path.to_owned(),
            problem,
        })),
    }
}

/// Why [`check_directories`] refused.
#[derive(Debug)]
pub enum DirectoryCheck {
    Io(std::io::Error),
    Unsafe(UnsafeDirectory),
}

/// `dir` and every directory above it, symlinks resolved: none writable by
/// group or others unless it is root's with the sticky bit, each root's or
/// `owner`'s (the uid of the file that is or will be in it).
pub fn check_directories(dir: &Path, owner: u32) -> Result<(), DirectoryCheck> {
    let canonical = std::fs::canonicalize(dir).map_err(DirectoryCheck::Io)?;
    for dir in canonical.ancestors() {
        let meta = std::fs::metadata(dir).map_err(DirectoryCheck::Io)?;
        let mode = meta.mode() & 0o7777;
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !(meta.uid() == 0 && sticky) {
            return Err(DirectoryCheck::Unsafe(UnsafeDirectory::Writable {
                dir: dir.to_owned(),
                mode,
            }));
        }
        if meta.uid() != 0 && meta.uid() != owner {
            return Err(DirectoryCheck::Unsafe(UnsafeDirectory::Owner {
                dir: dir.to_owned(),
                owner: user_name(meta.uid()),
            }));
        }
    }
    Ok(())
}

/// `user alice (uid 1000)`, or `uid 1000` when it has no name.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("user {} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }

    /// A 0600 file in a 0700 directory of its own (tempfile's), under /tmp.
    fn secret_in(dir: &Path) -> PathBuf {
        let path = dir.join("secret");
        std::fs::write(&path, "s3cret\n").unwrap_or_else(|e| panic!("{e}"));
        chmod(&path, 0o600);
        path
    }

    #[test]
    fn a_private_file_in_a_private_directory_under_tmp_opens() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = secret_in(dir.path());
        assert!(open(&path, "key", Holds::Secret).is_ok());
        // Others may read a trust file, not write it.
        chmod(&path, 0o644);
        assert!(open(&path, "trust file", Holds::Trust).is_ok());
        assert!(matches!(
            open(&path, "key", Holds::Secret),
            Err(Refusal::Unsafe(UnsafeFile::Readable { mode: 0o644, .. }))
        ));
        chmod(&path, 0o664);
        assert!(matches!(
            open(&path, "trust file", Holds::Trust),
            Err(Refusal::Unsafe(UnsafeFile::Writable { mode: 0o664, .. }))
        ));
    }

    #[test]
    fn a_directory_others_can_write_is_named_with_its_mode() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open_dir = dir.path().join("open");
        std::fs::create_dir(&open_dir).unwrap_or_else(|e| panic!("{e}"));
        let path = secret_in(&open_dir);
        for mode in [0o777, 0o770, 0o757] {
            chmod(&open_dir, mode);
            let Err(Refusal::Unsafe(problem)) = open(&path, "CA key", Holds::Secret) else {
                panic!("mode {mode:o}: a file in a directory others can write opened");
            };
            let text = problem.to_string();
            let canonical = std::fs::canonicalize(&open_dir).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                text.contains(&format!("directory {} ", canonical.display()))
                    && text.contains(&format!("mode {mode:04o}"))
                    && text.starts_with(&format!("{}: CA key refused", path.display())),
                "{text}"
            );
        }
        // The sticky bit alone is not enough: the directory is not root's
        // (when the test is not root, the owner check refuses it anyway).
        chmod(&open_dir, 0o1777);
        let owned_by_root = std::fs::metadata(&open_dir).is_ok_and(|m| m.uid() == 0);
        assert_eq!(
            open(&path, "CA key", Holds::Secret).is_ok(),
            owned_by_root,
            "root's and sticky is the one exception"
        );
        chmod(&open_dir, 0o755);
        assert!(open(&path, "CA key", Holds::Secret).is_ok());
    }

    #[test]
    fn a_symlink_is_judged_by_where_it_leads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let open_dir = dir.path().join("open");
        let safe_dir = dir.path().join("safe");
        for d in [&open_dir, &safe_dir] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("{e}"));
        }
        let target = secret_in(&open_dir);
        chmod(&open_dir, 0o777);
        let link = safe_dir.join("key");
        std::os::unix::fs::symlink(&target, &link).unwrap_or_else(|e| panic!("{e}"));
        let Err(Refusal::Unsafe(UnsafeFile::Directory { problem, path, .. })) =
            open(&link, "key", Holds::Secret)
        else {
            panic!("a symlink into a directory others can write opened");
        };
        assert_eq!(path, link, "the error names the path as configured");
        assert!(
            matches!(&problem, UnsafeDirectory::Writable { dir, .. }
                if *dir == std::fs::canonicalize(&open_dir).unwrap_or_default()),
            "{problem}"
        );
    }

    #[test]
    fn tmp_is_accepted_as_root_sticky_whoever_owns_the_file() {
        let meta = std::fs::metadata("/tmp").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (meta.uid(), meta.mode() & 0o7777),
            (0, 0o1777),
            "the usual /tmp"
        );
        assert!(check_directories(Path::new("/tmp"), 12345).is_ok());
    }

    #[test]
    fn not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            open(&fifo, "token", Holds::Secret),
            Err(Refusal::Unsafe(UnsafeFile::NotAFile { .. }))
        ));
        assert!(matches!(
            open(dir.path(), "token", Holds::Secret),
            Err(Refusal::Unsafe(UnsafeFile::NotAFile { .. }))
        ));
    }
}
