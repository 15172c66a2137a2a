//! Issue 9: `latchkey` as shell users expect it, flock(1) and beyond.
//!
//! - `options`: `-n`, `-w`/`--wait`, `-E`, `-s`/`-x`, `-c`, `LATCHKEY_SCOPE`, a command
//!   without `--`;
//! - `tree`: the lock covers the command's whole process group: background processes
//!   are waited for, killed with `run` (even by SIGKILL) before the lock is freed, and
//!   SIGINT, SIGTERM, SIGHUP reach them; no descriptor of latchkey leaks into them;
//! - `lost`: a namespace deleted under a running command stops it (exit 79), or only
//!   warns with `--on-lost=warn`;
//! - `hold`: `hold --until-pid` holds in the background until the process exits;
//! - `terminal`: on a pseudo-terminal, the command is the foreground job (Ctrl-C, Ctrl-Z);
//! - `status`: a row per holder and waiter, in queue order; `--quiet`; wide names;
//! - `codes`: every documented exit code.

mod codes;
mod hold;
mod lost;
mod options;
mod status;
mod terminal;
mod tree;

use std::path::Path;
use std::process::{Child, Stdio};

use crate::support::*;

/// Starts `latchkey run ARGS -- sh -c SCRIPT` in `ns` (stdout and stdin null).
pub fn start_run(ns: &Namespace, args: &[&str], script: &str) -> Child {
    ns.latchkey("run")
        .args(args)
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start latchkey run")
}

/// Waits until `path` holds a pid (a line written by a script), and returns it.
pub fn pid_in(path: &Path) -> i32 {
    let mut pid = None;
    let written = eventually(|| {
        pid = std::fs::read_to_string(path).ok().and_then(|t| t.strip_suffix('\n').and_then(|t| t.parse().ok()));
        pid.is_some()
    });
    assert!(written, "no pid in {} within {PATIENCE:?}", path.display());
    pid.unwrap()
}

/// Whether NAME is held in `ns` (from `status --json`).
pub fn is_held(ns: &Namespace, name: &str) -> bool {
    status_json(ns, &[name])[0]["in_use"].as_u64().expect("in_use") > 0
}

/// `latchkey status --quiet NAME` in `ns`: exit 0 held, 1 free, and nothing printed.
pub fn quiet_says_held(ns: &Namespace, name: &str) -> bool {
    let (code, stdout, stderr) = output(ns.latchkey("status").args(["--quiet", name]));
    assert!(stdout.is_empty(), "--quiet printed {stdout:?}");
    match code {
        0 => true,
        1 => false,
        other => panic!("status --quiet exited {other}: {stderr}"),
    }
}

/// A field of /proc/PID/stat after the command name: 1 is the parent, 2 the group.
fn stat_field(pid: i32, field: usize) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process's stat");
    let fields: Vec<&str> = stat.rsplit_once(") ").expect("a stat line").1.split(' ').collect();
    fields[field].parse().expect("a number")
}

/// The parent of `pid`.
pub fn parent_of(pid: i32) -> i32 {
    stat_field(pid, 1)
}

/// The process group of `pid`.
pub fn pgid_of(pid: i32) -> i32 {
    stat_field(pid, 2)
}

/// SIGKILLs `child` and reaps it.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
