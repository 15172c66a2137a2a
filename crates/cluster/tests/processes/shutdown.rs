//! Shutdown with process workers: idle children stop, busy ones are killed, none is left.

use std::time::Duration;

use latchkey_cluster::{ErrorKind, Props, Reason};

use crate::support::{ask, is_gone, process_cluster, within, Msg, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_idle_children_and_kills_busy_ones() {
    let (cluster, _dir) = process_cluster();
    let idle = cluster.spawn_process("/idle", Props::new(), "worker").await.unwrap();
    let busy = cluster.spawn_process("/busy", Props::new(), "worker").await.unwrap();
    let sleeper = cluster.spawn_process("/sleeper", Props::new(), "sleeper").await.unwrap();
    let task = cluster.spawn("/task", Props::new(), "worker").await.unwrap();
    for i in 0..5 {
        idle.send(Msg::Num(i)).await.unwrap();
    }
    assert_eq!(ask(&idle, Msg::Count).await, Msg::Num(5));
    busy.send(Msg::Hang).await.unwrap();
    assert_eq!(ask(&task, Msg::Num(1)).await, Msg::Num(1));
    let pids: Vec<u32> = [&idle, &busy, &sleeper].iter().map(|w| w.pid().unwrap()).collect();

    let report = within(cluster.shutdown(Duration::from_millis(500))).await;
    assert_eq!(report.stopped, ["/idle", "/sleeper", "/task"]);
    assert_eq!(report.forced, ["/busy"]);
    assert_eq!(idle.ended(), Some(Reason::Normal));
    assert_eq!(sleeper.ended(), Some(Reason::Normal));
    assert_eq!(busy.ended(), Some(Reason::Killed));
    for pid in pids {
        assert!(is_gone(pid), "the child {pid} is dead and reaped");
    }
    let err = idle.send(Msg::Num(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(cluster.lookup_prefix("/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_one_child() {
    let (cluster, _dir) = process_cluster();
    let idle = cluster.spawn_process("/idle", Props::new(), "worker").await.unwrap();
    let busy = cluster.spawn_process("/busy", Props::new(), "worker").await.unwrap();
    busy.send(Msg::Hang).await.unwrap();
    assert_eq!(within(idle.stop(LONG)).await, Reason::Normal);
    assert_eq!(within(busy.stop(Duration::from_millis(200))).await, Reason::Killed);
    assert_eq!(idle.send(Msg::Num(2)).await.unwrap_err().kind(), ErrorKind::Closed);
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report, Default::default(), "nothing was left to stop");
}
