//! `vault watch`: backups triggered by changes.
//!
//! File system events (inotify, through notify) are hints, never trusted alone: after changes
//! settle for `debounce`, the normal backup runs (policy included) but re-examines only the
//! folders that events touched. A full rescan runs at start, on a queue overflow or watch error,
//! and every `rescan_interval`. Nothing is recorded when nothing changed. Events that arrive
//! while a backup runs make exactly one more backup. Failures are reported and retried with
//! backoff; the watch goes on.
//!
//! Stopping: `stop` (first SIGINT/SIGTERM) ends the loop after the running backup; `abort`
//! (the second) cancels that backup cleanly (its partial archive is removed).

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};

use crate::engine::backup::{backup, BackupOptions, BackupReport};
use crate::error::{Error, Result};
use crate::pool::{CancelToken, Pool};
use crate::progress::NoProgress;

/// What `vault watch` was asked to do.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// The backup each trigger runs (source, repository, policy, excludes, …).
    pub backup: BackupOptions,
    pub debounce: Duration,
    pub rescan_interval: Duration,
}

/// What happened, for the caller to print or mail.
#[derive(Debug)]
pub enum WatchEvent {
    /// A backup ran (`snapshot` is None when nothing had changed).
    Backup {
        full_rescan: bool,
        report: BackupReport,
    },
    /// A backup failed; the next try waits `retry_in`.
    Failed { error: Error, retry_in: Duration },
    /// The watch itself reported a problem (a full rescan follows).
    WatchError(String),
}

fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Runs until `stop` is set; returns after the running backup (if any) is done or aborted.
pub fn watch(
    opts: &WatchOptions,
    pool: &Pool,
    stop: &CancelToken,
    abort: &CancelToken,
    on_event: &mut dyn FnMut(WatchEvent),
) -> Result<()> {
    let mut st = WatchState::start(opts)?;
    while !stop.is_cancelled() {
        let wait = Duration::from_millis(50);
        let Some((b, full_rescan)) = st.due(opts, wait, on_event)? else {
            continue;
        };
        let result = backup(&b, pool, abort, &NoProgress);
        st.backed_up(opts);
        if !st.finish_backup(result, full_rescan, on_event) {
            break;
        }
    }
    Ok(())
}

/// What the watch loop keeps between rounds (`vault daemon` keeps one a `watch = true` job).
pub struct WatchState {
    /// The source folder, canonical.
    src: PathBuf,
    /// The repository, resolved: events from inside it (it may lie in the source) are never
    /// changes.
    repo: PathBuf,
    _watcher: notify::RecommendedWatcher,
    /// (device, inode) of the folder the watcher follows.
    watched: (u64, u64),
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    tx: mpsc::Sender<notify::Result<notify::Event>>,
    /// Folders (relative to `src`) that events touched since the last backup.
    dirty: HashSet<Vec<u8>>,
    /// The next backup rescans everything.
    full: bool,
    /// When the last relevant event came; None when none came since the last backup.
    last_event: Option<Instant>,
    next_rescan: Instant,
    /// Backups failed in a row.
    failures: u32,
    /// No backup starts before this (backoff after a failure).
    not_before: Instant,
    /// An event said the source folder itself was removed or renamed away.
    root_gone: bool,
}

