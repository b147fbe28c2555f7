//! `vault backup` and `vault watch`: flags to options, the run, the report and alerts.

use super::super::*;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The library's backup options from `vault backup`'s (or `vault watch`'s) flags.
pub(in crate::cli) fn backup_options(cli: &Cli, b: &BackupArgs) -> Result<BackupOptions, Error> {
    let fleet = !b.host.is_empty() || b.hosts_file.is_some() || !b.sweep.is_empty();
    let src = match (&b.src, b.stdin) {
        (Some(s), _) => s.clone(),
        (None, true) => PathBuf::from("-"),
        (None, false) if fleet => PathBuf::new(),
        (None, false) => return Err(Error::Usage("give SRC, --job NAME or --stdin".into())),
    };
    if !b.path.is_empty() && !fleet {
        return Err(Error::Usage(
            "--path needs --host or --hosts-file (for one host, give ssh://host/path as SRC)"
                .into(),
        ));
    }
    let mut opts = BackupOptions::new(&src, repo_arg(cli)?);
    if let Some(url) = src.to_str().filter(|s| s.starts_with("ssh://")) {
        use vault::ops::ssh_shell::{connect_source, parse_source};
        let parsed = parse_source(url).map_err(Error::Usage)?;
        let (auth, ssh) = ssh_settings(&b.ssh.as_ssh_flags())?;
        let remote = connect_source(parsed, &auth, &ssh, None).map_err(|e| Error::Remote {
            remote: url.to_string(),
            what: e.to_string(),
        })?;
        opts.remote = Some(remote);
    }
    if b.stdin {
        if std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "--stdin reads standard input, which is a terminal: pipe the data in".into(),
            ));
        }
        opts.stdin = Some(vault::engine::backup::StdinSource::new(
            &b.stdin_name,
            &b.source_name,
        )?);
    }
    opts.exclude_file = b.exclude_file.clone();
    opts.exclude_caches = b.exclude_caches;
    opts.exclude_if_present = b.exclude_if_present.clone();
    opts.one_file_system = b.one_file_system;
    opts.kind = if b.full {
        Some(Kind::Full)
    } else if b.incremental {
        Some(Kind::Incremental)
    } else {
        None
    };
    opts.full_on = b.full_on;
    opts.max_chain = b.max_chain;
    opts.compression = b.compression;
    opts.level = b.level;
    opts.hash = b.hash;
    opts.rehash = b.rehash;
    opts.exclude = b.exclude.clone();
    opts.dry_run = b.dry_run;
    opts.lock_wait = b.lock_wait;
    opts.time_ns = b.time;
    opts.forget_after = b.forget_after;
    Ok(opts)
}

pub(in crate::cli) fn watch(
    cli: &Cli,
    w: &WatchArgs,
    out: &Out,
    pool: &Pool,
    stop: &CancelToken,
    abort: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::ops::watch::{watch, WatchEvent, WatchOptions};
    if w.backup.stdin {
        return Err(Error::Usage("vault watch cannot watch --stdin".into()));
    }
    let remote = |s: &PathBuf| s.to_str().is_some_and(|s| s.starts_with("ssh://"));
    let fleet =
        !w.backup.host.is_empty() || w.backup.hosts_file.is_some() || !w.backup.sweep.is_empty();
    if w.backup.src.as_ref().is_some_and(remote) || fleet || !w.backup.path.is_empty() {
        return Err(Error::Usage(
            "vault watch cannot watch remote (ssh://, --host) sources; run vault backup on a schedule"
                .into(),
        ));
    }
    let opts = WatchOptions {
        backup: backup_options(cli, &w.backup)?,
        debounce: w.debounce,
        rescan_interval: w.rescan_interval,
    };
    if opts.rescan_interval.is_zero() {
        return Err(Error::Usage("--rescan-interval must be more than 0".into()));
    }
    let alerts = notifier(&w.backup.alert_to, &w.backup.mail)?;
    let source =
        std::fs::canonicalize(&opts.backup.source).unwrap_or_else(|_| opts.backup.source.clone());
    let mut reports: Vec<serde_json::Value> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    out.note(&format!(
        "watching {} (debounce {:?}, full rescan every {:?}); Ctrl-C to stop",
        source.display(),
        opts.debounce,
        opts.rescan_interval
    ));
    let mut on_event = |ev: WatchEvent| match ev {
        WatchEvent::Backup {
            full_rescan,
            report,
        } => {
            let how = if full_rescan {
                "full rescan"
            } else {
                "changed folders"
            };
            match &report.snapshot {
                Some(id) => {
                    let s = &report.stats;
                    out.say(&format!(
                        "{} snapshot {id} ({how}): {} new, {} changed, {} deleted, {} warnings",
                        report.kind,
                        s.new,
                        s.changed,
                        s.deleted,
                        report.warnings.len()
                    ));
                    if report.warnings.iter().any(|w| w.failed) {
                        let ev = vault::alert::Event::BackupDone {
                            source: report.source.clone(),
                            kind: report.kind.to_string(),
                            snapshot: id.clone(),
                            partial: true,
                            report: serde_json::to_value(&report).unwrap_or_default(),
                        };
                        if let Err(e) = alerts.notify(&[ev]) {
                            eprintln!("vault: warning: alert mail not sent: {e}");
                        }
                    }
                }
                None => out.note(&format!("nothing changed ({how}); no snapshot")),
            }
            reports.push(serde_json::to_value(&report).unwrap_or_default());
        }
        WatchEvent::Failed { error, retry_in } => {
            eprintln!("vault: backup failed: {error}; retrying in {retry_in:?}");
            let ev = vault::alert::Event::BackupFailed {
                source: source.display().to_string(),
                error: error.to_string(),
            };
            if let Err(e) = alerts.notify(&[ev]) {
                eprintln!("vault: warning: alert mail not sent: {e}");
            }
            failures.push(error.to_string());
        }
        WatchEvent::WatchError(e) => {
            eprintln!("vault: warning: watch: {e}; a full rescan follows");
        }
    };
    watch(&opts, pool, stop, abort, &mut on_event)?;
    if out.json {
        out.json(&serde_json::json!({ "backups": reports, "failures": failures }))?;
    }
    out.note("watch stopped");
    Ok(Outcome::Done)
}

