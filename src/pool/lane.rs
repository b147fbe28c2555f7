//! A lane: a fixed set of long-lived worker threads that take jobs from one crossbeam channel.
//!
//! The threads start with the lane's first job (a command that never uses a lane never has its
//! threads) and end when the last handle to the lane is dropped. Jobs run in the order they were
//! sent. A job never waits for another job, so a lane cannot deadlock; a job that is sent from a
//! worker of the same lane runs at once on that worker instead of queueing behind itself.

use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crossbeam::channel::{self, Receiver, Sender};

use super::panic_text;

/// A job as the workers see it.
pub(super) type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    /// The lane whose worker this thread is (its address), or 0.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

/// One lane of the pool.
pub(super) struct Lane {
    name: &'static str,
    size: usize,
    tx: Sender<Job>,
    rx: Mutex<Option<Receiver<Job>>>,
    started: OnceLock<usize>,
}

impl Lane {
    pub(super) fn new(name: &'static str, size: usize) -> Arc<Lane> {
        let (tx, rx) = channel::unbounded();
        Arc::new(Lane {
            name,
            size: size.max(1),
            tx,
            rx: Mutex::new(Some(rx)),
            started: OnceLock::new(),
        })
    }

    pub(super) fn size(&self) -> usize {
        self.size
    }

    fn id(&self) -> usize {
        self as *const Lane as usize
    }

    /// Starts the workers (once); returns how many are running.
    fn start(&self) -> usize {
        *self.started.get_or_init(|| {
            let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return 0;
            };
            let id = self.id();
            (0..self.size)
                .filter(|i| {
                    let rx = rx.clone();
                    std::thread::Builder::new()
                        .name(format!("vault-{}-{i}", self.name))
                        .spawn(move || worker(id, rx))
                        .is_ok()
                })
                .count()
        })
    }

    /// Runs `job` on a worker. Without any worker (none could be started, or this thread is one
    /// of this lane's) it runs here and now.
    pub(super) fn submit(&self, job: Job) {
        let here = WORKER_OF.with(Cell::get) == self.id();
        if here || self.start() == 0 {
            job();
            return;
        }
        if let Err(e) = self.tx.send(job) {
            (e.into_inner())();
        }
    }
}

fn worker(lane: usize, rx: Receiver<Job>) {
    WORKER_OF.with(|w| w.set(lane));
    while let Ok(job) = rx.recv() {
        // Jobs catch their own panics; this keeps the worker alive if one does not.
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// Jobs spawned in a [`Scope`] may borrow from the caller: the scope does not end before every
/// one of them has finished.
pub struct Scope<'s, 'env: 's> {
    lane: &'s Lane,
    state: Arc<ScopeState>,
    _env: PhantomData<&'env mut &'env ()>,
}

#[derive(Default)]
struct ScopeState {
    pending: Mutex<usize>,
    idle: Condvar,
    panic: Mutex<Option<String>>,
}

impl ScopeState {
    fn wait(&self) {
        let mut n = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.idle.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finished(&self, outcome: std::thread::Result<()>) {
        if let Err(p) = outcome {
            let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
            slot.get_or_insert_with(|| panic_text(&*p));
        }
        let mut n = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl<'s, 'env> Scope<'s, 'env> {
    /// Runs `f` on one of the lane's workers.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'env) {
        *self.state.pending.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let state = self.state.clone();
        let job: Box<dyn FnOnce() + Send + 'env> = Box::new(move || {
            let outcome = panic::catch_unwind(AssertUnwindSafe(f));
            state.finished(outcome);
        });
        // SAFETY: the job only borrows data that lives for 'env. `run_scope` does not return
        // (nor unwind) before `pending` is back at 0, which happens after `f` and everything it
        // captured have been dropped, so no borrow outlives its data.
        let job: Job = unsafe { std::mem::transmute(job) };
        self.lane.submit(job);
    }
}

/// Waits for the scope's jobs even when the caller's closure panics.
struct WaitOnDrop(Arc<ScopeState>);

impl Drop for WaitOnDrop {
    fn drop(&mut self) {
        self.0.wait();
    }
}

/// Runs `f` with a scope on `lane`; returns once every job spawned in it has finished. A job
/// that panicked makes the result `Err` with its message.
pub(super) fn run_scope<'env, R>(
    lane: &Lane,
    f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> R,
) -> Result<R, String> {
    let state = Arc::new(ScopeState::default());
    let guard = WaitOnDrop(state.clone());
    let scope = Scope {
        lane,
        state: state.clone(),
        _env: PhantomData,
    };
    let r = f(&scope);
    drop(guard);
    let panicked = state.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    match panicked {
        Some(m) => Err(m),
        None => Ok(r),
    }
}
