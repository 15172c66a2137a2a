//! Graceful shutdown of the whole cluster.

use std::time::Duration;

use tokio::time::Instant;

use crate::{Cluster, Message, Path, Reason};

/// What [`Cluster::shutdown`] did, in path order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Workers that ended within the grace period (normally or not).
    pub stopped: Vec<Path>,
    /// Workers that were still running when the grace period ran out, and were killed.
    pub forced: Vec<Path>,
}

impl<M: Message> Cluster<M> {
    /// Shuts the cluster down: stops intake, lets the workers finish within `grace`, then
    /// kills the rest.
    ///
    /// At once, new spawns and sends fail with [`Closed`](crate::ErrorKind::Closed), and
    /// every worker is asked to stop: its [`recv`](crate::Context::recv) returns the
    /// messages already in its mailbox, then `None`. Workers still running after `grace`
    /// are killed (a task's future is dropped with the locks it holds; a child process
    /// gets SIGKILL, and is reaped). Returns once every worker has ended and its `Down`
    /// event is published; membership subscriptions end then, and no child process is
    /// left. A task that blocks its thread cannot be killed, and is waited for.
    ///
    /// Call it from outside the workers: a worker that shuts its own cluster down waits
    /// for itself until it is killed. Inside a process worker it does nothing and reports
    /// nothing: the parent shuts the cluster down.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        if !self.shared.spawner.runs_the_cluster() {
            return ShutdownReport::default();
        }
        let workers = self.shared.registry.lock().close();
        for cell in &workers {
            cell.request_stop();
        }
        if let Some(deadline) = Instant::now().checked_add(grace) {
            for cell in &workers {
                if tokio::time::timeout_at(deadline, cell.done.wait()).await.is_err() {
                    break;
                }
            }
        } else {
            for cell in &workers {
                cell.done.wait().await;
            }
        }
        let killed: Vec<bool> = workers.iter().map(|cell| !cell.done.is_fired() && cell.kill.fire()).collect();
        let mut report = ShutdownReport::default();
        for (cell, killed) in workers.iter().zip(killed) {
            let forced = cell.join().await == Reason::Killed && killed;
            match forced {
                true => report.forced.push(cell.path.clone()),
                false => report.stopped.push(cell.path.clone()),
            }
        }
        if let Some(nodes) = &self.shared.nodes {
            nodes.leave().await;
        }
        self.shared.registry.lock().end_subscriptions();
        report
    }
}
