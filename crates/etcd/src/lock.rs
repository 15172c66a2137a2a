//! One name of an etcd scope, behind the `RawLock` contract.
//!
//! Acquiring puts a request key on the session's lease and counts the queue in one
//! transaction (a request alone in its queue holds; otherwise the queue is read). A request
//! that must wait opens a watch of the queue's deletions and reads the queue again (so
//! nothing between its first read and the watch is missed), then applies each deletion
//! the watch reports to what it read: a release costs a waiter no read. A waiter whose own
//! key is gone fails (Jepsen found etcd 3.4's own lock granting after its key was gone).
//! The fencing token is the key's create revision.
//!
//! Every call runs on the scope's thread, behind a channel: dropping a future at any await
//! point drops the work there, and the request key is deleted by [`KeyGuard`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_model::{
    block_on_until, with_deadline, BoxFuture, ErrorKind, Lease, Name, RawCede, RawLock, Result, State,
};

use crate::keys;
use crate::queue::{Ask, Queue, Standing};
use crate::session::Session;
use crate::shared::{next_deletions, Seen, Shared};

/// One name of an etcd scope.
pub struct EtcdLock {
    shared: Arc<Shared>,
    name: Name,
    capacity: u32,
    /// The prefix of the name's request keys.
    queue: String,
}

/// What a lease of this scope carries: its request key and the session it lives on.
struct Grant {
    key: String,
    revision: i64,
    session: Arc<Session>,
    /// Set once the key is known to be gone.
    gone: Arc<AtomicBool>,
}

/// A request key to delete if the work that made it is dropped or fails before it is
/// handed over (disarmed).
struct KeyGuard {
    shared: Arc<Shared>,
    session: Arc<Session>,
    key: Option<String>,
    /// Ends when the call that puts the key has finished: a delete sent before it could
    /// reach etcd first and leave the key behind.
    in_flight: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl KeyGuard {
    fn new(shared: &Arc<Shared>, session: &Arc<Session>, key: &str) -> KeyGuard {
        KeyGuard { shared: shared.clone(), session: session.clone(), key: Some(key.to_string()), in_flight: None }
    }

    /// Runs `put`, the call that may put the key, as a task of its own: dropping the caller
    /// does not stop it half sent, and the guard's delete waits for it to finish.
    async fn putting<T: Send + 'static>(&mut self, put: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let (done, in_flight) = tokio::sync::oneshot::channel::<()>();
        self.in_flight = Some(in_flight);
        let call = tokio::spawn(async move {
            let output = put.await;
            drop(done);
            output
        });
        call.await.expect("an etcd call does not panic")
    }

    fn disarm(mut self) -> String {
        self.key.take().expect("armed until disarmed")
    }

    /// Deletes the key now, so that the caller sees it gone when this returns.
    async fn withdraw(mut self) {
        // The key stays in the guard until it is deleted: if this is dropped half way, the
        // guard's drop deletes it in the background.
        if let Some(in_flight) = self.in_flight.as_mut() {
            let _ = in_flight.await;
            self.in_flight = None;
        }
        let key = self.key.clone().expect("armed until disarmed");
        let deleted = self.shared.delete(&self.session, &key).await;
        self.key = None;
        if let Err(e) = deleted {
            tracing::warn!(target: "latchkey", key, "a withdrawn etcd request could not be deleted (its lease will expire): {e}");
        }
    }

    /// `outcome`'s lease if it is granted; otherwise withdraws the key, then fails.
    async fn settle<T>(self, outcome: Result<T>) -> Result<(T, String)> {
        match outcome {
            Ok(granted) => Ok((granted, self.disarm())),
            Err(e) => {
                self.withdraw().await;
                Err(e)
            }
        }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let (shared, session, in_flight) = (self.shared.clone(), self.session.clone(), self.in_flight.take());
            self.shared.driver.background(async move {
                if let Some(in_flight) = in_flight {
                    let _ = in_flight.await;
                }
                if let Err(e) = shared.delete(&session, &key).await {
                    tracing::warn!(target: "latchkey", key, "a withdrawn etcd request could not be deleted (its lease will expire): {e}");
                }
            });
        }
    }
}

