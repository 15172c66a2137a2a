//! The scope's connection for its scripts and commands: to one server (a connection manager
//! that connects again by itself), or to a Redis Cluster (each name's scripts go to the
//! node of its slot, which its hash tag makes one).
//!
//! Scripts are not idempotent (an enqueue run twice queues twice), so nothing is sent again
//! after an answer was lost: the cluster client retries nothing by itself (review finding:
//! it re-ran scripts after a timeout), and this connection sends again only what a node
//! refused without running it (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`), once the client
//! has learned the slots anew.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection to the scope's server or cluster; clones share it.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How many times a command a node refused without running it is sent.
const REDIRECTS: u64 = 5;

/// Whether `error` says that the node did not run the command.
fn not_run(error: &redis::RedisError) -> bool {
    use redis::ErrorKind::{Ask, ClusterDown, Moved, TryAgain};
    matches!(error.kind(), Moved | Ask | TryAgain | ClusterDown)
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => {
                let mut connection = connection.clone();
                Box::pin(async move {
                    let mut attempts = 0;
                    loop {
                        attempts += 1;
                        match connection.req_packed_command(cmd).await {
                            Err(e) if attempts < REDIRECTS && not_run(&e) => {
                                tokio::time::sleep(std::time::Duration::from_millis(10 * attempts)).await;
                            }
                            answer => return answer,
                        }
                    }
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The primaries that serve slots, as `(host, port)`, from the answer to `CLUSTER NODES`:
/// those flagged `master`, not `fail` (a `fail?` is only suspected), with an address
/// (not `noaddr`) and slots.
pub(crate) fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            // id, address, flags, master, ping, pong, epoch, link state, slots...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields.get(2)?.split(',').collect();
            if fields.len() <= 8 || !flags.contains(&"master") || flags.contains(&"fail") || flags.contains(&"noaddr") {
                return None;
            }
            let (host, port) = fields[1].split(['@', ',']).next()?.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return None;
            }
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_are_the_masters_with_slots_and_an_address() {
        let nodes = "\
a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7001@17001 master,fail? - 0 0 2 connected 5461-10922
c [::1]:7002@17002,host.example master - 0 0 3 connected 10923-16383
d 127.0.0.1:7003@17003 slave a 0 0 1 connected
e 127.0.0.1:7004@17004 master,fail - 0 0 4 disconnected 100
f :0@0 master,noaddr - 0 0 5 disconnected 200
g 127.0.0.1:7006@17006 master - 0 0 6 connected
";
        assert_eq!(
            primaries(nodes),
            [("127.0.0.1".to_string(), 7000), ("127.0.0.1".to_string(), 7001), ("::1".to_string(), 7002)]
        );
    }
}
