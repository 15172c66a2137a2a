//! The scope's session: one connection, one server session, that carries every request of
//! the scope.
//!
//! - **Liveness on the server**: the session holds the advisory lock of its number (random)
//!   for its whole life, and its requests live exactly as long (others test it with a
//!   shared try-lock). When the connection ends (a crash, `pg_terminate_backend`, a server
//!   restart) the server drops the lock, and the requests are dead at once.
//! - **A silent client**: the session sets `idle_session_timeout` to the TTL, so the server
//!   ends it after a TTL without a statement; a keep-alive every third of the TTL keeps it.
//!   `tcp_user_timeout` (two TTLs) ends it when the server cannot deliver to it.
//! - **Lost, seen from here**: the connection ending fires `lost()` at once. Each answered
//!   keep-alive extends the session's validity to when it was *sent* plus the TTL (never
//!   later than the server's own end of it); past that without an answer, the session is
//!   lost, and its connection is closed.
//! - **Waking**: waiters `LISTEN` on their name's channel, and a release `NOTIFY`s it. A
//!   holder that dies sends nothing: while anyone waits behind another session, the
//!   keep-alive comes every second and asks which of those sessions have ended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use latchkey_remote::Life;
use tokio::sync::{watch, Notify};
use tokio_postgres::error::Severity;
use tokio_postgres::{AsyncMessage, Client, Statement};

use latchkey_model::{Error, ErrorKind, Result};

use crate::schema::{self, Schema};
use crate::Config;

/// How often the keep-alive comes, and asks about ended sessions, while someone waits
/// behind another session: the longest a dead holder keeps a waiter waiting.
pub const DEATH_CHECK: Duration = Duration::from_secs(1);

/// The statements of the scope, prepared once per session.
pub(crate) struct Statements {
    /// The common case of `enqueue` as one plain statement (no function call): a name in
    /// use with the same capacity, room for a try, and this very session. It answers no
    /// row otherwise, and `enqueue` does the rest.
    pub enqueue_fast: Statement,
    pub enqueue: Statement,
    pub standing: Statement,
    pub release: Statement,
    pub cede: Statement,
    pub check: Statement,
    pub live: Statement,
    dead: Statement,
    ping: Statement,
}

/// One server session and what is known of its life.
pub(crate) struct Session {
    /// The session number: random, and the key of the advisory lock that says it is alive.
    pub id: i64,
    /// The server process of the connection (`pg_backend_pid()`).
    pub backend: i32,
    pub client: Client,
    pub statements: Statements,
    schema: Schema,
    ttl: Duration,
    life: Life,
    channels: Arc<Channels>,
    /// Serializes `LISTEN` and `UNLISTEN`, so that they reach the server in the order of
    /// the decisions to send them.
    listen_order: tokio::sync::Mutex<()>,
    waiters: Mutex<HashMap<u64, Waiting>>,
    next_waiter: AtomicU64,
    /// Wakes the keep-alive when a waiter starts to wait behind another session.
    monitor: Notify,
}

/// The channels the session listens on, each with a counter of notifications.
#[derive(Default)]
struct Channels(Mutex<HashMap<String, Channel>>);

struct Channel {
    users: usize,
    listening: bool,
    notified: watch::Sender<u64>,
}

/// What a waiter waits behind: sessions, and how to wake it.
struct Waiting {
    blockers: Vec<i64>,
    wake: Arc<Notify>,
}

