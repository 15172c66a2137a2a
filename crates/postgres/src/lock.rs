//! One name of a PostgreSQL scope, behind the `RawLock` contract.
//!
//! Acquiring is one statement (`enqueue` in `schema.sql`): it takes the name's next token,
//! queues the request and says whether it holds. A request that must wait `LISTEN`s on
//! its name's channel, then asks where it stands again (so a release between the two is
//! not missed), and again at each notification, or when the keep-alive sees a session
//! ahead of it end. The fencing token is the request's token.
//!
//! Every call runs on the scope's thread, behind a channel. A statement that may queue a
//! request runs as a task of its own, so that dropping the caller's future never leaves a
//! request nobody knows of: [`Pending`] withdraws it once its token is known.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_model::{
    block_on_until, describe_capacity, with_deadline, BoxFuture, Error, ErrorKind, Holder, Identity, Lease, Name,
    RawCede, RawLock, Result, State, Waiter,
};
use tokio::task::JoinHandle;
use tokio_postgres::Row;

use crate::session::Session;
use crate::shared::Shared;

/// One name of a PostgreSQL scope.
pub struct PostgresLock {
    shared: Arc<Shared>,
    name: Name,
    capacity: u32,
}

/// What a lease of this scope carries: its request's token and the session it lives on.
struct Grant {
    name: String,
    token: i64,
    session: Arc<Session>,
    /// Set once the request is known to be gone.
    gone: Arc<AtomicBool>,
}

/// What `enqueue` and `cede` answer.
struct Queued {
    /// The request's token; none if nothing was queued (a try that would wait, a cede of
    /// a request that was gone).
    token: Option<i64>,
    holds: bool,
    /// The sessions of the requests ahead, while it waits.
    blockers: Vec<i64>,
    channel: Option<String>,
}

impl Queued {
    /// The answer of `enqueue`, `cede` or `standing` (which has no token or channel).
    fn from_row(row: &Row) -> Queued {
        let blockers: Option<Vec<i64>> = row.get("blockers");
        Queued {
            token: row.try_get("token").ok().flatten(),
            holds: row.get::<_, Option<bool>>("holds").unwrap_or(false),
            blockers: blockers.unwrap_or_default(),
            channel: row.try_get("channel").ok().flatten(),
        }
    }
}

/// A request that is withdrawn if the work that made it is dropped or fails before it is
/// handed over (disarmed).
struct Pending {
    shared: Arc<Shared>,
    session: Arc<Session>,
    name: String,
    /// The request's token, once known.
    token: Option<i64>,
    /// The statement that may queue a request (or move it, for a cede), still running: it
    /// answers the token it leaves queued.
    in_flight: Option<JoinHandle<Result<Queued>>>,
}

impl Pending {
    fn new(shared: &Arc<Shared>, session: &Arc<Session>, name: &str, token: Option<i64>) -> Pending {
        Pending { shared: shared.clone(), session: session.clone(), name: name.to_string(), token, in_flight: None }
    }

    /// Runs `call` as a task of its own and waits for it; its token becomes the pending one.
    async fn run(
        &mut self,
        call: impl std::future::Future<Output = Result<Queued>> + Send + 'static,
    ) -> Result<Queued> {
        let handle = self.in_flight.insert(tokio::spawn(call));
        let answer = handle.await.expect("a PostgreSQL call does not panic");
        self.in_flight = None;
        if let Ok(queued) = &answer {
            self.token = queued.token;
        }
        answer
    }

    fn disarm(mut self) -> i64 {
        self.token.take().expect("armed until disarmed")
    }

    /// The pending request's token (armed).
    fn token(&self) -> i64 {
        self.token.expect("armed until disarmed")
    }

    /// Withdraws the request now, so that the caller sees it gone when this returns. The
    /// token stays in the guard until the delete succeeded: if it fails, or this is dropped
    /// half way, the guard's drop withdraws it in the background, trying again.
    async fn withdraw(mut self) {
        if let Some(token) = self.token {
            if delete(&self.session, &self.name, token).await.is_ok() {
                self.token = None;
            }
        }
    }

