//! A name's queue of requests, as read from etcd, and the one rule that grants them.
//!
//! Each request is a key under the name's queue prefix (see `keys`), made on the
//! session's lease; its value says what it asks for and who asks. The queue's order is
//! the keys' create revisions. A request holds when the permits of all requests created
//! before it, plus its own, fit the capacity: this is a FIFO mutex, a writer-preferring
//! reader-writer lock (a writer asks for all the permits) and a semaphore in one rule,
//! with no barging.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey_model::{describe_capacity, Error, ErrorKind, Holder, Identity, Name, Result, State, Waiter};

/// What a request asks for, and who asks: the value of its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ask {
    pub permits: u32,
    pub capacity: u32,
    pub pid: u32,
    /// When it was made, in milliseconds since the Unix epoch (for people to read).
    pub since_ms: u64,
    pub host: String,
}

impl Ask {
    /// A request of this process for `permits` of `capacity`.
    pub fn new(permits: u32, capacity: u32, host: &str) -> Ask {
        let since_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ask { permits, capacity, pid: std::process::id(), since_ms, host: host.to_string() }
    }

    /// The key's value: `v1 <permits> <capacity> <pid> <since ms> <host>`.
    pub fn encode(&self) -> String {
        format!("v1 {} {} {} {} {}", self.permits, self.capacity, self.pid, self.since_ms, self.host)
    }

    /// Reads a key's value; `None` if it is not one this version writes.
    pub fn decode(value: &[u8]) -> Option<Ask> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.splitn(6, ' ');
        if parts.next()? != "v1" {
            return None;
        }
        let mut number = || parts.next()?.parse::<u64>().ok();
        let (permits, capacity, pid, since_ms) = (number()?, number()?, number()?, number()?);
        Some(Ask {
            permits: u32::try_from(permits).ok()?,
            capacity: u32::try_from(capacity).ok()?,
            pid: u32::try_from(pid).ok()?,
            since_ms,
            host: parts.next().unwrap_or_default().to_string(),
        })
    }

    fn since(&self) -> Option<Duration> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        now.checked_sub(Duration::from_millis(self.since_ms))
    }
}

/// One request of a queue.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub key: String,
    pub create_revision: i64,
    pub lease: i64,
    pub ask: Option<Ask>,
}

/// Where a request stands in its queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Granted: its fencing token is its create revision.
    Holds(i64),
    /// Behind requests that hold the permits it needs.
    Waits,
    /// Its key is gone (its lease expired, or it was deleted).
    Gone,
}

/// The requests of one name, in queue order.
#[derive(Debug, Default)]
pub(crate) struct Queue(Vec<Request>);

impl Queue {
    /// The queue of the key-values read under a name's queue prefix, in any order.
    pub fn new(mut requests: Vec<Request>) -> Queue {
        requests.sort_by_key(|r| r.create_revision);
        Queue(requests)
    }

    pub fn requests(&self) -> &[Request] {
        &self.0
    }

    /// The queue without the requests of `deleted` keys.
    pub fn remove(&mut self, deleted: &[String]) {
        self.0.retain(|request| !deleted.contains(&request.key));
    }

