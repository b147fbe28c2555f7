//! `watch = true` jobs: the file system watch of `vault watch` inside the daemon. Changes are
//! hints gathered on the daemon's thread; once they settle, the job's backup (re-examining only
//! the folders they touched, recording nothing when nothing changed) queues like any job.

use std::time::Duration;

use super::run::{Daemon, Note};
use super::status::EventKind;
use super::{DaemonJob, Plan, Task, When};
use crate::ops::watch::{WatchEvent, WatchOptions, WatchState};

/// One watched job: its watch and the options it was started with.
pub struct Watched {
    state: WatchState,
    opts: WatchOptions,
}

impl Daemon {
    /// Starts missing watches and queues the backups whose changes have settled.
    pub(super) fn watch_jobs(&mut self, plan: &Plan, note: &mut dyn FnMut(Note<'_>)) {
        for job in &plan.jobs {
            let When::Watch { debounce, rescan } = job.when else {
                continue;
            };
            let Task::Backup(b) = &job.task else { continue };
            if self.pending(&job.name) {
                continue;
            }
            if !self.watches.contains_key(&job.name)
                && !self.start_watch(job, b, (debounce, rescan), note)
            {
                continue;
            }
            let mut problems = Vec::new();
            let Some(w) = self.watches.get_mut(&job.name) else {
                continue;
            };
            let mut on = |ev: WatchEvent| {
                if let WatchEvent::WatchError(e) = ev {
                    problems.push(e);
                }
            };
            let due = w.state.due(&w.opts, Duration::ZERO, &mut on);
            for e in problems {
                self.event(EventKind::Failed, format!("{}: watch: {e}", job.name), note);
            }
            match due {
                Ok(Some((backup, _full))) => self.trigger(job, Task::Backup(Box::new(backup))),
                Ok(None) => {}
                Err(e) => {
                    self.watches.remove(&job.name);
                    self.event(EventKind::Failed, format!("{}: watch: {e}", job.name), note);
                }
            }
        }
    }

    /// Starts the watch of a job; false (with an event) when it cannot be watched now (it is
    /// tried again on the next turn).
    fn start_watch(
        &mut self,
        job: &DaemonJob,
        b: &crate::engine::backup::BackupOptions,
        (debounce, rescan_interval): (Duration, Duration),
        note: &mut dyn FnMut(Note<'_>),
    ) -> bool {
        let opts = WatchOptions {
            backup: b.clone(),
            debounce,
            rescan_interval,
        };
        match WatchState::start(&opts) {
            Ok(state) => {
                self.watches
                    .insert(job.name.clone(), Watched { state, opts });
                true
            }
            Err(e) => {
                let text = format!("{}: cannot watch {}: {e}", job.name, b.source.display());
                let known = self.status.events.front().is_some_and(|ev| ev.text == text);
                if !known {
                    self.event(EventKind::Failed, text, note);
                }
                false
            }
        }
    }

    /// A watch job's backup ended: back off after a failure, as `vault watch` does.
    pub(super) fn watch_finished(&mut self, job: &str, ok: bool) {
        if let Some(w) = self.watches.get_mut(job) {
            w.state.backed_up(&w.opts);
            if ok {
                w.state.succeeded();
            } else {
                w.state.failed();
            }
        }
    }
}
