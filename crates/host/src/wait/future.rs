//! The async wait: a future that looks at its queued request each time it is polled,
//! and in between lets the multiplexer thread (`mux`) sleep for it.
//!
//! Cancel safety: dropping the future withdraws the request at once; a request granted
//! meanwhile is granted only when the future looks, so nothing is left behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};

use latchkey_model::Result;

use super::blocking::withdraw;
use super::watch::{Coverage, Target, Watch, LIVENESS_PERIOD};
use super::Waits;
use crate::namespace::Namespace;
use crate::protocol::{lost, Grant, Polled, Rec};
use crate::sync::atomic::Ordering;

/// Resolves to the grant of the request queued (asynchronously) in entry `at` of `rec`.
pub(crate) struct Queued<'a> {
    ns: &'a Arc<Namespace>,
    waits: &'a Waits,
    rec: Rec<'a>,
    at: u32,
    id: u64,
    watch: Watch<'a>,
    /// Whether it has slept (been registered with the multiplexer) before.
    registered: bool,
    done: bool,
}

impl<'a> Queued<'a> {
    /// Waits for the request queued in entry `at` of `rec` (queued with `async_` set).
    pub(crate) fn new(ns: &'a Arc<Namespace>, waits: &'a Waits, rec: Rec<'a>, at: u32) -> Result<Queued<'a>> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let doorbell = &ns.shm.slot(ns.shm.me())?.doorbell;
        let target = Target::new(&ns.shm.entry(at)?.word, Some(doorbell));
        let watch = Watch::new(&waits.watcher, ns, target);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Queued { ns, waits, rec, at, id, watch, registered: false, done: false })
    }

    fn look(&mut self, cx: &mut Context<'_>) -> Result<Option<Grant>> {
        let word = &self.ns.shm.entry(self.at)?.word;
        loop {
            if self.ns.shm.is_lost() {
                return Err(lost());
            }
            let seen = word.load(Ordering::Acquire);
            let dependencies = match self.rec.lock()?.poll(self.at)? {
                Polled::Granted(grant) => return Ok(Some(grant)),
                Polled::Waiting(dependencies) => dependencies,
            };
            let recheck = match self.watch.cover(&dependencies) {
                Coverage::Dead => {
                    self.rec.lock()?.repair()?;
                    continue;
                }
                Coverage::Complete => None,
                Coverage::Partial => Some(LIVENESS_PERIOD),
            };
            // The first sleep of a slow path: is the file still the one mapped?
            if !self.registered && !self.ns.verify_identity() {
                return Err(lost());
            }
            self.registered = true;
            self.waits.mux.register(self.ns, self.id, word, seen, cx.waker(), recheck).map_err(|e| {
                latchkey_model::Error::new(
                    latchkey_model::ErrorKind::Unavailable,
                    format!("cannot start the thread that serves async waits: {e}"),
                )
            })?;
            if word.load(Ordering::Acquire) == seen {
                return Ok(None);
            }
        }
    }
}

impl Future for Queued<'_> {
    type Output = Result<Grant>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Grant>> {
        let this = &mut *self;
        if this.done {
            panic!("a latchkey wait polled after it completed");
        }
        match this.look(cx) {
            Ok(None) => Poll::Pending,
            Ok(Some(grant)) => {
                this.done = true;
                this.waits.mux.unregister(this.id);
                Poll::Ready(Ok(grant))
            }
            Err(e) => {
                this.done = true;
                this.waits.mux.unregister(this.id);
                withdraw(this.ns, this.rec, this.at);
                Poll::Ready(Err(e))
            }
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.waits.mux.unregister(self.id);
            withdraw(self.ns, self.rec, self.at);
        }
    }
}
