//! The daemon's sweeps: run each when due on the calling thread, keep the host grid, alert on
//! transitions, and back up a fleet host that comes up when its last backup is too old.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::run::{Daemon, Note};
use super::status::{newest_of_host, now_s, EventKind, HostRow, SweepTiming};
use super::{DaemonSweep, Plan, Task};
use crate::ops::sweep::{sweep, HostState, SweepReport, Transition};
use crate::pool::{CancelToken, Pool};

impl Daemon {
    /// Runs every sweep that is due.
    pub(super) fn sweeps(
        &mut self,
        plan: &Plan,
        pool: &Pool,
        stop: &CancelToken,
        note: &mut dyn FnMut(Note<'_>),
    ) {
        for s in &plan.sweeps {
            let now = Instant::now();
            let due = self.sweep_next.get(&s.name).map_or(true, |t| *t <= now);
            if !due {
                continue;
            }
            self.sweep_next.insert(s.name.clone(), now + s.every);
            let busy = self.busy();
            let started = Instant::now();
            let result = sweep(&s.opts, pool, stop);
            let duration_s = started.elapsed().as_secs_f64();
            match result {
                Ok(report) => self.swept(plan, s, report, (busy, duration_s), note),
                Err(_) if stop.is_cancelled() => return,
                Err(e) => {
                    if let Some(row) = self.status.sweeps.iter_mut().find(|r| r.name == s.name) {
                        row.last_error = Some(e.to_string());
                        row.last_run = Some(now_s());
                    }
                    let text = format!("sweep {}: {e}", s.name);
                    self.event(EventKind::Failed, text, note);
                }
            }
        }
    }

    /// Takes one sweep's report: the grid, the transitions and their alerts, the triggers.
    fn swept(
        &mut self,
        plan: &Plan,
        s: &DaemonSweep,
        mut report: SweepReport,
        (busy, duration_s): (bool, f64),
        note: &mut dyn FnMut(Note<'_>),
    ) {
        let seen = self.seen.entry(s.name.clone()).or_default();
        if s.opts.state_dir.is_none() {
            report.transitions = transitions(seen, &report);
        }
        *seen = report
            .hosts
            .iter()
            .map(|h| (h.host.clone(), h.up))
            .collect();
        if let Some(row) = self.status.sweeps.iter_mut().find(|r| r.name == s.name) {
            row.last_run = Some(now_s());
            row.up = report.up;
            row.down = report.down;
            row.last_error = None;
            row.timed(SweepTiming {
                at: now_s(),
                duration_s,
                busy,
            });
        }
        self.grid(&s.name, &report);
        for t in &report.transitions {
            let (kind, word) = match t.to {
                HostState::Down => (EventKind::Down, "DOWN"),
                HostState::Up => (EventKind::Up, "up"),
            };
            self.event(kind, format!("{}: {} is {word}", s.name, t.host), note);
        }
        let events = report.events();
        if !events.is_empty() {
            if let Err(e) = s.alerts.notify(&events) {
                let text = format!("sweep {}: alert mail not sent: {e}", s.name);
                self.event(EventKind::Failed, text, note);
            }
        }
        for t in report.transitions.iter().filter(|t| t.to == HostState::Up) {
            let address = report
                .hosts
                .iter()
                .find(|h| h.host == t.host)
                .map_or(t.host.clone(), |h| h.address.clone());
            self.came_up(plan, &t.host, &address, note);
        }
    }

    /// Updates the host grid with one sweep's hosts.
    fn grid(&mut self, sweep: &str, report: &SweepReport) {
        let now = now_s();
        let mut rows: Vec<HostRow> = Vec::with_capacity(report.hosts.len());
        for h in &report.hosts {
            let old = self
                .status
                .hosts
                .iter()
                .find(|r| r.sweep == sweep && r.host == h.host);
            let since = match old {
                Some(o) if o.up == h.up => o.since,
                _ => now,
            };
            rows.push(HostRow {
                host: h.host.clone(),
                address: h.address.clone(),
                sweep: sweep.to_string(),
                up: h.up,
                rtt_ms: h.rtt_ms,
                since,
                last_backup: newest_of_host(&self.status.repos, &h.host, &h.address),
            });
        }
        self.status.hosts.retain(|r| r.sweep != sweep);
        self.status.hosts.extend(rows);
    }

    /// A host came up: each fleet job with `on_up` that holds it backs it up at once when its
    /// last backup is older than the job's `max_age` (or it has none).
    fn came_up(&mut self, plan: &Plan, host: &str, address: &str, note: &mut dyn FnMut(Note<'_>)) {
        for job in plan.jobs.iter().filter(|j| j.on_up) {
            let Task::Fleet(f) = &job.task else { continue };
            let Some(target) = f.hosts.iter().find(|t| t.host == host || t.host == address) else {
                continue;
            };
            let key = if target.port == 22 {
                target.host.clone()
            } else {
                format!("{}:{}", target.host, target.port)
            };
            let last = newest_of_host(&self.status.repos, &key, &key);
            let max = job.max_age.unwrap_or(Duration::ZERO).as_secs_f64();
            let fresh = last.is_some_and(|t| (now_s().saturating_sub(t) as f64) < max);
            if fresh {
                continue;
            }
            let mut one = (**f).clone();
            one.hosts = vec![target.clone()];
            one.sweep.clear();
            one.up_from_scan = false;
            self.trigger(job, Task::Fleet(Box::new(one)));
            let text = format!("{}: {target} came up; backing it up now", job.name);
            self.event(EventKind::Trigger, text, note);
        }
    }
}

/// Transitions against the hosts as last seen in this process (sweeps without a state folder).
fn transitions(seen: &HashMap<String, bool>, report: &SweepReport) -> Vec<Transition> {
    report
        .hosts
        .iter()
        .filter_map(|h| {
            let before = *seen.get(&h.host)?;
            (before != h.up).then(|| Transition {
                host: h.host.clone(),
                from: HostState::of(before),
                to: HostState::of(h.up),
            })
        })
        .collect()
}
