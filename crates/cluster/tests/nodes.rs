//! Clusters of nodes (issue 14): nodes that join through a store, in this test process
//! (each its own `Cluster` with its own listening port) or in processes of their own.

use std::time::{Duration, Instant};

use latchkey_cluster::{Cluster, ErrorKind, Event, Placement, Props, Reason};
use latchkey_testkit::worker::Worker;
use latchkey_testkit::{EtcdCluster, RedisServer};

use crate::support::{worker, Msg, HANG, LONG};

pub const SECRET: &str = "the cluster's secret";

/// A node of the cluster `cluster` in the store at `url`, joined.
pub(crate) async fn node(url: &str, cluster: &str) -> Cluster<Msg> {
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
pub(crate) async fn sees(cluster: &Cluster<Msg>, path: &str) {
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
    spawning_on_other_nodes(&a, &b).await;
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Spawns on a chosen node, and by placement.
async fn spawning_on_other_nodes(a: &Cluster<Msg>, b: &Cluster<Msg>) {
    let b_id = b.node().unwrap();
    let remote = a.spawn_on(Placement::On(b_id.clone()), "/remote/", Props::from([("k", "v")]), "worker").await;
    let remote = remote.unwrap();
    assert!(remote.path().as_str().starts_with("/remote/"), "{remote:?}");
    assert_eq!(remote.ask(Msg::Prop("k".into()), LONG).await.unwrap(), Msg::Text("v".into()));
    let on_b = b.lookup(remote.path().as_str()).expect("b runs it");
    assert_eq!(on_b.ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0), "a task of b, reached from b");
    // Errors are the other node's.
    let unknown = a.spawn_on(Placement::On(b_id.clone()), "/remote/x", Props::new(), "nobody").await.unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::UnknownEntry, "{unknown}");
    let taken = a.spawn_on(Placement::On(b_id), remote.path().as_str(), Props::new(), "worker").await.unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::DuplicatePath, "{taken}");
    // Round robin takes the nodes in turn; least workers takes the node with fewer.
    let mut runs_on = Vec::new();
    for _ in 0..4 {
        let worker = a.spawn_on(Placement::RoundRobin, "/rr/", Props::new(), "worker").await.unwrap();
        runs_on.push(worker.ask(Msg::WhichNode, LONG).await.unwrap());
    }
    assert_ne!(runs_on[0], runs_on[1], "{runs_on:?}");
    assert_eq!((&runs_on[0], &runs_on[1]), (&runs_on[2], &runs_on[3]), "{runs_on:?}");
    for worker in a.lookup_prefix("/") {
        sees(b, worker.path().as_str()).await;
    }
    assert_eq!(a.lookup_prefix("/").len(), b.lookup_prefix("/").len(), "both see every worker");
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for worker in a.lookup_prefix("/") {
        let Msg::Text(node) = worker.ask(Msg::WhichNode, LONG).await.unwrap() else { panic!() };
        *count.entry(node).or_default() += 1;
    }
    let fewer = count.iter().min_by_key(|(_, n)| **n).map(|(node, _)| node.clone()).unwrap();
    assert_ne!(count.values().min(), count.values().max(), "{count:?}: a tie would not tell");
    let least = a.spawn_on(Placement::LeastWorkers, "/least/", Props::new(), "worker").await.unwrap();
    assert_eq!(least.ask(Msg::WhichNode, LONG).await.unwrap(), Msg::Text(fewer), "{count:?}");
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