impl Session {
    /// Connects, sets the session up (making the schema on first use), and starts its
    /// connection task and keep-alive on the current runtime (the scope's thread).
    pub async fn start(config: &Config, tls: &crate::tls::Connector) -> Result<Arc<Session>> {
        let sent = Instant::now();
        let (client, mut connection) =
            config.connection.connect(tls.clone()).await.map_err(|e| connect_error(config, e))?;
        let channels = Arc::new(Channels::default());
        let life = Life::new(sent + validity(config.ttl));
        // The connection runs in its own task from here on; it hands notifications out.
        let (gone_tx, mut gone_rx) = watch::channel(false);
        let messages = channels.clone();
        let (ended_tx, mut ended) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = poll_fn(|cx| connection.poll_message(cx)) => message,
                    _ = &mut ended => break,
                };
                match message {
                    Some(Ok(AsyncMessage::Notification(note))) => messages.notify(note.channel()),
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        tracing::debug!(target: "latchkey", "PostgreSQL notice: {}", notice.message())
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(target: "latchkey", "the PostgreSQL session's connection failed: {e}");
                        break;
                    }
                    None => break,
                }
            }
            let _ = gone_tx.send(true);
        });
        let schema = Schema::new(&config.schema);
        let setup = async {
            schema::set_up(&client, &schema, config).await?;
            let (id, backend) = schema::begin_session(&client, &schema).await?;
            let statements = Statements::prepare(&client, &schema).await?;
            Ok::<_, Error>((id, backend, statements))
        };
        let (id, backend, statements) = setup.await?;
        let session = Arc::new(Session {
            id,
            backend,
            client,
            statements,
            schema,
            ttl: config.ttl,
            life,
            channels,
            listen_order: tokio::sync::Mutex::new(()),
            waiters: Mutex::default(),
            next_waiter: AtomicU64::new(0),
            monitor: Notify::new(),
        });
        let watched = session.clone();
        tokio::spawn(async move {
            // The connection task ends with the connection, or when the session is lost
            // (which closes the connection: the server ends the session).
            tokio::select! {
                _ = gone_rx.wait_for(|gone| *gone) => {}
                () = watched.lost() => {}
            }
            if !watched.is_lost() {
                tracing::warn!(target: "latchkey", session = watched.id, "the PostgreSQL session ended: its locks are lost");
            }
            watched.mark_lost();
            let _ = ended_tx.send(());
        });
        tokio::spawn(keep_alive(session.clone()));
        Ok(session)
    }

    /// The session's time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the session is lost: cheap, and true from the instant its validity ends.
    pub fn is_lost(&self) -> bool {
        self.life.is_lost()
    }

    fn valid_until(&self) -> Instant {
        self.life.valid_until()
    }

    /// Records an answer to a statement sent at `sent`. An answer that comes after the
    /// validity ended does not revive a lost session.
    fn renewed(&self, sent: Instant) {
        self.life.extend_to(sent + validity(self.ttl));
    }

    /// Marks the session lost (its connection ended, or the scope closed); closes the
    /// connection.
    pub fn mark_lost(&self) {
        self.life.mark_lost();
    }

    /// Completes once the session is lost; on any executor.
    pub async fn lost(&self) {
        self.life.lost().await
    }

    /// An error for a statement of this session that failed.
    pub fn failed(&self, what: &str, e: tokio_postgres::Error) -> Error {
        // A FATAL error (a terminated session, a shutting-down server) ends the session;
        // the connection task may not have seen it end yet.
        let fatal =
            e.as_db_error().is_some_and(|db| matches!(db.parsed_severity(), Some(Severity::Fatal | Severity::Panic)))
                || e.code().is_some_and(|code| code.code().starts_with("57P") || code.code().starts_with("08"));
        if self.is_lost() || e.is_closed() || fatal {
            self.mark_lost();
            return Error::new(ErrorKind::HandleLost, format!("the PostgreSQL session ended during {what}: {e}"));
        }
        schema::database_error(what, &e, &self.schema)
    }

    /// Listens on `channel` (the name's, from the server) until the returned guard is dropped.
    pub async fn listen(self: &Arc<Self>, channel: &str) -> Result<Listening> {
        let _order = self.listen_order.lock().await;
        let (send, notified) = {
            let mut channels = self.channels.0.lock().unwrap_or_else(|e| e.into_inner());
            let entry = channels.entry(channel.to_string()).or_insert_with(|| Channel {
                users: 0,
                listening: false,
                notified: watch::Sender::new(0),
            });
            entry.users += 1;
            // Marked before it is sent: if this is dropped half way, the last user's drop
            // still sends the UNLISTEN.
            let send = !entry.listening;
            entry.listening = true;
            (send, entry.notified.subscribe())
        };
        let listening = Listening { session: self.clone(), channel: channel.to_string(), notified };
        if send {
            let sql = format!("LISTEN {}", quote_identifier(channel));
            if let Err(e) = self.client.batch_execute(&sql).await {
                // Others may already count on this LISTEN: without it they would sleep
                // through their notifications. A session that cannot listen ends.
                let e = self.failed("LISTEN", e);
                self.mark_lost();
                return Err(e);
            }
        }
        Ok(listening)
    }

    async fn unlisten_if_unused(self: Arc<Self>, channel: String) {
        let _order = self.listen_order.lock().await;
        {
            let mut channels = self.channels.0.lock().unwrap_or_else(|e| e.into_inner());
            match channels.get(&channel) {
                Some(entry) if entry.users == 0 => {
                    let listening = entry.listening;
                    channels.remove(&channel);
                    if !listening {
                        return;
                    }
                }
                _ => return,
            }
        }
        let sql = format!("UNLISTEN {}", quote_identifier(&channel));
        if let Err(e) = self.client.batch_execute(&sql).await {
            tracing::debug!(target: "latchkey", channel, "UNLISTEN failed: {e}");
        }
    }

    /// Records that a waiter waits behind the sessions `blockers`; the keep-alive wakes it
    /// through the returned guard when one of them ends.
    pub fn wait_behind(self: &Arc<Self>, blockers: Vec<i64>) -> Behind {
        let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        self.waiters().insert(id, Waiting { blockers, wake: wake.clone() });
        self.monitor.notify_one();
        Behind { session: self.clone(), id, wake }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Statements {
    async fn prepare(client: &Client, schema: &Schema) -> Result<Statements> {
        let s = schema.quoted();
        let prepare = |sql: String| async move {
            client.prepare(&sql).await.map_err(|e| schema::database_error("preparing the statements", &e, schema))
        };
        let (enqueue_fast, enqueue, standing, release, cede, check, live, dead, ping) = tokio::try_join!(
            prepare(crate::sql::enqueue_fast(&s)),
            prepare(format!("SELECT * FROM {s}.enqueue($1, $2, $3, $4, $5, $6, $7, $8)")),
            prepare(format!("SELECT * FROM {s}.standing($1, $2, $3)")),
            prepare(crate::sql::release(&s)),
            prepare(format!("SELECT * FROM {s}.cede($1, $2, $3)")),
            prepare(format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.requests WHERE name = $1 AND token = $2 AND session = $3)"
            )),
            prepare(format!("SELECT * FROM {s}.live($1)")),
            prepare(format!("SELECT {s}.dead($1)")),
            prepare("SELECT 1".into()),
        )?;
        Ok(Statements { enqueue_fast, enqueue, standing, release, cede, check, live, dead, ping })
    }
}

