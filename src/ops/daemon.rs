//! `vault daemon`: one process that runs the config file's scheduled backup jobs on one pool.
//! Jobs run one at a time (a job never runs twice at once, and two jobs never write one
//! repository together); each is due `every` after its last start (the first run is at
//! start-up). The first SIGINT/SIGTERM lets a running backup finish and stops; a second
//! abandons it cleanly, as `vault watch` does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::engine::backup::{backup, BackupOptions, BackupReport};
use crate::error::Error;
use crate::pool::{CancelToken, Pool};
use crate::progress::NoProgress;

/// Set by SIGHUP (the binary's signal thread): reload the config between jobs.
pub static RELOAD: AtomicBool = AtomicBool::new(false);

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// SIGINT/SIGTERM: stop.
    Signal,
    /// SIGHUP: reload the config, then run again.
    Reload,
}

/// One scheduled job.
#[derive(Clone, Debug)]
pub struct DaemonJob {
    pub name: String,
    pub every: Duration,
    pub backup: BackupOptions,
}

/// What the daemon reports as it goes.
#[derive(Debug)]
pub enum DaemonEvent<'a> {
    /// A job's backup ended.
    Done {
        job: &'a DaemonJob,
        report: &'a BackupReport,
    },
    /// A job's backup failed; it runs again when next due.
    Failed {
        job: &'a DaemonJob,
        error: &'a Error,
    },
}

/// When each job runs next.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Planned {
    pub job: String,
    pub source: String,
    pub repo: String,
    pub every_s: f64,
    /// Unix seconds.
    pub next: i64,
}

/// The schedule as it stands at start-up: every job is due at once, then every `every`.
pub fn schedule(jobs: &[DaemonJob]) -> Vec<Planned> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    jobs.iter()
        .map(|j| Planned {
            job: j.name.clone(),
            source: j.backup.source.display().to_string(),
            repo: j.backup.repo.display().to_string(),
            every_s: j.every.as_secs_f64(),
            next: now,
        })
        .collect()
}

/// Runs the jobs until `stop` (or a reload request); `abort` abandons a running backup.
/// `next` holds when each job (by name) runs next, kept across reloads; a job it does not
/// know runs at once.
pub fn run(
    jobs: &[DaemonJob],
    next: &mut HashMap<String, Instant>,
    pool: &Pool,
    (stop, abort): (&CancelToken, &CancelToken),
    on_event: &mut dyn FnMut(DaemonEvent<'_>),
) -> Stopped {
    let start = Instant::now();
    next.retain(|name, _| jobs.iter().any(|j| &j.name == name));
    for j in jobs {
        next.entry(j.name.clone()).or_insert(start);
    }
    while !stop.is_cancelled() {
        if RELOAD.swap(false, Ordering::SeqCst) {
            return Stopped::Reload;
        }
        let due = |j: &DaemonJob| next.get(&j.name).copied().unwrap_or(start);
        let Some(job) = jobs.iter().min_by_key(|j| due(j)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let now = Instant::now();
        if due(job) > now {
            std::thread::sleep((due(job) - now).min(Duration::from_millis(100)));
            continue;
        }
        next.insert(job.name.clone(), now + job.every);
        match backup(&job.backup, pool, abort, &NoProgress) {
            Ok(report) => on_event(DaemonEvent::Done {
                job,
                report: &report,
            }),
            Err(Error::Cancelled) if abort.is_cancelled() => break,
            Err(error) => on_event(DaemonEvent::Failed { job, error: &error }),
        }
    }
    Stopped::Signal
}
