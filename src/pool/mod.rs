//! The one worker pool that every module runs its parallel work on.
//!
//! A process makes one [`Pool`] (from `--jobs`) and hands it to every module. It has three lanes
//! of long-lived worker threads fed over crossbeam channels (`lane`):
//! - **compute** (`--jobs` threads, default: the cores): walking, reading, hashing, compressing,
//!   writing restored files, checking archives. The archive compressor and the readers share
//!   these workers, so `--jobs N` means N busy threads.
//! - **network** (`--parallel` threads where a command has that flag): blocking network work
//!   (SSH sessions, name lookups, TCP probes), which waits rather than computes.
//! - **task** (1 thread, `vault daemon` only): one long task at a time (a scheduled backup or
//!   fleet run) beside the calling thread, which keeps sweeping and serving the status page.
//!
//! A lane's threads start with its first job, so a command that never uses a lane has none of
//! its threads. Besides the lanes, the only threads are the caller's, the signal thread
//! (`main.rs`), the watcher thread of `vault watch` (the notify crate's) and the [`ticker`]
//! (deadlines for SSH connections, started by the first one), and under `vault daemon --listen`
//! the tiny_http crate's listener thread and its connection threads.
//!
//! Promises of the map functions (`map`):
//! - Bounded: at most `window` items are in flight between the feeder and the sink.
//! - Per-worker state: `init` builds at most one state a worker (e.g. a read buffer).
//! - Ordered results where asked: [`Pool::map_ordered`] hands results to the sink in input order.
//! - One sink: results are consumed on the calling thread, which therefore owns the archive
//!   writer or the database connection; workers never touch them.
//! - Stopping: a [`CancelToken`] (wired to Ctrl-C by the CLI only) stops feeding and returns
//!   [`PoolError::Cancelled`]; a worker that panics stops the run with
//!   [`PoolError::WorkerPanicked`]; a sink error stops everything and is returned as is. In every
//!   case the call returns only after the jobs it started have finished.

mod lane;
mod map;
pub mod ticker;

pub use lane::Scope;
use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// The process's worker pool: a compute lane and a network lane (see the module notes).
/// Cloning gives another handle to the same threads.
#[derive(Clone)]
pub struct Pool {
    compute: Arc<lane::Lane>,
    network: Arc<lane::Lane>,
    task: Arc<lane::Lane>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("compute", &self.compute.size())
            .field("network", &self.network.size())
            .finish()
    }
}

/// The number of cores, for a default of 0.
fn or_cores(n: usize) -> usize {
    if n == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        n
    }
}

impl Pool {
    /// A pool of `threads` compute workers (0: the number of cores) and as many network ones.
    pub fn new(threads: usize) -> Pool {
        let threads = or_cores(threads);
        Pool::with_network(threads, threads)
    }

    /// A pool of `compute` workers and `network` blocking-network workers (0: the cores).
    pub fn with_network(compute: usize, network: usize) -> Pool {
        Pool {
            compute: lane::Lane::new("compute", or_cores(compute)),
            network: lane::Lane::new("network", or_cores(network)),
            task: lane::Lane::new("task", 1),
        }
    }

    /// The number of compute workers.
    pub fn threads(&self) -> usize {
        self.compute.size()
    }

    /// A handle whose maps and scopes run on the network lane (blocking network work).
    pub fn network(&self) -> Pool {
        Pool {
            compute: self.network.clone(),
            network: self.network.clone(),
            task: self.task.clone(),
        }
    }

