//! Commands on a repository: init, snapshots, ls, diff, check, forget.

use super::super::*;

/// `vault init`.
pub(in crate::cli) fn init(cli: &Cli, out: &Out) -> Result<Outcome, Error> {
    let repo = repo_arg(cli)?;
    Repository::init(&repo)?;
    if out.json {
        out.json(&serde_json::json!({ "repository": repo, "created": true }))?;
    }
    out.say(&format!("created repository {}", repo.display()));
    Ok(Outcome::Done)
}

/// `vault check`.
pub(in crate::cli) fn check(
    cli: &Cli,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
    read_data: bool,
) -> Result<Outcome, Error> {
    let bar = progress::Bar::new(!out.quiet);
    let report = vault::engine::check::check(&repo_arg(cli)?, read_data, pool, cancel, &bar);
    vault::Progress::finish(&bar);
    let report = report?;
    if out.json {
        out.json(&report)?;
    }
    for p in &report.partials_removed {
        out.note(&format!("removed {p}, left by an interrupted backup"));
    }
    for p in &report.partials_in_use {
        out.note(&format!("{p} belongs to a backup in progress; left alone"));
    }
    for o in &report.orphans {
        out.note(&format!(
            "{o} is not part of any snapshot (left by an interrupted backup or forget; the next `vault forget` removes it)"
        ));
    }
    for p in &report.problems {
        eprintln!(
            "vault: damaged: {}: {} (affects snapshots {})",
            p.what,
            p.error,
            p.snapshots.join(", ")
        );
    }
    if report.ok {
        out.say(&format!(
            "no problems: {} snapshots, {} archives{}",
            report.snapshots,
            report.archives,
            if report.read_data {
                ", all stored contents read and verified"
            } else {
                ""
            }
        ));
        Ok(Outcome::Done)
    } else {
        Err(Error::Refused(format!(
            "check found {} problem(s); affected snapshots: {}",
            report.problems.len(),
            report.affected_snapshots.join(", ")
        )))
    }
}

/// `vault forget`.
pub(in crate::cli) fn forget(cli: &Cli, out: &Out, f: &ForgetArgs) -> Result<Outcome, Error> {
    use vault::engine::forget::Keep;
    let keep = match f.keep_fulls {
        Some(n) => Keep::Fulls(n),
        None => Keep::Rules(vault::engine::retention::KeepRules {
            last: f.keep_last,
            daily: f.keep_daily,
            weekly: f.keep_weekly,
            monthly: f.keep_monthly,
            yearly: f.keep_yearly,
            within: f.keep_within,
        }),
    };
    let repo = repo_arg(cli)?;
    let source = f.source.as_deref();
    let report = vault::engine::forget::forget(&repo, keep, source, f.dry_run, f.lock_wait)?;
    if out.json {
        out.json(&report)?;
    }
    if f.dry_run {
        for v in &report.snapshots {
            let why = if !v.reasons.is_empty() {
                let r: Vec<String> = v
                    .reasons
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect();
                format!("kept: {}", r.join(", "))
            } else if v.kept_for_chain {
                "kept: another snapshot of its chain is kept".to_string()
            } else {
                "removed".to_string()
            };
            out.say(&format!("{} {} {}: {why}", v.id, v.time, v.source));
        }
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for d in &report.debris_removed {
        out.say(&format!("{verb} {d} (no snapshot refers to it)"));
    }
    for c in &report.removed {
        out.say(&format!(
            "{verb} chain {} of {}: {} snapshots, {} archives, {}",
            c.full,
            c.source,
            c.snapshots.len(),
            c.archives.len(),
            human_bytes(c.bytes)
        ));
    }
    out.say(&format!(
        "{} chains kept; {} {}",
        report.kept_chains,
        if report.dry_run {
            "would free"
        } else {
            "freed"
        },
        human_bytes(report.bytes_freed)
    ));
    Ok(Outcome::Done)
}

/// `vault snapshots`.
pub(in crate::cli) fn snapshots(
    cli: &Cli,
    out: &Out,
    source: &Option<PathBuf>,
) -> Result<Outcome, Error> {
    let repo = Repository::open(&repo_arg(cli)?)?;
    let list = vault::snapshots(&repo, source.as_deref())?;
    if out.json {
        out.json(&list)?;
    } else if !out.quiet {
        outln!(
            "{:<16}  {:<20}  {:<11}  {:>8}  {:>10}  source",
            "id",
            "time",
            "kind",
            "paths",
            "stored"
        );
        for s in &list {
            outln!(
                "{:<16}  {:<20}  {:<11}  {:>8}  {:>10}  {}",
                s.id,
                s.time,
                s.kind,
                s.files,
                human_bytes(s.bytes_stored),
                s.source
            );
        }
    }
    Ok(Outcome::Done)
}

/// `vault ls`.
pub(in crate::cli) fn ls(
    cli: &Cli,
    out: &Out,
    snap: &str,
    source: &Option<PathBuf>,
) -> Result<Outcome, Error> {
    let repo = Repository::open(&repo_arg(cli)?)?;
    let row = vault::resolve(&repo, snap, source.as_deref())?;
    let entries = vault::ls(&repo, &row)?;
    if out.json {
        let list: Vec<vault::LsEntry> = entries.iter().map(Into::into).collect();
        out.json(&list)?;
    } else if !out.quiet {
        let mut stdout = std::io::stdout().lock();
        for e in &entries {
            let l = vault::LsEntry::from(e);
            let _ = write!(
                stdout,
                "{}{} {:>5}:{:<5} {:>10} {}  {}",
                vault::engine::query::type_char(e.kind),
                l.mode,
                e.uid,
                e.gid,
                e.size,
                l.mtime,
                vault::text::display_path(&e.path)
            );
            if let Some(t) = &e.target {
                let _ = write!(stdout, " -> {}", vault::text::display_path(t));
            }
            let _ = writeln!(stdout);
        }
    }
    Ok(Outcome::Done)
}

/// `vault diff`.
pub(in crate::cli) fn diff(
    cli: &Cli,
    out: &Out,
    snap_a: &str,
    snap_b: &str,
    source: &Option<PathBuf>,
) -> Result<Outcome, Error> {
    let repo = Repository::open(&repo_arg(cli)?)?;
    let a = vault::resolve(&repo, snap_a, source.as_deref())?;
    let b = vault::resolve(&repo, snap_b, source.as_deref())?;
    let d = vault::diff(&repo, &a, &b)?;
    if out.json {
        out.json(&d)?;
    } else if !out.quiet {
        for p in &d.added {
            outln!("+ {p}");
        }
        for m in &d.changes {
            outln!("M {}  ({})", m.path, m.what.join(", "));
        }
        for p in &d.deleted {
            outln!("- {p}");
        }
        eprintln!(
            "{} added, {} modified, {} deleted",
            d.added.len(),
            d.modified.len(),
            d.deleted.len()
        );
    }
    Ok(Outcome::Done)
}
