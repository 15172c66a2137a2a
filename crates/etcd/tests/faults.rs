//! The fault tests of the etcd scope (issue 10), each on a throwaway etcd cluster of its
//! own (`latchkey_testkit::EtcdCluster`), through latchkey's API:
//!
//! - `processes`: a holder process SIGKILLed, and one stopped (SIGSTOP) past its TTL;
//! - `network`: a client cut off from the cluster, watches that miss their events
//!   (compaction), and a waiter that makes no requests while it waits;
//! - `failover`: the leader killed while locks are held and awaited;
//! - `cancel`: futures dropped at every await point leave nothing on the server;
//! - `jepsen`: a fenced counter incremented by worker processes under faults;
//! - `support`: worker processes, bounded waits, seeded randomness; `worker`: the jobs of
//!   worker processes (this binary run again); `fenced`: a raw etcd client, and the fenced
//!   resources the tests keep in etcd.
//!
//! Timing decides no test, except the bounds the issue states ("granted within TTL + 1 s
//! of the kill"), which the tests print with what they measured.

#[path = "faults/cancel.rs"]
mod cancel;
#[path = "faults/failover.rs"]
mod failover;
#[path = "faults/fenced.rs"]
mod fenced;
#[path = "faults/jepsen.rs"]
mod jepsen;
#[path = "faults/network.rs"]
mod network;
#[path = "faults/processes.rs"]
mod processes;
#[path = "faults/support.rs"]
mod support;
#[path = "faults/worker.rs"]
mod worker;