/// How long the first round trip of a request may take past a deadline already near.
const FIRST_TRIP_GRACE: Duration = Duration::from_millis(250);

impl EtcdLock {
    pub(crate) fn new(shared: Arc<Shared>, name: Name, capacity: u32) -> EtcdLock {
        let queue = keys::queue_prefix(&shared.config.prefix, name.as_str());
        EtcdLock { shared, name, capacity, queue }
    }

    fn error(&self, kind: ErrorKind, why: impl Into<String>) -> latchkey_model::Error {
        self.shared.error(kind, why, Some(self.name.as_str()))
    }

    fn scoped(&self, e: latchkey_model::Error) -> latchkey_model::Error {
        e.with_name(self.name.as_str()).with_scope(&self.shared.url)
    }

    fn check_request(&self, permits: u32) -> Result<()> {
        if permits == 0 || permits > self.capacity {
            return Err(self.error(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", latchkey_model::describe_capacity(self.capacity)),
            ));
        }
        Ok(())
    }

    fn ask(&self, permits: u32) -> Ask {
        Ask::new(permits, self.capacity, &self.shared.host)
    }

    /// The grant a lease of this name carries, or `NotHeld`.
    fn grant<'a>(&self, lease: &'a Lease) -> Result<&'a Grant> {
        lease
            .data::<Grant>()
            .filter(|grant| grant.key.starts_with(&self.queue))
            .ok_or_else(|| self.error(ErrorKind::NotHeld, "the lease was not granted by this lock"))
    }

    fn lost_error(&self, why: &str) -> latchkey_model::Error {
        self.error(ErrorKind::HandleLost, why.to_string())
    }

    /// Where `key` stands in `queue`, with the capacity checked; its lease once it holds.
    fn standing(&self, queue: &Queue, key: &str, session: &Session) -> Result<Option<i64>> {
        queue.check_capacity(self.capacity).map_err(|e| self.scoped(e))?;
        match queue.standing(key) {
            Standing::Holds(revision) => Ok(Some(revision)),
            Standing::Waits => Ok(None),
            Standing::Gone if session.is_lost() => Err(self.lost_error("the session lapsed while the request waited")),
            Standing::Gone => Err(self.lost_error("the request's key disappeared while it waited")),
        }
    }

    fn lease(&self, permits: u32, key: String, revision: i64, session: Arc<Session>) -> Lease {
        let grant = Grant { key, revision, session, gone: Arc::new(AtomicBool::new(false)) };
        Lease::new(permits, revision as u64, 0).with_data(grant)
    }

    /// Waits until `key`, read in `queue`, holds: its create revision. Deletions reported by
    /// the watch are applied to the queue read, so a release costs a waiter no read.
    async fn wait_turn(&self, key: &str, session: &Session, mut queue: Queue) -> Result<i64> {
        let mut watch = None;
        loop {
            if let Some(token) = self.standing(&queue, key, session)? {
                return Ok(token);
            }
            // A failure of the network is waited out for as long as the session lives: only
            // a lost session, a missing key or the caller's deadline end the wait.
            let mut backoff = Duration::from_millis(50);
            loop {
                let woke = async {
                    match next_deletions(&self.shared, &mut watch, &self.queue).await? {
                        Seen::Deleted(keys) => Ok::<_, latchkey_model::Error>(Err(keys)),
                        Seen::ReadAgain => Ok(Ok(self.shared.read_queue(&self.queue).await?)),
                    }
                };
                let failure: latchkey_model::Error = tokio::select! {
                    seen = woke => match seen {
                        Ok(Ok(read)) => {
                            queue = read;
                            break;
                        }
                        Ok(Err(deleted)) => {
                            queue.remove(&deleted);
                            break;
                        }
                        Err(e) => e,
                    },
                    () = session.lost() => return Err(self.lost_error("the session lapsed while the request waited")),
                };
                if failure.kind() == ErrorKind::Closed {
                    return Err(self.scoped(failure));
                }
                tracing::debug!(target: "latchkey", "a waiter's watch or read failed, trying again: {failure}");
                watch = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// A new request key of `session` for this name.
    fn new_key(&self, session: &Session) -> String {
        keys::request_key(&self.shared.config.prefix, self.name.as_str(), session.lease, session.next_number())
    }

    /// Queues a request and waits for its turn until `deadline`; on failure or timeout the
    /// request is withdrawn before this returns (if the work is dropped, just after).
    async fn acquire_on_thread(self: Arc<Self>, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        // A deadline bounds everything, but the request's first round trip may finish within
        // a short grace, so that a zero timeout on a free lock succeeds.
        let deadline = deadline.map(|deadline| deadline.max(Instant::now() + FIRST_TRIP_GRACE));
        let prepared = async {
            self.shared.driver.wait_background().await;
            self.enqueue_fresh(permits).await
        };
        let (session, guard, read) = with_deadline(prepared, deadline, || self.timeout()).await?;
        let key = guard.key.clone().expect("armed");
        let waited = self.wait_turn(&key, &session, read);
        let outcome = with_deadline(waited, deadline, || self.timeout()).await;
        let (token, key) = guard.settle(outcome).await?;
        Ok(self.lease(permits, key, token, session))
    }

    /// Puts a new request on the live session and reads the queue; once more on a new
    /// session if the server no longer knows the lease. The guard withdraws the request.
    async fn enqueue_fresh(&self, permits: u32) -> Result<(Arc<Session>, KeyGuard, Queue)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let session = self.shared.session().await.map_err(|e| self.scoped(e))?;
            let key = self.new_key(&session);
            let mut guard = KeyGuard::new(&self.shared, &session, &key);
            let (shared, queue, ask, put_session, put_key) =
                (self.shared.clone(), self.queue.clone(), self.ask(permits), session.clone(), key.clone());
            let put = async move { shared.enqueue(&put_session, &queue, &put_key, &ask).await };
            match guard.putting(put).await {
                Ok(read) => return Ok((session, guard, read)),
                Err(e) if e.kind() == ErrorKind::HandleLost && session.is_lost() && attempts < 2 => {
                    drop(guard.disarm());
                }
                Err(e) => {
                    guard.withdraw().await;
                    return Err(self.scoped(e));
                }
            }
        }
    }

    /// Queues a request and takes it back at once unless it holds.
    async fn try_acquire_on_thread(self: Arc<Self>, permits: u32) -> Result<Option<Lease>> {
        self.shared.driver.wait_background().await;
        let (session, guard, queue) = self.enqueue_fresh(permits).await?;
        let key = guard.key.clone().expect("armed");
        let standing = self.standing(&queue, &key, &session);
        let not_granted = || self.error(ErrorKind::AcquireFailed, "not granted");
        match guard.settle(standing.and_then(|token| token.ok_or_else(not_granted))).await {
            Ok((token, key)) => Ok(Some(self.lease(permits, key, token, session))),
            Err(e) if e.kind() == ErrorKind::AcquireFailed => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes the held key of `held`; if this is dropped first (even before it first
    /// runs), `held` deletes it in the background.
    async fn release_on_thread(self: Arc<Self>, held: KeyGuard) -> Result<()> {
        let (key, session) = (held.key.clone().expect("armed"), held.session.clone());
        let released = self.release_now(key, session).await;
        held.disarm();
        released
    }

    async fn release_now(self: Arc<Self>, key: String, session: Arc<Session>) -> Result<()> {
        let deleted = self.shared.delete(&session, &key).await.map_err(|e| self.scoped(e))?;
        if session.is_lost() {
            return Err(self.lost_error("the session had lapsed: the hold was already lost"));
        }
        if !deleted {
            return Err(self.lost_error("the request's key was already gone: the hold had been lost"));
        }
        Ok(())
    }

    async fn cede_on_thread(
        self: Arc<Self>,
        key: String,
        revision: i64,
        permits: u32,
        session: Arc<Session>,
    ) -> Result<Lease> {
        let queue = self.shared.read_queue(&self.queue).await.map_err(|e| self.scoped(e))?;
        let mine = queue.requests().iter().position(|r| r.key == key);
        let Some(mine) = mine else {
            return Err(self.lost_error("the request's key was gone: the hold had been lost"));
        };
        if mine + 1 == queue.requests().len() {
            // Nobody waits behind it: keep the grant.
            return Ok(self.lease(permits, key, revision, session));
        }
        let new = self.new_key(&session);
        let mut guard = KeyGuard::new(&self.shared, &session, &new);
        let (shared, queue, ask, put_session, put_new) =
            (self.shared.clone(), self.queue.clone(), self.ask(permits), session.clone(), new.clone());
        let moved = guard
            .putting(async move { shared.requeue(&put_session, &queue, (&key, revision), &put_new, &ask).await })
            .await;
        let waited = async {
            match moved.map_err(|e| self.scoped(e))? {
                Some(read) => self.wait_turn(&new, &session, read).await,
                None => Err(self.lost_error("the request's key was gone: the hold had been lost")),
            }
        };
        let outcome = waited.await;
        let (token, new) = guard.settle(outcome).await?;
        Ok(self.lease(permits, new, token, session))
    }

    /// Runs `work` on the scope's thread and awaits it from anywhere.
    fn on_thread<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        self.shared.driver.call(&self.name, &self.shared.url, work)
    }

    fn this(&self) -> Arc<EtcdLock> {
        Arc::new(EtcdLock {
            shared: self.shared.clone(),
            name: self.name.clone(),
            capacity: self.capacity,
            queue: self.queue.clone(),
        })
    }

    fn timeout(&self) -> latchkey_model::Error {
        self.error(ErrorKind::Timeout, "not granted before the deadline")
    }
}

impl RawLock for EtcdLock {
    fn name(&self) -> &Name {
        &self.name
    }

    fn scope_url(&self) -> &str {
        &self.shared.url
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn try_acquire(&self, permits: u32) -> Result<Option<Lease>> {
        block_on_until(self.try_acquire_async(permits), None).expect("no deadline")
    }

    fn try_acquire_async(&self, permits: u32) -> BoxFuture<'_, Result<Option<Lease>>> {
        if let Err(e) = self.check_request(permits) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let lock = self.this();
        self.shared.driver.try_grant(lock.clone(), lock.try_acquire_on_thread(permits))
    }

    fn acquire(&self, permits: u32, deadline: Option<Instant>) -> BoxFuture<'_, Result<Lease>> {
        if let Err(e) = self.check_request(permits) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let lock = self.this();
        self.shared.driver.grant(lock.clone(), lock.acquire_on_thread(permits, deadline))
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        block_on_until(self.acquire(permits, deadline), None).expect("no deadline")
    }

    fn release(&self, lease: Lease) -> Result<()> {
        block_on_until(self.release_async(lease), None).expect("no deadline")
    }

    fn release_async(&self, lease: Lease) -> BoxFuture<'_, Result<()>> {
        let grant = match self.grant(&lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let held = KeyGuard::new(&self.shared, &grant.session, &grant.key);
        self.on_thread(self.this().release_on_thread(held))
    }

    fn release_in_background(&self, lease: Lease) {
        let Ok(grant) = self.grant(&lease) else { return };
        let (key, session) = (grant.key.clone(), grant.session.clone());
        let lock = self.this();
        self.shared.driver.background(async move {
            if let Err(e) = lock.release_now(key.clone(), session).await {
                tracing::warn!(target: "latchkey", key, "releasing a dropped guard failed: {e}");
            }
        });
    }

    fn inspect(&self) -> Result<State> {
        block_on_until(self.inspect_async(), None).expect("no deadline")
    }

    fn inspect_async(&self) -> BoxFuture<'_, Result<State>> {
        let (shared, queue, name) = (self.shared.clone(), self.queue.clone(), self.name.clone());
        self.on_thread(async move {
            shared.driver.wait_background().await;
            Ok(shared.read_queue(&queue).await?.state(name))
        })
    }

    fn check(&self, lease: &Lease) -> Result<()> {
        block_on_until(self.check_async(lease), None).expect("no deadline")
    }

    fn check_async<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<()>> {
        let grant = match self.grant(lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if grant.session.is_lost() {
            return Box::pin(std::future::ready(Err(self.lost_error("the session lapsed: the hold is lost"))));
        }
        let (shared, key, gone) = (self.shared.clone(), grant.key.clone(), grant.gone.clone());
        let lost = self.lost_error("the request's key is gone: the hold is lost");
        self.on_thread(async move {
            let kvs = shared.read(&key).await?;
            if kvs.iter().any(|kv| kv.key() == key.as_bytes()) {
                return Ok(());
            }
            gone.store(true, Ordering::Release);
            Err(lost)
        })
    }

    fn is_lost(&self, lease: &Lease) -> bool {
        // A copy in a forked child is the parent's hold, not the child's.
        match self.grant(lease) {
            Ok(grant) => {
                grant.gone.load(Ordering::Acquire) || grant.session.is_lost() || self.shared.driver.is_forked()
            }
            Err(_) => true,
        }
    }

    fn lost(&self, lease: &Lease) -> BoxFuture<'static, ()> {
        let grant = self.grant(lease).ok().filter(|_| !self.shared.driver.is_forked());
        let Some(grant) = grant else { return Box::pin(std::future::ready(())) };
        let (session, gone) = (grant.session.clone(), grant.gone.clone());
        let key_gone = self.on_thread(key_deleted(self.shared.clone(), grant.key.clone(), grant.revision, gone));
        Box::pin(async move {
            tokio::select! {
                () = session.lost() => {}
                gone = key_gone => if gone.is_err() { session.lost().await },
            }
        })
    }

    fn as_cede(&self) -> Option<&dyn RawCede> {
        Some(self)
    }
}

