//! The namespace file: made complete under no name and then linked into place, so that
//! nobody ever sees a half-made file; checked when opened; mapped.
//!
//! A file that is there is never initialized again: a file that is empty, truncated,
//! foreign or of another layout version is a `Corrupted` error that says whether
//! processes still use it (their liveness locks are on it).

use std::fs::File;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;

use latchkey_model::ErrorKind;

use super::location::{kind_of, Failure};
use crate::layout::*;
use crate::sys;

/// The namespace file's name inside the namespace directory.
pub const FILE_NAME: &str = "latchkey.ns";

/// Where the first chunks of a new file go, and its first length.
const FIRST_SLOTS: u64 = PAGE;
const FIRST_RECORDS: u64 = FIRST_SLOTS + SLOT_BASE as u64 * size_of::<ProcSlot>() as u64;
const FIRST_INDEX: u64 = (FIRST_RECORDS + RECORD_BASE as u64 * size_of::<Record>() as u64).div_ceil(PAGE) * PAGE;
const FIRST_LEN: u64 = FIRST_INDEX + (8 << INDEX_MIN_LOG2);

/// The most a process maps of a namespace file: the file grows into this reservation.
/// (Entry references are file offsets / 64 in 32 bits: 256 GiB at most.)
const MAPPINGS: [usize; 5] = [1 << 36, 1 << 34, 1 << 32, 1 << 30, 1 << 28];

/// Opens the namespace file in `dir`, making it if there is none.
pub(crate) fn open_or_create(dir: &OwnedFd, path: &Path, private: bool) -> Result<File, Failure> {
    let io = |e: std::io::Error| (kind_of(&e), format!("cannot open the namespace file {}: {e}", path.display()));
    loop {
        match sys::file::open_in(dir.as_fd(), FILE_NAME) {
            Ok(Some(file)) => {
                check(&file, path)?;
                return Ok(file);
            }
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let why = format!("a symbolic link stands where the namespace file {} should be", path.display());
                return Err((ErrorKind::PermissionDenied, why));
            }
            Err(e) => return Err(io(e)),
        }
        let mode = if private { 0o600 } else { 0o660 };
        let (file, temporary) = sys::file::create_hidden(dir.as_fd(), mode).map_err(io)?;
        // The mode as meant, whatever the umask: a shared directory's group needs it.
        sys::file::set_mode(&file, mode).map_err(io)?;
        initialize(&file, path)?;
        if sys::file::publish(&file, dir.as_fd(), temporary.as_deref(), FILE_NAME).map_err(io)? {
            return Ok(file);
        }
        // Another process linked its file first: use that one.
    }
}

/// Writes a complete, empty namespace into a file nobody can see yet.
fn initialize(file: &File, path: &Path) -> Result<(), Failure> {
    sys::file::allocate(file, 0, FIRST_LEN).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => (
            ErrorKind::Unavailable,
            format!("no space left for the namespace file {} ({FIRST_LEN} bytes)", path.display()),
        ),
        _ => (kind_of(&e), format!("cannot size the namespace file {}: {e}", path.display())),
    })?;
    let mut bytes = vec![0u8; FIRST_LEN as usize];
    let mut put = |at: usize, value: &[u8]| bytes[at..at + value.len()].copy_from_slice(value);
    let now = sys::process::wall_ns();
    put(offset_of!(Header, magic), &MAGIC.to_le_bytes());
    put(offset_of!(Header, version), &VERSION.to_le_bytes());
    put(offset_of!(Header, record_size), &(size_of::<Record>() as u32).to_le_bytes());
    put(offset_of!(Header, slot_size), &(size_of::<ProcSlot>() as u32).to_le_bytes());
    put(offset_of!(Header, entry_size), &(ENTRY_SIZE as u32).to_le_bytes());
    put(offset_of!(Header, slot_base), &SLOT_BASE.to_le_bytes());
    put(offset_of!(Header, record_base), &RECORD_BASE.to_le_bytes());
    put(offset_of!(Header, file_len), &FIRST_LEN.to_le_bytes());
    put(offset_of!(Header, token_floor), &now.to_le_bytes());
    put(offset_of!(Header, created_ns), &now.to_le_bytes());
    put(offset_of!(Header, slots), &SLOT_BASE.to_le_bytes());
    put(offset_of!(Header, records), &RECORD_BASE.to_le_bytes());
    put(offset_of!(Header, free_records), &1u32.to_le_bytes());
    put(offset_of!(Header, index), &(FIRST_INDEX | u64::from(INDEX_MIN_LOG2)).to_le_bytes());
    put(offset_of!(Header, slot_chunks), &FIRST_SLOTS.to_le_bytes());
    put(offset_of!(Header, record_chunks), &FIRST_RECORDS.to_le_bytes());
    // The records start on the free list, in order.
    for record in 0..RECORD_BASE {
        let at = FIRST_RECORDS as usize + record as usize * size_of::<Record>() + offset_of!(Record, free_next);
        let next = if record + 1 < RECORD_BASE { record + 2 } else { 0 };
        put(at, &next.to_le_bytes());
    }
    file.write_all_at(&bytes, 0)
        .map_err(|e| (kind_of(&e), format!("cannot write the namespace file {}: {e}", path.display())))
}

