//! One job run on the pool's task worker: the backup or fleet run, then its push, then the
//! repository's snapshot list for the status page. The result comes back over a channel.

use crossbeam::channel::{self, Receiver};

use super::{PushTo, Task};
use crate::engine::backup::{backup, BackupReport};
use crate::engine::query::SnapshotInfo;
use crate::error::Error;
use crate::ops::fleet::{backup_fleet, FleetReport};
use crate::ops::remote::{push, PushOptions, SyncReport};
use crate::pool::{CancelToken, Pool};
use crate::progress::NoProgress;

/// What the task did.
#[derive(Debug)]
pub enum Ran {
    Backup(Result<Box<BackupReport>, Error>),
    Fleet(Result<FleetReport, Error>),
}

impl Ran {
    /// Whether it recorded anything (a push follows only then).
    fn recorded(&self) -> bool {
        match self {
            Ran::Backup(r) => r.as_ref().is_ok_and(|r| r.snapshot.is_some()),
            Ran::Fleet(r) => r
                .as_ref()
                .is_ok_and(|r| r.hosts.iter().any(|h| h.snapshot.is_some())),
        }
    }
}

/// A finished task.
#[derive(Debug)]
pub struct Finished {
    pub job: String,
    pub ran: Ran,
    pub push: Option<Result<SyncReport, Error>>,
    /// The job's `forget_after`, when it ran.
    pub forgot: Option<Result<crate::engine::forget::ForgetReport, Error>>,
    /// The repository's snapshots after the run (None if it could not be read).
    pub snapshots: Option<Vec<SnapshotInfo>>,
    pub duration_s: f64,
}

/// Starts `task` on the task worker; the receiver gets its [`Finished`].
pub fn start(
    job: String,
    task: Task,
    push_to: Option<PushTo>,
    pool: &Pool,
    abort: &CancelToken,
) -> Receiver<Finished> {
    let (tx, rx) = channel::bounded(1);
    let (p, abort) = (pool.clone(), abort.clone());
    pool.spawn_task(move || {
        let started = std::time::Instant::now();
        let ran = match &task {
            Task::Backup(b) => Ran::Backup(backup(b, &p, &abort, &NoProgress).map(Box::new)),
            Task::Fleet(f) => Ran::Fleet(backup_fleet(f, &p, &abort)),
        };
        let forgot = match (&task, &ran) {
            (Task::Backup(b), Ran::Backup(Ok(r))) => crate::engine::forget::after_backup(b, r),
            _ => None,
        };
        let push = match &push_to {
            Some(to) if ran.recorded() && !abort.is_cancelled() => {
                Some(push_to_remote(task.repo(), to))
            }
            _ => None,
        };
        let snapshots = crate::engine::repo::Repository::open(task.repo())
            .and_then(|r| crate::engine::query::snapshots(&r, None))
            .ok();
        let _ = tx.send(Finished {
            job,
            ran,
            push,
            forgot,
            snapshots,
            duration_s: started.elapsed().as_secs_f64(),
        });
    });
    rx
}

/// A job's push: encrypted when the config names recipients.
fn push_to_remote(repo: &std::path::Path, to: &PushTo) -> Result<SyncReport, Error> {
    if to.encrypt_to.is_empty() && to.recipients_files.is_empty() {
        return push(repo, &to.remote, &to.auth, &to.ssh, PushOptions::default());
    }
    let r = crate::ops::crypt::Recipients::parse(&to.encrypt_to, &to.recipients_files)
        .map_err(|e| Error::Usage(e.to_string()))?;
    crate::ops::remote::push_sealed(
        repo,
        &to.remote,
        (&to.auth, &to.ssh),
        PushOptions::default(),
        &r,
    )
}
