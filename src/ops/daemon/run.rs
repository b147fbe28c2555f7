//! The daemon's loop on the calling thread: start due jobs on the task worker, take their
//! results, run due sweeps, raise alerts, and answer the status page in between.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, TryRecvError};

use super::status::{now_s, EventKind, JobRow, Outcome, RepoSeries, Status, SweepRow};
use super::task::{self, Finished, Ran};
use super::{DaemonJob, Plan, Stopped, Task, When, RELOAD};
use crate::alert::Event;
use crate::pool::{CancelToken, Pool};

/// What the loop tells its caller as it goes (for the log and `--json`).
#[derive(Debug)]
pub enum Note<'a> {
    /// An event, as the status page lists it.
    Event(&'a super::status::EventRow),
    /// A job's report (the backup's or the fleet run's JSON).
    Report {
        job: &'a str,
        report: serde_json::Value,
    },
}

/// A job waiting for the task worker: its name and, for a triggered fleet run, its task.
struct Queued {
    job: String,
    task: Option<Task>,
}

/// The running job.
struct Running {
    job: String,
    rx: Receiver<Finished>,
}

/// The daemon's state, kept across config reloads.
pub struct Daemon {
    pub status: Status,
    /// When each job runs next (unix ms), by name.
    next: HashMap<String, Option<i64>>,
    /// When each sweep runs next.
    pub(super) sweep_next: HashMap<String, Instant>,
    /// Each sweep's hosts as last seen (host → up), for transitions.
    pub(super) seen: HashMap<String, HashMap<String, bool>>,
    queue: VecDeque<Queued>,
    running: Option<Running>,
    /// The file system watch of each `watch = true` job.
    pub(super) watches: HashMap<String, super::watches::Watched>,
    pub server: Option<tiny_http::Server>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("status", &self.status)
            .field("next", &self.next)
            .field("running", &self.running.as_ref().map(|r| &r.job))
            .finish_non_exhaustive()
    }
}

