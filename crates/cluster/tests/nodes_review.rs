//! What the adversarial review of the nodes found (issue 14), each a test that failed
//! before its fix (or, `review_checked_*`, a suspicion that did not hold).

use std::time::{Duration, Instant};

use latchkey_cluster::{Cluster, Placement, Props, Reason};
use latchkey_testkit::worker::Worker;
use latchkey_testkit::{EtcdCluster, RedisServer};

use crate::nodes::{down_of, node, sees, SECRET};
use crate::support::{worker, Msg, HANG, LONG};

/// A node as [`node`], with the builder changed by `f` first.
async fn node_with(
    url: &str,
    cluster: &str,
    f: impl FnOnce(latchkey_cluster::Builder<Msg>) -> latchkey_cluster::Builder<Msg>,
) -> Cluster<Msg> {
    let builder = Cluster::builder().scope(latchkey::Scope::isolated()).entry("worker", worker);
    let node = f(builder).join(url, cluster).secret(SECRET).build().unwrap();
    tokio::time::timeout(HANG, node.joined()).await.expect("joined in time").expect("joined");
    node
}

/// Waits until `condition` holds, at most `limit`; whether it did.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Finding: `Cluster::shutdown` stops (and after the grace, kills) every worker in the
/// registry, the other nodes' included: shutting node A down stops B's workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_shutting_a_node_down_leaves_the_workers_of_other_nodes_alone() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-shutdown/");
    let (a, b) = (node(&url, "c").await, node(&url, "c").await);
    let on_b = b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    sees(&a, "/b/1").await;
    let report = a.shutdown(LONG).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), on_b.ask(Msg::Count, LONG)).await;
    assert!(matches!(answer, Ok(Ok(Msg::Num(0)))), "b's worker after a's shutdown: {answer:?}; a's report: {report:?}");
    assert!(report.stopped.is_empty() && report.forced.is_empty(), "a's report names b's workers: {report:?}");
    b.shutdown(LONG).await;
}

/// Finding: a broken link is taken for the peer's loss, and nothing links two live nodes
/// again (a node dials only while it joins; their records stay held, so no watch fires):
/// one frame that does not decode splits the cluster for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_broken_link_between_live_nodes_is_made_again() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-relink/");
    let (a, b) = (node(&url, "c").await, node(&url, "c").await);
    a.spawn("/a/1", Props::new(), "worker").await.unwrap();
    b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    sees(&a, "/b/1").await;
    sees(&b, "/a/1").await;
    // A message that the receiving node cannot decode (version skew, a custom Deserialize).
    let _ = b.lookup("/a/1").unwrap().send(Msg::Undecodable(0)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let linked = eventually(Duration::from_secs(15), || {
        a.nodes().len() == 2 && b.nodes().len() == 2 && a.lookup("/b/1").is_some() && b.lookup("/a/1").is_some()
    })
    .await;
    assert!(linked, "two live members stay apart: a sees {:?}, b sees {:?}", a.nodes(), b.nodes());
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Finding: one forwarder per link places the peer's messages in order, waiting for each
/// receiver's room: one worker that does not drain its mailbox stops every message of
/// that peer to every other worker of this node (the link's window runs out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_stuck_worker_does_not_block_messages_to_the_other_workers_of_its_node() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-hol/");
    let a = node_with(&url, "c", |b| b.mailbox_capacity(4)).await;
    let b = node_with(&url, "c", |b| b.mailbox_capacity(4)).await;
    a.spawn("/a/stuck", Props::new(), "worker").await.unwrap();
    a.spawn("/a/ok", Props::new(), "worker").await.unwrap();
    sees(&b, "/a/stuck").await;
    sees(&b, "/a/ok").await;
    let stuck = b.lookup("/a/stuck").unwrap();
    stuck.send(Msg::Hang).await.unwrap();
    for n in 0..8 {
        // 4 fill its mailbox, 1 waits in a's forwarder, 3 more use up the window.
        tokio::time::timeout(Duration::from_secs(5), stuck.send(Msg::Num(n))).await.unwrap().unwrap();
    }
    // From a itself, /a/ok answers at once.
    assert_eq!(a.lookup("/a/ok").unwrap().ask(Msg::Count, LONG).await.unwrap(), Msg::Num(0));
    let from_b = b.lookup("/a/ok").unwrap().ask(Msg::Count, Duration::from_secs(5)).await;
    assert_eq!(from_b.map_err(|e| e.kind()), Ok(Msg::Num(0)), "b cannot reach a healthy worker of a");
    for node in [a, b] {
        node.shutdown(Duration::from_millis(100)).await;
    }
}

