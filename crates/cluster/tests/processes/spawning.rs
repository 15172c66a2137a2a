//! Spawns from inside a process worker, which its parent performs: tasks of the parent
//! and other child processes, named and checked as the parent's own spawns.

use std::time::Duration;

use latchkey_cluster::{Event, Path, Props, Reason, WorkerRef};

use crate::support::{ask, is_gone, is_running, process_cluster, within, How, Msg, LONG};

/// Asks `spawner` to spawn a `worker` at `path` as `how` says.
async fn spawn_from(spawner: &WorkerRef<Msg>, path: &str, how: How) -> Msg {
    ask(spawner, Msg::Spawn { path: path.into(), entry: "worker".into(), how }).await
}

/// What [`spawn_from`] answers for a worker that took its first message.
fn spawned(path: &str, pid: Option<u32>) -> Msg {
    Msg::Spawned { path: path.into(), pid, count: Box::new(Msg::Num(1)) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_spawns_a_task_and_a_process_that_take_messages_at_once() {
    let (cluster, _dir) = process_cluster();
    let spawner = cluster.spawn_process("/spawner", Props::new(), "worker").await.unwrap();
    let mut events = cluster.events();
    while events.try_next().is_some() {} // the snapshot

    // The child messages each at once: its spawn returns a usable reference.
    assert_eq!(spawn_from(&spawner, "/spawned/task", How::Task).await, spawned("/spawned/task", None));
    let answer = spawn_from(&spawner, "/spawned/process", How::Process).await;
    let Msg::Spawned { pid: Some(pid), .. } = answer else { panic!("{answer:?}") };
    assert_eq!(answer, spawned("/spawned/process", Some(pid)));
    assert!(pid != std::process::id() && Some(pid) != spawner.pid() && is_running(pid), "a child of the parent");

    // The parent published both and finds them, with the child's properties and message.
    for path in ["/spawned/task", "/spawned/process"] {
        let event = within(events.next()).await.expect("an Up event");
        assert!(matches!(&event, Event::Up(w) if w.path() == path), "{event:?}");
    }
    let task = cluster.lookup("/spawned/task").expect("the parent finds the task");
    let process = cluster.lookup("/spawned/process").expect("the parent finds the process");
    assert_eq!((task.pid(), process.pid()), (None, Some(pid)));
    assert_eq!(task.props().get("by"), Some("/spawner"));
    assert_eq!(ask(&process, Msg::Prop("by".into())).await, Msg::Text("/spawner".into()));
    for worker in [&task, &process] {
        assert_eq!(ask(worker, Msg::Seen).await, Msg::Log(vec![(Some("/spawner".into()), 1)]));
    }
    // The spawner's copy of the registry knows them.
    let listed = Msg::Text("/spawned/process,/spawned/task".into());
    assert_eq!(ask(&spawner, Msg::Lookup("/spawned".into())).await, listed);

    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(report.stopped, ["/spawned/process", "/spawned/task", "/spawner"]);
    assert!(report.forced.is_empty());
    assert!(is_gone(pid) && is_gone(spawner.pid().unwrap()), "no child process is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_spawn_fails_as_it_would_in_the_parent() {
    let (cluster, _dir) = process_cluster();
    let spawner = cluster.spawn_process("/spawner", Props::new(), "worker").await.unwrap();
    cluster.spawn("/taken", Props::new(), "worker").await.unwrap();
    let refused = |text: &str| Msg::Text(text.into());
    for how in [How::Task, How::Process] {
        let duplicate = "DuplicatePath: duplicate path: a live worker already has the path /taken (worker /taken)";
        assert_eq!(spawn_from(&spawner, "/taken", how).await, refused(duplicate), "{how:?}");
        let Msg::Text(err) = spawn_from(&spawner, "/spawner", how).await else { panic!("spawned over itself") };
        assert!(err.starts_with("DuplicatePath: "), "{err}");
        let invalid =
            r#"InvalidPath: invalid path: the worker path "no/slash" does not start with "/" (worker no/slash)"#;
        assert_eq!(spawn_from(&spawner, "no/slash", how).await, refused(invalid), "{how:?}");
        let unknown = Msg::Spawn { path: "/x".into(), entry: "nope".into(), how };
        let Msg::Text(err) = ask(&spawner, unknown).await else { panic!("spawned an unknown entry") };
        assert!(err.starts_with(r#"UnknownEntry: unknown entry: no entry is registered as "nope""#), "{err}");
    }
    let Msg::Text(err) = spawn_from(&spawner, "/x", How::Closure).await else { panic!("spawned a closure") };
    assert!(
        err.starts_with("Unsupported: unsupported: a process worker cannot spawn a worker from a closure"),
        "{err}"
    );

    let paths: Vec<String> = cluster.lookup_prefix("/").iter().map(|w| w.path().to_string()).collect();
    assert_eq!(paths, ["/spawner", "/taken"], "nothing was spawned");
    assert_eq!(ask(&spawner, Msg::Lookup("/".into())).await, Msg::Text("/spawner,/taken".into()));
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_ending_in_a_slash_is_numbered_by_the_parent() {
    let (cluster, _dir) = process_cluster();
    let spawner = cluster.spawn_process("/spawner", Props::new(), "worker").await.unwrap();
    assert_eq!(cluster.spawn("/pool/", Props::new(), "worker").await.unwrap().path(), "/pool/1");
    assert_eq!(spawn_from(&spawner, "/pool/", How::Task).await, spawned("/pool/2", None));
    let answer = spawn_from(&spawner, "/pool/", How::Process).await;
    let Msg::Spawned { pid: Some(pid), .. } = answer else { panic!("{answer:?}") };
    assert_eq!(answer, spawned("/pool/3", Some(pid)));
    assert_eq!(cluster.spawn("/pool/", Props::new(), "worker").await.unwrap().path(), "/pool/4");
    assert_eq!(cluster.lookup_prefix("/pool").len(), 4);
    within(cluster.shutdown(LONG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_what_children_spawned_and_leaves_no_process() {
    let (cluster, _dir) = process_cluster();
    let spawner = cluster.spawn_process("/spawner", Props::new(), "worker").await.unwrap();
    let mut pids = vec![spawner.pid().unwrap()];
    for path in ["/busy", "/idle"] {
        let answer = spawn_from(&spawner, path, How::Process).await;
        let Msg::Spawned { pid: Some(pid), .. } = answer else { panic!("{answer:?}") };
        pids.push(pid);
    }
    assert_eq!(spawn_from(&spawner, "/task", How::Task).await, spawned("/task", None));
    let busy = cluster.lookup("/busy").unwrap();
    busy.send(Msg::Hang).await.unwrap();

    let report = within(cluster.shutdown(Duration::from_millis(500))).await;
    assert_eq!(report.stopped, ["/idle", "/spawner", "/task"]);
    assert_eq!(report.forced, ["/busy"]);
    assert_eq!(busy.ended(), Some(Reason::Killed));
    for pid in pids {
        assert!(is_gone(pid), "the child {pid} is dead and reaped");
    }
    assert!(cluster.lookup_prefix("/").is_empty());
}

/// A child spawns until refused while the parent shuts down: its last spawn fails with
/// `Closed`, and whatever it spawned before is stopped with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_racing_shutdown_is_refused_or_stopped() {
    let (cluster, _dir) = process_cluster();
    let spawner = cluster.spawn_process("/spawner", Props::new(), "worker").await.unwrap();
    let mut events = cluster.events();
    let racing = {
        let spawner = spawner.clone();
        tokio::spawn(async move { spawner.ask(Msg::SpawnUntilRefused("/race/".into()), LONG).await })
    };
    let mut seen = Vec::new();
    while !seen.iter().any(|event: &Event<Msg>| event.path().is_under("/race")) {
        seen.push(within(events.next()).await.expect("events until shutdown"));
    }
    let report = within(cluster.shutdown(LONG)).await;
    assert_eq!(within(racing).await.unwrap().unwrap(), Msg::Text("Closed".into()));
    assert!(report.forced.is_empty(), "{report:?}");

    while let Some(event) = within(events.next()).await {
        seen.push(event); // the subscription ends after the shutdown's events
    }
    let mut up: Vec<Path> = seen.iter().filter(|event| event.is_up()).map(|event| event.path().clone()).collect();
    up.sort_unstable();
    eprintln!("the child spawned {} workers before the shutdown refused one", up.len() - 1);
    assert_eq!(up, report.stopped, "every worker spawned was stopped");
    for event in &seen {
        let pid = event.worker().pid();
        assert!(pid.is_none_or(is_gone), "{event:?}: its process is left");
    }
}
