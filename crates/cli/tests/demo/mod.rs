//! `latchkey demo`: worker processes contend and every invariant holds.

use crate::support::*;

#[test]
fn the_demo_passes_and_prints_its_verdicts() {
    let ns = Namespace::new();
    let (code, stdout, stderr) = output(ns.latchkey("demo").args(["--seconds", "1", "--workers", "3"]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("3 worker processes"), "{stdout}");
    let verdicts: Vec<&str> = stdout.lines().skip_while(|l| *l != "verdicts:").skip(1).collect();
    for what in ["mutex demo/counter", "rwlock demo/table", "semaphore demo/gpu", "workers: 3 of 3"] {
        assert!(
            verdicts.iter().any(|l| l.trim_start().starts_with("ok") && l.contains(what)),
            "no ok verdict for {what}: {stdout}"
        );
    }
    assert_eq!(verdicts.last(), Some(&"all invariants held"), "{stdout}");
}

#[test]
fn the_demo_refuses_the_process_scope() {
    let (code, _, stderr) = output(latchkey().args(["demo", "--scope", "process:"]));
    assert_eq!(code, 69, "an unsupported scope: {stderr}");
    assert!(stderr.contains("process:"), "{stderr}");
}
