//! Maps over items on a lane's workers; the calling thread feeds the items and is the one sink.
//!
//! At most `window` items are between the feeder and the sink at any time (taken from the input
//! and not yet given to the sink), so memory does not grow with the input, whatever the speed of
//! either side. Results travel back over an unbounded channel, so a worker never blocks on a
//! busy sink and jobs of other work (compression blocks) keep flowing on the same workers.

use std::cmp::Ordering as Rank;
use std::collections::{BTreeMap, BinaryHeap};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crossbeam::channel::{self, RecvTimeoutError};

use super::lane::{run_scope, Lane, Scope};
use super::{panic_text, CancelToken, PoolError};

/// What a job sends back.
enum Msg<U, T> {
    Done(u64, U, Vec<T>),
    Skipped,
    Panicked(String),
}

/// Which of two queued items goes first (`Less`: the first argument). Only a growing queue has
/// items that wait.
pub(super) type First<T> = fn(&T, &T) -> Rank;

/// An item a job pushed, waiting for its turn.
struct Queued<T> {
    item: T,
    first: First<T>,
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Rank::Equal
    }
}

impl<T> Eq for Queued<T> {}

impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Rank> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Queued<T> {
    /// The heap's top is the item that goes first.
    fn cmp(&self, other: &Self) -> Rank {
        (self.first)(&other.item, &self.item)
    }
}

/// Per-worker states: each job borrows one (building it the first time), so at most one state
/// a worker is ever built.
struct States<S>(Mutex<Vec<S>>);

impl<S> States<S> {
    fn with<R>(&self, init: &impl Fn() -> S, f: impl FnOnce(&mut S) -> R) -> R {
        let taken = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut s = taken.unwrap_or_else(init);
        let r = f(&mut s);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        r
    }
}

/// The shared part of one map run, borrowed by its jobs.
struct Run<'a, S, I, W> {
    init: &'a I,
    work: &'a W,
    states: States<S>,
    stop: AtomicBool,
}

impl<S, I, W> Run<'_, S, I, W> {
    /// Sends item `i` to a worker; its result comes back on `tx`.
    fn spawn<'env, T, U>(
        &'env self,
        scope: &Scope<'_, 'env>,
        tx: &channel::Sender<Msg<U, T>>,
        i: u64,
        item: T,
    ) where
        S: Send,
        T: Send + 'env,
        U: Send + 'env,
        I: Fn() -> S + Sync,
        W: Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
    {
        let tx = tx.clone();
        scope.spawn(move || {
            if self.stop.load(Ordering::SeqCst) {
                let _ = tx.send(Msg::Skipped);
                return;
            }
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                let mut more = Vec::new();
                let u = self
                    .states
                    .with(self.init, |s| (self.work)(s, item, &mut more));
                (u, more)
            }));
            let _ = tx.send(match r {
                Ok((u, more)) => Msg::Done(i, u, more),
                Err(p) => Msg::Panicked(panic_text(&*p)),
            });
        });
    }
}

/// How the sink wants results: in input order, or as they come. A growing queue (the walk)
/// takes results as they come, and its items are small: it keeps more of them out, so that the
/// round trip through the calling thread does not leave workers idle.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Input,
    AsReady,
    Queue,
}

/// How one run hands items out.
pub(super) struct Discipline<'a, T> {
    pub(super) order: Order,
    pub(super) first: First<T>,
    /// True while the sink holds so many results it could not use yet that the run should
    /// keep one item out at a time: the smallest queued one, which is the one the sink waits
    /// for when it orders results itself (the walk's merge).
    pub(super) backlog: &'a dyn Fn() -> bool,
}

impl<T> Discipline<'static, T> {
    /// Input or as-ready order: nothing queued, no backlog.
    pub(super) fn plain(order: Order) -> Discipline<'static, T> {
        Discipline {
            order,
            first: |_, _| std::cmp::Ordering::Equal,
            backlog: &|| false,
        }
    }
}

/// Items out at once, per worker.
fn window_per_worker(order: Order) -> usize {
    match order {
        Order::Input | Order::AsReady => 4,
        Order::Queue => 32,
    }
}

/// The state of one run on the calling thread: what is out, what is waiting for its turn.
struct Feeder<'a, 'env, T, U, E, K> {
    scope: &'a Scope<'a, 'env>,
    tx: channel::Sender<Msg<U, T>>,
    rx: channel::Receiver<Msg<U, T>>,
    cancel: &'a CancelToken,
    sink: K,
    order: Order,
    window: u64,
    sent: u64,
    consumed: u64,
    next: u64,
    pending: BTreeMap<u64, U>,
    queue: BinaryHeap<Queued<T>>,
    first: First<T>,
    backlog: &'a dyn Fn() -> bool,
    failed: Option<PoolError<E>>,
}

