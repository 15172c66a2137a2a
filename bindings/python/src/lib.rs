//! `latchkey._latchkey`: the native half of the Python package. Thin: a `Scope`, a `Lock`
//! (permits of a name's capacity, the one model under every primitive) and a `Guard`, each
//! one call of the `latchkey` crate; the primitives, context managers, asyncio and the
//! exceptions are Python (`python/latchkey/`).
//!
//! Waiting runs on a small runtime of the module's, so that a wait can be given up: a
//! blocking `acquire` releases the GIL and looks for signals (Ctrl-C) every 50 ms, and an
//! asyncio wait is cancelled with its task; either way the request is withdrawn before the
//! call returns.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokio::task::JoinHandle;

/// Whether the scope at `url` is one of this machine's (`host:`, `process:`): its tries and
/// releases are a few writes to memory, not worth giving the GIL up for (a scope over a
/// network waits for its server: the GIL is released then).
fn is_local(url: &str) -> bool {
    url.starts_with("host:") || url.starts_with("process:")
}

/// Runs `f`, with the GIL released unless `local`.
fn maybe_without_gil<T: Send>(py: Python<'_>, local: bool, f: impl FnOnce() -> T + Send) -> T {
    match local {
        true => f(),
        false => py.allow_threads(f),
    }
}

/// How often a blocking wait looks for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The module's runtime: where waits run, so that they can be aborted. A process forked
/// from one that had started it gets a new one (the old one's thread is not in the child;
/// review finding: waits hung in children of `multiprocessing`).
fn runtime() -> Arc<tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);
    let mut current = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((owner, runtime)) = current.as_ref() {
        if *owner == pid {
            return runtime.clone();
        }
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("latchkey-python")
            .enable_time()
            .build()
            .expect("latchkey: cannot start the module's runtime"),
    );
    // The parent's runtime has no thread here: dropping it would wait for one.
    if let Some((_, inherited)) = current.replace((pid, runtime.clone())) {
        std::mem::forget(inherited);
    }
    runtime
}

/// A latchkey error as the Python exception of its code (`latchkey.errors.from_native`).
fn to_py(py: Python<'_>, error: &latchkey::Error) -> PyErr {
    let raised = py.import("latchkey.errors").and_then(|errors| {
        errors.getattr("from_native")?.call1((
            error.code(),
            error.to_string(),
            error.name().map(str::to_string),
            error.scope().map(str::to_string),
        ))
    });
    match raised {
        Ok(exception) => PyErr::from_value(exception),
        Err(e) => e,
    }
}

fn to_py_now(error: &latchkey::Error) -> PyErr {
    Python::with_gil(|py| to_py(py, error))
}

/// A timeout in seconds: `None`, negative, infinite or too large for a `Duration` waits for
/// good (review finding: `1e300` panicked); NaN is refused.
fn timeout_of(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        Some(s) if s.is_nan() => Err(PyValueError::new_err("timeout must be a number of seconds, not NaN")),
        Some(s) if s >= 0.0 => Ok(Duration::try_from_secs_f64(s).ok()),
        _ => Ok(None),
    }
}

/// A scope: the namespace of the locks of a URL (`host:`, `process:`, `etcd://…`,
/// `postgres://…`, `redis://…`).
#[pyclass(module = "latchkey._latchkey", frozen)]
struct Scope(latchkey::Scope);

#[pymethods]
impl Scope {
    #[new]
    fn new(py: Python<'_>, url: &str) -> PyResult<Scope> {
        py.allow_threads(|| latchkey::Scope::open(url)).map(Scope).map_err(|e| to_py(py, &e))
    }

    /// The scope's URL (with any password hidden).
    #[getter]
    fn url(&self) -> String {
        self.0.url().to_string()
    }

    /// The name `name` with `capacity` permits.
    fn open_lock(&self, py: Python<'_>, name: &str, capacity: u32) -> PyResult<Lock> {
        let lock = py.allow_threads(|| self.0.open_lock(name, capacity)).map_err(|e| to_py(py, &e))?;
        Ok(Lock(Arc::new(lock), is_local(self.0.url())))
    }

    /// Whether anybody holds `name`.
    fn is_locked(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        py.allow_threads(|| self.0.is_locked(name)).map_err(|e| to_py(py, &e))
    }

    /// A snapshot of `name` as a dict: capacity, in_use, holders, waiters, queue, last_token.
    fn inspect<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyDict>> {
        let state = py.allow_threads(|| self.0.inspect(name)).map_err(|e| to_py(py, &e))?;
        state_dict(py, &state)
    }

