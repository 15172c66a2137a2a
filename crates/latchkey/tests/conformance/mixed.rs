//! Conformance: blocking and async together.

use super::*;

pub(super) fn blocked_thread_is_woken_by_an_async_release(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("mixed")?;
    let guard = rt.block_on(mutex.lock())?;
    let first = guard.fencing_token();
    std::thread::scope(|s| -> Result<()> {
        let blocked = s.spawn(|| scope.lock_blocking("mixed").map(|guard| guard.fencing_token()));
        wait_until("the thread waits", || waiters(&scope, "mixed") == 1);
        rt.block_on(async move {
            tokio::task::yield_now().await;
            guard.release()
        })?;
        let theirs = blocked.join().expect("the blocked thread")?;
        assert!(theirs > first);
        Ok(())
    })?;
    assert!(!mutex.is_locked()?);
    Ok(())
}

pub(super) fn async_waiter_is_woken_by_a_blocking_release(new_scope: NewScope) -> Result<()> {
    let scope = new_scope();
    let rt = runtime();
    let mutex = scope.mutex("mixed")?;
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| -> Result<()> {
        let mutex = &mutex;
        let holder = s.spawn(move || -> Result<()> {
            let guard = mutex.lock_blocking()?;
            held_tx.send(guard.fencing_token()).unwrap();
            release_rx.recv().unwrap();
            guard.release()
        });
        let theirs = held_rx.recv().unwrap();
        let ours = rt.block_on(async {
            let mut lock = std::pin::pin!(scope.lock("mixed"));
            let first_poll =
                std::future::poll_fn(|cx| std::task::Poll::Ready(lock.as_mut().poll(cx).is_pending())).await;
            assert!(first_poll, "the lock is held by the thread");
            release_tx.send(()).unwrap();
            lock.await
        })?;
        holder.join().expect("the holder thread")?;
        assert!(ours.fencing_token() > theirs);
        Ok(())
    })
}
