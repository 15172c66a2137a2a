//! Membership events of process workers, with the reasons they went down, and their
//! locks, which die with them.

use std::collections::HashMap;
use std::time::Instant;

use latchkey_cluster::{Event, Props, Reason};

use crate::support::{ask, process_cluster, start_ask, within, Msg, LONG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_events_carry_the_reason() {
    let (cluster, _dir) = process_cluster();
    let mut events = cluster.events();
    let mut workers = HashMap::new();
    for path in ["/ok", "/err", "/panics", "/killed"] {
        workers.insert(path, cluster.spawn_process(path, Props::new(), "worker").await.unwrap());
    }
    workers["/ok"].send(Msg::Quit).await.unwrap();
    workers["/err"].send(Msg::Fail("boom".into())).await.unwrap();
    workers["/panics"].send(Msg::Panic).await.unwrap();
    assert_eq!(ask(&workers["/killed"], Msg::Num(1)).await, Msg::Num(1));
    workers["/killed"].kill();

    let mut downs = HashMap::new();
    while downs.len() < 4 {
        match within(events.next()).await.expect("events until shutdown") {
            Event::Down(worker, reason) => drop(downs.insert(worker.path().to_string(), reason)),
            event => assert!(event.is_up()),
        }
    }
    assert_eq!(downs["/ok"], Reason::Normal);
    assert_eq!(downs["/err"], Reason::Failed("boom".into()));
    assert_eq!(downs["/panics"], Reason::Failed("panicked: asked to panic".into()));
    assert_eq!(downs["/killed"], Reason::Killed);
    for worker in workers.values() {
        assert_eq!(within(worker.join()).await, downs[worker.path().as_str()]);
        assert!(crate::support::is_gone(worker.pid().unwrap()), "{worker:?} is reaped");
    }
    within(cluster.shutdown(LONG)).await;
}

/// The `Down` of a child killed from outside follows its death at once, and its lock is
/// free by then: the host scope frees a dead process's locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_with_sigkill_goes_down_and_loses_its_locks() {
    let (cluster, _dir) = process_cluster();
    let holder = cluster.spawn_process("/holder", Props::new(), "worker").await.unwrap();
    assert_eq!(ask(&holder, Msg::Lock("resource".into())).await, Msg::Text("locked".into()));
    assert!(cluster.scope().is_locked("resource").unwrap());
    let waiter = cluster.spawn_process("/waiter", Props::new(), "worker").await.unwrap();
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.ask(Msg::Lock("resource".into()), LONG).await })
    };
    let pending = start_ask(&holder, Msg::Hold).await;

    let mut events = cluster.events();
    while events.try_next().is_some() {} // the snapshot
    let pid = holder.pid().unwrap();
    let killed_at = Instant::now();
    // SAFETY: a plain system call on a child of this process, not yet reaped.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let event = within(events.next()).await.expect("the Down event");
    eprintln!("Down of a child killed with SIGKILL after {:?}", killed_at.elapsed());
    assert!(matches!(&event, Event::Down(w, Reason::Killed) if w.path() == "/holder"), "{event:?}");
    assert_eq!(within(pending).await.unwrap_err().kind(), latchkey_cluster::ErrorKind::NoReply);

    assert_eq!(within(waiting).await.unwrap().unwrap(), Msg::Text("locked".into()), "the waiter got the lock");
    assert_eq!(waiter.stop(LONG).await, Reason::Normal);
    let guard = cluster.scope().try_lock("resource").unwrap();
    assert!(guard.is_some(), "the parent can take the lock");
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_sees_membership_and_kills_through_the_parent() {
    let (cluster, _dir) = process_cluster();
    let watcher = cluster.spawn_process("/watcher", Props::new(), "worker").await.unwrap();
    let x = cluster.spawn("/x", Props::new(), "worker").await.unwrap();
    let seen = ask(&watcher, Msg::QuitAndWatch("/x".into())).await;
    assert_eq!(seen, Msg::Text(r#"Up("/x") Down("/x", Normal)"#.into()));
    assert_eq!(within(x.join()).await, Reason::Normal);

    let victim = cluster.spawn_process("/victim", Props::new(), "worker").await.unwrap();
    assert_eq!(ask(&watcher, Msg::KillOther("/victim".into())).await, Msg::Text("killed".into()));
    assert_eq!(within(victim.join()).await, Reason::Killed);
    within(cluster.shutdown(LONG)).await;
}
