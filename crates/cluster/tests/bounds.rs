//! Auto traits: handles, references and futures cross threads.

use std::time::Duration;

use latchkey_cluster::{Cluster, Context, Error, Events, Group, Props, ShutdownReport, WorkerRef};

use crate::support::{cluster, Msg};

#[tokio::test]
async fn handles_references_and_futures_are_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Cluster<Msg>>();
    send_sync::<WorkerRef<Msg>>();
    send_sync::<Context<Msg>>();
    send_sync::<Group<Msg>>();
    send_sync::<Events<Msg>>();
    send_sync::<Error>();
    send_sync::<ShutdownReport>();

    let cluster = cluster();
    let worker = cluster.spawn("/w", Props::new(), "worker").await.unwrap();
    let mut group = cluster.group("/");
    let mut events = cluster.events();
    send(&cluster.spawn("/x", Props::new(), "worker"));
    send(&worker.send(Msg::Count));
    send(&worker.ask(Msg::Count, Duration::ZERO));
    send(&worker.stop(Duration::ZERO));
    send(&worker.join());
    send(&group.send_round_robin(Msg::Count));
    send(&group.broadcast(Msg::Count));
    send(&events.next());
    send(&cluster.shutdown(Duration::ZERO));
}