impl<'a, 'env, T, U, E, K> Feeder<'a, 'env, T, U, E, K>
where
    T: Send + 'env,
    U: Send + 'env,
    K: FnMut(U) -> Result<(), E>,
{
    fn stopped(&self) -> bool {
        self.failed.is_some() || self.cancel.is_cancelled()
    }

    /// How many items may be out now.
    fn room(&self) -> u64 {
        if (self.backlog)() {
            1
        } else {
            self.window
        }
    }

    /// Sends `item` to a worker once the window has room; false when the run is stopping.
    fn push<S, I, W>(&mut self, run: &'env Run<'env, S, I, W>, item: T) -> bool
    where
        S: Send,
        I: Fn() -> S + Sync,
        W: Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
    {
        while self.sent - self.consumed >= self.room() && !self.stopped() {
            self.take_one();
        }
        if self.stopped() {
            return false;
        }
        run.spawn(self.scope, &self.tx, self.sent, item);
        self.sent += 1;
        true
    }

    /// Waits for one result (or 50 ms) and gives what is due to the sink.
    fn take_one(&mut self) {
        let msg = match self.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return,
        };
        let (i, u) = match msg {
            Msg::Panicked(m) => return self.fail(PoolError::WorkerPanicked(m)),
            Msg::Skipped => return self.consumed += 1,
            Msg::Done(i, u, more) => {
                let first = self.first;
                self.queue
                    .extend(more.into_iter().map(|item| Queued { item, first }));
                (i, u)
            }
        };
        if self.order != Order::Input {
            self.consumed += 1;
            if let Err(e) = (self.sink)(u) {
                self.fail(PoolError::Sink(e));
            }
            return;
        }
        self.pending.insert(i, u);
        while let Some(u) = self.pending.remove(&self.next) {
            self.next += 1;
            self.consumed += 1;
            if let Err(e) = (self.sink)(u) {
                return self.fail(PoolError::Sink(e));
            }
        }
    }

    fn fail(&mut self, e: PoolError<E>) {
        self.failed.get_or_insert(e);
    }

    /// Works off the queue of pushed items, in the order `first` gives them, and waits for
    /// everything that is out.
    fn drain<S, I, W>(&mut self, run: &'env Run<'env, S, I, W>)
    where
        S: Send,
        I: Fn() -> S + Sync,
        W: Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
    {
        while !self.stopped() && (self.sent > self.consumed || !self.queue.is_empty()) {
            match self.queue.pop() {
                Some(t) => {
                    self.push(run, t.item);
                }
                None => self.take_one(),
            }
        }
    }
}

/// Runs `work` over the items that `feed` hands over (and over any item a work call pushes) on
/// `lane`. `feed` gets a function that takes one item and says whether to go on.
pub(super) fn run<T, U, S, E>(
    lane: &Lane,
    cancel: &CancelToken,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
    sink: impl FnMut(U) -> Result<(), E>,
    how: Discipline<'_, T>,
    feed: impl FnOnce(&mut dyn FnMut(T) -> bool),
) -> Result<(), PoolError<E>>
where
    T: Send,
    U: Send,
    S: Send,
{
    let run = Run {
        init: &init,
        work: &work,
        states: States(Mutex::new(Vec::new())),
        stop: AtomicBool::new(false),
    };
    let (tx, rx) = channel::unbounded::<Msg<U, T>>();
    let outcome = run_scope(lane, |scope| {
        let mut f = Feeder {
            scope,
            tx,
            rx,
            cancel,
            sink,
            order: how.order,
            window: (lane.size() * window_per_worker(how.order)) as u64,
            sent: 0,
            consumed: 0,
            next: 0,
            pending: BTreeMap::new(),
            queue: BinaryHeap::new(),
            first: how.first,
            backlog: how.backlog,
            failed: None,
        };
        feed(&mut |item| f.push(&run, item));
        f.drain(&run);
        // Jobs not started yet skip their work; the scope waits for the running ones.
        run.stop.store(true, Ordering::SeqCst);
        f.failed
    });
    match outcome {
        Err(m) => Err(PoolError::WorkerPanicked(m)),
        Ok(Some(e)) => Err(e),
        Ok(None) if cancel.is_cancelled() => Err(PoolError::Cancelled),
        Ok(None) => Ok(()),
    }
}

/// A feed that hands over every item of `items`, stopping early when the run stops.
pub(super) fn feed_all<T>(
    items: impl IntoIterator<Item = T>,
) -> impl FnOnce(&mut dyn FnMut(T) -> bool) {
    move |push| {
        for t in items {
            if !push(t) {
                break;
            }
        }
    }
}
