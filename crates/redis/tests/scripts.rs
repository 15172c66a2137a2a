//! The scripts of the Redis scope, run on a server of the kit: the one rule (FIFO mutex,
//! writer-preferring reader-writer lock, semaphore, no barging), capacity mismatches,
//! tries, sessions that lapse, tokens across a restart that loses the counter, cede.

use latchkey_redis::keys::NameKeys;
use latchkey_redis::scripts::Scripts;
use latchkey_testkit::RedisServer;
use redis::Value;

struct Client {
    rt: tokio::runtime::Runtime,
    connection: redis::aio::MultiplexedConnection,
    scripts: Scripts,
    keys: NameKeys,
}

impl Client {
    fn new(server: &RedisServer, name: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let connection = rt.block_on(async {
            redis::Client::open(server.url("")).unwrap().get_multiplexed_async_connection().await.unwrap()
        });
        Client { rt, connection, scripts: Scripts::new(), keys: NameKeys::new("lk", name) }
    }

    fn run(&mut self, script: impl Fn(&Scripts) -> &redis::Script, args: &[&str]) -> Vec<String> {
        let mut invocation = script(&self.scripts).prepare_invoke();
        for key in self.keys.script_keys() {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let value: Value = self.rt.block_on(invocation.invoke_async(&mut self.connection)).unwrap();
        flatten(value)
    }

    fn enqueue(
        &mut self,
        session: &str,
        n: u32,
        permits: u32,
        capacity: u32,
        try_only: bool,
        ttl_ms: u64,
    ) -> Vec<String> {
        let (n, permits, capacity, ttl) =
            (n.to_string(), permits.to_string(), capacity.to_string(), ttl_ms.to_string());
        self.run(
            |s| &s.enqueue,
            &[session, &n, &permits, &capacity, "1 0 host", if try_only { "1" } else { "0" }, &ttl],
        )
    }

    fn standing(&mut self, id: &str) -> String {
        self.run(|s| &s.standing, &[id])[0].clone()
    }

    fn release(&mut self, id: &str) -> bool {
        let channel = self.keys.channel.clone();
        self.run(|s| &s.release, &[id, &channel])[0] == "1"
    }
}

fn flatten(value: Value) -> Vec<String> {
    match value {
        Value::Array(values) => values.into_iter().flat_map(flatten).collect(),
        Value::BulkString(bytes) => vec![String::from_utf8_lossy(&bytes).into_owned()],
        Value::SimpleString(text) => vec![text],
        Value::Int(n) => vec![n.to_string()],
        Value::Okay => vec!["OK".into()],
        other => vec![format!("{other:?}")],
    }
}

const TTL: u64 = 60_000;

#[test]
fn a_mutex_is_fifo_and_tokens_increase() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "m");
    let a = c.enqueue("s1", 1, 1, 1, false, TTL);
    assert_eq!(a[0], "holds");
    let b = c.enqueue("s2", 1, 1, 1, false, TTL);
    assert_eq!(b[0], "waits");
    let cc = c.enqueue("s3", 1, 1, 1, false, TTL);
    assert_eq!(cc[0], "waits");
    assert!(b[1].parse::<u64>().unwrap() > a[1].parse::<u64>().unwrap());
    assert_eq!(c.enqueue("s4", 1, 1, 1, true, TTL), ["busy"], "a try does not queue");
    assert!(c.release("s1:1"));
    assert!(!c.release("s1:1"), "released once");
    assert_eq!(c.standing("s2:1"), "holds");
    assert_eq!(c.standing("s3:1"), "waits");
    assert_eq!(c.standing("nobody:1"), "gone");
}

#[test]
fn a_writer_holds_back_later_readers_and_a_semaphore_grants_n() {
    let server = RedisServer::start();
    let max = 1 << 30;
    let mut c = Client::new(&server, "rw");
    assert_eq!(c.enqueue("r1", 1, 1, max, false, TTL)[0], "holds");
    assert_eq!(c.enqueue("w", 1, max, max, false, TTL)[0], "waits");
    assert_eq!(c.enqueue("r2", 1, 1, max, false, TTL)[0], "waits", "no reader passes a waiting writer");
    assert_eq!(c.enqueue("x", 1, 1, 5, false, TTL), ["mismatch", &max.to_string()]);
    let mut s = Client::new(&server, "sem");
    for i in 0..3 {
        assert_eq!(s.enqueue(&format!("h{i}"), 1, 1, 3, false, TTL)[0], "holds", "holder {i} of 3");
    }
    assert_eq!(s.enqueue("h3", 1, 1, 3, true, TTL), ["busy"]);
}

