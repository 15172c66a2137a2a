//! Bad input: exit code 64 and a message naming the problem.

use crate::support::*;

#[test]
fn invalid_names_exit_64_saying_why() {
    let ns = Namespace::new();
    let (code, stderr) = run(&ns, &["", "--", "true"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("invalid lock name") && stderr.contains("empty"), "{stderr}");

    let (code, stderr) = run(&ns, &["a\tb", "--", "true"]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("invalid lock name") && stderr.contains("control character"), "{stderr}");

    let (code, _, stderr) = output(ns.latchkey("status").arg("a\u{7f}b"));
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("invalid lock name"), "{stderr}");
}

#[test]
fn a_bad_duration_exits_64_saying_why() {
    let ns = Namespace::new();
    for bad in ["soon", "5x", "-1s"] {
        let (code, stderr) = run(&ns, &["--timeout", bad, "job", "--", "true"]);
        assert_eq!(code, 64, "{bad}: {stderr}");
        assert!(stderr.contains("duration") && stderr.contains("--timeout"), "{bad}: {stderr}");
    }
}

#[test]
fn a_bad_scope_url_exits_64_saying_why() {
    for bad in ["nowhere:", "host:relative/dir", "process:x"] {
        let (code, _, stderr) = output(latchkey().args(["run", "--scope", bad, "job", "--", "true"]));
        assert_eq!(code, 64, "{bad}: {stderr}");
        assert!(stderr.contains("scope URL") && stderr.contains(bad), "{bad}: {stderr}");
    }
    let (code, _, stderr) = output(latchkey().args(["status", "--scope", "nowhere:"]));
    assert_eq!(code, 64, "{stderr}");
}

#[test]
fn other_usage_errors_exit_64_and_help_exits_0() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["job"]).0, 64, "no command");
    assert_eq!(run(&ns, &["--permits", "1", "job", "--", "true"]).0, 64, "--permits without --capacity");
    assert_eq!(run(&ns, &["--permits", "3", "--capacity", "2", "job", "--", "true"]).0, 64, "3 permits of 2");
    assert_eq!(run(&ns, &["--shared", "--permits", "1", "--capacity", "2", "job", "--", "true"]).0, 64);
    assert_eq!(output(latchkey().arg("frobnicate")).0, 64);
    assert_eq!(output(latchkey().arg("demo").args(["--workers", "0"])).0, 64);

    let (code, stdout, _) = output(latchkey().arg("--help"));
    assert_eq!(code, 0);
    assert!(stdout.contains("Exit codes:") && stdout.contains("75"), "{stdout}");
    assert!(!stdout.contains("demo-worker"), "the worker subcommand is hidden: {stdout}");
    assert_eq!(output(latchkey().arg("--version")).0, 0);
}
