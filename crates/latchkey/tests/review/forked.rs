//! **A child forked at the process's descriptor limit keeps its parent alive.** The fork
//! handler (`sys::maps::forget_namespaces`) opens `/dev/null` to put over the namespace
//! descriptors it inherited, and returns at once if it cannot: then it neither replaces
//! the descriptors nor the mappings, and the child keeps the parent's open file
//! description, and so the parent's liveness lock, for as long as it lives. When the
//! parent dies, its holds are never freed: every waiter finds its slot alive.
//!
//! A scope used in a child forked (without exec) after it was opened must refuse with
//! `HandleLost` (`sys::maps`: "a namespace opened under another fork count refuses to be
//! used"). `open`, `open_once` and `state_of` check, but `list` and `inspect` read the
//! table first (`Namespace::names`, `Namespace::find`), in the child's copy of the
//! mapping, which the fork handler replaced with zeroes: `list()` answers that nothing
//! is held (an empty list, `Ok`), and `inspect()` calls the namespace file corrupted.

use std::time::Duration;

use latchkey::{ErrorKind, Scope};

use super::{Dirs, Proc};

/// What `list()` and `inspect("m")` say in a child forked while this process holds `m`.
fn in_a_forked_child(scope: &Scope) -> String {
    latchkey_testkit::in_a_forked_child(Duration::from_secs(30), || {
        let describe = |kind: Option<ErrorKind>, ok: String| kind.map_or(ok, |kind| format!("{kind:?}"));
        let listed = scope.list();
        let list =
            describe(listed.as_ref().err().map(|e| e.kind()), format!("Ok({} held)", listed.map_or(0, |l| l.len())));
        let inspected = scope.inspect("m");
        let inspect = describe(
            inspected.as_ref().err().map(|e| e.kind()),
            format!("Ok(locked: {})", inspected.is_ok_and(|s| s.is_locked())),
        );
        format!("list {list}; inspect {inspect}")
    })
    .expect("the child answers")
}

#[test]
fn list_and_inspect_in_a_forked_child_refuse_with_handle_lost() {
    let dirs = Dirs::new("latchkey-review-fork");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mutex = scope.mutex("m").unwrap();
    let _held = mutex.lock_blocking().unwrap();
    let said = in_a_forked_child(&scope);
    assert_eq!(
        said, "list HandleLost; inspect HandleLost",
        "in a child forked while the parent holds m, the parent's scope must refuse (HandleLost); list() must not \
         answer that nothing is held"
    );
}

#[test]
fn a_child_forked_after_its_parent_waited_can_wait_with_a_deadline() {
    let dirs = Dirs::new("latchkey-review-forktimer");
    let scope = Scope::open(&dirs.url()).unwrap();
    let mutex = scope.mutex("m").unwrap();
    let _held = mutex.lock_blocking().unwrap();
    // The parent waits with a deadline once: latchkey's timer thread runs from here on.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let waited = runtime.block_on(async { scope.mutex("m")?.lock_timeout(Duration::from_millis(20)).await.map(drop) });
    assert_eq!(waited.err().map(|e| e.kind()), Some(ErrorKind::Timeout));
    let url = dirs.url();
    let said = latchkey_testkit::in_a_forked_child(Duration::from_secs(30), move || {
        let scope = Scope::open(&url).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let waited =
            runtime.block_on(async { scope.mutex("m")?.lock_timeout(Duration::from_millis(100)).await.map(drop) });
        format!("{:?}", waited.err().map(|e| e.kind()))
    });
    assert_eq!(
        said.as_deref(),
        Some("Some(Timeout)"),
        "a child forked after its parent had waited with a deadline must time out too (it hung: the parent's timer \
         thread is not in the child)"
    );
}

/// Kills a process (a worker's child) when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: a plain system call on a pid a worker reported.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// The worker job: takes the mutex `name`, uses up its descriptors (a lower soft limit,
/// every number below it taken), forks a child that only sleeps, and reports `forked
/// PID`; it keeps the mutex until it is killed.
pub fn fork_at_the_descriptor_limit(url: &str, name: &str) {
    use super::worker::{read_line, say};
    let scope = Scope::open(url).unwrap();
    let mutex = scope.mutex(name).unwrap();
    let _held = mutex.lock_blocking().unwrap();
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    // SAFETY: plain system calls on a local struct and on our own descriptors.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = highest + 1;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        while libc::dup(0) >= 0 {}
        let pid = libc::fork();
        if pid == 0 {
            libc::sleep(600);
            libc::_exit(0);
        }
        say(format!("forked {pid}"));
    }
    while read_line().is_some() {}
}

#[test]
fn a_child_forked_at_the_descriptor_limit_keeps_its_dead_parents_locks() {
    let dirs = Dirs::new("latchkey-review-forkfd");
    let mut parent = Proc::spawn(&["fork-at-fd-limit", &dirs.url(), "m"]);
    let child: i32 = parent.line("its child's pid").strip_prefix("forked ").unwrap().parse().unwrap();
    let _child = KillOnDrop(child);
    parent.kill();
    // The parent is dead; its child never used latchkey.
    let mut waiter = Proc::spawn(&["take", &dirs.url(), "m"]);
    let said = waiter.line_within("its grant of m", Duration::from_secs(60));
    assert!(
        said.starts_with("token "),
        "the holder of m was SIGKILLed, and a waiter could not take m ({said}): the holder's child, forked when the \
         holder had no descriptor left, still holds the holder's liveness lock"
    );
}
