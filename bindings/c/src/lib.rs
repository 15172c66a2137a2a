//! latchkey's C ABI (`include/latchkey.h`): open a scope by URL, open a name with a
//! capacity, acquire permits of it (blocking, with a timeout, or a try), release, read the
//! fencing token, ask whether a name is locked; errors as latchkey's codes (8400–8413) with
//! a message per thread. Thin: every call is one call of the `latchkey` crate. No Rust
//! panic crosses the boundary: one becomes error 8400 ("internal error").

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::time::Duration;

use latchkey_rs::{Error, ErrorKind, Guard, Lock, Scope};

/// A scope, opened by [`latchkey_scope_open`].
pub struct LatchkeyScope(Scope);
/// A name of a scope with its capacity, opened by [`latchkey_lock_open`].
pub struct LatchkeyLock(Lock);
/// Permits held, from [`latchkey_acquire`] or [`latchkey_try_acquire`].
pub struct LatchkeyGuard(Guard<'static>);

/// Success.
const OK: i32 = 0;

thread_local! {
    /// The last error of this thread: its code and message.
    static LAST_ERROR: RefCell<(i32, CString)> = RefCell::new((OK, CString::default()));
}

fn set_error(code: i32, message: &str) -> i32 {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // During the thread's exit the message has nowhere to go; the code is still returned.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = (code, message));
    code
}

fn fail(error: &Error) -> i32 {
    set_error(error.code() as i32, &error.to_string())
}

/// Runs `body`, turning its error, a panic, or a null argument into an error code.
fn call(body: impl FnOnce() -> Result<(), Error>) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = (OK, CString::default()));
        match body() {
            Ok(()) => OK,
            Err(error) => fail(&error),
        }
    }));
    outcome.unwrap_or_else(|_| set_error(ErrorKind::Generic.code() as i32, "internal error: a panic in liblatchkey"))
}

fn null(what: &str) -> Error {
    Error::new(ErrorKind::Generic, format!("{what} is NULL"))
}

/// The C string `text` as UTF-8.
///
/// # Safety
///
/// `text` is NULL or a NUL-terminated string that lives for the call.
unsafe fn text<'a>(text: *const c_char, what: &str, invalid: ErrorKind) -> Result<&'a str, Error> {
    if text.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null, and NUL-terminated by the caller's contract.
    let text = unsafe { CStr::from_ptr(text) };
    text.to_str().map_err(|_| Error::new(invalid, format!("{what} is not UTF-8")))
}

/// Fails if `out` is NULL: checked before anything is done, so that nothing is taken that
/// could not be handed over (review finding: a lock acquired into a NULL out-pointer stayed
/// held).
fn writable<T>(out: *mut T) -> Result<(), Error> {
    if out.is_null() {
        return Err(null("the out pointer"));
    }
    Ok(())
}

/// `*out = value` if `out` is not NULL.
///
/// # Safety
///
/// `out` is NULL or valid for a write.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), Error> {
    if out.is_null() {
        return Err(null("the out pointer"));
    }
    // SAFETY: non-null and writable by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}

/// Opens the scope `url` names (`host:`, `process:`, `etcd://…`, `postgres://…`,
/// `redis://…`) into `*scope_out`.
///
/// # Safety
///
/// `url` is a NUL-terminated string; `scope_out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn latchkey_scope_open(url: *const c_char, scope_out: *mut *mut LatchkeyScope) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        writable(scope_out)?;
        let url = unsafe { text(url, "the URL", ErrorKind::InvalidScope) }?;
        let scope = Scope::open(url)?;
        // SAFETY: the caller's contract.
        unsafe { put(scope_out, Box::into_raw(Box::new(LatchkeyScope(scope)))) }
    })
}

/// Frees a scope (NULL is ignored). Locks and guards of it stay usable; a scope over a
/// network ends its session once the last of them is gone.
///
/// # Safety
///
/// `scope` is NULL or from [`latchkey_scope_open`], not freed before.
#[no_mangle]
pub unsafe extern "C" fn latchkey_scope_free(scope: *mut LatchkeyScope) {
    if !scope.is_null() {
        // SAFETY: from Box::into_raw, freed once by the caller's contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(scope) })));
    }
}

