//! How process workers end in awkward moments: killed while their last sends still wait
//! in the parent, and spawns cancelled while the child is being forked.

use std::time::Duration;

use latchkey_cluster::{Props, Reason};

use crate::support::{ask, is_gone, process_builder, process_cluster, within, Msg, TempDir, HANG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_ended_with_sends_waiting_in_the_parent_can_still_be_killed() {
    let dir = TempDir::new();
    let cluster = process_builder(&dir).mailbox_capacity(2).build().unwrap();
    // A task that takes no more messages, with room for two.
    let stuck = cluster.spawn("/stuck", Props::new(), "worker").await.unwrap();
    stuck.send(Msg::Hang).await.unwrap();
    let child = cluster.spawn_process("/child", Props::new(), "worker").await.unwrap();
    // Two of its sends fit; the others wait in the parent's forwarder, and the child ends.
    assert_eq!(ask(&child, Msg::Fire("/stuck".into(), 4)).await, Msg::Num(4));
    let pid = child.pid().unwrap();
    child.send(Msg::Quit).await.unwrap();
    let start = std::time::Instant::now();
    while !is_gone(pid) {
        assert!(start.elapsed() < HANG, "the child did not end");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill(); // its process is gone; its sends still wait
    assert_eq!(within(child.join()).await, Reason::Killed, "a kill ends it, its waiting sends dropped");
    within(cluster.shutdown(Duration::from_millis(100))).await;
}

/// This process's children (any state, zombies included).
fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent pid is the second field after the command name in parentheses.
        if stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)) == Some(me.as_str()) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_cancelled_while_the_child_is_forked_leaves_no_child_behind() {
    let (cluster, _dir) = process_cluster();
    for i in 0..30 {
        // Timeouts from 50 µs up: some spawns are cancelled in the middle of the fork.
        let cut_short = Duration::from_micros(50 + 50 * i);
        let _ = tokio::time::timeout(cut_short, cluster.spawn_process("/brief/", Props::new(), "worker")).await;
    }
    within(cluster.shutdown(Duration::from_secs(5))).await;
    let start = std::time::Instant::now();
    while !children().is_empty() {
        assert!(start.elapsed() < HANG, "children left behind: {:?}", children());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
