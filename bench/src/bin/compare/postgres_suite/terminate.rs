//! `postgres/terminate-to-lost` and `postgres/terminate-to-grant`: a child holds the lock
//! (latchkey's mutex, or `pg_advisory_lock` on a raw connection) and says so; a thread of
//! the parent asks for the same lock (ours: `scope.lock_blocking`; the peer:
//! `pg_advisory_lock` on a connection of its own); then the parent ends the child's server
//! session with `pg_terminate_backend`, finding its backend in `pg_stat_activity` by the
//! `application_name` the child's URL gives it.
//!
//! Measured from just before the parent sends `pg_terminate_backend` (CLOCK_MONOTONIC):
//! - to the child's `guard.lost()` completing (the peer: the raw connection's future
//!   ending), which the child reports on the same clock;
//! - to the parent's waiter being granted. A dying session sends no NOTIFY: the scope's
//!   waiter learns of it from its keep-alive, which asks every [`DEATH_CHECK`] which of the
//!   sessions it waits behind have ended. The waits before the terminate are staggered
//!   over that period, so that the terminates fall at different moments of it.

use std::io::{self, Read};
use std::sync::mpsc;
use std::time::Duration;

use latchkey::Scope;
use latchkey_bench::Row;
use latchkey_postgres::DEATH_CHECK;

use super::child::{mono_ns, say, Kind, Proc};
use super::{advisory_key, bounded, connect, raw_config, row, runtime, Raw, Target};

/// First argument of a terminated child: `__postgres-terminate-child URL NAME ours|advisory`
/// (the URL has the child's `application_name`).
pub const CHILD: &str = "__postgres-terminate-child";

/// Terminates per kind, ours and the advisory lock alternating.
const KILLS: u32 = 5;
/// How long the waiting thread is given to queue its request before the terminate.
const WAITER_SETTLE: Duration = Duration::from_millis(150);

const RAW_END: &str = "raw tokio-postgres connection's end";
const ADVISORY_WAITER: &str = "pg_advisory_lock waiter";

