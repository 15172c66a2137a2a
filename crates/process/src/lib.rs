//! latchkey's process scope: named locks for the threads and async tasks of one process.
//!
//! - [`engine`]: the fair, weighted semaphore under every primitive.
//! - [`registry`]: names to semaphores, reclaiming names nobody uses.
//! - [`ProcessScope`], [`Handle`] and [`Permit`]: the scope, an open name, held permits.
//! - [`RawScope`](latchkey_model::RawScope) for [`ProcessScope`], in `contract`.

mod contract;
pub mod engine;
mod handle;
mod permit;
pub mod registry;
mod scope;
mod sync;
#[cfg(all(test, not(loom)))]
mod tests;

pub use handle::Handle;
pub use permit::Permit;
pub use scope::{ProcessScope, URL};