/// Waits for the `Down` of `path` in `events`; its reason.
pub(crate) async fn down_of(events: &mut latchkey_cluster::Events<Msg>, path: &str) -> Reason {
    tokio::time::timeout(HANG, async {
        loop {
            match events.next().await {
                Some(Event::Down(worker, reason)) if worker.path().as_str() == path => return reason,
                Some(_) => {}
                None => panic!("the events ended before the Down of {path}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no Down of {path}"))
}

/// Issue 14: a node killed with SIGKILL: its workers go `Down(NodeLost)` on the others
/// within the store's lease, messages to them fail at once, and their locks are free.
async fn a_killed_node_is_lost(url: &str) {
    let a = node(url, "kill").await;
    let mut b = Worker::spawn(&["node", url, "kill", "/b/1"]);
    let joined = b.line("joined");
    assert!(joined.starts_with("joined 127.0.0.1:"), "{joined}");
    assert_eq!(b.line("spawned"), "spawned");
    sees(&a, "/b/1").await;
    let on_b = a.lookup("/b/1").unwrap();
    assert_eq!(on_b.ask(Msg::Lock("held-by-b".into()), LONG).await.unwrap(), Msg::Text("locked".into()));
    let store = latchkey::Scope::connect(url).await.unwrap();
    assert!(store.try_lock_async("held-by-b").await.unwrap().is_none(), "b's worker holds it");
    let mut events = a.events();
    let killed = Instant::now();
    b.kill();
    assert_eq!(down_of(&mut events, "/b/1").await, Reason::NodeLost);
    println!("SIGKILL of a node to the Down(NodeLost) of its worker: {:?} (TTL 2 s)", killed.elapsed());
    assert_eq!(on_b.send(Msg::Num(1)).await.unwrap_err().kind(), ErrorKind::Closed, "messages to it fail at once");
    assert_eq!(a.nodes().len(), 1, "{:?}", a.nodes());
    let lock = store.lock_timeout("held-by-b", LONG).await.expect("the killed node's lock is free");
    drop(lock);
    // Its path is free again.
    a.spawn("/b/1", Props::new(), "worker").await.unwrap();
    a.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_lost_through_etcd() {
    let etcd = EtcdCluster::start(1);
    a_killed_node_is_lost(&etcd.url_with("/nodes-kill/", "ttl=2s")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_lost_through_redis() {
    let redis = RedisServer::start();
    a_killed_node_is_lost(&redis.url("prefix=nodes-kill&ttl=2s")).await;
}

/// Issue 14: a node stopped (SIGSTOP) past its lease is lost on the others; when it
/// resumes it learns that it was expelled, ends its workers, and joins again with a new
/// incarnation, never as the old one.
async fn a_stopped_node_is_expelled_and_joins_again(url: &str) {
    let a = node(url, "stop").await;
    let mut b = Worker::spawn(&["node", url, "stop", "/b/1"]);
    let joined = b.line("joined");
    let old: u64 = joined.rsplit_once('#').and_then(|(_, n)| n.parse().ok()).expect("joined ADDR#INCARNATION");
    assert_eq!(b.line("spawned"), "spawned");
    sees(&a, "/b/1").await;
    let mut events = a.events();
    // SAFETY: a plain system call on our worker's pid.
    unsafe { libc::kill(b.pid(), libc::SIGSTOP) };
    let stopped = Instant::now();
    assert_eq!(down_of(&mut events, "/b/1").await, Reason::NodeLost);
    println!("SIGSTOP of a node to the Down(NodeLost) of its worker: {:?} (TTL 2 s)", stopped.elapsed());
    assert_eq!(a.nodes().len(), 1, "{:?}", a.nodes());
    // SAFETY: as above.
    unsafe { libc::kill(b.pid(), libc::SIGCONT) };
    let again = tokio::time::timeout(HANG, async {
        loop {
            if let Some(b) = a.nodes().into_iter().find(|node| node != &a.node().unwrap()) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the stopped node joined again");
    assert!(again.incarnation > old, "it joined again as {again}, after {old}");
    assert!(a.lookup("/b/1").is_none(), "its worker ended when it learned it was expelled");
    a.shutdown(LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_expelled_and_joins_again_through_etcd() {
    let etcd = EtcdCluster::start(1);
    a_stopped_node_is_expelled_and_joins_again(&etcd.url_with("/nodes-stop/", "ttl=2s")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_expelled_and_joins_again_through_redis() {
    let redis = RedisServer::start();
    a_stopped_node_is_expelled_and_joins_again(&redis.url("prefix=nodes-stop&ttl=2s")).await;
}

/// Issue 14: a node that does not know the cluster's secret joins the store but links to
/// nobody: the members refuse its connections (and log them), and it sees no worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_links_to_nobody() {
    let redis = RedisServer::start();
    let url = redis.url("prefix=nodes-stranger");
    let (a, b) = (node(&url, "strangers").await, node(&url, "strangers").await);
    a.spawn("/a/1", Props::new(), "worker").await.unwrap();
    sees(&b, "/a/1").await;
    let stranger = Cluster::<Msg>::builder()
        .scope(latchkey::Scope::isolated())
        .entry("worker", worker)
        .join(&url, "strangers")
        .secret("a guess")
        .build()
        .unwrap();
    let stranger_id = tokio::time::timeout(HANG, stranger.joined()).await.unwrap().unwrap();
    assert_eq!(stranger.nodes(), vec![stranger_id.clone()], "it linked to nobody");
    assert!(stranger.lookup("/a/1").is_none());
    assert_eq!(a.nodes().len(), 2, "{:?}", a.nodes());
    assert!(!a.nodes().contains(&stranger_id));
    // The members still talk.
    assert_eq!(b.lookup("/a/1").unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0));
    for node in [a, b, stranger] {
        node.shutdown(LONG).await;
    }
}

/// Issue 14: a message that its receiving node cannot decode closes that link only: the
/// two nodes lose each other, and each still talks with a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_cannot_be_decoded_closes_only_its_link() {
    let redis = RedisServer::start();
    let url = redis.url("prefix=nodes-decode");
    let (a, b, c) = (node(&url, "decode").await, node(&url, "decode").await, node(&url, "decode").await);
    a.spawn("/a/1", Props::new(), "worker").await.unwrap();
    b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    for node in [&a, &b, &c] {
        sees(node, "/a/1").await;
        sees(node, "/b/1").await;
    }
    let mut events = a.events();
    a.lookup("/b/1").unwrap().send(Msg::Undecodable(0)).await.unwrap();
    assert_eq!(down_of(&mut events, "/b/1").await, Reason::NodeLost, "a lost b");
    assert!(c.lookup("/b/1").is_some() && c.lookup("/a/1").is_some(), "c still has both");
    assert_eq!(c.lookup("/b/1").unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0));
    assert_eq!(c.lookup("/a/1").unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0));
    for node in [a, b, c] {
        node.shutdown(LONG).await;
    }
}

/// Issue 14: a node that shuts down leaves: the others see its workers go down with
/// their own reasons, then it is no longer a member; its paths are free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_leaves_the_cluster() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/nodes-leave/");
    let (a, b) = (node(&url, "leave").await, node(&url, "leave").await);
    b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    sees(&a, "/b/1").await;
    let mut events = a.events();
    let report = b.shutdown(LONG).await;
    assert_eq!(report.stopped.len(), 1);
    assert_eq!(down_of(&mut events, "/b/1").await, Reason::Normal, "stopped and drained, not lost");
    tokio::time::timeout(HANG, async {
        while a.nodes().len() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("b left");
    a.spawn("/b/1", Props::new(), "worker").await.expect("its path is free");
    a.shutdown(LONG).await;
}

/// The example's binary, built with every store (as the C binding's test builds its
/// library: cargo builds no example for an integration test).
fn two_senders_example() -> std::path::PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "two_senders", "--features", "etcd,postgres,redis", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo, to build the two_senders example");
    assert!(built.success(), "cannot build the two_senders example");
    target.join("debug/examples/two_senders")
}

/// Issue 14: the two-senders example with its workers on two node processes, joined
/// through etcd and through Redis: the receiver on one gets both greetings from the
/// senders on the other, and both nodes exit cleanly.
#[test]
fn the_two_senders_example_runs_on_two_nodes() {
    let example = two_senders_example();
    let etcd = EtcdCluster::start(1);
    let redis = RedisServer::start();
    for url in [etcd.url("/two-senders/"), redis.url("prefix=two-senders")] {
        let run = |role: &str| {
            std::process::Command::new(&example)
                .args(["--node", &url, role])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a node of the example")
        };
        let receiver = run("receiver");
        let senders = run("senders");
        let (receiver, senders) = (receiver.wait_with_output().unwrap(), senders.wait_with_output().unwrap());
        let (said, sent) = (String::from_utf8_lossy(&receiver.stdout), String::from_utf8_lossy(&senders.stdout));
        assert!(receiver.status.success() && senders.status.success(), "{url}:\n{said}\n{sent}");
        assert_eq!(said.matches("/receiver got Hello").count(), 2, "{url}: the receiver got both greetings:\n{said}");
        // A cluster of nodes numbers `/senders/` through its store: two distinct senders.
        let mut from: Vec<&str> = said.lines().filter_map(|line| line.split(" from ").nth(1)).collect();
        from.dedup();
        assert!(from.len() == 2 && from.iter().all(|path| path.starts_with("/senders/")), "{said}");
        assert_eq!(sent.matches("says hello").count(), 2, "{sent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joined_through_postgres_message_ask_and_watch_each_other() {
    let postgres = latchkey_testkit::PostgresServer::start();
    messaging_across_nodes(&postgres.url("schema=nodes_messaging")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_lost_through_postgres() {
    let postgres = latchkey_testkit::PostgresServer::start();
    a_killed_node_is_lost(&postgres.url("schema=nodes_kill&ttl=2s")).await;
}

/// Issue 14: groups see the workers of every node, and send to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_span_the_nodes() {
    let redis = RedisServer::start();
    let url = redis.url("prefix=nodes-groups");
    let (a, b) = (node(&url, "groups").await, node(&url, "groups").await);
    let mut group = a.group("/g");
    a.spawn("/g/a", Props::new(), "worker").await.unwrap();
    b.spawn("/g/b", Props::new(), "worker").await.unwrap();
    tokio::time::timeout(HANG, async {
        while group.members().len() < 2 {
            group.changed().await;
        }
    })
    .await
    .expect("the group sees both nodes' workers");
    assert_eq!(group.broadcast(Msg::Num(1)).await.unwrap(), 2);
    let mut sent_to = vec![group.send_round_robin(Msg::Num(2)).await.unwrap().to_string()];
    sent_to.push(group.send_round_robin(Msg::Num(3)).await.unwrap().to_string());
    sent_to.sort();
    assert_eq!(sent_to, ["/g/a", "/g/b"]);
    for path in ["/g/a", "/g/b"] {
        assert_eq!(a.lookup(path).unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(2), "{path}");
    }
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Issue 14: a node that starts again at the same address, after it was killed, joins with
/// a greater incarnation; references to the workers of the old one still fail, and the
/// new one's workers are reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_never_taken_for_the_old_one() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url_with("/nodes-restart/", "ttl=2s");
    let a = node(&url, "restart").await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let incarnation = |joined: String| -> u64 { joined.rsplit_once('#').unwrap().1.parse().unwrap() };
    let mut old = Worker::spawn(&["node-at", &url, "restart", "/b/1", &addr]);
    let first = incarnation(old.line("joined"));
    old.line("spawned");
    sees(&a, "/b/1").await;
    let old_worker = a.lookup("/b/1").unwrap();
    let mut events = a.events();
    old.kill();
    assert_eq!(down_of(&mut events, "/b/1").await, Reason::NodeLost);
    let mut new = Worker::spawn(&["node-at", &url, "restart", "/b/1", &addr]);
    let second = incarnation(new.line_within("joined again", HANG));
    new.line("spawned");
    assert!(second > first, "the restarted node joined as #{second}, after #{first}");
    sees(&a, "/b/1").await;
    assert_eq!(old_worker.send(Msg::Num(1)).await.unwrap_err().kind(), ErrorKind::Closed, "the old one's worker");
    assert_eq!(a.lookup("/b/1").unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0), "the new one's");
    let b = a.nodes().into_iter().find(|node| node.addr == addr).expect("b is a member again");
    assert_eq!(b.incarnation, second);
    a.shutdown(LONG).await;
}