/// `__postgres-terminate-child URL NAME KIND`: takes the lock, says `held`, waits until the
/// hold is lost (ours: `guard.lost()`; the peer: the connection's future ends), says
/// `lost NS` (CLOCK_MONOTONIC), and waits to be killed (or for its stdin to close).
pub fn child(args: &[String]) {
    let [url, name, kind] = args else { panic!("usage: {CHILD} URL NAME ours|advisory") };
    // Should the parent go away, so does this process.
    std::thread::spawn(|| {
        let _ = io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let rt = runtime();
    // Kept until the process ends.
    let _held = match Kind::parse(kind) {
        Kind::Ours => {
            let scope = Scope::open(url).expect("cannot open the PostgreSQL scope");
            let guard = scope.lock_blocking(name).expect("cannot take the lock");
            let lost = guard.lost();
            say("held");
            rt.block_on(lost);
            say(&format!("lost {}", mono_ns()));
            Some((scope, guard))
        }
        Kind::Advisory => {
            rt.block_on(async {
                let (client, ended) = connect(&raw_config(url)).await;
                let key = advisory_key(name);
                bounded("pg_advisory_lock", client.execute("SELECT pg_advisory_lock($1)", &[&key])).await;
                say("held");
                let _ = ended.await;
                say(&format!("lost {}", mono_ns()));
            });
            None
        }
    };
    loop {
        std::thread::park();
    }
}

/// One terminate: ns from just before it to the child's loss, and to the waiter's grant.
struct Kill {
    lost: f64,
    granted: f64,
}

/// Terminate number `kill` of `kind`; ours waits on `scope`, the peer on `waiter`; `ctl`
/// finds and terminates the child's backend.
fn kill_round(target: &Target, kind: Kind, kill: u32, scope: &Scope, ctl: &Raw, waiter: &Raw) -> Kill {
    let name = target.name(&format!("terminate/{}/{kill}", kind.arg()));
    let app = format!("{}-terminate-{}-{kill}", target.run, kind.arg());
    let url = target.url_with("application_name", &app);
    let mut proc = Proc::spawn(&[CHILD, &url, &name, kind.arg()]);
    proc.expect("held");
    let backends = ctl.rt.block_on(bounded(
        "reading pg_stat_activity",
        ctl.client.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1", &[&app]),
    ));
    assert_eq!(backends.len(), 1, "the child {app} should have one server session");
    let backend: i32 = backends[0].get(0);
    let terminate = ctl.rt.block_on(bounded("prepare", ctl.client.prepare("SELECT pg_terminate_backend($1)")));
    let settle = WAITER_SETTLE + DEATH_CHECK / KILLS * kill;
    let (granted_tx, granted_rx) = mpsc::channel();
    let (terminated, granted) = std::thread::scope(|s| {
        let name = &name;
        s.spawn(move || match kind {
            Kind::Ours => {
                let guard = scope.lock_blocking(name).expect("the waiter failed");
                granted_tx.send(mono_ns()).expect("the parent is gone");
                guard.release().expect("cannot release the lock");
            }
            Kind::Advisory => {
                let key = advisory_key(name);
                waiter.lock(key);
                granted_tx.send(mono_ns()).expect("the parent is gone");
                waiter.unlock(key);
            }
        });
        std::thread::sleep(settle);
        assert!(granted_rx.try_recv().is_err(), "the waiter got the lock while the child held it");
        let terminated = mono_ns();
        let done = ctl.rt.block_on(bounded("pg_terminate_backend", ctl.client.query_one(&terminate, &[&backend])));
        assert!(done.get::<_, bool>(0), "pg_terminate_backend({backend}) found no such backend");
        let granted =
            granted_rx.recv_timeout(Duration::from_secs(20)).expect("the lock of the terminated child was not granted");
        (terminated, granted)
    });
    let line = proc.line();
    let lost: u64 = line
        .strip_prefix("lost ")
        .and_then(|ns| ns.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line from a terminated child: {line:?}"));
    drop(proc);
    Kill { lost: lost.saturating_sub(terminated) as f64, granted: granted.saturating_sub(terminated) as f64 }
}

/// `postgres/terminate-to-*`: [`KILLS`] terminates each, ours and the advisory lock
/// alternating.
pub fn terminate(emit: &dyn Fn(Row), target: &Target) {
    let scope = Scope::open(&target.url).expect("cannot open the PostgreSQL scope");
    let ctl = Raw::connect(&raw_config(&target.url_with("application_name", &format!("{}-ctl", target.run))));
    let waiter = Raw::connect(&raw_config(&target.url_with("application_name", &format!("{}-waiter", target.run))));
    let (mut ours, mut peer) = (Kills::default(), Kills::default());
    for kill in 0..KILLS {
        ours.push(kill_round(target, Kind::Ours, kill, &scope, &ctl, &waiter));
        peer.push(kill_round(target, Kind::Advisory, kill, &scope, &ctl, &waiter));
    }
    eprintln!(
        "note: postgres/terminate-to-lost, each in ms: ours {}; raw connection {}",
        in_ms(&ours.lost),
        in_ms(&peer.lost)
    );
    eprintln!(
        "note: postgres/terminate-to-grant, each in ms: ours {}; pg_advisory_lock {}",
        in_ms(&ours.granted),
        in_ms(&peer.granted)
    );
    emit(row("postgres/terminate-to-lost", median(&ours.lost), RAW_END, median(&peer.lost)));
    emit(row("postgres/terminate-to-lost/max", max(&ours.lost), RAW_END, max(&peer.lost)));
    emit(row("postgres/terminate-to-grant", median(&ours.granted), ADVISORY_WAITER, median(&peer.granted)));
    let check = format!("the death check ({} ms)", DEATH_CHECK.as_millis());
    emit(row("postgres/terminate-to-grant", median(&ours.granted), &check, DEATH_CHECK.as_nanos() as f64));
    emit(row("postgres/terminate-to-grant/max", max(&ours.granted), ADVISORY_WAITER, max(&peer.granted)));
    drop((ctl, waiter));
    scope.close_blocking().expect("cannot close the PostgreSQL scope");
}

/// The terminates of one kind.
#[derive(Default)]
struct Kills {
    lost: Vec<f64>,
    granted: Vec<f64>,
}

impl Kills {
    fn push(&mut self, kill: Kill) {
        self.lost.push(kill.lost);
        self.granted.push(kill.granted);
    }
}

fn in_ms(v: &[f64]) -> String {
    v.iter().map(|ns| format!("{:.2}", ns / 1e6)).collect::<Vec<_>>().join(", ")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}
