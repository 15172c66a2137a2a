//! The scope's own small runtime: one thread that runs every call, keep-alive and watch of
//! the scope, so that the blocking API needs no runtime from the caller and the
//! async API works on any executor (the caller awaits a channel, never the client).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_model::{process_copy, BoxFuture, Error, ErrorKind, Lease, RawLock, Result};

use crate::Unclaimed;
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
    /// The copy of the process that started the thread ([`process_copy`]). A child
    /// forked from it has no such thread, and shares the parent's connections: there the
    /// scope refuses every call.
    copy: (u32, u64),
    handle: Handle,
    stop: Mutex<Option<oneshot::Sender<Option<Farewell>>>>,
    /// Tasks that later requests wait for: releases of dropped guards, withdrawals of
    /// dropped requests.
    background: Arc<Background>,
}

/// A count of background work, and a signal when it reaches zero.
#[derive(Default)]
struct Background {
    count: AtomicUsize,
    done: Notify,
}

impl Background {
    fn started(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn finished(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }
}

/// Where a call of [`Driver::run`] stands, between its caller and its task.
const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
const ABANDONED: u8 = 2;

/// The caller's side of a call of [`Driver::run`]: if the caller drops it before the call
/// finished, the call counts as background work from that instant until its task has
/// dropped the work (whose guards register their own clean-up as background work). So a
/// request made right after the drop waits for that clean-up, whatever order the thread
/// runs its tasks in.
struct Abandon {
    state: Arc<AtomicU8>,
    background: Arc<Background>,
    answered: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.answered
            && self.state.compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.background.started();
        }
    }
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
        Ok(Driver { what, copy: process_copy(), handle, stop: Mutex::new(Some(stop_tx)), background: Arc::default() })
    }

    /// Whether this is a child forked (without exec) after the scope was opened: its
    /// calls would wait for a thread that is not there, on the parent's connections.
    pub fn is_forked(&self) -> bool {
        process_copy() != self.copy
    }

    /// The error of every call in a forked child.
    fn forked_error(&self) -> Error {
        let what = self.what;
        Error::new(
            ErrorKind::HandleLost,
            format!(
                "this {what} scope was opened before fork(), by the parent process; open the scope again in the child"
            ),
        )
    }

    /// Runs `work` on the thread and waits for it from any executor (or none). Dropping the
    /// returned future drops `work` on the thread at its next await point.
    pub async fn run<T: Send + 'static>(&self, work: impl Future<Output = T> + Send + 'static) -> Result<T> {
        if self.is_forked() {
            return Err(self.forked_error());
        }
        let (tx, rx) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(RUNNING));
        let (task_state, background) = (state.clone(), self.background.clone());
        let mut tx = Some(tx);
        self.handle.spawn(async move {
            let mut tx = tx.take().expect("sent once");
            let output = tokio::select! {
                output = work => Some(output),
                () = tx.closed() => None,
            };
            // The work is dropped here if the caller went first; an output the caller no
            // longer takes is dropped by the send. Either registers its own clean-up.
            if let Some(output) = output {
                let _ = tx.send(output);
            }
            if task_state.compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire).is_err() {
                background.finished();
            }
        });
        let mut abandon = Abandon { state, background: self.background.clone(), answered: false };
        let what = self.what;
        let answer = rx.await;
        abandon.answered = true;
        answer.map_err(|_| Error::new(ErrorKind::Closed, format!("the {what} scope's thread has stopped")))
    }

    /// [`run`](Driver::run) for a lock's work: runs `work` on the thread from anywhere, its
    /// errors (and the thread's) naming the lock `name` and the scope `url`.
    pub fn call<T: Send + 'static>(
        self: &Arc<Self>,
        name: &latchkey_model::Name,
        url: &str,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> latchkey_model::BoxFuture<'static, Result<T>> {
        let (driver, name, url) = (self.clone(), name.clone(), url.to_string());
        Box::pin(async move {
            driver.run(work).await.map_err(|e| e.with_name(name.as_str()).with_scope(url)).and_then(|r| r)
        })
    }

    /// [`call`](Driver::call) for `work` that grants a lease of `lock`: a lease whose
    /// caller is gone by the time it comes is given back (see [`Unclaimed`]).
    pub fn grant(
        self: &Arc<Self>,
        lock: Arc<dyn RawLock>,
        work: impl Future<Output = Result<Lease>> + Send + 'static,
    ) -> BoxFuture<'static, Result<Lease>> {
        let (name, url) = (lock.name().clone(), lock.scope_url().to_string());
        let granted = self.call(&name, &url, async move { Ok(Unclaimed::new(work.await?, lock)) });
        Box::pin(async move { Ok(granted.await?.claim()) })
    }

    /// [`grant`](Driver::grant) for a try, which may grant nothing.
    pub fn try_grant(
        self: &Arc<Self>,
        lock: Arc<dyn RawLock>,
        work: impl Future<Output = Result<Option<Lease>>> + Send + 'static,
    ) -> BoxFuture<'static, Result<Option<Lease>>> {
        let (name, url) = (lock.name().clone(), lock.scope_url().to_string());
        let granted = self.call(&name, &url, async move { Ok(work.await?.map(|lease| Unclaimed::new(lease, lock))) });
        Box::pin(async move { Ok(granted.await?.map(Unclaimed::claim)) })
    }

    /// Spawns `work` on the thread; [`wait_background`](Driver::wait_background) waits for it.
    pub fn background(&self, work: impl Future<Output = ()> + Send + 'static) {
        if self.is_forked() {
            return;
        }
        self.background.started();
        let background = self.background.clone();
        self.handle.spawn(async move {
            work.await;
            background.finished();
        });
    }

    /// Waits until every task of [`background`](Driver::background) has finished: what a
    /// scope does before each request, so that a lock dropped by this process is seen
    /// released by its next request.
    pub async fn wait_background(&self) {
        loop {
            let done = self.background.done.notified();
            if self.background.count.load(Ordering::Acquire) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Whether no background work is under way (what [`wait_background`](Self::wait_background)
    /// would wait for): a call that needs none may then run on its caller's thread.
    pub fn is_idle(&self) -> bool {
        self.background.count.load(Ordering::Acquire) == 0 && !self.is_forked()
    }

    /// Spawns `work` on the thread, not waited for.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        if !self.is_forked() {
            self.handle.spawn(work);
        }
    }

    /// Stops the thread after `farewell` (given at most a couple of seconds).
    pub fn stop(&self, farewell: Option<Farewell>) {
        if self.is_forked() {
            return;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// A value whose drop registers background work that marks `cleaned` a little later:
    /// what a request's guard does when its work is dropped.
    struct Guard {
        driver: Arc<Driver>,
        cleaned: Arc<AtomicBool>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let cleaned = self.cleaned.clone();
            self.driver.background(async move {
                tokio::task::yield_now().await;
                cleaned.store(true, Ordering::Release);
            });
        }
    }

    #[test]
    fn a_call_its_caller_dropped_is_waited_for_until_its_clean_up_is_done() {
        let driver = Arc::new(Driver::start("test").unwrap());
        let waker = std::task::Waker::noop();
        for round in 0..500 {
            let cleaned = Arc::new(AtomicBool::new(false));
            let guard = Guard { driver: driver.clone(), cleaned: cleaned.clone() };
            // The work keeps the thread busy, so that the caller's drop wakes its task while
            // it runs (which puts it behind requests sent from other threads at times); the
            // caller drops it after its first poll.
            let mut call = Box::pin(driver.run(async move {
                let _guard = guard;
                loop {
                    std::thread::sleep(Duration::from_micros(300));
                    tokio::task::yield_now().await;
                }
            }));
            let _ = call.as_mut().poll(&mut std::task::Context::from_waker(waker));
            std::thread::sleep(Duration::from_micros(200));
            drop(call);
            // The next request waits for the background work first, as every request does.
            let (next, seen) = (driver.clone(), cleaned.clone());
            let next = latchkey_model::block_on_until(
                driver.run(async move {
                    next.wait_background().await;
                    seen.load(Ordering::Acquire)
                }),
                None,
            )
            .expect("no deadline")
            .unwrap();
            assert!(next, "round {round}: a request ran before the clean-up of a call dropped just before it");
        }
    }
}
