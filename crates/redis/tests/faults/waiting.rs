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

/// Review finding 9: each release woke every waiter of the name, and each looked where it
/// stood (a script over the whole queue): with N waiters, N² scripts for N hand-offs. A
/// release now says who holds: the one it names is granted without a look, the others
/// sleep on. Counted on the server once the waiters are queued: the releases, and few looks.
#[test]
fn a_release_wakes_only_the_waiter_it_grants() {
    const WAITERS: u64 = 10;
    let server = RedisServer::start();
    let url = server.url("ttl=10s&prefix=herd");
    let scope = std::sync::Arc::new(Scope::open(&url).unwrap());
    let holder = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let scope = scope.clone();
            std::thread::spawn(move || {
                let guard = scope.lock_blocking_timeout("job", PATIENCE).unwrap();
                guard.release().unwrap();
            })
        })
        .collect();
    wait_until("every waiter is queued", || scope.inspect("job").unwrap().waiters == WAITERS as usize);
    // Each waiter's first look comes right after its request: let them all be done.
    std::thread::sleep(Duration::from_millis(300));
    let before = sent(&server);
    holder.release().unwrap();
    for waiter in waiters {
        waiter.join().unwrap();
    }
    let after = sent(&server);
    let count = |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let scripts = count("evalsha") - count("script|load");
    println!("{WAITERS} waiters after the holder's release: {scripts} scripts");
    // The holder's release and each waiter's: 11; one look per waiter and release was 55 more.
    assert!(scripts <= 2 * WAITERS + 1, "{scripts} scripts for {WAITERS} hand-offs");
}