/// Opens the name `name` of `scope` with `capacity` permits into `*lock_out`: 1 for a
/// mutex, `LATCHKEY_RWLOCK_CAPACITY` for a reader-writer lock, n for a semaphore of n.
///
/// # Safety
///
/// `scope` is from [`latchkey_scope_open`]; `name` a NUL-terminated string; `lock_out`
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn latchkey_lock_open(
    scope: *const LatchkeyScope,
    name: *const c_char,
    capacity: u32,
    lock_out: *mut *mut LatchkeyLock,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let scope = unsafe { scope.as_ref() }.ok_or_else(|| null("the scope"))?;
        writable(lock_out)?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, "the name", ErrorKind::InvalidName) }?;
        let lock = scope.0.open_lock(name, capacity)?;
        // SAFETY: the caller's contract.
        unsafe { put(lock_out, Box::into_raw(Box::new(LatchkeyLock(lock)))) }
    })
}

/// Frees a lock (NULL is ignored). Its guards stay held.
///
/// # Safety
///
/// `lock` is NULL or from [`latchkey_lock_open`], not freed before.
#[no_mangle]
pub unsafe extern "C" fn latchkey_lock_free(lock: *mut LatchkeyLock) {
    if !lock.is_null() {
        // SAFETY: from Box::into_raw, freed once by the caller's contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(lock) })));
    }
}

/// Blocks until `permits` of `lock` are granted, at most `timeout_ms` milliseconds (a
/// negative value waits for good; then error `LATCHKEY_TIMEOUT`), into `*guard_out`.
///
/// # Safety
///
/// `lock` is from [`latchkey_lock_open`]; `guard_out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn latchkey_acquire(
    lock: *const LatchkeyLock,
    permits: u32,
    timeout_ms: i64,
    guard_out: *mut *mut LatchkeyGuard,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let lock = unsafe { lock.as_ref() }.ok_or_else(|| null("the lock"))?;
        writable(guard_out)?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let guard = lock.0.acquire_blocking(permits, timeout)?;
        // SAFETY: the caller's contract.
        unsafe { put(guard_out, Box::into_raw(Box::new(LatchkeyGuard(guard)))) }
    })
}

/// Takes `permits` of `lock` if they are free and nobody waits: `*guard_out` is the guard,
/// or NULL when they are not free (and the call returns 0).
///
/// # Safety
///
/// `lock` is from [`latchkey_lock_open`]; `guard_out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn latchkey_try_acquire(
    lock: *const LatchkeyLock,
    permits: u32,
    guard_out: *mut *mut LatchkeyGuard,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let lock = unsafe { lock.as_ref() }.ok_or_else(|| null("the lock"))?;
        writable(guard_out)?;
        let guard = lock.0.try_acquire(permits)?;
        let guard = guard.map_or(ptr::null_mut(), |guard| Box::into_raw(Box::new(LatchkeyGuard(guard))));
        // SAFETY: the caller's contract.
        unsafe { put(guard_out, guard) }
    })
}

/// Releases and frees `guard` (it is freed even when the release fails, as when the hold
/// was lost: error `LATCHKEY_HANDLE_LOST`).
///
/// # Safety
///
/// `guard` is from [`latchkey_acquire`] or [`latchkey_try_acquire`], not freed before.
#[no_mangle]
pub unsafe extern "C" fn latchkey_release(guard: *mut LatchkeyGuard) -> i32 {
    call(|| {
        if guard.is_null() {
            return Err(null("the guard"));
        }
        // SAFETY: from Box::into_raw, freed once by the caller's contract.
        let guard = unsafe { Box::from_raw(guard) };
        guard.0.release()
    })
}

/// Frees `guard`, releasing what it holds without reporting how that went (NULL is
/// ignored).
///
/// # Safety
///
/// `guard` is NULL or from [`latchkey_acquire`] or [`latchkey_try_acquire`], not freed
/// before.
#[no_mangle]
pub unsafe extern "C" fn latchkey_guard_free(guard: *mut LatchkeyGuard) {
    if !guard.is_null() {
        // SAFETY: from Box::into_raw, freed once by the caller's contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(guard) })));
    }
}

