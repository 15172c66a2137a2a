//! The hand-off floor: latchkey's queue (a request key per acquire on the lease, granted
//! in the order of create revisions) written on the raw client, with one difference: the
//! process opens one watch of the queue's deletions *before* its first request and keeps
//! it. A watch created with a start revision that etcd has already passed is "unsynced"
//! and gets its events only from a loop that runs every 100 ms; this one never is.
//!
//! Exclusive requests only; no deadline, no lost-lease handling: a measuring stick.

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchFilterType,
    WatchOptions, WatchStream, Watcher,
};

use super::{bounded, Raw};

/// One process's side of the queue `{name}/q/`.
pub struct Floor {
    raw: Raw,
    queue: String,
    watch: Option<(Watcher, WatchStream)>,
    requests: u64,
}

impl Floor {
    pub fn new(raw: Raw, name: &str) -> Floor {
        Floor { raw, queue: format!("{name}/q/"), watch: None, requests: 0 }
    }

    /// Queues a request and waits for its turn: its key.
    pub fn lock(&mut self) -> String {
        self.requests += 1;
        let key = format!("{}{:016x}/{:016x}", self.queue, self.raw.lease, self.requests);
        let (client, lease, queue, watch) =
            (&mut self.raw.client, self.raw.lease, self.queue.as_str(), &mut self.watch);
        self.raw.rt.block_on(async {
            if watch.is_none() {
                // From now: synced at once, and kept.
                let options = WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]);
                *watch = Some(bounded("watch", client.watch(queue, Some(options))).await);
            }
            let (_, events) = watch.as_mut().expect("opened above");
            let txn = Txn::new().when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)]).and_then([
                TxnOp::put(key.as_str(), "", Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(queue, Some(GetOptions::new().with_prefix())),
            ]);
            let answer = bounded("txn", client.txn(txn)).await;
            let mut read = answer.header().map_or(0, |h| h.revision());
            let mut kvs = answer
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(get) => Some(get.kvs().to_vec()),
                    _ => None,
                })
                .unwrap_or_default();
            while first(&kvs) != Some(key.as_bytes()) {
                // A deletion after the read, then the queue again.
                loop {
                    let message = bounded("watch", events.message()).await.expect("the watch ended");
                    let deleted_since = |kv: Option<&KeyValue>| kv.is_some_and(|kv| kv.mod_revision() > read);
                    if message.events().iter().any(|e| e.event_type() == EventType::Delete && deleted_since(e.kv())) {
                        break;
                    }
                }
                let mut got = bounded("get", client.get(queue, Some(GetOptions::new().with_prefix()))).await;
                read = got.header().map_or(0, |h| h.revision());
                kvs = got.take_kvs();
            }
            key
        })
    }

    pub fn unlock(&mut self, key: String) {
        let client = &mut self.raw.client;
        self.raw.rt.block_on(async {
            bounded("delete", client.delete(key, None)).await;
        });
    }
}

/// The key of the oldest request.
fn first(kvs: &[KeyValue]) -> Option<&[u8]> {
    kvs.iter().min_by_key(|kv| kv.create_revision()).map(KeyValue::key)
}
