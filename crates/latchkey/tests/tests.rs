//! The integration tests of latchkey, in one binary:
//!
//! - `conformance`: what every scope must do, run against each scope in `for_each_scope!`;
//! - `stress`: mutual exclusion, bounds and progress under many threads and tasks;
//! - `bad_input`: invalid names, URLs, capacities, releases and timeouts;
//! - `processes`: the host scope with real processes, SIGKILL included;
//! - `hostile`: corrupted files, unsafe directories, links, a full disk;
//! - `table`: the host namespace's table of names, full and reclaiming;
//! - `trust`: issue 8, the host scope trustworthy: a deleted, replaced or truncated
//!   namespace, no hidden limits, and a SIGKILL torture;
//! - `review`: an adversarial review of the host scope, one failing test per bug found;
//! - `review2`: a second review, after the fixes of the first;
//! - `support`: the scopes under test and the helpers the suites share.

#[macro_use]
mod support;

mod bad_input;
mod conformance;
mod hostile;
mod processes;
mod review;
mod review2;
mod stress;
mod table;
mod trust;