    /// `outcome` if it is granted; otherwise withdraws the request, then fails.
    async fn settle<T>(self, outcome: Result<T>) -> Result<(T, i64)> {
        match outcome {
            Ok(granted) => Ok((granted, self.disarm())),
            Err(e) => {
                self.withdraw().await;
                Err(e)
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (token, in_flight) = (self.token.take(), self.in_flight.take());
        if token.is_none() && in_flight.is_none() {
            return;
        }
        let (session, name) = (self.session.clone(), self.name.clone());
        self.shared.driver.background(async move {
            let token = match in_flight {
                // A cede that failed left the old request where it was.
                Some(call) => match call.await {
                    Ok(Ok(queued)) => queued.token,
                    _ => token,
                },
                None => token,
            };
            if let Some(token) = token {
                withdraw(&session, &name, token).await;
            }
        });
    }
}

/// Deletes the request `token` of `name` once (on a lost session there is nothing to do).
async fn delete(session: &Session, name: &str, token: i64) -> std::result::Result<(), tokio_postgres::Error> {
    if session.is_lost() {
        return Ok(()); // Its requests ended with it.
    }
    session.client.query_opt(&session.statements.release, &[&name, &token, &session.id]).await.map(drop)
}

/// Deletes the request `token` of `name` (a withdrawal, or a release that failed once),
/// trying again for half a TTL. A request must never outlive its holder's interest in it:
/// if the statement keeps failing on a live session, the session is ended, which frees
/// all it has on the server.
async fn withdraw(session: &Session, name: &str, token: i64) {
    let give_up = Instant::now() + session.ttl() / 2;
    let mut pause = Duration::from_millis(100);
    loop {
        let Err(e) = delete(session, name, token).await else { return };
        if Instant::now() + pause > give_up {
            tracing::warn!(target: "latchkey", name, token, "a PostgreSQL request could not be deleted; ending its session to free it: {e}");
            session.mark_lost();
            return;
        }
        tracing::debug!(target: "latchkey", name, token, "deleting a request failed, trying again: {e}");
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// How long the first round trip of a request may take past a deadline already near.
const FIRST_TRIP_GRACE: Duration = Duration::from_millis(250);

impl PostgresLock {
    pub(crate) fn new(shared: Arc<Shared>, name: Name, capacity: u32) -> PostgresLock {
        PostgresLock { shared, name, capacity }
    }

    fn error(&self, kind: ErrorKind, why: impl Into<String>) -> Error {
        self.shared.error(kind, why, Some(self.name.as_str()))
    }

    fn scoped(&self, e: Error) -> Error {
        let e = if e.kind() == ErrorKind::CapacityMismatch {
            Error::new(
                ErrorKind::CapacityMismatch,
                format!("asked for as {}, but {}", describe_capacity(self.capacity), e.message()),
            )
        } else {
            e
        };
        e.with_name(self.name.as_str()).with_scope(&self.shared.url)
    }

    fn check_request(&self, permits: u32) -> Result<()> {
        if permits == 0 || permits > self.capacity {
            return Err(self.error(
                ErrorKind::CapacityMismatch,
                format!("asked for {permits} permits of {}", describe_capacity(self.capacity)),
            ));
        }
        Ok(())
    }

    /// The grant a lease of this name carries, or `NotHeld`.
    fn grant<'a>(&self, lease: &'a Lease) -> Result<&'a Grant> {
        lease
            .data::<Grant>()
            .filter(|grant| grant.name == self.name.as_str())
            .ok_or_else(|| self.error(ErrorKind::NotHeld, "the lease was not granted by this lock"))
    }

    fn lost_error(&self, why: &str) -> Error {
        self.error(ErrorKind::HandleLost, why.to_string())
    }

    fn timeout(&self) -> Error {
        self.error(ErrorKind::Timeout, "not granted before the deadline")
    }

    fn lease(&self, permits: u32, token: i64, session: Arc<Session>) -> Lease {
        let grant =
            Grant { name: self.name.as_str().to_string(), token, session, gone: Arc::new(AtomicBool::new(false)) };
        Lease::new(permits, token as u64, 0).with_data(grant)
    }

    /// Queues a request on the live session (once more on a new session if the last one
    /// had just ended); the pending request withdraws it.
    async fn enqueue(&self, permits: u32, try_only: bool) -> Result<(Arc<Session>, Pending, Queued)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let session = self.shared.session().await.map_err(|e| self.scoped(e))?;
            let mut pending = Pending::new(&self.shared, &session, self.name.as_str(), None);
            let (call_session, name, host) =
                (session.clone(), self.name.as_str().to_string(), self.shared.host.clone());
            let (permits, capacity, pid) =
                (i64::from(permits), i64::from(self.capacity), i64::from(std::process::id()));
            let call = async move {
                let s = &call_session;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                    [&name, &s.id, &s.backend, &permits, &capacity, &pid, &host, &try_only];
                let fast = s.client.query_opt(&s.statements.enqueue_fast, &params).await;
                let answer = match fast {
                    Ok(Some(row)) => Ok(row),
                    Ok(None) => s.client.query_one(&s.statements.enqueue, &params).await,
                    Err(e) => Err(e),
                };
                answer.map(|row| Queued::from_row(&row)).map_err(|e| s.failed("queuing a request", e))
            };
            match pending.run(call).await {
                Ok(queued) => return Ok((session, pending, queued)),
                Err(e) if e.kind() == ErrorKind::HandleLost && attempts < 2 => {}
                Err(e) => return Err(self.scoped(e)),
            }
        }
    }