pub(in crate::cli) fn backup(
    cli: &Cli,
    b: &BackupArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    let opts = backup_options(cli, b)?;
    let src = opts.source.clone();
    let alerts = notifier(&b.alert_to, &b.mail)?;
    let bar = progress::Bar::new(!out.quiet);
    let report = vault::backup(&opts, pool, cancel, &bar);
    vault::Progress::finish(&bar);
    let source = std::fs::canonicalize(&src).unwrap_or_else(|_| src.clone());
    let event = match &report {
        Ok(r) if !r.dry_run => Some(vault::alert::Event::BackupDone {
            source: r.source.clone(),
            kind: r.kind.to_string(),
            snapshot: r.snapshot.clone().unwrap_or_default(),
            partial: r.warnings.iter().any(|w| w.failed),
            report: serde_json::to_value(r).unwrap_or_default(),
        }),
        Ok(_) => None,
        Err(e) => Some(vault::alert::Event::BackupFailed {
            source: source.display().to_string(),
            error: e.to_string(),
        }),
    };
    if let Some(ev) = event {
        if let Err(e) = alerts.notify(&[ev]) {
            eprintln!("vault: warning: alert mail not sent: {e}");
        }
    }
    let report = report?;
    forget_after(out, &opts, &report);
    if report.created_repository {
        out.note(&format!("created repository {}", opts.repo.display()));
    }
    if out.json {
        out.json(&report)?;
    }
    let s = &report.stats;
    if report.dry_run {
        if let Some(reads) = &report.would_read {
            for r in reads {
                out.say(&format!(
                    "would read {} ({} bytes, {:?})",
                    r.path, r.size, r.reason
                ));
            }
        }
        if let Some(dels) = &report.would_delete {
            for d in dels {
                out.say(&format!("would record deleted {d}"));
            }
        }
        out.say(&format!(
            "dry run: {} backup of {} ({}): {} paths, {} new, {} changed, {} deleted, {} unchanged; nothing written",
            report.kind, report.source, report.reason, s.files, s.new, s.changed, s.deleted, s.unchanged
        ));
    } else {
        out.say(&format!(
            "{} backup of {} ({})\nsnapshot {}: {} paths, {} new, {} changed, {} deleted, {} unchanged; read {}, stored {}{} in {:.2}s",
            report.kind,
            report.source,
            report.reason,
            report.snapshot.as_deref().unwrap_or("-"),
            s.files,
            s.new,
            s.changed,
            s.deleted,
            s.unchanged,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_stored),
            report
                .archive
                .as_deref()
                .map(|a| format!(" in {a}"))
                .unwrap_or_else(|| " (no new content, no archive)".into()),
            s.duration_s
        ));
    }
    for w in &report.warnings {
        if !out.quiet {
            eprintln!(
                "vault: warning: {}: {}",
                vault::text::display_path(&w.path),
                w.error
            );
        }
    }
    Ok(if !report.warnings.iter().any(|w| w.failed) {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

/// A job's `forget_after`, after its snapshot: one line (a failure is a warning).
fn forget_after(
    out: &Out,
    opts: &vault::engine::backup::BackupOptions,
    report: &vault::engine::backup::BackupReport,
) {
    match vault::engine::forget::after_backup(opts, report) {
        Some(Ok(f)) => out.note(&format!(
            "forget_after: {} chains removed ({}), {} kept",
            f.removed.len(),
            human_bytes(f.bytes_freed),
            f.kept_chains
        )),
        Some(Err(e)) => eprintln!("vault: warning: forget_after failed; nothing forgotten: {e}"),
        None => {}
    }
}