impl RawCede for EtcdLock {
    fn first_trip_grace(&self) -> Duration {
        FIRST_TRIP_GRACE
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        let grant = match self.grant(&lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let (key, revision, session) = (grant.key.clone(), grant.revision, grant.session.clone());
        let permits = lease.permits();
        // The held key is deleted if the cede fails or is dropped (the lock is given up, as
        // the contract says), and kept if it comes back granted or was moved.
        let lock = self.this();
        let give_up = KeyGuard::new(&self.shared, &session, &key);
        self.shared.driver.grant(lock.clone(), async move {
            let ceded = lock.cede_on_thread(key, revision, permits, session).await;
            Ok(give_up.settle(ceded).await?.0)
        })
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        block_on_until(self.cede(lease), None).expect("no deadline")
    }
}

/// Completes once `key` (created at `revision`) is deleted; sets `gone` then. Runs on the
/// scope's thread.
async fn key_deleted(shared: Arc<Shared>, key: String, revision: i64, gone: Arc<AtomicBool>) -> Result<()> {
    let mut watch = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        // A failure of the network is no sign of deletion: look again, later.
        let looked = async {
            match next_deletions(&shared, &mut watch, &key).await? {
                Seen::Deleted(keys) => Ok::<bool, latchkey_model::Error>(keys.contains(&key)),
                Seen::ReadAgain => {
                    let kvs = shared.read(&key).await?;
                    Ok(!kvs.iter().any(|kv| kv.key() == key.as_bytes() && kv.create_revision() == revision))
                }
            }
        };
        let deleted = match looked.await {
            Ok(deleted) => deleted,
            Err(e) if e.kind() == ErrorKind::Closed => return Err(e),
            Err(_) => {
                watch = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if deleted {
            gone.store(true, Ordering::Release);
            return Ok(());
        }
    }
}
