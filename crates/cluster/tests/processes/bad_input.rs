//! Bad input with process workers: messages that cannot be decoded, full mailboxes,
//! asks to gone children, and spawns that cannot work.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use latchkey_cluster::{ErrorKind, Props, Reason};

use crate::support::{ask, cluster, process_builder, process_cluster, start_ask, within, Msg, TempDir, LONG};

#[tokio::test]
async fn a_message_the_child_cannot_decode_fails_it() {
    let (cluster, _dir) = process_cluster();
    let child = cluster.spawn_process("/p", Props::new(), "worker").await.unwrap();
    let err = within(child.ask(Msg::Undecodable(1), LONG)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReply, "the ask fails when the child ends, not at its timeout");
    let reason = within(child.join()).await;
    let Reason::Failed(message) = reason else { panic!("{reason:?}") };
    assert!(message.contains("cannot decode a frame from the parent"), "{message}");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn a_message_the_parent_cannot_decode_fails_the_child() {
    let (cluster, _dir) = process_cluster();
    let child = cluster.spawn_process("/p", Props::new(), "worker").await.unwrap();
    let err = within(child.ask(Msg::ReplyUndecodable, LONG)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoReply);
    let reason = within(child.join()).await;
    let Reason::Failed(message) = reason else { panic!("{reason:?}") };
    assert!(message.contains("sent a frame that cannot be decoded"), "{message}");
    assert!(crate::support::is_gone(child.pid().unwrap()), "the child was killed and reaped");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn a_full_process_mailbox_fails_try_send_and_makes_send_wait() {
    let dir = TempDir::new();
    let cluster = process_builder(&dir).mailbox_capacity(2).build().unwrap();
    let sleeper = cluster.spawn_process("/sleeper", Props::new(), "sleeper").await.unwrap();
    sleeper.try_send(Msg::Num(1)).unwrap();
    sleeper.send(Msg::Num(2)).await.unwrap();
    let err = sleeper.try_send(Msg::Num(3)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    assert_eq!(err.to_string(), "mailbox full: its mailbox of 2 messages is full (worker /sleeper; retrying may help)");

    let mut send = pin!(sleeper.send(Msg::Num(3)));
    let pending = poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx).is_pending())).await;
    assert!(pending, "send waits for room");
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.stopped, ["/sleeper"]);
    assert_eq!(within(send).await.unwrap_err().kind(), ErrorKind::Closed, "a waiting send fails at shutdown");
}

#[tokio::test]
async fn an_ask_to_a_gone_child_fails_at_once() {
    let (cluster, _dir) = process_cluster();
    let gone = cluster.spawn_process("/gone", Props::new(), "worker").await.unwrap();
    gone.send(Msg::Quit).await.unwrap();
    assert_eq!(within(gone.join()).await, Reason::Normal);
    let err = within(gone.ask(Msg::Count, Duration::from_secs(3600))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(
        err.to_string(),
        "closed: the worker has ended (returned normally); it takes no messages (worker /gone)"
    );

    // A child that ends with an ask pending fails the ask at once.
    let holder = cluster.spawn_process("/holder", Props::new(), "worker").await.unwrap();
    let held = start_ask(&holder, Msg::Hold).await;
    holder.send(Msg::Quit).await.unwrap();
    assert_eq!(within(held).await.unwrap_err().kind(), ErrorKind::NoReply);
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn process_spawns_are_checked() {
    let err = cluster().spawn_process("/p", Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Scope, "a process: scope is not shared with children");
    assert!(err.to_string().contains("host:"), "{err}");

    let (cluster, _dir) = process_cluster();
    let err = cluster.spawn_process("/p", Props::new(), "nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownEntry);
    assert_eq!(
        cluster.spawn_process("no/slash", Props::new(), "worker").await.unwrap_err().kind(),
        ErrorKind::InvalidPath
    );
    let first = cluster.spawn_process("/dup", Props::new(), "worker").await.unwrap();
    let err = cluster.spawn_process("/dup", Props::new(), "worker").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicatePath);
    assert_eq!(cluster.lookup_prefix("/").len(), 1);
    assert_eq!(ask(&first, Msg::Num(1)).await, Msg::Num(1));
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.stopped, ["/dup"]);
}
