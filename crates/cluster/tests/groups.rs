//! Groups: round robin, broadcast, and membership that follows events.

use latchkey_cluster::{ErrorKind, Event, Props, Reason};

use crate::support::{ask, cluster, within, Msg, LONG};

#[tokio::test]
async fn round_robin_spreads_messages_evenly() {
    let cluster = cluster();
    let workers = [
        cluster.spawn("/pool/", Props::new(), "worker").await.unwrap(),
        cluster.spawn("/pool/", Props::new(), "worker").await.unwrap(),
        cluster.spawn("/pool/", Props::new(), "worker").await.unwrap(),
    ];
    cluster.spawn("/other", Props::new(), "worker").await.unwrap();
    let mut pool = cluster.group("/pool/");
    assert_eq!(pool.prefix(), "/pool/");
    assert_eq!(pool.members().len(), 3);
    let mut targets = Vec::new();
    for i in 0..9 {
        targets.push(pool.send_round_robin(Msg::Num(i)).await.unwrap().to_string());
    }
    assert_eq!(targets[..3], ["/pool/1", "/pool/2", "/pool/3"]);
    assert_eq!(targets[3..6], targets[..3]);
    for worker in &workers {
        assert_eq!(ask(worker, Msg::Count).await, Msg::Num(3), "{worker:?}");
    }
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn broadcast_reaches_every_member_once() {
    let cluster = cluster();
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(cluster.spawn("/all/", Props::new(), "worker").await.unwrap());
    }
    let outsider = cluster.spawn("/outside", Props::new(), "worker").await.unwrap();
    let mut all = cluster.group("/all");
    assert_eq!(all.broadcast(Msg::Num(9)).await.unwrap(), 4);
    for worker in &workers {
        assert_eq!(ask(worker, Msg::Seen).await, Msg::Log(vec![(None, 9)]));
    }
    assert_eq!(ask(&outsider, Msg::Count).await, Msg::Num(0));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test]
async fn a_group_follows_membership() {
    let cluster = cluster();
    let mut group = cluster.group("/g");
    assert!(group.members().is_empty());
    let err = group.send_round_robin(Msg::Num(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoMembers);
    assert!(err.to_string().contains("/g"), "{err}");
    assert_eq!(group.broadcast(Msg::Num(1)).await.unwrap_err().kind(), ErrorKind::NoMembers);

    let first = cluster.spawn("/g/1", Props::new(), "worker").await.unwrap();
    cluster.spawn("/elsewhere", Props::new(), "worker").await.unwrap();
    let second = cluster.spawn("/g/2", Props::new(), "worker").await.unwrap();
    let change = within(group.changed()).await.expect("an event");
    assert!(matches!(&change, Event::Up(w) if w.path() == "/g/1"), "{change:?}");
    assert_eq!(group.members().len(), 2);

    first.send(Msg::Quit).await.unwrap();
    assert_eq!(within(first.join()).await, Reason::Normal);
    let members: Vec<String> = group.members().iter().map(|w| w.path().to_string()).collect();
    assert_eq!(members, ["/g/2"]);
    for i in 0..3 {
        assert_eq!(group.send_round_robin(Msg::Num(i)).await.unwrap(), "/g/2");
    }
    assert_eq!(ask(&second, Msg::Count).await, Msg::Num(3));
    within(cluster.shutdown(LONG)).await;
    assert!(within(group.changed()).await.is_some_and(|e| !e.is_up()), "the last member's Down");
    assert!(within(group.changed()).await.is_none(), "membership ends with the cluster");
}

#[tokio::test]
async fn group_sends_from_a_worker_carry_its_path() {
    let cluster = cluster();
    let target = cluster.spawn("/t/1", Props::new(), "worker").await.unwrap();
    let sender = cluster
        .spawn_fn("/sender", Props::new(), |ctx| async move {
            let mut group = ctx.cluster().group("/t");
            group.send_round_robin(Msg::Num(1)).await?;
            group.broadcast(Msg::Num(2)).await.map(drop)
        })
        .await
        .unwrap();
    assert_eq!(within(sender.join()).await, Reason::Normal);
    let from = Some("/sender".to_owned());
    assert_eq!(ask(&target, Msg::Seen).await, Msg::Log(vec![(from.clone(), 1), (from, 2)]));
    within(cluster.shutdown(LONG)).await;
}
