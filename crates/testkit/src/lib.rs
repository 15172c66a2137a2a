//! Helpers for latchkey's tests and benchmarks (not published).
//!
//! - [`EtcdCluster`]: a throwaway etcd cluster of 1 or 3 members on loopback ports, with
//!   the means to kill and restart members, find the leader, compact, and count the gRPC
//!   requests the cluster served. It runs the `etcd` binary, which must be on `PATH`
//!   (Debian and Ubuntu: `apt-get install etcd-server`).
//! - [`PostgresServer`]: a throwaway PostgreSQL server on a loopback port, run as an
//!   unprivileged user, that a test can restart or query with `psql`.
//! - [`RedisCluster`]: a throwaway Redis Cluster of a few primaries on loopback ports.
//! - [`RedisServer`]: a throwaway Redis server on a loopback port, persistence off, that a
//!   test can restart (emptied) or query with `redis-cli`.
//! - [`cancel`]: futures dropped at random cancellation points.
//! - [`in_a_forked_child`]: a job run in a child forked without exec.
//! - [`worker`]: worker processes for fault tests (the test binary run again), bounded
//!   waits and seeded randomness.
//! - [`Proxy`]: a TCP forwarder that a test can cut, to play a network partition between
//!   one client and the cluster ([`EtcdCluster::proxied_url`]).
//!
//! Everything a test starts here dies with the value that started it, and with the test
//! process.

pub mod cancel;
mod certs;
mod counts;
mod etcd;
mod fork;
mod http;
mod postgres;
mod proxy;
mod redis;
mod redis_cluster;
mod spawn;
pub mod worker;

pub use counts::GrpcCounts;
pub use etcd::EtcdCluster;
pub use fork::in_a_forked_child;
pub use postgres::PostgresServer;
pub use proxy::Proxy;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
