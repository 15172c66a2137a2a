//! What latchkey's scopes over a network (etcd, PostgreSQL) share:
//!
//! - [`Driver`]: the scope's own thread and runtime, so that the blocking API needs no
//!   runtime from the caller and the async API works on any executor;
//! - [`Unclaimed`]: a lease on its way to a caller, given back if the caller is gone.

mod driver;
mod unclaimed;

pub use driver::Driver;
pub use unclaimed::Unclaimed;
