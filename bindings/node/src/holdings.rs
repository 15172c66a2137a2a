//! What each JavaScript environment (the main thread's, or a Worker's) holds, so that a
//! Worker that ends gives everything back, as a process that ends does.
//!
//! A scope, lock or guard given to JavaScript lives in an [`Owned`] slot, and its
//! environment's [`Holdings`] keep a weak reference to it. When the environment ends (the
//! finalizer of its instance data), every slot still alive is emptied, which closes the
//! scope or gives the grant back, and the waits under way are aborted, which withdraws
//! their requests. Node.js finalizes the objects of a Worker that ends, but not all of
//! them: an answer on its way when the Worker ends is never delivered, and napi-rs then
//! forgets the value (review finding: a grant, or a scope with its session, leaked).

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use napi::bindgen_prelude::*;
use tokio::task::AbortHandle;

/// A value JavaScript owns, until its environment ends.
pub(crate) type Owned<T> = Mutex<Option<T>>;

/// Empties an [`Owned`] slot, whatever it holds.
trait Reclaim: Send + Sync {
    fn reclaim(&self);
}

impl<T: Send> Reclaim for Owned<T> {
    fn reclaim(&self) {
        let taken = self.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(taken);
    }
}

#[derive(Default)]
struct Held {
    /// The environment has ended: anything adopted is emptied at once.
    ended: bool,
    /// The slots given to JavaScript (dead ones pruned now and then).
    owned: Vec<Weak<dyn Reclaim>>,
    /// The waits started (finished ones pruned now and then).
    waits: Vec<AbortHandle>,
}

/// What one environment holds. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Holdings(Arc<Mutex<Held>>);

/// Keeps a list short: drops the entries `dead` says are gone, each time it reaches the
/// next power of two (at least 64), so that it holds at most about twice the live ones.
fn prune<T>(list: &mut Vec<T>, dead: impl Fn(&T) -> bool) {
    if list.len() >= 64 && list.len().is_power_of_two() {
        list.retain(|entry| !dead(entry));
    }
}

impl Holdings {
    /// The holdings of `env`, made on first use.
    pub(crate) fn of(env: &Env) -> Result<Holdings> {
        if let Some(holdings) = env.get_instance_data::<Holdings>()? {
            return Ok(holdings.clone());
        }
        let holdings = Holdings(Arc::default());
        env.set_instance_data(holdings.clone(), (), |ended| ended.value.end())?;
        Ok(holdings)
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The environment has ended: aborts its waits, empties its slots.
    fn end(&self) {
        let (owned, waits) = {
            let mut held = self.lock();
            held.ended = true;
            (std::mem::take(&mut held.owned), std::mem::take(&mut held.waits))
        };
        waits.iter().for_each(AbortHandle::abort);
        owned.iter().filter_map(Weak::upgrade).for_each(|slot| slot.reclaim());
    }

    /// Whether the environment has ended.
    pub(crate) fn ended(&self) -> bool {
        self.lock().ended
    }

    /// `value` in a slot of this environment's, emptied when it ends (at once if it has).
    pub(crate) fn adopt<T: Send + 'static>(&self, value: T) -> Arc<Owned<T>> {
        let slot = Arc::new(Mutex::new(Some(value)));
        let mut held = self.lock();
        if held.ended {
            drop(held);
            slot.reclaim();
        } else {
            prune(&mut held.owned, |owned| owned.strong_count() == 0);
            let weak: Weak<dyn Reclaim> = Arc::downgrade(&slot) as Weak<Owned<T>>;
            held.owned.push(weak);
        }
        slot
    }

    /// Records a wait started for this environment, aborted when it ends.
    pub(crate) fn started(&self, wait: AbortHandle) {
        let mut held = self.lock();
        if held.ended {
            return wait.abort();
        }
        prune(&mut held.waits, AbortHandle::is_finished);
        held.waits.push(wait);
    }
}
