//! The options flock(1) users type: `-n`, `-w`/`--wait`, `-E`, `-s`/`-x`, `-c`, and the
//! scope from `LATCHKEY_SCOPE`.

use crate::support::*;

use super::is_held;

#[test]
fn nonblock_exits_at_once_with_the_conflict_code_while_the_lock_is_held() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["-n", "job", "--", "true"]).0, 0, "a free lock is taken");
    let holder = ns.hold(&["job"]);
    for flag in ["-n", "--nonblock", "--nb"] {
        let (code, stderr) = run(&ns, &[flag, "job", "--", "true"]);
        assert_eq!(code, 75, "{flag}: {stderr}");
        assert_eq!(stderr, "", "{flag}: silent, as flock is, without --verbose");
    }
    // It did not queue and wait: the holder still holds (it holds for 30 s).
    assert!(holder.has_started() && is_held(&ns, "job"));
    let entries = status_json(&ns, &["job"]);
    assert_eq!(entries[0]["waiters"], 0, "nothing left queued: {entries:?}");
    let (code, stderr) = run(&ns, &["-n", "--verbose", "job", "--", "true"]);
    assert_eq!(code, 75);
    assert!(stderr.contains("busy") && stderr.contains(&format!("pid {}", holder.latchkey_pid())), "{stderr}");
    assert_eq!(run(&ns, &["-n", "-w", "1s", "job", "--", "true"]).0, 64, "-n and -w conflict");
}

#[test]
fn wait_is_an_alias_of_timeout_and_takes_seconds_as_flock_does() {
    let ns = Namespace::new();
    let _holder = ns.hold(&["job"]);
    for args in [["-w", "0.2"], ["--wait", "200ms"], ["--timeout", "0.2s"]] {
        let (code, stderr) = run(&ns, &[args[0], args[1], "job", "--", "true"]);
        assert_eq!(code, 75, "{args:?}: {stderr}");
    }
    assert!(is_held(&ns, "job"), "the holder still holds");
}

#[test]
fn the_conflict_exit_code_tells_a_busy_lock_from_the_commands_own_code() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["-E", "3", "job", "--", "sh", "-c", "exit 75"]).0, 75, "the command's own 75");
    let _holder = ns.hold(&["job"]);
    assert_eq!(run(&ns, &["-E", "3", "-n", "job", "--", "true"]).0, 3);
    assert_eq!(run(&ns, &["--conflict-exit-code", "0", "-w", "100ms", "job", "--", "true"]).0, 0);
    assert_eq!(run(&ns, &["-E", "256", "-n", "job", "--", "true"]).0, 64, "an exit code is 0 to 255");
}

#[test]
fn exclusive_is_a_write_hold_that_excludes_readers_and_writers() {
    let ns = Namespace::new();
    let writer = ns.hold(&["-x", "config"]);
    assert_eq!(status_json(&ns, &["config"])[0]["kind"], "rwlock");
    assert_eq!(run(&ns, &["-s", "-n", "config", "--", "true"]).0, 75, "a reader waits for the writer");
    assert_eq!(run(&ns, &["--exclusive", "-n", "config", "--", "true"]).0, 75, "so does a writer");
    drop(writer);
    let reader = ns.hold(&["--shared", "config"]);
    assert_eq!(run(&ns, &["-s", "-n", "config", "--", "true"]).0, 0, "readers share");
    assert_eq!(run(&ns, &["-x", "-n", "config", "--", "true"]).0, 75, "a writer waits for the reader");
    // Writer preference: a reader that comes after a waiting writer waits behind it.
    let waiting_writer = ns.start_holding(&["-x", "config"]);
    assert!(eventually(|| status_json(&ns, &["config"])[0]["waiting_exclusive"] == 1), "the writer queues");
    assert_eq!(run(&ns, &["-s", "-n", "config", "--", "true"]).0, 75, "no reader barges past a waiting writer");
    assert!(!waiting_writer.has_started());
    drop(reader);
    drop(waiting_writer);
    assert_eq!(run(&ns, &["-x", "-s", "config", "--", "true"]).0, 64, "-s and -x conflict");
}

#[test]
fn command_runs_a_string_through_sh() {
    let ns = Namespace::new();
    let out = ns.file("out");
    let script = format!("echo one | tr a-z A-Z > '{}'; exit 4", out.display());
    assert_eq!(run(&ns, &["-c", &script, "job"]).0, 4);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "ONE\n");
    assert_eq!(run(&ns, &["--command", "exit 5", "job"]).0, 5);
    assert_eq!(run(&ns, &["-c", "true", "job", "--", "echo", "both"]).0, 64, "-c and a COMMAND conflict");
}

#[test]
fn a_command_needs_no_double_dash_and_keeps_its_own_options() {
    let ns = Namespace::new();
    let (code, stdout, _) = output(ns.latchkey("run").args(["job", "echo", "-n", "-x", "--wait"]));
    assert_eq!((code, stdout.as_str()), (0, "-x --wait"), "echo's -n and the rest are the command's");
}

#[test]
fn the_scope_comes_from_latchkey_scope_unless_given() {
    let ns = Namespace::new();
    let _holder = ns.hold(&["job"]);
    let (code, _, stderr) = output(latchkey().env("LATCHKEY_SCOPE", ns.url()).args(["run", "-n", "job", "true"]));
    assert_eq!(code, 75, "LATCHKEY_SCOPE names the holder's namespace: {stderr}");
    let (code, stdout, _) = output(latchkey().env("LATCHKEY_SCOPE", ns.url()).args(["status", "job"]));
    assert_eq!(code, 0);
    assert!(stdout.contains(&format!("scope: {}", ns.url())), "{stdout}");
    let other = Namespace::new();
    let (code, _, stderr) =
        output(latchkey().env("LATCHKEY_SCOPE", ns.url()).args(["run", "--scope", other.url(), "-n", "job", "true"]));
    assert_eq!(code, 0, "--scope wins over LATCHKEY_SCOPE: {stderr}");
}

/// Review: an empty `LATCHKEY_SCOPE` is no scope at all: the default, `host:`.
#[test]
fn an_empty_latchkey_scope_means_the_default() {
    let (code, stdout, stderr) = output(latchkey().env("LATCHKEY_SCOPE", "").args(["status", "--json", "x"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"scope\": \"host:\""), "{stdout}");
}
