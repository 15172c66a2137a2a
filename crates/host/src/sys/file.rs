//! The namespace directory and file: opening them without following links, telling a
//! file's identity, and making a new file complete before anyone can see it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

/// What `fstat` or `lstat` says of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub nlink: u64,
    pub size: u64,
}

impl Stat {
    fn of(stat: rustix::fs::Stat) -> Stat {
        Stat {
            dev: stat.st_dev,
            ino: stat.st_ino,
            mode: stat.st_mode,
            uid: stat.st_uid,
            nlink: stat.st_nlink,
            size: stat.st_size as u64,
        }
    }

    pub(crate) fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub(crate) fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }

    /// The same file: same device and inode.
    pub(crate) fn same_file(&self, other: &Stat) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// `fstat`.
pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(Stat::of(rustix::fs::fstat(fd)?))
}

/// `lstat`: the path itself, not what a link points to.
pub(crate) fn stat_path(path: &Path) -> io::Result<Stat> {
    Ok(Stat::of(rustix::fs::lstat(path)?))
}

/// Creates the directory `path` (and, if `parents`, the missing directories above it)
/// with `mode`; an existing one is left as it is.
pub(crate) fn make_dir(path: &Path, mode: u32, parents: bool) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).recursive(parents).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Opens the directory `path` for reference, refusing a symbolic link in its place.
pub(crate) fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens `name` in `dir` for reading and writing, refusing a symbolic link; `None` if
/// there is no such file.
pub(crate) fn open_in(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<File>> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A new file in `dir` that nobody can see yet (`O_TMPFILE`), to be made complete and
/// then [`publish`]ed; where the filesystem has no `O_TMPFILE`, a file of a name of its
/// own, given with it.
pub(crate) fn create_hidden(dir: BorrowedFd<'_>, mode: u32) -> io::Result<(File, Option<String>)> {
    let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(mode)) {
        Ok(fd) => return Ok((File::from(fd), None)),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name =
        format!(".latchkey.ns.{}.{}.tmp", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(mode))?;
    Ok((File::from(fd), Some(name)))
}

/// Gives the file made by [`create_hidden`] the name `name` in `dir`, unless a file of
/// that name exists already (then `false`: someone else's file won). A file of a name of
/// its own is removed either way.
pub(crate) fn publish(file: &File, dir: BorrowedFd<'_>, temporary: Option<&str>, name: &str) -> io::Result<bool> {
    let result = match temporary {
        Some(temporary) => {
            let linked = rustix::fs::linkat(dir, temporary, dir, name, rustix::fs::AtFlags::empty());
            let _ = rustix::fs::unlinkat(dir, temporary, rustix::fs::AtFlags::empty());
            linked
        }
        None => link_anonymous(file, dir, name),
    };
    match result {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Links an `O_TMPFILE` file into `dir`: through `/proc/self/fd`, or, without `/proc`,
/// with `AT_EMPTY_PATH`.
fn link_anonymous(file: &File, dir: BorrowedFd<'_>, name: &str) -> rustix::io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), dir, name, rustix::fs::AtFlags::SYMLINK_FOLLOW) {
        Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
            rustix::fs::linkat(file.as_fd(), "", dir, name, rustix::fs::AtFlags::EMPTY_PATH)
        }
        other => other,
    }
}

/// Sets a file's permission bits (`fchmod`).
pub(crate) fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(file, Mode::from_raw_mode(mode))?)
}

/// Reserves `len` bytes from `offset` on disk, so that a full disk fails here and not
/// later as a bus error on a page of the mapping.
///
/// Where the filesystem cannot reserve space (no `fallocate`), the file is only made
/// longer: a full disk then shows as a bus error on a page of the mapping, which marks
/// the namespace lost (see `maps`).
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let end = offset + len;
            if rustix::fs::fstat(file)?.st_size < end as i64 {
                rustix::fs::ftruncate(file, end)?;
            }
            Ok(())
        }
        other => Ok(other?),
    }
}
