//! Named locks: a worker that ends, however it ends, loses its locks.

use std::time::Duration;

use latchkey_cluster::{Cluster, ErrorKind, Props, Reason};

use crate::support::{ask, host_scope, within, worker, Msg, LONG};

fn host_cluster() -> Cluster<Msg> {
    Cluster::builder().scope(host_scope()).entry("worker", worker).build().unwrap()
}

async fn locked_by(cluster: &Cluster<Msg>, path: &str, name: &str) -> latchkey_cluster::WorkerRef<Msg> {
    let worker = cluster.spawn(path, Props::new(), "worker").await.unwrap();
    assert_eq!(ask(&worker, Msg::Lock(name.into())).await, Msg::Text("locked".into()));
    assert!(cluster.scope().is_locked(name).unwrap(), "{path} holds {name}");
    worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_loses_its_locks() {
    let cluster = host_cluster();
    let holder = locked_by(&cluster, "/holder", "resource").await;
    holder.send(Msg::Panic).await.unwrap();
    assert!(matches!(within(holder.join()).await, Reason::Failed(m) if m.contains("asked to panic")));
    assert!(!cluster.scope().is_locked("resource").unwrap(), "the panic dropped the guard");
    locked_by(&cluster, "/next", "resource").await;
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_by_shutdown_loses_its_locks() {
    let cluster = host_cluster();
    let holder = locked_by(&cluster, "/holder", "resource").await;
    holder.send(Msg::Hang).await.unwrap();
    let report = within(cluster.shutdown(Duration::ZERO)).await;
    assert_eq!(report.forced, ["/holder"]);
    assert!(!cluster.scope().is_locked("resource").unwrap(), "dropping the future dropped the guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_locks_and_a_waiter_gets_them() {
    let cluster = host_cluster();
    let holder = locked_by(&cluster, "/holder", "resource").await;
    let waiter = cluster.spawn("/waiter", Props::new(), "worker").await.unwrap();
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.ask(Msg::Lock("resource".into()), LONG).await })
    };
    holder.kill();
    assert_eq!(within(holder.join()).await, Reason::Killed);
    assert_eq!(within(waiting).await.unwrap().unwrap(), Msg::Text("locked".into()));
    assert!(cluster.scope().is_locked("resource").unwrap());
    within(cluster.shutdown(LONG)).await;
    assert!(!cluster.scope().is_locked("resource").unwrap());
}

#[tokio::test]
async fn the_default_scope_is_the_host_scope() {
    // The per-user namespace is shared with whatever else runs on the machine (another
    // latchkey version may own it), so failing to open it is an acceptable outcome, as
    // long as it was the host scope that the cluster tried.
    match Cluster::<Msg>::builder().build() {
        Ok(cluster) => assert!(cluster.scope().url().starts_with("host:"), "{}", cluster.scope().url()),
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::Scope, "{err}");
            assert!(err.to_string().contains("host:"), "{err}");
        }
    }
}