/// Finding: `leave` (at shutdown) takes the peers without closing their `Spawns`; a
/// `spawn_on` waiting for a peer's answer keeps the table alive and waits for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_spawn_on_in_flight_ends_when_its_node_shuts_down() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url_with("/review-spawn-leave/", "ttl=60s");
    let a = node(&url, "c").await;
    let mut b = Worker::spawn(&["idle-node", &url, "c"]);
    assert!(b.line("joined").starts_with("joined 127.0.0.1:"));
    let b_id = tokio::time::timeout(HANG, async {
        loop {
            if let Some(b) = a.nodes().into_iter().find(|node| Some(node) != a.node().as_ref()) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    // b cannot answer (stopped, within its lease): a's spawn on it waits.
    b.signal(libc::SIGSTOP);
    let spawning = tokio::spawn({
        let a = a.clone();
        async move { a.spawn_on(Placement::On(b_id), "/on-b", Props::new(), "worker").await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.shutdown(LONG).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), spawning).await;
    b.signal(libc::SIGCONT);
    b.kill();
    let result = ended.expect("the spawn_on still waits 10 s after its node shut down").unwrap();
    assert!(result.is_err(), "{result:?}");
}

/// Finding: `shutdown` before the node has joined: `leave` finds no record and no peers,
/// but `serve` goes on joining: it registers, links to the members and keeps its record
/// for as long as the handle lives. The others see a member that has shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_node_shut_down_before_it_joined_does_not_join_afterwards() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-early-shutdown/");
    let b = node(&url, "c").await;
    let a = Cluster::<Msg>::builder()
        .scope(latchkey::Scope::isolated())
        .entry("worker", worker)
        .join(&url, "c")
        .secret(SECRET)
        .build()
        .unwrap();
    a.shutdown(LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.node(), None, "a joined after its shutdown");
    assert_eq!(b.nodes().len(), 1, "b has a member that shut down: {:?}", b.nodes());
    b.shutdown(LONG).await;
}

/// Finding: a node cut off from the store past its lease is expelled, and its rejoin
/// fails while the store is still unreachable; `serve` then returns the error for good:
/// the node never joins again once the store is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_node_cut_off_from_the_store_joins_again_once_it_is_back() {
    let etcd = EtcdCluster::start(1);
    let (proxied, proxies) = etcd.proxied_url("/review-outage/");
    let proxied = format!("{proxied}?ttl=2s");
    let direct = etcd.url_with("/review-outage/", "ttl=2s");
    let a = node(&proxied, "c").await;
    let b = node(&direct, "c").await;
    assert!(eventually(Duration::from_secs(10), || a.nodes().len() == 2 && b.nodes().len() == 2).await);
    proxies.iter().for_each(|p| p.cut());
    assert!(eventually(HANG, || b.nodes().len() == 1).await, "b never lost a");
    tokio::time::sleep(Duration::from_secs(8)).await; // a notices, and tries to join again
    proxies.iter().for_each(|p| p.heal());
    let again = tokio::time::timeout(Duration::from_secs(30), a.joined()).await;
    assert!(matches!(again, Ok(Ok(_))), "a after the store came back: {again:?}");
    assert!(eventually(Duration::from_secs(10), || b.nodes().len() == 2).await, "b: {:?}", b.nodes());
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Waits until `cluster` no longer sees a worker at `path`.
async fn sees_gone(cluster: &Cluster<Msg>, path: &str) {
    assert!(eventually(HANG, || cluster.lookup(path).is_none()).await, "{path} never went");
}

/// Finding: a worker's path claim is a guard dropped when it ends, which a network scope
/// releases in the background: the path is free in the registries (its `Down` is out, its
/// `join` has returned) before it is free in the store, so a spawn of it at once, on
/// another node, fails with `DuplicatePath` ("a live worker of another node already has
/// the path").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_the_path_of_a_worker_that_ended_can_be_taken_again_at_once() {
    let etcd = EtcdCluster::start(1);
    respawn_at_once(&etcd.url("/review-respawn/")).await;
    let redis = RedisServer::start();
    respawn_at_once(&redis.url("prefix=review-respawn")).await;
}

async fn respawn_at_once(url: &str) {
    let (a, b) = (node(url, "c").await, node(url, "c").await);
    for round in 0..30 {
        // On another node, right after the Down.
        let worker = a.spawn("/elsewhere", Props::new(), "worker").await;
        let worker = worker.unwrap_or_else(|e| panic!("{url} round {round} on a, after b's worker joined: {e}"));
        sees(&b, "/elsewhere").await;
        let mut events = b.events();
        worker.send(Msg::Quit).await.unwrap();
        down_of(&mut events, "/elsewhere").await;
        let again = b.spawn("/elsewhere", Props::new(), "worker").await;
        let again = again.unwrap_or_else(|e| panic!("{url} round {round} on b, after the Down: {e}"));
        again.send(Msg::Quit).await.unwrap();
        again.join().await;
        sees_gone(&a, "/elsewhere").await;
    }
    // Only a's own workers are left (b's shutdown would stop a's: see above).
    drop(b);
    for round in 0..30 {
        let worker = a.spawn("/again", Props::new(), "worker").await;
        let worker = worker.unwrap_or_else(|e| panic!("round {round}: {e}"));
        worker.send(Msg::Quit).await.unwrap();
        assert_eq!(worker.join().await, Reason::Normal);
    }
    a.shutdown(LONG).await;
}

/// Finding: `spawn` documents that a path ending in `/` gets "a last segment no worker of
/// this cluster had"; each node counted on its own, so another node handed it out again.
/// Now the store numbers them, through each of the three stores.
async fn numbered_paths_are_not_given_twice(url: &str) {
    let (a, b) = (node(url, "c").await, node(url, "c").await);
    let first = a.spawn("/n/", Props::new(), "worker").await.unwrap();
    let first_path = first.path().to_string();
    sees(&b, &first_path).await;
    let mut events = b.events();
    first.send(Msg::Quit).await.unwrap();
    down_of(&mut events, &first_path).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the claim's release in the background
    let mut given = vec![first_path];
    for node in [&b, &a, &b] {
        let next = node.spawn("/n/", Props::new(), "worker").await.unwrap().path().to_string();
        assert!(!given.contains(&next), "the number of {next} was given before: {given:?}");
        given.push(next);
    }
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_numbered_paths_are_not_given_twice_in_a_cluster_of_nodes() {
    let etcd = EtcdCluster::start(1);
    numbered_paths_are_not_given_twice(&etcd.url("/review-numbers/")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_numbered_paths_are_not_given_twice_through_redis_and_postgres() {
    let redis = RedisServer::start();
    numbered_paths_are_not_given_twice(&redis.url("prefix=review-numbers")).await;
    let postgres = latchkey_testkit::PostgresServer::start();
    numbered_paths_are_not_given_twice(&postgres.url("schema=review_numbers")).await;
}

/// Checked, fine: the same path spawned at once on two nodes: exactly one wins, in the
/// store; numbered paths spawned at once get distinct numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_checked_concurrent_spawns_of_one_path_on_two_nodes() {
    let redis = RedisServer::start();
    let url = redis.url("prefix=review-race");
    let (a, b) = (node(&url, "c").await, node(&url, "c").await);
    for round in 0..20 {
        let path = format!("/race/{round}");
        let (x, y) = tokio::join!(a.spawn(&path, Props::new(), "worker"), b.spawn(&path, Props::new(), "worker"));
        assert!(x.is_ok() != y.is_ok(), "round {round}: {x:?} {y:?}");
        let (x, y) = tokio::join!(a.spawn("/num/", Props::new(), "worker"), b.spawn("/num/", Props::new(), "worker"));
        assert_ne!(x.unwrap().path(), y.unwrap().path());
    }
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Checked, fine: a process worker of a node sees the other nodes' workers, and asks and
/// messages them (through its parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_checked_a_process_worker_of_a_node_reaches_other_nodes() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-child/");
    let dir = crate::support::TempDir::new();
    let a = crate::support::process_builder(&dir).join(&url, "c").secret(SECRET).build().unwrap();
    tokio::time::timeout(HANG, a.joined()).await.unwrap().unwrap();
    let b = node(&url, "c").await;
    b.spawn("/b/1", Props::new(), "worker").await.unwrap();
    sees(&a, "/b/1").await;
    let child = a.spawn_process("/a/child", Props::new(), "worker").await.unwrap();
    sees(&b, "/a/child").await;
    assert_eq!(child.ask(Msg::Lookup("/b".into()), LONG).await.unwrap(), Msg::Text("/b/1".into()));
    assert_eq!(child.ask(Msg::Burst("/b/1".into(), 10), LONG).await.unwrap(), Msg::Num(10));
    let answer = child.ask(Msg::AskOther("/b/1".into(), Box::new(Msg::Count)), LONG).await.unwrap();
    assert_eq!(answer, Msg::Num(10));
    // b's worker asks the child back.
    let back = b.lookup("/b/1").unwrap().ask(Msg::AskOther("/a/child".into(), Box::new(Msg::Count)), LONG).await;
    assert_eq!(back.unwrap(), Msg::Num(0));
    // Note: the child's own cluster handle is not a node: node() is None there.
    println!("WhichNode in a process worker of a node: {:?}", child.ask(Msg::WhichNode, LONG).await);
    for node in [a, b] {
        node.shutdown(LONG).await;
    }
}

/// Checked, fine: an ask in flight to a worker of a node that dies fails at once, and a
/// spawn_on waiting on a node that dies fails (the link breaks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_checked_asks_in_flight_to_a_node_that_dies_fail() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url_with("/review-ask-death/", "ttl=2s");
    let a = node(&url, "c").await;
    let mut b = Worker::spawn(&["node", &url, "c", "/b/1"]);
    b.line("joined");
    assert_eq!(b.line("spawned"), "spawned");
    sees(&a, "/b/1").await;
    let on_b = a.lookup("/b/1").unwrap();
    let b_id = on_b.ask(Msg::WhichNode, LONG).await.unwrap();
    let Msg::Text(b_id) = b_id else { panic!() };
    let b_node = a.nodes().into_iter().find(|n| n.to_string() == b_id).unwrap();
    let holding = tokio::spawn({
        let on_b = on_b.clone();
        async move { on_b.ask(Msg::Hold, LONG).await }
    });
    b.signal(libc::SIGSTOP);
    let spawning = tokio::spawn({
        let a = a.clone();
        async move { a.spawn_on(Placement::On(b_node), "/x", Props::new(), "worker").await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.kill();
    let held = tokio::time::timeout(Duration::from_secs(10), holding).await.expect("the ask ended").unwrap();
    assert!(held.is_err(), "{held:?}");
    let spawned = tokio::time::timeout(Duration::from_secs(10), spawning).await.expect("the spawn ended").unwrap();
    assert!(spawned.is_err(), "{spawned:?}");
    a.shutdown(LONG).await;
}

/// Second review (per-receiver windows): ids are counted per process, and the windows of
/// a process worker's link (and its parent's lanes) were keyed by the receiver's id
/// alone: a worker of another node whose id equals a stuck worker's of this node shared
/// its window, and the child could not reach it. Keyed by path and id now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_stuck_worker_does_not_block_a_childs_messages_to_another_nodes_worker_with_the_same_id() {
    let etcd = EtcdCluster::start(1);
    let url = etcd.url("/review-collide/");
    let dir = crate::support::TempDir::new();
    let a = crate::support::process_builder(&dir).mailbox_capacity(2).join(&url, "c").secret(SECRET).build().unwrap();
    tokio::time::timeout(HANG, a.joined()).await.unwrap().unwrap();
    // Stuck workers of a, first spawned in this process: ids 1, 2, ...
    let mut stuck = Vec::new();
    for i in 0..6 {
        let w = a.spawn(&format!("/a/s{i}"), Props::new(), "worker").await.unwrap();
        w.send(Msg::Hang).await.unwrap();
        stuck.push(w);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for w in &stuck {
        for n in 0..2 {
            w.send(Msg::Num(n)).await.unwrap(); // fills its mailbox of 2
        }
    }
    // b runs in a process of its own: its first worker's id is small too.
    let mut b = Worker::spawn(&["node", &url, "c", "/b/1"]);
    b.line("joined");
    assert_eq!(b.line("spawned"), "spawned");
    sees(&a, "/b/1").await;
    let child = a.spawn_process("/a/child", Props::new(), "worker").await.unwrap();
    // Baseline: the child reaches b's worker.
    assert_eq!(child.ask(Msg::Burst("/b/1".into(), 3), LONG).await.unwrap(), Msg::Num(3));
    // The child uses up its window to each stuck worker (2 wait in the parent's lanes).
    for i in 0..6 {
        assert_eq!(child.ask(Msg::FireInBackground(format!("/a/s{i}"), 10), LONG).await.unwrap(), Msg::Num(10));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A worker of a that is not stuck is reachable (its id, 8 or so, is its own).
    let _ok = a.spawn("/a/ok", Props::new(), "worker").await.unwrap();
    let to_ok = tokio::time::timeout(Duration::from_secs(5), child.ask(Msg::Burst("/a/ok".into(), 3), LONG)).await;
    assert!(matches!(to_ok, Ok(Ok(Msg::Num(3)))), "child to /a/ok: {to_ok:?}");
    // b's worker is healthy: the child's messages to it must go on.
    let to_b = tokio::time::timeout(Duration::from_secs(5), child.ask(Msg::Burst("/b/1".into(), 3), LONG)).await;
    assert!(matches!(to_b, Ok(Ok(Msg::Num(3)))), "child to b's healthy /b/1 is held up: {to_b:?}");
    a.shutdown(Duration::from_millis(100)).await;
}

/// Second review: the numbers of all nodes came from one lock in the store, so a node that
/// died while it held it held up every numbered spawn of the cluster until its session
/// lapsed. It is a permit of a semaphore now (64 of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_a_numbered_spawn_does_not_wait_for_a_node_that_holds_a_number() {
    let redis = RedisServer::start();
    let url = redis.url("prefix=review-number-held");
    let a = node(&url, "c").await;
    // Another session holds a number, as a node that died at that instant would.
    let other = latchkey::Scope::connect(&url).await.unwrap();
    let numbers = other.semaphore("latchkey-cluster/c/numbers", 64).unwrap();
    let _held = numbers.acquire(1).await.unwrap();
    let spawned = tokio::time::timeout(Duration::from_secs(10), a.spawn("/n/", Props::new(), "worker")).await;
    assert!(matches!(spawned, Ok(Ok(_))), "a numbered spawn waits: {spawned:?}");
    a.shutdown(LONG).await;
}
