//! Stress: mutual exclusion, bounds and progress under many threads and tasks, bounded
//! in size so that each test takes seconds on two cores in a debug build.
//!
//! Every check is an invariant (a non-atomic counter comes out exact, a flag is never
//! seen set on entry, a count never exceeds its bound); none depends on timing.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use latchkey::{Error, Guard, Result, Scope};
use latchkey_process::ProcessScope;

use crate::support::{multi_thread_runtime, Critical, NewScope, Rng};

macro_rules! stress_suite {
    ($scope:ident, $factory:path) => {
        mod $scope {
            scope_tests!($factory;
                threads_exclude_each_other,
                tasks_exclude_each_other,
                threads_and_tasks_exclude_each_other,
                semaphore_never_exceeds_its_permits,
                rwlock_never_mixes_a_writer_with_anybody,
                threads_on_many_names_exclude_each_other_per_name,
                mutual_exclusion_survives_reclamation_of_idle_names,
                every_thread_completes_its_quota,
                writers_are_not_starved_by_a_stream_of_readers,
                a_request_for_every_permit_is_not_starved_by_small_ones,
            );
        }
    };
}

for_each_local_scope!(stress_suite);

const THREADS: usize = 8;
/// Far more than any test needs; reaching it means the test hung.
const LONG: Duration = Duration::from_secs(60);

/// Runs `body(thread_index)` on `threads` threads, started together, and returns their
/// results in order.
fn on_threads<T: Send>(threads: usize, body: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let start = Barrier::new(threads);
    thread::scope(|s| {
        let (body, start) = (&body, &start);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    start.wait();
                    body(t)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a stress thread panicked")).collect()
    })
}

/// Takes `name` by spinning on `try_lock`, yielding between attempts.
fn spin_lock<'a>(mut try_lock: impl FnMut() -> Result<Option<Guard<'a>>>) -> Result<Guard<'a>> {
    loop {
        if let Some(guard) = try_lock()? {
            return Ok(guard);
        }
        thread::yield_now();
    }
}

// ---------------------------------------------------------------- mutual exclusion

fn threads_exclude_each_other(new_scope: NewScope) -> Result<()> {
    const ROUNDS: usize = 10_000;
    let scope = new_scope();
    let mutex = scope.mutex("stress")?;
    let critical = Critical::default();
    on_threads(THREADS, |t| {
        for i in 0..ROUNDS {
            // Every way to take the lock, mixed on one name.
            let _guard = match (t + i) % 5 {
                0 => mutex.lock_blocking()?,
                1 => scope.lock_blocking("stress")?,
                2 => mutex.lock_blocking_timeout(LONG)?,
                3 => scope.lock_blocking_timeout("stress", LONG)?,
                _ => spin_lock(|| mutex.try_lock())?,
            };
            let _inside = critical.enter();
        }
        Ok(())
    })?;
    assert_eq!(critical.count(), (THREADS * ROUNDS) as u64);
    assert!(!mutex.is_locked()?);
    Ok(())
}

/// Spawns `tasks` tasks on `rt` that each take the lock `rounds` times, sometimes holding
/// it across an await.
fn run_tasks(
    rt: &tokio::runtime::Runtime,
    scope: &Scope,
    critical: &Arc<Critical>,
    tasks: usize,
    rounds: usize,
) -> Result<()> {
    let mutex = Arc::new(scope.mutex("stress")?);
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (scope, mutex, critical) = (scope.clone(), mutex.clone(), critical.clone());
                tokio::spawn(async move {
                    for i in 0..rounds {
                        let _guard = match (t + i) % 3 {
                            0 => mutex.lock().await?,
                            1 => scope.lock("stress").await?,
                            _ => mutex.lock_timeout(LONG).await?,
                        };
                        let _inside = critical.enter();
                        if i % 4 == 0 {
                            tokio::task::yield_now().await; // held across an await
                        }
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        for handle in handles {
            handle.await.expect("a stress task panicked")?;
        }
        Ok(())
    })
}

fn tasks_exclude_each_other(new_scope: NewScope) -> Result<()> {
    const TASKS: usize = 64;
    const ROUNDS: usize = 500;
    let scope = new_scope();
    let critical = Arc::new(Critical::default());
    run_tasks(&multi_thread_runtime(2), &scope, &critical, TASKS, ROUNDS)?;
    let critical = Arc::into_inner(critical).expect("every task is done");
    assert_eq!(critical.count(), (TASKS * ROUNDS) as u64);
    assert!(!scope.is_locked("stress")?);
    Ok(())
}

fn threads_and_tasks_exclude_each_other(new_scope: NewScope) -> Result<()> {
    const THREAD_ROUNDS: usize = 1_000;
    const TASKS: usize = 32;
    const TASK_ROUNDS: usize = 100;
    let scope = new_scope();
    let critical = Arc::new(Critical::default());
    let rt = multi_thread_runtime(2);
    thread::scope(|s| -> Result<()> {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    for _ in 0..THREAD_ROUNDS {
                        let _guard = scope.lock_blocking("stress")?;
                        let _inside = critical.enter();
                    }
                    Ok(())
                })
            })
            .collect();
        run_tasks(&rt, &scope, &critical, TASKS, TASK_ROUNDS)?;
        threads.into_iter().try_for_each(|h| h.join().expect("a stress thread panicked"))
    })?;
    let critical = Arc::into_inner(critical).expect("every task is done");
    assert_eq!(critical.count(), (4 * THREAD_ROUNDS + TASKS * TASK_ROUNDS) as u64);
    Ok(())
}