#[test]
fn the_requests_of_a_lapsed_session_are_dropped_by_whoever_looks_next() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "lapse");
    assert_eq!(c.enqueue("dead", 1, 1, 1, false, 200)[0], "holds");
    let waiting = c.enqueue("live", 1, 1, 1, false, TTL);
    assert_eq!(waiting[0], "waits");
    let wake: i64 = waiting[2].parse().unwrap();
    assert!((0..=200).contains(&wake), "look again when the holder's session lapses: {wake} ms");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(c.standing("live:1"), "holds", "the lapsed holder is gone");
    assert_eq!(
        c.run(|s| &s.renew, &["dead", "1000", "1", ""]),
        ["lapsed"],
        "a lapsed session learns it when it renews"
    );
    assert_eq!(c.run(|s| &s.renew, &["live", "1000", "1", ""]), ["renewed"]);
    assert_eq!(c.run(|s| &s.renew, &["live", "1000", "1 7", ""]), ["renewed", "7"], "request live:7 is not there");
}

/// A renewal drops the session's ghosts (requests withdrawn while the script that queued
/// them was under way) and keeps the rest.
#[test]
fn a_renewal_drops_the_ghosts_it_is_given() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "ghost");
    assert_eq!(c.enqueue("s", 1, 1, 1, false, TTL)[0], "holds");
    assert_eq!(c.enqueue("s", 2, 1, 1, false, TTL)[0], "waits");
    assert_eq!(c.run(|s| &s.renew, &["s", "1000", "1", "2"]), ["renewed"]);
    assert_eq!(c.standing("s:2"), "gone", "the ghost was dropped");
    assert_eq!(c.standing("s:1"), "holds", "the rest is kept");
}

/// A request whose ask is missing (keys deleted by hand, or evicted) is dropped by the next
/// look instead of failing every script on the name.
#[test]
fn a_request_without_its_ask_is_dropped_not_an_error() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "noask");
    assert_eq!(c.enqueue("a", 1, 1, 1, false, TTL)[0], "holds");
    let asks = latchkey_redis::keys::NameKeys::new("lk", "noask").asks;
    server.cli(&["DEL", &asks]);
    assert_eq!(c.enqueue("b", 1, 1, 1, false, TTL)[0], "holds");
}

#[test]
fn tokens_keep_increasing_across_a_restart_that_loses_the_counter() {
    let mut server = RedisServer::start();
    let mut c = Client::new(&server, "restart");
    let before: u64 = c.enqueue("s1", 1, 1, 1, false, TTL)[1].parse().unwrap();
    server.restart();
    let mut c = Client::new(&server, "restart");
    let after: u64 = c.enqueue("s2", 1, 1, 1, false, TTL)[1].parse().unwrap();
    assert!(after > before, "token {after} after {before}");
}

#[test]
fn a_cede_moves_the_holder_behind_its_waiters_or_keeps_it() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "cede");
    let channel = c.keys.channel.clone();
    assert_eq!(c.enqueue("a", 1, 1, 1, false, TTL)[0], "holds");
    assert_eq!(c.run(|s| &s.cede, &["a:1", "a", "2", &channel]), ["kept"], "nobody waits");
    assert_eq!(c.enqueue("b", 1, 1, 1, false, TTL)[0], "waits");
    let moved = c.run(|s| &s.cede, &["a:1", "a", "2", &channel]);
    assert_eq!(moved[0], "waits");
    assert_eq!(c.standing("b:1"), "holds");
    let live = c.run(|s| &s.live, &[]);
    assert_eq!(live.len(), 8, "{live:?}");
    assert_eq!((live[0].as_str(), live[3].as_str(), live[4].as_str(), live[7].as_str()), ("b:1", "1", "a:2", "0"));
}

#[test]
fn a_names_keys_go_once_nobody_uses_it() {
    let server = RedisServer::start();
    let mut c = Client::new(&server, "once");
    assert_eq!(c.enqueue("s1", 1, 1, 1, false, 500)[0], "holds");
    assert!(c.release("s1:1"));
    // The queue and the asks go with their last request; the marks within twice the TTL,
    // the counter within a day.
    let ttl = |key: &str| server.cli(&["PTTL", key]).parse::<i64>().unwrap();
    assert_eq!(server.cli(&["EXISTS", &c.keys.queue, &c.keys.asks]), "0");
    assert!((1..=1000).contains(&ttl(&c.keys.sessions)), "marks: {}", ttl(&c.keys.sessions));
    assert!((1..=86_400_000).contains(&ttl(&c.keys.counter)), "counter: {}", ttl(&c.keys.counter));
}
