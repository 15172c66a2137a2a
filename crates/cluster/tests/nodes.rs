//! Clusters of nodes (issue 14): nodes that join through a store, in this test process
//! (each its own `Cluster` with its own listening port) or in processes of their own.

use std::time::Duration;

use latchkey_cluster::{Cluster, ErrorKind, Event, Props, Reason};
use latchkey_testkit::{EtcdCluster, RedisServer};

use crate::support::{worker, Msg, HANG, LONG};

const SECRET: &str = "the cluster's secret";

/// A node of the cluster `cluster` in the store at `url`, joined.
async fn node(url: &str, cluster: &str) -> Cluster<Msg> {
    let node = Cluster::builder()
        .scope(latchkey::Scope::isolated())
        .entry("worker", worker)
        .join(url, cluster)
        .secret(SECRET)
        .build()
        .unwrap();
    tokio::time::timeout(HANG, node.joined()).await.expect("joined in time").expect("joined");
    node
}

/// Waits until `cluster` sees a worker at `path`.
async fn sees(cluster: &Cluster<Msg>, path: &str) {
    tokio::time::timeout(HANG, async {
        while cluster.lookup(path).is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{path} never appeared"));
}

async fn messaging_across_nodes(url: &str) {
    let (a, b) = (node(url, "messaging").await, node(url, "messaging").await);
    assert_eq!(a.nodes().len(), 2, "{:?}", a.nodes());
    assert_eq!(b.nodes(), a.nodes());
    let on_a = a.spawn("/a/1", Props::from([("node", "a")]), "worker").await.unwrap();
    sees(&b, "/a/1").await;
    let from_b = b.lookup("/a/1").unwrap();
    assert_eq!(from_b.props().get("node"), Some("a"));
    for n in 0..100 {
        from_b.send(Msg::Num(n)).await.unwrap();
    }
    assert_eq!(from_b.ask(Msg::Count, LONG).await.unwrap(), Msg::Num(100), "every send arrived, before the ask");
    let Msg::Log(log) = on_a.ask(Msg::Seen, LONG).await.unwrap() else { panic!() };
    assert_eq!(log.iter().map(|(_, n)| *n).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>(), "in order");
    // A worker on b asks the worker on a, by path: location does not show.
    b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    sees(&a, "/b/1").await;
    let answer = b.lookup("/b/1").unwrap().ask(Msg::AskOther("/a/1".into(), Box::new(Msg::Count)), LONG).await;
    assert_eq!(answer.unwrap(), Msg::Num(100));
    // Paths are unique across the nodes.
    let duplicate = b.spawn("/a/1", Props::new(), "worker").await.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::DuplicatePath, "{duplicate}");
    // An ask that times out, across nodes.
    let timed_out = from_b.ask(Msg::Hold, Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    // b sees a's worker go down with a's reason.
    let mut events = b.events();
    on_a.send(Msg::Quit).await.unwrap();
    let down = tokio::time::timeout(HANG, async {
        loop {
            if let Some(Event::Down(worker, reason)) = events.next().await {
                if worker.path().as_str() == "/a/1" {
                    return reason;
                }
            }
        }
    })
    .await
    .expect("the Down of /a/1 on b");
    assert_eq!(down, Reason::Normal);
    assert_eq!(from_b.send(Msg::Num(1)).await.unwrap_err().kind(), ErrorKind::Closed);
    // The path is free again, for either node.
    b.spawn("/a/1", Props::new(), "worker").await.unwrap();
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joined_through_etcd_message_ask_and_watch_each_other() {
    let etcd = EtcdCluster::start(1);
    messaging_across_nodes(&etcd.url("/nodes-messaging/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joined_through_redis_message_ask_and_watch_each_other() {
    let redis = RedisServer::start();
    messaging_across_nodes(&redis.url("prefix=nodes-messaging")).await;
}