    /// Fails with `CapacityMismatch` if a request asks with another capacity than `capacity`.
    pub fn check_capacity(&self, capacity: u32) -> Result<()> {
        for request in &self.0 {
            match &request.ask {
                Some(ask) if ask.capacity != capacity => {
                    return Err(Error::new(
                        ErrorKind::CapacityMismatch,
                        format!(
                            "asked for as {}, but it is in use as {}",
                            describe_capacity(capacity),
                            describe_capacity(ask.capacity)
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(Error::new(
                        ErrorKind::Corrupted,
                        format!("the request key {:?} holds a value latchkey did not write", request.key),
                    ))
                }
            }
        }
        Ok(())
    }

    /// Where the request of key `key` stands.
    pub fn standing(&self, key: &str) -> Standing {
        let mut before = 0u64;
        for request in &self.0 {
            let permits = u64::from(request.ask.as_ref().map_or(u32::MAX, |ask| ask.permits));
            if request.key == key {
                let capacity = request.ask.as_ref().map_or(0, |ask| ask.capacity);
                return if before + permits <= u64::from(capacity) {
                    Standing::Holds(request.create_revision)
                } else {
                    Standing::Waits
                };
            }
            before += permits;
        }
        Standing::Gone
    }

    /// The snapshot of `name` this queue shows.
    pub fn state(&self, name: Name) -> State {
        let mut state = State::idle(name);
        let Some(capacity) = self.0.iter().find_map(|r| r.ask.as_ref().map(|a| a.capacity)) else {
            return state;
        };
        state.capacity = capacity;
        let mut before = 0u64;
        let mut blocked = false;
        for request in &self.0 {
            let Some(ask) = &request.ask else { continue };
            let identity = Identity::default().with_host(ask.host.clone()).with_session(format!("{:x}", request.lease));
            let holds = !blocked && before + u64::from(ask.permits) <= u64::from(capacity);
            before += u64::from(ask.permits);
            if holds {
                state.in_use += ask.permits;
                state.last_token = state.last_token.max(request.create_revision as u64);
                state.holders.push(Holder::new(ask.pid, ask.permits).held_for(ask.since()).with_identity(identity));
            } else {
                blocked = true;
                state.waiters += 1;
                if ask.permits == capacity {
                    state.waiting_exclusive += 1;
                }
                state.queue.push(Waiter::new(ask.pid, ask.permits).waiting_for(ask.since()).with_identity(identity));
            }
        }
        state
    }
}

/// The snapshots of every name with a request among `kvs` (the keys under the names of
/// `prefix`), by name.
pub(crate) fn states(prefix: &str, kvs: Vec<etcd_client::KeyValue>) -> Vec<State> {
    let mut by_name: std::collections::BTreeMap<String, Vec<Request>> = Default::default();
    for kv in kvs {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let Some(name) = crate::keys::name_of(prefix, &key) else { continue };
        let request =
            Request { create_revision: kv.create_revision(), lease: kv.lease(), ask: Ask::decode(kv.value()), key };
        by_name.entry(name).or_default().push(request);
    }
    by_name
        .into_iter()
        .filter_map(|(name, requests)| Some(Queue::new(requests).state(Name::new(&name).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, revision: i64, permits: u32, capacity: u32) -> Request {
        Request { key: key.into(), create_revision: revision, lease: 1, ask: Some(Ask::new(permits, capacity, "h")) }
    }

    #[test]
    fn asks_survive_their_encoding() {
        let ask = Ask { permits: 3, capacity: 5, pid: 42, since_ms: 7, host: "a host".into() };
        assert_eq!(Ask::decode(ask.encode().as_bytes()), Some(ask));
        assert_eq!(Ask::decode(b"v2 1 1 1 1 h"), None);
        assert_eq!(Ask::decode(b"v1 1 x 1 1 h"), None);
    }

    #[test]
    fn the_queue_is_ordered_by_create_revision_and_fifo_without_barging() {
        // A semaphore of 3: a(2) holds, b(2) waits, c(1) would fit but must not pass b.
        let queue = Queue::new(vec![request("c", 30, 1, 3), request("a", 10, 2, 3), request("b", 20, 2, 3)]);
        assert_eq!(queue.standing("a"), Standing::Holds(10));
        assert_eq!(queue.standing("b"), Standing::Waits);
        assert_eq!(queue.standing("c"), Standing::Waits);
        assert_eq!(queue.standing("gone"), Standing::Gone);
        let state = queue.state(Name::new("n").unwrap());
        assert_eq!((state.in_use, state.holders.len(), state.waiters), (2, 1, 2));
    }

    #[test]
    fn a_writer_holds_back_later_readers_but_not_earlier_ones() {
        let max = latchkey_model::RWLOCK_CAPACITY;
        let queue = Queue::new(vec![request("r1", 1, 1, max), request("w", 2, max, max), request("r2", 3, 1, max)]);
        assert_eq!(queue.standing("r1"), Standing::Holds(1));
        assert_eq!(queue.standing("w"), Standing::Waits);
        assert_eq!(queue.standing("r2"), Standing::Waits);
        assert_eq!(queue.state(Name::new("n").unwrap()).waiting_exclusive, 1);
    }

    #[test]
    fn another_capacity_in_the_queue_is_a_mismatch() {
        let queue = Queue::new(vec![request("a", 1, 1, 3)]);
        assert!(queue.check_capacity(3).is_ok());
        assert_eq!(queue.check_capacity(5).unwrap_err().kind(), ErrorKind::CapacityMismatch);
    }
}
