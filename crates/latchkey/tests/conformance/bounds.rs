//! Conformance: auto traits.

use super::*;

pub(super) fn handles_guards_and_futures_are_send(new_scope: NewScope) -> Result<()> {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Scope>();
    send_sync::<Mutex>();
    send_sync::<RwLock>();
    send_sync::<Semaphore>();
    send_sync::<IntervalLock>();
    send_sync::<Guard<'static>>();
    send_sync::<IntervalGuard<'static>>();
    send_sync::<latchkey::Error>();

    let scope = new_scope();
    let (mutex, rwlock) = (scope.mutex("m")?, scope.rwlock("rw")?);
    let (semaphore, interval) = (scope.semaphore("sem", 2)?, scope.interval_lock("i", HOUR)?);
    send(&mutex.lock());
    send(&mutex.lock_timeout(SHORT));
    send(&rwlock.read());
    send(&rwlock.write());
    send(&rwlock.write_timeout(SHORT));
    send(&semaphore.acquire(1));
    send(&semaphore.acquire_timeout(1, SHORT));
    send(&interval.lock());
    send(&scope.lock("by/name"));
    send(&scope.lock_timeout("by/name", SHORT));
    send(&scope.guard_async("by/name", || async { 1 }));
    let guard = interval.try_lock()?.expect("free");
    send(&guard.cede());
    assert!(!interval.is_locked()?, "dropping the unpolled cede future gave the lock up");
    Ok(())
}