/// The fencing token of the grant (0 for NULL): strictly greater than every earlier
/// grant's of the name in the scope.
///
/// # Safety
///
/// `guard` is NULL or a live guard.
#[no_mangle]
pub unsafe extern "C" fn latchkey_guard_fencing_token(guard: *const LatchkeyGuard) -> u64 {
    // SAFETY: the caller's contract.
    unsafe { guard.as_ref() }.map_or(0, |guard| guard.0.fencing_token())
}

/// Whether the hold is known to be lost (true for NULL).
///
/// # Safety
///
/// `guard` is NULL or a live guard.
#[no_mangle]
pub unsafe extern "C" fn latchkey_guard_is_lost(guard: *const LatchkeyGuard) -> bool {
    // SAFETY: the caller's contract.
    unsafe { guard.as_ref() }.is_none_or(|guard| guard.0.is_lost())
}

/// If anybody waits, hands the permits to the head of the queue and blocks until granted
/// again at the back (the step of an interval lock); if nobody waits, keeps them.
/// `*guard` becomes the new grant, with a new fencing token; on an error the permits are
/// given up and `*guard` is freed and set to NULL.
///
/// # Safety
///
/// `guard` points to a live guard.
#[no_mangle]
pub unsafe extern "C" fn latchkey_guard_cede(guard: *mut *mut LatchkeyGuard) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { latchkey_guard_cede_timeout(guard, -1) }
}

/// [`latchkey_guard_cede`], waiting at most `timeout_ms` milliseconds to be granted again
/// (a negative value waits for good; a scope over a network takes at least its first round
/// trip's grace, 250 ms): then error `LATCHKEY_TIMEOUT`, and the permits are
/// given up (the request withdrawn) and `*guard` is freed and set to NULL, as on every
/// error of a cede.
///
/// # Safety
///
/// `guard` points to a live guard.
#[no_mangle]
pub unsafe extern "C" fn latchkey_guard_cede_timeout(guard: *mut *mut LatchkeyGuard, timeout_ms: i64) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let slot = unsafe { guard.as_mut() }.ok_or_else(|| null("the guard pointer"))?;
        if slot.is_null() {
            return Err(null("the guard"));
        }
        // SAFETY: from Box::into_raw; the slot is emptied before anything can fail.
        let held = unsafe { Box::from_raw(std::mem::replace(slot, ptr::null_mut())) };
        let ceded = match u64::try_from(timeout_ms) {
            Ok(ms) => held.0.cede_blocking_timeout(Duration::from_millis(ms))?,
            Err(_) => held.0.cede_blocking()?,
        };
        *slot = Box::into_raw(Box::new(LatchkeyGuard(ceded)));
        Ok(())
    })
}

/// Whether anybody holds `name` in `scope`, into `*locked_out`.
///
/// # Safety
///
/// `scope` is from [`latchkey_scope_open`]; `name` a NUL-terminated string; `locked_out`
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn latchkey_is_locked(
    scope: *const LatchkeyScope,
    name: *const c_char,
    locked_out: *mut bool,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let scope = unsafe { scope.as_ref() }.ok_or_else(|| null("the scope"))?;
        writable(locked_out)?;
        // SAFETY: the caller's contract.
        let name = unsafe { text(name, "the name", ErrorKind::InvalidName) }?;
        let locked = scope.0.is_locked(name)?;
        // SAFETY: the caller's contract.
        unsafe { put(locked_out, locked) }
    })
}

/// The code of this thread's last error (0 if its last call succeeded).
#[no_mangle]
pub extern "C" fn latchkey_error_code() -> i32 {
    LAST_ERROR.with(|last| last.borrow().0)
}

/// The message of this thread's last error ("" if its last call succeeded), with the lock's
/// name and scope; valid until this thread's next call into liblatchkey.
#[no_mangle]
pub extern "C" fn latchkey_error_message() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().1.as_ptr())
}

/// The library's version, e.g. "0.1.0".
#[no_mangle]
pub extern "C" fn latchkey_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