impl std::fmt::Debug for WatchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchState")
            .field("src", &self.src)
            .field("dirty", &self.dirty.len())
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl WatchState {
    /// Waits up to `wait` for events; returns the backup to run now (and whether it is a full
    /// rescan) once changes have settled for `debounce`, or a periodic rescan is due.
    pub fn due(
        &mut self,
        opts: &WatchOptions,
        wait: Duration,
        on_event: &mut dyn FnMut(WatchEvent),
    ) -> Result<Option<(BackupOptions, bool)>> {
        self.follow_root()?;
        self.collect_events(wait, on_event)?;
        let now = Instant::now();
        let settled = self
            .last_event
            .is_some_and(|t| now.duration_since(t) >= opts.debounce);
        let periodic = now >= self.next_rescan;
        if !(settled || periodic) || now < self.not_before {
            return Ok(None);
        }
        Ok(Some(self.next_backup(opts, now, periodic)))
    }

    /// After a backup: the repository may have been created meanwhile (events from inside it
    /// are never changes).
    pub fn backed_up(&mut self, opts: &WatchOptions) {
        self.repo = crate::engine::fsx::resolve_path(&opts.backup.repo);
    }

    /// Checks the source, starts watching it, and sets up for a first, full backup.
    pub fn start(opts: &WatchOptions) -> Result<WatchState> {
        let src = std::fs::canonicalize(&opts.backup.source).map_err(|e| Error::Source {
            path: opts.backup.source.clone(),
            source: e,
        })?;
        if !src.is_dir() {
            return Err(Error::SourceNotDir { path: src });
        }
        let repo = crate::engine::fsx::resolve_path(&opts.backup.repo);
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let (watcher, watched) = watch_root(&src, tx.clone())?;
        Ok(WatchState {
            src,
            repo,
            _watcher: watcher,
            watched,
            rx,
            tx,
            dirty: HashSet::new(),
            full: true, // the first backup is a full rescan
            last_event: Some(Instant::now() - opts.debounce),
            next_rescan: Instant::now() + opts.rescan_interval,
            failures: 0,
            not_before: Instant::now(),
            root_gone: false,
        })
    }

    /// Watches the source folder anew when it was replaced, and asks for a full rescan.
    fn follow_root(&mut self) -> Result<()> {
        // The source folder itself replaced (moved away, or removed and made again): its
        // watch followed the old folder, so watch the new one and look at it whole.
        // (A folder removed and made again may get the same inode number back.)
        if let Ok(m) = std::fs::metadata(&self.src) {
            if m.is_dir() && ((m.dev(), m.ino()) != self.watched || self.root_gone) {
                self.root_gone = false;
                (self._watcher, self.watched) = watch_root(&self.src, self.tx.clone())?;
                self.full = true;
                self.last_event = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Waits up to `wait` for a watch message, then takes everything queued before deciding.
    fn collect_events(
        &mut self,
        wait: Duration,
        on_event: &mut dyn FnMut(WatchEvent),
    ) -> Result<()> {
        match self.rx.recv_timeout(wait) {
            Ok(msg) => self.on_message(msg, on_event),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Refused(format!(
                    "the watch on {} ended",
                    self.src.display()
                )));
            }
        }
        while let Ok(msg) = self.rx.try_recv() {
            self.on_message(msg, on_event);
        }
        Ok(())
    }

    /// Notes one watch message: an event's changes, or an error (reported; a full rescan
    /// follows).
    fn on_message(
        &mut self,
        msg: notify::Result<notify::Event>,
        on_event: &mut dyn FnMut(WatchEvent),
    ) {
        match msg {
            Ok(ev) => {
                self.root_gone |= removes_root(&ev, &self.src);
                note(
                    &ev,
                    &self.src,
                    &self.repo,
                    &mut self.dirty,
                    &mut self.full,
                    &mut self.last_event,
                )
            }
            Err(e) => {
                on_event(WatchEvent::WatchError(e.to_string()));
                self.full = true;
                self.last_event = Some(Instant::now());
            }
        }
    }

    /// The options of the backup to run now and whether it is a full rescan; starts gathering
    /// events afresh.
    fn next_backup(
        &mut self,
        opts: &WatchOptions,
        now: Instant,
        periodic: bool,
    ) -> (BackupOptions, bool) {
        let full_rescan = self.full || periodic;
        let mut b = opts.backup.clone();
        b.skip_unchanged = true;
        b.hint = if full_rescan {
            None
        } else {
            let mut d: Vec<Vec<u8>> = self.dirty.drain().collect();
            d.sort();
            Some(d)
        };
        self.dirty.clear();
        self.full = false;
        self.last_event = None;
        if periodic {
            self.next_rescan = now + opts.rescan_interval;
        }
        (b, full_rescan)
    }

    /// Reports a backup's outcome and, after a failure, sets the backoff and a full rescan.
    /// False when the backup was cancelled (the watch ends).
    fn finish_backup(
        &mut self,
        result: Result<BackupReport>,
        full_rescan: bool,
        on_event: &mut dyn FnMut(WatchEvent),
    ) -> bool {
        match result {
            Ok(report) => {
                self.succeeded();
                on_event(WatchEvent::Backup {
                    full_rescan,
                    report,
                });
            }
            Err(Error::Cancelled) => return false,
            Err(error) => {
                let retry_in = self.failed();
                on_event(WatchEvent::Failed { error, retry_in });
            }
        }
        true
    }

    /// A backup succeeded: no backoff.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A backup failed: the next one waits (returned: how long) and rescans everything, since
    /// what the failed run saw is not recorded.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        let retry_in =
            Duration::from_secs(1u64 << self.failures.min(6)).min(Duration::from_secs(60));
        self.not_before = Instant::now() + retry_in;
        self.full = true;
        self.last_event = Some(Instant::now());
        retry_in
    }
}

/// Watches `src` recursively; returns the watcher and the (device, inode) it watches.
fn watch_root(
    src: &Path,
    tx: mpsc::Sender<notify::Result<notify::Event>>,
) -> Result<(notify::RecommendedWatcher, (u64, u64))> {
    let fail =
        |e: &dyn std::fmt::Display| Error::Refused(format!("cannot watch {}: {e}", src.display()));
    let m = std::fs::metadata(src).map_err(|e| fail(&e))?;
    let mut watcher = notify::recommended_watcher(tx).map_err(|e| fail(&e))?;
    watcher
        .watch(src, RecursiveMode::Recursive)
        .map_err(|e| fail(&e))?;
    Ok((watcher, (m.dev(), m.ino())))
}

/// True for the event of the watched folder itself being removed or renamed away.
fn removes_root(ev: &notify::Event, src: &Path) -> bool {
    use notify::event::ModifyKind;
    matches!(
        ev.kind,
        EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    ) && ev.paths.iter().any(|p| p == src)
}

fn note(
    ev: &notify::Event,
    src: &Path,
    repo: &Path,
    dirty: &mut HashSet<Vec<u8>>,
    full: &mut bool,
    last_event: &mut Option<Instant>,
) {
    if ev.need_rescan() {
        *full = true;
        *last_event = Some(Instant::now());
        return;
    }
    if !relevant(&ev.kind) {
        return;
    }
    let mut any = false;
    for p in &ev.paths {
        if p.starts_with(repo) {
            continue;
        }
        let Ok(rel) = p.strip_prefix(src) else {
            continue;
        };
        any = true;
        let rel: PathBuf = rel.to_path_buf();
        let parent = rel
            .parent()
            .map(|q| q.as_os_str().as_bytes().to_vec())
            .unwrap_or_default();
        dirty.insert(parent);
        if p.is_dir() {
            dirty.insert(rel.as_os_str().as_bytes().to_vec());
        }
    }
    if any {
        *last_event = Some(Instant::now());
    }
}
