//! The future behind a host guard's `lost()`: it completes when the namespace is marked
//! lost (its file deleted, replaced or cut short), which rings the namespace's alarm.
//!
//! It sleeps with the multiplexer thread (`mux`) on the alarm word, and looks again every
//! second where the alarm is not watched (no inotify, no `futex_waitv`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::scope::Host;
use crate::sync::atomic::Ordering;

/// How often a lost-watch looks at the file where nothing wakes it.
const RECHECK: Duration = Duration::from_secs(1);

/// Completes once the namespace of `host` is lost.
pub(crate) struct Lost {
    host: Arc<Host>,
    id: u64,
    registered: bool,
}

impl Lost {
    pub(crate) fn new(host: Arc<Host>) -> Lost {
        static NEXT_ID: AtomicU64 = AtomicU64::new(u64::MAX / 2);
        Lost { host, id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed), registered: false }
    }
}

impl Future for Lost {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let ns = &this.host.ns;
        let alarm = ns.shm.registration().alarm();
        loop {
            let seen = alarm.load(Ordering::Acquire);
            if ns.shm.is_lost() || (!ns.is_watched() && !ns.verify_identity()) {
                return Poll::Ready(());
            }
            // If the multiplexer cannot run, the recheck never comes: look only when polled.
            if this.host.waits.mux.register(ns, this.id, alarm, seen, cx.waker(), Some(RECHECK)).is_err() {
                return Poll::Pending;
            }
            this.registered = true;
            if alarm.load(Ordering::Acquire) == seen {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Lost {
    fn drop(&mut self) {
        if self.registered {
            self.host.waits.mux.unregister(self.id);
        }
    }
}