    /// Closes the scope (its session ends, for scopes over a network).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        py.allow_threads(|| self.0.close_blocking()).map_err(|e| to_py(py, &e))
    }
}

fn state_dict<'py>(py: Python<'py>, state: &latchkey::State) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("name", state.name.as_str())?;
    dict.set_item("capacity", state.capacity)?;
    dict.set_item("in_use", state.in_use)?;
    dict.set_item("waiters", state.waiters)?;
    dict.set_item("waiting_exclusive", state.waiting_exclusive)?;
    dict.set_item("last_token", state.last_token)?;
    let holders = PyList::empty(py);
    for holder in &state.holders {
        let entry = PyDict::new(py);
        entry.set_item("pid", holder.pid)?;
        entry.set_item("permits", holder.permits)?;
        entry.set_item("held_for", holder.held_for.map(|d| d.as_secs_f64()))?;
        entry.set_item("host", holder.identity.host.clone())?;
        holders.append(entry)?;
    }
    dict.set_item("holders", holders)?;
    let queue = PyList::empty(py);
    for waiter in &state.queue {
        let entry = PyDict::new(py);
        entry.set_item("pid", waiter.pid)?;
        entry.set_item("permits", waiter.permits)?;
        entry.set_item("waiting_for", waiter.waiting_for.map(|d| d.as_secs_f64()))?;
        entry.set_item("host", waiter.identity.host.clone())?;
        queue.append(entry)?;
    }
    dict.set_item("queue", queue)?;
    Ok(dict)
}

/// A name of a scope with its capacity: requests take permits of it, in arrival order.
#[pyclass(module = "latchkey._latchkey", frozen)]
/// The lock, and whether its scope is one of this machine's ([`is_local`]).
struct Lock(Arc<latchkey::Lock>, bool);

#[pymethods]
impl Lock {
    #[getter]
    fn name(&self) -> String {
        self.0.name().as_str().to_string()
    }

    #[getter]
    fn capacity(&self) -> u32 {
        self.0.capacity()
    }

    /// `permits` if they are free and nobody waits, else `None`.
    fn try_acquire(&self, py: Python<'_>, permits: u32) -> PyResult<Option<Guard>> {
        let local = self.1;
        let guard = maybe_without_gil(py, local, || self.0.try_acquire(permits)).map_err(|e| to_py(py, &e))?;
        Ok(guard.map(Guard::new))
    }

    /// Blocks for `permits`, at most `timeout` seconds (`None`: for good), with the GIL
    /// released; a signal's exception (KeyboardInterrupt) withdraws the request first.
    #[pyo3(signature = (permits, timeout=None))]
    fn acquire(&self, py: Python<'_>, permits: u32, timeout: Option<f64>) -> PyResult<Guard> {
        let timeout = timeout_of(timeout)?;
        let local = self.1;
        if let Some(guard) = maybe_without_gil(py, local, || self.0.try_acquire(permits)).map_err(|e| to_py(py, &e))? {
            return Ok(Guard::new(guard));
        }
        let lock = self.0.clone();
        wait_interruptibly(py, async move { lock.acquire(permits, timeout).await }).map(Guard::new)
    }

    /// Starts waiting for `permits` (at most `timeout` seconds) on the module's runtime and
    /// calls `done(guard, error)` from its thread; the returned `Pending` cancels the wait.
    #[pyo3(signature = (permits, timeout, done))]
    fn start_acquire(&self, permits: u32, timeout: Option<f64>, done: PyObject) -> PyResult<Pending> {
        let timeout = timeout_of(timeout)?;
        let lock = self.0.clone();
        let task = runtime().spawn(async move {
            let granted = lock.acquire(permits, timeout).await;
            Python::with_gil(|py| {
                let called = match granted {
                    Ok(guard) => done.call1(py, (Guard::new(guard), py.None())),
                    Err(e) => done.call1(py, (py.None(), to_py(py, &e).into_value(py))),
                };
                if let Err(e) = called {
                    e.write_unraisable(py, None);
                }
            });
        });
        Ok(Pending { pid: std::process::id(), task: Mutex::new(Some(task)) })
    }

    /// A snapshot of the name, as `Scope.inspect`.
    fn inspect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let state = py.allow_threads(|| self.0.inspect()).map_err(|e| to_py(py, &e))?;
        state_dict(py, &state)
    }
}

