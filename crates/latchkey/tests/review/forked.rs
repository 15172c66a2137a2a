//! A scope used in a child forked (without exec) after it was opened must refuse with
//! `HandleLost` (`sys::maps`: "a namespace opened under another fork count refuses to be
//! used"). `open`, `open_once` and `state_of` check, but `list` and `inspect` read the
//! table first (`Namespace::names`, `Namespace::find`), in the child's copy of the
//! mapping, which the fork handler replaced with zeroes: `list()` answers that nothing
//! is held (an empty list, `Ok`), and `inspect()` calls the namespace file corrupted.

use std::io::Read;
use std::os::fd::FromRawFd;

use latchkey::{ErrorKind, Scope};

use super::Dirs;

/// What `list()` and `inspect("m")` say in a child forked while this process holds `m`.
fn in_a_forked_child(scope: &Scope) -> String {
    let mut fds = [0i32; 2];
    // SAFETY: pipe(2) into an array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only uses latchkey and writes to the pipe, then _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let describe = |kind: Option<ErrorKind>, ok: String| kind.map_or(ok, |kind| format!("{kind:?}"));
        let listed = scope.list();
        let list =
            describe(listed.as_ref().err().map(|e| e.kind()), format!("Ok({} held)", listed.map_or(0, |l| l.len())));
        let inspected = scope.inspect("m");
        let inspect = describe(
            inspected.as_ref().err().map(|e| e.kind()),
            format!("Ok(locked: {})", inspected.map_or(false, |s| s.is_locked())),
        );
        let line = format!("list {list}; inspect {inspect}");
        // SAFETY: writes our buffer to the pipe, then ends the child at once.
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    // SAFETY: our write end; the read end becomes a File.
    unsafe { libc::close(fds[1]) };
    let mut said = String::new();
    // SAFETY: `fds[0]` is ours, owned by the File from here.
    unsafe { std::fs::File::from_raw_fd(fds[0]) }.read_to_string(&mut said).unwrap();
    let mut status = 0;
    // SAFETY: reaps our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    said
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
