//! What latchkey's scopes over a network (etcd, PostgreSQL) share:
//!
//! - [`Driver`]: the scope's own thread and runtime, so that the blocking API needs no
//!   runtime from the caller and the async API works on any executor;
//! - [`Unclaimed`]: a lease on its way to a caller, given back if the caller is gone;
//! - [`Life`]: what a session knows of its own validity, and its loss.

mod driver;
mod life;
mod unclaimed;

pub use driver::Driver;
pub use life::Life;
pub use unclaimed::Unclaimed;
