//! `vault restore`: flags to options, the run and its report.

use super::super::*;

pub(in crate::cli) fn restore(
    cli: &Cli,
    r: &RestoreArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::engine::restore::{RestoreOptions, SnapSpec};
    let snapshot = match (&r.snap, &r.at) {
        (_, Some(at)) => SnapSpec::At(*at),
        (Some(s), None) => SnapSpec::Id(s.clone()),
        (None, None) => return Err(Error::Usage("give SNAP or --at TIME".into())),
    };
    let opts = RestoreOptions {
        repo: repo_arg(cli)?,
        snapshot,
        source: r.source.clone(),
        target: r.target.clone(),
        include: r
            .include
            .iter()
            .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
            .collect(),
        force: r.force,
        delete: r.delete,
        dry_run: r.dry_run,
        no_setid: r.no_setid,
    };
    let bar = progress::Bar::new(!out.quiet);
    let report = match r.target.to_str().filter(|t| t.starts_with("ssh://")) {
        Some(url) => {
            use vault::ops::host_restore::{restore_to_host, HostTarget};
            let (target, path) = vault::ops::ssh_shell::parse_source(url).map_err(Error::Usage)?;
            let (auth, ssh) = ssh_settings(&r.ssh)?;
            let host = HostTarget {
                target,
                path,
                auth,
                ssh,
            };
            restore_to_host(&opts, &host, (pool, cancel, &bar))
        }
        None => vault::engine::restore::restore(&opts, pool, cancel, &bar),
    };
    vault::Progress::finish(&bar);
    let report = report?;
    if out.json {
        out.json(&report)?;
    }
    if let Some(w) = &report.would_write {
        for p in w {
            out.say(&format!("would write {p}"));
        }
    }
    for e in &report.errors {
        eprintln!(
            "vault: error: {}: {}",
            vault::text::display_path(&e.path),
            e.error
        );
    }
    out.say(&format!(
        "{} snapshot {} of {} into {}: {} files, {} folders, {} symlinks, {} hard links, {}{}{}",
        if report.dry_run {
            "would restore"
        } else {
            "restored"
        },
        report.snapshot,
        report.source,
        report.target,
        report.files,
        report.dirs,
        report.symlinks,
        report.hardlinks,
        if report.specials > 0 {
            format!("{} FIFOs and devices, ", report.specials)
        } else {
            String::new()
        },
        human_bytes(report.bytes_written),
        if report.deleted > 0 {
            format!(", {} removed", report.deleted)
        } else {
            String::new()
        }
    ));
    if report.errors.is_empty() {
        Ok(Outcome::Done)
    } else {
        // Per-item failures: everything else was restored (exit 3, as for backup).
        eprintln!(
            "vault: restore of snapshot {} is incomplete: {} path(s) could not be restored (named above)",
            report.snapshot,
            report.errors.len()
        );
        Ok(Outcome::Partial)
    }
}
