//! A throwaway Redis Cluster: a few `redis-server` nodes (primaries only) on loopback ports,
//! joined with `redis-cli --cluster create`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisServer;

/// How long the cluster may take to agree on its slots.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster of `n` primaries (no replicas) that share the 16384 slots; its nodes are
/// killed and removed when it is dropped.
///
/// ```no_run
/// let cluster = latchkey_testkit::RedisCluster::start(3);
/// let url = cluster.url("ttl=5s"); // redis://127.0.0.1:port/0?cluster=1&ttl=5s
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` nodes (at least 3, as `redis-cli --cluster create` asks) and joins them.
    ///
    /// # Panics
    ///
    /// If a node does not start, or the cluster does not agree within 30 s.
    pub fn start(n: usize) -> RedisCluster {
        assert!(n >= 3, "testkit: a Redis Cluster needs at least 3 primaries");
        let nodes: Vec<RedisServer> = (0..n).map(|_| RedisServer::start_cluster_node()).collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port())).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("testkit: cannot run redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "testkit: redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        for node in &nodes {
            while !node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(start.elapsed() < TIMEOUT, "testkit: the Redis Cluster did not agree in {TIMEOUT:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// A scope URL for the cluster (node 0 as the seed, `cluster=1`), with extra query
    /// parameters `query` (empty for none).
    pub fn url(&self, query: &str) -> String {
        let base = format!("redis://127.0.0.1:{}/0?cluster=1", self.nodes[0].port());
        if query.is_empty() {
            base
        } else {
            format!("{base}&{query}")
        }
    }
}
