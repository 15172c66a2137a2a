//! The jobs of worker processes (this test binary run again by `latchkey_testkit::Worker`):
//! nodes of a cluster in processes of their own.

use latchkey_cluster::{Cluster, Props};
use latchkey_testkit::worker::{say, JOB};

use crate::support::{worker, Msg};

/// Runs the job in `LATCHKEY_TEST_JOB`, if any (nothing in the test run itself).
#[test]
fn run() {
    let Ok(job) = std::env::var(JOB) else { return };
    let fields: Vec<&str> = job.split('\u{1f}').collect();
    match fields.as_slice() {
        ["node", url, cluster, path] => node(url, cluster, path, None),
        ["node-at", url, cluster, path, listen] => node(url, cluster, path, Some(listen)),
        ["idle-node", url, cluster] => idle_node(url, cluster),
        other => panic!("unknown job {other:?}"),
    }
}

/// A node of `cluster` in the store at `url`, whose cluster scope is the store, with a
/// worker at `path`, listening on `listen` if given; reports `joined NODE`, then
/// `spawned`; lives until it is killed.
fn node(url: &str, cluster: &str, path: &str, listen: Option<&str>) {
    let scope = latchkey::Scope::open(url).expect("the store");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let node = Cluster::<Msg>::builder()
            .scope(scope)
            .entry("worker", worker)
            .join(url, cluster)
            .listen(listen.unwrap_or("127.0.0.1:0"))
            .secret(crate::nodes::SECRET)
            .build()
            .unwrap();
        let me = node.joined().await.expect("joined");
        say(format!("joined {me}"));
        node.spawn(path, Props::from([("node", me.to_string().as_str())]), "worker").await.expect("spawned");
        say("spawned");
        std::future::pending::<()>().await;
    });
}
/// A node of `cluster` in the store at `url` without workers; reports `joined NODE`;
/// lives until it is killed.
fn idle_node(url: &str, cluster: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let node = Cluster::<Msg>::builder()
            .scope(latchkey::Scope::isolated())
            .entry("worker", worker)
            .join(url, cluster)
            .secret(crate::nodes::SECRET)
            .build()
            .unwrap();
        let me = node.joined().await.expect("joined");
        say(format!("joined {me}"));
        std::future::pending::<()>().await;
    });
}
