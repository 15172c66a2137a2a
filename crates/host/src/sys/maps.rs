//! The mappings of namespace files, and what must happen to them outside the normal flow
//! of the program: in a child forked without `exec`, and on a bus error.
//!
//! **Registry.** Every open namespace registers its descriptors and mapping here, in
//! static tables that a fork handler and a signal handler can read. Each registration
//! also owns a private *alarm* word, which sleepers of that namespace watch besides
//! their own word (see `futex::sleep`), and a *lost* flag.
//!
//! **`fork()` without `exec`.** A child would inherit the parent's process slot, and its
//! copies of the namespace descriptor and mapping would keep the parent's liveness lock
//! held after the parent dies (the kernel drops an OFD lock with the last reference to
//! the open file description, a mapping's included). So a `pthread_atfork` child handler
//! counts the fork, points each namespace descriptor at `/dev/null`, and replaces each
//! mapping with zeroed anonymous memory. A namespace opened under another fork count
//! refuses to be used (`HandleLost`); the child opens the scope again. A *gate*, which
//! the fork handler's prepare step also takes, covers registering and unregistering, and
//! the process's table of open namespaces, so a child never inherits a half-made entry.
//!
//! **A bus error.** If the namespace file is truncated under us, touching a page past its
//! new end raises SIGBUS. The handler, for an address inside a registered mapping,
//! replaces the whole mapping with zeroed anonymous memory (the faulting instruction
//! then completes on it), marks the namespace lost and rings its alarm: the process
//! goes on, and every use of the namespace reports it lost. Other faults go to the
//! handler that was installed before, or kill the process as they would have.

use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Once;

/// Namespaces one process can have open at once.
pub(crate) const REGISTRATIONS: usize = 256;

/// How many forks this process is removed from the first process that loaded latchkey.
static FORKS: AtomicU32 = AtomicU32::new(0);

/// Per registration: the namespace file's and directory's descriptors (-1 when free)...
static FILES: [AtomicI32; REGISTRATIONS] = [const { AtomicI32::new(-1) }; REGISTRATIONS];
static DIRS: [AtomicI32; REGISTRATIONS] = [const { AtomicI32::new(-1) }; REGISTRATIONS];
/// ...the mapping's start and length (0 when none)...
static MAPS: [AtomicUsize; REGISTRATIONS] = [const { AtomicUsize::new(0) }; REGISTRATIONS];
static LENS: [AtomicUsize; REGISTRATIONS] = [const { AtomicUsize::new(0) }; REGISTRATIONS];
/// ...whether it is lost, and its alarm word.
static LOST: [AtomicBool; REGISTRATIONS] = [const { AtomicBool::new(false) }; REGISTRATIONS];
static ALARMS: [AtomicU32; REGISTRATIONS] = [const { AtomicU32::new(0) }; REGISTRATIONS];
static USED: [AtomicBool; REGISTRATIONS] = [const { AtomicBool::new(false) }; REGISTRATIONS];

/// Held while a namespace is registered or unregistered, while the process's table of
/// open namespaces is used, and across every `fork()`.
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

/// The number of forks so far: a namespace opened now belongs to this process while the
/// number stays the same.
pub(crate) fn generation() -> u32 {
    FORKS.load(Ordering::Relaxed)
}

/// One namespace's registration; unregistered by [`unregister`].
#[derive(Debug)]
pub(crate) struct Registration(usize);

impl Registration {
    /// Whether the namespace was lost (its mapping cut short, its file deleted or replaced).
    #[inline]
    pub(crate) fn is_lost(&self) -> bool {
        LOST[self.0].load(Ordering::Acquire)
    }

    /// Marks the namespace lost and rings its alarm.
    pub(crate) fn set_lost(&self) {
        mark_lost(self.0);
    }

    /// The alarm word, rung (changed and woken) when the namespace is lost.
    pub(crate) fn alarm(&self) -> &'static AtomicU32 {
        &ALARMS[self.0]
    }
}

/// Registers an open namespace's descriptors and mapping, under the gate. `None` if
/// [`REGISTRATIONS`] namespaces are open already.
pub(crate) fn register(_gate: &Gate, file: RawFd, dir: RawFd, map: NonNull<u8>, len: usize) -> Option<Registration> {
    let at = USED.iter().position(|used| !used.load(Ordering::Relaxed))?;
    USED[at].store(true, Ordering::Relaxed);
    LOST[at].store(false, Ordering::Relaxed);
    MAPS[at].store(map.as_ptr() as usize, Ordering::Relaxed);
    LENS[at].store(len, Ordering::Relaxed);
    DIRS[at].store(dir, Ordering::Relaxed);
    FILES[at].store(file, Ordering::Release);
    Some(Registration(at))
}

/// Unregisters a namespace, under the gate, once its mapping and descriptors are gone.
pub(crate) fn unregister(_gate: &Gate, registration: Registration) {
    let at = registration.0;
    FILES[at].store(-1, Ordering::Release);
    DIRS[at].store(-1, Ordering::Relaxed);
    MAPS[at].store(0, Ordering::Release);
    LENS[at].store(0, Ordering::Relaxed);
    USED[at].store(false, Ordering::Release);
}

fn mark_lost(at: usize) {
    LOST[at].store(true, Ordering::Release);
    ALARMS[at].fetch_add(1, Ordering::AcqRel);
    super::futex::wake_private(&ALARMS[at]);
}

