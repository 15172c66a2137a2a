//! The leader of a 3-member cluster killed while locks are held and awaited.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey::Scope;
use latchkey_testkit::EtcdCluster;

use crate::fenced::{check_counter, increment, Etcd, Fence, Write};
use crate::support::{wait_until, Rng, PATIENCE};

/// Clients that contend for the lock, each with a scope (a session) of its own.
const CLIENTS: usize = 4;

/// One grant, as its holder saw it.
#[derive(Debug)]
struct Hold {
    client: usize,
    token: u64,
    /// Just after the grant came back, and just before the release was asked for: inside
    /// the true hold.
    start: Instant,
    end: Instant,
    /// Whether the guard said the hold was lost by its end.
    lost: bool,
    /// The fenced increment's outcome, `None` if the hold was lost before the write.
    write: Option<Write>,
    /// How long the lock call took.
    waited: Duration,
}

/// What the clients share with the test.
#[derive(Default)]
struct Run {
    stop: AtomicBool,
    holding: AtomicUsize,
    waiting: AtomicUsize,
    holds: Mutex<Vec<Hold>>,
    errors: Mutex<Vec<String>>,
}

impl Run {
    fn holds_since(&self, since: Instant, client: usize) -> usize {
        self.holds.lock().unwrap().iter().filter(|h| h.client == client && h.start > since).count()
    }
}

/// An error's kind and the start of its message.
fn brief(e: &latchkey::Error) -> String {
    let text = e.to_string();
    format!("{:?}: {}", e.kind(), text.chars().take(160).collect::<String>())
}

/// A client: locks, increments the fenced counter, releases, until told to stop.
fn client(run: &Run, client: usize, url: &str, endpoints: &[String], fence: &Fence, seed: u64) {
    let scope = Scope::open(url).unwrap();
    let etcd = Etcd::connect(endpoints);
    let mut rng = Rng::seeded(seed);
    while !run.stop.load(Ordering::Acquire) {
        run.waiting.fetch_add(1, Ordering::AcqRel);
        let asked = Instant::now();
        let guard = scope.lock_blocking_timeout("job", PATIENCE);
        run.waiting.fetch_sub(1, Ordering::AcqRel);
        let guard = match guard {
            Ok(guard) => guard,
            Err(e) => {
                run.errors.lock().unwrap().push(format!("client {client}: lock: {}", brief(&e)));
                continue;
            }
        };
        let start = Instant::now();
        let waited = start - asked;
        run.holding.fetch_add(1, Ordering::AcqRel);
        let token = guard.fencing_token();
        let between = Duration::from_millis(2 + rng.below(8));
        let step = etcd.run(|c| increment(fence, c, token, between, || guard.is_lost()));
        let lost = guard.is_lost();
        run.holding.fetch_sub(1, Ordering::AcqRel);
        let end = Instant::now();
        let released = guard.release();
        if let (Err(e), false) = (released, lost) {
            run.errors.lock().unwrap().push(format!("client {client}: release of {token}: {}", brief(&e)));
        }
        run.holds.lock().unwrap().push(Hold { client, token, start, end, lost, write: step.map(|(w, _)| w), waited });
    }
}

