//! **A SIGBUS sent to the process used to take latchkey's bus-error handler away.**
//! `on_bus_error` (sys/maps.rs) takes every SIGBUS whose `si_addr` is not in a namespace
//! mapping for a fault of someone else's and passes it on as the previous action would
//! have taken it: where none was installed, it restores the default action and returns,
//! counting on the faulting instruction to fault again. A SIGBUS that no instruction
//! raised (`kill -BUS`, `raise`, `tgkill`: `si_code` ≤ 0) does not come again: it went
//! unheeded, and the process had the default action from then on, so the next namespace
//! file cut short under it killed it. A sent SIGBUS must do what it does without latchkey
//! (a Rust program's own handler lets it pass once), and latchkey's handler must stay.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use super::worker::say;
use super::Proc;

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, _fields: &[&str]) -> bool {
    match job {
        // The control: no namespace.
        "raise-sigbus-alone" => {
            say("opened");
            // SAFETY: a plain system call.
            unsafe { libc::raise(libc::SIGBUS) };
            say("survived");
        }
        "raise-sigbus" => {
            let scope = latchkey::Scope::open(url).unwrap();
            let mutex = scope.mutex("m").unwrap();
            drop(mutex.lock_blocking().unwrap());
            say("opened");
            // SAFETY: a plain system call.
            unsafe { libc::raise(libc::SIGBUS) };
            say("survived");
            // Then the file is cut short under it: latchkey's handler must still be there.
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            let result = mutex.lock_blocking().map(drop);
            say(format!("after the cut: {:?}", result.map_err(|e| e.kind())));
        }
        // Review 3: SIGBUS ignored by the program before latchkey is loaded ("-alone":
        // the control, no namespace).
        "raise-ignored-sigbus" | "raise-ignored-sigbus-alone" => {
            // SAFETY: a plain system call.
            unsafe { libc::signal(libc::SIGBUS, libc::SIG_IGN) };
            let scope = (job == "raise-ignored-sigbus").then(|| latchkey::Scope::open(url).unwrap());
            if let Some(scope) = &scope {
                drop(scope.mutex("m").unwrap().lock_blocking().unwrap());
            }
            say("opened");
            // SAFETY: a plain system call.
            unsafe { libc::raise(libc::SIGBUS) };
            say("survived");
        }
        _ => return false,
    }
    true
}

#[test]
fn a_sigbus_sent_to_a_process_with_a_namespace_open_does_what_it_does_without_latchkey() {
    let dirs = super::Dirs::new("latchkey-review2-sigbus");
    let mut control = Proc::spawn(&["raise-sigbus-alone", &dirs.url()]);
    assert_eq!(control.line("that it started"), "opened");
    let control_said = control.line_if_any(Duration::from_secs(10));
    let control_status = control.wait();

    let mut worker = Proc::spawn(&["raise-sigbus", &dirs.url()]);
    assert_eq!(worker.line("that it opened the scope"), "opened");
    let said = worker.line_if_any(Duration::from_secs(10));
    assert_eq!(said, control_said, "a sent SIGBUS did not do what it does without latchkey ({control_status:?})");
    if said.is_none() {
        assert_eq!(worker.wait().signal(), Some(libc::SIGBUS));
        return;
    }
    // It survived, as without latchkey: now the file is cut short under it.
    std::fs::OpenOptions::new().write(true).open(dirs.file()).unwrap().set_len(4096).unwrap();
    assert!(worker.tell("cut"));
    let after = worker.line_if_any(Duration::from_secs(10));
    let status = worker.wait();
    assert!(
        after.as_deref().is_some_and(|a| a.contains("HandleLost") || a.contains("Corrupted")),
        "after a sent SIGBUS, a namespace file cut short killed the process: latchkey's bus-error handler was gone \
         ({after:?}, {status:?})"
    );
}

/// Review 3: **a sent SIGBUS that the program ignores kills it once latchkey has a
/// namespace open.** `on_bus_error` passes a signal that is not a fault of a namespace
/// mapping to the previous action only if that was a handler; for `SIG_IGN` it takes the
/// default branch: it restores `SIG_DFL` and, for a sent signal, raises it again, which
/// kills the process (with a core dump), where without latchkey the signal was ignored.
/// (And had it not killed it, SIGBUS would have been left at `SIG_DFL`, without
/// latchkey's handler.)
#[test]
fn a_sent_sigbus_that_the_program_ignores_kills_it_with_a_namespace_open() {
    let dirs = super::Dirs::new("latchkey-review3-sigbus-ignored");
    let mut control = Proc::spawn(&["raise-ignored-sigbus-alone", &dirs.url()]);
    assert_eq!(control.line("that it started"), "opened");
    assert_eq!(control.line_if_any(Duration::from_secs(10)).as_deref(), Some("survived"), "ignored without latchkey");
    let mut worker = Proc::spawn(&["raise-ignored-sigbus", &dirs.url()]);
    assert_eq!(worker.line("that it opened the scope"), "opened");
    let said = worker.line_if_any(Duration::from_secs(10));
    let status = worker.wait();
    assert_eq!(
        said.as_deref(),
        Some("survived"),
        "a process that ignores SIGBUS was killed by a sent SIGBUS because it had a namespace open ({status:?})"
    );
}
