//! Messages between the parent, its task workers and its process workers.

use std::time::Duration;

use latchkey_cluster::{ErrorKind, Props, Reason};

use crate::support::{ask, process_builder, process_cluster, within, Msg, TempDir, LONG};

#[tokio::test]
async fn the_parent_sends_and_asks_a_child() {
    let (cluster, _dir) = process_cluster();
    let child = cluster.spawn_process("/p", Props::from([("type", "child")]), "worker").await.unwrap();
    let task = cluster.spawn("/t", Props::new(), "worker").await.unwrap();
    assert!(child.pid().is_some_and(|pid| pid != std::process::id()));
    assert_eq!(task.pid(), None);
    assert_eq!(child.props().get("type"), Some("child"));

    child.send(Msg::Text("hello".into())).await.unwrap();
    child.try_send(Msg::Num(7)).unwrap();
    assert_eq!(ask(&child, Msg::Num(5)).await, Msg::Num(5));
    assert_eq!(ask(&child, Msg::Count).await, Msg::Num(3));
    assert_eq!(ask(&child, Msg::Prop("type".into())).await, Msg::Text("child".into()));
    assert_eq!(ask(&child, Msg::Seen).await, Msg::Log(vec![(None, 7), (None, 5)]));

    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.stopped, ["/p", "/t"]);
    assert!(report.forced.is_empty());
    assert_eq!(child.ended(), Some(Reason::Normal));
}

