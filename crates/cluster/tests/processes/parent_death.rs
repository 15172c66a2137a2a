//! A parent that dies takes its process workers with it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use latchkey_cluster::Props;

use crate::support::{is_running, process_builder, TempDir, HANG};

/// Set in the helper parent's environment: the directory of its host scope.
const HELPER_ENV: &str = "LATCHKEY_CLUSTER_TEST_PARENT";

/// The helper parent: spawns a busy and an idle process worker, prints their pids, and
/// waits to be killed. In the test run itself it does nothing.
#[test]
fn helper_parent() {
    let Ok(dir) = std::env::var(HELPER_ENV) else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = TempDir(dir.into());
        let cluster = process_builder(&dir).build().unwrap();
        let busy = cluster.spawn_process("/busy", Props::new(), "worker").await.unwrap();
        busy.send(crate::support::Msg::Hang).await.unwrap();
        let idle = cluster.spawn_process("/idle", Props::new(), "worker").await.unwrap();
        println!("\npids {} {}", busy.pid().unwrap(), idle.pid().unwrap());
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

#[test]
fn children_die_when_their_parent_is_killed() {
    let dir = TempDir::new();
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "processes::parent_death::helper_parent", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, &dir.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the helper parent");
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let pids: Vec<u32> = loop {
        let line = lines.next().expect("the helper prints the pids").unwrap();
        // The children share this output: their test harness may have printed part of a
        // line ("test processes::child ... ") just before the pids.
        if let Some((_, pids)) = line.split_once("pids ") {
            break pids.split_whitespace().take(2).map(|pid| pid.parse().unwrap()).collect();
        }
    };
    assert!(pids.iter().all(|&pid| is_running(pid)));
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let deadline = std::time::Instant::now() + HANG;
    while pids.iter().any(|&pid| is_running(pid)) {
        assert!(std::time::Instant::now() < deadline, "children of a killed parent still run: {pids:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