impl Channels {
    fn notify(&self, channel: &str) {
        if let Some(entry) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(channel) {
            entry.notified.send_modify(|n| *n += 1);
        }
    }
}

/// A channel listened on for a waiter; unlistened (in the background) when its last user
/// drops it.
pub(crate) struct Listening {
    session: Arc<Session>,
    channel: String,
    notified: watch::Receiver<u64>,
}

impl Listening {
    /// Completes at the next notification on the channel after the last call.
    pub async fn notified(&mut self) {
        if self.notified.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let unused = {
            let mut channels = self.session.channels.0.lock().unwrap_or_else(|e| e.into_inner());
            match channels.get_mut(&self.channel) {
                Some(entry) => {
                    entry.users -= 1;
                    entry.users == 0
                }
                None => false,
            }
        };
        if unused {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(self.session.clone().unlisten_if_unused(self.channel.clone()));
            }
        }
    }
}

/// A waiter's place in the keep-alive's list; removed when dropped.
pub(crate) struct Behind {
    session: Arc<Session>,
    id: u64,
    wake: Arc<Notify>,
}

impl Behind {
    /// Completes once one of the sessions waited behind is seen ended.
    pub async fn ended(&self) {
        self.wake.notified().await;
    }
}

impl Drop for Behind {
    fn drop(&mut self) {
        self.session.waiters().remove(&self.id);
    }
}

