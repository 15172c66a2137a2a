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
        let pubsub = self.client.get_async_pubsub().await.map_err(|e| unavailable("pub/sub", e))?;
        let (mut sink, stream) = pubsub.split();
        let mut slot = self.sink.lock().await;
        let names: Vec<String> = self.channels().keys().cloned().collect();
        for channel in &names {
            sink.subscribe(channel).await.map_err(|e| unavailable("SUBSCRIBE", e))?;
        }
        *slot = Some(sink);
        for (name, channel) in self.channels().iter_mut() {
            channel.subscribed = names.contains(name);
            channel.notified.send_replace("".into());
        }
        Ok(stream)
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
        let mut sink = self.sink.lock().await;
        let subscribed = self.channels().get(channel).is_some_and(|c| c.subscribed);
        if let (false, Some(sink)) = (subscribed, sink.as_mut()) {
            match sink.subscribe(channel).await {
                Ok(()) => {
                    if let Some(entry) = self.channels().get_mut(channel) {
                        entry.subscribed = true;
                    }
                }
                // The connection is going: the reader connects again, subscribes to every
                // channel in use (this one too) and wakes every waiter. (Review finding: a
                // waiter failed here instead of waiting the reconnect out.)
                Err(e) => tracing::debug!(target: "latchkey", "SUBSCRIBE failed, waiting for the reconnect: {e}"),
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
                let mut sink = notifications.sink.lock().await;
                // Only if nobody took it up again meanwhile (under the sink's lock, as listen).
                let still_unused = notifications.channels().get(&channel).is_some_and(|c| c.users == 0);
                if still_unused {
                    notifications.channels().remove(&channel);
                    if let Some(sink) = sink.as_mut() {
                        let _ = sink.unsubscribe(&channel).await;
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
        let mut sink = notifications.sink.lock().await;
        let Some(live) = sink.as_mut() else { continue };
        let answered = tokio::time::timeout(every, live.ping::<redis::Value>()).await;
        if !matches!(answered, Ok(Ok(_))) {
            tracing::debug!(target: "latchkey", "the Redis pub/sub connection did not answer a PING: connecting again");
            *sink = None;
            notifications.broken.notify_one();
        }
    }
}

fn unavailable(what: &str, e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Unavailable, format!("Redis {what} failed: {e}"))
}
