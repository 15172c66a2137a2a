//! Bad input: invalid paths, duplicates, unknown entries, full mailboxes, gone workers.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use latchkey_cluster::{Cluster, ErrorKind, Props, Reason};

use crate::support::{builder, cluster, within, worker, Msg, LONG};

#[tokio::test]
async fn invalid_paths_are_refused_with_their_name() {
    let cluster = cluster();
    for bad in ["", "relative", "/a//b", "//", "/a/./b", "/a/../b", "/tab\there", "/a//"] {
        let err = cluster.spawn(bad, Props::new(), "worker").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPath, "{bad:?}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        assert!(cluster.lookup(bad).is_none());
    }
    let long = format!("/{}", "x".repeat(300));
    assert_eq!(cluster.spawn(&long, Props::new(), "worker").await.unwrap_err().kind(), ErrorKind::InvalidPath);
    let long_template = format!("/{}/", "x".repeat(253));
    let err = cluster.spawn(&long_template, Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPath, "no room left for the assigned segment");
    assert!(cluster.lookup_prefix("/").is_empty(), "nothing was spawned");
}

#[tokio::test]
async fn properties_too_large_to_travel_are_refused() {
    let cluster = cluster();
    let huge = Props::new().with("blob", "x".repeat(latchkey_cluster::MAX_PROPS_BYTES));
    let err = cluster.spawn("/huge", huge.clone(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert!(err.to_string().contains("/huge") && err.to_string().contains("properties"), "{err}");
    let err = cluster.spawn_fn("/huge", huge, |_| async { Ok::<(), String>(()) }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(cluster.lookup_prefix("/").is_empty(), "nothing was spawned");
    let fits = Props::new().with("blob", "x".repeat(latchkey_cluster::MAX_PROPS_BYTES - 4));
    cluster.spawn("/fits", fits, "worker").await.unwrap();
}

#[tokio::test]
async fn a_duplicate_path_is_refused() {
    let cluster = cluster();
    let first = cluster.spawn("/dup", Props::new(), "worker").await.unwrap();
    let err = cluster.spawn("/dup", Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicatePath);
    assert_eq!(err.path(), Some("/dup"));
    assert_eq!(err.to_string(), "duplicate path: a live worker already has the path /dup (worker /dup)");
    let err = cluster.spawn_fn("/dup", Props::new(), |_| async { Ok::<(), String>(()) }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicatePath);
    assert_eq!(cluster.lookup_prefix("/").len(), 1);
    assert_eq!(first.ended(), None, "the first worker is untouched");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn entries_are_checked() {
    let cluster = cluster();
    let err = cluster.spawn("/x", Props::new(), "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownEntry);
    assert!(err.to_string().contains("\"nope\"") && err.to_string().contains("registered: sleeper, worker"), "{err}");
    assert!(cluster.lookup("/x").is_none());

    let err = builder().entry("worker", worker).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEntry);
    assert!(err.to_string().contains("registered twice"), "{err}");
    let err = Cluster::<Msg>::builder().entry("has space", worker).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidEntry);
}

#[test]
fn a_cluster_needs_a_runtime() {
    let err = Cluster::<Msg>::builder().scope(latchkey::Scope::isolated()).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoRuntime);
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn a_full_mailbox_fails_try_send_and_makes_send_wait() {
    let cluster = builder().mailbox_capacity(2).build().unwrap();
    let sleeper = cluster
        .spawn_fn("/sleeper", Props::new(), |ctx| async move {
            ctx.stop_requested().await;
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    sleeper.try_send(Msg::Num(1)).unwrap();
    sleeper.send(Msg::Num(2)).await.unwrap();
    let err = sleeper.try_send(Msg::Num(3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    assert!(err.is_retryable());
    assert_eq!(err.to_string(), "mailbox full: its mailbox of 2 messages is full (worker /sleeper; retrying may help)");

    let mut send = pin!(sleeper.send(Msg::Num(3)));
    let pending = poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "send waits for room");
    within(cluster.shutdown(LONG)).await;
    assert_eq!(within(send).await.unwrap_err().kind(), ErrorKind::Closed, "a waiting send fails at shutdown");
}

#[tokio::test]
async fn an_ask_to_a_gone_worker_fails_at_once() {
    let cluster = cluster();
    let gone = cluster.spawn("/gone", Props::new(), "worker").await.unwrap();
    gone.send(Msg::Quit).await.unwrap();
    assert_eq!(within(gone.join()).await, Reason::Normal);
    let err = within(gone.ask(Msg::Count, Duration::from_secs(3600))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        "closed: the worker has ended (returned normally); it takes no messages (worker /gone)"
    );
    assert_eq!(gone.try_send(Msg::Count).unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn replying_to_a_plain_send_is_refused() {
    let cluster = cluster();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let worker = cluster
        .spawn_fn("/replier", Props::new(), |mut ctx| async move {
            let envelope = ctx.recv().await.expect("a message");
            assert!(!envelope.is_ask());
            let _ = tx.send(envelope.reply(Msg::Num(0)).unwrap_err().kind());
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    worker.send(Msg::Num(1)).await.unwrap();
    assert_eq!(within(rx).await.unwrap(), ErrorKind::NotAsked);
    assert_eq!(within(worker.join()).await, Reason::Normal);
}

#[tokio::test]
async fn nothing_is_spawned_after_shutdown() {
    let cluster = cluster();
    within(cluster.shutdown(LONG)).await;
    let err = cluster.spawn("/late", Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(err.to_string().contains("shutting down"), "{err}");
}
