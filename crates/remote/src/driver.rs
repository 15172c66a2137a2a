//! The scope's own small runtime: one thread that runs every call, keep-alive and watch of
//! the scope, so that the blocking API needs no runtime from the caller and the
//! async API works on any executor (the caller awaits a channel, never the client).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use latchkey_model::{Error, ErrorKind, Result};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

/// A last piece of work for the thread before it stops (ending the session).
type Farewell = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How long the thread gives its farewell before it stops anyway.
const FAREWELL_TIME: Duration = Duration::from_secs(2);

/// The runtime thread of one scope; stops when dropped.
pub struct Driver {
    /// What the scope is, for thread names and errors (`etcd`, `PostgreSQL`).
    what: &'static str,
    handle: Handle,
    stop: Mutex<Option<oneshot::Sender<Option<Farewell>>>>,
    /// Tasks that must finish before the scope is closed: releases of dropped guards.
    background: AtomicUsize,
    background_done: Notify,
}

impl Driver {
    /// Starts the thread of a scope of kind `what` (`etcd`, `PostgreSQL`).
    pub fn start(what: &'static str) -> Result<Driver> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<Option<Farewell>>();
        std::thread::Builder::new()
            .name(format!("latchkey-{}", what.to_lowercase()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return drop(handle_tx.send(Err(e.to_string()))),
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async move {
                    if let Ok(Some(farewell)) = stop_rx.await {
                        let _ = tokio::time::timeout(FAREWELL_TIME, farewell).await;
                    }
                });
                runtime.shutdown_background();
            })
            .map_err(|e| unavailable(format!("cannot start the {what} scope's thread: {e}")))?;
        let handle = handle_rx
            .recv()
            .map_err(|_| unavailable(format!("the {what} scope's thread ended at once")))?
            .map_err(|e| unavailable(format!("cannot start the {what} scope's runtime: {e}")))?;
        Ok(Driver {
            what,
            handle,
            stop: Mutex::new(Some(stop_tx)),
            background: AtomicUsize::new(0),
            background_done: Notify::new(),
        })
    }

    /// Runs `work` on the thread and waits for it from any executor (or none). Dropping the
    /// returned future drops `work` on the thread at its next await point.
    pub async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let mut tx = Some(tx);
        self.handle.spawn(async move {
            let mut tx = tx.take().expect("sent once");
            tokio::select! {
                output = work => { let _ = tx.send(output); }
                () = tx.closed() => {}
            }
        });
        let what = self.what;
        rx.await.map_err(|_| Error::new(ErrorKind::Closed, format!("the {what} scope's thread has stopped")))
    }

    /// Spawns `work` on the thread; [`wait_background`](Driver::wait_background) waits for it.
    pub fn background(self: &std::sync::Arc<Self>, work: impl Future<Output = ()> + Send + 'static) {
        self.background.fetch_add(1, Ordering::AcqRel);
        let driver = self.clone();
        self.handle.spawn(async move {
            work.await;
            if driver.background.fetch_sub(1, Ordering::AcqRel) == 1 {
                driver.background_done.notify_waiters();
            }
        });
    }

    /// Waits until every task of [`background`](Driver::background) has finished: what a
    /// scope does before each request, so that a lock dropped by this process is seen
    /// released by its next request.
    pub async fn wait_background(&self) {
        loop {
            let done = self.background_done.notified();
            if self.background.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Spawns `work` on the thread, not waited for.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(work);
    }

    /// Stops the thread after `farewell` (given at most a couple of seconds).
    pub fn stop(&self, farewell: Option<Farewell>) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(farewell);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop(None);
    }
}

fn unavailable(why: String) -> Error {
    Error::new(ErrorKind::Unavailable, why)
}