/// Checks that `file` is a complete namespace of this layout version.
fn check(file: &File, path: &Path) -> Result<(), Failure> {
    let io = |e: std::io::Error| (kind_of(&e), format!("cannot read the namespace file {}: {e}", path.display()));
    let corrupted = |why: String| {
        let users = match sys::lock::locked_by_other(file.as_fd(), LIVENESS_OFFSET, 0) {
            Ok(true) => "processes still use it: stop them, then remove it",
            _ => "no process uses it: remove it",
        };
        (
            ErrorKind::Corrupted,
            format!("the namespace file {} {why}; {users} (fencing tokens go on above the wall clock)", path.display()),
        )
    };
    let mut header = [0u8; 128];
    let read = read_prefix(file, &mut header).map_err(io)?;
    // After the header: the file grows before its header says so, never after.
    let stat = sys::file::stat_fd(file.as_fd()).map_err(io)?;
    if !stat.is_file() {
        return Err((ErrorKind::Corrupted, format!("{} is not a regular file", path.display())));
    }
    if read == 0 {
        return Err(corrupted("is empty (0 bytes): it was truncated".to_string()));
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if read < header.len() || word(offset_of!(Header, magic)) != MAGIC {
        return Err(corrupted("is not a latchkey namespace file".to_string()));
    }
    let version = field(offset_of!(Header, version));
    if version != VERSION {
        return Err(corrupted(format!(
            "has layout version {version}, and this latchkey reads version {VERSION}: it was made by another \
             latchkey release"
        )));
    }
    let sizes = [
        (offset_of!(Header, record_size), size_of::<Record>(), "record size"),
        (offset_of!(Header, slot_size), size_of::<ProcSlot>(), "process slot size"),
        (offset_of!(Header, entry_size), ENTRY_SIZE as usize, "entry size"),
        (offset_of!(Header, slot_base), SLOT_BASE as usize, "first slot chunk"),
        (offset_of!(Header, record_base), RECORD_BASE as usize, "first record chunk"),
    ];
    for (at, expected, what) in sizes {
        if field(at) as usize != expected {
            return Err(corrupted(format!("has a {what} of {}, expected {expected}", field(at))));
        }
    }
    let len = word(offset_of!(Header, file_len));
    if len < FIRST_LEN {
        return Err(corrupted(format!("says it is {len} bytes long, less than any namespace")));
    }
    if stat.size < len {
        return Err(corrupted(format!("is truncated: {} bytes of {len}", stat.size)));
    }
    Ok(())
}

fn read_prefix(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buf.len() {
        match file.read_at(&mut buf[read..], read as u64)? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read)
}

/// Maps as much of the file as the address space allows, at least what it holds now.
pub(crate) fn map(file: &File, path: &Path) -> Result<(NonNull<u8>, usize), Failure> {
    let mut last = None;
    for len in MAPPINGS {
        match sys::maps::map_file(file.as_raw_fd(), len) {
            Ok(map) => return Ok((map, len)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.expect("tried at least once");
    Err((ErrorKind::Unavailable, format!("cannot map the namespace file {}: {e}", path.display())))
}
