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

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ErrorStrategy, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::task::JoinHandle;

mod holdings;
use holdings::{Holdings, Owned};

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
/// `done(error, value)`; `work` adopts what it gives JavaScript into the holdings of the
/// caller's environment (see `holdings.rs`).
fn answer<T: ToNapiValue + Send + 'static>(
    env: &Env,
    done: JsFunction,
    work: impl FnOnce(&Holdings) -> latchkey::Result<T> + Send + 'static,
) -> Result<()> {
    let (holdings, done): (_, Callback<T>) = (Holdings::of(env)?, callback(done)?);
    runtime().spawn_blocking(move || {
        let result = work(&holdings).map_err(|e| to_js(&e));
        done.call(result, ThreadsafeFunctionCallMode::NonBlocking);
    });
    Ok(())
}

/// The error of a scope, lock or guard whose environment has ended.
fn ended(what: &str) -> Error {
    let error = latchkey::Error::new(
        latchkey::ErrorKind::Closed,
        format!("the {what} was given back: its JavaScript environment has ended"),
    );
    to_js(&error)
}

/// A scope: the namespace of the locks of a URL (`host:`, `process:`, `etcd://…`,
/// `postgres://…`, `redis://…`).
#[napi]
pub struct Scope {
    url: String,
    scope: Arc<Owned<latchkey::Scope>>,
}

impl Scope {
    fn scope(&self) -> Result<latchkey::Scope> {
        let scope = self.scope.lock().unwrap_or_else(|e| e.into_inner());
        scope.clone().ok_or_else(|| ended("scope"))
    }
}

#[napi]
impl Scope {
    /// Opens the scope `url` names; answers `done(error, scope)`.
    #[napi]
    pub fn open(env: Env, url: String, done: JsFunction) -> Result<()> {
        answer(&env, done, move |holdings| {
            let scope = latchkey::Scope::open(&url)?;
            Ok(Scope { url: scope.url().to_string(), scope: holdings.adopt(scope) })
        })
    }

    /// The scope's URL (with any password hidden).
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The name `name` with `capacity` permits; answers `done(error, lock)`.
    #[napi]
    pub fn open_lock(&self, env: Env, name: String, capacity: u32, done: JsFunction) -> Result<()> {
        let scope = self.scope()?;
        answer(&env, done, move |holdings| {
            let lock = scope.open_lock(&name, capacity)?;
            Ok(Lock { name: lock.name().as_str().to_string(), capacity, lock: holdings.adopt(Arc::new(lock)) })
        })
    }

    /// Whether anybody holds `name`; answers `done(error, locked)`.
    #[napi]
    pub fn is_locked(&self, env: Env, name: String, done: JsFunction) -> Result<()> {
        let scope = self.scope()?;
        answer(&env, done, move |_| scope.is_locked(&name))
    }

    /// A snapshot of `name` as JSON (capacity, inUse, holders, waiters, lastToken);
    /// answers `done(error, json)`.
    #[napi]
    pub fn inspect(&self, env: Env, name: String, done: JsFunction) -> Result<()> {
        let scope = self.scope()?;
        answer(&env, done, move |_| scope.inspect(&name).map(|state| state_json(&state)))
    }

    /// Closes the scope; answers `done(error)`.
    #[napi]
    pub fn close(&self, env: Env, done: JsFunction) -> Result<()> {
        let scope = self.scope()?;
        answer(&env, done, move |_| scope.close_blocking())
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
pub struct Lock {
    name: String,
    capacity: u32,
    lock: Arc<Owned<Arc<latchkey::Lock>>>,
}

impl Lock {
    fn lock(&self) -> Result<Arc<latchkey::Lock>> {
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        lock.clone().ok_or_else(|| ended("lock"))
    }
}

#[napi]
impl Lock {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// `permits` if they are free and nobody waits; answers `done(error, guard or null)`.
    #[napi]
    pub fn try_acquire(&self, env: Env, permits: u32, done: JsFunction) -> Result<()> {
        let lock = self.lock()?;
        answer(&env, done, move |holdings| Ok(lock.try_acquire(permits)?.map(|guard| Guard::adopted(holdings, guard))))
    }

    /// `permits` if they are free and nobody waits, decided on the calling thread: for
    /// scopes of this machine (`host:`, `process:`), whose try never waits for a holder or
    /// a server; `index.js` uses it before it waits.
    #[napi]
    pub fn try_acquire_now(&self, env: Env, permits: u32) -> Result<Option<Guard>> {
        let holdings = Holdings::of(&env)?;
        let guard = self.lock()?.try_acquire(permits).map_err(|e| to_js(&e))?;
        Ok(guard.map(|guard| Guard::adopted(&holdings, guard)))
    }

    /// Waits for `permits`, at most `timeout_ms` (negative: for good); answers
    /// `done(error, guard)`. The returned `Pending` gives the wait up.
    #[napi]
    pub fn acquire(&self, env: Env, permits: u32, timeout_ms: f64, done: JsFunction) -> Result<Pending> {
        let (lock, holdings, done): (_, _, Callback<Guard>) = (self.lock()?, Holdings::of(&env)?, callback(done)?);
        // Negative, infinite or too large for a Duration: for good (review finding:
        // `Infinity` panicked, which aborts the process).
        let timeout = (timeout_ms >= 0.0).then(|| Duration::try_from_secs_f64(timeout_ms / 1000.0).ok()).flatten();
        let waiting = holdings.clone();
        let task = runtime().spawn(async move {
            let granted = lock.acquire(permits, timeout).await.map(|guard| Guard::adopted(&waiting, guard));
            done.call(granted.map_err(|e| to_js(&e)), ThreadsafeFunctionCallMode::NonBlocking);
        });
        holdings.started(task.abort_handle());
        Ok(Pending(Mutex::new(Some(task))))
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
pub struct Guard(Arc<Owned<latchkey::Guard<'static>>>);

impl Guard {
    /// `guard`, held by JavaScript in the environment of `holdings`.
    fn adopted(holdings: &Holdings, guard: latchkey::Guard<'static>) -> Guard {
        Guard(holdings.adopt(guard))
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
    pub fn release(&self, env: Env, done: JsFunction) -> Result<()> {
        let held = self.held().take();
        answer(&env, done, move |_| held.ok_or_else(not_held)?.release())
    }

    /// If anybody waits, hands over and waits to be granted again at the back; answers
    /// `done(error)` (on an error the guard is given up). The returned `Pending` gives the
    /// wait up, and with it the lock.
    #[napi]
    pub fn cede(&self, env: Env, done: JsFunction) -> Result<Pending> {
        let (held, slot) = (self.held().take(), self.0.clone());
        let (holdings, done): (_, Callback<()>) = (Holdings::of(&env)?, callback(done)?);
        let waiting = holdings.clone();
        let task = runtime().spawn(async move {
            let ceded = match held {
                Some(guard) => guard.cede().await,
                None => Err(not_held()),
            };
            let result = ceded.map(|ceded| {
                // Put back in its slot, which the holdings know; given back if the
                // environment ended meanwhile (its end found the slot empty).
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ceded);
                if waiting.ended() {
                    drop(slot.lock().unwrap_or_else(|e| e.into_inner()).take());
                }
            });
            done.call(result.map_err(|e| to_js(&e)), ThreadsafeFunctionCallMode::NonBlocking);
        });
        holdings.started(task.abort_handle());
        Ok(Pending(Mutex::new(Some(task))))
    }
}

/// The capacity of a reader-writer lock: a read takes 1 permit, a write all of them.
#[napi]
pub const RWLOCK_CAPACITY: u32 = latchkey::RWLOCK_CAPACITY;
