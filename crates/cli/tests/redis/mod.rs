//! `latchkey run` and `status` on the Redis scope, as on the host scope: a held lock
//! excludes other commands, `status` shows its holder with host and session, and a hold
//! lost with the server (restarted without persistence) stops the command with exit
//! code 79.

use latchkey_testkit::RedisServer;

use crate::support::*;

#[test]
fn run_and_status_work_on_the_redis_scope() {
    let server = RedisServer::start();
    let ns = Namespace::at(server.url("ttl=3s&prefix=cli"));
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
    assert!(stdout.contains("location: Redis 127.0.0.1:"), "{stdout}");

    holder.finish();
    assert_eq!(run(&ns, &["--timeout", "5s", "job", "--", "true"]).0, 0, "free once the holder ended");
}

#[test]
fn a_hold_lost_with_the_server_stops_the_command_with_79() {
    let mut server = RedisServer::start();
    let ns = Namespace::at(server.url("ttl=2s&prefix=cli"));
    let holder = ns.hold(&["job"]);
    server.restart();
    let command = holder.command_pid;
    let status = holder.wait_latchkey();
    assert_eq!(status.code(), Some(79), "the documented code of a lost hold: {status:?}");
    assert!(is_gone(command), "the command was stopped");
}
