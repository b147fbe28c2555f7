//! The one worker pool that every module runs its parallel work on.
//!
//! Promises:
//! - Bounded: at most `window` items are in flight between the feeder and the sink, whatever the
//!   speed of either side, so memory does not grow with the input.
//! - Per-worker state: each worker builds its own state once (`init`), e.g. a read buffer.
//! - Ordered results where asked: [`Pool::map_ordered`] hands results to the sink in input order.
//! - One sink: results are consumed on the calling thread, which therefore owns the archive
//!   writer or the database connection; workers never touch them.
//! - Stopping: a [`CancelToken`] (wired to Ctrl-C by the CLI only) stops feeding and returns
//!   [`PoolError::Cancelled`]; a worker that panics stops the others and the call returns
//!   [`PoolError::WorkerPanicked`]; a sink error stops everything and is returned as is.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{self, RecvTimeoutError};

/// A cancellation flag shared between whoever may cancel (a signal handler) and the work.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The raw flag, for signal handlers that may only store to an atomic.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// Why a pool run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    #[error("cancelled")]
    Cancelled,
    #[error("a worker thread panicked: {0}")]
    WorkerPanicked(String),
    #[error(transparent)]
    Sink(E),
}

/// The worker pool: a number of threads; each run spawns them scoped to the call.
#[derive(Clone, Debug)]
pub struct Pool {
    threads: usize,
}