// ---------------------------------------------------------------- semaphore and rwlock

fn semaphore_never_exceeds_its_permits(new_scope: NewScope) -> Result<()> {
    const PERMITS: u32 = 3;
    const ROUNDS: usize = 5_000;
    let scope = new_scope();
    let semaphore = scope.semaphore("stress/sem", PERMITS)?;
    let in_use = AtomicU32::new(0);
    on_threads(THREADS, |t| {
        let mut rng = Rng::new(t as u64);
        for i in 0..ROUNDS {
            let k = 1 + rng.below(u64::from(PERMITS)) as u32;
            let guard = match i % 3 {
                0 => semaphore.acquire_blocking(k)?,
                1 => semaphore.acquire_blocking_timeout(k, LONG)?,
                _ => spin_lock(|| semaphore.try_acquire(k))?,
            };
            assert_eq!(guard.permits(), k);
            let now = in_use.fetch_add(k, Ordering::SeqCst) + k;
            assert!(now <= PERMITS, "{now} permits held of {PERMITS}");
            thread::yield_now();
            in_use.fetch_sub(k, Ordering::SeqCst);
        }
        Ok(())
    })?;
    assert_eq!(semaphore.available()?, PERMITS);
    Ok(())
}

fn rwlock_never_mixes_a_writer_with_anybody(new_scope: NewScope) -> Result<()> {
    const ROUNDS: usize = 5_000;
    let scope = new_scope();
    let rwlock = scope.rwlock("stress/rw")?;
    // Readers inside, or -1 while a writer is.
    let inside = AtomicI64::new(0);
    let writes = Critical::default();
    let wrote = on_threads(THREADS, |t| {
        let mut rng = Rng::new(t as u64);
        let mut wrote = 0;
        for _ in 0..ROUNDS {
            if rng.below(4) == 0 {
                let _guard =
                    if rng.below(2) == 0 { rwlock.write_blocking()? } else { spin_lock(|| rwlock.try_write())? };
                assert_eq!(
                    inside.compare_exchange(0, -1, Ordering::SeqCst, Ordering::SeqCst),
                    Ok(0),
                    "a writer got in with others"
                );
                let _writing = writes.enter();
                thread::yield_now();
                inside.store(0, Ordering::SeqCst);
                wrote += 1;
            } else {
                let _guard = if rng.below(2) == 0 { rwlock.read_blocking()? } else { spin_lock(|| rwlock.try_read())? };
                let before = inside.fetch_add(1, Ordering::SeqCst);
                assert!(before >= 0, "a reader got in with a writer");
                thread::yield_now();
                inside.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(wrote)
    })?;
    assert_eq!(writes.count(), wrote.iter().sum::<u64>());
    assert_eq!(rwlock.readers()?, 0);
    assert!(!rwlock.is_write_locked()?);
    Ok(())
}

// ---------------------------------------------------------------- many names

const NAMES: usize = 64;

/// Locks random names of `names` from each of `THREADS` threads while `go_on(round)`,
/// counting each name's entries per thread, and checks every name's section saw exactly
/// those.
fn lock_random_names(scope: &Scope, names: &[String], go_on: impl Fn(usize) -> bool + Sync) -> Result<()> {
    let sections: Vec<Critical> = names.iter().map(|_| Critical::default()).collect();
    let tallies = on_threads(THREADS, |t| {
        let mut rng = Rng::new(t as u64 + 100);
        let mut tally = vec![0u64; names.len()];
        let mut i = 0;
        while go_on(i) {
            i += 1;
            let n = rng.below(names.len() as u64) as usize;
            let name = &names[n];
            let visit = |tally: &mut Vec<u64>| {
                let _inside = sections[n].enter();
                tally[n] += 1;
            };
            match i % 3 {
                0 => {
                    let _guard = scope.lock_blocking(name)?;
                    visit(&mut tally);
                }
                1 => {
                    let _guard = spin_lock(|| scope.try_lock(name))?;
                    visit(&mut tally);
                }
                _ => {
                    let mutex = scope.mutex(name)?;
                    let _guard = mutex.lock_blocking()?;
                    visit(&mut tally);
                }
            }
        }
        Ok(tally)
    })?;
    for (n, section) in sections.into_iter().enumerate() {
        let expected: u64 = tallies.iter().map(|tally| tally[n]).sum();
        assert_eq!(section.count(), expected, "name {}", names[n]);
    }
    Ok(())
}

fn threads_on_many_names_exclude_each_other_per_name(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let names: Vec<String> = (0..NAMES).map(|i| format!("many/{i}")).collect();
    lock_random_names(&scope, &names, |round| round < 5_000)?;
    assert!(scope.list()?.is_empty());
    Ok(())
}

fn mutual_exclusion_survives_reclamation_of_idle_names(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let names: Vec<String> = (0..NAMES).map(|i| format!("hot/{i}")).collect();
    let churned = AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        // Fresh names make the scope reclaim idle ones, the hot names among them.
        let churner = s.spawn(|| -> Result<()> {
            let result = (0..50_000).try_for_each(|i| scope.lock_blocking(&format!("cold/{i}")).map(drop));
            churned.store(true, Ordering::SeqCst);
            result
        });
        let hot = lock_random_names(&scope, &names, |round| round < 1_000 || !churned.load(Ordering::SeqCst));
        churner.join().expect("the churner panicked")?;
        hot
    })?;
    assert!(scope.list()?.is_empty());
    Ok(())
}