/// Runs `work` on the module's runtime and blocks for its answer with the GIL released,
/// looking for signals every 50 ms: a signal's exception (KeyboardInterrupt) aborts the work
/// (which withdraws its request, or gives up a cede) before it is raised.
fn wait_interruptibly<T: Send + 'static>(
    py: Python<'_>,
    work: impl std::future::Future<Output = latchkey::Result<T>> + Send + 'static,
) -> PyResult<T> {
    let (sent, answer) = mpsc::channel();
    let task = runtime().spawn(async move {
        let _ = sent.send(work.await);
    });
    let mut answer = answer;
    loop {
        // The receiver goes to the GIL-free closure and comes back (it is not `Sync`).
        let (got, back) = py.allow_threads(move || (answer.recv_timeout(SIGNAL_CHECK), answer));
        answer = back;
        match got {
            Ok(done) => return done.map_err(|e| to_py(py, &e)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupted) = py.check_signals() {
                    py.allow_threads(|| give_up(task, answer));
                    return Err(interrupted);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let ended = latchkey::Error::new(latchkey::ErrorKind::Generic, "the wait ended without an answer");
                return Err(to_py(py, &ended));
            }
        }
    }
}

/// Aborts a waiting task and waits until it is gone, so that its request is withdrawn (a
/// grant that raced the abort is given back with the answer).
fn give_up<T>(task: JoinHandle<()>, answer: mpsc::Receiver<T>) {
    task.abort();
    let _ = runtime().block_on(task);
    drop(answer);
}

/// A wait started by `Lock.start_acquire`.
#[pyclass(module = "latchkey._latchkey", frozen)]
struct Pending {
    /// The process whose runtime runs the wait: in a child forked since, it does not run
    /// (review finding: a cancel there waited for it for ever).
    pid: u32,
    task: Mutex<Option<JoinHandle<()>>>,
}

#[pymethods]
impl Pending {
    /// Gives the wait up and withdraws its request; returns once it is withdrawn. A grant
    /// that came first is still reported to `done`.
    fn cancel(&self, py: Python<'_>) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if std::process::id() != self.pid {
            // The parent's wait, which is not in this process: nothing to withdraw here.
            std::mem::forget(task);
            return;
        }
        if let Some(task) = task {
            task.abort();
            py.allow_threads(|| {
                let _ = runtime().block_on(task);
            });
        }
    }
}

/// Permits held: released by `release()`, or when garbage-collected.
#[pyclass(module = "latchkey._latchkey", frozen)]
struct Guard(Mutex<Option<latchkey::Guard<'static>>>);

impl Guard {
    fn new(guard: latchkey::Guard<'static>) -> Guard {
        Guard(Mutex::new(Some(guard)))
    }

    fn take(&self) -> Option<latchkey::Guard<'static>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn with<T>(&self, f: impl FnOnce(&latchkey::Guard<'static>) -> T) -> PyResult<T> {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref().map(f).ok_or_else(not_held)
    }
}

fn not_held() -> PyErr {
    to_py_now(&latchkey::Error::new(latchkey::ErrorKind::NotHeld, "the guard was already released"))
}

#[pymethods]
impl Guard {
    /// The grant's fencing token: greater than every earlier grant's of the name.
    #[getter]
    fn fencing_token(&self) -> PyResult<u64> {
        self.with(|guard| guard.fencing_token())
    }

    #[getter]
    fn permits(&self) -> PyResult<u32> {
        self.with(|guard| guard.permits())
    }

    /// Whether the guard still holds (not released, not given up by a failed cede).
    #[getter]
    fn held(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Whether the hold is known to be lost (a session over a network ended).
    fn is_lost(&self) -> PyResult<bool> {
        self.with(|guard| guard.is_lost())
    }

    /// Gives the permits back; a guard released before raises NotHeld.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let guard = self.take().ok_or_else(not_held)?;
        let local = is_local(guard.scope());
        maybe_without_gil(py, local, || guard.release()).map_err(|e| to_py(py, &e))
    }

    /// If anybody waits, hands over and blocks until granted again at the back (a new
    /// fencing token); if nobody waits, keeps the grant. On an error, or a signal's
    /// exception (Ctrl-C) while it waits, the guard is given up.
    fn cede(&self, py: Python<'_>) -> PyResult<()> {
        let guard = self.take().ok_or_else(not_held)?;
        let ceded = wait_interruptibly(py, guard.cede())?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(ceded);
        Ok(())
    }
}

/// The native module.
#[pymodule]
fn _latchkey(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Scope>()?;
    module.add_class::<Lock>()?;
    module.add_class::<Guard>()?;
    module.add_class::<Pending>()?;
    module.add("RWLOCK_CAPACITY", latchkey::RWLOCK_CAPACITY)?;
    Ok(())
}
