//! The fair, weighted semaphore: an atomic state word for the uncontended path and a
//! FIFO queue behind a lock for everything else.

use std::collections::VecDeque;
use std::fmt;
use std::ptr::NonNull;
use std::task::Waker;

use super::signal::Signal;
use super::wait::Wait;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Bits 0..32 of the state word: permits available.
const AVAILABLE: u64 = u32::MAX as u64;
/// Bit 32 of the state word: the queue is not empty. While it is set, permits change
/// only under the queue lock, and the fast paths step aside so nobody barges.
const QUEUED: u64 = 1 << 32;
/// Bit 33 of the state word: the semaphore was retired while idle (its name reclaimed);
/// it grants nothing more.
const RETIRED: u64 = 1 << 33;

fn available(state: u64) -> u32 {
    (state & AVAILABLE) as u32
}

/// A fair (FIFO), weighted semaphore that hands out a fencing token with every grant.
///
/// | state word bits | meaning                                   |
/// |-----------------|-------------------------------------------|
/// | 0..32           | permits available                         |
/// | 32              | `QUEUED`: waiters exist; take the slow path |
/// | 33              | `RETIRED`: reclaimed while idle; grants nothing |
///
/// All writes to the state word are read-modify-writes, so every acquire synchronizes
/// with every earlier release (one release sequence).
pub struct FairSemaphore {
    state: AtomicU64,
    /// The token of the latest grant; the next grant gets one more.
    last_token: AtomicU64,
    capacity: u32,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Waiters in arrival order, so with increasing tickets: the front is the head.
    /// (A deque keeps its buffer between bursts; a cancel finds its ticket by binary
    /// search.)
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    permits: u32,
    /// The signal inside the waiting future. The future is pinned and removes this
    /// entry under the queue lock before it is dropped, so the pointer is valid while
    /// the entry is queued; it is only used under the queue lock.
    signal: NonNull<Signal>,
    /// The waker of the future's latest poll; taken by the granter.
    waker: Waker,
}

// SAFETY: the only non-`Send` field is `signal`, which is dereferenced only under the
// queue lock, to a `Signal` (atomics, so `Sync`) that outlives the entry (see above).
unsafe impl Send for Waiter {}

impl Queue {
    fn position(&self, ticket: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&ticket, |w| w.ticket).ok()
    }
}

/// Wakers of waiters granted under the queue lock, called once it is let go. A release
/// usually grants one waiter (a mutex) or a few (readers): the first is kept inline.
#[derive(Default)]
struct WakeList {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl WakeList {
    fn push(&mut self, waker: Waker) {
        match self.first {
            None => self.first = Some(waker),
            Some(_) => self.more.push(waker),
        }
    }

    fn wake_all(self) {
        if let Some(first) = self.first {
            first.wake();
            for waker in self.more {
                waker.wake();
            }
        }
    }
}

/// Releasing would leave more permits available than the capacity: the caller
/// released something it did not hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Overfilled;

/// What [`FairSemaphore::enqueue`] and [`FairSemaphore::requeue`] did.
pub(crate) enum Queued {
    /// Granted at once, with this token.
    Granted(u64),
    /// Nobody was waiting, so the caller keeps what it held (cede only).
    Kept,
    /// Waiting in the queue.
    Waiting { ticket: u64 },
}

impl FairSemaphore {
    /// A semaphore with `capacity` permits, all available.
    pub fn new(capacity: u32) -> Self {
        FairSemaphore::continuing(capacity, 0)
    }

    /// A semaphore with `capacity` permits whose first grant gets a token above
    /// `last_token`: for a name that starts over, so that its tokens keep increasing.
    pub fn continuing(capacity: u32, last_token: u64) -> Self {
        assert!(capacity > 0, "a semaphore needs at least one permit");
        FairSemaphore {
            state: AtomicU64::new(u64::from(capacity)),
            last_token: AtomicU64::new(last_token),
            capacity,
            queue: Mutex::new(Queue::default()),
        }
    }

