//! **A SIGBUS sent to the process is swallowed, and latchkey's bus-error handler goes
//! with it.** `on_bus_error` (sys/maps.rs) takes every SIGBUS whose `si_addr` is not in
//! a namespace mapping for a fault of someone else's, and, where no handler was installed
//! before, restores the default action and *returns*, counting on the faulting
//! instruction to fault again. A SIGBUS that no instruction raised (`kill -BUS`, `raise`,
//! `tgkill`: `si_code` ≤ 0, and `si_addr` is then the sender's pid and uid) does not come
//! again: the process, which the signal would have killed (with a core dump), goes on,
//! and from then on has the default action for SIGBUS: the next namespace file cut short
//! under it kills it, which is what the handler is there to prevent. The module
//! documentation says other faults "kill the process as they would have".

use std::os::unix::process::ExitStatusExt;

use super::worker::say;
use super::Proc;

/// The jobs of this module's workers.
pub fn job(job: &str, url: &str, _fields: &[&str]) -> bool {
    match job {
        "raise-sigbus" => {
            let scope = latchkey::Scope::open(url).unwrap();
            drop(scope.lock_blocking("m").unwrap());
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
fn a_sigbus_sent_to_a_process_with_a_namespace_open_does_not_kill_it() {
    let dirs = super::Dirs::new("latchkey-review2-sigbus");
    let mut worker = Proc::spawn(&["raise-sigbus", &dirs.url()]);
    assert_eq!(worker.line("that it opened the scope"), "opened");
    let after = worker.line_if_any(std::time::Duration::from_secs(10));
    let status = worker.wait();
    assert!(
        after.is_none() && status.signal() == Some(libc::SIGBUS),
        "a process sent SIGBUS (raise) while it had a namespace open was not killed by it, as it would have been \
         without latchkey (it said {after:?}; {status:?}); and its SIGBUS handler is the default one from then on"
    );
}
