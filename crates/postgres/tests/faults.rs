//! The fault tests of the PostgreSQL scope (issue 11), each on a throwaway server of its
//! own (`latchkey_testkit::PostgresServer`), through latchkey's API:
//!
//! - `processes`: a holder process SIGKILLed; a holder's session ended by
//!   `pg_terminate_backend` (its `lost()` fires, a waiter is granted, its token is fenced
//!   off);
//! - `restart`: the server killed (crash recovery) or stopped and started again while
//!   locks are held and awaited;
//! - `cancel`: futures dropped at every await point leave nothing on the server;
//! - `network`: a client cut off by a proxy; a waiter that sends nothing while it waits;
//!   a pooler that hands statements to other sessions; a user who may not make the schema;
//! - `jepsen`: a fenced counter incremented by worker processes under faults;
//! - `support`: the server, worker processes (`latchkey_testkit::worker`); `worker`: the
//!   jobs of worker processes; `fenced`: the fenced resources, rows of the same server.
//!
//! Timing decides no test, except the bounds the issue states ("`lost()` fires within a
//! second or two"), which the tests print with what they measured.

#[path = "faults/cancel.rs"]
mod cancel;
#[path = "common/mod.rs"]
mod common;
#[path = "faults/fenced.rs"]
mod fenced;
#[path = "faults/jepsen.rs"]
mod jepsen;
#[path = "faults/network.rs"]
mod network;
#[path = "faults/processes.rs"]
mod processes;
#[path = "faults/restart.rs"]
mod restart;
#[path = "faults/support.rs"]
mod support;
#[path = "faults/worker.rs"]
mod worker;
