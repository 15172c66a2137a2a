//! Bad input: invalid names at every entry point, malformed scope URLs, impossible
//! capacities, releases of what is not held, and edge timeouts.

use std::sync::Arc;
use std::time::Duration;

use latchkey::{ErrorKind, Result, Scope, MAX_SEMAPHORE_CAPACITY};
use latchkey_model::{Lease, RawScope};
use latchkey_process::ProcessScope;

use crate::support::{capacity_checked_on_open, expect_err, runtime, wait_until, waiters, NewScope};

macro_rules! bad_input_suite {
    ($scope:ident, $factory:path) => {
        mod $scope {
            scope_tests!($factory;
                invalid_names_are_rejected_by_every_entry_point,
                semaphore_of_zero_or_too_many_permits_is_rejected,
                by_name_locks_on_a_name_open_with_another_capacity_are_a_mismatch,
                zero_timeouts_never_wait,
                huge_timeouts_behave_like_no_timeout,
            );
        }
    };
}

for_each_scope!(bad_input_suite);

const SHORT: Duration = Duration::from_millis(20);

/// One name of every kind the rules reject.
fn invalid_names() -> Vec<String> {
    vec![
        String::new(),
        "x".repeat(256),
        "𝄞".repeat(64), // 4 bytes each: 256 bytes in 64 characters
        "nul\0byte".to_string(),
        "tab\there".to_string(),
        "new\nline".to_string(),
        "del\u{7f}".to_string(),
        "next\u{85}line".to_string(),
    ]
}

fn invalid_names_are_rejected_by_every_entry_point(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    for bad in invalid_names() {
        let bad = bad.as_str();
        let attempts: [(&str, Result<()>); 14] = [
            ("mutex", scope.mutex(bad).map(drop)),
            ("rwlock", scope.rwlock(bad).map(drop)),
            ("semaphore", scope.semaphore(bad, 2).map(drop)),
            ("interval_lock", scope.interval_lock(bad, SHORT).map(drop)),
            ("lock_blocking", scope.lock_blocking(bad).map(drop)),
            ("lock_blocking_timeout", scope.lock_blocking_timeout(bad, SHORT).map(drop)),
            ("try_lock", scope.try_lock(bad).map(drop)),
            ("lock", rt.block_on(scope.lock(bad)).map(drop)),
            ("lock_timeout", rt.block_on(scope.lock_timeout(bad, SHORT)).map(drop)),
            ("inspect", scope.inspect(bad).map(drop)),
            ("is_locked", scope.is_locked(bad).map(drop)),
            ("guard", scope.guard(bad, || panic!("ran the closure under an invalid name"))),
            ("guard_async", rt.block_on(scope.guard_async(bad, || async { panic!("ran the future") }))),
            ("guard (value)", scope.guard(bad, || 7).map(drop)),
        ];
        for (entry, result) in attempts {
            let err = match result {
                Ok(()) => panic!("{entry} accepted the invalid name {bad:?}"),
                Err(err) => err,
            };
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{entry}({bad:?}): {err}");
            assert_eq!(err.code(), 8405);
            assert_eq!(err.name(), Some(bad), "{entry}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{entry}: {err} does not quote the name");
            assert!(!err.is_retryable());
        }
    }
    assert!(scope.list()?.is_empty(), "an invalid name left state behind");
    Ok(())
}

#[test]
fn valid_names_at_the_limits_are_accepted() -> Result<()> {
    let scope = Scope::isolated();
    for ok in ["x".repeat(255), "𝄞".repeat(63), "a/b/c".to_string(), "日本語".to_string(), " spaced ".to_string()]
    {
        let guard = scope.lock_blocking(&ok)?;
        assert_eq!(guard.name().as_str(), ok);
    }
    Ok(())
}

#[test]
fn malformed_scope_urls_are_invalid_scope() {
    for bad in [
        "",
        "process",
        "proc:",
        "process:x",
        " process:",
        "host:relative",
        "etcd:",
        "etcd://",
        "redis:///0",
        "http://x",
    ] {
        let err = expect_err(Scope::open(bad), ErrorKind::InvalidScope);
        assert_eq!(err.code(), 8412);
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err} does not quote the URL");
        assert!(!err.is_retryable());
    }
}

