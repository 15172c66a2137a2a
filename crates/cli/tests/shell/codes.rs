//! Every documented exit code, each from the situation it names.

use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn usage_errors_exit_64() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["--no-such-option", "job", "--", "true"]).0, 64);
    assert_eq!(run(&ns, &["-w", "soon", "job", "--", "true"]).0, 64, "a bad duration");
    let (code, stderr) = run(&ns, &["bad\tname", "--", "true"]);
    assert_eq!(code, 64, "an invalid name: {stderr}");
    let (code, _, stderr) = output(latchkey().args(["run", "--scope", "nowhere", "job", "--", "true"]));
    assert_eq!(code, 64, "a malformed scope URL: {stderr}");
    let (code, stderr) = run(&ns, &["--permits", "4", "--capacity", "3", "gpu", "--", "true"]);
    assert_eq!(code, 64, "more permits than the capacity: {stderr}");
}

#[test]
fn a_name_in_use_as_another_kind_exits_65() {
    let ns = Namespace::new();
    let _reader = ns.hold(&["-s", "config"]);
    let (code, stderr) = run(&ns, &["config", "--", "true"]);
    assert_eq!(code, 65, "{stderr}");
    let _gpu = ns.hold(&["--permits", "1", "--capacity", "3", "gpu"]);
    assert_eq!(run(&ns, &["--permits", "1", "--capacity", "4", "gpu", "--", "true"]).0, 65);
}

#[test]
fn an_unsupported_scope_exits_69() {
    let (code, _, stderr) = output(latchkey().args(["run", "--scope", "etcd://127.0.0.1:2379", "job", "--", "true"]));
    assert_eq!(code, 69, "{stderr}");
    assert!(stderr.contains("etcd://"), "{stderr}");
}

#[test]
fn a_corrupted_namespace_file_exits_70() {
    let ns = Namespace::new();
    std::fs::create_dir_all(ns.dir()).unwrap();
    std::fs::set_permissions(ns.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(ns.dir().join("latchkey.ns"), "not a namespace").unwrap();
    let (code, stderr) = run(&ns, &["job", "--", "true"]);
    assert_eq!(code, 70, "{stderr}");
    assert!(stderr.contains("not a latchkey namespace file"), "{stderr}");
}

#[test]
fn the_conflict_code_is_75_unless_chosen() {
    let ns = Namespace::new();
    let _holder = ns.hold(&["job"]);
    assert_eq!(run(&ns, &["-n", "job", "--", "true"]).0, 75);
    assert_eq!(run(&ns, &["-n", "-E", "42", "job", "--", "true"]).0, 42);
}

#[test]
fn permission_denied_exits_77() {
    let ns = Namespace::new();
    std::fs::create_dir_all(ns.dir()).unwrap();
    // A directory everyone may write to is refused: another user could plant a file.
    std::fs::set_permissions(ns.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = run(&ns, &["job", "--", "true"]);
    assert_eq!(code, 77, "{stderr}");
    let (code, _, stderr) = output(ns.latchkey("status").arg("job"));
    assert_eq!(code, 77, "{stderr}");
}

#[test]
fn a_command_that_cannot_run_exits_126_or_127() {
    let ns = Namespace::new();
    assert_eq!(run(&ns, &["job", "--", "/nonexistent/command"]).0, 127);
    assert_eq!(run(&ns, &["job", "--", "/"]).0, 126, "a directory cannot be executed");
}
