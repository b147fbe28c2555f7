//! A job that ended: its row, its events and alerts, its report, its repository's history.

use super::run::{alert, outcome_of, Daemon, Note};
use super::status::{now_s, EventKind, Outcome, RepoSeries};
use super::task::{Finished, Ran};
use super::DaemonJob;
use crate::alert::Event;

impl Daemon {
    pub(super) fn finished(
        &mut self,
        job: Option<&DaemonJob>,
        done: Finished,
        note: &mut dyn FnMut(Note<'_>),
    ) {
        if let Some(list) = &done.snapshots {
            if let Some(j) = job {
                let repo = j.task.repo().display().to_string();
                self.status.set_repo(RepoSeries::of(&repo, list));
            }
        }
        let (outcome, bytes, files, snapshot) = outcome_of(&done.ran);
        self.watch_finished(&done.job, outcome != Outcome::Failed);
        if let Some(row) = self.status.job_mut(&done.job) {
            row.running = false;
            row.runs += 1;
            row.outcome = Some(outcome);
            row.duration_s = Some((done.duration_s * 1000.0).round() / 1000.0);
            if outcome == Outcome::Failed {
                row.failures += 1;
            } else {
                row.last_success = Some(now_s());
                row.overdue = false;
                row.last_snapshot = snapshot.clone().or(row.last_snapshot.take());
                row.bytes_stored = bytes;
                row.files = files;
                row.last_error = None;
            }
        }
        self.report(job, &done, note);
        match &done.forgot {
            Some(Ok(f)) => {
                let text = format!(
                    "{}: forget_after: {} chains removed, {} kept",
                    done.job,
                    f.removed.len(),
                    f.kept_chains
                );
                self.event(EventKind::Backup, text, note);
            }
            Some(Err(e)) => {
                let text = format!("{}: forget_after failed; nothing forgotten: {e}", done.job);
                self.event(EventKind::Failed, text, note);
            }
            None => {}
        }
        if let (Some(j), Some(push)) = (job, &done.push) {
            let text = match push {
                Ok(r) => format!(
                    "{}: pushed to {}: {} archives sent",
                    j.name,
                    r.remote,
                    r.sent.len()
                ),
                Err(e) => format!("{}: push failed: {e}", j.name),
            };
            let kind = if push.is_ok() {
                EventKind::Push
            } else {
                EventKind::Failed
            };
            self.event(kind, text, note);
            if let Err(e) = push {
                let ev = Event::BackupFailed {
                    source: format!("push of {}", j.task.repo().display()),
                    error: e.to_string(),
                };
                alert(j, ev, self, note);
            }
        }
    }

    /// The run's event line, its report for the caller and its failure alerts.
    fn report(&mut self, job: Option<&DaemonJob>, done: &Finished, note: &mut dyn FnMut(Note<'_>)) {
        let name = done.job.as_str();
        match &done.ran {
            Ran::Backup(Ok(r)) if r.snapshot.is_none() => {
                let text = format!("{name}: nothing changed; nothing recorded");
                self.event(EventKind::Backup, text, note);
            }
            Ran::Backup(Ok(r)) => {
                let s = &r.stats;
                let text = format!(
                    "{name}: {} snapshot {}: {} new, {} changed, {} deleted, {} warnings",
                    r.kind,
                    r.snapshot.as_deref().unwrap_or("-"),
                    s.new,
                    s.changed,
                    s.deleted,
                    r.warnings.len()
                );
                self.event(EventKind::Backup, text, note);
                note(Note::Report {
                    job: name,
                    report: serde_json::to_value(r).unwrap_or_default(),
                });
            }
            Ran::Fleet(Ok(f)) => {
                for h in &f.hosts {
                    let text = match (&h.error, &h.snapshot) {
                        (Some(e), _) => format!("{name}: {}: FAILED: {e}", h.source),
                        (None, Some(id)) => format!("{name}: {}: snapshot {id}", h.source),
                        (None, None) => format!("{name}: {}: nothing recorded", h.source),
                    };
                    let kind = if h.error.is_some() {
                        EventKind::Failed
                    } else {
                        EventKind::Backup
                    };
                    self.event(kind, text, note);
                    if let (Some(j), Some(e)) = (job, &h.error) {
                        let ev = Event::BackupFailed {
                            source: h.source.clone(),
                            error: e.clone(),
                        };
                        alert(j, ev, self, note);
                    }
                }
                note(Note::Report {
                    job: name,
                    report: serde_json::to_value(f).unwrap_or_default(),
                });
            }
            Ran::Backup(Err(crate::error::Error::Cancelled))
            | Ran::Fleet(Err(crate::error::Error::Cancelled)) => {
                let text = format!("{name}: abandoned by a second signal; nothing recorded");
                self.event(EventKind::Backup, text, note);
            }
            Ran::Backup(Err(e)) | Ran::Fleet(Err(e)) => {
                if let Some(row) = self.status.job_mut(name) {
                    row.last_error = Some(e.to_string());
                }
                self.event(
                    EventKind::Failed,
                    format!("{name}: backup failed: {e}"),
                    note,
                );
                if let Some(j) = job {
                    let ev = Event::BackupFailed {
                        source: j.task.source(),
                        error: e.to_string(),
                    };
                    alert(j, ev, self, note);
                }
            }
        }
    }
}
