//! What the daemon knows and shows: its jobs, the hosts its sweeps see, the repositories'
//! history and its last events. The status page, `/api/status` and `/metrics` are views of
//! this one value (serialized as is for `/api/status`).

use std::collections::VecDeque;

use serde::Serialize;

use crate::engine::query::SnapshotInfo;

/// How many events the daemon keeps (and the page lists).
pub const EVENTS_KEPT: usize = 50;
/// How many sweep timings each sweep keeps.
const TIMINGS_KEPT: usize = 200;

/// How a job's last run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// A snapshot was recorded, but some files (or fleet hosts) were left out.
    Partial,
    Failed,
}

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Started,
    Backup,
    Failed,
    Push,
    Down,
    Up,
    Overdue,
    Trigger,
    Reload,
}

/// One line of the event list.
#[derive(Clone, Debug, Serialize)]
pub struct EventRow {
    /// Unix seconds.
    pub time: i64,
    pub kind: EventKind,
    pub text: String,
}

/// One job, as the jobs table shows it. Times are unix seconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobRow {
    pub name: String,
    /// `backup` or `fleet`.
    pub kind: &'static str,
    pub source: String,
    pub repo: String,
    pub schedule: String,
    pub running: bool,
    pub last_run: Option<i64>,
    pub outcome: Option<Outcome>,
    pub duration_s: Option<f64>,
    pub next_run: Option<i64>,
    pub max_age_s: Option<f64>,
    pub overdue: bool,
    pub last_success: Option<i64>,
    pub last_snapshot: Option<String>,
    /// Of the last successful run.
    pub bytes_stored: u64,
    pub files: u64,
    pub runs: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// One host a sweep sees.
#[derive(Clone, Debug, Serialize)]
pub struct HostRow {
    pub host: String,
    pub address: String,
    pub sweep: String,
    pub up: bool,
    pub rtt_ms: Option<f64>,
    /// When it was last seen to change (or first seen), unix seconds.
    pub since: i64,
    /// Its newest snapshot in any repository the daemon writes (unix seconds).
    pub last_backup: Option<i64>,
}

/// One sweep's timing.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SweepTiming {
    pub at: i64,
    pub duration_s: f64,
    /// A backup or fleet run was running meanwhile.
    pub busy: bool,
}

/// One configured sweep.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SweepRow {
    pub name: String,
    pub targets: Vec<String>,
    pub every_s: f64,
    pub last_run: Option<i64>,
    pub up: usize,
    pub down: usize,
    pub timings: VecDeque<SweepTiming>,
    pub last_error: Option<String>,
}

impl SweepRow {
    pub fn timed(&mut self, t: SweepTiming) {
        if self.timings.len() == TIMINGS_KEPT {
            self.timings.pop_front();
        }
        self.timings.push_back(t);
    }
}

/// One snapshot, as the chart draws it.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub time: i64,
    pub source: String,
    pub files: u64,
    pub bytes_stored: u64,
    /// The repository's archives up to and including this snapshot.
    pub total_bytes: u64,
}

/// A repository's history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoSeries {
    pub repo: String,
    pub size_bytes: u64,
    pub snapshots: usize,
    pub points: Vec<Point>,
}

impl RepoSeries {
    /// The series of `repo` from its snapshot list (oldest first).
    pub fn of(repo: &str, list: &[SnapshotInfo]) -> RepoSeries {
        let mut total = 0u64;
        let points: Vec<Point> = list
            .iter()
            .map(|s| {
                total = total.saturating_add(s.bytes_stored);
                Point {
                    time: s.time_ns.div_euclid(1_000_000_000),
                    source: s.source.clone(),
                    files: s.files,
                    bytes_stored: s.bytes_stored,
                    total_bytes: total,
                }
            })
            .collect();
        RepoSeries {
            repo: repo.to_string(),
            size_bytes: total,
            snapshots: points.len(),
            points,
        }
    }

    /// The newest snapshot time of a source whose key starts with `prefix`.
    pub fn newest(&self, prefix: &str) -> Option<i64> {
        self.points
            .iter()
            .filter(|p| p.source.starts_with(prefix))
            .map(|p| p.time)
            .max()
    }
}

/// Everything the daemon shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub version: &'static str,
    /// Unix seconds.
    pub started: i64,
    pub now: i64,
    pub running: Option<String>,
    pub jobs: Vec<JobRow>,
    pub sweeps: Vec<SweepRow>,
    pub hosts: Vec<HostRow>,
    pub repos: Vec<RepoSeries>,
    /// Newest first.
    pub events: VecDeque<EventRow>,
}

impl Status {
    /// Adds an event (the oldest goes past [`EVENTS_KEPT`]) and returns it.
    pub fn event(&mut self, kind: EventKind, text: String) -> EventRow {
        let row = EventRow {
            time: now_s(),
            kind,
            text,
        };
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_back();
        }
        self.events.push_front(row.clone());
        row
    }

    pub fn job_mut(&mut self, name: &str) -> Option<&mut JobRow> {
        self.jobs.iter_mut().find(|j| j.name == name)
    }

    /// Replaces (or adds) a repository's series and refreshes the hosts' last backups.
    pub fn set_repo(&mut self, series: RepoSeries) {
        match self.repos.iter_mut().find(|r| r.repo == series.repo) {
            Some(r) => *r = series,
            None => self.repos.push(series),
        }
        for h in &mut self.hosts {
            h.last_backup = newest_of_host(&self.repos, &h.host, &h.address);
        }
    }
}

/// The newest snapshot of any source on `host` (by name or address) across `repos`.
pub fn newest_of_host(repos: &[RepoSeries], host: &str, address: &str) -> Option<i64> {
    repos
        .iter()
        .flat_map(|r| {
            [
                r.newest(&format!("{host}:")),
                r.newest(&format!("{address}:")),
            ]
        })
        .flatten()
        .max()
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    crate::time::now_ns() / 1_000_000_000
}