/// Maps `len` bytes of `file` from offset 0, shared, read-write, without reserving swap:
/// the file may be shorter (pages past its end are never touched while it is intact).
pub(crate) fn map_file(file: RawFd, len: usize) -> std::io::Result<NonNull<u8>> {
    // SAFETY: a fresh shared mapping of a descriptor the caller keeps open; no existing
    // memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            file,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast()).expect("mmap does not return null"))
}

/// Unmaps a mapping made by [`map_file`].
///
/// # Safety
/// Nothing may use the mapping afterwards.
pub(crate) unsafe fn unmap(map: NonNull<u8>, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(map.as_ptr().cast(), len) };
}

/// `/dev/null`, opened before any fork: a child at its descriptor limit could not open it.
static NULL: AtomicI32 = AtomicI32::new(-1);

fn install_handlers() {
    static HANDLERS: Once = Once::new();
    HANDLERS.call_once(|| {
        // SAFETY: a plain system call on a C string.
        NULL.store(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }, Ordering::Release);
        // Settled before any fork: a child must not find it half made.
        super::futex::has_waitv();
        // SAFETY: the handlers are `extern "C" fn()`s; `in_child` only makes
        // async-signal-safe calls, as a fork handler must.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
        install_bus_handler();
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

/// Runs in the child after `fork()`, before it returns.
extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    forget_namespaces();
    GATE.store(false, Ordering::Release);
}

/// In a child: lets go of every namespace descriptor and mapping copied from the parent.
fn forget_namespaces() {
    let null = NULL.load(Ordering::Acquire);
    for at in 0..REGISTRATIONS {
        for fd in [FILES[at].load(Ordering::Relaxed), DIRS[at].load(Ordering::Relaxed)] {
            if fd >= 0 {
                // SAFETY: replaces the child's copy of a descriptor it owns with /dev/null
                // (still close-on-exec); the namespace later closes that, harmlessly. Where
                // /dev/null could not be opened, closing it is the next best thing (the
                // namespace's close of it then fails, harmlessly). dup3 and close are plain
                // system calls, safe in a forked child.
                unsafe {
                    if null < 0 || libc::dup3(null, fd, libc::O_CLOEXEC) < 0 {
                        libc::close(fd);
                    }
                }
            }
        }
        // The mapping holds a reference to the open file description too: replaced always.
        replace_with_zeroes(at);
    }
}

/// Replaces registration `at`'s mapping, if any, in place with zeroed anonymous memory of
/// the same size, which the namespace later unmaps as it would have the file mapping.
/// Returns `false` if it could not.
fn replace_with_zeroes(at: usize) -> bool {
    let (map, len) = (MAPS[at].load(Ordering::Acquire), LENS[at].load(Ordering::Relaxed));
    if map == 0 {
        return true;
    }
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // SAFETY: `map..map+len` is a live namespace mapping of this process; MAP_FIXED
    // replaces it in place. mmap is a plain system call, safe in a signal handler.
    let replaced =
        unsafe { libc::mmap(map as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    replaced != libc::MAP_FAILED
}

/// The SIGBUS action that was installed before ours.
static mut PREVIOUS: Option<libc::sigaction> = None;

/// Our SIGBUS action.
fn bus_action() -> libc::sigaction {
    // SAFETY: a zeroed sigaction is valid; the handler and flags are filled in.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_bus_error as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        action
    }
}

fn install_bus_handler() {
    // SAFETY: installs our action and keeps the previous one for faults that are not ours.
    // Runs once, before any namespace is mapped, so `PREVIOUS` is written before the
    // handler can read it.
    unsafe {
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &bus_action(), &mut previous) == 0 {
            *std::ptr::addr_of_mut!(PREVIOUS) = Some(previous);
        }
    }
}

extern "C" fn on_bus_error(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let (address, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    // Sent by a process (kill, raise), not a fault: not ours, and it will not repeat.
    let sent = code <= 0;
    for at in (0..REGISTRATIONS).filter(|_| !sent) {
        let (map, len) = (MAPS[at].load(Ordering::Acquire), LENS[at].load(Ordering::Relaxed));
        if map != 0 && (map..map + len).contains(&address) {
            // (If the mapping cannot be replaced, the fault repeats: the default action
            // then kills the process, as it would have without this handler.)
            if replace_with_zeroes(at) {
                mark_lost(at);
                return;
            }
            break;
        }
    }
    // Not ours (or ours and not replaceable). SAFETY: `PREVIOUS` was written once, before the handler was installed.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(previous) if previous.sa_sigaction != libc::SIG_DFL && previous.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: the previous handler, called as it was registered to be called.
            unsafe {
                if previous.sa_flags & libc::SA_SIGINFO != 0 {
                    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(previous.sa_sigaction);
                    handler(signal, info, context);
                } else {
                    let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous.sa_sigaction);
                    handler(signal);
                }
                // A handler that resets the action to let a fault fault again (Rust's own
                // does) would take ours away with it; a sent signal does not come again.
                if sent {
                    libc::sigaction(libc::SIGBUS, &bus_action(), std::ptr::null_mut());
                }
            }
        }
        // Ignored: a signal that was sent is ignored as before. (A fault cannot be
        // ignored: the kernel kills the process when it faults again, as it would have.)
        Some(previous) if previous.sa_sigaction == libc::SIG_IGN && sent => {}
        _ => {
            // The default action: restore it, and let the faulting instruction fault again
            // (or, for a signal that was sent, send it again).
            // SAFETY: a zeroed sigaction with SIG_DFL is the default action; raise is a
            // plain system call.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
                if sent {
                    libc::raise(libc::SIGBUS);
                }
            }
        }
    }
}
