//! Places the messages that came over a link (from a child, or from another node) in the
//! mailboxes of their receivers in this process: in order for each receiver, and a
//! receiver whose mailbox is full holds up only the messages sent to it (the others go
//! on). A credit of the receiver's window goes back over the link for each message once
//! it is placed, or has failed.
//!
//! A receiver with room takes a message at once, on the reader's task; one without gets
//! a lane: a task that places its messages in turn, waiting for room, and ends when none
//! are left. The sender's window bounds what waits in a lane.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cell::Cell;
use crate::link::{Link, Receiver};
use crate::shared::Shared;
use crate::{Envelope, Error, ErrorKind, Message, Path};

/// What waits in a lane, for one receiver.
enum Item<M> {
    /// A message for the receiver.
    Message(Envelope<M>),
    /// Asks the receiver to stop, after the messages sent before.
    Stop,
}

/// The receivers with messages waiting for room (`None` once closed).
type Lanes<M> = Option<HashMap<Receiver, Lane<M>>>;

struct Lane<M> {
    waiting: VecDeque<Item<M>>,
    task: Option<JoinHandle<()>>,
}

pub(crate) struct Forwarder<M> {
    shared: Arc<Shared<M>>,
    link: Arc<Link<M>>,
    /// Whether only this process's own workers take messages (a node's peers), or any
    /// worker it knows (a child's parent, which forwards to other processes' workers).
    only_ours: bool,
    lanes: Mutex<Lanes<M>>,
    /// Told when the last lane ends.
    idle: Notify,
}

impl<M: Message> Forwarder<M> {
    pub(crate) fn new(shared: Arc<Shared<M>>, link: Arc<Link<M>>, only_ours: bool) -> Arc<Forwarder<M>> {
        let lanes = Mutex::new(Some(HashMap::new()));
        Arc::new(Forwarder { shared, link, only_ours, lanes, idle: Notify::new() })
    }

    /// Places `envelope` in the mailbox of the worker `to` whose id is `id`, after the
    /// messages sent to it before.
    pub(crate) fn message(self: &Arc<Self>, to: Path, id: u64, envelope: Envelope<M>) {
        self.push((id, to), Item::Message(envelope));
    }

    /// Asks the worker `to` whose id is `id` to stop, after the messages sent to it before.
    pub(crate) fn stop(self: &Arc<Self>, to: Path, id: u64) {
        self.push((id, to), Item::Stop);
    }

    fn push(self: &Arc<Self>, receiver: Receiver, item: Item<M>) {
        let mut lanes = self.lanes.lock();
        let Some(lanes) = lanes.as_mut() else { return }; // closed: dropped, with its reply
        if let Some(lane) = lanes.get_mut(&receiver) {
            return lane.waiting.push_back(item);
        }
        let Some(item) = self.place_now(&receiver, item) else { return };
        let (forwarder, lane) = (self.clone(), receiver.clone());
        let task = tokio::spawn(async move { forwarder.run_lane(lane).await });
        lanes.insert(receiver, Lane { waiting: VecDeque::from([item]), task: Some(task) });
    }

    /// Places `item` if its receiver has room (or is gone); gives it back if it must wait.
    fn place_now(&self, receiver: &Receiver, item: Item<M>) -> Option<Item<M>> {
        let cell = self.cell(receiver);
        let envelope = match item {
            Item::Stop => {
                if let Some(cell) = cell {
                    cell.request_stop();
                }
                return None;
            }
            Item::Message(envelope) => envelope,
        };
        let delivered = match cell {
            Some(cell) => cell.try_deliver(envelope),
            None => Err((gone(&receiver.1), envelope)),
        };
        match delivered {
            Err((err, envelope)) if err.kind() == ErrorKind::Full => return Some(Item::Message(envelope)),
            Err((err, envelope)) => failed(err, envelope),
            Ok(()) => {}
        }
        self.link.owe(receiver);
        None
    }

    /// Places the messages of `receiver` in turn, waiting for room.
    async fn run_lane(self: Arc<Self>, receiver: Receiver) {
        // A lane whose task panics (a message's `Drop`, say) goes on in a new task.
        let _unwinding = LaneEnd { forwarder: &self, receiver: &receiver };
        loop {
            let item = {
                let mut lanes = self.lanes.lock();
                let Some(lanes) = lanes.as_mut() else { return };
                let Some(lane) = lanes.get_mut(&receiver) else { return };
                match lane.waiting.pop_front() {
                    Some(item) => item,
                    None => {
                        lanes.remove(&receiver);
                        if lanes.is_empty() {
                            self.idle.notify_waiters();
                        }
                        return;
                    }
                }
            };
            match item {
                Item::Stop => drop(self.cell(&receiver).map(|cell| cell.request_stop())),
                Item::Message(envelope) => {
                    // Placed or failed, or dropped by a panic: its credit goes back.
                    let _credit = Credit { link: &self.link, receiver: &receiver };
                    let delivered = match self.cell(&receiver) {
                        Some(cell) => cell.deliver(envelope).await,
                        None => Err((gone(&receiver.1), envelope)),
                    };
                    if let Err((err, envelope)) = delivered {
                        failed(err, envelope);
                    }
                }
            }
        }
    }

