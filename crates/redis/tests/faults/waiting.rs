//! Waiting: a waiter sends nothing but the keep-alive while it waits, and a stream of
//! readers does not pass a waiting writer.

use std::time::{Duration, Instant};

use latchkey::{ErrorKind, Scope};
use latchkey_testkit::worker::{wait_until, PATIENCE};
use latchkey_testkit::RedisServer;

/// The commands clients sent so far, by name (`INFO commandstats`), of those latchkey
/// sends (the commands its scripts run count there too, and are left out).
fn sent(server: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    const CLIENT_COMMANDS: [&str; 5] = ["evalsha", "script|load", "subscribe", "unsubscribe", "ping"];
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            CLIENT_COMMANDS.contains(&name).then(|| (name.to_string(), calls))
        })
        .collect()
}

/// Issue 12: a waiter that waits 2 s sends its request, its SUBSCRIBE and one look at
/// where it stands, then nothing until its timeout (the holder's session lapses 10 s
/// later at the earliest), then its withdrawal: counted on the server, where nothing else
/// runs but the holder's keep-alive.
#[test]
fn a_waiter_sends_nothing_but_the_keep_alive_while_it_waits() {
    let server = RedisServer::start();
    let url = server.url("ttl=10s&prefix=quiet");
    let holder = Scope::open(&url).unwrap();
    let guard = holder.lock_blocking_timeout("job", PATIENCE).unwrap();
    let waiter = Scope::open(&url).unwrap();
    let before = sent(&server);
    let began = Instant::now();
    let waited = waiter.lock_blocking_timeout("job", Duration::from_secs(2));
    assert_eq!(waited.unwrap_err().kind(), ErrorKind::Timeout);
    let elapsed = began.elapsed();
    // The withdrawal runs as the wait ends; the scope's inspect waits for it.
    assert_eq!(waiter.inspect("job").unwrap().waiters, 0);
    let after = sent(&server);
    let diff: Vec<(String, u64)> =
        after.iter().map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0))).collect();
    println!("a waiter of {elapsed:?} sent {diff:?} (with its inspection after)");
    let evalsha = diff.iter().find(|(name, _)| name == "evalsha").map_or(0, |(_, n)| *n);
    let loads = diff.iter().find(|(name, _)| name == "script|load").map_or(0, |(_, n)| *n);
    // enqueue, standing, the withdrawal, the inspection: 4 scripts, each sent once more
    // after its first NOSCRIPT (the server had not seen it yet); no renewal (every 3.3 s),
    // no look before the holder's session could lapse (10 s).
    assert!(evalsha - loads <= 4, "{evalsha} EVALSHA ({loads} after NOSCRIPT) in a 2-s wait: {diff:?}");
    assert!(diff.iter().all(|(name, n)| name != "ping" || *n == 0), "pings: {diff:?}");
    guard.release().unwrap();
}

/// Issue 12: readers keep coming while a writer waits behind a reader: each new reader
/// queues behind the writer (FIFO, no barging), and the writer gets in once the first
/// reader leaves.
#[test]
fn a_stream_of_readers_does_not_pass_a_waiting_writer() {
    let server = RedisServer::start();
    let url = server.url("ttl=5s&prefix=rw");
    let scope = Scope::open(&url).unwrap();
    let rw = scope.rwlock("config").unwrap();
    let first = rw.read_blocking().unwrap();
    let writers = Scope::open(&url).unwrap();
    let writer = std::thread::spawn(move || {
        let rw = writers.rwlock("config").unwrap();
        let guard = rw.write_blocking().unwrap();
        let token = guard.fencing_token();
        guard.release().unwrap();
        token
    });
    wait_until("the writer queues", || scope.inspect("config").unwrap().waiting_exclusive == 1);
    for _ in 0..20 {
        assert!(rw.try_read().unwrap().is_none(), "a reader passed the waiting writer");
    }
    let readers: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let scope = Scope::open(&url).unwrap();
                let rw = scope.rwlock("config").unwrap();
                let token = rw.read_blocking().unwrap().fencing_token();
                token
            })
        })
        .collect();
    wait_until("the readers queue behind the writer", || scope.inspect("config").unwrap().waiters == 6);
    first.release().unwrap();
    let writer_token = writer.join().unwrap();
    for reader in readers {
        assert!(reader.join().unwrap() > writer_token, "a reader that came after the writer got in before it");
    }
}