    /// Runs `f` with a [`Scope`] whose jobs run on this pool's workers and may borrow from the
    /// caller; returns when all of them have finished (`Err` with the message if one panicked).
    pub fn scope<'env, R>(
        &self,
        f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> R,
    ) -> Result<R, String> {
        lane::run_scope(&self.compute, f)
    }

    /// Runs `job` on the one **task** worker, beside the calling thread: a long task of
    /// `vault daemon` (a backup, a fleet run) that itself feeds the compute and network lanes
    /// while the caller goes on sweeping and serving. Tasks run one at a time, in order.
    pub fn spawn_task(&self, job: impl FnOnce() + Send + 'static) {
        self.task.submit(Box::new(job));
    }

    /// Runs `job` on a worker, detached from the caller (it must own what it uses).
    pub(crate) fn submit(&self, job: impl FnOnce() + Send + 'static) {
        self.compute.submit(Box::new(job));
    }

    /// Runs `work` over every item on the workers and gives each result to `sink` on the calling
    /// thread, in input order.
    pub fn map_ordered<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        items: impl IntoIterator<Item = T>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
        S: Send,
    {
        let work = |s: &mut S, t: T, _: &mut Vec<T>| work(s, t);
        let feed = map::feed_all(items);
        map::run(
            &self.compute,
            cancel,
            init,
            work,
            sink,
            map::Discipline::plain(map::Order::Input),
            feed,
        )
    }

    /// Like [`Pool::map_ordered`] but results reach the sink as soon as they are ready.
    pub fn map_unordered<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        items: impl IntoIterator<Item = T>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
        S: Send,
    {
        let work = |s: &mut S, t: T, _: &mut Vec<T>| work(s, t);
        let feed = map::feed_all(items);
        map::run(
            &self.compute,
            cancel,
            init,
            work,
            sink,
            map::Discipline::plain(map::Order::AsReady),
            feed,
        )
    }

    /// Runs a work queue that grows as it is worked: `work` may push more items into the
    /// `Vec` it is given (e.g. the sub-folders of a folder it listed). Results reach `sink` on
    /// the calling thread as they are ready. Pushed items are taken last in, first out. Ends when
    /// every item, pushed ones included, is done.
    pub fn run_queue<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        seeds: Vec<T>,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T, &mut Vec<T>) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
        backlog: &dyn Fn() -> bool,
    ) -> Result<(), PoolError<E>>
    where
        T: Send + Ord,
        U: Send,
        S: Send,
    {
        let feed = map::feed_all(seeds);
        map::run(
            &self.compute,
            cancel,
            init,
            work,
            sink,
            map::Discipline {
                order: map::Order::Queue,
                first: |a, b| a.cmp(b),
                backlog,
            },
            feed,
        )
    }

    /// Like [`Pool::map_unordered`], for items that come from a callback rather than an
    /// iterator (a walk over an archive's members): `feed` runs on the calling thread and gets
    /// a function that takes one item and returns false once the run is stopping.
    pub fn map_fed<T, U, S, E>(
        &self,
        cancel: &CancelToken,
        init: impl Fn() -> S + Sync,
        work: impl Fn(&mut S, T) -> U + Sync,
        sink: impl FnMut(U) -> Result<(), E>,
        feed: impl FnOnce(&mut dyn FnMut(T) -> bool),
    ) -> Result<(), PoolError<E>>
    where
        T: Send,
        U: Send,
        S: Send,
    {
        let work = |s: &mut S, t: T, _: &mut Vec<T>| work(s, t);
        map::run(
            &self.compute,
            cancel,
            init,
            work,
            sink,
            map::Discipline::plain(map::Order::AsReady),
            feed,
        )
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
    use std::time::Duration;

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
        // A binary tree of depth 10 generated by the workers themselves: 2^11 - 1 nodes, with
        // the full window and with a backlog that keeps one item out at a time.
        let pool = Pool::new(3);
        for backlog in [false, true] {
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
                &|| backlog,
            )
            .unwrap();
            assert_eq!(n, 2047);
        }
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

    #[test]
    fn scoped_jobs_borrow_and_the_scope_waits_for_them() {
        let pool = Pool::new(2);
        let mut slots = vec![0u64; 64];
        let r = pool.scope(|s| {
            for (i, slot) in slots.iter_mut().enumerate() {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_micros(100));
                    *slot = i as u64 * 3;
                });
            }
        });
        assert!(r.is_ok());
        // Every job has run and let go of its borrow before scope returned.
        assert_eq!(slots, (0..64).map(|i| i * 3).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_scoped_job_is_reported_after_the_others_finish() {
        let pool = Pool::new(2);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let r = pool.scope(|s| {
            for i in 0..10 {
                let done = &done;
                s.spawn(move || {
                    if i == 3 {
                        panic!("job 3 failed");
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(r.unwrap_err(), "job 3 failed");
        assert_eq!(done.load(Ordering::SeqCst), 9);
        // The workers survive: the pool still runs work.
        let mut n = 0;
        pool.map_unordered(
            &CancelToken::new(),
            0..100,
            || (),
            |_, x| x,
            |_| {
                n += 1;
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(n, 100);
    }

    #[test]
    fn a_map_started_on_a_worker_runs_there_instead_of_deadlocking() {
        // One worker, busy with a job that itself maps on the same lane: the inner jobs run
        // inline on that worker rather than queueing behind it.
        let pool = Pool::new(1);
        let inner = pool.clone();
        let total = std::sync::atomic::AtomicU64::new(0);
        pool.scope(|s| {
            s.spawn(|| {
                let mut sum = 0;
                inner
                    .map_ordered(
                        &CancelToken::new(),
                        1..=100u64,
                        || (),
                        |_, x| x,
                        |x| {
                            sum += x;
                            Ok::<(), ()>(())
                        },
                    )
                    .unwrap();
                total.store(sum, Ordering::SeqCst);
            });
        })
        .unwrap();
        assert_eq!(total.load(Ordering::SeqCst), 5050);
    }
}