    /// The worker of this process that `receiver` names, if it is still there.
    fn cell(&self, (id, to): &Receiver) -> Option<Arc<Cell<M>>> {
        self.shared.find(to, *id).filter(|cell| !self.only_ours || cell.is_ours())
    }

    /// Waits until every message given so far is placed (or has failed).
    pub(crate) async fn placed(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.lanes.lock().as_ref().is_none_or(HashMap::is_empty) {
                return;
            }
            idle.await;
        }
    }

    /// Drops the messages that wait for room (their asks fail), and every later one.
    pub(crate) async fn close(&self) {
        let lanes = self.lanes.lock().take().unwrap_or_default();
        for task in lanes.into_values().filter_map(|mut lane| lane.task.take()) {
            task.abort();
            let _ = task.await;
        }
        self.idle.notify_waiters();
    }
}

/// Owes the credit of a message taken out of a lane, when dropped.
struct Credit<'a, M: Message> {
    link: &'a Link<M>,
    receiver: &'a Receiver,
}

impl<M: Message> Drop for Credit<'_, M> {
    fn drop(&mut self) {
        self.link.owe(self.receiver);
    }
}

/// Hands the rest of a lane whose task panics (the message it held, say, panicked when
/// dropped) to a new task: the messages and stops behind it still go, in order, and
/// waiting for the lanes to end does not wait for good.
struct LaneEnd<'a, M: Message> {
    forwarder: &'a Arc<Forwarder<M>>,
    receiver: &'a Receiver,
}

impl<M: Message> Drop for LaneEnd<'_, M> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(lane) = self.forwarder.lanes.lock().as_mut().and_then(|lanes| lanes.get_mut(self.receiver)) {
            let (forwarder, receiver) = (self.forwarder.clone(), self.receiver.clone());
            lane.task = Some(tokio::spawn(async move { forwarder.run_lane(receiver).await }));
        }
    }
}

fn gone(to: &Path) -> Error {
    Error::new(ErrorKind::Closed, "the worker has ended; it takes no messages").with_path(to.as_str())
}

/// The message was not placed: its asker learns why.
fn failed<M: Message>(err: Error, mut envelope: Envelope<M>) {
    if let Some(reply) = envelope.take_reply() {
        reply.fail(err);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use parking_lot::Mutex;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::link::{ReadHalf, Reader};
    use crate::local::Local;
    use crate::registry::Registry;
    use crate::wire::ToChild;
    use crate::Props;

    /// A message whose drop panics, if it says so.
    #[derive(Serialize, Deserialize)]
    struct Fragile(bool);

    impl Drop for Fragile {
        fn drop(&mut self) {
            if self.0 && !std::thread::panicking() {
                panic!("a message that panics when it is dropped");
            }
        }
    }

    fn shared() -> Arc<Shared<Fragile>> {
        Arc::new(Shared::<Fragile> {
            scope: latchkey::Scope::isolated(),
            entries: HashMap::new(),
            mailbox: 1,
            runtime: tokio::runtime::Handle::current(),
            registry: Mutex::new(Registry::new()),
            spawner: Arc::new(Local),
            nodes: None,
            child_args: Vec::new(),
        })
    }

    /// Second review: a lane whose task panicked stayed in the table, and `placed` (a
    /// child's `Down` waits on it) waited for good. Third: the lane was dropped with the
    /// messages behind the one that panicked, and returned no credit for any of them (the
    /// sender's window shrank for good); they go on in a new task now.
    #[tokio::test]
    async fn a_lane_whose_task_panics_goes_on_and_returns_its_credits() {
        let shared = shared();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (link, _read) = Link::new(crate::parent::tongue(), ours, 4).unwrap();
        let path = Path::from_valid("/r".to_owned());
        let (cell, inbox) = Cell::task(1, path.clone(), Props::new(), 1);
        shared.registry.lock().insert(Arc::new(cell));
        let forwarder = Forwarder::new(shared, link, true);
        forwarder.message(path.clone(), 1, Envelope::new(Fragile(false), None, None)); // fills the mailbox
        forwarder.message(path.clone(), 1, Envelope::new(Fragile(true), None, None)); // waits in a lane
        forwarder.message(path, 1, Envelope::new(Fragile(false), None, None)); // behind it
        tokio::task::yield_now().await;
        drop(inbox); // the receiver is gone: the lane drops its messages, the first panics
        let ended = tokio::time::timeout(Duration::from_secs(10), forwarder.placed()).await;
        assert!(ended.is_ok(), "a lane whose task panicked is waited for");

        theirs.set_nonblocking(true).unwrap();
        let (read, _write) = tokio::net::UnixStream::from_std(theirs).unwrap().into_split();
        let mut reader = Reader::new(ReadHalf::Unix(read));
        let mut credits = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while credits < 3 && matches!(tokio::time::timeout_at(deadline, reader.fill()).await, Ok(Ok(true))) {
            while let Some(frame) = reader.next::<ToChild<()>>() {
                if let Ok(ToChild::Credit { n, .. }) = frame {
                    credits += n;
                }
            }
        }
        assert_eq!(credits, 3, "credits returned for the 3 messages sent");
    }
}