#[test]
fn known_scope_urls_open_or_report_unsupported() -> Result<()> {
    assert_eq!(Scope::open("process:")?.url(), "process:");
    assert_eq!(Scope::open("process://")?.url(), "process:");
    assert_eq!(Scope::open("host:")?.url(), "host:");
    let dir = crate::support::TempDir(crate::support::fresh_dir("latchkey-url-test"));
    let url = format!("host:{}", dir.display());
    assert_eq!(Scope::open(&url)?.url(), url);
    // A Redis server that is not there.
    let refused = "redis://u:secret@127.0.0.1:1/0";
    let err = expect_err(Scope::open(refused), ErrorKind::Unavailable);
    assert_eq!(err.scope(), Some("redis://u:***@127.0.0.1:1/0"));
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    // An etcd that does not answer, and a malformed etcd URL.
    let refused = "etcd://127.0.0.1:1/locks";
    let err = expect_err(Scope::open(refused), ErrorKind::Unavailable);
    assert_eq!(err.scope(), Some(refused));
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = expect_err(Scope::open("etcd://db:port/x"), ErrorKind::InvalidScope);
    assert!(err.to_string().contains("port"), "{err}");
    // A PostgreSQL server that is not there, and a malformed PostgreSQL URL.
    let refused = "postgres://u:secret@127.0.0.1:1/app?connect_timeout=2";
    let err = expect_err(Scope::open(refused), ErrorKind::Unavailable);
    assert_eq!(err.scope(), Some("postgres://u:***@127.0.0.1:1/app?connect_timeout=2"));
    assert!(err.to_string().contains("127.0.0.1:1/app"), "{err}");
    let err = expect_err(Scope::open("postgres://h/db?ttl=forever"), ErrorKind::InvalidScope);
    assert!(err.to_string().contains("ttl"), "{err}");
    Ok(())
}

fn semaphore_of_zero_or_too_many_permits_is_rejected(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    for permits in [0, MAX_SEMAPHORE_CAPACITY + 1, u32::MAX] {
        let err = expect_err(scope.semaphore("sem", permits), ErrorKind::Unsupported);
        assert_eq!(err.name(), Some("sem"));
        assert!(err.to_string().contains(&permits.to_string()), "{err}");
    }
    assert_eq!(scope.inspect("sem")?.capacity, 0, "a rejected semaphore is not created");
    let largest = scope.semaphore("sem", MAX_SEMAPHORE_CAPACITY)?;
    assert_eq!(largest.acquire_blocking(MAX_SEMAPHORE_CAPACITY)?.permits(), MAX_SEMAPHORE_CAPACITY);
    Ok(())
}

fn by_name_locks_on_a_name_open_with_another_capacity_are_a_mismatch(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let semaphore = scope.semaphore("sem", 3)?;
    // A scope over a network checks capacities against the requests on the server.
    let held = if capacity_checked_on_open(&scope) { None } else { Some(semaphore.acquire_blocking(1)?) };
    let attempts: [Result<()>; 5] = [
        scope.lock_blocking("sem").map(drop),
        scope.lock_blocking_timeout("sem", SHORT).map(drop),
        scope.try_lock("sem").map(drop),
        rt.block_on(scope.lock("sem")).map(drop),
        scope.guard("sem", || ()),
    ];
    for result in attempts {
        let err = expect_err(result, ErrorKind::CapacityMismatch);
        assert_eq!(err.code(), 8410);
        assert_eq!(err.name(), Some("sem"));
    }
    drop(held);
    assert_eq!(semaphore.available()?, 3);

    // Held by name with no handle open: still in use, so still a mismatch.
    let held = scope.lock_blocking("held")?;
    expect_err(scope.semaphore("held", 2).and_then(|s| s.try_acquire(1).map(drop)), ErrorKind::CapacityMismatch);
    expect_err(scope.rwlock("held").and_then(|rw| rw.try_read().map(drop)), ErrorKind::CapacityMismatch);
    assert!(scope.try_lock("held")?.is_none(), "the failed opens did not disturb the holder");
    drop(held);
    Ok(())
}

