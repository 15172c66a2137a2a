//! Conformance: reader-writer lock.

use super::*;

pub(super) fn rwlock_readers_share_and_exclude_writers(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let a = rwlock.read_blocking()?;
    let b = rwlock.try_read()?.expect("readers share");
    assert_eq!(rwlock.readers()?, 2);
    assert!(!rwlock.is_write_locked()?);
    assert!(rwlock.try_write()?.is_none());
    drop((a, b));
    assert_eq!(rwlock.readers()?, 0);
    let writer = rwlock.try_write()?.expect("free");
    assert!(rwlock.is_write_locked()?);
    assert_eq!(rwlock.readers()?, 0);
    assert!(rwlock.try_read()?.is_none());
    assert!(rwlock.try_write()?.is_none());
    drop(writer);
    assert!(!rwlock.is_write_locked()?);
    Ok(())
}

pub(super) fn rwlock_queued_writer_holds_back_new_readers(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let reader = rwlock.read_blocking()?;
    let mut writer = Probe::new(rwlock.write());
    writer.assert_pending();
    queued(&scope, "rw", 1);
    assert_eq!(rwlock.writers_waiting()?, 1);
    assert!(rwlock.try_read()?.is_none(), "a new reader does not pass a waiting writer");
    let mut late_reader = Probe::new(rwlock.read());
    late_reader.assert_pending();
    queued(&scope, "rw", 2);
    assert_eq!(rwlock.readers()?, 1);

    drop(reader);
    writer.wait_for_wakes(1);
    assert_eq!((writer.wakes(), late_reader.wakes()), (1, 0));
    late_reader.assert_pending();
    let write_guard = writer.ready()?;
    assert!(rwlock.is_write_locked()?);
    assert_eq!(rwlock.writers_waiting()?, 0);

    drop(write_guard);
    late_reader.wait_for_wakes(1);
    assert_eq!(late_reader.wakes(), 1);
    let _read_guard = late_reader.ready()?;
    assert_eq!(rwlock.readers()?, 1);
    assert_eq!(waiters(&scope, "rw"), 0);
    Ok(())
}

pub(super) fn rwlock_readers_queued_before_a_writer_are_not_starved(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rwlock = scope.rwlock("rw")?;
    let first_writer = rwlock.write_blocking()?;
    let (mut r1, mut r2) = (Probe::new(rwlock.read()), Probe::new(rwlock.read()));
    let mut w2 = Probe::new(rwlock.write());
    let mut r3 = Probe::new(rwlock.read());
    // Queued in this order: r1, r2, w2, r3.
    r1.assert_pending();
    queued(&scope, "rw", 1);
    r2.assert_pending();
    queued(&scope, "rw", 2);
    w2.assert_pending();
    queued(&scope, "rw", 3);
    r3.assert_pending();
    queued(&scope, "rw", 4);
    assert_eq!(rwlock.writers_waiting()?, 1);
    assert_eq!(waiters(&scope, "rw"), 4);

    drop(first_writer);
    // Both readers ahead of the writer get in together; the writer and the reader behind it wait.
    r1.wait_for_wakes(1);
    r2.wait_for_wakes(1);
    assert_eq!((r1.wakes(), r2.wakes(), w2.wakes(), r3.wakes()), (1, 1, 0, 0));
    let (g1, g2) = (r1.ready()?, r2.ready()?);
    w2.assert_pending();
    r3.assert_pending();
    assert_eq!(rwlock.readers()?, 2);
    assert_eq!(rwlock.writers_waiting()?, 1);

    drop(g1);
    assert_eq!(w2.wakes(), 0, "one reader still holds");
    drop(g2);
    w2.wait_for_wakes(1);
    assert_eq!((w2.wakes(), r3.wakes()), (1, 0));
    r3.assert_pending();
    let writer = w2.ready()?;
    assert!(rwlock.is_write_locked()?);

    drop(writer);
    r3.wait_for_wakes(1);
    assert_eq!(r3.wakes(), 1);
    drop(r3.ready()?);
    assert_eq!(waiters(&scope, "rw"), 0);
    Ok(())
}
