//! Growing the namespace file: every structure that grows (process slots, records, the
//! name index, arenas) takes space at the end of the file, under the grow lock.
//!
//! The new space is reserved on disk (`fallocate`) before `file_len` says it exists, so a
//! full disk is an error here and never a bus error later; a process that dies in
//! between leaves the length unchanged, and the next grower reserves the same space
//! again. Space taken and then not published by a process that died is lost, never
//! handed out twice.

use latchkey_model::{Error, ErrorKind, Result};

use super::Namespace;
use crate::layout::PAGE;
use crate::protocol::lock_word;
use crate::sync::atomic::Ordering;
use crate::sys;

impl Namespace {
    /// Takes `bytes` of new space at the end of the file, aligned to `align`; returns its offset.
    pub(crate) fn grow(&self, bytes: u64, align: u64) -> Result<u64> {
        let _op = crate::crash::op("grow");
        let shm = &self.shm;
        let header = shm.header();
        let _lock = lock_word(shm, &header.grow_lock, || Ok(()))?;
        let end = header.file_len.load(Ordering::Acquire);
        let at = end.div_ceil(align.max(1)) * align.max(1);
        let new_end = at + bytes;
        if new_end > shm.mapped() as u64 {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the namespace file would grow to {new_end} bytes, more than this process could map ({} bytes)",
                    shm.mapped()
                ),
            ));
        }
        sys::file::allocate(shm.file(), end, new_end - end).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::new(
                ErrorKind::Unavailable,
                format!("no space left to grow the namespace file by {bytes} bytes (to {new_end})"),
            ),
            _ => Error::new(super::location::kind_of(&e), format!("cannot grow the namespace file: {e}")),
        })?;
        crash_point!("grow.reserved");
        header.file_len.store(new_end, Ordering::Release);
        crash_point!("grow.published");
        Ok(at)
    }

    /// [`grow`](Self::grow) by whole pages.
    pub(crate) fn grow_pages(&self, bytes: u64) -> Result<u64> {
        self.grow(bytes.div_ceil(PAGE) * PAGE, PAGE)
    }
}
