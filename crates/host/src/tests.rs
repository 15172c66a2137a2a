//! Unit tests of the layers below the scope, on a real namespace in a fresh directory.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use crate::namespace::Namespace;
use crate::protocol::{lock_word, try_lock_word};
use crate::sync::atomic::Ordering;

/// A namespace in a fresh directory, removed afterwards.
pub(crate) struct Fresh {
    pub ns: Namespace,
    dir: PathBuf,
}

impl Fresh {
    pub(crate) fn new() -> Fresh {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("latchkey-unit-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ns = Namespace::open(Some(&dir)).expect("open a fresh namespace");
        Fresh { ns, dir }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_try_lock_that_fails_leaves_the_owner_holding_the_lock() {
    let fresh = Fresh::new();
    let shm = &fresh.ns.shm;
    let word = &shm.header().grow_lock;
    let held = lock_word(shm, word, || Ok(())).unwrap();
    assert!(try_lock_word(shm, word).is_none(), "the lock is held");
    assert_ne!(word.load(Ordering::Acquire), 0, "a failed try must not unlock the owner's lock");
    drop(held);
    assert_eq!(word.load(Ordering::Acquire), 0);
    assert!(try_lock_word(shm, word).is_some());
}