impl Pool {
    /// A pool of `threads` workers; 0 means the number of available cores.
    pub fn new(threads: usize) -> Pool {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Pool { threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work` over every item on the workers and gives each result to `sink` on the calling
    /// thread, in input order.
    pub fn map_ordered<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        items: impl IntoIterator<Item = T, IntoIter: Send>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
    {
        self.run(cancel, items, init, work, sink, true)
    }

    /// Like [`Pool::map_ordered`] but results reach the sink as soon as they are ready.
    pub fn map_unordered<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        items: impl IntoIterator<Item = T, IntoIter: Send>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
    {
        self.run(cancel, items, init, work, sink, false)
    }

    fn run<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        items: impl IntoIterator<Item = T, IntoIter: Send>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        mut sink: impl FnMut(U) -> Result<(), E>,
        ordered: bool,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
    {
        let window = self.threads * 4;
        let stop = AtomicBool::new(false);
        let panic_msg: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let (in_tx, in_rx) = channel::bounded::<(u64, T)>(self.threads * 2);
        let (out_tx, out_rx) = channel::bounded::<(u64, U)>(self.threads * 2);
        let (credit_tx, credit_rx) = channel::bounded::<()>(window);
        let items = items.into_iter();
        let stopped = || stop.load(Ordering::SeqCst) || cancel.is_cancelled();

        std::thread::scope(|scope| {
            // Feeder: takes a credit per item so that at most `window` are in flight.
            let stop_ref = &stop;
            scope.spawn(move || {
                for (i, item) in items.enumerate() {
                    if stop_ref.load(Ordering::SeqCst) || cancel.is_cancelled() {
                        break;
                    }
                    if credit_tx.send(()).is_err() || in_tx.send((i as u64, item)).is_err() {
                        break;
                    }
                }
            });
            for _ in 0..self.threads {
                let in_rx = in_rx.clone();
                let out_tx = out_tx.clone();
                let (init, work, stop, panic_msg) = (&init, &work, &stop, &panic_msg);
                scope.spawn(move || {
                    let result = panic::catch_unwind(AssertUnwindSafe(|| {
                        let mut state = init();
                        while let Ok((i, item)) = in_rx.recv() {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            let u = work(&mut state, item);
                            if out_tx.send((i, u)).is_err() {
                                break;
                            }
                        }
                    }));
                    if let Err(p) = result {
                        *panic_msg.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(panic_text(&*p));
                        stop.store(true, Ordering::SeqCst);
                    }
                });
            }
            drop(out_tx);
            drop(in_rx);

            let mut pending: BTreeMap<u64, U> = BTreeMap::new();
            let mut next = 0u64;
            let result = loop {
                if stopped() {
                    break Ok(());
                }
                match out_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok((i, u)) => {
                        if !ordered {
                            let _ = credit_rx.recv();
                            if let Err(e) = sink(u) {
                                break Err(e);
                            }
                            continue;
                        }
                        pending.insert(i, u);
                        let mut failed = None;
                        while let Some(u) = pending.remove(&next) {
                            next += 1;
                            let _ = credit_rx.recv();
                            if let Err(e) = sink(u) {
                                failed = Some(e);
                                break;
                            }
                        }
                        if let Some(e) = failed {
                            break Err(e);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break Ok(()),
                }
            };
            // Unblock everyone: no more credits or results will be taken.
            stop.store(true, Ordering::SeqCst);
            drop(out_rx);
            drop(credit_rx);
            result
        })
        .map_err(PoolError::Sink)?;

        if let Some(msg) = panic_msg.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(PoolError::WorkerPanicked(msg));
        }
        if cancel.is_cancelled() {
            return Err(PoolError::Cancelled);
        }
        Ok(())
    }
}

impl Pool {
    /// Runs a work queue that grows as it is worked: `work` may push more items into the
    /// `Vec` it is given (e.g. the sub-folders of a folder it listed). Results reach `sink` on
    /// the calling thread as they are ready. Ends when every item, pushed ones included, is done.
    pub fn run_queue<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        seeds: Vec<T>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
        mut sink: impl FnMut(U) -> Result<(), E>,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
    {
        use std::sync::atomic::AtomicUsize;
        let pending = AtomicUsize::new(seeds.len());
        let stop = AtomicBool::new(false);
        let panic_msg: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        let (job_tx, job_rx) = channel::unbounded::<T>();
        let (out_tx, out_rx) = channel::bounded::<U>(self.threads * 4);
        for s in seeds {
            let _ = job_tx.send(s);
        }
        let result = std::thread::scope(|scope| {
            for _ in 0..self.threads {
                let (job_tx, job_rx, out_tx) = (job_tx.clone(), job_rx.clone(), out_tx.clone());
                let (init, work, stop, pending, panic_msg) =
                    (&init, &work, &stop, &pending, &panic_msg);
                scope.spawn(move || {
                    let r = panic::catch_unwind(AssertUnwindSafe(|| {
                        let mut state = init();
                        let mut more = Vec::new();
                        loop {
                            if stop.load(Ordering::SeqCst) || cancel.is_cancelled() {
                                break;
                            }
                            match job_rx.recv_timeout(Duration::from_millis(5)) {
                                Ok(item) => {
                                    let u = work(&mut state, item, &mut more);
                                    pending.fetch_add(more.len(), Ordering::SeqCst);
                                    for m in more.drain(..) {
                                        let _ = job_tx.send(m);
                                    }
                                    let sent = out_tx.send(u).is_ok();
                                    pending.fetch_sub(1, Ordering::SeqCst);
                                    if !sent {
                                        break;
                                    }
                                }
                                Err(RecvTimeoutError::Timeout) => {
                                    if pending.load(Ordering::SeqCst) == 0 {
                                        break;
                                    }
                                }
                                Err(RecvTimeoutError::Disconnected) => break,
                            }
                        }
                    }));
                    if let Err(p) = r {
                        *panic_msg.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(panic_text(&*p));
                        stop.store(true, Ordering::SeqCst);
                    }
                });
            }
            drop(out_tx);
            let result = loop {
                match out_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(u) => {
                        if let Err(e) = sink(u) {
                            break Err(e);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if stop.load(Ordering::SeqCst) || cancel.is_cancelled() {
                            break Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Disconnected) => break Ok(()),
                }
            };
            stop.store(true, Ordering::SeqCst);
            drop(out_rx);
            result
        });
        result.map_err(PoolError::Sink)?;
        if let Some(msg) = panic_msg.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(PoolError::WorkerPanicked(msg));
        }
        if cancel.is_cancelled() {
            return Err(PoolError::Cancelled);
        }
        Ok(())
    }
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_results_in_input_order() {
        let pool = Pool::new(4);
        let mut got = Vec::new();
        pool.map_ordered(
            &CancelToken::new(),
            0..1000u64,
            || (),
            |_, x| {
                if x % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                x * 2
            },
            |y| {
                got.push(y);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(got, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn panicking_worker_stops_the_run() {
        let pool = Pool::new(3);
        let mut seen = 0;
        let r = pool.map_ordered(
            &CancelToken::new(),
            0..100_000u64,
            || (),
            |_, x| {
                if x == 50 {
                    panic!("boom at 50");
                }
                x
            },
            |_| {
                seen += 1;
                Ok::<(), ()>(())
            },
        );
        match r {
            Err(PoolError::WorkerPanicked(m)) => assert!(m.contains("boom")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(seen < 1000);
    }

    #[test]
    fn work_queue_runs_pushed_items() {
        // A binary tree of depth 10 generated by the workers themselves: 2^11 - 1 nodes.
        let pool = Pool::new(3);
        let mut n = 0u32;
        pool.run_queue(
            &CancelToken::new(),
            vec![0u32],
            || (),
            |_, depth, more| {
                if depth < 10 {
                    more.push(depth + 1);
                    more.push(depth + 1);
                }
                depth
            },
            |_| {
                n += 1;
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(n, 2047);
    }

    #[test]
    fn sink_error_and_cancel_stop_the_run() {
        let pool = Pool::new(2);
        let r = pool.map_unordered(
            &CancelToken::new(),
            0..10_000u32,
            || (),
            |_, x| x,
            |x| {
                if x > 10 {
                    Err("enough")
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(r, Err(PoolError::Sink("enough"))));

        let token = CancelToken::new();
        let t2 = token.clone();
        let r = pool.map_ordered(
            &token,
            0..u64::MAX,
            || (),
            |_, x| x,
            |x| {
                if x == 100 {
                    t2.cancel();
                }
                Ok::<(), ()>(())
            },
        );
        assert!(matches!(r, Err(PoolError::Cancelled)));
    }
}