fn zero_timeouts_never_wait(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let semaphore = scope.semaphore("sem", 2)?;
    let rwlock = scope.rwlock("rw")?;
    drop(semaphore.acquire_blocking_timeout(2, Duration::ZERO)?);
    drop(rwlock.write_blocking_timeout(Duration::ZERO)?);
    drop(rt.block_on(rwlock.read_timeout(Duration::ZERO))?);

    let one = semaphore.acquire_blocking(1)?;
    expect_err(semaphore.acquire_blocking_timeout(2, Duration::ZERO), ErrorKind::Timeout);
    expect_err(rt.block_on(semaphore.acquire_timeout(2, Duration::ZERO)), ErrorKind::Timeout);
    let reader = rwlock.read_blocking()?;
    expect_err(rwlock.write_blocking_timeout(Duration::ZERO), ErrorKind::Timeout);
    expect_err(rt.block_on(rwlock.write_timeout(Duration::ZERO)), ErrorKind::Timeout);
    assert_eq!((waiters(&scope, "sem"), waiters(&scope, "rw")), (0, 0));
    assert!(rwlock.try_read()?.is_some(), "no writer was left waiting");
    drop((one, reader));
    Ok(())
}

fn huge_timeouts_behave_like_no_timeout(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("m")?;
    // `Duration::MAX` is a common way to say "no deadline"; it must not overflow.
    drop(rt.block_on(mutex.lock_timeout(Duration::MAX))?);
    drop(rt.block_on(scope.lock_timeout("m", Duration::MAX))?);
    drop(mutex.lock_blocking_timeout(Duration::MAX)?);
    drop(scope.lock_blocking_timeout("m", Duration::MAX)?);

    let held = mutex.lock_blocking()?;
    std::thread::scope(|s| -> Result<()> {
        let waiter = s.spawn(|| mutex.lock_blocking_timeout(Duration::MAX).map(drop));
        wait_until("the thread waits", || waiter.is_finished() || waiters(&scope, "m") == 1);
        drop(held);
        waiter.join().expect("the waiting thread")
    })
}

// ---------------------------------------------------------------- the scope contract

/// The process scope through the scope contract, as a generic caller sees it.
fn raw_scope() -> Arc<dyn RawScope> {
    Arc::new(ProcessScope::new())
}

#[test]
fn releasing_a_lease_twice_is_not_held() -> Result<()> {
    let raw = raw_scope();
    let lock = raw.open("x", 1)?;
    let lease = lock.try_acquire(1)?.expect("free");
    let token = lease.token();
    lock.release(lease)?;
    let err = expect_err(lock.release(Lease::new(1, token, 0)), ErrorKind::NotHeld);
    assert_eq!(err.code(), 8404);
    assert_eq!(err.name(), Some("x"));

    // The lock still admits one holder at a time.
    let lease = lock.try_acquire(1)?.expect("free");
    assert!(lock.try_acquire(1)?.is_none(), "the double release let a second holder in");
    assert!(lease.token() > token);
    lock.release(lease)?;
    assert_eq!(lock.inspect()?.in_use, 0);
    Ok(())
}

#[test]
fn releasing_a_stale_lease_while_another_holds_is_not_held() -> Result<()> {
    let raw = raw_scope();
    let lock = raw.open("x", 1)?;
    let first = lock.try_acquire(1)?.expect("free");
    let stale = Lease::new(first.permits(), first.token(), first.ticket());
    lock.release(first)?;
    let second = lock.try_acquire(1)?.expect("free again");

    let err = expect_err(lock.release(stale), ErrorKind::NotHeld);
    assert_eq!(err.name(), Some("x"));
    assert_eq!(lock.inspect()?.in_use, 1, "the holder of the second lease still holds");
    assert!(lock.try_acquire(1)?.is_none(), "the stale release let a second holder in");
    lock.release(second)?;
    assert_eq!(lock.inspect()?.in_use, 0);
    Ok(())
}

#[test]
fn releasing_a_lease_of_more_permits_than_held_is_not_held() -> Result<()> {
    let raw = raw_scope();
    let lock = raw.open("sem", 3)?;
    let one = lock.try_acquire(1)?.expect("free");
    expect_err(lock.release(Lease::new(3, one.token(), one.ticket())), ErrorKind::NotHeld);
    expect_err(lock.release(Lease::new(7, one.token(), one.ticket())), ErrorKind::NotHeld);
    assert_eq!(lock.inspect()?.in_use, 1);
    lock.release(one)?;
    assert_eq!(lock.inspect()?.in_use, 0);
    Ok(())
}
