//! Suite `process`: the process scope against in-process locks.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use latchkey::Scope;
use latchkey_bench::{alternate, critical_section, now_or_never, per_op, threads_per_op, Row};

const UNCONTENDED_ITERS: u64 = 2_000_000;
const CONTENDED_OPS: u64 = 200_000;
const CONTENDED_ASYNC_OPS: u64 = 50_000;

pub fn run(emit: &dyn Fn(Row)) {
    uncontended(emit);
    contended_threads(emit);
    contended_async(emit);
    read_heavy_async(emit);
    semaphore(emit);
}

fn row(case: &str, ours_ns: f64, peer: &str, peer_ns: f64) -> Row {
    Row { case: case.to_string(), ours_ns, peer: peer.to_string(), peer_ns }
}

fn uncontended(emit: &dyn Fn(Row)) {
    let scope = Scope::process();
    let ours = scope.mutex("bench/resolved").unwrap();
    let pl = parking_lot::Mutex::new(0u64);
    let std_mutex = std::sync::Mutex::new(0u64);

    let lock_ours = || per_op(UNCONTENDED_ITERS, || drop(ours.lock_blocking().unwrap()));
    let (o, p) = alternate(lock_ours, || per_op(UNCONTENDED_ITERS, || drop(pl.lock())));
    emit(row("mutex/uncontended/resolved", o, "parking_lot::Mutex", p));
    let (o, p) = alternate(lock_ours, || per_op(UNCONTENDED_ITERS, || drop(std_mutex.lock().unwrap())));
    emit(row("mutex/uncontended/resolved", o, "std::sync::Mutex", p));

    let by_name = || per_op(UNCONTENDED_ITERS, || drop(scope.lock_blocking("bench/by-name").unwrap()));
    let (o, p) = alternate(by_name, || per_op(UNCONTENDED_ITERS, || drop(pl.lock())));
    emit(row("mutex/uncontended/by-name", o, "parking_lot::Mutex", p));
    // The pattern a user would write by hand: a concurrent map of names to mutexes.
    let keyed: dashmap::DashMap<String, Arc<parking_lot::Mutex<()>>> = dashmap::DashMap::new();
    let keyed_lock = |name: &str| {
        let mutex = match keyed.get(name) {
            Some(m) => m.clone(),
            None => keyed.entry(name.to_string()).or_default().clone(),
        };
        drop(mutex.lock());
    };
    let (o, p) = alternate(by_name, || per_op(UNCONTENDED_ITERS, || keyed_lock("bench/by-name")));
    emit(row("mutex/uncontended/by-name", o, "DashMap<String,Arc<parking_lot::Mutex>>", p));

    let tokio_mutex = tokio::sync::Mutex::new(0u64);
    let async_mutex = async_lock::Mutex::new(0u64);
    let lock_async = || per_op(UNCONTENDED_ITERS, || drop(now_or_never(ours.lock()).unwrap()));
    let (o, p) = alternate(lock_async, || per_op(UNCONTENDED_ITERS, || drop(now_or_never(tokio_mutex.lock()))));
    emit(row("mutex/uncontended/async-resolved", o, "tokio::sync::Mutex", p));
    let (o, p) = alternate(lock_async, || per_op(UNCONTENDED_ITERS, || drop(now_or_never(async_mutex.lock()))));
    emit(row("mutex/uncontended/async-resolved", o, "async_lock::Mutex", p));

    let rw = scope.rwlock("bench/rw-uncontended").unwrap();
    let tokio_rw = tokio::sync::RwLock::new(0u64);
    let pl_rw = parking_lot::RwLock::new(0u64);
    let read_ours = || per_op(UNCONTENDED_ITERS, || drop(rw.read_blocking().unwrap()));
    let (o, p) = alternate(read_ours, || per_op(UNCONTENDED_ITERS, || drop(pl_rw.read())));
    emit(row("rwlock/uncontended-read/resolved", o, "parking_lot::RwLock", p));
    let (o, p) = alternate(
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(rw.read()).unwrap())),
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(tokio_rw.read()))),
    );
    emit(row("rwlock/uncontended-read/async-resolved", o, "tokio::sync::RwLock", p));
}

fn contended_threads(emit: &dyn Fn(Row)) {
    let scope = Scope::process();
    let ours = scope.mutex("bench/contended-threads").unwrap();
    let pl = parking_lot::Mutex::new(0u64);
    let std_mutex = std::sync::Mutex::new(0u64);
    for threads in [2usize, 8] {
        let iters = CONTENDED_OPS / threads as u64;
        let case = format!("mutex/contended/{threads}-threads");
        let lock_ours = || {
            threads_per_op(threads, iters, || {
                let _g = ours.lock_blocking().unwrap();
                critical_section();
            })
        };
        let (o, p) = alternate(lock_ours, || {
            threads_per_op(threads, iters, || {
                let _g = pl.lock();
                critical_section();
            })
        });
        emit(row(&case, o, "parking_lot::Mutex (unfair)", p));
        let (o, p) = alternate(lock_ours, || {
            threads_per_op(threads, iters, || {
                let _g = std_mutex.lock().unwrap();
                critical_section();
            })
        });
        emit(row(&case, o, "std::sync::Mutex (unfair)", p));
    }
}

/// Work done while holding an async lock: a little computation and one yield, so that
/// the other tasks run into the held lock and every grant is a queued hand-off (without
/// the yield, whether tasks ever meet depends on the scheduler, not on the lock).
async fn held_section() {
    critical_section();
    tokio::task::yield_now().await;
}