    /// Waits until the request `token`, queued on `session`, holds.
    async fn wait_turn(&self, session: &Arc<Session>, token: i64, queued: Queued) -> Result<()> {
        let channel = queued.channel.unwrap_or_default();
        let lost = || self.lost_error("the session ended while the request waited");
        // Listening first, then asking again: a release in between is not missed.
        let mut listening = session.listen(&channel).await.map_err(|e| self.scoped(e))?;
        let mut sweep = false;
        loop {
            let row = session
                .client
                .query_one(&session.statements.standing, &[&self.name.as_str(), &token, &sweep])
                .await
                .map_err(|e| self.scoped(session.failed("asking where a request stands", e)))?;
            if row.get::<_, Option<bool>>("gone").unwrap_or(false) {
                return Err(if session.is_lost() {
                    lost()
                } else {
                    self.lost_error("the request was deleted while it waited")
                });
            }
            let standing = Queued::from_row(&row);
            if standing.holds {
                return Ok(());
            }
            let behind = session.wait_behind(standing.blockers);
            sweep = tokio::select! {
                () = listening.notified() => false,
                () = behind.ended() => true,
                () = session.lost() => return Err(lost()),
            };
        }
    }

    /// Queues a request and waits for its turn until `deadline`; on failure or timeout the
    /// request is withdrawn before this returns (if the work is dropped, just after).
    async fn acquire_on_thread(self: Arc<Self>, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        let deadline = deadline.map(|deadline| deadline.max(Instant::now() + FIRST_TRIP_GRACE));
        let prepared = async {
            self.shared.driver.wait_background().await;
            self.enqueue(permits, false).await
        };
        let (session, pending, queued) = with_deadline(prepared, deadline, || self.timeout()).await?;
        let token = pending.token.expect("an enqueue answers a token");
        if queued.holds {
            return Ok(self.lease(permits, pending.disarm(), session));
        }
        let waited = self.wait_turn(&session, token, queued);
        let outcome = with_deadline(waited, deadline, || self.timeout()).await;
        let ((), token) = pending.settle(outcome).await?;
        Ok(self.lease(permits, token, session))
    }

    /// Queues a request only if it holds at once.
    async fn try_acquire_on_thread(self: Arc<Self>, permits: u32) -> Result<Option<Lease>> {
        self.shared.driver.wait_background().await;
        let (session, pending, queued) = self.enqueue(permits, true).await?;
        if queued.token.is_none() {
            return Ok(None);
        }
        debug_assert!(queued.holds, "a try queues only a request that holds");
        Ok(Some(self.lease(permits, pending.disarm(), session)))
    }

    /// Releases the held request of `held`; if this is dropped first, `held` releases it in
    /// the background.
    async fn release_on_thread(self: Arc<Self>, held: Pending) -> Result<()> {
        let (token, session) = (held.token(), held.session.clone());
        let released = self.release_now(token, &session).await;
        held.disarm();
        released
    }

    async fn release_now(&self, token: i64, session: &Arc<Session>) -> Result<()> {
        if session.is_lost() {
            return Err(self.lost_error("the session had ended: the hold was already lost"));
        }
        let released =
            session.client.query_opt(&session.statements.release, &[&self.name.as_str(), &token, &session.id]).await;
        let row = match released {
            Ok(row) => row,
            Err(e) => {
                let e = self.scoped(session.failed("releasing", e));
                if e.kind() != ErrorKind::HandleLost {
                    // The caller has no lease left to try again with: the scope does.
                    let (session, name) = (session.clone(), self.name.as_str().to_string());
                    self.shared.driver.background(async move { withdraw(&session, &name, token).await });
                }
                return Err(e);
            }
        };
        if row.is_none() {
            return Err(self.lost_error("the request was already gone: the hold had been lost"));
        }
        Ok(())
    }

    /// Cedes the held request of `pending`: until the cede answers, that is the request to
    /// give up if this is dropped (even before it first runs); after, the one it left.
    async fn cede_on_thread(self: Arc<Self>, mut pending: Pending, permits: u32) -> Result<Lease> {
        let (token, session) = (pending.token(), pending.session.clone());
        let (call_session, name) = (session.clone(), self.name.as_str().to_string());
        let call = async move {
            let s = &call_session;
            match s.client.query_one(&s.statements.cede, &[&name, &token, &s.id]).await {
                Ok(row) => Ok(Queued::from_row(&row)),
                Err(e) => Err(s.failed("ceding", e)),
            }
        };
        let queued = match pending.run(call).await {
            Ok(queued) => queued,
            Err(e) => return pending.settle(Err(self.scoped(e))).await.map(|(lease, _)| lease),
        };
        let Some(now) = queued.token else {
            return Err(self.lost_error("the request was gone: the hold had been lost"));
        };
        if queued.holds {
            return Ok(self.lease(permits, pending.disarm(), session));
        }
        let outcome = self.wait_turn(&session, now, queued).await;
        let ((), token) = pending.settle(outcome).await?;
        Ok(self.lease(permits, token, session))
    }

