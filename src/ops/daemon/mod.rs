//! `vault daemon`: one process that runs what the config file declares, on one pool.
//!
//! - **Jobs** (`[job.NAME]` with `every` or `at`, and `[fleet]`) run one at a time on the
//!   pool's task worker ([`Pool::spawn_task`]), so a job never runs twice at once and two jobs
//!   never write one repository together; their reading, hashing and compressing runs on the
//!   compute lane, their SSH work on the network lane.
//! - **Sweeps** (`[sweep.NAME]`) run on the calling thread (ICMP) and the network lane (TCP)
//!   while a job runs, and report host transitions. A fleet host that comes up and whose last
//!   backup is older than the fleet's `max_age` is backed up at once.
//! - **Alerts**: failures, host transitions and overdue jobs (`max_age`), through the mail path.
//! - **Status**: the calling thread answers the status page, `/api/status` and `/metrics`
//!   between its other work ([`serve`]).
//!
//! The first SIGINT/SIGTERM lets a running job finish and stops; a second abandons it cleanly,
//! as `vault watch` does. SIGHUP makes [`run`] return so that the caller reloads the config.

mod finished;
pub mod metrics;
pub mod page;
mod run;
pub mod serve;
pub mod status;
mod sweeps;
mod task;
mod watches;
pub mod when;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use run::{run, Daemon, Note};
pub use when::{Calendar, When};

use crate::alert::Notifier;
use crate::engine::backup::BackupOptions;
use crate::ops::fleet::FleetOptions;
use crate::ops::remote::Remote;
use crate::ops::ssh::{SshAuth, SshOptions};
use crate::ops::sweep::SweepOptions;

#[cfg(doc)]
use crate::pool::Pool;

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

/// What a job does.
#[derive(Clone, Debug)]
pub enum Task {
    /// One folder into one repository.
    Backup(Box<BackupOptions>),
    /// Folders of remote hosts over SSH.
    Fleet(Box<FleetOptions>),
}

impl Task {
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Backup(_) => "backup",
            Task::Fleet(_) => "fleet",
        }
    }

    pub fn repo(&self) -> &std::path::Path {
        match self {
            Task::Backup(b) => &b.repo,
            Task::Fleet(f) => &f.backup.repo,
        }
    }

    /// What it backs up, for listings.
    pub fn source(&self) -> String {
        match self {
            Task::Backup(b) => match &b.remote {
                Some(r) => String::from_utf8_lossy(&r.key()).into_owned(),
                None => b.source.display().to_string(),
            },
            Task::Fleet(f) => {
                let hosts: Vec<String> = f.hosts.iter().map(|h| h.to_string()).collect();
                format!("{} : {}", hosts.join(" "), f.paths.join(" "))
            }
        }
    }
}

/// Where a job's repository is pushed after each successful run.
#[derive(Clone, Debug)]
pub struct PushTo {
    pub remote: Remote,
    pub auth: SshAuth,
    pub ssh: SshOptions,
    /// age recipients (`[push] encrypt_to`) and recipient files: an encrypted push when any.
    pub encrypt_to: Vec<String>,
    pub recipients_files: Vec<std::path::PathBuf>,
}

/// One job.
#[derive(Clone)]
pub struct DaemonJob {
    pub name: String,
    pub task: Task,
    pub when: When,
    /// A fleet job: back up a host at once when a sweep sees it come up.
    pub on_up: bool,
    /// Alert when the job has had no success for longer than this.
    pub max_age: Option<Duration>,
    pub push_to: Option<PushTo>,
    pub alerts: Arc<dyn Notifier>,
}

impl std::fmt::Debug for DaemonJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonJob")
            .field("name", &self.name)
            .field("task", &self.task)
            .field("when", &self.when)
            .finish_non_exhaustive()
    }
}

/// One sweep.
#[derive(Clone)]
pub struct DaemonSweep {
    pub name: String,
    pub opts: SweepOptions,
    pub every: Duration,
    pub alerts: Arc<dyn Notifier>,
}

impl std::fmt::Debug for DaemonSweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonSweep")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

/// What the config file declares.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub jobs: Vec<DaemonJob>,
    pub sweeps: Vec<DaemonSweep>,
}

/// When each job runs next, as `--print-schedule` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Planned {
    pub job: String,
    pub kind: &'static str,
    pub source: String,
    pub repo: String,
    pub schedule: String,
    /// For `every` jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every_s: Option<f64>,
    /// Unix seconds; `null` for a job that only runs when triggered.
    pub next: Option<i64>,
}

/// The schedule as it stands at start-up: `every` jobs are due at once, `at` jobs at their
/// next calendar time.
pub fn schedule(plan: &Plan) -> Vec<Planned> {
    let now = crate::time::now_ns() / 1_000_000;
    plan.jobs
        .iter()
        .map(|j| Planned {
            job: j.name.clone(),
            kind: j.task.kind(),
            source: j.task.source(),
            repo: j.task.repo().display().to_string(),
            schedule: j.when.describe(),
            every_s: match j.when {
                When::Every(d) => Some(d.as_secs_f64()),
                _ => None,
            },
            next: j.when.next(None, now).map(|ms| ms / 1000),
        })
        .collect()
}
