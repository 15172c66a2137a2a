//! Where a namespace lives: the per-user default directory, and the checks that make a
//! directory safe to hold one.
//!
//! The default is `/tmp/latchkey-<uid>` (the effective uid), whatever the environment:
//! every process of one user finds it, from a login shell, cron, `sudo -u`, a systemd
//! service (unless it has `PrivateTmp=`, which gives it a `/tmp` of its own) or an
//! environment without `XDG_RUNTIME_DIR` or with another `TMPDIR`. The places that
//! depend on the environment split the world; the places a session's end removes
//! (`/run/user/<uid>` when the user's last session ends, the user's files in `/dev/shm`
//! under logind's `RemoveIPC=`) would delete a namespace in use. Against tmp cleaners,
//! every process that uses the namespace holds a shared BSD lock on its directory, which
//! systemd-tmpfiles' aging honours; and a namespace deleted anyway is noticed (see
//! `identity`), its holds reported lost and its tokens continued above the old ones.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use latchkey_model::ErrorKind;

use crate::sys;

/// The per-user default namespace directory, `/tmp/latchkey-<euid>`.
pub fn default_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/latchkey-{}", sys::process::euid()))
}

/// A reason a namespace cannot be used: its kind, and a message.
pub(crate) type Failure = (ErrorKind, String);

/// The kind of error an I/O error on a namespace is.
pub(crate) fn kind_of(error: &io::Error) -> ErrorKind {
    match error.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unavailable,
    }
}

/// Creates the directory if missing (owner-only) and opens it after checking that it is
/// safe to use: a real directory, not a symbolic link, owned by us (or root, for a shared
/// directory given by path), and writable by nobody else (the default) or not by
/// everyone. Takes a shared BSD lock on it (see the module documentation).
pub(crate) fn prepare_dir(dir: &Path, private: bool) -> Result<OwnedFd, Failure> {
    sys::file::make_dir(dir, 0o700, !private)
        .map_err(|e| (kind_of(&e), format!("cannot create the namespace directory {}: {e}", dir.display())))?;
    let unsafe_dir =
        |why: &str| (ErrorKind::PermissionDenied, format!("the namespace directory {} {why}", dir.display()));
    let fd = sys::file::open_dir(dir).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => match sys::file::stat_path(dir) {
            Ok(stat) if stat.is_symlink() => unsafe_dir("is a symbolic link"),
            _ => unsafe_dir("is not a directory"),
        },
        _ => (kind_of(&e), format!("cannot open the namespace directory {}: {e}", dir.display())),
    })?;
    let stat = sys::file::stat_fd(fd.as_fd())
        .map_err(|e| (kind_of(&e), format!("cannot read the namespace directory {}: {e}", dir.display())))?;
    let me = sys::process::euid();
    if stat.uid != me && (private || stat.uid != 0) {
        return Err(unsafe_dir(&format!("belongs to another user (uid {})", stat.uid)));
    }
    let mode = stat.mode & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(unsafe_dir(&format!("is open to other users (mode {mode:o}; expected 700)")));
    }
    if mode & 0o002 != 0 {
        return Err(unsafe_dir(&format!("is writable by everyone (mode {mode:o})")));
    }
    // Only systemd-tmpfiles' aging depends on it: a directory that cannot be locked works.
    let _ = sys::lock::share_flock(fd.as_fd());
    Ok(fd)
}
