//! The integration tests of the `latchkey` command, in one binary. Each test runs the
//! built binary in a namespace directory of its own.
//!
//! - `run`: exit codes passed through, the lock held while the command runs, shared
//!   holds and semaphore bounds, and no command left running when `latchkey` is SIGKILLed;
//! - `usage`: invalid names, durations and scope URLs exit 64 saying what is wrong;
//! - `status`: the JSON and the table;
//! - `demo`: worker processes contend and every invariant holds;
//! - `shell`: issue 9, the command as shell users expect it: flock's options, the lock
//!   over the command's whole process tree, lost holds, `hold --until-pid`, `status`
//!   rows and `--quiet`, and every exit code;
//! - `trust`: issue 8: one default namespace whatever the environment, `status` naming
//!   its directory, and no hidden limit on holders;
//! - `etcd`: `run` and `status` on the etcd scope, a hold lost with the network;
//! - `postgres`: the same on the PostgreSQL scope, a hold lost with its server session;
//! - `redis`: the same on the Redis scope, a hold lost with the server's keys;
//! - `support`: the namespace, the binary and the helpers the suites share.

mod support;

mod demo;
mod etcd;
mod postgres;
mod redis;
mod run;
mod shell;
mod status;
mod trust;
mod usage;
