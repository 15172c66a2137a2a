//! `latchkey run` and `status` on the etcd scope, as on the host scope: a held lock
//! excludes other commands, `status` shows its holder with host and session, and a hold
//! lost with the network stops the command with exit code 79.

use latchkey_testkit::EtcdCluster;

use crate::support::*;

#[test]
fn run_and_status_work_on_the_etcd_scope() {
    let cluster = EtcdCluster::start(1);
    let ns = Namespace::at(cluster.url_with("cli", "ttl=3s"));
    let holder = ns.hold(&["job"]);

    let entries = status_json(&ns, &["job"]);
    let holders = entries[0]["holders"].as_array().expect("holders");
    assert_eq!(holders.len(), 1, "{entries:?}");
    assert_eq!(holders[0]["pid"], holder.latchkey_pid(), "the holder is the latchkey run process");
    assert!(holders[0]["session"].as_str().is_some_and(|s| !s.is_empty()), "{entries:?}");
    assert!(holders[0]["host"].as_str().is_some_and(|h| !h.is_empty()), "{entries:?}");

    let (code, stderr) = run(&ns, &["--timeout", "200ms", "job", "--", "true"]);
    assert_eq!(code, 75, "the lock is held: {stderr}");
    let (code, stdout, _) = output(ns.latchkey("status").arg("job"));
    assert_eq!(code, 0);
    assert!(stdout.contains("location: etcd 127.0.0.1:"), "{stdout}");

    holder.finish();
    assert_eq!(run(&ns, &["--timeout", "5s", "job", "--", "true"]).0, 0, "free once the holder ended");
}

#[test]
fn a_hold_lost_with_the_network_stops_the_command_with_79() {
    let cluster = EtcdCluster::start(1);
    let (url, proxies) = cluster.proxied_url("cli");
    let ns = Namespace::at(format!("{url}?ttl=2s"));
    let holder = ns.hold(&["job"]);
    for proxy in &proxies {
        proxy.cut();
    }
    let command = holder.command_pid;
    let status = holder.wait_latchkey();
    assert_eq!(status.code(), Some(79), "the documented code of a lost hold: {status:?}");
    assert!(is_gone(command), "the command was stopped");
}
