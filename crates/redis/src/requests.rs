//! What a session knows of its requests on each name: what the keep-alive renews and checks,
//! and since when each name's mark is sure to live.
//!
//! A request number moves through three sets of its name:
//! - `changing` while a script that may queue, move or delete it is under way (there or not
//!   on the server);
//! - `queued` once a script answered that it is queued: it must be there at every renewal,
//!   or its hold was lost (its session lapsed there, or its keys were deleted);
//! - gone, once a delete answered. A delete that did not find it makes it a *ghost*: a
//!   script still under way (its answer lost) may queue it later, and every renewal of the
//!   name drops it if it is there. Numbers are never used twice, so dropping one is safe.
//!
//! The keep-alive renews a name while it has a request queued or changing; the session's
//! validity never passes the time its last renewal of a queued name was sent, plus the TTL.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crate::keys::NameKeys;

/// Ghosts kept per name, the most recent: a script whose answer was lost runs soon or never,
/// and 64 later failures on the same name are long after it.
const GHOSTS: usize = 64;

/// The requests of one session, by name (queue key).
#[derive(Default)]
pub(crate) struct Requests {
    names: HashMap<String, Entry>,
    /// Ghosts by name, kept for the session's life (one per delete that found nothing).
    ghosts: HashMap<String, BTreeSet<u64>>,
}

struct Entry {
    keys: NameKeys,
    queued: BTreeSet<u64>,
    changing: BTreeSet<u64>,
    /// When the last script that renewed the session's mark here was sent (none since a
    /// renewal found no mark).
    renewed: Option<Instant>,
}

/// One name's renewal: what must be there, and the ghosts to drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Renewal {
    pub keys: NameKeys,
    pub queued: Vec<u64>,
    pub ghosts: Vec<u64>,
}

impl Requests {
    fn entry(&mut self, keys: &NameKeys) -> &mut Entry {
        self.names.entry(keys.queue.clone()).or_insert_with(|| Entry {
            keys: keys.clone(),
            queued: BTreeSet::new(),
            changing: BTreeSet::new(),
            renewed: None,
        })
    }

    /// Request `n` may be queued by a script about to be sent.
    pub fn adding(&mut self, keys: &NameKeys, n: u64) {
        self.entry(keys).changing.insert(n);
    }

    /// A script sent at `sent` (which renewed the session's mark) answered that request `n`
    /// is queued; `None` for a script that renews nothing (a cede's move). Answers since
    /// when the name's mark is sure to live: the session is valid no longer than that plus
    /// the TTL.
    pub fn added(&mut self, keys: &NameKeys, n: u64, sent: Option<Instant>) -> Option<Instant> {
        let entry = self.entry(keys);
        entry.changing.remove(&n);
        if let Some(sent) = sent {
            entry.renewed = Some(entry.renewed.map_or(sent, |renewed| renewed.max(sent)));
        }
        entry.queued.insert(n);
        entry.renewed
    }

    /// Request `n` is about to be deleted or moved by a script.
    pub fn removing(&mut self, keys: &NameKeys, n: u64) {
        let entry = self.entry(keys);
        entry.queued.remove(&n);
        entry.changing.insert(n);
    }

    /// A script answered that request `n` stays queued (a cede that kept it).
    pub fn kept(&mut self, keys: &NameKeys, n: u64) {
        self.added(keys, n, None);
    }

    /// A delete answered for request `n`: `found` it, or not (then it is a ghost).
    pub fn removed(&mut self, keys: &NameKeys, n: u64, found: bool) {
        if !found {
            let ghosts = self.ghosts.entry(keys.queue.clone()).or_default();
            ghosts.insert(n);
            if ghosts.len() > GHOSTS {
                ghosts.pop_first();
            }
        }
        let Some(entry) = self.names.get_mut(&keys.queue) else { return };
        entry.queued.remove(&n);
        entry.changing.remove(&n);
        if entry.queued.is_empty() && entry.changing.is_empty() {
            self.names.remove(&keys.queue);
        }
    }

    /// Whether request `n` is still queued as far as the session knows.
    pub fn is_queued(&self, queue: &str, n: u64) -> bool {
        self.names.get(queue).is_some_and(|entry| entry.queued.contains(&n))
    }

    /// The renewals of one keep-alive round.
    pub fn renewals(&self) -> Vec<Renewal> {
        self.names
            .values()
            .map(|entry| Renewal {
                keys: entry.keys.clone(),
                queued: entry.queued.iter().copied().collect(),
                ghosts: self.ghosts.get(&entry.keys.queue).map(|g| g.iter().copied().collect()).unwrap_or_default(),
            })
            .collect()
    }

    /// A renewal of the name of `queue` sent at `sent` answered that the session lives there.
    pub fn renewed(&mut self, queue: &str, sent: Instant) {
        if let Some(entry) = self.names.get_mut(queue) {
            entry.renewed = Some(entry.renewed.map_or(sent, |renewed| renewed.max(sent)));
        }
    }

