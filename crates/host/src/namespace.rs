//! A namespace: its directory, its file, the file's mapping, and this process's slot.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use latchkey_model::{Error, ErrorKind, Result};

use crate::async_wait::Mux;
use crate::fork;
use crate::layout::*;
use crate::sys;
use crate::watch::Watcher;

/// The namespace file's name inside the namespace directory.
pub const FILE_NAME: &str = "latchkey.ns";

/// `Namespace::slot` until a slot is claimed.
const NO_SLOT: u32 = u32::MAX;

/// An open namespace: the file mapped into memory, and this process's slot in it.
///
/// The file stays open for the life of the value: its open file description holds this
/// process's liveness lock.
pub(crate) struct Namespace {
    url: String,
    /// Closed by hand in `Drop`, before the fork table forgets it.
    file: ManuallyDrop<File>,
    map: NonNull<u8>,
    /// This process's slot.
    slot: u32,
    /// Open handles of this process, by record.
    handles: Mutex<HashMap<usize, usize>>,
    /// This process's pid namespace (see `sys::pid_namespace`).
    pid_ns: u32,
    /// Nudges waiters when processes they depend on die.
    watcher: Watcher,
    /// Sleeps for the async waits of this process.
    mux: Mux,
    /// The fork generation it was opened in (see `fork`), and its place in the fork table.
    generation: u32,
    fork_token: Option<usize>,
}

// SAFETY: the mapping is only accessed through atomics (see `layout`), and the mapping
// lives as long as the `Namespace`.
unsafe impl Send for Namespace {}
// SAFETY: as for `Send`.
unsafe impl Sync for Namespace {}

impl Namespace {
    /// Opens the namespace in `dir`, or in the per-user default directory, creating it
    /// if needed, and takes a process slot.
    pub(crate) fn open(dir: Option<&Path>) -> Result<Namespace> {
        let (dir, url) = match dir {
            Some(dir) => (dir.to_path_buf(), format!("host:{}", dir.display())),
            None => (default_dir(), "host:".to_string()),
        };
        let fail = |kind: ErrorKind, message: String| Error::new(kind, message).with_scope(url.clone());
        prepare_dir(&dir, url == "host:").map_err(|(kind, m)| fail(kind, m))?;
        let path = dir.join(FILE_NAME);
        let watcher = Watcher::new()
            .map_err(|e| fail(ErrorKind::Unavailable, format!("cannot create an event descriptor: {e}")))?;
        let pid_ns = sys::pid_namespace();
        // From the open to the registration, a fork() in another thread waits (see `fork`).
        let gate = fork::gate();
        let file = open_file(&path).map_err(|(kind, m)| fail(kind, m))?;
        initialize(&file, &path).map_err(|(kind, m)| fail(kind, m))?;
        let map =
            map(&file).map_err(|e| fail(ErrorKind::Unavailable, format!("cannot map {}: {e}", path.display())))?;
        let fork_token = fork::register(&gate, file.as_raw_fd(), map.as_ptr());
        let generation = fork::generation();
        drop(gate);
        let (file, handles) = (ManuallyDrop::new(file), Mutex::default());
        let mut namespace = Namespace {
            url,
            file,
            map,
            slot: NO_SLOT,
            handles,
            pid_ns,
            watcher,
            mux: Mux::default(),
            generation,
            fork_token,
        };
        let (slot, left_behind) = namespace.claim_slot()?;
        namespace.slot = slot;
        namespace.repair_left_by(&left_behind);
        Ok(namespace)
    }

    /// Whether this process opened the namespace: not a copy in a child forked since.
    #[inline]
    pub(crate) fn is_ours(&self) -> bool {
        self.generation == fork::generation()
    }

    /// The error for using a copy of the namespace in a forked child.
    pub(crate) fn forked_error(&self, name: &str) -> Error {
        let message = "this handle was opened before fork(), by the parent process; open the scope again in the child";
        self.error(ErrorKind::HandleLost, message, name)
    }

