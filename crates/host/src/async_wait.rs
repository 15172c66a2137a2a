//! Async waits on a host lock, which must not block the caller's thread.
//!
//! The request is queued on the caller's thread when the future is first polled (so FIFO
//! order is poll order); dropping the future withdraws it at once. Then something must
//! sleep on the waiter's word and wake the task: one thread per namespace, the
//! multiplexer, sleeps on up to [`MUX_WAITS`] waiters' words at once (`futex_waitv`) and
//! runs for each the same checks as a blocking wait (what it depends on, repair). A wait
//! beyond that many, or on a kernel without `futex_waitv` (before Linux 5.16), gets a
//! helper thread of its own. A request that finds the queue full also waits on a helper
//! thread (a rare case: more than 32 waiters on one name).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::grant_word;
use crate::namespace::Namespace;
use crate::record::{Grant, Rec};
use crate::repair::LIVENESS_PERIOD;
use crate::sys::{self, Waited};
use crate::wait::{shortest, wake_everyone_for_room};
use crate::watch::{Coverage, Watch};

/// Waits one multiplexer thread sleeps on, besides its own control word (the kernel takes
/// at most 128).
pub(crate) const MUX_WAITS: usize = 120;

/// Resolves to the grant of waiter `w` of a record.
pub(crate) struct WaitGrant {
    ns: Arc<Namespace>,
    index: usize,
    capacity: u32,
    w: usize,
    shared: Arc<Shared>,
    done: bool,
}

/// What a waiting future shares with whatever sleeps for it.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(waker) = self.waker.lock().expect("waker lock").take() {
            waker.wake();
        }
    }
}

impl WaitGrant {
    /// Watches waiter `w` (already queued) of record `index`.
    pub(crate) fn new(ns: Arc<Namespace>, index: usize, capacity: u32, w: usize) -> Self {
        let shared = Arc::new(Shared::default());
        // Counted as a handle until whatever sleeps for it lets go of the record, which
        // may be after the future and its lock are gone: the name is not reclaimed first.
        ns.add_handle(index);
        let wait = Wait { index, capacity, w, shared: shared.clone() };
        if let Err(wait) = Mux::add(&ns, wait) {
            let ns = ns.clone();
            std::thread::Builder::new()
                .name("latchkey-wait".into())
                .spawn(move || {
                    let rec = ns.rec(wait.index, wait.capacity);
                    if rec.await_grant(wait.w, None, &|| wait.shared.stop.load(Ordering::Acquire)) {
                        wait.shared.wake();
                    }
                    ns.remove_handle(wait.index);
                })
                .expect("cannot start a latchkey wait thread");
        }
        WaitGrant { ns, index, capacity, w, shared, done: false }
    }

    fn rec(&self) -> Rec<'_> {
        self.ns.rec(self.index, self.capacity)
    }
}

/// One async wait for a grant.
struct Wait {
    index: usize,
    capacity: u32,
    w: usize,
    shared: Arc<Shared>,
}

/// The multiplexer of a namespace: the waits it serves, and its thread's control word.
#[derive(Default)]
pub(crate) struct Mux {
    state: Mutex<MuxState>,
    /// Bumped (and woken) when a wait is added or stopped.
    control: AtomicU32,
}

#[derive(Default)]
struct MuxState {
    incoming: Vec<Wait>,
    /// Waits added and not yet finished.
    count: usize,
    running: bool,
}

impl Mux {
    /// Hands `wait` to the namespace's multiplexer, starting its thread if need be; gives
    /// it back if the multiplexer is full or the kernel cannot serve it.
    fn add(ns: &Arc<Namespace>, wait: Wait) -> Result<(), Wait> {
        static SUPPORTED: OnceLock<bool> = OnceLock::new();
        if !*SUPPORTED.get_or_init(sys::has_wait_any) {
            return Err(wait);
        }
        let mux = ns.mux();
        let mut state = mux.state.lock().expect("mux lock");
        if state.count >= MUX_WAITS {
            return Err(wait);
        }
        state.count += 1;
        state.incoming.push(wait);
        if !state.running {
            state.running = true;
            let ns = ns.clone();
            std::thread::Builder::new()
                .name("latchkey-mux".into())
                .spawn(move || serve(&ns))
                .expect("cannot start the latchkey wait thread");
        }
        drop(state);
        mux.poke();
        Ok(())
    }

    /// Wakes the thread to look at its waits again.
    fn poke(&self) {
        self.control.fetch_add(1, Ordering::AcqRel);
        sys::wake(&self.control, 1);
    }
}

/// A wait the multiplexer serves, with its registrations for death notices.
struct Served<'a> {
    wait: Wait,
    rec: Rec<'a>,
    watch: Watch<'a>,
}

