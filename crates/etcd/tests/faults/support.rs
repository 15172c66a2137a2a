//! What the fault tests share: worker processes, bounded waits, seeded randomness
//! (`latchkey_testkit::worker`).

pub use latchkey_testkit::worker::*;