/// Runs `tasks` tasks on a two-worker Tokio runtime, each running `op` `iters` times;
/// ns per operation overall.
fn tasks_per_op<F, Fut>(tasks: usize, iters: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let op = Arc::new(op);
    let start = Instant::now();
    runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let op = op.clone();
                tokio::spawn(async move {
                    for i in 0..iters {
                        op(i).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
    });
    start.elapsed().as_nanos() as f64 / (tasks as u64 * iters) as f64
}

fn contended_async(emit: &dyn Fn(Row)) {
    let scope = Scope::process();
    let ours = Arc::new(scope.mutex("bench/contended-async").unwrap());
    let tokio_mutex = Arc::new(tokio::sync::Mutex::new(0u64));
    let async_mutex = Arc::new(async_lock::Mutex::new(0u64));
    for tasks in [2usize, 8] {
        let iters = CONTENDED_ASYNC_OPS / tasks as u64;
        let case = format!("mutex/contended-async/{tasks}-tasks");
        let lock_ours = || {
            let m = ours.clone();
            tasks_per_op(tasks, iters, move |_| {
                let m = m.clone();
                async move {
                    let _g = m.lock().await.unwrap();
                    held_section().await;
                }
            })
        };
        let (o, p) = alternate(lock_ours, || {
            let m = tokio_mutex.clone();
            tasks_per_op(tasks, iters, move |_| {
                let m = m.clone();
                async move {
                    let _g = m.lock().await;
                    held_section().await;
                }
            })
        });
        emit(row(&case, o, "tokio::sync::Mutex", p));
        let (o, p) = alternate(lock_ours, || {
            let m = async_mutex.clone();
            tasks_per_op(tasks, iters, move |_| {
                let m = m.clone();
                async move {
                    let _g = m.lock().await;
                    held_section().await;
                }
            })
        });
        emit(row(&case, o, "async_lock::Mutex (unfair)", p));
    }
}

/// One write in 16 operations.
fn read_heavy_async(emit: &dyn Fn(Row)) {
    let scope = Scope::process();
    let ours = Arc::new(scope.rwlock("bench/read-heavy").unwrap());
    let tokio_rw = Arc::new(tokio::sync::RwLock::new(0u64));
    let async_rw = Arc::new(async_lock::RwLock::new(0u64));
    for tasks in [2usize, 8] {
        let iters = CONTENDED_ASYNC_OPS / tasks as u64;
        let case = format!("rwlock/read-heavy-async/{tasks}-tasks");
        let ours_run = || {
            let l = ours.clone();
            tasks_per_op(tasks, iters, move |i| {
                let l = l.clone();
                async move {
                    let _g = if i % 16 == 0 { l.write().await.unwrap() } else { l.read().await.unwrap() };
                    held_section().await;
                }
            })
        };
        let (o, p) = alternate(ours_run, || {
            let l = tokio_rw.clone();
            tasks_per_op(tasks, iters, move |i| {
                let l = l.clone();
                async move {
                    if i % 16 == 0 {
                        let _g = l.write().await;
                        held_section().await;
                    } else {
                        let _g = l.read().await;
                        held_section().await;
                    }
                }
            })
        });
        emit(row(&case, o, "tokio::sync::RwLock", p));
        let (o, p) = alternate(ours_run, || {
            let l = async_rw.clone();
            tasks_per_op(tasks, iters, move |i| {
                let l = l.clone();
                async move {
                    if i % 16 == 0 {
                        let _g = l.write().await;
                        held_section().await;
                    } else {
                        let _g = l.read().await;
                        held_section().await;
                    }
                }
            })
        });
        emit(row(&case, o, "async_lock::RwLock", p));
    }
}

fn semaphore(emit: &dyn Fn(Row)) {
    let scope = Scope::process();
    let ours = Arc::new(scope.semaphore("bench/semaphore", 2).unwrap());
    let tokio_sem = Arc::new(tokio::sync::Semaphore::new(2));
    let async_sem = Arc::new(async_lock::Semaphore::new(2));
    let (o, p) = alternate(
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(ours.acquire(1)).unwrap())),
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(tokio_sem.acquire()).unwrap())),
    );
    emit(row("semaphore/uncontended/async-resolved", o, "tokio::sync::Semaphore", p));
    let (o, p) = alternate(
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(ours.acquire(1)).unwrap())),
        || per_op(UNCONTENDED_ITERS, || drop(now_or_never(async_sem.acquire()))),
    );
    emit(row("semaphore/uncontended/async-resolved", o, "async_lock::Semaphore", p));
    let tasks = 8usize;
    let iters = CONTENDED_ASYNC_OPS / tasks as u64;
    let (o, p) = alternate(
        || {
            let s = ours.clone();
            tasks_per_op(tasks, iters, move |_| {
                let s = s.clone();
                async move {
                    let _g = s.acquire(1).await.unwrap();
                    held_section().await;
                }
            })
        },
        || {
            let s = tokio_sem.clone();
            tasks_per_op(tasks, iters, move |_| {
                let s = s.clone();
                async move {
                    let _g = s.acquire().await.unwrap();
                    held_section().await;
                }
            })
        },
    );
    emit(row("semaphore/contended-async/8-tasks-2-permits", o, "tokio::sync::Semaphore", p));
}
