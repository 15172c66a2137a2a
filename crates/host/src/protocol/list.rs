//! The three lists of a record, doubly linked through their entries' `next` and `prev`:
//! `holds` and `users` (pushed at the front, any order) and the queue (pushed at the
//! back, so in ticket order). Only the record lock's holder changes them; a process that
//! dies in the middle of a change leaves them to `rebuild`, which relinks them from the
//! entries.

use latchkey_model::Result;

use crate::layout::{Entry, Record};
use crate::shm::{corrupted, Shm};
use crate::sync::atomic::{AtomicU32, Ordering};

/// Which list of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum List {
    Holds,
    Queue,
    Users,
}

impl List {
    fn head(self, r: &Record) -> &AtomicU32 {
        match self {
            List::Holds => &r.holds,
            List::Queue => &r.queue_head,
            List::Users => &r.users,
        }
    }
}

/// The first entry of `list` (0: empty).
pub(crate) fn first(r: &Record, list: List) -> u32 {
    list.head(r).load(Ordering::Acquire)
}

/// Puts entry `e` (reference `at`) at the front of `list` (`holds` or `users`).
#[inline]
pub(crate) fn push_front(shm: &Shm, r: &Record, list: List, at: u32, e: &Entry) -> Result<()> {
    debug_assert!(list != List::Queue, "the queue grows at the back");
    let head = list.head(r).load(Ordering::Acquire);
    e.prev.store(0, Ordering::Relaxed);
    e.next.store(head, Ordering::Release);
    crash_point!("list.front.linked");
    if head != 0 {
        shm.entry(head)?.prev.store(at, Ordering::Release);
        crash_point!("list.front.back_linked");
    }
    list.head(r).store(at, Ordering::Release);
    crash_point!("list.front.headed");
    Ok(())
}

/// Puts entry `e` (reference `at`) at the back of the queue.
pub(crate) fn push_back(shm: &Shm, r: &Record, at: u32, e: &Entry) -> Result<()> {
    let tail = r.queue_tail.load(Ordering::Acquire);
    e.next.store(0, Ordering::Relaxed);
    e.prev.store(tail, Ordering::Release);
    crash_point!("list.back.linked");
    if tail == 0 {
        r.queue_head.store(at, Ordering::Release);
    } else {
        shm.entry(tail)?.next.store(at, Ordering::Release);
    }
    crash_point!("list.back.forward_linked");
    r.queue_tail.store(at, Ordering::Release);
    crash_point!("list.back.tailed");
    Ok(())
}

/// Takes entry `e` (reference `at`) out of `list`.
#[inline]
pub(crate) fn unlink(shm: &Shm, r: &Record, list: List, at: u32, e: &Entry) -> Result<()> {
    let (prev, next) = (e.prev.load(Ordering::Acquire), e.next.load(Ordering::Acquire));
    if prev == 0 {
        if list.head(r).load(Ordering::Acquire) != at {
            return Err(corrupted(format_args!("entry {at} is not in the list it claims to be in")));
        }
        list.head(r).store(next, Ordering::Release);
    } else {
        shm.entry(prev)?.next.store(next, Ordering::Release);
    }
    crash_point!("list.unlink.forward");
    if next == 0 {
        if list == List::Queue {
            r.queue_tail.store(prev, Ordering::Release);
        }
    } else {
        shm.entry(next)?.prev.store(prev, Ordering::Release);
    }
    crash_point!("list.unlink.backward");
    e.next.store(0, Ordering::Relaxed);
    e.prev.store(0, Ordering::Relaxed);
    Ok(())
}

/// The entries of `list`, in order, with their references. A list longer than the file
/// could hold (a loop) is a `Corrupted` error.
pub(crate) fn entries<'a>(shm: &'a Shm, r: &Record, list: List) -> Result<Vec<(u32, &'a Entry)>> {
    let mut entries = Vec::new();
    let mut at = first(r, list);
    while at != 0 {
        if entries.len() as u64 > shm.max_entries() {
            return Err(corrupted(format_args!("a list of a record loops")));
        }
        let e = shm.entry(at)?;
        entries.push((at, e));
        at = e.next.load(Ordering::Acquire);
    }
    Ok(entries)
}
