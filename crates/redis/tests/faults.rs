//! The fault tests of the Redis scope (issue 12), each on a server of its own
//! (`latchkey_testkit::RedisServer`), through latchkey's API:
//!
//! - `clock`: a client whose clock is an hour off (libfaketime);
//! - `cancel`: futures dropped at every await point leave nothing on the server;
//! - `processes`: a holder process SIGKILLed, one stopped (SIGSTOP) past its TTL;
//! - `jepsen`: a fenced counter incremented by worker processes under faults;
//! - `fenced`: the fenced resources, on a server of their own;
//! - `server`: the scope's connection killed (`CLIENT KILL`), the server restarted without
//!   persistence;
//! - `review`: what an adversarial review found (answers lost after the script ran, a
//!   lost session's requests, `list` under a glob-like prefix, a server that may evict);
//! - `waiting`: a waiter's commands counted; readers against a waiting writer;
//! - `worker`: the jobs of worker processes (this binary run again).

#[path = "faults/cancel.rs"]
mod cancel;
#[path = "faults/clock.rs"]
mod clock;
#[path = "faults/fenced.rs"]
mod fenced;
#[path = "faults/jepsen.rs"]
mod jepsen;
#[path = "faults/processes.rs"]
mod processes;
#[path = "faults/review.rs"]
mod review;
#[path = "faults/server.rs"]
mod server;
#[path = "faults/waiting.rs"]
mod waiting;
#[path = "faults/worker.rs"]
mod worker;
