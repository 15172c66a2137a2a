//! What a session over a network knows of its own life without asking the server: until
//! when it is valid (each answered renewal extends that to when the renewal was *sent*
//! plus what the server grants, never later than the server's own end of it), and whether
//! it is lost, for good.

use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use latchkey_model::sleep_until;

/// A session's validity, and its loss.
#[derive(Debug)]
pub struct Life {
    state: Mutex<State>,
    /// Sends `true` once the session is lost.
    lost_tx: watch::Sender<bool>,
}

#[derive(Debug)]
struct State {
    valid_until: Instant,
    lost: bool,
}

impl Life {
    /// A life valid until `valid_until`.
    pub fn new(valid_until: Instant) -> Life {
        Life { state: Mutex::new(State { valid_until, lost: false }), lost_tx: watch::Sender::new(false) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session is lost: cheap, and true from the instant its validity ends.
    pub fn is_lost(&self) -> bool {
        let mut state = self.state();
        if !state.lost && Instant::now() >= state.valid_until {
            state.lost = true;
            drop(state);
            self.lost_tx.send_replace(true);
            return true;
        }
        state.lost
    }

    /// Until when the session is valid without another renewal.
    pub fn valid_until(&self) -> Instant {
        self.state().valid_until
    }

    /// Records a renewal that makes the session valid until `until`. One that comes after
    /// the validity ended does not revive a lost session.
    pub fn extend_to(&self, until: Instant) {
        let mut state = self.state();
        if !state.lost && Instant::now() < state.valid_until {
            state.valid_until = state.valid_until.max(until);
        }
    }

    /// Records that the session is sure to live no later than `until` (a request whose
    /// server-side renewal was sent earlier than the last renewal counted): shortens the
    /// validity if it ends later.
    pub fn cap(&self, until: Instant) {
        let mut state = self.state();
        if until < state.valid_until {
            state.valid_until = until;
            drop(state);
            // Wake whoever sleeps until the old end (`lost`).
            self.lost_tx.send_modify(|_| {});
        }
    }

    /// Marks the session lost.
    pub fn mark_lost(&self) {
        self.state().lost = true;
        self.lost_tx.send_replace(true);
    }

    /// Completes once the session is lost; on any executor.
    pub async fn lost(&self) {
        let mut changed = self.lost_tx.subscribe();
        loop {
            if self.is_lost() {
                return;
            }
            let valid_until = self.valid_until();
            tokio::select! {
                _ = changed.changed() => {}
                () = sleep_until(valid_until) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_life_is_lost_from_the_end_of_its_validity_and_stays_lost() {
        let life = Life::new(Instant::now() + Duration::from_millis(30));
        assert!(!life.is_lost());
        latchkey_model::block_on_until(life.lost(), None).unwrap();
        assert!(life.is_lost());
        life.extend_to(Instant::now() + Duration::from_secs(60));
        assert!(life.is_lost(), "a late renewal revived a lost session");
    }

    #[test]
    fn a_renewal_extends_the_validity_and_never_shortens_it() {
        let start = Instant::now();
        let life = Life::new(start + Duration::from_secs(2));
        life.extend_to(start + Duration::from_secs(3));
        assert_eq!(life.valid_until(), start + Duration::from_secs(3));
        life.extend_to(start + Duration::from_secs(1));
        assert_eq!(life.valid_until(), start + Duration::from_secs(3));
        life.mark_lost();
        assert!(life.is_lost());
    }

    #[test]
    fn a_cap_shortens_the_validity_and_wakes_whoever_waits_for_the_loss() {
        let life = std::sync::Arc::new(Life::new(Instant::now() + Duration::from_secs(60)));
        let waiter = life.clone();
        let lost = std::thread::spawn(move || latchkey_model::block_on_until(waiter.lost(), None).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        life.cap(Instant::now() + Duration::from_millis(20));
        lost.join().unwrap();
        assert!(life.is_lost());
    }
}