    /// The scope URL: `host:` or `host:/dir`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// This process's slot.
    pub(crate) fn slot(&self) -> u32 {
        self.slot
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping starts with the Header, 8-byte aligned and made of atomics.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    pub(crate) fn proc_slot(&self, slot: u32) -> &ProcSlot {
        assert!((slot as usize) < PROC_SLOTS);
        // SAFETY: in bounds (checked above) of the ProcSlot array at PROCS_OFFSET, which is
        // 8-byte aligned and made of atomics.
        unsafe { &*self.map.as_ptr().add(PROCS_OFFSET).cast::<ProcSlot>().add(slot as usize) }
    }

    pub(crate) fn record(&self, index: usize) -> &Record {
        assert!(index < RECORDS);
        // SAFETY: in bounds (checked above) of the Record array at RECORDS_OFFSET, which
        // is 8-byte aligned and made of atomics.
        unsafe { &*self.map.as_ptr().add(RECORDS_OFFSET).cast::<Record>().add(index) }
    }

    /// Counts a handle of this process on record `index`; the first marks the record as
    /// open in this process.
    pub(crate) fn add_handle(&self, index: usize) {
        let mut handles = self.handles.lock().expect("handle table lock");
        let count = handles.entry(index).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.set_user(index, true);
        }
    }

    /// Uncounts a handle; the last unmarks the record.
    pub(crate) fn remove_handle(&self, index: usize) {
        let mut handles = self.handles.lock().expect("handle table lock");
        if let Some(count) = handles.get_mut(&index) {
            *count -= 1;
            if *count == 0 {
                handles.remove(&index);
                self.set_user(index, false);
            }
        }
    }

    /// The pid of the process in `slot` (0 if none), as seen in its own pid namespace.
    pub(crate) fn pid_of(&self, slot: u32) -> u32 {
        self.proc_slot(slot).pid.load(Ordering::Acquire)
    }

    /// Whether the process in `slot` is in our pid namespace, so its pid means the same.
    pub(crate) fn shares_pid_namespace_with(&self, slot: u32) -> bool {
        self.pid_ns != 0 && self.proc_slot(slot).pid_ns.load(Ordering::Acquire) == self.pid_ns
    }

    pub(crate) fn watcher(&self) -> &Watcher {
        &self.watcher
    }

    pub(crate) fn mux(&self) -> &Mux {
        &self.mux
    }

    /// Whether the process in `slot` is alive: it holds its liveness lock. Ours is.
    pub(crate) fn is_alive(&self, slot: u32) -> bool {
        slot == self.slot
            || sys::byte_locked_by_other(self.file.as_fd(), LIVENESS_OFFSET + u64::from(slot)).unwrap_or(true)
    }

    /// The error for `name` in this namespace.
    pub(crate) fn error(&self, kind: ErrorKind, message: impl Into<String>, name: &str) -> Error {
        Error::new(kind, message).with_name(name).with_scope(self.url.clone())
    }