#[tokio::test]
async fn an_ask_a_child_does_not_answer_times_out() {
    let (cluster, _dir) = process_cluster();
    let child = cluster.spawn_process("/silent", Props::new(), "worker").await.unwrap();
    let err = within(child.ask(Msg::Hold, Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.path(), Some("/silent"));
    assert_eq!(ask(&child, Msg::Num(1)).await, Msg::Num(1), "the child still answers");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_reach_each_other_and_task_workers_through_the_parent() {
    let (cluster, _dir) = process_cluster();
    let a = cluster.spawn_process("/a", Props::new(), "worker").await.unwrap();
    cluster.spawn_process("/b", Props::new(), "worker").await.unwrap();
    let task = cluster.spawn("/t", Props::new(), "worker").await.unwrap();

    // The child's copy of the registry lists every worker, itself included.
    assert_eq!(ask(&a, Msg::Lookup("/".into())).await, Msg::Text("/a,/b,/t".into()));
    assert_eq!(ask(&a, Msg::AskOther("/nobody".into(), Box::new(Msg::Count))).await, Msg::Text("not found".into()));

    // Child to child, child to task.
    assert_eq!(ask(&a, Msg::AskOther("/b".into(), Box::new(Msg::Num(3)))).await, Msg::Num(3));
    assert_eq!(ask(&a, Msg::AskOther("/t".into(), Box::new(Msg::Num(4)))).await, Msg::Num(4));
    let from_a = Some("/a".to_owned());
    let b = cluster.lookup("/b").unwrap();
    assert_eq!(ask(&b, Msg::Seen).await, Msg::Log(vec![(from_a.clone(), 3)]));
    assert_eq!(ask(&task, Msg::Seen).await, Msg::Log(vec![(from_a, 4)]));

    // A task worker asks a child; the child's answer errors cross the boundary.
    assert_eq!(ask(&task, Msg::AskOther("/b".into(), Box::new(Msg::Num(8)))).await, Msg::Num(8));
    assert_eq!(ask(&a, Msg::AskOther("/b".into(), Box::new(Msg::Drop))).await, Msg::Text("NoReply".into()));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_sender_and_receiver_across_processes() {
    const N: u64 = 2_000;
    let dir = TempDir::new();
    // A small mailbox, so that senders wait for credits most of the time.
    let cluster = process_builder(&dir).mailbox_capacity(4).build().unwrap();
    let receiver = cluster.spawn_process("/receiver", Props::new(), "worker").await.unwrap();
    let task_receiver = cluster.spawn("/task-receiver", Props::new(), "worker").await.unwrap();
    let child_sender = cluster.spawn_process("/child", Props::new(), "worker").await.unwrap();
    let task_sender = cluster.spawn("/task", Props::new(), "worker").await.unwrap();

    let bursts = [
        (child_sender.clone(), "/receiver"),
        (task_sender.clone(), "/receiver"),
        (child_sender.clone(), "/task-receiver"),
    ];
    let mut running = Vec::new();
    for (sender, to) in bursts {
        running.push(tokio::spawn(async move { sender.ask(Msg::Burst(to.into(), N), LONG).await }));
    }
    for i in 0..N {
        receiver.send(Msg::Num(i)).await.unwrap();
    }
    for burst in running {
        assert_eq!(within(burst).await.unwrap().unwrap(), Msg::Num(N));
    }
    let expected: Vec<u64> = (0..N).collect();
    let Msg::Log(log) = ask(&receiver, Msg::Seen).await else { panic!("not a log") };
    assert_eq!(log.len() as u64, 3 * N);
    for name in [None, Some("/child"), Some("/task")] {
        let seen: Vec<u64> = log.iter().filter(|(s, _)| s.as_deref() == name).map(|(_, n)| *n).collect();
        assert_eq!(seen, expected, "messages from {name:?} to the child arrived out of order");
    }
    let Msg::Log(log) = ask(&task_receiver, Msg::Seen).await else { panic!("not a log") };
    let seen: Vec<u64> = log.iter().map(|(_, n)| *n).collect();
    assert_eq!(seen, expected, "messages from the child to the task arrived out of order");
    within(cluster.shutdown(LONG)).await;
}

/// Review (issue 14): a child's sends to a worker that stops taking messages used up the
/// one credit window of the child's link, and then none of its messages reached any
/// other worker. Windows are per receiver now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_worker_does_not_block_a_childs_messages_to_other_workers() {
    let dir = TempDir::new();
    let cluster = process_builder(&dir).mailbox_capacity(4).build().unwrap();
    let stuck = cluster.spawn("/stuck", Props::new(), "worker").await.unwrap();
    cluster.spawn("/ok", Props::new(), "worker").await.unwrap();
    let child = cluster.spawn_process("/c", Props::new(), "worker").await.unwrap();
    stuck.send(Msg::Hang).await.unwrap();
    // 3 more fill its mailbox, 1 waits in the parent's forwarder, 4 more use up the
    // child's window to it, and the rest wait in the child.
    assert_eq!(ask(&child, Msg::FireInBackground("/stuck".into(), 20)).await, Msg::Num(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = within(child.ask(Msg::AskOther("/ok".into(), Box::new(Msg::Count)), Duration::from_secs(5))).await;
    assert_eq!(answer.map_err(|e| e.kind()), Ok(Msg::Num(0)), "the child cannot reach a healthy worker");
    stuck.kill();
    within(cluster.shutdown(LONG)).await;
}

/// Second review (per-receiver windows): a child's stop of a worker overtook the messages
/// it had sent that worker before, which still waited in the parent for room: they were
/// refused (the worker was stopping) and lost. A task's sends and stop keep their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_stop_comes_after_its_messages_that_wait_for_room() {
    let dir = TempDir::new();
    let cluster = process_builder(&dir).mailbox_capacity(2).build().unwrap();
    let gate = cluster.scope().lock("gate").await.unwrap();
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let record = seen.clone();
    let receiver = cluster
        .spawn_fn("/r", Props::new(), move |mut ctx| async move {
            // Takes no message until the test opens the gate.
            let _gate = ctx.scope().lock("gate").await.map_err(|e| e.to_string())?;
            while let Some(envelope) = ctx.recv().await {
                if let Msg::Num(n) = envelope.message() {
                    record.lock().push(*n);
                }
            }
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    let child = cluster.spawn_process("/c", Props::new(), "worker").await.unwrap();
    // 2 fill the mailbox, 2 more wait in the parent (the child's window), then the stop.
    assert_eq!(ask(&child, Msg::FireThenStop("/r".into(), 4)).await, Msg::Num(4));
    tokio::time::sleep(Duration::from_millis(300)).await; // the stop reaches the parent
    gate.release_async().await.unwrap();
    assert_eq!(within(receiver.join()).await, Reason::Normal);
    assert_eq!(*seen.lock(), [0, 1, 2, 3], "every message sent before the stop is received");
    within(cluster.shutdown(LONG)).await;
}
