//! One name of a Redis scope, behind the `RawLock` contract.
//!
//! Acquiring is one script (`enqueue.lua`): it drops the requests of lapsed sessions,
//! takes the name's next token, queues the request and says whether it holds. A request
//! that must wait subscribes to its name's channel, then asks where it stands again (so a
//! release in between is not missed), and again at each message, and when the first
//! session ahead of it would lapse unless it renewed (a holder that died publishes
//! nothing). The fencing token is the request's token.
//!
//! Every call runs on the scope's thread. A script that may queue a request runs as a task
//! of its own, so that dropping the caller's future never leaves a request nobody knows
//! of: [`Pending`] withdraws it once its id is known.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey_model::{
    block_on_until, describe_capacity, with_deadline, BoxFuture, Error, ErrorKind, Holder, Identity, Lease, Name,
    RawCede, RawLock, Result, State, Waiter,
};
use redis::Value;
use tokio::task::JoinHandle;

use crate::direct::Failure;
use crate::keys::NameKeys;
use crate::notify::Wake;
use crate::session::Session;
use crate::shared::Shared;

/// One name of a Redis scope.
pub struct RedisLock {
    shared: Arc<Shared>,
    name: Name,
    capacity: u32,
    keys: NameKeys,
}

/// What a lease of this scope carries: its request and the session it lives on.
struct Grant {
    /// The name's queue key.
    queue: String,
    /// The request's number in its session.
    n: u64,
    session: Arc<Session>,
    /// Set once the request is known to be gone.
    gone: Arc<AtomicBool>,
}

/// What a script answers about a request.
#[derive(Debug)]
enum Answer {
    Holds(u64),
    Waits(u64, Option<Duration>),
    Kept,
    Busy,
    Gone,
    Mismatch(u32),
}

impl Answer {
    fn parse(value: Value) -> Answer {
        let words = flatten(value);
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<i64>().ok());
        let wake = |i: usize| number(i).filter(|ms| *ms >= 0).map(|ms| Duration::from_millis(ms as u64));
        match words.first().map(String::as_str) {
            Some("holds") => Answer::Holds(number(1).unwrap_or(0) as u64),
            Some("waits") if words.len() >= 3 => Answer::Waits(number(1).unwrap_or(0) as u64, wake(2)),
            // `standing` answers no token.
            Some("waits") => Answer::Waits(0, wake(1)),
            Some("kept") => Answer::Kept,
            Some("busy") => Answer::Busy,
            Some("mismatch") => Answer::Mismatch(number(1).unwrap_or(0) as u32),
            _ => Answer::Gone,
        }
    }
}