/// Issue 10: the leader killed (twice, the member restarted in between) while one client
/// holds the lock and others wait: never two holders with valid tokens at once (holds
/// seen by their holders never overlap unless the earlier one knew it was lost; the
/// fenced counter loses no update and rejects nobody who held), tokens never repeat and
/// grow in grant order, and every waiter is still granted after the new leader's election.
#[test]
fn a_leader_killed_under_contention_never_makes_two_holders() {
    let mut cluster = EtcdCluster::start(3);
    let url = cluster.url_with("failover", "ttl=3s");
    let etcd = Etcd::connect(&cluster.endpoints());
    let fence = Fence::new("failover-fence");
    fence.init(&etcd);
    let run = Arc::new(Run::default());
    let mut rng = Rng::from_clock("failover");
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (run, url, endpoints, fence, seed) =
                (run.clone(), url.clone(), cluster.endpoints(), fence.clone(), rng.below(u64::MAX) | 1);
            std::thread::spawn(move || client(&run, c, &url, &endpoints, &fence, seed))
        })
        .collect();
    wait_until("the clients' first holds", || run.holds.lock().unwrap().len() >= 2 * CLIENTS);

    for round in 0..2 {
        wait_until("a hold with waiters", || {
            run.holding.load(Ordering::Acquire) == 1 && run.waiting.load(Ordering::Acquire) >= 2
        });
        let leader = cluster.leader();
        let killed = Instant::now();
        cluster.kill(leader);
        let _ = cluster.leader();
        let elected = killed.elapsed();
        for c in 0..CLIENTS {
            wait_until(&format!("client {c} granted after the kill"), || run.holds_since(killed, c) >= 2);
        }
        let holds = run.holds.lock().unwrap();
        let after: Vec<&Hold> = holds.iter().filter(|h| h.start > killed).collect();
        let first = after.iter().map(|h| h.start - killed).min();
        let longest_wait = after.iter().map(|h| h.waited).max();
        let longest_hold = after.iter().map(|h| h.end - h.start).max();
        println!(
            "round {round}: killed leader m{leader}; new leader after {elected:?}; first grant after {first:?}; \
             every client granted twice after {:?}; longest lock wait {longest_wait:?}, longest hold \
             {longest_hold:?} since the kill",
            killed.elapsed()
        );
        drop(holds);
        cluster.restart(leader);
    }
    run.stop.store(true, Ordering::Release);
    for thread in threads {
        thread.join().unwrap();
    }

    let mut holds = std::mem::take(&mut *run.holds.lock().unwrap());
    holds.sort_by_key(|h| h.start);
    let errors = run.errors.lock().unwrap();
    let lost = holds.iter().filter(|h| h.lost).count();
    let first = &errors[..errors.len().min(3)];
    println!("{} holds, {lost} lost, {} failed calls; the first: {first:#?}", holds.len(), errors.len());
    // Sorted by start, a hold that overlaps any later one overlaps the next one.
    for pair in holds.windows(2) {
        let (earlier, later) = (&pair[0], &pair[1]);
        assert!(
            earlier.lost || later.start >= earlier.end,
            "two holders at once: {earlier:?} had not lost its hold when {later:?} was granted"
        );
    }
    let mut tokens: Vec<u64> = holds.iter().filter(|h| !h.lost).map(|h| h.token).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens do not grow in grant order: {tokens:?}");
    tokens = holds.iter().map(|h| h.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), holds.len(), "a token was granted twice");
    let rejected: Vec<&Hold> = holds.iter().filter(|h| h.write == Some(Write::Rejected) && !h.lost).collect();
    assert!(rejected.is_empty(), "the fence rejected holders that had not lost their hold: {rejected:?}");
    let accepted = holds.iter().filter(|h| h.write == Some(Write::Accepted)).count();
    assert_eq!(check_counter(&fence, &etcd), accepted, "accepted writes unknown to their writers");
    assert!(errors.is_empty(), "{} locks or releases failed across the failovers; the first: {first:#?}", errors.len());
}

/// Issue 10: a hold survives the loss of any one member (each killed in turn, the leader
/// among them, and restarted): `lost()` does not complete, `is_lost()` stays false,
/// `check()` passes, nobody else is granted the lock, and it is released cleanly.
#[test]
fn a_hold_survives_each_member_killed_in_turn() {
    let mut cluster = EtcdCluster::start(3);
    let url = cluster.url_with("survive", "ttl=3s");
    let scope = Scope::open(&url).unwrap();
    let guard = scope.lock_blocking("job").unwrap();
    let lost = guard.lost();
    let (fired_tx, fired) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if latchkey_model::block_on_until(lost, Some(Instant::now() + PATIENCE)).is_some() {
            let _ = fired_tx.send(Instant::now());
        }
    });
    let other = Scope::open(&url).unwrap();
    for member in 0..cluster.members() {
        let was_leader = cluster.leader() == member;
        cluster.kill(member);
        let killed = Instant::now();
        let _ = cluster.leader();
        // Longer than the keep-alive interval (TTL / 3), and than any re-watch.
        std::thread::sleep(Duration::from_millis(1500));
        if let Ok(at) = fired.try_recv() {
            panic!(
                "lost() completed {:?} after member m{member} (leader: {was_leader}) was killed; is_lost() says {}, \
                 check() says {:?}",
                at - killed,
                guard.is_lost(),
                guard.check()
            );
        }
        assert!(!guard.is_lost(), "is_lost() after member m{member} (leader: {was_leader}) was killed");
        guard.check().unwrap_or_else(|e| panic!("check() after member m{member} was killed: {e}"));
        assert!(other.try_lock("job").unwrap().is_none(), "another scope took a held lock");
        cluster.restart(member);
    }
    guard.release().unwrap();
    other.try_lock("job").unwrap().expect("the lock is free after the release").release().unwrap();
}
