//! The native half of the Node.js (and Deno) package: a `Scope`, a `Lock` (permits of a
//! name's capacity, the one model under every primitive) and a `Guard`, each one call of the
//! `latchkey` crate; the promises, `AbortSignal`s, primitives and error objects are
//! JavaScript (`index.js`).
//!
//! Nothing blocks the event loop: every call that may wait or reach a server runs on the
//! module's runtime and answers a Node-style callback `(error, value)`; an error is
//! `[code] message`, turned into a `LatchkeyError` with `.code` by `index.js`. A wait's
//! `Pending.cancel()` aborts it and withdraws the request.

#![deny(clippy::all)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ErrorStrategy, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::task::JoinHandle;

/// The module's runtime: where waits and calls to servers run.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latchkey-node")
            .enable_time()
            .build()
            .expect("latchkey: cannot start the module's runtime")
    })
}

/// A latchkey error as a JavaScript error whose message starts with `[code] `.
fn to_js(error: &latchkey::Error) -> Error {
    Error::new(Status::GenericFailure, format!("[{}] {error}", error.code()))
}

/// A Node-style callback, called from the runtime's thread.
type Callback<T> = ThreadsafeFunction<T, ErrorStrategy::CalleeHandled>;

fn callback<T: ToNapiValue + 'static>(function: JsFunction) -> Result<Callback<T>> {
    function.create_threadsafe_function(0, |context: napi::threadsafe_function::ThreadSafeCallContext<T>| {
        Ok(vec![context.value])
    })
}

/// Runs `work` on the module's runtime (blocking calls on its blocking threads) and answers
/// `done(error, value)`.
fn answer<T: ToNapiValue + Send + 'static>(
    done: JsFunction,
    work: impl FnOnce() -> latchkey::Result<T> + Send + 'static,
) -> Result<()> {
    let done: Callback<T> = callback(done)?;
    runtime().spawn_blocking(move || {
        let result = work().map_err(|e| to_js(&e));
        done.call(result, ThreadsafeFunctionCallMode::NonBlocking);
    });
    Ok(())
}

/// A scope: the namespace of the locks of a URL (`host:`, `process:`, `etcd://…`,
/// `postgres://…`, `redis://…`).
#[napi]
pub struct Scope(latchkey::Scope);

#[napi]
impl Scope {
    /// Opens the scope `url` names; answers `done(error, scope)`.
    #[napi]
    pub fn open(url: String, done: JsFunction) -> Result<()> {
        answer(done, move || latchkey::Scope::open(&url).map(Scope))
    }

    /// The scope's URL (with any password hidden).
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.0.url().to_string()
    }

    /// The name `name` with `capacity` permits; answers `done(error, lock)`.
    #[napi]
    pub fn open_lock(&self, name: String, capacity: u32, done: JsFunction) -> Result<()> {
        let scope = self.0.clone();
        answer(done, move || scope.open_lock(&name, capacity).map(|lock| Lock(Arc::new(lock))))
    }

    /// Whether anybody holds `name`; answers `done(error, locked)`.
    #[napi]
    pub fn is_locked(&self, name: String, done: JsFunction) -> Result<()> {
        let scope = self.0.clone();
        answer(done, move || scope.is_locked(&name))
    }

    /// A snapshot of `name` as JSON (capacity, inUse, holders, waiters, lastToken);
    /// answers `done(error, json)`.
    #[napi]
    pub fn inspect(&self, name: String, done: JsFunction) -> Result<()> {
        let scope = self.0.clone();
        answer(done, move || scope.inspect(&name).map(|state| state_json(&state)))
    }

    /// Closes the scope; answers `done(error)`.
    #[napi]
    pub fn close(&self, done: JsFunction) -> Result<()> {
        let scope = self.0.clone();
        answer(done, move || scope.close_blocking())
    }
}

/// `text` as a JSON string (review finding: Rust's `{:?}` escapes some characters as
/// `\u{…}`, which is not JSON).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn state_json(state: &latchkey::State) -> String {
    let holders: Vec<String> =
        state.holders.iter().map(|h| format!("{{\"pid\":{},\"permits\":{}}}", h.pid, h.permits)).collect();
    format!(
        "{{\"name\":{},\"capacity\":{},\"inUse\":{},\"waiters\":{},\"waitingExclusive\":{},\"lastToken\":\"{}\",\"holders\":[{}]}}",
        json_string(state.name.as_str()),
        state.capacity,
        state.in_use,
        state.waiters,
        state.waiting_exclusive,
        state.last_token,
        holders.join(",")
    )
}

/// A name of a scope with its capacity: requests take permits of it, in arrival order.
#[napi]
pub struct Lock(Arc<latchkey::Lock>);

