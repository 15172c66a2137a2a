//! Entry functions: what a worker runs, registered by name or given as a closure.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Cluster, Context, Error, ErrorKind, Message, Props, Result, WorkerRef};

/// The longest entry name, in bytes.
const MAX_ENTRY_LEN: usize = 64;

/// A running worker: `Err` carries the error's message.
pub(crate) type WorkerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// An entry registered by name; it can start any number of workers.
pub(crate) type EntryFn<M> = Arc<dyn Fn(Context<M>) -> WorkerFuture + Send + Sync>;

/// What starts one worker.
pub(crate) type Start<M> = Box<dyn FnOnce(Context<M>) -> WorkerFuture + Send>;

impl<M: Message> Cluster<M> {
    /// Spawns a task worker at `path` that runs `f`, like [`spawn`](Cluster::spawn) but
    /// from a closure instead of a registered entry. Such a worker can only be a task of
    /// this process: inside a process worker, whose parent spawns for it, this fails with
    /// [`Unsupported`](ErrorKind::Unsupported).
    pub async fn spawn_fn<F, Fut, E>(&self, path: &str, props: impl Into<Props>, f: F) -> Result<WorkerRef<M>>
    where
        F: FnOnce(Context<M>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let start = start_fn(f);
        let cell = self.shared.spawner.spawn_fn(&self.shared, path, props.into(), start).await?;
        Ok(self.reference(cell))
    }
}

/// Boxes an entry function for registration.
pub(crate) fn entry_fn<M, F, Fut, E>(f: F) -> EntryFn<M>
where
    M: Message,
    F: Fn(Context<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    Arc::new(move |ctx| boxed(f(ctx)))
}

/// Boxes a one-off worker function.
fn start_fn<M, F, Fut, E>(f: F) -> Start<M>
where
    M: Message,
    F: FnOnce(Context<M>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    Box::new(move |ctx| boxed(f(ctx)))
}

fn boxed<Fut, E>(future: Fut) -> WorkerFuture
where
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display,
{
    Box::pin(async move { future.await.map_err(|e| e.to_string()) })
}

/// Checks an entry name: 1 to 64 bytes of ASCII letters, digits, `-`, `_`, `.` and `:`
/// (it travels on a command line when a child process starts it).
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ENTRY_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(Error::new(
            ErrorKind::InvalidEntry,
            format!("the entry name {name:?} is not 1 to {MAX_ENTRY_LEN} ASCII letters, digits, '-', '_', '.' or ':'"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names() {
        for ok in ["receiver", "a", "sender-2", "ns:worker_v1.2"] {
            assert!(validate_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "with space", "slash/no", "ünï", &"x".repeat(65)] {
            assert_eq!(validate_name(bad).unwrap_err().kind(), ErrorKind::InvalidEntry, "{bad:?}");
        }
    }
}