    /// A renewal of the name of `queue` found no mark of the session there.
    pub fn lapsed(&mut self, queue: &str) {
        if let Some(entry) = self.names.get_mut(queue) {
            entry.renewed = None;
        }
    }

    /// Since when the session is sure to live on every name it has requests queued on,
    /// after a round sent at `sent` that every name answered.
    pub fn sure_since(&self, sent: Instant) -> Instant {
        self.names
            .values()
            .filter(|entry| !entry.queued.is_empty())
            .filter_map(|entry| entry.renewed)
            .fold(sent, Instant::min)
    }

    /// Every request queued or changing, by name: what to give back once the session is lost.
    pub fn all(&self) -> Vec<(NameKeys, Vec<u64>)> {
        self.names
            .values()
            .map(|entry| (entry.keys.clone(), entry.queued.iter().chain(&entry.changing).copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn keys(name: &str) -> NameKeys {
        NameKeys::new("p", name)
    }

    #[test]
    fn a_failed_enqueue_withdrawn_leaves_the_held_request_renewed() {
        // Review finding: a count per name went to zero when a second request on the name,
        // whose enqueue failed, was withdrawn; the name's hold was no longer renewed.
        let (mut requests, now) = (Requests::default(), Instant::now());
        requests.adding(&keys("a"), 1);
        requests.added(&keys("a"), 1, Some(now));
        requests.adding(&keys("a"), 2);
        requests.removing(&keys("a"), 2);
        requests.removed(&keys("a"), 2, true);
        let renewals = requests.renewals();
        assert_eq!(renewals.len(), 1);
        assert_eq!(renewals[0].queued, vec![1]);
    }

    #[test]
    fn a_delete_that_found_nothing_leaves_a_ghost_every_renewal_drops() {
        let (mut requests, now) = (Requests::default(), Instant::now());
        requests.adding(&keys("a"), 1);
        requests.added(&keys("a"), 1, Some(now));
        requests.adding(&keys("a"), 2);
        requests.removed(&keys("a"), 2, false);
        assert_eq!(requests.renewals()[0].ghosts, vec![2]);
        requests.removing(&keys("a"), 1);
        requests.removed(&keys("a"), 1, true);
        assert!(requests.renewals().is_empty(), "a name with nothing queued is not renewed");
        requests.adding(&keys("a"), 3);
        assert_eq!(requests.renewals()[0].ghosts, vec![2], "ghosts are dropped for the session's life");
    }

    #[test]
    fn a_request_confirmed_late_limits_the_validity_to_its_send() {
        // Review finding: a name whose enqueue was sent before a round but answered after it
        // was counted as renewed by that round.
        let mut requests = Requests::default();
        let enqueued = Instant::now();
        let round = enqueued + Duration::from_secs(5);
        requests.adding(&keys("a"), 1);
        let renewals = requests.renewals();
        assert_eq!(renewals[0].queued, Vec::<u64>::new(), "not yet queued: not checked");
        assert_eq!(requests.added(&keys("a"), 1, Some(enqueued)), Some(enqueued));
        assert_eq!(requests.sure_since(round), enqueued);
        requests.renewed(&keys("a").queue, round);
        assert_eq!(requests.sure_since(round), round);
    }

    #[test]
    fn a_round_that_renewed_a_name_before_its_request_was_confirmed_counts() {
        // Review finding: a round that renewed a name whose only request was still being
        // queued was ignored, and the request's late answer capped the validity at its own
        // send: a false loss of the whole session after a slow answer.
        let mut requests = Requests::default();
        let enqueued = Instant::now();
        let round = enqueued + Duration::from_secs(5);
        requests.adding(&keys("a"), 1);
        requests.renewed(&keys("a").queue, round);
        assert_eq!(requests.added(&keys("a"), 1, Some(enqueued)), Some(round));
        // A round that found no mark forgets what came before it.
        requests.removing(&keys("a"), 1);
        requests.lapsed(&keys("a").queue);
        assert_eq!(requests.added(&keys("a"), 1, Some(enqueued)), Some(enqueued));
    }

    #[test]
    fn ghosts_are_bounded() {
        let mut requests = Requests::default();
        for n in 0..(GHOSTS as u64 + 10) {
            requests.removed(&keys("a"), n, false);
        }
        requests.adding(&keys("a"), 1000);
        let ghosts = &requests.renewals()[0].ghosts;
        assert_eq!(ghosts.len(), GHOSTS);
        assert_eq!(ghosts[0], 10, "the oldest go first");
    }

    #[test]
    fn a_request_being_released_is_not_checked() {
        let (mut requests, now) = (Requests::default(), Instant::now());
        requests.adding(&keys("a"), 1);
        requests.added(&keys("a"), 1, Some(now));
        assert!(requests.is_queued(&keys("a").queue, 1));
        requests.removing(&keys("a"), 1);
        assert!(!requests.is_queued(&keys("a").queue, 1));
        assert_eq!(requests.all(), vec![(keys("a"), vec![1])]);
        requests.kept(&keys("a"), 1);
        assert!(requests.is_queued(&keys("a").queue, 1));
    }
}
