//! The test kit's own tests: clusters start, lose and regain members, leave nothing behind;
//! the proxy forwards and cuts; compaction and request counts behave as documented.

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions};
use latchkey_testkit::{EtcdCluster, Proxy};

/// A runtime for etcd-client in a synchronous test.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A client of `endpoints`, with a short connect timeout.
async fn client(endpoints: &[String]) -> Client {
    let options = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(options)).await.unwrap()
}

/// The value of `key`, read linearizably.
async fn get(client: &mut Client, key: &str) -> Option<String> {
    let answer = client.get(key, None).await.unwrap();
    answer.kvs().first().map(|kv| kv.value_str().unwrap().to_string())
}

#[test]
fn start_times() {
    for members in [1, 3] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let began = Instant::now();
            let cluster = EtcdCluster::start(members);
            times.push(began.elapsed());
            drop(cluster);
        }
        println!("EtcdCluster::start({members}): {times:?}");
        assert!(times.iter().all(|t| *t < Duration::from_secs(10)), "{times:?}");
    }
}

#[test]
fn a_three_member_cluster_survives_losing_its_leader() {
    let mut cluster = EtcdCluster::start(3);
    assert_eq!(cluster.members(), 3);
    let mut endpoints = cluster.endpoints();
    assert!(endpoints.iter().all(|e| e.starts_with("127.0.0.1:")), "{endpoints:?}");
    endpoints.sort();
    endpoints.dedup();
    assert_eq!(endpoints.len(), 3);
    let url = cluster.url("locks/app");
    assert_eq!(url, format!("etcd://{}/locks/app", cluster.endpoints().join(",")));
    assert_eq!(cluster.url_with("locks", "ttl=5s"), format!("etcd://{}/locks?ttl=5s", cluster.endpoints().join(",")));
    let rt = runtime();
    rt.block_on(async {
        let mut all = client(&cluster.endpoints()).await;
        all.put("k", "before", None).await.unwrap();
    });

    let old = cluster.leader();
    let killed_at = Instant::now();
    cluster.kill(old);
    assert_eq!(cluster.pid(old), None);
    let new = cluster.leader();
    println!("a new leader after {:?}", killed_at.elapsed());
    assert_ne!(new, old);
    rt.block_on(async {
        let mut leader = client(&[cluster.endpoint(new)]).await;
        leader.put("k", "during", None).await.unwrap();
    });

    cluster.restart(old);
    assert!(cluster.pid(old).is_some());
    cluster.wait_healthy();
    rt.block_on(async {
        let mut back = client(&[cluster.endpoint(old)]).await;
        assert_eq!(get(&mut back, "k").await.as_deref(), Some("during"));
    });
}

#[test]
fn dropping_a_cluster_kills_its_members_and_removes_its_directory() {
    let cluster = EtcdCluster::start(3);
    let pids: Vec<u32> = (0..3).map(|m| cluster.pid(m).unwrap()).collect();
    let dir = cluster.dir().to_path_buf();
    assert!(pids.iter().all(|pid| Path::new(&format!("/proc/{pid}")).exists()));
    drop(cluster);
    // Reaped, so gone from /proc at once.
    assert!(pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists()), "{pids:?}");
    assert!(!dir.exists());

    // The same when the test panics: the cluster is dropped as the stack unwinds.
    let (send, receive) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let cluster = EtcdCluster::start(1);
        send.send((cluster.pid(0).unwrap(), cluster.dir().to_path_buf())).unwrap();
        panic!("a test fails");
    })
    .join();
    assert!(panicked.is_err());
    let (pid, dir) = receive.recv().unwrap();
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

/// Whether process `pid` is gone (or a zombie that nobody reaped yet: it runs no more).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// The variable that makes [`holds_a_cluster_until_killed`] do its work.
const HOLD: &str = "LATCHKEY_TESTKIT_HOLD_CLUSTER";