/// Keeps `session` alive until it is lost: a statement every third of the TTL, every
/// [`DEATH_CHECK`] while someone waits behind another session (then it asks which of those
/// have ended, and wakes their waiters). Past the validity without an answer, the session
/// is lost.
async fn keep_alive(session: Arc<Session>) {
    let mut last_sent = Instant::now();
    loop {
        let waiting = !session.waiters().is_empty();
        let period = if waiting { DEATH_CHECK.min(session.ttl / 3) } else { session.ttl / 3 };
        let due = last_sent + period;
        if Instant::now() < due {
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = session.monitor.notified() => continue,
                () = session.lost() => return,
            }
        }
        let blockers: Vec<i64> = {
            let waiters = session.waiters();
            let mut all: Vec<_> = waiters.values().flat_map(|w| w.blockers.iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        last_sent = Instant::now();
        let remaining = session.valid_until().saturating_duration_since(last_sent);
        let asked = async {
            if blockers.is_empty() {
                session.client.query(&session.statements.ping, &[]).await.map(|_| Vec::new())
            } else {
                let rows = session.client.query(&session.statements.dead, &[&blockers]).await?;
                Ok(rows.iter().filter_map(|row| row.get::<_, Option<i64>>(0)).collect())
            }
        };
        match tokio::time::timeout(remaining, asked).await {
            Ok(Ok(dead)) => {
                session.renewed(last_sent);
                if !dead.is_empty() {
                    for waiting in session.waiters().values() {
                        if waiting.blockers.iter().any(|id| dead.contains(id)) {
                            waiting.wake.notify_one();
                        }
                    }
                }
            }
            Ok(Err(e)) if !e.is_closed() => {
                tracing::debug!(target: "latchkey", session = session.id, "the keep-alive failed: {e}");
            }
            Ok(Err(_)) | Err(_) => {
                if !session.is_lost() {
                    tracing::warn!(target: "latchkey", session = session.id, "the PostgreSQL session lapsed: its locks are lost");
                }
                session.mark_lost();
                return;
            }
        }
    }
}

/// How long after a statement is sent the session counts as valid without another answer:
/// the TTL (the server ends a silent session a TTL after its last statement arrived, and
/// later still after it ran), less a twentieth of it, at least 50 ms, for clocks that run
/// at different rates and a process that is paused where its monotonic clock does not count.
fn validity(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 20).max(Duration::from_millis(50)))
}

/// `"text"`, as SQL quotes an identifier.
pub(crate) fn quote_identifier(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

fn connect_error(config: &Config, e: tokio_postgres::Error) -> Error {
    let kind = match e.as_db_error() {
        Some(db) if db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD => ErrorKind::PermissionDenied,
        Some(db) if db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            ErrorKind::PermissionDenied
        }
        // tokio-postgres says so before it connects.
        None if e.to_string().contains("password missing") => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unavailable,
    };
    let user = config.connection.get_user().unwrap_or("?");
    let why = with_causes(&e);
    let hint = if why.contains("certificate") || why.contains("Cert") {
        " (latchkey checks server certificates with rustls: X.509 version 3 only, and for \
         sslmode=verify-full the host in a subjectAltName, not only in the Common Name)"
    } else {
        ""
    };
    Error::new(kind, format!("cannot connect to PostgreSQL at {} as {user}: {why}{hint}", config.describe()))
}

/// `e` and the errors that caused it, `: `-joined (tokio-postgres keeps a TLS failure's
/// reason in its source).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}
