//! `vault daemon`: the config file's scheduled jobs, their reports and alerts.

use super::super::*;
use vault::ops::daemon::{run, schedule, DaemonEvent, DaemonJob, Stopped};

/// A job, and where its alerts go.
type Scheduled = (DaemonJob, Box<dyn vault::alert::Notifier>);

/// The jobs with `every`, each with its backup options as `vault backup --job NAME` builds
/// them from the same config file.
fn jobs(cli: &Cli) -> Result<Vec<Scheduled>, Error> {
    let Some((path, cfg)) = config::load(cli.global.config.as_deref())? else {
        return Err(Error::Usage(
            "vault daemon needs a config file (./vault.toml or --config FILE) with jobs".into(),
        ));
    };
    let mut out = Vec::new();
    for (name, job) in &cfg.job {
        let Some(every) = job.every else { continue };
        if every.is_zero() {
            let p = path.display();
            return Err(Error::Usage(format!(
                "{p}: [job.{name}] every must be more than 0"
            )));
        }
        let argv = ["vault", "backup", "--job", name.as_str()];
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(argv)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let mut c = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| Error::Usage(e.to_string()))?;
        c.global.config = Some(path.clone());
        config::apply(&mut c, &matches, &path, &cfg)?;
        let Command::Backup(b) = &c.command else {
            unreachable!("parsed as a backup")
        };
        let backup = cmd::backup::backup_options(&c, b)?;
        let alerts = notifier(&b.alert_to, &b.mail)?;
        out.push((
            DaemonJob {
                name: name.clone(),
                every,
                backup,
            },
            alerts,
        ));
    }
    if out.is_empty() {
        let p = path.display();
        return Err(Error::Usage(format!(
            "{p}: no [job.NAME] has `every`; nothing to schedule"
        )));
    }
    Ok(out)
}

/// One run's report: a line, its JSON, and for a failure the job's alert.
fn on_run(
    ev: DaemonEvent<'_>,
    out: &Out,
    (jobs, alerts): (&[DaemonJob], &[Box<dyn vault::alert::Notifier>]),
    (reports, failures): (&mut Vec<serde_json::Value>, &mut Vec<String>),
) {
    match ev {
        DaemonEvent::Done { job, report } => {
            let s = &report.stats;
            out.say(&format!(
                "{}: {} snapshot {}: {} new, {} changed, {} deleted, {} warnings",
                job.name,
                report.kind,
                report.snapshot.as_deref().unwrap_or("-"),
                s.new,
                s.changed,
                s.deleted,
                report.warnings.len()
            ));
            let mut v = serde_json::to_value(report).unwrap_or_default();
            v["job"] = job.name.clone().into();
            reports.push(v);
        }
        DaemonEvent::Failed { job, error } => {
            eprintln!("vault: {}: backup failed: {error}", job.name);
            let i = jobs.iter().position(|j| j.name == job.name).unwrap_or(0);
            let ev = vault::alert::Event::BackupFailed {
                source: job.backup.source.display().to_string(),
                error: error.to_string(),
            };
            if let Err(e) = alerts[i].notify(&[ev]) {
                eprintln!("vault: warning: alert mail not sent: {e}");
            }
            failures.push(format!("{}: {error}", job.name));
        }
    }
}

pub(in crate::cli) fn daemon(
    cli: &Cli,
    d: &DaemonArgs,
    out: &Out,
    pool: &Pool,
    (stop, abort): (&CancelToken, &CancelToken),
) -> Result<Outcome, Error> {
    let scheduled = jobs(cli)?;
    let (jobs, alerts): (Vec<DaemonJob>, Vec<_>) = scheduled.into_iter().unzip();
    if d.print_schedule {
        let plan = schedule(&jobs);
        if out.json {
            out.json(&serde_json::json!({ "jobs": plan }))?;
        }
        for p in &plan {
            let next = vault::time::compact_utc(p.next * 1_000_000_000);
            out.say(&format!(
                "{}: {} -> {} every {}s, next {next}",
                p.job, p.source, p.repo, p.every_s
            ));
        }
        return Ok(Outcome::Done);
    }
    out.note(&format!(
        "daemon: {} scheduled jobs; SIGTERM to stop, SIGHUP to reload the config",
        jobs.len()
    ));
    let (mut jobs, mut alerts) = (jobs, alerts);
    let mut reports: Vec<serde_json::Value> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut next = std::collections::HashMap::new();
    loop {
        let mut on_event =
            |ev: DaemonEvent<'_>| on_run(ev, out, (&jobs, &alerts), (&mut reports, &mut failures));
        if run(&jobs, &mut next, pool, (stop, abort), &mut on_event) == Stopped::Signal {
            break;
        }
        // SIGHUP: the new config, or the old one kept (one line naming the file and line).
        match self::jobs(cli) {
            Ok(new) => {
                (jobs, alerts) = new.into_iter().unzip();
                out.note(&format!(
                    "daemon: config reloaded: {} scheduled jobs",
                    jobs.len()
                ));
            }
            Err(e) => eprintln!(
                "vault: config not reloaded, the previous one stays: {}",
                vault::text::one_line(&e.to_string())
            ),
        }
    }
    if out.json {
        out.json(&serde_json::json!({ "backups": reports, "failures": failures }))?;
    }
    out.note("daemon stopped");
    Ok(Outcome::Done)
}
