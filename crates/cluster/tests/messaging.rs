//! Sends, asks, replies, senders, and the order of messages per sender and receiver.

use std::time::Duration;

use latchkey_cluster::{ErrorKind, Props, Reason};

use crate::support::{ask, builder, cluster, within, Msg, LONG};

#[tokio::test]
async fn send_and_ask() {
    let cluster = cluster();
    let worker = cluster.spawn("/w", Props::new(), "worker").await.unwrap();
    worker.send(Msg::Text("hello".into())).await.unwrap();
    worker.try_send(Msg::Num(7)).unwrap();
    assert_eq!(ask(&worker, Msg::Num(5)).await, Msg::Num(5));
    assert_eq!(ask(&worker, Msg::Count).await, Msg::Num(3));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn receivers_see_the_sending_worker_or_none_from_outside() {
    let cluster = cluster();
    let receiver = cluster.spawn("/receiver", Props::new(), "worker").await.unwrap();
    receiver.send(Msg::Num(1)).await.unwrap();
    let sender = cluster
        .spawn_fn("/sender", Props::new(), |ctx| async move {
            let receiver = ctx.cluster().lookup("/receiver").expect("the receiver is up");
            receiver.send(Msg::Num(2)).await?;
            receiver.ask(Msg::Num(3), LONG).await.map(drop)
        })
        .await
        .unwrap();
    assert_eq!(within(sender.join()).await, Reason::Normal);
    let log = ask(&receiver, Msg::Seen).await;
    let from = |s: &str| Some(s.to_owned());
    assert_eq!(log, Msg::Log(vec![(None, 1), (from("/sender"), 2), (from("/sender"), 3)]));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_kept_per_sender_and_receiver() {
    const N: u64 = 2_000;
    // A small mailbox, so that senders wait for room most of the time.
    let cluster = builder().mailbox_capacity(4).build().unwrap();
    let receiver = cluster.spawn("/receiver", Props::new(), "worker").await.unwrap();
    let mut senders = Vec::new();
    for _ in 0..3 {
        let sender = cluster.spawn_fn("/senders/", Props::new(), |ctx| async move {
            let receiver = ctx.cluster().lookup("/receiver").expect("the receiver is up");
            for i in 0..N {
                receiver.send(Msg::Num(i)).await?;
            }
            Ok::<(), latchkey_cluster::Error>(())
        });
        senders.push(sender.await.unwrap());
    }
    for i in 0..N {
        receiver.send(Msg::Num(i)).await.unwrap();
    }
    for sender in &senders {
        assert_eq!(within(sender.join()).await, Reason::Normal);
    }
    let Msg::Log(log) = ask(&receiver, Msg::Seen).await else { panic!("not a log") };
    assert_eq!(log.len() as u64, 4 * N);
    let names = [None, Some("/senders/1"), Some("/senders/2"), Some("/senders/3")];
    for name in names {
        let seen: Vec<u64> = log.iter().filter(|(s, _)| s.as_deref() == name).map(|(_, n)| *n).collect();
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "messages from {name:?} arrived out of order");
    }
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(start_paused = true)]
async fn an_ask_nobody_answers_times_out() {
    let cluster = cluster();
    let worker = cluster.spawn("/silent", Props::new(), "worker").await.unwrap();
    let err = worker.ask(Msg::Hold, Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
    assert_eq!(err.path(), Some("/silent"));
    assert!(err.to_string().contains("no reply within 2s"), "{err}");
    // The worker is still alive and answers other asks.
    assert_eq!(ask(&worker, Msg::Num(1)).await, Msg::Num(1));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn an_ask_dropped_unanswered_fails_at_once() {
    let cluster = cluster();
    let worker = cluster.spawn("/w", Props::new(), "worker").await.unwrap();
    let err = within(worker.ask(Msg::Drop, Duration::from_secs(3600))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReply);
    assert!(err.to_string().contains("/w"), "{err}");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn an_ask_pending_when_its_worker_dies_fails_at_once() {
    let cluster = cluster();
    let worker = cluster
        .spawn_fn("/w", Props::new(), |mut ctx| async move {
            let _ask = ctx.recv().await;
            panic!("dies holding an ask");
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    let err = within(worker.ask(Msg::Num(1), Duration::from_secs(3600))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReply);
    assert!(matches!(within(worker.join()).await, Reason::Failed(m) if m.contains("dies holding an ask")));
}

#[tokio::test]
async fn replies_can_be_sent_after_the_envelope_is_gone() {
    let cluster = cluster();
    let worker = cluster
        .spawn_fn("/late", Props::new(), |mut ctx| async move {
            let mut first = ctx.recv().await.expect("an ask");
            let reply = first.take_reply().expect("it is an ask");
            let Msg::Num(n) = first.into_message() else { return Err("not a number".to_owned()) };
            reply.send(Msg::Num(n + 1)).map_err(|e| e.to_string())
        })
        .await
        .unwrap();
    assert_eq!(ask(&worker, Msg::Num(41)).await, Msg::Num(42));
    assert_eq!(within(worker.join()).await, Reason::Normal);
}
