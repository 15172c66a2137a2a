//! Conformance: `Lock`, every primitive as permits of a capacity, with guards that borrow
//! nothing (what the bindings for other languages hold).

use super::*;

pub(super) fn owned_guards_outlive_their_lock_and_keep_the_model(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    // A semaphore of 3: guards kept after their `Lock` is gone still hold.
    let (two, one) = {
        let lock = scope.open_lock("owned", 3)?;
        assert_eq!((lock.name().as_str(), lock.capacity()), ("owned", 3));
        (lock.acquire_blocking(2, None)?, lock.try_acquire(1)?.expect("3 of 3 fit"))
    };
    let lock = scope.open_lock("owned", 3)?;
    assert!(lock.try_acquire(1)?.is_none(), "3 of 3 held by guards of a dropped lock");
    assert_eq!(lock.inspect()?.in_use, 3);
    let err = lock.acquire_blocking(1, Some(Duration::from_millis(20))).map(drop).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    two.release()?;
    let again = runtime().block_on(lock.acquire(2, Some(Duration::from_secs(30))))?;
    assert!(again.fencing_token() > one.fencing_token());
    drop((again, one));
    // Reads and writes: 1 and all of RWLOCK_CAPACITY.
    let rw = scope.open_lock("owned-rw", RWLOCK_CAPACITY)?;
    let (read1, read2) = (rw.acquire_blocking(1, None)?, rw.try_acquire(1)?.expect("readers share"));
    assert!(rw.try_acquire(RWLOCK_CAPACITY)?.is_none(), "a writer waits for the readers");
    drop((read1, read2));
    let write = rw.try_acquire(RWLOCK_CAPACITY)?.expect("free for a writer");
    assert!(rw.try_acquire(1)?.is_none(), "a reader waits for the writer");
    // A guard cedes with nobody waiting: kept, with a new token.
    let before = write.fencing_token();
    let kept = write.cede_blocking()?;
    assert!(kept.fencing_token() >= before);
    kept.release()?;
    Ok(())
}