#[napi]
impl Lock {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.0.name().as_str().to_string()
    }

    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.0.capacity()
    }

    /// `permits` if they are free and nobody waits; answers `done(error, guard or null)`.
    #[napi]
    pub fn try_acquire(&self, env: Env, permits: u32, done: JsFunction) -> Result<()> {
        let (lock, mailbox) = (self.0.clone(), mailbox(&env)?);
        answer(done, move || Ok(lock.try_acquire(permits)?.and_then(|guard| Delivery::post(&mailbox, guard))))
    }

    /// `permits` if they are free and nobody waits, decided on the calling thread: for
    /// scopes of this machine (`host:`, `process:`), whose try never waits for a holder or
    /// a server; `index.js` uses it before it waits.
    #[napi]
    pub fn try_acquire_now(&self, env: Env, permits: u32) -> Result<Option<Guard>> {
        let mailbox = mailbox(&env)?;
        let guard = self.0.try_acquire(permits).map_err(|e| to_js(&e))?;
        Ok(guard.map(|guard| lock_mailbox(&mailbox).adopt(guard)))
    }

    /// Waits for `permits`, at most `timeout_ms` (negative: for good); answers
    /// `done(error, guard)`. The returned `Pending` gives the wait up.
    #[napi]
    pub fn acquire(&self, env: Env, permits: u32, timeout_ms: f64, done: JsFunction) -> Result<Pending> {
        let (mailbox, done): (_, Callback<Delivery>) = (mailbox(&env)?, callback(done)?);
        // Negative, infinite or too large for a Duration: for good (review finding:
        // `Infinity` panicked, which aborts the process).
        let timeout = (timeout_ms >= 0.0).then(|| Duration::try_from_secs_f64(timeout_ms / 1000.0).ok()).flatten();
        let lock = self.0.clone();
        let task = runtime().spawn(async move {
            let granted = match lock.acquire(permits, timeout).await {
                Ok(guard) => match Delivery::post(&mailbox, guard) {
                    Some(delivery) => Ok(delivery),
                    None => return,
                },
                Err(e) => Err(to_js(&e)),
            };
            done.call(granted, ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(Pending(Mutex::new(Some(task))))
    }
}

/// The grants of one JavaScript environment (the main thread's, or a Worker's): those on
/// their way to it, by number, and those it holds. When a Worker ends, everything it held
/// or was sent is given back (the finalizer of the environment's instance data), as when
/// a process ends. Node.js runs no call queued for an environment that ended (and napi-rs
/// forgets the call's value), so a grant waits here until JavaScript takes it; Node.js
/// finalizes the objects of a Worker that ends, but that is not a promise of Node-API.
#[derive(Default)]
struct Mailbox {
    /// The environment has ended: grants are given back at once.
    closed: bool,
    next: u64,
    grants: HashMap<u64, latchkey::Guard<'static>>,
    /// The guards given to JavaScript (dead ones pruned now and then).
    held: Vec<Weak<Mutex<Option<latchkey::Guard<'static>>>>>,
}

impl Mailbox {
    /// `guard` as the `Guard` JavaScript holds, given back if the environment ends first.
    fn adopt(&mut self, guard: latchkey::Guard<'static>) -> Guard {
        if self.held.len() >= 64 && self.held.len().is_power_of_two() {
            self.held.retain(|held| held.strong_count() > 0);
        }
        let adopted = Guard::new(guard);
        self.held.push(Arc::downgrade(&adopted.0));
        adopted
    }
}

type SharedMailbox = Arc<Mutex<Mailbox>>;

fn lock_mailbox(mailbox: &SharedMailbox) -> std::sync::MutexGuard<'_, Mailbox> {
    mailbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mailbox of `env`, made on first use.
fn mailbox(env: &Env) -> Result<SharedMailbox> {
    if let Some(mailbox) = env.get_instance_data::<SharedMailbox>()? {
        return Ok(mailbox.clone());
    }
    let mailbox = SharedMailbox::default();
    env.set_instance_data(mailbox.clone(), (), |ended| {
        let undelivered = {
            let mut mailbox = lock_mailbox(&ended.value);
            mailbox.closed = true;
            (std::mem::take(&mut mailbox.grants), std::mem::take(&mut mailbox.held))
        };
        let held = undelivered.1.iter().filter_map(Weak::upgrade);
        let taken: Vec<_> = held.filter_map(|guard| guard.lock().unwrap_or_else(|e| e.into_inner()).take()).collect();
        drop((undelivered.0, taken));
    })?;
    Ok(mailbox)
}

/// A grant posted to a mailbox: a `Guard` once JavaScript receives it, given back if it
/// is dropped on the way.
struct Delivery {
    number: u64,
    mailbox: SharedMailbox,
}

impl Delivery {
    /// Posts `guard`; `None` (and the guard given back) if the environment has ended.
    fn post(mailbox: &SharedMailbox, guard: latchkey::Guard<'static>) -> Option<Delivery> {
        let mut posted = lock_mailbox(mailbox);
        if posted.closed {
            return None;
        }
        let number = posted.next;
        posted.next += 1;
        posted.grants.insert(number, guard);
        Some(Delivery { number, mailbox: mailbox.clone() })
    }

    fn take(&self) -> Option<latchkey::Guard<'static>> {
        lock_mailbox(&self.mailbox).grants.remove(&self.number)
    }

    /// The grant as the `Guard` JavaScript holds.
    fn receive(&self) -> Option<Guard> {
        let mut mailbox = lock_mailbox(&self.mailbox);
        let guard = mailbox.grants.remove(&self.number)?;
        Some(mailbox.adopt(guard))
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        drop(self.take());
    }
}

impl ToNapiValue for Delivery {
    unsafe fn to_napi_value(env: napi::sys::napi_env, delivery: Self) -> Result<napi::sys::napi_value> {
        let guard = delivery.receive().ok_or_else(|| to_js(&not_held()))?;
        // SAFETY: called by napi-rs on the JavaScript thread of `env`, as for any value.
        unsafe { Guard::to_napi_value(env, guard) }
    }
}

/// A wait started by `Lock.acquire`.
#[napi]
pub struct Pending(Mutex<Option<JoinHandle<()>>>);

#[napi]
impl Pending {
    /// Gives the wait up and withdraws its request (a grant that came first is still
    /// answered, and the caller gives it back).
    #[napi]
    pub fn cancel(&self) {
        if let Some(task) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

/// Permits held.
#[napi]
pub struct Guard(Arc<Mutex<Option<latchkey::Guard<'static>>>>);

impl Guard {
    fn new(guard: latchkey::Guard<'static>) -> Guard {
        Guard(Arc::new(Mutex::new(Some(guard))))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<latchkey::Guard<'static>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_held() -> latchkey::Error {
    latchkey::Error::new(latchkey::ErrorKind::NotHeld, "the guard was already released")
}

#[napi]
impl Guard {
    /// The grant's fencing token (a decimal string: it may pass 2^53).
    #[napi(getter)]
    pub fn fencing_token(&self) -> Result<String> {
        self.held().as_ref().map(|g| g.fencing_token().to_string()).ok_or_else(|| to_js(&not_held()))
    }

    #[napi(getter)]
    pub fn permits(&self) -> Result<u32> {
        self.held().as_ref().map(|g| g.permits()).ok_or_else(|| to_js(&not_held()))
    }

    /// Whether the guard still holds.
    #[napi(getter)]
    pub fn held_now(&self) -> bool {
        self.held().is_some()
    }

    /// Whether the hold is known to be lost.
    #[napi]
    pub fn is_lost(&self) -> bool {
        self.held().as_ref().is_none_or(|g| g.is_lost())
    }

    /// Gives the permits back on the calling thread: for scopes of this machine, whose
    /// release is a few writes to memory.
    #[napi]
    pub fn release_now(&self) -> Result<()> {
        let held = self.held().take();
        held.ok_or_else(not_held).and_then(|guard| guard.release()).map_err(|e| to_js(&e))
    }

    /// Gives the permits back; answers `done(error)`.
    #[napi]
    pub fn release(&self, done: JsFunction) -> Result<()> {
        let held = self.held().take();
        answer(done, move || held.ok_or_else(not_held)?.release())
    }

    /// If anybody waits, hands over and waits to be granted again at the back; answers
    /// `done(error)` (on an error the guard is given up).
    #[napi]
    pub fn cede(&self, env: Env, done: JsFunction) -> Result<()> {
        let (held, slot, mailbox) = (self.held().take(), self.0.clone(), mailbox(&env)?);
        answer(done, move || {
            let ceded = held.ok_or_else(not_held)?.cede_blocking()?;
            // Given back if the environment ended meanwhile (its guards were given back).
            let mailbox = lock_mailbox(&mailbox);
            if mailbox.closed {
                return Err(latchkey::Error::new(latchkey::ErrorKind::Closed, "the JavaScript environment ended"));
            }
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ceded);
            Ok(())
        })
    }
}

/// The capacity of a reader-writer lock: a read takes 1 permit, a write all of them.
#[napi]
pub const RWLOCK_CAPACITY: u32 = latchkey::RWLOCK_CAPACITY;