    /// Takes the first free process slot. Returns it, and the slots skipped because the
    /// process that died in them left holds, queue places or a record lock behind: a new
    /// process in such a slot would pass for their owner, alive, and they would never be
    /// freed. Those slots stay free (dead) until repair clears them.
    fn claim_slot(&self) -> Result<(u32, Vec<u32>)> {
        let unavailable = |e: io::Error| {
            Error::new(ErrorKind::Unavailable, format!("cannot take a process slot: {e}")).with_scope(self.url.clone())
        };
        let mut left_behind = Vec::new();
        for slot in 0..PROC_SLOTS as u32 {
            let byte = LIVENESS_OFFSET + u64::from(slot);
            match sys::try_lock_byte(self.file.as_fd(), byte) {
                Ok(true) => {
                    let proc_slot = self.proc_slot(slot);
                    // A process that closes its namespace clears its pid (see `Drop`); a
                    // pid left behind is a process that died, which may have held locks.
                    if proc_slot.pid.load(Ordering::Acquire) != 0 && self.scrub_slot(slot) {
                        sys::unlock_byte(self.file.as_fd(), byte).map_err(unavailable)?;
                        left_behind.push(slot);
                        continue;
                    }
                    proc_slot.pid_ns.store(self.pid_ns, Ordering::Relaxed);
                    proc_slot.pid.store(std::process::id(), Ordering::Relaxed);
                    proc_slot.since_ns.store(sys::now_ns(), Ordering::Release);
                    return Ok((slot, left_behind));
                }
                Ok(false) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Error::new(ErrorKind::Unavailable, format!("all {PROC_SLOTS} process slots of the namespace are in use"))
            .with_scope(self.url.clone()))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Nothing of ours is held or queued any more (every handle, guard and wait keeps
        // the namespace alive): the next process may take the slot without a look. (A
        // copy in a forked child leaves the slot to its owner.)
        if self.slot != NO_SLOT && self.is_ours() {
            self.proc_slot(self.slot).pid.store(0, Ordering::Release);
        }
        let gate = fork::gate();
        // SAFETY: `map` is the mapping of FILE_SIZE bytes made in `map()`, not used after.
        let _ = unsafe { rustix::mm::munmap(self.map.as_ptr().cast(), FILE_SIZE) };
        // SAFETY: dropped once, here; `file` is not used after. Closing it drops the
        // liveness lock.
        unsafe { ManuallyDrop::drop(&mut self.file) };
        if let Some(token) = self.fork_token {
            fork::forget(&gate, token);
        }
    }
}

/// `$XDG_RUNTIME_DIR/latchkey`, else `latchkey-<uid>` in the temp directory.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(runtime) if runtime.is_absolute() && runtime.is_dir() => runtime.join("latchkey"),
        _ => std::env::temp_dir().join(format!("latchkey-{}", rustix::process::geteuid().as_raw())),
    }
}

type Failure = (ErrorKind, String);

/// Creates the directory if missing (owner-only) and checks that it is safe to use: a
/// real directory, not a symbolic link, owned by us (or root, for a shared directory
/// given by path), and writable by nobody else (the default) or not by everyone.
fn prepare_dir(dir: &Path, private: bool) -> Result<(), Failure> {
    match fs::DirBuilder::new().mode(0o700).recursive(!private).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err((kind_of(&e), format!("cannot create the namespace directory {}: {e}", dir.display()))),
    }
    let meta = fs::symlink_metadata(dir)
        .map_err(|e| (kind_of(&e), format!("cannot read the namespace directory {}: {e}", dir.display())))?;
    let unsafe_dir =
        |why: &str| (ErrorKind::PermissionDenied, format!("the namespace directory {} {why}", dir.display()));
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory"));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && (private || meta.uid() != 0) {
        return Err(unsafe_dir(&format!("belongs to another user (uid {})", meta.uid())));
    }
    let mode = meta.mode() & 0o777;
    if private && mode & 0o077 != 0 {
        return Err(unsafe_dir(&format!("is open to other users (mode {mode:o}; expected 700)")));
    }
    if mode & 0o002 != 0 {
        return Err(unsafe_dir(&format!("is writable by everyone (mode {mode:o})")));
    }
    Ok(())
}

/// Opens (or creates) the namespace file, refusing a symbolic link or anything that is
/// not a regular file.
fn open_file(path: &Path) -> Result<File, Failure> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => (
                ErrorKind::PermissionDenied,
                format!("a symbolic link stands where the namespace file {} should be", path.display()),
            ),
            _ => (kind_of(&e), format!("cannot open the namespace file {}: {e}", path.display())),
        })?;
    let meta = file.metadata().map_err(|e| (kind_of(&e), format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err((ErrorKind::Corrupted, format!("{} is not a regular file", path.display())));
    }
    Ok(file)
}

/// Initializes a new file, or checks an existing one, under the file's init lock.
fn initialize(file: &File, path: &Path) -> Result<(), Failure> {
    let io_error = |e: io::Error| (kind_of(&e), format!("cannot use the namespace file {}: {e}", path.display()));
    sys::lock_byte(file.as_fd(), INIT_LOCK_OFFSET).map_err(io_error)?;
    let result = initialize_locked(file, path);
    sys::unlock_byte(file.as_fd(), INIT_LOCK_OFFSET).map_err(io_error)?;
    result
}

