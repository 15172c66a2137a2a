//! Membership events: reasons, snapshot then live, and workers waiting for each other.

use std::collections::HashMap;

use latchkey_cluster::{Event, Props, Reason};

use crate::support::{ask, cluster, within, Msg, LONG};

#[tokio::test(start_paused = true)]
async fn down_events_carry_the_reason() {
    let cluster = cluster();
    let mut events = cluster.events();
    let ok = cluster.spawn("/ok", Props::new(), "worker").await.unwrap();
    let err = cluster.spawn("/err", Props::new(), "worker").await.unwrap();
    let panics = cluster.spawn("/panics", Props::new(), "worker").await.unwrap();
    let busy = cluster.spawn("/busy", Props::new(), "worker").await.unwrap();
    ok.send(Msg::Quit).await.unwrap();
    err.send(Msg::Fail("boom".into())).await.unwrap();
    panics.send(Msg::Panic).await.unwrap();
    busy.send(Msg::Hang).await.unwrap();
    for worker in [&ok, &err, &panics] {
        within(worker.join()).await;
    }
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.forced, ["/busy"]);

    let mut ups = Vec::new();
    let mut downs = HashMap::new();
    while let Some(event) = within(events.next()).await {
        match event {
            Event::Up(worker) => ups.push(worker.path().to_string()),
            Event::Down(worker, reason) => {
                assert!(ups.contains(&worker.path().to_string()), "Up before Down");
                downs.insert(worker.path().to_string(), reason);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(ups, ["/ok", "/err", "/panics", "/busy"]);
    assert_eq!(downs["/ok"], Reason::Normal);
    assert_eq!(downs["/err"], Reason::Failed("boom".into()));
    assert_eq!(downs["/panics"], Reason::Failed("panicked: asked to panic".into()));
    assert_eq!(downs["/busy"], Reason::Killed);
    assert_eq!(downs.len(), 4);
    assert_eq!(busy.ended(), Some(Reason::Killed));
    assert_eq!(Reason::Killed.to_string(), "killed");
    assert_eq!(downs["/err"].to_string(), "failed: boom");
}

#[tokio::test]
async fn a_late_subscriber_gets_the_members_then_the_changes() {
    let cluster = cluster();
    let a = cluster.spawn("/a", Props::new(), "worker").await.unwrap();
    let b = cluster.spawn("/b", Props::new(), "worker").await.unwrap();
    cluster.spawn("/c", Props::new(), "worker").await.unwrap();
    b.send(Msg::Quit).await.unwrap();
    within(b.join()).await;

    let mut events = cluster.events();
    let snapshot: Vec<String> = std::iter::from_fn(|| events.try_next()).map(|e| format!("{e:?}")).collect();
    assert_eq!(snapshot, [r#"Up("/a")"#, r#"Up("/c")"#], "the current members, nothing else");

    cluster.spawn("/d", Props::new(), "worker").await.unwrap();
    a.kill();
    assert_eq!(within(a.join()).await, Reason::Killed);
    let live: Vec<String> = std::iter::from_fn(|| events.try_next()).map(|e| format!("{e:?}")).collect();
    assert_eq!(live, [r#"Up("/d")"#, r#"Down("/a", Killed)"#]);
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn events_end_after_shutdown() {
    let cluster = cluster();
    cluster.spawn("/w", Props::new(), "worker").await.unwrap();
    let mut events = cluster.events();
    within(cluster.shutdown(LONG)).await;
    assert!(within(events.next()).await.is_some_and(|e| e.is_up()));
    assert!(within(events.next()).await.is_some_and(|e| !e.is_up() && e.path() == "/w"));
    assert!(within(events.next()).await.is_none());
    assert!(within(cluster.events().next()).await.is_none(), "a subscription after shutdown ends at once");
}

/// The classic demo: senders wait for the receiver's `Up`, then send to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_wait_for_the_receiver_to_come_up() {
    let cluster = cluster();
    let mut senders = Vec::new();
    for id in ["1", "2"] {
        let sender = cluster.spawn_fn("/senders/", Props::from([("id", id)]), |ctx| async move {
            let mut events = ctx.events();
            while let Some(event) = events.next().await {
                if let Event::Up(worker) = event {
                    if worker.props().get("type") == Some("receiver") {
                        let id: u64 = ctx.props().get("id").unwrap_or_default().parse().map_err(|_| "bad id")?;
                        return worker.send(Msg::Num(id)).await.map_err(|e| e.to_string());
                    }
                }
            }
            Err("the cluster shut down first".to_owned())
        });
        senders.push(sender.await.unwrap());
    }
    let receiver = cluster.spawn("/receiver", Props::from([("type", "receiver")]), "worker").await.unwrap();
    for sender in &senders {
        assert_eq!(within(sender.join()).await, Reason::Normal);
    }
    let Msg::Log(mut log) = ask(&receiver, Msg::Seen).await else { panic!("not a log") };
    log.sort();
    let from = |s: &str| Some(s.to_owned());
    assert_eq!(log, [(from("/senders/1"), 1), (from("/senders/2"), 2)]);
    within(cluster.shutdown(LONG)).await;
}
