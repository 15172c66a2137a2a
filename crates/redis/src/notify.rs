//! Wake-ups: one pub/sub connection per scope, subscribed to the channels of the names its
//! waiters wait for. A release publishes on its name's channel. Messages published while
//! the connection is down are lost: after a reconnect every waiter looks again (the
//! bounded re-check after a reconnect).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;

use latchkey_model::{Error, ErrorKind, Result};

/// The subscriptions of a scope.
pub(crate) struct Notifications {
    client: redis::Client,
    /// Signalled when the connection stopped answering (a half-open connection never ends
    /// by itself): the reader connects again.
    broken: tokio::sync::Notify,
    /// How long a call on the connection may take (a third of the TTL, at least 0.5 s):
    /// one that takes longer means the connection is broken.
    patience: Duration,
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

struct Channel {
    users: usize,
    /// Whether the connection of now is subscribed (set under the sink's lock).
    subscribed: bool,
    /// The last message (or an empty one after a reconnect).
    notified: watch::Sender<Arc<str>>,
}

impl Notifications {
    /// Connects the pub/sub connection and starts its reader on the current runtime, and a
    /// check that the connection answers a `PING` every `every`.
    pub async fn start(client: redis::Client, every: Duration) -> Result<Arc<Notifications>> {
        let notifications = Arc::new(Notifications {
            client,
            broken: tokio::sync::Notify::new(),
            patience: every,
            sink: tokio::sync::Mutex::new(None),
            channels: Arc::default(),
        });
        let mut stream = notifications.connect().await?;
        let this = notifications.clone();
        tokio::spawn(async move {
            loop {
                loop {
                    let message = tokio::select! {
                        message = stream.next() => message,
                        () = this.broken.notified() => None,
                    };
                    let Some(message) = message else { break };
                    if let Some(channel) = this.channels().get(message.get_channel_name()) {
                        let text: String = message.get_payload().unwrap_or_default();
                        channel.notified.send_replace(text.into());
                    }
                }
                // The connection ended: connect again (with a pause after a failure).
                *this.sink.lock().await = None;
                for channel in this.channels().values_mut() {
                    channel.subscribed = false;
                }
                stream = loop {
                    match this.connect().await {
                        Ok(stream) => break stream,
                        Err(e) => {
                            tracing::debug!(target: "latchkey", "the Redis pub/sub connection failed, trying again: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
            }
        });
        tokio::spawn(check(Arc::downgrade(&notifications), every));
        Ok(notifications)
    }

    /// A new pub/sub connection, subscribed to every channel in use, that wakes every
    /// waiter (what was published while there was none is lost): its messages.
    async fn connect(&self) -> Result<PubSubStream> {
        let pubsub = self.patiently(self.client.get_async_pubsub()).await.map_err(|e| unavailable("pub/sub", e))?;
        let (mut sink, stream) = pubsub.split();
        let mut slot = self.sink.lock().await;
        let names: Vec<String> = self.channels().keys().cloned().collect();
        for channel in &names {
            self.patiently(sink.subscribe(channel)).await.map_err(|e| unavailable("SUBSCRIBE", e))?;
        }
        *slot = Some(sink);
        for (name, channel) in self.channels().iter_mut() {
            channel.subscribed = names.contains(name);
            channel.notified.send_replace("".into());
        }
        Ok(stream)
    }

    /// `call` on the connection, failed with a timeout after [`patience`](Self::patience).
    async fn patiently<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.patience, call).await {
            Ok(answer) => answer,
            Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        }
    }

    /// Drops the connection for a new one (the reader connects again, subscribes to every
    /// channel in use and wakes every waiter).
    fn drop_connection(&self, sink: &mut Option<PubSubSink>) {
        *sink = None;
        self.broken.notify_one();
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to `channel` until the returned guard is dropped; the subscription is
    /// in place when this returns (or, without a working connection now, the next
    /// connection subscribes and wakes every waiter).
    pub async fn listen(self: &Arc<Self>, channel: &str) -> Listening {
        let notified = {
            let mut channels = self.channels();
            let entry = channels.entry(channel.to_string()).or_insert_with(|| Channel {
                users: 0,
                subscribed: false,
                notified: watch::Sender::new("".into()),
            });
            entry.users += 1;
            entry.notified.subscribe()
        };
        let listening = Listening { notifications: self.clone(), channel: channel.to_string(), notified };
        // Every listener passes the sink's lock: one that finds the subscription under way
        // waits for it to be in place.
        let mut slot = self.sink.lock().await;
        let subscribed = self.channels().get(channel).is_some_and(|c| c.subscribed);
        if let (false, Some(sink)) = (subscribed, slot.as_mut()) {
            match self.patiently(sink.subscribe(channel)).await {
                Ok(()) => {
                    if let Some(entry) = self.channels().get_mut(channel) {
                        entry.subscribed = true;
                    }
                }
                // The connection is going, or half open: a new one subscribes to every
                // channel in use (this one too) and wakes every waiter. (Review findings: a
                // waiter failed here instead of waiting the reconnect out; one waited for
                // good on a half-open connection.)
                Err(e) => {
                    tracing::debug!(target: "latchkey", "SUBSCRIBE failed, connecting again: {e}");
                    self.drop_connection(&mut slot);
                }
            }
        }
        listening
    }
}

/// A subscription of a waiter; unsubscribed (in the background) when its last user drops it.
pub(crate) struct Listening {
    notifications: Arc<Notifications>,
    channel: String,
    notified: watch::Receiver<Arc<str>>,
}

impl Listening {
    /// Completes at the next message on the channel (or reconnect) after the last call:
    /// what it says.
    pub async fn notified(&mut self) -> Wake {
        if self.notified.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        Wake::parse(&self.notified.borrow_and_update())
    }
}

/// What a message on a name's channel says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The requests that hold now (`h id id…`, sent by a release): a waiter among them
    /// holds; the others wait on, with no need to look.
    Holders(Vec<String>),
    /// Anything else (a cede, a sweep, a reconnect): every waiter looks where it stands.
    LookAgain,
}

impl Wake {
    fn parse(text: &str) -> Wake {
        match text.strip_prefix("h ") {
            Some(ids) => Wake::Holders(ids.split(' ').map(str::to_string).collect()),
            None => Wake::LookAgain,
        }
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let unused = {
            let mut channels = self.notifications.channels();
            match channels.get_mut(&self.channel) {
                Some(entry) => {
                    entry.users -= 1;
                    entry.users == 0
                }
                None => false,
            }
        };
        if !unused {
            return;
        }
        let (notifications, channel) = (self.notifications.clone(), self.channel.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut slot = notifications.sink.lock().await;
                // Only if nobody took it up again meanwhile (under the sink's lock, as listen).
                let still_unused = notifications.channels().get(&channel).is_some_and(|c| c.users == 0);
                if still_unused {
                    notifications.channels().remove(&channel);
                    if let Some(sink) = slot.as_mut() {
                        if notifications.patiently(sink.unsubscribe(&channel)).await.is_err() {
                            notifications.drop_connection(&mut slot);
                        }
                    }
                }
            });
        }
    }
}

/// Every `every`, asks the pub/sub connection for a `PING`; one that does not answer within
/// `every` is dropped for a new one. (Review finding: a half-open connection, cut by a
/// firewall or a NAT, lost every wake-up until each waiter's own re-check, a TTL later.)
async fn check(notifications: std::sync::Weak<Notifications>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(notifications) = notifications.upgrade() else { return };
        let Ok(mut slot) = tokio::time::timeout(every, notifications.sink.lock()).await else {
            // Someone holds the connection in a call that will time out by itself.
            continue;
        };
        let Some(live) = slot.as_mut() else { continue };
        if notifications.patiently(live.ping::<redis::Value>()).await.is_err() {
            tracing::debug!(target: "latchkey", "the Redis pub/sub connection did not answer a PING: connecting again");
            notifications.drop_connection(&mut slot);
        }
    }
}

fn unavailable(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unavailable, format!("Redis {what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::RedisServer;

    /// Review finding: a call on a pub/sub connection that stops answering (half open, or
    /// its server stopped) hung with the connection's lock held, and every new waiter with
    /// it. `listen` now gives up on it after its patience and has a new connection made.
    #[test]
    fn a_listen_on_a_connection_that_stopped_answering_returns() {
        let server = RedisServer::start();
        let info = server.cli(&["INFO", "server"]);
        let pid: i32 = info.lines().find_map(|l| l.strip_prefix("process_id:")).unwrap().trim().parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = redis::Client::open(server.url("")).unwrap();
            let notifications = Notifications::start(client, Duration::from_millis(300)).await.unwrap();
            // SAFETY: kill has no memory-safety preconditions; the pid is the test's server.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            let listened = tokio::time::timeout(Duration::from_secs(5), notifications.listen("x")).await;
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGCONT) };
            assert!(listened.is_ok(), "listen hung on a connection that stopped answering");
        });
    }
}