fn initialize_locked(file: &File, path: &Path) -> Result<(), Failure> {
    let corrupted = |why: String| (ErrorKind::Corrupted, format!("the namespace file {} {why}", path.display()));
    let len = file.metadata().map_err(|e| (kind_of(&e), format!("cannot read {}: {e}", path.display())))?.len();
    let mut header = [0u8; 32];
    let read =
        read_prefix(file, &mut header).map_err(|e| (kind_of(&e), format!("cannot read {}: {e}", path.display())))?;
    let magic = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
    if magic == 0 && header[..read].iter().all(|&b| b == 0) {
        // New, or an initialization that died before writing the magic: start over.
        return create(file, path);
    }
    if read < 8 || magic != MAGIC {
        return Err(corrupted("is not a latchkey namespace file".to_string()));
    }
    let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let version = field(8);
    if version != VERSION {
        return Err(corrupted(format!(
            "has layout version {version}, and this latchkey reads version {VERSION}: it was made by another \
             latchkey release. Stop the programs that use it, then delete it (fencing tokens start again)"
        )));
    }
    let expected =
        [(PROC_SLOTS, "process slots"), (RECORDS, "records"), (std::mem::size_of::<Record>(), "record size")];
    for (at, (value, what)) in [12, 16, 20].into_iter().zip(expected) {
        if field(at) as usize != value {
            return Err(corrupted(format!("has {} {what}, expected {value}", field(at))));
        }
    }
    if len < FILE_SIZE as u64 {
        return Err(corrupted(format!("is truncated: {len} bytes of {FILE_SIZE}")));
    }
    Ok(())
}

/// Reserves the whole file (so that a full disk fails here, not later as a bus error
/// on a page of the mapping) and writes the header, magic last.
fn create(file: &File, path: &Path) -> Result<(), Failure> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, FILE_SIZE as u64).map_err(|e| {
        let e = io::Error::from(e);
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => (
                ErrorKind::Unavailable,
                format!("no space left for the namespace file {} ({FILE_SIZE} bytes)", path.display()),
            ),
            _ => (kind_of(&e), format!("cannot size the namespace file {}: {e}", path.display())),
        }
    })?;
    let map = map(file).map_err(|e| (ErrorKind::Unavailable, format!("cannot map {}: {e}", path.display())))?;
    // SAFETY: the mapping starts with a Header of atomics; it is unmapped below.
    let header = unsafe { &*map.as_ptr().cast::<Header>() };
    header.version.store(VERSION, Ordering::Relaxed);
    header.proc_slots.store(PROC_SLOTS as u32, Ordering::Relaxed);
    header.records.store(RECORDS as u32, Ordering::Relaxed);
    header.record_size.store(std::mem::size_of::<Record>() as u32, Ordering::Relaxed);
    header.file_size.store(FILE_SIZE as u64, Ordering::Relaxed);
    header.magic.store(MAGIC, Ordering::Release);
    // SAFETY: `map` is the mapping of FILE_SIZE bytes just made; nothing refers to it now.
    let _ = unsafe { rustix::mm::munmap(map.as_ptr().cast(), FILE_SIZE) };
    Ok(())
}

fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

/// Maps the whole file, shared, read-write.
fn map(file: &File) -> io::Result<NonNull<u8>> {
    use rustix::mm::{mmap, MapFlags, ProtFlags};
    // SAFETY: a fresh shared mapping of a file we keep open; no existing memory is
    // affected. The file is at least FILE_SIZE bytes (checked or allocated before).
    let ptr = unsafe {
        mmap(std::ptr::null_mut(), FILE_SIZE, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, file, 0)?
    };
    Ok(NonNull::new(ptr.cast()).expect("mmap does not return null"))
}

fn kind_of(error: &io::Error) -> ErrorKind {
    match error.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unavailable,
    }
}
