//! The lock model every latchkey scope shares.
//!
//! - [`Name`]: a validated lock name.
//! - [`Error`] and [`ErrorKind`]: the one public error type, with stable codes.
//! - [`Lease`] and [`State`]: a grant, and a snapshot of a name.
//! - [`RawScope`] and [`RawLock`]: the small contract each scope implements; the
//!   primitives of the `latchkey` crate are built on it.
//! - [`block_on_until`]: a blocking driver for scopes whose waiting is a future, and
//!   [`with_deadline`]: deadlines for any future, with no runtime.

mod contract;
mod error;
mod fork;
mod lease;
mod name;
mod state;
mod timer;
mod url;
mod wait;

pub use contract::{BoxFuture, RawCede, RawLock, RawScope};
pub use error::{Error, ErrorKind, Result};
pub use fork::process_copy;
pub use lease::{describe_capacity, Lease, MAX_SEMAPHORE_CAPACITY, RWLOCK_CAPACITY};
pub use name::{validate as validate_name, Name, MAX_NAME_LEN};
pub use state::{Holder, Identity, State, Waiter};
pub use timer::{sleep_until, with_deadline, Sleep};
pub use url::{parse_duration, percent_decode, redact_url};
pub use wait::block_on_until;
