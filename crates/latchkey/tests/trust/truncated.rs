//! Issue 8, item 3: the namespace file truncated while a process holds a lock in it. The
//! holder must not die of SIGBUS (its mapping now reaches past the end of the file): its
//! guard reports the namespace corrupted or the hold lost. A process opening the
//! truncated file must be refused (Corrupted), not start a new namespace over it in which
//! the lock a live process holds is free.

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;

use super::{describe, Dirs, Proc};

fn truncate(dirs: &Dirs, len: u64) {
    let file = OpenOptions::new().write(true).open(dirs.file()).expect("open the namespace file");
    file.set_len(len).expect("truncate the namespace file");
}

/// Issue 8, item 3a: truncating the namespace file to 8192 bytes under a holder: the
/// holder's `check()` and `release()` report Corrupted or HandleLost, and it does not
/// die of SIGBUS.
#[test]
fn a_holder_of_a_truncated_namespace_file_gets_errors_not_sigbus() {
    // This process never opens the namespace: only the worker maps the file.
    let dirs = Dirs::new("latchkey-trust-trunc");
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "m"]);
    let held = holder.line("its hold of m");
    assert!(held.starts_with("held "), "the worker could not take m: {held}");
    truncate(&dirs, 8192);
    // (If it died of the truncation already, its status says so below.)
    holder.tell("go");
    let status = holder.wait_within(super::PATIENCE);
    let lines = holder.rest();
    assert!(
        status.signal() != Some(libc::SIGBUS) && status.code() != Some(128 + libc::SIGBUS),
        "the holder was killed when the namespace file was truncated under it: {} (its reports: {lines:?})",
        describe(status)
    );
    assert!(status.success(), "the holder failed: {} (its reports: {lines:?})", describe(status));
    for call in ["check", "release"] {
        let said = lines.iter().find(|l| l.starts_with(call)).unwrap_or_else(|| panic!("no {call} in {lines:?}"));
        let kind = said[call.len()..].trim_start();
        assert!(
            kind.starts_with("Corrupted") || kind.starts_with("HandleLost"),
            "{call}() of a hold in a truncated namespace file must fail with Corrupted or HandleLost; it said \
             {kind:?}"
        );
    }
}

/// Issue 8, item 3b: truncating the namespace file to 0 bytes under a holder: a process
/// that opens the namespace is refused with Corrupted, and never takes the lock the
/// holder still holds.
#[test]
fn a_namespace_file_truncated_to_nothing_under_a_holder_is_refused_not_made_anew() {
    let dirs = Dirs::new("latchkey-trust-zero");
    let mut holder = Proc::spawn(&["hold", &dirs.url(), "m"]);
    let held = holder.line("its hold of m");
    assert!(held.starts_with("held "), "the worker could not take m: {held}");
    truncate(&dirs, 0);
    let mut newcomer = Proc::spawn(&["try", &dirs.url(), "m"]);
    let said = newcomer.line("how opening the truncated namespace went");
    let holder_state = match holder.exited() {
        None => "still running".to_string(),
        Some(status) => format!("gone: {}", describe(status)),
    };
    if let Some(token) = said.strip_prefix("took ") {
        panic!(
            "a process opening the namespace file truncated to 0 bytes made a new namespace over it and took m \
             (token {token}), while the process that holds m is {holder_state}"
        );
    }
    assert!(
        said.starts_with("open-error Corrupted"),
        "opening a namespace file truncated to 0 bytes under a holder ({holder_state}) must fail with Corrupted; \
         it said {said:?}"
    );
    newcomer.finish();
}
