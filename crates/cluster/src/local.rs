//! The process that runs the cluster: where workers start, as tasks of this process
//! (`task.rs`) or as its child processes (`parent.rs`). Spawns asked by process workers
//! come here too, through their parent's supervisor.

use std::sync::Arc;

use crate::cell::{self, Cell};
use crate::entry::Start;
use crate::shared::{Registered, Shared, SpawnOf, Spawner, Spawning};
use crate::wire::WorkerKind;
use crate::{parent, task, Cluster, Message, Props, Result};

/// The spawner of the process that runs the cluster.
pub(crate) struct Local;

impl<M: Message> Spawner<M> for Local {
    fn spawn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        spawn: SpawnOf<'a>,
        registered: Registered<M>,
    ) -> Spawning<'a, M> {
        Box::pin(async move {
            let SpawnOf { kind, path, props, entry } = spawn;
            props.check_size(path)?;
            match kind {
                WorkerKind::Task => {
                    let f = shared.check_entry(path, entry)?.clone();
                    start_task(shared, path, props, Box::new(move |ctx| f(ctx)), registered)
                }
                WorkerKind::Process => parent::start(shared, path, props, entry, registered).await,
            }
        })
    }

    fn spawn_fn<'a>(
        &'a self,
        shared: &'a Arc<Shared<M>>,
        path: &'a str,
        props: Props,
        start: Start<M>,
    ) -> Spawning<'a, M> {
        Box::pin(async move {
            props.check_size(path)?;
            start_task(shared, path, props, start, Box::new(|_| {}))
        })
    }

    fn runs_the_cluster(&self) -> bool {
        true
    }
}

/// Registers a task worker at `path` (publishing its `Up`), then starts it.
pub(crate) fn start_task<M: Message>(
    shared: &Arc<Shared<M>>,
    path: &str,
    props: Props,
    start: Start<M>,
    registered: Registered<M>,
) -> Result<Arc<Cell<M>>> {
    let mut registry = shared.registry.lock();
    let path = registry.claim(path)?;
    let (cell, inbox) = Cell::task(cell::next_id(), path, props, shared.mailbox);
    let cell = Arc::new(cell);
    registry.insert(cell.clone());
    registered(&cell);
    drop(registry);
    task::start(&Cluster::new(shared.clone()), cell.clone(), inbox, start);
    Ok(cell)
}