/// Not a test of its own: the child process of `a_killed_test_process_takes_its_cluster_along`
/// (without the variable, it returns at once).
#[test]
fn holds_a_cluster_until_killed() {
    if std::env::var_os(HOLD).is_none() {
        return;
    }
    // Started on this test's thread, which outlives it: the members must survive that.
    let cluster = std::thread::spawn(|| EtcdCluster::start(3)).join().unwrap();
    cluster.wait_healthy();
    let pids: Vec<String> = (0..3).map(|m| cluster.pid(m).unwrap().to_string()).collect();
    println!("dir {}", cluster.dir().display());
    println!("pids {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_test_process_takes_its_cluster_along() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holds_a_cluster_until_killed", "--nocapture", "--test-threads", "1"])
        .env(HOLD, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut dir = None;
    let pids: Vec<u32> = loop {
        let line = lines.next().expect("the child ended without a cluster").unwrap();
        // The first line follows libtest's "test holds_a_cluster_until_killed ... ".
        if let Some((_, path)) = line.split_once("dir ") {
            dir = Some(std::path::PathBuf::from(path));
        } else if let Some((_, pids)) = line.split_once("pids ") {
            break pids.split(' ').map(|p| p.parse().unwrap()).collect();
        }
    };
    assert!(!pids.iter().any(|&pid| gone(pid)), "{pids:?}");
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids.iter().all(|&pid| gone(pid)) {
        assert!(Instant::now() < deadline, "etcd members {pids:?} outlived their test process");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its directory stays behind, until the next cluster's start removes it.
    let dir = dir.unwrap();
    assert!(dir.exists());
    drop(EtcdCluster::start(1));
    assert!(!dir.exists(), "{dir:?}");
}

#[test]
fn a_cut_proxy_stops_traffic_until_healed() {
    let cluster = EtcdCluster::start(3);
    let (url, proxies) = cluster.proxied_url("p");
    let proxied: Vec<String> = proxies.iter().map(|p| p.addr().to_string()).collect();
    assert_eq!(url, format!("etcd://{}/p", proxied.join(",")));
    let rt = runtime();
    rt.block_on(async {
        let mut through = client(&proxied).await;
        through.put("k", "1", None).await.unwrap();
        assert!(proxies.iter().map(Proxy::bytes_forwarded).sum::<u64>() > 0);
        assert!(proxies.iter().map(Proxy::connections_accepted).sum::<u64>() > 0);

        proxies.iter().for_each(Proxy::cut);
        let stuck = tokio::time::timeout(Duration::from_secs(1), through.put("k", "2", None)).await;
        assert!(stuck.is_err(), "a put through a cut proxy completed: {stuck:?}");
        // The cluster itself is fine: a direct client gets through.
        let mut direct = client(&cluster.endpoints()).await;
        assert_eq!(get(&mut direct, "k").await.as_deref(), Some("1"));
        // New connections are accepted but not forwarded.
        let fresh = tokio::time::timeout(Duration::from_secs(1), async {
            let mut fresh = client(&proxied).await;
            fresh.put("k", "3", None).await
        });
        assert!(fresh.await.is_err());

        // Healing lets the held bytes through: the puts above may still land (their futures
        // are gone, but etcd gets the requests), so the next put uses a key of its own.
        proxies.iter().for_each(Proxy::heal);
        let mut after = client(&proxied).await;
        tokio::time::timeout(Duration::from_secs(5), after.put("healed", "4", None)).await.unwrap().unwrap();
        assert_eq!(get(&mut direct, "healed").await.as_deref(), Some("4"));

        proxies.iter().for_each(Proxy::drop_connections);
        assert_eq!(proxies.iter().map(Proxy::open_connections).sum::<usize>(), 0);
    });
}

#[test]
fn compaction_cancels_a_watch_from_an_older_revision() {
    let cluster = EtcdCluster::start(1);
    let rt = runtime();
    rt.block_on(async {
        let mut client = client(&cluster.endpoints()).await;
        let first = client.put("k", "1", None).await.unwrap().header().unwrap().revision();
        client.put("k", "2", None).await.unwrap();
        let compacted = cluster.compact();
        assert_eq!(compacted, first + 1);
        assert_eq!(cluster.compact(), compacted, "compacting twice at one revision is fine");

        let options = WatchOptions::new().with_start_revision(first);
        let (_watcher, mut stream) = client.watch("k", Some(options)).await.unwrap();
        let answer = stream.message().await.unwrap().unwrap();
        println!("watch from {first}: canceled {}, reason {:?}", answer.canceled(), answer.cancel_reason());
        assert!(answer.canceled());
        assert_eq!(answer.compact_revision(), compacted);
        assert!(answer.events().is_empty());
    });
}

#[test]
fn count_requests_counts_unary_calls_only() {
    let cluster = EtcdCluster::start(3);
    let rt = runtime();
    rt.block_on(async {
        let mut client = client(&cluster.endpoints()).await;
        let before = cluster.grpc_counts();
        for i in 0..3 {
            client.put(format!("k{i}"), "v", None).await.unwrap();
        }
        client.get("k0", None).await.unwrap();
        client.get("k1", None).await.unwrap();
        let lease = client.lease_grant(5, None).await.unwrap().id();
        let after = cluster.grpc_counts();
        assert_eq!(after.unary - before.unary, 6, "{before:?} -> {after:?}");
        assert_eq!(after.by_method["KV/Put"] - before.by_method.get("KV/Put").unwrap_or(&0), 3);
        assert_eq!(after.by_method["KV/Range"] - before.by_method.get("KV/Range").unwrap_or(&0), 2);
        assert_eq!(after.by_method["Lease/LeaseGrant"], 1);

        // Streams and their messages are counted apart.
        let (mut keeper, mut replies) = client.lease_keep_alive(lease).await.unwrap();
        keeper.keep_alive().await.unwrap();
        replies.message().await.unwrap();
        let (_watcher, _events) = client.watch("k0", None).await.unwrap();
        let streaming = cluster.grpc_counts();
        assert_eq!(streaming.unary, after.unary);
        assert_eq!(streaming.streams - after.streams, 2, "{after:?} -> {streaming:?}");
        assert!(streaming.stream_messages - after.stream_messages >= 3, "{after:?} -> {streaming:?}");

        // An idle cluster serves nothing, and looking at it costs nothing.
        let idle = cluster.count_requests();
        std::thread::sleep(Duration::from_millis(500));
        cluster.wait_healthy();
        cluster.leader();
        assert_eq!(cluster.count_requests(), idle);
        cluster.compact();
        assert_eq!(cluster.count_requests(), idle + 2);
    });
}

#[test]
fn a_proxy_in_front_of_a_killed_member_closes_its_connections() {
    let mut cluster = EtcdCluster::start(1);
    let proxy = Proxy::start(cluster.endpoint(0)).unwrap();
    assert_eq!(proxy.target().to_string(), cluster.endpoint(0));
    assert!(!proxy.is_cut());
    cluster.kill(0);
    let rt = runtime();
    rt.block_on(async {
        let mut client = client(&[proxy.addr().to_string()]).await;
        let put = tokio::time::timeout(Duration::from_secs(3), client.put("k", "v", None)).await;
        assert!(matches!(put, Ok(Err(_))), "{put:?}");
    });
    cluster.restart(0);
    rt.block_on(async {
        let mut client = client(&[proxy.addr().to_string()]).await;
        client.put("k", "v", None).await.unwrap();
    });
}
