//! `vault backup --host/--hosts-file/--sweep/--fleet … --path …`: the fleet run, its report
//! and its alert.

use super::super::*;
use vault::ops::fleet::{backup_fleet, FleetOptions, HostReport};

pub(in crate::cli) fn fleet(
    cli: &Cli,
    b: &BackupArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    if b.dry_run {
        return Err(Error::Usage(
            "a fleet run (--host/--hosts-file) cannot be a dry run".into(),
        ));
    }
    let opts = fleet_options(cli, b)?;
    let alerts = notifier(&b.alert_to, &b.mail)?;
    let fleet = backup_fleet(&opts, pool, cancel)?;
    let reports = &fleet.hosts;
    let events: Vec<vault::alert::Event> = reports.iter().filter_map(event).collect();
    if !events.is_empty() {
        if let Err(e) = alerts.notify(&events) {
            eprintln!("vault: warning: alert mail not sent: {e}");
        }
    }
    if out.json {
        out.json(&fleet)?;
    }
    say(out, reports);
    if !out.quiet && !fleet.down.is_empty() {
        eprintln!("not answering, left out: {}", fleet.down.join(", "));
    }
    Ok(if reports.iter().any(HostReport::trouble) {
        Outcome::Partial
    } else {
        Outcome::Done
    })
}

/// What a fleet run backs up, from `vault backup --host/--hosts-file/--sweep/--fleet`.
pub(in crate::cli) fn fleet_options(cli: &Cli, b: &BackupArgs) -> Result<FleetOptions, Error> {
    if b.host.is_empty() && b.hosts_file.is_none() && b.sweep.is_empty() {
        return Err(Error::Usage(
            "give --host, --hosts-file or --sweep (--fleet takes them from [fleet] of vault.toml or --config)".into(),
        ));
    }
    let hosts = super::ssh::targets(&b.host, b.hosts_file.as_deref())?;
    let sweep = super::ssh::targets(&b.sweep, None)?;
    if hosts.is_empty() && sweep.is_empty() {
        return Err(Error::Usage("no hosts to back up".into()));
    }
    if b.path.is_empty() {
        return Err(Error::Usage(
            "give the folder to back up on each host with --path".into(),
        ));
    }
    let paths = b
        .path
        .iter()
        .map(|p| vault::engine::backup::RemoteSource::folder(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    let (auth, ssh) = ssh_settings(&b.ssh.as_ssh_flags())?;
    Ok(FleetOptions {
        hosts,
        up_from_scan: b.up_from_scan,
        sweep,
        paths,
        auth,
        ssh,
        backup: super::backup::backup_options(cli, b)?,
    })
}

/// A failed host's alert, or a partial snapshot's.
fn event(r: &HostReport) -> Option<vault::alert::Event> {
    match (&r.error, &r.snapshot) {
        (Some(e), _) => Some(vault::alert::Event::BackupFailed {
            source: r.source.clone(),
            error: e.clone(),
        }),
        (None, Some(id)) if r.trouble() => Some(vault::alert::Event::BackupDone {
            source: r.source.clone(),
            kind: r.kind.unwrap_or_default().to_string(),
            snapshot: id.clone(),
            partial: true,
            report: serde_json::to_value(r).unwrap_or_default(),
        }),
        _ => None,
    }
}

fn say(out: &Out, reports: &[HostReport]) {
    for r in reports {
        match (&r.error, &r.stats) {
            (Some(e), _) => out.say(&format!("{}: FAILED: {e}", r.source)),
            (None, Some(s)) => out.say(&format!(
                "{}: {} snapshot {}: {} paths, {} new, {} changed, {} deleted; fetched {}, stored {}{}",
                r.source,
                r.kind.unwrap_or_default(),
                r.snapshot.as_deref().unwrap_or("-"),
                s.files,
                s.new,
                s.changed,
                s.deleted,
                human_bytes(s.remote.as_ref().map_or(0, |x| x.fetched_bytes)),
                human_bytes(s.bytes_stored),
                match r.warnings.len() {
                    0 => String::new(),
                    n => format!(", {n} warnings"),
                }
            )),
            (None, None) => {}
        }
        if !out.quiet {
            for w in &r.warnings {
                let path = vault::text::display_path(&w.path);
                eprintln!("vault: warning: {}: {path}: {}", r.source, w.error);
            }
        }
    }
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if !out.quiet {
        eprintln!(
            "{} sources, {} backed up, {} failed",
            reports.len(),
            reports.len() - failed,
            failed
        );
    }
}
