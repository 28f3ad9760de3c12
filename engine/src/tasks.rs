//! The tasks one core runs for one node (listeners, connections, tickers),
//! kept together so that stopping the node cancels all of them at once, as a
//! crash would: connections close, nothing lingers on the executor.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use glommio::task::JoinHandle;

/// Handles above this count trigger pruning of finished tasks.
const PRUNE_AT: usize = 64;

#[derive(Clone, Default)]
pub struct TaskSet {
    tasks: Rc<RefCell<Vec<Task>>>,
    cancelled: Rc<Cell<bool>>,
}

/// A spawned task and the flag it sets when it ends on its own.
struct Task {
    handle: JoinHandle<()>,
    done: Rc<Cell<bool>>,
}

impl TaskSet {
    /// Runs `fut` on the current executor until it ends or the set is cancelled.
    pub fn spawn(&self, fut: impl Future<Output = ()> + 'static) {
        if self.cancelled.get() {
            return;
        }
        let done = Rc::new(Cell::new(false));
        let flag = done.clone();
        let handle = glommio::spawn_local(async move {
            fut.await;
            flag.set(true);
        })
        .detach();
        let mut tasks = self.tasks.borrow_mut();
        if tasks.len() >= PRUNE_AT {
            tasks.retain(|task| !task.done.get());
        }
        tasks.push(Task { handle, done });
    }

    pub fn cancel_all(&self) {
        self.cancelled.set(true);
        for task in self.tasks.borrow_mut().drain(..) {
            if !task.done.get() {
                task.handle.cancel();
            }
        }
    }
}
