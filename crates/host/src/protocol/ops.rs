//! Granting, queueing, releasing, withdrawing and ceding, under the record lock.
//!
//! Each write to shared state is followed by a crash point; the order of the writes only
//! matters for the entry's `state`, the commit point (see the invariants in `protocol`).

use latchkey_model::Result;

use super::list::{self, List};
use super::{hold, Locked, Rec};
use crate::layout::{Entry, EntryKind, Word, ASYNC};
use crate::shm::corrupted;
use crate::sync::atomic::Ordering;
use crate::sys;

/// A grant: the hold's entry and its fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub entry: u32,
    pub token: u64,
}

/// What a queued request found when it looked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// It is granted.
    Granted(Grant),
    /// It still waits, and depends on these process slots (see the invariants).
    Waiting(Vec<u32>),
}

impl<'a> Locked<'a> {
    /// One of this process's entries, at reference `at`.
    #[inline]
    fn own(&self, at: u32) -> Result<&'a Entry> {
        let e = self.rec.shm.entry(at)?;
        if e.owner.load(Ordering::Acquire) != self.rec.shm.me()
            && EntryKind::of(e.state.load(Ordering::Acquire)) != Some(EntryKind::Free)
        {
            return Err(corrupted(format_args!("entry {at} belongs to another process")));
        }
        Ok(e)
    }

    /// An entry of this process in the state `kind` for this record, or a `Corrupted` error.
    #[inline]
    fn own_in(&self, at: u32, kind: EntryKind) -> Result<&'a Entry> {
        let e = self.own(at)?;
        let state = e.state.load(Ordering::Acquire);
        if EntryKind::of(state) != Some(kind)
            || e.record.load(Ordering::Acquire) != self.rec.index
            || e.generation.load(Ordering::Acquire) != self.rec.generation
        {
            return Err(corrupted(format_args!("entry {at} is not a {kind:?} of this name")));
        }
        Ok(e)
    }

    /// Grants `permits` into the free entry `at` if they are free and nobody waits: the
    /// uncontended path.
    #[inline]
    pub(crate) fn try_grant(&mut self, at: u32, permits: u32) -> Result<Option<Grant>> {
        let _op = crate::crash::op("acquire");
        let r = self.rec.r;
        if r.queue_head.load(Ordering::Acquire) != 0 || r.available.load(Ordering::Acquire) < permits {
            return Ok(None);
        }
        let e = self.own(at)?;
        self.fill(at, e, permits)?;
        hold::commit(self.rec, at, e, permits).map(Some)
    }

    /// Writes the fields of a new entry of this process for this record.
    #[inline]
    fn fill(&self, at: u32, e: &Entry, permits: u32) -> Result<()> {
        if EntryKind::of(e.state.load(Ordering::Acquire)) != Some(EntryKind::Free) {
            return Err(corrupted(format_args!("entry {at} is in use already")));
        }
        hold::fill(self.rec, e, permits);
        Ok(())
    }

    /// Queues a request for `permits` in the free entry `at`, at the back of the queue.
    /// `async_`: it is waited for asynchronously (nudges also ring the doorbell). Returns
    /// the request's word as it is now: a nudge changes it.
    pub(crate) fn enqueue(&mut self, at: u32, permits: u32, async_: bool) -> Result<u32> {
        let _op = crate::crash::op("enqueue");
        let e = self.own(at)?;
        self.fill(at, e, permits)?;
        self.queue(at, e, async_)?;
        Ok(e.word.load(Ordering::Acquire))
    }

    /// Puts entry `e` (filled in, in no list) at the back of the queue.
    fn queue(&mut self, at: u32, e: &'a Entry, async_: bool) -> Result<()> {
        let r = self.rec.r;
        let ticket = r.next_ticket.load(Ordering::Acquire);
        e.order.store(ticket, Ordering::Relaxed);
        e.since_ns.store(sys::process::coarse_now_ns(), Ordering::Relaxed);
        e.word.fetch_and(Word::COUNT, Ordering::AcqRel);
        let flags = if async_ { ASYNC } else { 0 };
        e.state.store(EntryKind::Wait.bits() | flags, Ordering::Release);
        crash_point!("queue.committed");
        let next = ticket.checked_add(1).ok_or_else(|| corrupted(format_args!("the next ticket is {ticket}")))?;
        r.next_ticket.store(next, Ordering::Release);
        crash_point!("queue.ticket");
        list::push_back(self.rec.shm, r, at, e)
    }

    /// Looks at the queued request `at`: grants it if its permits and those of every
    /// request ahead of it are free (so FIFO order is kept: the ones ahead still fit);
    /// otherwise says what it depends on.
    pub(crate) fn poll(&mut self, at: u32) -> Result<Polled> {
        let e = self.own_in(at, EntryKind::Wait)?;
        let (shm, r) = (self.rec.shm, self.rec.r);
        let permits = e.permits.load(Ordering::Acquire);
        let head = r.queue_head.load(Ordering::Acquire);
        let available = u64::from(r.available.load(Ordering::Acquire));
        let mut wanted = u64::from(permits);
        let (mut ahead, mut steps) = (head, 0u64);
        while ahead != at && wanted <= available {
            let entry = shm.entry(ahead)?;
            wanted += u64::from(entry.permits.load(Ordering::Acquire));
            ahead = entry.next.load(Ordering::Acquire);
            steps += 1;
            if ahead == 0 || steps > shm.max_entries() {
                return Err(corrupted(format_args!("queued entry {at} is not in its record's queue")));
            }
        }
        if wanted > available {
            return Ok(Polled::Waiting(self.dependencies(at, e, head)?));
        }
        let _op = crate::crash::op("grant");
        let next = e.next.load(Ordering::Acquire);
        list::unlink(shm, r, List::Queue, at, e)?;
        crash_point!("grant.dequeued");
        let grant = hold::commit(self.rec, at, e, permits)?;
        if next != 0 {
            // Behind the head, the request behind it depended on it. At the head, the new
            // head watched this request: it must look again if it may be granted too, or
            // if it must now watch holders of a third process.
            let successor = shm.entry(next)?;
            let fits = successor.permits.load(Ordering::Acquire) <= r.available.load(Ordering::Acquire);
            if head != at || fits || self.held_by_others(successor.owner.load(Ordering::Acquire))? {
                self.wakes.nudge(shm, successor);
            }
        }
        Ok(Polled::Granted(grant))
    }

    /// Whether a process other than this one and `slot` holds permits.
    fn held_by_others(&self, slot: u32) -> Result<bool> {
        let me = self.rec.shm.me();
        let holds = list::entries(self.rec.shm, self.rec.r, List::Holds)?;
        Ok(holds.iter().any(|(_, h)| {
            let owner = h.owner.load(Ordering::Acquire);
            owner != me && owner != slot
        }))
    }

    /// The process slots the queued request `e` depends on: at the head, every holder;
    /// otherwise the request just ahead of it.
    fn dependencies(&self, at: u32, e: &Entry, head: u32) -> Result<Vec<u32>> {
        let shm = self.rec.shm;
        let mut slots = if head == at {
            let holds = list::entries(shm, self.rec.r, List::Holds)?;
            holds.iter().map(|(_, h)| h.owner.load(Ordering::Acquire)).collect()
        } else {
            let prev = e.prev.load(Ordering::Acquire);
            vec![shm.entry(prev)?.owner.load(Ordering::Acquire)]
        };
        slots.sort_unstable();
        slots.dedup();
        Ok(slots)
    }

    /// Gives back the hold `at`, and nudges the requests that can now be granted.
    #[inline]
    pub(crate) fn release(&mut self, at: u32) -> Result<()> {
        let _op = crate::crash::op("release");
        let e = self.own_in(at, EntryKind::Hold)?;
        self.drop_hold(at, e)?;
        e.state.store(EntryKind::Free.bits(), Ordering::Release);
        crash_point!("release.freed");
        self.nudge_grantable()
    }

    /// Takes hold `e` out of the holds and gives its permits back (it stays `Hold`).
    #[inline]
    pub(super) fn drop_hold(&mut self, at: u32, e: &Entry) -> Result<()> {
        hold::end(self.rec, at, e)
    }

    /// Nudges the requests at the head of the queue whose permits are free, with those
    /// of the requests ahead of them.
    #[inline]
    pub(super) fn nudge_grantable(&mut self) -> Result<()> {
        let (shm, r) = (self.rec.shm, self.rec.r);
        let available = u64::from(r.available.load(Ordering::Acquire));
        let (mut at, mut wanted) = (r.queue_head.load(Ordering::Acquire), 0u64);
        let mut steps = 0u64;
        while at != 0 && steps <= shm.max_entries() {
            let e = shm.entry(at)?;
            wanted += u64::from(e.permits.load(Ordering::Acquire));
            if wanted > available {
                break;
            }
            self.wakes.nudge(shm, e);
            at = e.next.load(Ordering::Acquire);
            steps += 1;
        }
        Ok(())
    }

    /// Takes the queued request `at` out of the queue (a timeout or a cancel). The request
    /// behind it depended on it: it is nudged.
    pub(crate) fn withdraw(&mut self, at: u32) -> Result<()> {
        let _op = crate::crash::op("withdraw");
        let e = self.own_in(at, EntryKind::Wait)?;
        let next = e.next.load(Ordering::Acquire);
        list::unlink(self.rec.shm, self.rec.r, List::Queue, at, e)?;
        e.state.store(EntryKind::Free.bits(), Ordering::Release);
        crash_point!("withdraw.freed");
        if next != 0 {
            self.wakes.nudge(self.rec.shm, self.rec.shm.entry(next)?);
        }
        Ok(())
    }

    /// If anyone waits, gives back the hold `at` and queues it again at the back, as a
    /// request for the same permits (then returns its word, as `enqueue` does); if nobody
    /// waits, keeps it (`None`).
    pub(crate) fn cede(&mut self, at: u32, async_: bool) -> Result<Option<u32>> {
        let _op = crate::crash::op("cede");
        let e = self.own_in(at, EntryKind::Hold)?;
        if self.rec.r.queue_head.load(Ordering::Acquire) == 0 {
            return Ok(None);
        }
        self.drop_hold(at, e)?;
        self.queue(at, e, async_)?;
        self.nudge_grantable()?;
        Ok(Some(e.word.load(Ordering::Acquire)))
    }
}

impl<'a> Rec<'a> {
    /// Whether nobody holds or waits for the record (read without the lock: a hint).
    pub(crate) fn looks_idle(&self) -> bool {
        self.r.holds.load(Ordering::Acquire) == 0 && self.r.queue_head.load(Ordering::Acquire) == 0
    }
}
