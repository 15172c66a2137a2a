//! The engine: one fair, weighted semaphore per name.
//!
//! Every primitive is a request of `permits` out of `capacity`: a mutex asks for 1 of 1,
//! a reader 1 of [`RWLOCK_CAPACITY`](latchkey_model::RWLOCK_CAPACITY) and a writer all of
//! them, a semaphore k of n. Grants are FIFO, so a queued writer holds back the readers
//! behind it: writer preference without starving readers.

mod semaphore;
mod signal;
mod wait;

pub use semaphore::{FairSemaphore, Overfilled};
pub use wait::Wait;

#[cfg(all(test, not(loom)))]
mod tests;
