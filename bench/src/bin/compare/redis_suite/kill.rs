//! `redis/kill-to-grant`: a child holds the lock with latchkey on a session of
//! [`CRASH_TTL`] (`?ttl=2s`) and says so; a thread of the parent asks for the same lock
//! (`scope.lock_blocking`, on the suite's URL); the child is killed with SIGKILL. Measured
//! from just before `kill(2)` to the waiter's grant.
//!
//! Nothing tells Redis that the child died: its session's mark on the name (`…:s`, until
//! when it lives there, server time) was set by its last renewal (one every third of the
//! TTL) to that moment plus the TTL, and the waiter looks again when the first session
//! ahead of it would lapse (the wake time that `enqueue` and `standing` answer). The kills
//! fall at different moments of the keep-alive period. Shortly after each kill the parent
//! reads the dead session's mark and the server's `TIME`, so that it can tell how long
//! after the lapse itself the waiter was granted.

use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Duration;

use latchkey::Scope;
use latchkey_bench::Row;
use latchkey_redis::keys::NameKeys;

use super::child::{mono_ns, say, Proc};
use super::{bounded, row, Raw, Target};

/// First argument of a killed child: `__redis-kill-child URL NAME` (the URL has the
/// session's TTL).
pub const CHILD: &str = "__redis-kill-child";

/// The session TTL of the killed child.
const CRASH_TTL: Duration = Duration::from_secs(2);
/// Kills.
const KILLS: u32 = 5;
/// How long the waiting thread is given to queue its request before the holder is killed.
const WAITER_SETTLE: Duration = Duration::from_millis(150);
/// How long after the kill the parent reads the dead session's mark (any renewal the child
/// had sent before it died has run by then).
const MARK_READ_DELAY: Duration = Duration::from_millis(100);

/// `__redis-kill-child URL NAME`: takes the lock on a session of the URL's TTL, says
/// `held`, and keeps the session alive (the scope's thread does) until killed (or until its
/// stdin closes).
pub fn child(args: &[String]) {
    let [url, name] = args else { panic!("usage: {CHILD} URL NAME") };
    // Should the parent go away, so does this process.
    std::thread::spawn(|| {
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let scope = Scope::open(url).expect("cannot open the Redis scope");
    let _guard = scope.lock_blocking(name).expect("cannot take the lock");
    say("held");
    loop {
        std::thread::park();
    }
}

/// One kill: ns from just before it to the session's lapse (by its mark, on the server's
/// clock), and to the waiter's grant.
struct Kill {
    lapsed: f64,
    granted: f64,
}

/// Kill number `kill`. The waiter is given [`WAITER_SETTLE`] to queue, plus `kill`
/// [`KILLS`]ths of the child's keep-alive period (a third of the TTL).
fn kill_round(target: &Target, kill: u32, scope: &Scope, raw: &mut Raw) -> Kill {
    let name = target.name(&format!("kill/{kill}"));
    let settle = WAITER_SETTLE + CRASH_TTL / 3 / KILLS * kill;
    let url = target.url_with("ttl", &format!("{}s", CRASH_TTL.as_secs()));
    let mut proc = Proc::spawn(&[CHILD, &url, &name]);
    proc.expect("held");
    let (granted_tx, granted_rx) = mpsc::channel();
    let (killed, lapsed, granted) = std::thread::scope(|s| {
        let name = &name;
        s.spawn(move || {
            let guard = scope.lock_blocking(name).expect("the waiter failed");
            granted_tx.send(mono_ns()).expect("the parent is gone");
            guard.release().expect("cannot release the lock");
        });
        std::thread::sleep(settle);
        assert!(granted_rx.try_recv().is_err(), "the waiter got the lock while the child held it");
        let pid = proc.child.id() as libc::pid_t;
        let killed = mono_ns();
        // SAFETY: a plain system call; the child has not been waited for, so `pid` is its.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill failed");
        std::thread::sleep(MARK_READ_DELAY);
        let lapsed = lapse(raw, &NameKeys::new(&target.config.prefix, name));
        let granted =
            granted_rx.recv_timeout(Duration::from_secs(20)).expect("the lock of the killed child was not granted");
        (killed, lapsed, granted)
    });
    drop(proc);
    Kill { lapsed: (lapsed - killed as f64), granted: granted.saturating_sub(killed) as f64 }
}

/// When (CLOCK_MONOTONIC ns) the session of the first request of the name of `keys` (the
/// killed holder's) lapses there, from its mark and the server's `TIME`.
fn lapse(raw: &mut Raw, keys: &NameKeys) -> f64 {
    let connection = &mut raw.connection;
    let before = mono_ns();
    let ((secs, micros), first): ((u64, u64), Vec<String>) = raw.rt.block_on(bounded(
        "TIME + ZRANGE",
        redis::pipe().cmd("TIME").cmd("ZRANGE").arg(&keys.queue).arg(0).arg(0).query_async(connection),
    ));
    let after = mono_ns();
    let holder = first.first().expect("the killed holder's request is gone already");
    let session = holder.split(':').next().expect("a request id is session:n");
    let mark: u64 =
        raw.rt.block_on(bounded("HGET", redis::cmd("HGET").arg(&keys.sessions).arg(session).query_async(connection)));
    let server_now_ns = (secs * 1_000_000 + micros) as f64 * 1e3;
    let at = (before + after) as f64 / 2.0;
    at + (mark as f64 * 1e6 - server_now_ns)
}

/// `redis/kill-to-grant*`: [`KILLS`] kills.
pub fn kill_to_grant(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the Redis scope");
    let mut raw = Raw::connect(&target.config);
    let kills: Vec<Kill> = (0..KILLS).map(|kill| kill_round(target, kill, &scope, &mut raw)).collect();
    let granted: Vec<f64> = kills.iter().map(|k| k.granted).collect();
    let lapsed: Vec<f64> = kills.iter().map(|k| k.lapsed).collect();
    let after_lapse: Vec<f64> = kills.iter().map(|k| k.granted - k.lapsed).collect();
    let seconds = |v: &[f64]| v.iter().map(|ns| format!("{:.3}", ns / 1e9)).collect::<Vec<_>>().join(", ");
    let ms = |v: &[f64]| v.iter().map(|ns| format!("{:.1}", ns / 1e6)).collect::<Vec<_>>().join(", ");
    eprintln!(
        "note: redis/kill-to-grant, each kill in s: granted {}; the session lapsed {}",
        seconds(&granted),
        seconds(&lapsed)
    );
    eprintln!("note: redis/kill-to-grant, from the lapse to the grant, each in ms: {}", ms(&after_lapse));
    let ttl_s = CRASH_TTL.as_secs();
    let ttl = CRASH_TTL.as_nanos() as f64;
    emit(row("redis/kill-to-grant", median(&granted), &format!("the session TTL ({ttl_s} s)"), ttl));
    emit(row("redis/kill-to-grant", median(&granted), "the session's lapse (its mark)", median(&lapsed)));
    emit(row("redis/kill-to-grant/max", max(&granted), &format!("the session TTL ({ttl_s} s)"), ttl));
    drop(raw);
    scope.close_blocking().expect("cannot close the Redis scope");
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}
