//! The atomics of the shared-memory protocol: std's, or loom's when the protocol is
//! model-checked (`--cfg loom`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic;

#[cfg(loom)]
pub(crate) use loom::sync::atomic;

/// A spin-loop hint, which loom turns into a yield to another thread.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