// ---------------------------------------------------------------- progress

fn every_thread_completes_its_quota(new_scope: NewScope) -> Result<()> {
    const QUOTA: usize = 5_000;
    let scope = new_scope();
    let mutex = scope.mutex("quota")?;
    let critical = Critical::default();
    let done = on_threads(THREADS, |_| {
        let mut done = 0;
        while done < QUOTA {
            let _guard = mutex.lock_blocking()?;
            let _inside = critical.enter();
            done += 1;
        }
        Ok(done)
    })?;
    assert_eq!(done, vec![QUOTA; THREADS]);
    assert_eq!(critical.count(), (THREADS * QUOTA) as u64);
    Ok(())
}

/// Runs `hogs` threads that take the lock over and over until `victims` threads have each
/// had `quota` turns, and fails if a hog reaches `cap` rounds first (the victims starved).
fn victims_finish_before_hogs_give_up(
    hogs: usize,
    hog: impl Fn() -> Result<()> + Sync,
    victims: usize,
    victim: impl Fn() -> Result<()> + Sync,
    quota: usize,
) -> Result<()> {
    const CAP: usize = 1_000_000;
    let done = AtomicBool::new(false);
    thread::scope(|s| -> Result<()> {
        let hogs: Vec<_> = (0..hogs)
            .map(|_| {
                s.spawn(|| -> Result<usize> {
                    let mut rounds = 0;
                    while !done.load(Ordering::SeqCst) && rounds < CAP {
                        hog()?;
                        rounds += 1;
                    }
                    Ok(rounds)
                })
            })
            .collect();
        let result = on_threads(victims, |_| (0..quota).try_for_each(|_| victim()));
        done.store(true, Ordering::SeqCst);
        for h in hogs {
            let rounds = h.join().expect("a hog panicked")?;
            assert!(rounds < CAP, "the victims were starved for {CAP} rounds of a hog");
        }
        result.map(drop)
    })
}

fn writers_are_not_starved_by_a_stream_of_readers(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("stream")?;
    let read = || {
        let _guard = rwlock.read_blocking()?;
        thread::yield_now(); // readers overlap: without writer preference, a writer never gets in
        Ok(())
    };
    let write = || rwlock.write_blocking().map(drop);
    victims_finish_before_hogs_give_up(6, read, 2, write, 200)
}

fn a_request_for_every_permit_is_not_starved_by_small_ones(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let semaphore = scope.semaphore("stream", 4)?;
    let small = || {
        let _guard = semaphore.acquire_blocking(1)?;
        thread::yield_now();
        Ok(())
    };
    let all = || semaphore.acquire_blocking(4).map(drop);
    victims_finish_before_hogs_give_up(6, small, 2, all, 200)
}

// ---------------------------------------------------------------- registry churn

/// Locks and releases a million distinct names: the registry must stay bounded by what
/// is in use (at most 64 idle names per shard, 64 shards), and a compaction must empty it.
#[test]
fn churning_a_million_names_keeps_the_registry_bounded() -> Result<()> {
    const CHURN: usize = 1_000_000;
    const BOUND: usize = 64 * 64;
    let scope = ProcessScope::new();
    let before = scope.registered_names();
    assert_eq!(before, 0);
    let start = Instant::now();
    let mut most = 0;
    for i in 0..CHURN {
        let name = format!("churn/{i}");
        drop(scope.acquire_blocking(&name, 1, 1, None)?);
        if i % 1_000 == 0 {
            let registered = scope.registered_names();
            assert!(registered <= BOUND, "{registered} names registered after {i} of the churn");
            most = most.max(registered);
        }
    }
    let registered = scope.registered_names();
    assert!(registered <= BOUND, "{registered} names registered after the churn");
    eprintln!("churned {CHURN} names in {:?}; at most {most} registered", start.elapsed());
    scope.compact();
    assert_eq!(scope.registered_names(), before);
    Ok(())
}