/// The multiplexer thread: until no wait is left, wakes each wait's task once it is
/// granted, keeps each watching what it depends on, and sleeps on all their words.
fn serve(ns: &Namespace) {
    let mux = ns.mux();
    let mut served: Vec<Served<'_>> = Vec::new();
    loop {
        let control = mux.control.load(Ordering::Acquire);
        {
            let mut state = mux.state.lock().expect("mux lock");
            for wait in state.incoming.drain(..) {
                let rec = ns.rec(wait.index, wait.capacity);
                let watch = Watch::new(ns, &rec.r.waiters[wait.w].granted, grant_word::nudge_and_wake);
                served.push(Served { wait, rec, watch });
            }
            if served.is_empty() {
                state.running = false;
                return;
            }
        }
        let mut words = vec![Waited { word: &mux.control, expected: control }];
        let (mut limit, mut finished) = (None, 0);
        served.retain_mut(|s| {
            let word = &s.rec.r.waiters[s.wait.w].granted;
            let seen = word.load(Ordering::Acquire);
            if s.wait.shared.stop.load(Ordering::Acquire) || grant_word::granted_holder(seen).is_some() {
                s.wait.shared.wake(); // granted: the task takes it; stopped: harmless
                ns.remove_handle(s.wait.index);
                finished += 1;
                return false;
            }
            match s.watch.cover(&s.rec.dependencies(s.wait.w)) {
                Coverage::Dead => {
                    s.rec.repair_if_dead();
                    limit = Some(Duration::ZERO); // look again at once
                    return true;
                }
                Coverage::Partial => limit = shortest(limit, Some(LIVENESS_PERIOD)),
                Coverage::Complete => {}
            }
            match grant_word::mark_sleeping(word, seen) {
                Some(expected) => words.push(Waited { word, expected }),
                None => limit = Some(Duration::ZERO), // changed meanwhile
            }
            true
        });
        if finished > 0 {
            mux.state.lock().expect("mux lock").count -= finished;
        }
        // With nothing left to serve, go back to the top: end, or take new waits.
        if limit != Some(Duration::ZERO) && !served.is_empty() {
            sys::wait_any(&words, limit);
        }
    }
}

impl Future for WaitGrant {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        if let Some(grant) = self.take() {
            return Poll::Ready(grant);
        }
        *self.shared.waker.lock().expect("waker lock") = Some(cx.waker().clone());
        // Checked again after storing the waker, so a grant in between is not missed.
        match self.take() {
            Some(grant) => Poll::Ready(grant),
            None => Poll::Pending,
        }
    }
}

impl WaitGrant {
    /// The grant, once published.
    fn take(&mut self) -> Option<Grant> {
        let word = self.ns.record(self.index).waiters[self.w].granted.load(Ordering::Acquire);
        grant_word::granted_holder(word)?;
        // Stopped before the waiter slot is freed (and may be reused), so that the helper
        // thread never sleeps on another waiter's word.
        self.shared.stop.store(true, Ordering::Release);
        self.done = true;
        self.rec().take_grant(self.w)
    }
}

impl Drop for WaitGrant {
    fn drop(&mut self) {
        if !self.done {
            self.shared.stop.store(true, Ordering::Release);
            let rec = self.rec();
            // Wake whoever sleeps for it first: once withdrawn, the waiter slot may be
            // reused.
            grant_word::nudge_and_wake(&rec.r.waiters[self.w].granted);
            self.ns.mux().poke();
            rec.withdraw(self.w);
        }
    }
}

/// Resolves once the queue of a record has room again (or at once if it has), without
/// blocking the caller's thread: a helper thread runs [`Rec::await_room`].
pub(crate) struct WaitRoom {
    ns: Arc<Namespace>,
    index: usize,
    shared: Arc<Shared>,
    room: Arc<AtomicBool>,
}

impl WaitRoom {
    pub(crate) fn new(ns: Arc<Namespace>, index: usize, capacity: u32) -> Self {
        let shared = Arc::new(Shared::default());
        let room = Arc::new(AtomicBool::new(false));
        let (watch_ns, watch_shared, watch_room) = (ns.clone(), shared.clone(), room.clone());
        std::thread::Builder::new()
            .name("latchkey-room".into())
            .spawn(move || {
                let rec = watch_ns.rec(index, capacity);
                if rec.await_room(None, &|| watch_shared.stop.load(Ordering::Acquire)) {
                    watch_room.store(true, Ordering::Release);
                    if let Some(waker) = watch_shared.waker.lock().expect("waker lock").take() {
                        waker.wake();
                    }
                }
            })
            .expect("cannot start a latchkey wait thread");
        WaitRoom { ns, index, shared, room }
    }
}

impl Future for WaitRoom {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.room.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *self.shared.waker.lock().expect("waker lock") = Some(cx.waker().clone());
        if self.room.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for WaitRoom {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wakes the helper thread (and, harmlessly, the others waiting for room).
        wake_everyone_for_room(&self.ns.record(self.index).room);
    }
}