    /// Runs `work` on the scope's thread and awaits it from anywhere.
    fn on_thread<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        self.shared.driver.call(&self.name, &self.shared.url, work)
    }

    fn this(&self) -> Arc<PostgresLock> {
        Arc::new(PostgresLock { shared: self.shared.clone(), name: self.name.clone(), capacity: self.capacity })
    }
}

/// The snapshots of the names among `rows` (of the `live` function, in queue order).
pub(crate) fn states(rows: &[Row]) -> Vec<State> {
    let mut states: Vec<State> = Vec::new();
    for row in rows {
        let name: String = row.get("name");
        if states.last().is_none_or(|s| s.name.as_str() != name) {
            let Ok(name) = Name::new(&name) else { continue };
            states.push(State::idle(name));
        }
        let state = states.last_mut().expect("pushed");
        let (permits, capacity): (i64, i64) = (row.get("permits"), row.get("capacity"));
        let (permits, capacity) = (permits as u32, capacity as u32);
        let pid = row.get::<_, i64>("pid") as u32;
        let since = Duration::try_from_secs_f64(row.get::<_, f64>("held_for")).ok();
        let identity = Identity::default()
            .with_host(row.get::<_, String>("host"))
            .with_session(row.get::<_, i64>("session").to_string());
        state.capacity = capacity;
        if row.get::<_, bool>("holds") {
            state.in_use += permits;
            state.last_token = state.last_token.max(row.get::<_, i64>("token") as u64);
            state.holders.push(Holder::new(pid, permits).held_for(since).with_identity(identity));
        } else {
            state.waiters += 1;
            if permits == capacity {
                state.waiting_exclusive += 1;
            }
            state.queue.push(Waiter::new(pid, permits).waiting_for(since).with_identity(identity));
        }
    }
    states
}

impl RawLock for PostgresLock {
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
        let held = Pending::new(&self.shared, &grant.session, self.name.as_str(), Some(grant.token));
        self.on_thread(self.this().release_on_thread(held))
    }

    fn release_in_background(&self, lease: Lease) {
        let Ok(grant) = self.grant(&lease) else { return };
        let (token, session) = (grant.token, grant.session.clone());
        let lock = self.this();
        self.shared.driver.background(async move {
            if let Err(e) = lock.release_now(token, &session).await {
                tracing::warn!(target: "latchkey", token, "releasing a dropped guard failed: {e}");
            }
        });
    }

    fn inspect(&self) -> Result<State> {
        block_on_until(self.inspect_async(), None).expect("no deadline")
    }

    fn inspect_async(&self) -> BoxFuture<'_, Result<State>> {
        let (shared, name) = (self.shared.clone(), self.name.clone());
        self.on_thread(async move { inspect(&shared, name).await })
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
            return Box::pin(std::future::ready(Err(self.lost_error("the session ended: the hold is lost"))));
        }
        let (session, token, gone, name) = (grant.session.clone(), grant.token, grant.gone.clone(), self.name.clone());
        let lost = self.lost_error("the request is gone: the hold is lost");
        self.on_thread(async move {
            let row = session
                .client
                .query_one(&session.statements.check, &[&name.as_str(), &token, &session.id])
                .await
                .map_err(|e| session.failed("checking a hold", e))?;
            if row.get::<_, bool>(0) {
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
        let session = grant.session.clone();
        Box::pin(async move { session.lost().await })
    }

    fn as_cede(&self) -> Option<&dyn RawCede> {
        Some(self)
    }
}

impl RawCede for PostgresLock {
    fn first_trip_grace(&self) -> Duration {
        FIRST_TRIP_GRACE
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        let grant = match self.grant(&lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let held = Pending::new(&self.shared, &grant.session, self.name.as_str(), Some(grant.token));
        let (lock, permits) = (self.this(), lease.permits());
        self.shared.driver.grant(lock.clone(), lock.cede_on_thread(held, permits))
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        block_on_until(self.cede(lease), None).expect("no deadline")
    }
}

/// The snapshot of `name`, on the scope's thread.
pub(crate) async fn inspect(shared: &Shared, name: Name) -> Result<State> {
    shared.driver.wait_background().await;
    let session = shared.session().await?;
    let rows = session
        .client
        .query(&session.statements.live, &[&Some(name.as_str())])
        .await
        .map_err(|e| session.failed("reading a queue", e))?;
    Ok(states(&rows).pop().unwrap_or_else(|| State::idle(name)))
}
