//! `fork()` without `exec`: a child gets a copy of every open namespace, the parent's
//! process slot included. Used in the child, it would pass for the parent; and its copy
//! of the namespace file would keep the parent's liveness lock held after the parent dies.
//!
//! So a handler that runs in every forked child (`pthread_atfork`) counts the fork, points
//! each namespace's descriptor at `/dev/null` and replaces its mapping with anonymous
//! zeroed memory: the child then holds no reference to the parent's open file
//! description, whose lock the kernel drops with the last reference, a mapping's
//! included. A namespace remembers the count it was opened under; a copy in
//! a child sees another count and refuses to be used (the child opens the scope again
//! and gets a slot of its own). `exec` needs none of this: the descriptors are
//! close-on-exec.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Once;

use crate::layout::FILE_SIZE;

/// How many forks this process is removed from the first process that loaded latchkey.
static FORKS: AtomicU32 = AtomicU32::new(0);

/// Descriptors of the open namespace files (-1 when free)...
static FILES: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];
/// ...and their mappings, of `layout::FILE_SIZE` bytes.
static MAPS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Held while a namespace's descriptor and mapping are made and registered, or unmade and
/// forgotten, and across every `fork()`: a child never inherits one the handler does not
/// know of.
static GATE: AtomicBool = AtomicBool::new(false);

/// Holds the gate until dropped. (A `fork()` in another thread waits meanwhile.)
pub(crate) struct Gate(());

/// Takes the gate.
pub(crate) fn gate() -> Gate {
    install_handlers();
    close_gate();
    Gate(())
}

impl Drop for Gate {
    fn drop(&mut self) {
        GATE.store(false, Ordering::Release);
    }
}

fn close_gate() {
    while GATE.swap(true, Ordering::Acquire) {
        std::thread::yield_now();
    }
}

fn install_handlers() {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: the handlers are `extern "C" fn()`s; `in_child` only makes
        // async-signal-safe calls, as a fork handler must.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    });
}

/// Runs in the parent before `fork()`: waits for the gate.
extern "C" fn before_fork() {
    close_gate();
}

/// Runs in the parent after `fork()`.
extern "C" fn in_parent() {
    GATE.store(false, Ordering::Release);
}

/// The number of forks so far: a namespace opened now belongs to this process while the
/// number stays the same.
pub(crate) fn generation() -> u32 {
    FORKS.load(Ordering::Relaxed)
}

/// Registers the descriptor and the mapping of an open namespace file, under the
/// [`gate`]. Returns a token for [`forget`], or `None` if the table is full (the process
/// then has 256 namespace directories open; a forked child keeps the extra ones'
/// liveness locks).
pub(crate) fn register(_gate: &Gate, fd: RawFd, map: *mut u8) -> Option<usize> {
    let token = FILES.iter().position(|slot| slot.load(Ordering::Relaxed) == -1)?;
    MAPS[token].store(map as usize, Ordering::Relaxed);
    FILES[token].store(fd, Ordering::Release);
    Some(token)
}

/// Unregisters a namespace, under the [`gate`], once its mapping and descriptor are gone.
pub(crate) fn forget(_gate: &Gate, token: usize) {
    MAPS[token].store(0, Ordering::Release);
    FILES[token].store(-1, Ordering::Release);
}

/// Runs in the child after `fork()`, before it returns.
extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    forget_namespaces();
    GATE.store(false, Ordering::Release);
}

/// In a child: lets go of every namespace descriptor and mapping copied from the parent.
fn forget_namespaces() {
    // SAFETY: open, dup3, mmap and close are plain system calls, safe in a forked child
    // (async-signal-safe); the path is a C string.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if null < 0 {
        return;
    }
    for (file, map) in FILES.iter().zip(&MAPS) {
        let (fd, map) = (file.load(Ordering::Relaxed), map.load(Ordering::Relaxed));
        if fd < 0 {
            continue;
        }
        // SAFETY: replaces the child's copy of a descriptor it owns with /dev/null
        // (still close-on-exec); the namespace's `File` later closes that, harmlessly.
        unsafe { libc::dup3(null, fd, libc::O_CLOEXEC) };
        if map == 0 {
            continue;
        }
        let (anonymous, rw) =
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: `map` is the child's copy of a live namespace mapping of FILE_SIZE
        // bytes; MAP_FIXED replaces it in place with zeroed memory of the same size, which
        // the namespace later unmaps as it would have the file mapping.
        unsafe { libc::mmap(map as *mut libc::c_void, FILE_SIZE, rw, anonymous, -1, 0) };
    }
    // SAFETY: `null` is ours.
    unsafe { libc::close(null) };
}