fn flatten(value: Value) -> Vec<String> {
    match value {
        Value::Array(values) => values.into_iter().flat_map(flatten).collect(),
        Value::BulkString(bytes) => vec![String::from_utf8_lossy(&bytes).into_owned()],
        Value::SimpleString(text) => vec![text],
        Value::Int(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// A request withdrawn if the work that made it is dropped or fails before it is handed
/// over (disarmed).
struct Pending {
    lock: Arc<RedisLock>,
    session: Arc<Session>,
    /// The request's number, once it may be queued.
    n: Option<u64>,
    /// For a cede: the number the request moves to if the answer says it was moved.
    moved_to: Option<u64>,
    /// The script that may queue (or move) it, still running.
    in_flight: Option<JoinHandle<Result<Answer>>>,
}

impl Pending {
    fn new(lock: &Arc<RedisLock>, session: &Arc<Session>, n: Option<u64>) -> Pending {
        Pending { lock: lock.clone(), session: session.clone(), n, moved_to: None, in_flight: None }
    }

    /// Runs `call` as a task of its own and waits for it.
    async fn run(
        &mut self,
        call: impl std::future::Future<Output = Result<Answer>> + Send + 'static,
    ) -> Result<Answer> {
        let handle = self.in_flight.insert(tokio::spawn(call));
        let answer = handle.await.expect("a Redis call does not panic");
        self.in_flight = None;
        answer
    }

    fn disarm(mut self) -> u64 {
        self.moved_to = None;
        self.n.take().expect("armed until disarmed")
    }

    /// Withdraws the request now (and where a cede whose answer is unknown may have moved
    /// it); if that fails, or this is dropped half way, the drop withdraws it in the
    /// background.
    async fn withdraw(mut self) {
        if let Some(n) = self.n {
            if self.session.delete(&self.lock.keys, n).await.is_ok() {
                self.n = None;
            }
        }
        if let Some(n) = self.moved_to {
            if self.session.delete(&self.lock.keys, n).await.is_ok() {
                self.moved_to = None;
            }
        }
    }

    async fn settle<T>(self, outcome: Result<T>) -> Result<(T, u64)> {
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
        let (n, moved_to, in_flight) = (self.n.take(), self.moved_to.take(), self.in_flight.take());
        if n.is_none() && moved_to.is_none() {
            return;
        }
        let (lock, session) = (self.lock.clone(), self.session.clone());
        self.lock.shared.driver.background(async move {
            // What the script still running leaves queued: the request where it is, where it
            // moved, nothing (a try refused, a request gone), or either after a failure.
            let left: Vec<u64> = match in_flight {
                None => n.into_iter().chain(moved_to).collect(),
                Some(call) => match call.await {
                    Ok(Ok(Answer::Holds(_) | Answer::Waits(..))) => moved_to.or(n).into_iter().collect(),
                    Ok(Ok(Answer::Kept)) => n.into_iter().collect(),
                    Ok(Ok(_)) => Vec::new(),
                    _ => n.into_iter().chain(moved_to).collect(),
                },
            };
            for n in left {
                lock.withdraw(&session, n).await;
            }
        });
    }
}

/// How long the first round trip of a request may take past a deadline already near.
const FIRST_TRIP_GRACE: Duration = Duration::from_millis(250);
/// How long after the first session ahead would lapse a waiter looks again.
const LAPSE_MARGIN: Duration = Duration::from_millis(5);

impl RedisLock {
    pub(crate) fn new(shared: Arc<Shared>, name: Name, capacity: u32) -> RedisLock {
        let keys = NameKeys::new(&shared.config.prefix, name.as_str());
        RedisLock { shared, name, capacity, keys }
    }

    fn error(&self, kind: ErrorKind, why: impl Into<String>) -> Error {
        self.shared.error(kind, why, Some(self.name.as_str()))
    }

    fn scoped(&self, e: Error) -> Error {
        e.with_name(self.name.as_str()).with_scope(&self.shared.url)
    }

    fn failed(&self, what: &str, e: redis::RedisError) -> Error {
        self.error(ErrorKind::Unavailable, format!("Redis {what} failed: {e}"))
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

    fn grant<'a>(&self, lease: &'a Lease) -> Result<&'a Grant> {
        lease
            .data::<Grant>()
            .filter(|grant| grant.queue == self.keys.queue)
            .ok_or_else(|| self.error(ErrorKind::NotHeld, "the lease was not granted by this lock"))
    }

    fn lost_error(&self, why: &str) -> Error {
        self.error(ErrorKind::HandleLost, why.to_string())
    }

    fn timeout(&self) -> Error {
        self.error(ErrorKind::Timeout, "not granted before the deadline")
    }

    fn lease(&self, permits: u32, token: u64, n: u64, session: Arc<Session>) -> Lease {
        let grant = Grant { queue: self.keys.queue.clone(), n, session, gone: Arc::new(AtomicBool::new(false)) };
        Lease::new(permits, token, 0).with_data(grant)
    }

    async fn invoke(&self, script: &redis::Script, args: &[String]) -> std::result::Result<Value, redis::RedisError> {
        let mut invocation = script.prepare_invoke();
        for key in self.keys.script_keys() {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        invocation.invoke_async(&mut self.shared.connection.clone()).await
    }

    /// Deletes request `n` of `session`, trying again for half a TTL; then ends the session
    /// (its requests lapse with it).
    async fn withdraw(&self, session: &Session, n: u64) {
        let give_up = Instant::now() + self.shared.config.ttl / 2;
        let mut pause = Duration::from_millis(100);
        loop {
            let Err(e) = session.delete(&self.keys, n).await else { return };
            if Instant::now() + pause > give_up {
                let id = session.request_id(n);
                tracing::warn!(target: "latchkey", id, "a Redis request could not be deleted; ending its session: {e}");
                session.mark_lost();
                return;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    fn ask(&self) -> String {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        format!("{} {since} {}", std::process::id(), self.shared.host)
    }

    /// Queues a request on the live session (once more on a new session if that one was
    /// lost by the time the answer came); the pending request withdraws it.
    async fn enqueue(self: &Arc<Self>, permits: u32, try_only: bool) -> Result<(Arc<Session>, Pending, Answer)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (session, pending, answer) = self.enqueue_once(permits, try_only).await?;
            if !session.is_lost() || attempts == 2 || matches!(answer, Answer::Busy) {
                return Ok((session, pending, answer));
            }
            // The session lapsed while the script ran: its mark may outlive it, but nobody
            // renews it; the pending request withdraws the request.
            drop(pending);
        }
    }

    async fn enqueue_once(self: &Arc<Self>, permits: u32, try_only: bool) -> Result<(Arc<Session>, Pending, Answer)> {
        let session = self.shared.session().await.map_err(|e| self.scoped(e))?;
        let n = session.next_number();
        let mut pending = Pending::new(self, &session, Some(n));
        let (lock, call_session) = (self.clone(), session.clone());
        let args = self.enqueue_args(&session, n, permits, try_only);
        // Known to the keep-alive before it may be queued: a renewal keeps what it finds.
        session.requests().adding(&self.keys, n);
        let call = async move {
            let sent = Instant::now();
            let answer = lock.invoke(&lock.shared.scripts.enqueue, &args).await;
            let answer = answer.map(Answer::parse).map_err(|e| lock.failed("enqueue", e))?;
            match answer {
                Answer::Holds(_) | Answer::Waits(..) => call_session.queued(&lock.keys, n, sent),
                // Nothing was queued.
                _ => call_session.requests().removed(&lock.keys, n, true),
            }
            Ok(answer)
        };
        let answer = pending.run(call).await;
        if let Ok(Answer::Busy | Answer::Mismatch(_)) = answer {
            // Nothing was queued. (After a failure the request may have been queued: the
            // pending request withdraws it.)
            pending.n = None;
        }
        match answer {
            Ok(Answer::Mismatch(other)) => Err(self.mismatch(other)),
            Ok(answer) => Ok((session, pending, answer)),
            Err(e) => Err(e),
        }
    }

    fn mismatch(&self, other: u32) -> Error {
        self.error(
            ErrorKind::CapacityMismatch,
            format!(
                "asked for as {}, but it is in use as {}",
                describe_capacity(self.capacity),
                describe_capacity(other)
            ),
        )
    }

    /// The arguments of `enqueue.lua` for request `n` of `session`.
    fn enqueue_args(&self, session: &Session, n: u64, permits: u32, try_only: bool) -> Vec<String> {
        vec![
            session.id.clone(),
            n.to_string(),
            permits.to_string(),
            self.capacity.to_string(),
            self.ask(),
            if try_only { "1" } else { "0" }.to_string(),
            session.ttl_ms(),
        ]
    }

    /// An enqueue on the caller's thread (see `direct.rs`), if nothing in the background
    /// must come first and a session lives; `None` to take the scope's thread instead.
    /// An answer waited for past `deadline` (plus the first trip's grace) is a timeout.
    fn enqueue_direct(
        &self,
        permits: u32,
        try_only: bool,
        deadline: Option<Instant>,
    ) -> Option<Result<(Arc<Session>, u64, Answer)>> {
        let direct = self.shared.direct.as_ref()?;
        if !self.shared.driver.is_idle() {
            return None;
        }
        let session = self.shared.current_session()?;
        let n = session.next_number();
        let args = self.enqueue_args(&session, n, permits, try_only);
        let mut invocation = self.shared.scripts.enqueue.prepare_invoke();
        for key in self.keys.script_keys() {
            invocation.key(key);
        }
        for arg in &args {
            invocation.arg(arg);
        }
        session.requests().adding(&self.keys, n);
        let sent = Instant::now();
        // As on the scope's thread, the first trip may take a little past a near deadline.
        let limit = deadline.map(|deadline| deadline.saturating_duration_since(sent) + FIRST_TRIP_GRACE);
        let answer = direct.invoke(&invocation, limit).map(Answer::parse);
        if let Err(Failure { stale: true, .. }) = answer {
            // It may have been queued: the scope's thread tries again once it is withdrawn.
            self.withdraw_in_background(&session, n);
            return None;
        }
        Some(match answer {
            Ok(answer @ (Answer::Holds(_) | Answer::Waits(..))) => {
                session.queued(&self.keys, n, sent);
                if session.is_lost() {
                    // Lapsed while the script ran: the scope's thread tries on a new session
                    // once this request is withdrawn.
                    self.withdraw_in_background(&session, n);
                    return None;
                }
                Ok((session, n, answer))
            }
            Ok(answer) => {
                // Nothing was queued.
                session.requests().removed(&self.keys, n, true);
                match answer {
                    Answer::Mismatch(other) => Err(self.mismatch(other)),
                    answer => Ok((session, n, answer)),
                }
            }
            Err(failure) => {
                // It may have been queued.
                self.withdraw_in_background(&session, n);
                let late = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                Err(if failure.error.is_timeout() && late {
                    self.timeout()
                } else {
                    self.failed("enqueue", failure.error)
                })
            }
        })
    }

    fn withdraw_in_background(&self, session: &Arc<Session>, n: u64) {
        let (lock, session) = (self.clone_arc(), session.clone());
        self.shared.driver.background(async move { lock.withdraw(&session, n).await });
    }

    /// Waits on the scope's thread for request `n`, queued on the caller's thread, to hold.
    fn wait_queued(
        &self,
        session: Arc<Session>,
        n: u64,
        (permits, token, wake): (u32, u64, Option<Duration>),
        deadline: Option<Instant>,
    ) -> Result<Lease> {
        let lock = self.clone_arc();
        let granted = self.shared.driver.grant(lock.clone(), async move {
            let pending = Pending::new(&lock, &session, Some(n));
            let waited = lock.wait_turn(&session, n, wake);
            let outcome = with_deadline(waited, deadline, || lock.timeout()).await;
            let ((), n) = pending.settle(outcome).await?;
            Ok(lock.lease(permits, token, n, session))
        });
        block_on_until(granted, None).expect("no deadline")
    }

    /// Waits until request `n` holds; `wake` is when to look again for a lapsed holder.
    /// A release's message that names the request grants it without a look; one that does
    /// not leaves it asleep; anything else (a cede, a sweep, a reconnect) makes it look.
    async fn wait_turn(&self, session: &Arc<Session>, n: u64, mut wake: Option<Duration>) -> Result<()> {
        let mut listening = self.shared.notifications.listen(&self.keys.channel).await;
        let id = session.request_id(n);
        let mut look = true;
        let mut look_at = Instant::now();
        loop {
            if look {
                let answer = self.invoke(&self.shared.scripts.standing, std::slice::from_ref(&id)).await;
                match answer.map(Answer::parse) {
                    Ok(Answer::Holds(_)) => return Ok(()),
                    Ok(Answer::Waits(_, next)) => wake = next,
                    Ok(_) => {
                        return Err(if session.is_lost() {
                            self.lost_error("the session lapsed while the request waited")
                        } else {
                            self.lost_error("the request was dropped while it waited")
                        })
                    }
                    // A failure of the network is waited out for as long as the session lives.
                    Err(e) => tracing::debug!(target: "latchkey", "a waiter's look failed: {e}"),
                }
                let ttl = self.shared.config.ttl;
                look_at = Instant::now() + wake.map_or(ttl, |w| w + LAPSE_MARGIN).min(ttl);
            }
            tokio::select! {
                // A loss first: a release may name a request whose session lapsed meanwhile
                // (review finding).
                biased;
                () = session.lost() => return Err(self.lost_error("the session lapsed while the request waited")),
                wake = listening.notified() => match wake {
                    Wake::Holders(ids) if ids.contains(&id) && !session.is_lost() => return Ok(()),
                    Wake::Holders(_) => look = false,
                    Wake::LookAgain => look = true,
                },
                () = tokio::time::sleep_until(look_at.into()) => look = true,
            }
        }
    }

    async fn acquire_on_thread(self: Arc<Self>, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        let deadline = deadline.map(|deadline| deadline.max(Instant::now() + FIRST_TRIP_GRACE));
        let prepared = async {
            self.shared.driver.wait_background().await;
            self.enqueue(permits, false).await
        };
        let (session, pending, answer) = with_deadline(prepared, deadline, || self.timeout()).await?;
        let (token, wake) = match answer {
            Answer::Holds(token) => return Ok(self.lease(permits, token, pending.disarm(), session)),
            Answer::Waits(token, wake) => (token, wake),
            other => unreachable!("an enqueue that is not a try answered {other:?}"),
        };
        let n = pending.n.expect("queued");
        let waited = self.wait_turn(&session, n, wake);
        let outcome = with_deadline(waited, deadline, || self.timeout()).await;
        let ((), n) = pending.settle(outcome).await?;
        Ok(self.lease(permits, token, n, session))
    }

    async fn try_acquire_on_thread(self: Arc<Self>, permits: u32) -> Result<Option<Lease>> {
        self.shared.driver.wait_background().await;
        let (session, pending, answer) = self.enqueue(permits, true).await?;
        match answer {
            Answer::Holds(token) => Ok(Some(self.lease(permits, token, pending.disarm(), session))),
            _ => Ok(None),
        }
    }

    async fn release_now(&self, n: u64, session: &Arc<Session>) -> Result<()> {
        if session.is_lost() {
            // Its requests are given back by the session's end.
            return Err(self.lost_error("the session had lapsed: the hold was already lost"));
        }
        match session.delete(&self.keys, n).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost_error("the request was already gone: the hold had been lost")),
            Err(e) => {
                self.withdraw_in_background(session, n);
                Err(self.failed("release", e))
            }
        }
    }

    async fn cede_on_thread(self: Arc<Self>, mut pending: Pending, permits: u32, token: u64) -> Result<Lease> {
        let (old, session) = (pending.n.expect("held"), pending.session.clone());
        let new = session.next_number();
        pending.moved_to = Some(new);
        {
            let mut requests = session.requests();
            requests.removing(&self.keys, old);
            requests.adding(&self.keys, new);
        }
        let args = vec![session.request_id(old), session.id.clone(), new.to_string()];
        let (lock, call_session) = (self.clone(), session.clone());
        let call = async move {
            let answer = lock.invoke(&lock.shared.scripts.cede, &args).await;
            let answer = answer.map(Answer::parse).map_err(|e| lock.failed("cede", e))?;
            let mut requests = call_session.requests();
            match answer {
                Answer::Kept => {
                    requests.kept(&lock.keys, old);
                    requests.removed(&lock.keys, new, true);
                }
                Answer::Holds(_) | Answer::Waits(..) => {
                    requests.removed(&lock.keys, old, true);
                    requests.added(&lock.keys, new, None);
                }
                _ => {
                    requests.removed(&lock.keys, old, true);
                    requests.removed(&lock.keys, new, true);
                }
            }
            Ok(answer)
        };
        let answer = match pending.run(call).await {
            Ok(answer) => answer,
            // Where the request is is unknown: both are withdrawn.
            Err(e) => return pending.settle(Err(e)).await.map(|(lease, _)| lease),
        };
        match answer {
            Answer::Kept => Ok(self.lease(permits, token, pending.disarm(), session)),
            Answer::Holds(token) => {
                pending.n = Some(new);
                Ok(self.lease(permits, token, pending.disarm(), session))
            }
            Answer::Waits(token, wake) => {
                pending.n = Some(new);
                pending.moved_to = None;
                let outcome = self.wait_turn(&session, new, wake).await;
                let ((), n) = pending.settle(outcome).await?;
                Ok(self.lease(permits, token, n, session))
            }
            _ => {
                pending.n = None;
                pending.moved_to = None;
                Err(self.lost_error("the request was gone: the hold had been lost"))
            }
        }
    }

    fn on_thread<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T>> {
        self.shared.driver.call(&self.name, &self.shared.url, work)
    }

    fn clone_arc(&self) -> Arc<RedisLock> {
        Arc::new(RedisLock {
            shared: self.shared.clone(),
            name: self.name.clone(),
            capacity: self.capacity,
            keys: self.keys.clone(),
        })
    }
}

/// The snapshot of `name` from the `live` script's answer: `id token ask holds`, in queue
/// order.
fn state(name: Name, value: Value) -> State {
    let words = flatten(value);
    let mut state = State::idle(name);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    for row in words.chunks(4) {
        let [id, token, ask, holds] = row else { continue };
        let mut fields = ask.splitn(5, ' ');
        let mut number = || fields.next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        let (permits, capacity, pid, since) = (number() as u32, number() as u32, number() as u32, number());
        let host = ask.splitn(5, ' ').nth(4).unwrap_or("").to_string();
        let held_for = Some(Duration::from_millis(now.saturating_sub(since)));
        let session = id.split(':').next().unwrap_or("").to_string();
        let identity = Identity::default().with_host(host).with_session(session);
        state.capacity = capacity;
        if holds == "1" {
            state.in_use += permits;
            state.last_token = state.last_token.max(token.parse::<f64>().map_or(0, |t| t as u64));
            state.holders.push(Holder::new(pid, permits).held_for(held_for).with_identity(identity));
        } else {
            state.waiters += 1;
            if permits == capacity {
                state.waiting_exclusive += 1;
            }
            state.queue.push(Waiter::new(pid, permits).waiting_for(held_for).with_identity(identity));
        }
    }
    state
}

/// The snapshot of `name`, on the scope's thread.
pub(crate) async fn inspect(shared: &Shared, name: Name) -> Result<State> {
    shared.driver.wait_background().await;
    let keys = NameKeys::new(&shared.config.prefix, name.as_str());
    let mut invocation = shared.scripts.live.prepare_invoke();
    for key in keys.script_keys() {
        invocation.key(key);
    }
    let value: Value = invocation
        .invoke_async(&mut shared.connection.clone())
        .await
        .map_err(|e| shared.error(ErrorKind::Unavailable, format!("Redis inspect failed: {e}"), Some(name.as_str())))?;
    Ok(state(name, value))
}

impl RawLock for RedisLock {
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
        self.check_request(permits)?;
        match self.enqueue_direct(permits, true, None) {
            None => block_on_until(self.try_acquire_async(permits), None).expect("no deadline"),
            Some(Err(e)) => Err(e),
            Some(Ok((session, n, Answer::Holds(token)))) => Ok(Some(self.lease(permits, token, n, session))),
            Some(Ok(_)) => Ok(None),
        }
    }

    fn try_acquire_async(&self, permits: u32) -> BoxFuture<'_, Result<Option<Lease>>> {
        if let Err(e) = self.check_request(permits) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let lock = self.clone_arc();
        self.shared.driver.try_grant(lock.clone(), lock.try_acquire_on_thread(permits))
    }

    fn acquire(&self, permits: u32, deadline: Option<Instant>) -> BoxFuture<'_, Result<Lease>> {
        if let Err(e) = self.check_request(permits) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let lock = self.clone_arc();
        self.shared.driver.grant(lock.clone(), lock.acquire_on_thread(permits, deadline))
    }

    fn acquire_blocking(&self, permits: u32, deadline: Option<Instant>) -> Result<Lease> {
        self.check_request(permits)?;
        match self.enqueue_direct(permits, false, deadline) {
            None => block_on_until(self.acquire(permits, deadline), None).expect("no deadline"),
            Some(Err(e)) => Err(e),
            Some(Ok((session, n, Answer::Holds(token)))) => Ok(self.lease(permits, token, n, session)),
            Some(Ok((session, n, Answer::Waits(token, wake)))) => {
                self.wait_queued(session, n, (permits, token, wake), deadline)
            }
            Some(Ok((_, _, other))) => unreachable!("an enqueue that is not a try answered {other:?}"),
        }
    }

    fn release(&self, lease: Lease) -> Result<()> {
        let grant = self.grant(&lease)?;
        let session = &grant.session;
        if session.is_lost() {
            return Err(self.lost_error("the session had lapsed: the hold was already lost"));
        }
        // (In a forked child, the scope's thread refuses: the parent's connections are not ours.)
        let Some(direct) = self.shared.direct.as_ref().filter(|_| !self.shared.driver.is_forked()) else {
            return block_on_until(self.release_async(lease), None).expect("no deadline");
        };
        // On the caller's thread (see `direct.rs`); on the scope's if a kept connection broke.
        match session.delete_direct(direct, &self.keys, grant.n) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.lost_error("the request was already gone: the hold had been lost")),
            Err(Failure { stale: true, .. }) => block_on_until(self.release_async(lease), None).expect("no deadline"),
            Err(failure) => {
                self.withdraw_in_background(session, grant.n);
                Err(self.failed("release", failure.error))
            }
        }
    }

    fn release_async(&self, lease: Lease) -> BoxFuture<'_, Result<()>> {
        let grant = match self.grant(&lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let lock = self.clone_arc();
        let held = Pending::new(&lock, &grant.session, Some(grant.n));
        self.on_thread(async move {
            let (n, session) = (held.n.expect("held"), held.session.clone());
            let released = lock.release_now(n, &session).await;
            held.disarm();
            released
        })
    }

    fn release_in_background(&self, lease: Lease) {
        let Ok(grant) = self.grant(&lease) else { return };
        let (n, session, lock) = (grant.n, grant.session.clone(), self.clone_arc());
        self.shared.driver.background(async move {
            if let Err(e) = lock.release_now(n, &session).await {
                let id = session.request_id(n);
                tracing::warn!(target: "latchkey", id, "releasing a dropped guard failed: {e}");
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
            return Box::pin(std::future::ready(Err(self.lost_error("the session lapsed: the hold is lost"))));
        }
        let (lock, id, gone) = (self.clone_arc(), grant.session.request_id(grant.n), grant.gone.clone());
        let lost = self.lost_error("the request is gone: the hold is lost");
        self.on_thread(async move {
            let answer =
                lock.invoke(&lock.shared.scripts.standing, &[id]).await.map_err(|e| lock.failed("check", e))?;
            match Answer::parse(answer) {
                Answer::Holds(_) => Ok(()),
                _ => {
                    gone.store(true, Ordering::Release);
                    Err(lost)
                }
            }
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

impl RawCede for RedisLock {
    fn first_trip_grace(&self) -> Duration {
        FIRST_TRIP_GRACE
    }

    fn cede(&self, lease: Lease) -> BoxFuture<'_, Result<Lease>> {
        let grant = match self.grant(&lease) {
            Ok(grant) => grant,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let lock = self.clone_arc();
        let held = Pending::new(&lock, &grant.session, Some(grant.n));
        let (permits, token) = (lease.permits(), lease.token());
        self.shared.driver.grant(lock.clone(), lock.cede_on_thread(held, permits, token))
    }

    fn cede_blocking(&self, lease: Lease) -> Result<Lease> {
        block_on_until(self.cede(lease), None).expect("no deadline")
    }
}
