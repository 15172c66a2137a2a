//! **A nudge half made by a process that died clears the sleeper's mark, and no later
//! nudge wakes it.** A nudge bumps the request's word and clears its `SLEEPING` bit under
//! the record lock, and makes the futex wake only after letting the lock go, and only if
//! the bit was set (`protocol/wake.rs`). A process killed between the two leaves the
//! sleeper asleep with its bit clear; every later nudge then sees no sleeper and makes no
//! wake. The design relies on the sleeper watching whoever nudges it, but a release
//! nudges every request at the head that fits (`nudge_grantable`), and a request behind
//! the head watches only the request ahead of it, not the releaser. So: a writer holds a
//! reader-writer lock, two readers wait; the writer releases and is SIGKILLed before its
//! futex wakes. The first reader watches the writer and is woken when it dies; it takes
//! its read hold and nudges the second reader, whose bit is already clear: no wake, and
//! the second reader sleeps forever beside a lock that only readers hold.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use latchkey::Scope;

use super::races::Traced;
use super::{eventually, Dirs, Proc};

/// The first record of a namespace (the first name made): its `queue_head` is at offset
/// 44 and `queue_tail` at 48 (see `layout::Record`).
const FIRST_RECORD: u64 = 4096 + 8 * 64;
/// An entry's futex word, at offset 20 of the entry (references are offsets / 64).
const ENTRY_WORD: u64 = 20;
const SLEEPING: u32 = 1 << 31;

fn word_at(file: &File, offset: u64) -> u32 {
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset).unwrap();
    u32::from_le_bytes(word)
}

/// Whether the queued request in entry `reference` sleeps: its word is marked sleeping,
/// and a thread of `pid` is in `futex_waitv`.
fn sleeps(file: &File, reference: u32, pid: u32) -> bool {
    let marked = word_at(file, u64::from(reference) * 64 + ENTRY_WORD) & SLEEPING != 0;
    let in_kernel = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().any(|task| {
        let syscall = std::fs::read_to_string(task.unwrap().path().join("syscall")).unwrap_or_default();
        syscall.split_whitespace().next() == Some(&libc::SYS_futex_waitv.to_string())
    });
    marked && in_kernel
}

#[test]
fn a_reader_nudged_by_a_writer_killed_before_its_futex_wake_never_wakes() {
    let dirs = Dirs::new("latchkey-review-wake");
    let mut writer = Proc::spawn(&["write-release-when-told", &dirs.url(), "rw"]);
    let writer_tid: i32 = writer.line("its thread id").strip_prefix("tid ").unwrap().parse().unwrap();
    let file = File::open(dirs.file()).unwrap();
    let scope = Scope::open(&dirs.url()).unwrap();
    let waiters = || scope.inspect("rw").unwrap().waiters;
    let mut first = Proc::spawn(&["read-and-hold", &dirs.url(), "rw"]);
    assert!(eventually(|| waiters() == 1), "the first reader did not queue");
    let mut second = Proc::spawn(&["read-and-hold", &dirs.url(), "rw"]);
    assert!(eventually(|| waiters() == 2), "the second reader did not queue");
    let (head, tail) = (word_at(&file, FIRST_RECORD + 44), word_at(&file, FIRST_RECORD + 48));
    assert!(
        eventually(|| sleeps(&file, head, first.pid()) && sleeps(&file, tail, second.pid())),
        "the readers did not go to sleep"
    );

    // The writer releases: under the record lock it bumps both readers' words (both fit),
    // lets the lock go, and is killed as it enters its first futex wake.
    let traced = Traced::seize(writer_tid);
    assert!(writer.tell("go"));
    traced.stop_before(1, |nr, args, _| nr == libc::SYS_futex as u64 && args[1] == libc::FUTEX_WAKE as u64);
    traced.kill_process(writer.pid());
    writer.kill();

    let said = first.line("the first reader's hold");
    assert!(said.starts_with("read "), "the first reader was not granted: {said}");
    let said = second.line_if_any(Duration::from_secs(20));
    let state = scope.inspect("rw").unwrap();
    assert!(
        said.as_deref().is_some_and(|s| s.starts_with("read ")),
        "the second reader was not granted within 20 s ({said:?}), though only a reader holds the lock ({} holder, \
         {} waiter): the writer died between bumping its word and waking it, and the first reader's nudge saw no \
         sleeper",
        state.holders.len(),
        state.waiters
    );
}
