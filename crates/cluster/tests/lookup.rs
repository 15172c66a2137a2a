//! Lookups by path and prefix, assigned path segments, and properties.

use latchkey_cluster::{Props, Reason};

use crate::support::{ask, cluster, within, Msg, LONG};

fn paths(workers: &[latchkey_cluster::WorkerRef<Msg>]) -> Vec<&str> {
    workers.iter().map(|w| w.path().as_str()).collect()
}

#[tokio::test]
async fn lookups_by_path_and_prefix() {
    let cluster = cluster();
    for path in ["/a/1", "/a/2", "/a/b/3", "/ab/1", "/c"] {
        cluster.spawn(path, Props::new(), "worker").await.unwrap();
    }
    let found = cluster.lookup("/a/b/3").expect("a live worker is found");
    assert_eq!(found.path().as_str(), "/a/b/3");
    assert_eq!(ask(&found, Msg::Num(3)).await, Msg::Num(3));

    assert!(cluster.lookup("/a").is_none(), "a prefix is not a worker");
    assert!(cluster.lookup("/nobody").is_none());
    assert!(cluster.lookup("not a path").is_none());
    assert!(cluster.lookup("").is_none());

    assert_eq!(paths(&cluster.lookup_prefix("/a")), ["/a/1", "/a/2", "/a/b/3"]);
    assert_eq!(paths(&cluster.lookup_prefix("/a/")), ["/a/1", "/a/2", "/a/b/3"]);
    assert_eq!(paths(&cluster.lookup_prefix("/a/b")), ["/a/b/3"]);
    assert_eq!(paths(&cluster.lookup_prefix("/")), ["/a/1", "/a/2", "/a/b/3", "/ab/1", "/c"]);
    assert!(cluster.lookup_prefix("/c").is_empty(), "only paths strictly below a prefix");
    assert!(cluster.lookup_prefix("/zzz").is_empty());
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn a_gone_worker_is_not_found_and_its_path_is_free() {
    let cluster = cluster();
    let worker = cluster.spawn("/once", Props::new(), "worker").await.unwrap();
    worker.send(Msg::Quit).await.unwrap();
    assert_eq!(within(worker.join()).await, Reason::Normal);
    assert_eq!(worker.ended(), Some(Reason::Normal));
    assert!(cluster.lookup("/once").is_none());
    assert!(cluster.lookup_prefix("/").is_empty());
    let again = cluster.spawn("/once", Props::new(), "worker").await.unwrap();
    assert_eq!(again.ended(), None);
    assert_eq!(ask(&again, Msg::Num(1)).await, Msg::Num(1));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn paths_ending_in_a_slash_get_a_unique_segment() {
    let cluster = cluster();
    cluster.spawn("/r/1", Props::new(), "worker").await.unwrap();
    let mut assigned = Vec::new();
    for _ in 0..3 {
        assigned.push(cluster.spawn("/r/", Props::new(), "worker").await.unwrap().path().clone());
    }
    let root = cluster.spawn("/", Props::new(), "worker").await.unwrap();
    for path in &assigned {
        assert!(path.is_under("/r"), "{path}");
        assert_ne!(path.as_str(), "/r/1");
    }
    assigned.sort();
    assigned.dedup();
    assert_eq!(assigned.len(), 3);
    assert_eq!(root.path().segments().count(), 1);
    assert_eq!(cluster.lookup_prefix("/r").len(), 4);
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn properties_are_seen_by_references_and_by_the_worker() {
    let cluster = cluster();
    let props = Props::new().with("type", "receiver").with("id", "7").with("type", "sink");
    let worker = cluster.spawn("/p", props.clone(), "worker").await.unwrap();
    assert_eq!(worker.props(), &props);
    assert_eq!(worker.props().iter().collect::<Vec<_>>(), [("type", "sink"), ("id", "7")]);
    assert_eq!(cluster.lookup("/p").unwrap().props().get("id"), Some("7"));
    assert_eq!(ask(&worker, Msg::Prop("type".into())).await, Msg::Text("sink".into()));
    assert_eq!(ask(&worker, Msg::Prop("missing".into())).await, Msg::Text(String::new()));
    within(cluster.shutdown(LONG)).await;
}