    /// The number of permits.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Takes `permits` if they are available and nobody waits; returns the fencing token.
    #[inline]
    pub fn try_acquire(&self, permits: u32) -> Option<u64> {
        debug_assert!(permits >= 1 && permits <= self.capacity);
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (QUEUED | RETIRED) != 0 || available(state) < permits {
                return None;
            }
            match self.state.compare_exchange_weak(
                state,
                state - u64::from(permits),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.next_token(permits)),
                Err(actual) => state = actual,
            }
        }
    }

    /// A future that resolves to the fencing token once `permits` are granted in FIFO order.
    ///
    /// Cancel safety: dropping it leaves no waiter behind; a grant that raced with the
    /// drop goes to the next waiter.
    pub fn acquire(&self, permits: u32) -> Wait<'_> {
        debug_assert!(permits >= 1 && permits <= self.capacity);
        Wait::acquire(self, permits)
    }

    /// If anyone waits, hands the caller's `permits` to the queue and waits again at the
    /// back; the future resolves to the new token, or `None` if nobody was waiting and the
    /// caller kept its permits. Dropping the future gives the permits up.
    pub fn cede(&self, permits: u32) -> Wait<'_> {
        Wait::cede(self, permits)
    }

    /// Gives `permits` back, granting waiters in FIFO order.
    #[inline]
    pub fn release(&self, permits: u32) -> Result<(), Overfilled> {
        match self.release_uncontended(permits)? {
            true => Ok(()),
            false => self.release_slow(permits),
        }
    }

    /// Gives `permits` back if nobody waits (`Ok(true)`); `Ok(false)` means waiters exist
    /// and [`release_slow`](Self::release_slow) must do it.
    #[inline]
    fn release_uncontended(&self, permits: u32) -> Result<bool, Overfilled> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & QUEUED != 0 {
                return Ok(false);
            }
            if u64::from(available(state)) + u64::from(permits) > u64::from(self.capacity) {
                return Err(Overfilled);
            }
            match self.state.compare_exchange_weak(
                state,
                state + u64::from(permits),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(true),
                Err(actual) => state = actual,
            }
        }
    }

    /// Gives back `permits` that the caller is known to hold, if nobody waits (`true`);
    /// `false` means waiters exist and [`release_slow`](Self::release_slow) must do it.
    #[inline]
    pub fn release_held(&self, permits: u32) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & QUEUED != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                state,
                state + u64::from(permits),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Retires the semaphore if nobody holds or waits for it; from then on it grants
    /// nothing. Returns whether it was retired.
    ///
    /// It takes the queue lock, so that a semaphore is never retired (and its memory
    /// freed) while a release that has just granted a waiter still holds that lock.
    pub fn retire(&self) -> bool {
        let _queue = self.queue.lock();
        let idle = u64::from(self.capacity);
        self.state.compare_exchange(idle, idle | RETIRED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Whether [`retire`](Self::retire) succeeded.
    pub fn is_retired(&self) -> bool {
        self.state.load(Ordering::Acquire) & RETIRED != 0
    }

    /// Permits held now.
    pub fn in_use(&self) -> u32 {
        self.capacity - available(self.state.load(Ordering::Acquire))
    }

    /// The token of the latest grant, 0 before the first.
    pub fn last_token(&self) -> u64 {
        self.last_token.load(Ordering::Acquire)
    }

    /// How many requests wait, and how many of them ask for the whole capacity.
    pub fn waiters(&self) -> (usize, usize) {
        let queue = self.queue.lock();
        let exclusive = queue.waiters.iter().filter(|w| w.permits == self.capacity).count();
        (queue.waiters.len(), exclusive)
    }

    /// The permits each waiting request asks for, in queue order.
    pub fn waiting(&self) -> Vec<u32> {
        self.queue.lock().waiters.iter().map(|w| w.permits).collect()
    }

    /// Hands out the next fencing token to a grant that has just taken its permits.
    #[inline]
    fn next_token(&self, permits: u32) -> u64 {
        if permits == self.capacity {
            // An exclusive holder has every permit: no other grant can happen until it
            // releases, so a plain load and store suffice, and the acquire above has
            // synchronized with every earlier grant's token.
            let token = self.last_token.load(Ordering::Relaxed) + 1;
            self.last_token.store(token, Ordering::Relaxed);
            token
        } else {
            self.last_token.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    /// The part of [`release`](Self::release) that takes the queue lock. The semaphore
    /// is not touched after that lock is let go.
    #[cold]
    pub fn release_slow(&self, permits: u32) -> Result<(), Overfilled> {
        let mut wake = WakeList::default();
        {
            let mut queue = self.queue.lock();
            let state = self.state.load(Ordering::Acquire);
            if u64::from(available(state)) + u64::from(permits) > u64::from(self.capacity) {
                return Err(Overfilled);
            }
            self.give_back(&mut queue, permits, &mut wake);
        }
        wake.wake_all();
        Ok(())
    }

    /// Under the queue lock: adds `released` permits, grants waiters from the head while
    /// their requests fit, and clears `QUEUED` once the queue is empty.
    ///
    /// While `QUEUED` is set only the holder of the queue lock changes the state word,
    /// so the new state is worked out here and written once.
    fn give_back(&self, queue: &mut Queue, released: u32, wake: &mut WakeList) {
        let state = self.state.load(Ordering::Acquire);
        if state & QUEUED == 0 {
            // Nobody waits, and the fast paths may be changing the word as well.
            debug_assert!(queue.waiters.is_empty());
            if released > 0 {
                self.state.fetch_add(u64::from(released), Ordering::AcqRel);
            }
            return;
        }
        let mut free = available(state) + released;
        let mut changed = released > 0;
        while let Some(head) = queue.waiters.front() {
            let permits = head.permits;
            if free < permits {
                break;
            }
            free -= permits;
            changed = true;
            let waiter = queue.waiters.pop_front().expect("the head was just seen");
            // SAFETY: the entry was queued until the line above, and we hold the queue
            // lock, so its future has not been dropped (see `Waiter::signal`).
            unsafe { waiter.signal.as_ref() }.grant(self.next_token(permits));
            wake.push(waiter.waker);
        }
        let queued = if queue.waiters.is_empty() { 0 } else { QUEUED };
        if changed || queued == 0 {
            let previous = self.state.swap(u64::from(free) | queued, Ordering::AcqRel);
            debug_assert_eq!(previous, state, "only the queue lock's holder writes while QUEUED");
        }
    }

    /// Queues a request for `permits` (granting it at once if it fits and nobody waits),
    /// to be signalled through `signal`, which must stay in place until the request is
    /// granted or withdrawn with [`cancel`](Self::cancel).
    pub(crate) fn enqueue(&self, permits: u32, waker: &Waker, signal: &Signal) -> Queued {
        let queue = self.queue.lock();
        debug_assert!(!self.is_retired(), "a retired semaphore has no users left to queue");
        if let Some(token) = self.try_acquire(permits) {
            return Queued::Granted(token);
        }
        // Under the lock, a set QUEUED stays set: only set it if it is not.
        if self.state.load(Ordering::Acquire) & QUEUED == 0 {
            self.state.fetch_or(QUEUED, Ordering::AcqRel);
        }
        self.push_and_grant(queue, permits, 0, waker, signal)
    }

    /// Gives back `permits` and queues for them again at the back, unless nobody waits;
    /// `signal` as for [`enqueue`](Self::enqueue).
    pub(crate) fn requeue(&self, permits: u32, waker: &Waker, signal: &Signal) -> Queued {
        let queue = self.queue.lock();
        if queue.waiters.is_empty() {
            return Queued::Kept;
        }
        self.push_and_grant(queue, permits, permits, waker, signal)
    }

    /// Appends a waiter for `permits`, gives back `released` permits, runs the grants
    /// the state now allows, and wakes them once the queue lock is let go (the caller's
    /// guard is dropped by taking it by value).
    fn push_and_grant(
        &self,
        mut queue: impl std::ops::DerefMut<Target = Queue>,
        permits: u32,
        released: u32,
        waker: &Waker,
        signal: &Signal,
    ) -> Queued {
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        let signal_ptr = NonNull::from(signal);
        queue.waiters.push_back(Waiter { ticket, permits, signal: signal_ptr, waker: waker.clone() });
        let mut wake = WakeList::default();
        self.give_back(&mut queue, released, &mut wake);
        drop(queue);
        wake.wake_all();
        match signal.granted() {
            Some(token) => Queued::Granted(token),
            None => Queued::Waiting { ticket },
        }
    }

    /// Called by a waiting future polled again before its grant: stores the new waker
    /// unless the grant came meanwhile, in which case it returns the token.
    pub(crate) fn repoll(&self, ticket: u64, signal: &Signal, waker: &Waker) -> Option<u64> {
        let mut queue = self.queue.lock();
        if let Some(token) = signal.granted() {
            return Some(token);
        }
        let position = queue.position(ticket).expect("a pending waiter is in the queue");
        let stored = &mut queue.waiters[position].waker;
        if !stored.will_wake(waker) {
            *stored = waker.clone();
        }
        None
    }

    /// Withdraws a waiter whose future was dropped. If it had been granted in the
    /// meantime, its permits go on to the next waiters.
    pub(crate) fn cancel(&self, ticket: u64, permits: u32) {
        let mut wake = WakeList::default();
        {
            let mut queue = self.queue.lock();
            // The withdrawn waiter may have been the head holding back smaller requests.
            let released = match queue.position(ticket) {
                Some(position) => {
                    queue.waiters.remove(position);
                    0
                }
                // Granted under this lock before we took it: give the permits back.
                None => permits,
            };
            self.give_back(&mut queue, released, &mut wake);
        }
        wake.wake_all();
    }
}

impl fmt::Debug for FairSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("FairSemaphore")
            .field("capacity", &self.capacity)
            .field("available", &available(state))
            .field("queued", &(state & QUEUED != 0))
            .field("retired", &(state & RETIRED != 0))
            .field("last_token", &self.last_token.load(Ordering::Relaxed))
            .finish()
    }
}
