//! Making and ending a hold: the writes that the uncontended paths (`fast`) and the
//! general ones (`ops`) share, under the record lock.

use latchkey_model::Result;

use super::list::{self, List};
use super::{Grant, Rec};
use crate::layout::{Entry, EntryKind};
use crate::shm::corrupted;
use crate::sync::atomic::Ordering;
use crate::sys;

/// Writes the fields of a new entry of this process for `rec`, for `permits`.
#[inline]
pub(super) fn fill(rec: Rec<'_>, e: &Entry, permits: u32) {
    e.owner.store(rec.shm.me(), Ordering::Relaxed);
    e.record.store(rec.index, Ordering::Relaxed);
    e.generation.store(rec.generation, Ordering::Relaxed);
    e.permits.store(permits, Ordering::Relaxed);
    e.since_ns.store(sys::process::coarse_now_ns(), Ordering::Relaxed);
}

/// Makes entry `e` (filled in, in no list) a hold of its permits: the commit point is
/// its state; then it is linked into the holds and counted.
#[inline]
pub(super) fn commit(rec: Rec<'_>, at: u32, e: &Entry, permits: u32) -> Result<Grant> {
    let r = rec.r;
    let last = r.last_token.load(Ordering::Acquire);
    let token = last.checked_add(1).ok_or_else(|| corrupted(format_args!("the last fencing token is {last}")))?;
    e.order.store(token, Ordering::Relaxed);
    e.state.store(EntryKind::Hold.bits(), Ordering::Release);
    crash_point!("grant.committed");
    list::push_front(rec.shm, r, List::Holds, at, e)?;
    r.available.store(r.available.load(Ordering::Acquire).saturating_sub(permits), Ordering::Release);
    crash_point!("grant.counted");
    r.last_token.store(token, Ordering::Release);
    crash_point!("grant.token");
    Ok(Grant { entry: at, token })
}

/// Takes hold `e` out of the holds and gives its permits back (it stays `Hold`).
#[inline]
pub(super) fn end(rec: Rec<'_>, at: u32, e: &Entry) -> Result<()> {
    let r = rec.r;
    list::unlink(rec.shm, r, List::Holds, at, e)?;
    let capacity = r.capacity.load(Ordering::Acquire);
    let available = r.available.load(Ordering::Acquire).saturating_add(e.permits.load(Ordering::Acquire));
    r.available.store(available.min(capacity), Ordering::Release);
    crash_point!("hold.returned");
    Ok(())
}

/// Whether `e` is a hold of this process of `rec`, of `permits`, with fencing token `token`.
#[inline]
pub(crate) fn is_ours(rec: Rec<'_>, e: &Entry, permits: u32, token: u64) -> bool {
    EntryKind::of(e.state.load(Ordering::Acquire)) == Some(EntryKind::Hold)
        && e.owner.load(Ordering::Acquire) == rec.shm.me()
        && e.record.load(Ordering::Acquire) == rec.index
        && e.generation.load(Ordering::Acquire) == rec.generation
        && e.order.load(Ordering::Acquire) == token
        && e.permits.load(Ordering::Acquire) == permits
}
