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
    let src = std::fs::canonicalize(&opts.backup.source).map_err(|e| Error::Source {
        path: opts.backup.source.clone(),
        source: e,
    })?;
    if !src.is_dir() {
        return Err(Error::SourceNotDir { path: src });
    }
    // Events from inside the repository (it may lie in the source) are never changes.
    let mut repo = crate::engine::fsx::resolve_path(&opts.backup.repo);
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let (mut _watcher, mut watched) = watch_root(&src, tx.clone())?;

    let mut dirty: HashSet<Vec<u8>> = HashSet::new();
    let mut full = true; // the first backup is a full rescan
    let mut last_event: Option<Instant> = Some(Instant::now() - opts.debounce);
    let mut next_rescan = Instant::now() + opts.rescan_interval;
    let mut failures = 0u32;
    let mut not_before = Instant::now();
    let mut root_gone = false;

    while !stop.is_cancelled() {
        // The source folder itself replaced (moved away, or removed and made again): its
        // watch followed the old folder, so watch the new one and look at it whole.
        // (A folder removed and made again may get the same inode number back.)
        if let Ok(m) = std::fs::metadata(&src) {
            if m.is_dir() && ((m.dev(), m.ino()) != watched || root_gone) {
                root_gone = false;
                (_watcher, watched) = watch_root(&src, tx.clone())?;
                full = true;
                last_event = Some(Instant::now());
            }
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(ev)) => {
                root_gone |= removes_root(&ev, &src);
                note(&ev, &src, &repo, &mut dirty, &mut full, &mut last_event)
            }
            Ok(Err(e)) => {
                on_event(WatchEvent::WatchError(e.to_string()));
                full = true;
                last_event = Some(Instant::now());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Refused(format!(
                    "the watch on {} ended",
                    src.display()
                )));
            }
        }
        // Take everything queued before deciding.
        while let Ok(r) = rx.try_recv() {
            match r {
                Ok(ev) => {
                    root_gone |= removes_root(&ev, &src);
                    note(&ev, &src, &repo, &mut dirty, &mut full, &mut last_event)
                }
                Err(e) => {
                    on_event(WatchEvent::WatchError(e.to_string()));
                    full = true;
                    last_event = Some(Instant::now());
                }
            }
        }
        let now = Instant::now();
        let settled = last_event.is_some_and(|t| now.duration_since(t) >= opts.debounce);
        let periodic = now >= next_rescan;
        if !(settled || periodic) || now < not_before {
            continue;
        }
        let full_rescan = full || periodic;
        let mut b = opts.backup.clone();
        b.skip_unchanged = true;
        b.hint = if full_rescan {
            None
        } else {
            let mut d: Vec<Vec<u8>> = dirty.drain().collect();
            d.sort();
            Some(d)
        };
        dirty.clear();
        full = false;
        last_event = None;
        if periodic {
            next_rescan = now + opts.rescan_interval;
        }
        let result = backup(&b, pool, abort, &NoProgress);
        repo = crate::engine::fsx::resolve_path(&opts.backup.repo);
        match result {
            Ok(report) => {
                failures = 0;
                on_event(WatchEvent::Backup {
                    full_rescan,
                    report,
                });
            }
            Err(Error::Cancelled) => break,
            Err(error) => {
                failures += 1;
                let retry_in =
                    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60));
                not_before = Instant::now() + retry_in;
                // Try again with a full rescan: what the failed run saw is not recorded.
                full = true;
                last_event = Some(Instant::now());
                on_event(WatchEvent::Failed { error, retry_in });
            }
        }
    }
    Ok(())
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