impl Daemon {
    pub fn new(server: Option<tiny_http::Server>) -> Daemon {
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            started: now_s(),
            now: now_s(),
            ..Status::default()
        };
        Daemon {
            status,
            next: HashMap::new(),
            sweep_next: HashMap::new(),
            seen: HashMap::new(),
            queue: VecDeque::new(),
            running: None,
            watches: HashMap::new(),
            server,
        }
    }

    /// Takes a (new) plan: rows for its jobs and sweeps, keeping what is known of old ones.
    fn adopt(&mut self, plan: &Plan) {
        let now = now_ms();
        let old: HashMap<String, JobRow> = self
            .status
            .jobs
            .drain(..)
            .map(|j| (j.name.clone(), j))
            .collect();
        self.next
            .retain(|n, _| plan.jobs.iter().any(|j| &j.name == n));
        for j in &plan.jobs {
            let next = *self
                .next
                .entry(j.name.clone())
                .or_insert_with(|| j.when.next(None, now));
            let mut row = old.get(&j.name).cloned().unwrap_or_default();
            row.name = j.name.clone();
            row.kind = j.task.kind();
            row.source = j.task.source();
            row.repo = j.task.repo().display().to_string();
            row.schedule = j.when.describe();
            row.max_age_s = j.max_age.map(|d| d.as_secs_f64());
            row.next_run = next.map(|ms| ms / 1000);
            self.status.jobs.push(row);
        }
        let old: HashMap<String, SweepRow> = self
            .status
            .sweeps
            .drain(..)
            .map(|s| (s.name.clone(), s))
            .collect();
        for s in &plan.sweeps {
            let mut row = old.get(&s.name).cloned().unwrap_or_default();
            row.name = s.name.clone();
            row.targets = s.opts.targets.clone();
            row.every_s = s.every.as_secs_f64();
            self.status.sweeps.push(row);
        }
        let names: Vec<&str> = plan.sweeps.iter().map(|s| s.name.as_str()).collect();
        self.status
            .hosts
            .retain(|h| names.contains(&h.sweep.as_str()));
        self.refresh_repos(plan);
        self.watches.retain(|n, _| {
            plan.jobs
                .iter()
                .any(|j| &j.name == n && matches!(j.when, When::Watch { .. }))
        });
    }

    /// Reads the repositories' snapshot lists (at start-up and after a reload).
    fn refresh_repos(&mut self, plan: &Plan) {
        for j in &plan.jobs {
            let repo = j.task.repo();
            if let Ok(list) = crate::engine::repo::Repository::open(repo)
                .and_then(|r| crate::engine::query::snapshots(&r, None))
            {
                self.status
                    .set_repo(RepoSeries::of(&repo.display().to_string(), &list));
            }
            let prefix = job_source_prefix(&j.task);
            let newest = self.repo_newest(j.task.repo(), &prefix);
            if let Some(row) = self.status.job_mut(&j.name) {
                row.last_success = row.last_success.max(newest);
            }
        }
    }

    fn repo_newest(&self, repo: &std::path::Path, prefix: &str) -> Option<i64> {
        let key = repo.display().to_string();
        self.status
            .repos
            .iter()
            .find(|r| r.repo == key)
            .and_then(|r| r.newest(prefix))
    }

    /// Records an event and tells the caller.
    pub(super) fn event(&mut self, kind: EventKind, text: String, note: &mut dyn FnMut(Note<'_>)) {
        let row = self.status.event(kind, text);
        note(Note::Event(&row));
    }

    /// Starts the next job if the task worker is free: triggered runs first, then the job
    /// due earliest.
    fn start_next(&mut self, plan: &Plan, pool: &Pool, abort: &CancelToken) {
        if self.running.is_some() {
            return;
        }
        let now = now_ms();
        let queued = self.queue.pop_front().or_else(|| {
            plan.jobs
                .iter()
                .filter_map(|j| Some((j, (*self.next.get(&j.name)?)?)))
                .filter(|(_, t)| *t <= now)
                .min_by_key(|(_, t)| *t)
                .map(|(j, _)| Queued {
                    job: j.name.clone(),
                    task: None,
                })
        });
        let Some(q) = queued else { return };
        let Some(job) = plan.jobs.iter().find(|j| j.name == q.job) else {
            return;
        };
        if q.task.is_none() {
            let next = job.when.next(Some(now), now + 1);
            self.next.insert(job.name.clone(), next);
        }
        let task = q.task.unwrap_or_else(|| job.task.clone());
        let rx = task::start(job.name.clone(), task, job.push_to.clone(), pool, abort);
        let next = self.next.get(&job.name).copied().flatten();
        if let Some(row) = self.status.job_mut(&job.name) {
            row.running = true;
            row.last_run = Some(now / 1000);
            row.next_run = next.map(|ms| ms / 1000);
        }
        self.status.running = Some(job.name.clone());
        self.running = Some(Running {
            job: job.name.clone(),
            rx,
        });
    }

    /// Takes the running job's result when it has one.
    fn collect(&mut self, plan: &Plan, note: &mut dyn FnMut(Note<'_>)) {
        let Some(r) = &self.running else { return };
        let done = match r.rx.try_recv() {
            Ok(done) => done,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Finished {
                job: r.job.clone(),
                ran: Ran::Backup(Err(crate::error::Error::Internal(
                    "the job's worker stopped without a result".into(),
                ))),
                push: None,
                forgot: None,
                snapshots: None,
                duration_s: 0.0,
            },
        };
        self.running = None;
        self.status.running = None;
        let job = plan.jobs.iter().find(|j| j.name == done.job);
        self.finished(job, done, note);
    }

    /// A job's sweeps, overdue checks and alerts for one turn of the loop.
    fn turn(
        &mut self,
        plan: &Plan,
        pool: &Pool,
        stop: &CancelToken,
        note: &mut dyn FnMut(Note<'_>),
    ) {
        self.collect(plan, note);
        if !stop.is_cancelled() {
            self.sweeps(plan, pool, stop, note);
            self.overdue(plan, note);
            self.watch_jobs(plan, note);
        }
        self.status.now = now_s();
    }

    /// Alerts once for each job whose last success is older than its `max_age`.
    fn overdue(&mut self, plan: &Plan, note: &mut dyn FnMut(Note<'_>)) {
        let now = now_s();
        let started = self.status.started;
        for j in &plan.jobs {
            let Some(max) = j.max_age else { continue };
            let Some(row) = self.status.job_mut(&j.name) else {
                continue;
            };
            let since = row.last_success.unwrap_or(started);
            let late = now.saturating_sub(since) as f64 > max.as_secs_f64();
            if !late || row.overdue {
                row.overdue = late;
                continue;
            }
            row.overdue = true;
            let last = row.last_success;
            let age = crate::time::human_duration(max);
            self.event(
                EventKind::Overdue,
                format!("{}: no success in {age} (max_age): OVERDUE", j.name),
                note,
            );
            let ev = Event::Overdue {
                job: j.name.clone(),
                last: last.map(|s| crate::time::rfc3339(s.saturating_mul(1_000_000_000))),
                max_age: age,
            };
            alert(j, ev, self, note);
        }
    }

    /// Queues a fleet run of one host (a host that came up).
    pub(super) fn trigger(&mut self, job: &DaemonJob, task: Task) {
        if !self.queue.iter().any(|q| q.job == job.name) {
            self.queue.push_back(Queued {
                job: job.name.clone(),
                task: Some(task),
            });
        }
    }

    pub(super) fn busy(&self) -> bool {
        self.running.is_some()
    }

    /// Whether the job is running or waiting to.
    pub(super) fn pending(&self, job: &str) -> bool {
        self.running.as_ref().is_some_and(|r| r.job == job)
            || self.queue.iter().any(|q| q.job == job)
    }

    /// Answers status requests for up to `wait`.
    fn serve(&mut self, wait: Duration) {
        match &self.server {
            Some(server) => super::serve::answer_for(server, &self.status, wait),
            None => std::thread::sleep(wait),
        }
    }
}

/// Sends a job's alert; a mail that cannot be sent is an event, never a stop.
pub(super) fn alert(job: &DaemonJob, ev: Event, d: &mut Daemon, note: &mut dyn FnMut(Note<'_>)) {
    if let Err(e) = job.alerts.notify(&[ev]) {
        d.event(
            EventKind::Failed,
            format!("{}: alert mail not sent: {e}", job.name),
            note,
        );
    }
}

/// The prefix of the source keys a job writes (`/srv/www`, `host:` for a fleet).
fn job_source_prefix(task: &Task) -> String {
    match task {
        Task::Backup(b) => match &b.remote {
            Some(r) => String::from_utf8_lossy(&r.key()).into_owned(),
            None => std::fs::canonicalize(&b.source)
                .unwrap_or_else(|_| b.source.clone())
                .display()
                .to_string(),
        },
        Task::Fleet(_) => String::new(),
    }
}

pub(super) fn now_ms() -> i64 {
    crate::time::now_ns() / 1_000_000
}

/// Runs the plan until SIGINT/SIGTERM (after the running job ends; `abort` abandons it) or
/// SIGHUP; `note` hears every event and report.
pub fn run(
    d: &mut Daemon,
    plan: &Plan,
    pool: &Pool,
    (stop, abort): (&CancelToken, &CancelToken),
    note: &mut dyn FnMut(Note<'_>),
) -> Stopped {
    d.adopt(plan);
    loop {
        d.turn(plan, pool, stop, note);
        if stop.is_cancelled() && d.running.is_none() {
            return Stopped::Signal;
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            return Stopped::Reload;
        }
        if !stop.is_cancelled() {
            d.start_next(plan, pool, abort);
        }
        d.serve(Duration::from_millis(50));
    }
}

/// A finished job's outcome and what it stored, from its report.
pub(super) fn outcome_of(ran: &Ran) -> (Outcome, u64, u64, Option<String>) {
    match ran {
        Ran::Backup(Ok(r)) => (
            if r.warnings.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Partial
            },
            r.stats.bytes_stored,
            r.stats.files,
            r.snapshot.clone(),
        ),
        Ran::Fleet(Ok(f)) => {
            let trouble = f.hosts.iter().any(|h| h.trouble());
            let all_failed = f.hosts.iter().all(|h| h.error.is_some());
            let stats = f.hosts.iter().filter_map(|h| h.stats.as_ref());
            let (bytes, files) = stats.fold((0, 0), |(b, n), s| (b + s.bytes_stored, n + s.files));
            let outcome = match (all_failed && !f.hosts.is_empty(), trouble) {
                (true, _) => Outcome::Failed,
                (false, true) => Outcome::Partial,
                _ => Outcome::Ok,
            };
            let last = f.hosts.iter().rev().find_map(|h| h.snapshot.clone());
            (outcome, bytes, files, last)
        }
        Ran::Backup(Err(_)) | Ran::Fleet(Err(_)) => (Outcome::Failed, 0, 0, None),
    }
}

impl When {
    /// Whether the job has a schedule of its own.
    pub fn scheduled(&self) -> bool {
        !matches!(self, When::Triggered)
    }
}
