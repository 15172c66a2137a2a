//! Issue 8, "the host scope, trustworthy", through the command:
//!
//! - item 1: the default namespace (`host:`, no `--scope`) is the same whatever
//!   `XDG_RUNTIME_DIR` and `TMPDIR` say, and `status` shows which directory it reads;
//! - item 5a: no hidden limit on the holders of a semaphore.
//!
//! The default namespace is shared by every test and program of the user on this
//! machine: the tests use lock names of their own (with this process's pid), and every
//! holder is killed when the test ends.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{latchkey, output, Namespace};

/// How long a test waits for what a correct implementation does at once.
const PATIENCE: Duration = Duration::from_secs(60);

/// Directories of one test under the temp directory (each owner-only, as a runtime
/// directory is), removed when dropped.
struct Dirs(PathBuf);

impl Dirs {
    fn new() -> Dirs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "latchkey-cli-trust-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Dirs(root)
    }

    /// An existing directory of mode 0700.
    fn private(&self, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A lock name no other test run uses.
fn unique_name(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("latchkey-trust-test/{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The environment a command runs in: `XDG_RUNTIME_DIR` and `TMPDIR` set to a directory,
/// or removed.
#[derive(Clone, Copy)]
struct Env<'a> {
    xdg: Option<&'a Path>,
    tmpdir: Option<&'a Path>,
}

impl Env<'_> {
    fn apply(self, command: &mut Command) -> &mut Command {
        match self.xdg {
            Some(dir) => command.env("XDG_RUNTIME_DIR", dir),
            None => command.env_remove("XDG_RUNTIME_DIR"),
        };
        match self.tmpdir {
            Some(dir) => command.env("TMPDIR", dir),
            None => command.env_remove("TMPDIR"),
        };
        command
    }

    fn describe(self) -> String {
        let show = |dir: Option<&Path>| dir.map_or("unset".to_string(), |d| d.display().to_string());
        format!("XDG_RUNTIME_DIR {}, TMPDIR {}", show(self.xdg), show(self.tmpdir))
    }
}

/// A `latchkey run` whose command writes its pid and sleeps; killed (and its command with
/// it) when dropped.
struct Holder {
    child: Child,
    pid_file: PathBuf,
}

impl Holder {
    /// Starts `latchkey ARGS -- sh -c 'echo $$ > PID_FILE; exec sleep 600'`.
    fn start(mut command: Command, pid_file: PathBuf) -> Holder {
        let script = format!("echo $$ > '{}'; exec sleep 600", pid_file.display());
        let child = command
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start latchkey run");
        Holder { child, pid_file }
    }

    /// Whether the command runs (it runs only while the lock is held).
    fn runs(&self) -> bool {
        std::fs::read_to_string(&self.pid_file).is_ok_and(|text| text.ends_with('\n'))
    }

    /// Waits until the command runs; panics after `PATIENCE` or if `latchkey` exited.
    fn wait_until_it_runs(&mut self, what: &str) {
        let start = Instant::now();
        while !self.runs() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{what}: latchkey run exited before its command ran: {status}");
            }
            assert!(start.elapsed() < PATIENCE, "{what}: the command did not run within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A holder of `name` in the default namespace, started in `env`, and a second
/// `latchkey run --timeout 0s name` started in `other`: the second must find it held.
fn the_default_namespace_is_shared_across(env: Env<'_>, other: Env<'_>, dirs: &Dirs) {
    let name = unique_name("mutex");
    let mut command = latchkey();
    env.apply(command.args(["run", &name]));
    let mut holder = Holder::start(command, dirs.path("holder.pid"));
    holder.wait_until_it_runs("the holder");
    let (code, _, stderr) = output(other.apply(latchkey().args(["run", "--timeout", "0s", &name, "--", "true"])));
    assert_eq!(
        code,
        75,
        "`latchkey run {name}` holds the lock in the default namespace (started with {}), yet `latchkey run \
         --timeout 0s {name}` started with {} did not find it held: the default namespace depends on the \
         environment ({stderr})",
        env.describe(),
        other.describe()
    );
}

/// Issue 8, item 1: a holder started with XDG_RUNTIME_DIR set excludes a `latchkey run`
/// started without it (and another TMPDIR): both use the one default namespace.
#[test]
fn a_holder_started_with_xdg_runtime_dir_excludes_a_run_started_without_it() {
    let dirs = Dirs::new();
    let (runtime, tmp) = (dirs.private("runtime"), dirs.private("tmp"));
    the_default_namespace_is_shared_across(
        Env { xdg: Some(&runtime), tmpdir: None },
        Env { xdg: None, tmpdir: Some(&tmp) },
        &dirs,
    );
}

/// Issue 8, item 1: a holder started without XDG_RUNTIME_DIR (TMPDIR set) excludes a
/// `latchkey run` started with XDG_RUNTIME_DIR set: both use the one default namespace.
#[test]
fn a_holder_started_without_xdg_runtime_dir_excludes_a_run_started_with_it() {
    let dirs = Dirs::new();
    let (runtime, tmp) = (dirs.private("runtime"), dirs.private("tmp"));
    the_default_namespace_is_shared_across(
        Env { xdg: None, tmpdir: Some(&tmp) },
        Env { xdg: Some(&runtime), tmpdir: None },
        &dirs,
    );
}

/// The environments `status` is run in, which must all name one directory.
fn environments(dirs: &Dirs) -> (PathBuf, PathBuf, PathBuf) {
    (dirs.private("runtime"), dirs.private("tmp"), dirs.private("tmp2"))
}

/// Issue 8, item 1: `latchkey status --json` prints an object `{"scope": "host:",
/// "directory": ..., "locks": [...]}`, and the directory is absolute and the same whatever
/// XDG_RUNTIME_DIR and TMPDIR are.
#[test]
fn status_json_names_the_default_namespace_directory_whatever_the_environment() {
    let dirs = Dirs::new();
    let (runtime, tmp, tmp2) = environments(&dirs);
    let mut seen: Vec<(String, String)> = Vec::new();
    for env in [
        Env { xdg: Some(&runtime), tmpdir: None },
        Env { xdg: None, tmpdir: Some(&tmp) },
        Env { xdg: Some(&runtime), tmpdir: Some(&tmp2) },
    ] {
        let (code, stdout, stderr) = output(env.apply(latchkey().args(["status", "--json"])));
        assert_eq!(code, 0, "status --json with {}: {stderr}", env.describe());
        let json: serde_json::Value = serde_json::from_str(&stdout).expect("status --json prints JSON");
        let (Some(scope), Some(directory), Some(_)) = (
            json.get("scope").and_then(|v| v.as_str()),
            json.get("directory").and_then(|v| v.as_str()),
            json.get("locks").and_then(|v| v.as_array()),
        ) else {
            panic!(
                "status --json must print an object with \"scope\", \"directory\" and \"locks\"; with {} it printed: \
                 {}",
                env.describe(),
                stdout.chars().take(300).collect::<String>()
            );
        };
        assert_eq!(scope, "host:");
        assert!(Path::new(directory).is_absolute(), "the directory {directory:?} is absolute");
        seen.push((env.describe(), directory.to_string()));
    }
    assert!(
        seen.iter().all(|(_, dir)| *dir == seen[0].1),
        "the default namespace directory depends on the environment: {seen:?}"
    );
}

/// Issue 8, item 1: the table of `latchkey status` has a line `namespace directory:
/// <absolute path>`, the same whatever XDG_RUNTIME_DIR and TMPDIR are.
#[test]
fn the_status_table_names_the_default_namespace_directory_whatever_the_environment() {
    let dirs = Dirs::new();
    let (runtime, tmp, tmp2) = environments(&dirs);
    let name = unique_name("idle");
    let mut seen: Vec<(String, String)> = Vec::new();
    for env in [
        Env { xdg: Some(&runtime), tmpdir: None },
        Env { xdg: None, tmpdir: Some(&tmp) },
        Env { xdg: Some(&runtime), tmpdir: Some(&tmp2) },
    ] {
        for args in [vec!["status"], vec!["status", name.as_str()]] {
            let (code, stdout, stderr) = output(env.apply(latchkey().args(&args)));
            assert_eq!(code, 0, "{args:?} with {}: {stderr}", env.describe());
            let Some(directory) = stdout.lines().find_map(|line| line.trim().strip_prefix("namespace directory: "))
            else {
                panic!(
                    "`latchkey {}` with {} has no line `namespace directory: PATH`:\n{stdout}",
                    args.join(" "),
                    env.describe()
                );
            };
            assert!(Path::new(directory).is_absolute(), "the directory {directory:?} is absolute");
            seen.push((format!("{args:?} with {}", env.describe()), directory.to_string()));
        }
    }
    assert!(
        seen.iter().all(|(_, dir)| *dir == seen[0].1),
        "the default namespace directory depends on the environment: {seen:?}"
    );
}

/// The entries of `status --json`, in the format of today (an array) or of issue 8 (an
/// object with `locks`).
fn locks(stdout: &str) -> Vec<serde_json::Value> {
    match serde_json::from_str(stdout) {
        Ok(serde_json::Value::Array(entries)) => entries,
        Ok(serde_json::Value::Object(object)) => match object.get("locks") {
            Some(serde_json::Value::Array(entries)) => entries.clone(),
            _ => panic!("status --json printed an object without \"locks\": {stdout}"),
        },
        other => panic!("status --json printed no JSON array or object ({other:?}): {stdout}"),
    }
}

/// Issue 8, item 5a: 40 `latchkey run --permits 1 --capacity 100` started together all
/// hold a permit at once (status shows 40 in use).
#[test]
fn forty_holders_of_a_semaphore_of_100_permits_hold_at_once() {
    const HOLDERS: usize = 40;
    let ns = Namespace::new();
    let holders: Vec<Holder> = (0..HOLDERS)
        .map(|i| {
            let mut command = ns.latchkey("run");
            command.args(["--permits", "1", "--capacity", "100", "sem"]);
            Holder::start(command, ns.file(&format!("sem-{i}.pid")))
        })
        .collect();
    let start = Instant::now();
    loop {
        let running = holders.iter().filter(|h| h.runs()).count();
        if running == HOLDERS {
            break;
        }
        if start.elapsed() > PATIENCE {
            let (_, stdout, _) = output(ns.latchkey("status").args(["--json", "sem"]));
            let entry = locks(&stdout).into_iter().next().unwrap_or_default();
            panic!(
                "only {running} of {HOLDERS} holders of a semaphore of 100 permits run after {PATIENCE:?}: status \
                 says in_use {}, {} holders, {} waiters",
                entry["in_use"],
                entry["holders"].as_array().map_or(0, |h| h.len()),
                entry["waiters"]
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, stdout, stderr) = output(ns.latchkey("status").args(["--json", "sem"]));
    assert_eq!(code, 0, "{stderr}");
    let entries = locks(&stdout);
    assert_eq!(entries[0]["in_use"], HOLDERS, "{stdout}");
    drop(holders);
}
