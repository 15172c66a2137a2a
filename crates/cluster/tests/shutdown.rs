//! Graceful shutdown of workers and of the cluster.

use std::time::Duration;

use latchkey_cluster::{ErrorKind, Props, Reason};
use tokio::sync::oneshot;

use crate::support::{ask, cluster, within, Msg, LONG};

#[tokio::test(start_paused = true)]
async fn shutdown_drains_idle_workers_and_kills_busy_ones() {
    let cluster = cluster();
    let (stopping_tx, stopping) = oneshot::channel();
    let (go, go_rx) = oneshot::channel::<()>();
    let (counted_tx, counted) = oneshot::channel();
    let drain = cluster
        .spawn_fn("/drain", Props::new(), |mut ctx| async move {
            ctx.stop_requested().await;
            let _ = stopping_tx.send(());
            let _ = go_rx.await;
            let mut count = 0;
            while ctx.recv().await.is_some() {
                count += 1;
            }
            counted_tx.send(count).map_err(|_| "the test is gone")
        })
        .await
        .unwrap();
    let idle = cluster.spawn("/idle", Props::new(), "worker").await.unwrap();
    let busy = cluster.spawn("/busy", Props::new(), "worker").await.unwrap();
    busy.send(Msg::Hang).await.unwrap();
    for i in 0..5 {
        drain.send(Msg::Num(i)).await.unwrap();
    }
    assert_eq!(ask(&idle, Msg::Num(1)).await, Msg::Num(1));

    let shutdown = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.shutdown(Duration::from_secs(10)).await }
    });
    within(stopping).await.unwrap();
    // Intake is closed as soon as shutdown begins.
    for worker in [&drain, &idle, &busy] {
        assert_eq!(worker.send(Msg::Num(9)).await.unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(worker.try_send(Msg::Num(9)).unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(worker.ask(Msg::Count, LONG).await.unwrap_err().kind(), ErrorKind::Closed);
    }
    let err = cluster.spawn("/late", Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    go.send(()).unwrap();

    let report = within(shutdown).await.unwrap();
    assert_eq!(report.stopped, ["/drain", "/idle"]);
    assert_eq!(report.forced, ["/busy"]);
    assert_eq!(within(counted).await.unwrap(), 5, "the queued messages were received before None");
    assert_eq!(idle.ended(), Some(Reason::Normal));
    assert_eq!(busy.ended(), Some(Reason::Killed));
    assert!(cluster.lookup_prefix("/").is_empty());
    let err = drain.send(Msg::Num(1)).await.unwrap_err();
    assert!(err.to_string().contains("/drain") && err.to_string().contains("ended"), "{err}");
    assert_eq!(within(cluster.shutdown(LONG)).await, Default::default(), "a second shutdown has nothing to do");
}

#[tokio::test(start_paused = true)]
async fn stopping_one_worker() {
    let cluster = cluster();
    let idle = cluster.spawn("/idle", Props::new(), "worker").await.unwrap();
    let busy = cluster.spawn("/busy", Props::new(), "worker").await.unwrap();
    let other = cluster.spawn("/other", Props::new(), "worker").await.unwrap();
    idle.send(Msg::Num(1)).await.unwrap();
    busy.send(Msg::Hang).await.unwrap();
    assert_eq!(within(idle.stop(LONG)).await, Reason::Normal);
    assert_eq!(within(busy.stop(Duration::from_secs(1))).await, Reason::Killed);
    assert_eq!(within(idle.stop(LONG)).await, Reason::Normal, "stopping again reports how it ended");
    assert_eq!(idle.send(Msg::Num(2)).await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(ask(&other, Msg::Num(3)).await, Msg::Num(3), "the others run on");
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.stopped, ["/other"]);
    assert!(report.forced.is_empty());
}

#[tokio::test]
async fn a_shutdown_without_grace_kills_what_is_busy() {
    let cluster = cluster();
    let busy = cluster.spawn("/busy", Props::new(), "worker").await.unwrap();
    busy.send(Msg::Hang).await.unwrap();
    let report = within(cluster.shutdown(Duration::ZERO)).await;
    assert_eq!(report.forced, ["/busy"]);
    assert!(report.stopped.is_empty());
}
