//! latchkey's process scope: named locks for the threads and async tasks of one process.
//!
//! - [`engine`]: the fair, weighted semaphore under every primitive.
//! - [`registry`]: names to semaphores, reclaiming names nobody uses.
//! - [`ProcessScope`]: both behind the scope contract of `latchkey-model`.

pub mod engine;
pub mod registry;
mod scope;
mod sync;

pub use scope::{ProcessScope, URL};
