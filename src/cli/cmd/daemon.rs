//! `vault daemon`: the plan from the config file (each job's options built exactly as the
//! matching `vault backup --job NAME`, `vault backup --fleet` or `vault scan` would build
//! them), the reload loop, and the log.

use std::path::Path;
use std::sync::Arc;

use super::super::*;
use vault::config::{ScanSettings, SweepSettings};
use vault::ops::daemon::{
    run, schedule, serve, Daemon, DaemonJob, DaemonSweep, Plan, PushTo, Stopped, Task, When,
};

/// Parses `argv` as a command line and fills it from the config file, as `main` does.
fn parse_as(argv: &[&str], path: &Path, cfg: &config::Config) -> Result<Cli, Error> {
    let matches = <Cli as clap::CommandFactory>::command()
        .try_get_matches_from(argv)
        .map_err(|e| Error::Usage(vault::text::one_line(&e.to_string()).into_owned()))?;
    let mut c = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
        .map_err(|e| Error::Usage(e.to_string()))?;
    c.global.config = Some(path.to_path_buf());
    config::apply(&mut c, &matches, path, cfg)?;
    Ok(c)
}

/// The schedule of a table: `every` or `at` (not both); `None` when it has neither.
fn when_of(
    path: &Path,
    table: &str,
    every: Option<std::time::Duration>,
    at: Option<&vault::ops::daemon::Calendar>,
) -> Result<Option<When>, Error> {
    let p = path.display();
    match (every, at) {
        (Some(_), Some(_)) => Err(Error::Usage(format!(
            "{p}: [{table}] has both `every` and `at`; keep one"
        ))),
        (Some(d), None) if d.is_zero() => Err(Error::Usage(format!(
            "{p}: [{table}] every must be more than 0"
        ))),
        (Some(d), None) => Ok(Some(When::Every(d))),
        (None, Some(c)) => Ok(Some(When::At(Box::new(c.clone())))),
        (None, None) => Ok(None),
    }
}

/// A job's schedule: `every`, `at` or `watch = true` (one of them).
fn job_when(
    path: &Path,
    table: &str,
    job: &vault::config::BackupSettings,
) -> Result<Option<When>, Error> {
    let when = when_of(path, table, job.every, job.at.as_ref())?;
    if job.watch != Some(true) {
        return Ok(when);
    }
    if when.is_some() {
        return Err(Error::Usage(format!(
            "{}: [{table}] has `watch` and a schedule; keep one",
            path.display()
        )));
    }
    let debounce = job.debounce.unwrap_or(std::time::Duration::from_secs(2));
    let rescan = job
        .rescan_interval
        .unwrap_or(std::time::Duration::from_secs(3600));
    if rescan.is_zero() {
        return Err(Error::Usage(format!(
            "{}: [{table}] rescan_interval must be more than 0",
            path.display()
        )));
    }
    Ok(Some(When::Watch { debounce, rescan }))
}

/// A `push_to` destination with the `[ssh]` settings `vault push` would use.
fn push_to(dest: &str, path: &Path, cfg: &config::Config) -> Result<PushTo, Error> {
    let c = parse_as(&["vault", "push", dest], path, cfg)?;
    let Command::Push {
        ssh,
        encrypt_to,
        recipients_file,
        ..
    } = &c.command
    else {
        unreachable!("parsed as a push")
    };
    let remote = vault::ops::remote::Remote::parse(dest).map_err(Error::Usage)?;
    vault::ops::crypt::Recipients::parse(encrypt_to, recipients_file)
        .map_err(|e| Error::Usage(format!("{}: [push]: {e}", path.display())))?;
    let (auth, ssh) = ssh_settings(ssh)?;
    Ok(PushTo {
        remote,
        auth,
        ssh,
        encrypt_to: encrypt_to.clone(),
        recipients_files: recipients_file.clone(),
    })
}

/// `[job.NAME]` with `every` or `at`, as `vault backup --job NAME` builds it.
fn backup_job(
    name: &str,
    job: &vault::config::BackupSettings,
    path: &Path,
    cfg: &config::Config,
) -> Result<Option<DaemonJob>, Error> {
    let table = format!("job.{name}");
    let Some(when) = job_when(path, &table, job)? else {
        return Ok(None);
    };
    let c = parse_as(&["vault", "backup", "--job", name], path, cfg)?;
    let Command::Backup(b) = &c.command else {
        unreachable!("parsed as a backup")
    };
    let mut backup = cmd::backup::backup_options(&c, b)?;
    if backup.remote.is_some() {
        return Err(Error::Usage(format!(
            "{}: [job.{name}]: an ssh:// source runs in the daemon as [fleet] (hosts, paths)",
            path.display()
        )));
    }
    // A job that finds its repository locked waits for it rather than failing.
    backup.lock_wait = backup.lock_wait.max(std::time::Duration::from_secs(3600));
    Ok(Some(DaemonJob {
        name: name.to_string(),
        task: Task::Backup(Box::new(backup)),
        when,
        on_up: false,
        max_age: job.max_age,
        push_to: job
            .push_to
            .as_deref()
            .map(|d| push_to(d, path, cfg))
            .transpose()?,
        alerts: Arc::from(notifier(&b.alert_to, &b.mail)?),
    }))
}

/// `[fleet]` with `every`, `at` or `on_up`, as `vault backup --fleet` builds it.
fn fleet_job(path: &Path, cfg: &config::Config) -> Result<Option<DaemonJob>, Error> {
    let f = &cfg.fleet;
    let on_up = f.on_up.unwrap_or(false);
    let when = match when_of(path, "fleet", f.every, f.at.as_ref())? {
        Some(w) => w,
        None if on_up => When::Triggered,
        None => return Ok(None),
    };
    let c = parse_as(&["vault", "backup", "--fleet"], path, cfg)?;
    let Command::Backup(b) = &c.command else {
        unreachable!("parsed as a backup")
    };
    let mut opts = cmd::fleet::fleet_options(&c, b)?;
    opts.backup.lock_wait = opts
        .backup
        .lock_wait
        .max(std::time::Duration::from_secs(3600));
    Ok(Some(DaemonJob {
        name: "fleet".into(),
        task: Task::Fleet(Box::new(opts)),
        when,
        on_up,
        max_age: f.max_age,
        push_to: None,
        alerts: Arc::from(notifier(&b.alert_to, &b.mail)?),
    }))
}

/// `[sweep.NAME]`, as `vault scan` builds it with `[scan]` as its defaults.
fn sweep_of(
    name: &str,
    s: &SweepSettings,
    path: &Path,
    cfg: &config::Config,
) -> Result<DaemonSweep, Error> {
    let p = path.display();
    let every = s
        .every
        .ok_or_else(|| Error::Usage(format!("{p}: [sweep.{name}] needs `every`")))?;
    if every.is_zero() {
        return Err(Error::Usage(format!(
            "{p}: [sweep.{name}] every must be more than 0"
        )));
    }
    let mut merged = cfg.clone();
    let d = &cfg.scan;
    merged.scan = ScanSettings {
        targets: s.targets.clone().or(d.targets.clone()),
        hosts_file: s.hosts_file.clone().or(d.hosts_file.clone()),
        tcp: s.tcp.clone().or(d.tcp.clone()),
        icmp: s.icmp.or(d.icmp),
        timeout: s.timeout.or(d.timeout),
        retries: s.retries.or(d.retries),
        rate: s.rate.or(d.rate),
        every: Some(every),
        state: s.state.clone().or(d.state.clone()),
        alert_to: s.alert_to.clone().or(d.alert_to.clone()),
    };
    let c = parse_as(&["vault", "scan"], path, &merged)?;
    let Command::Scan(a) = &c.command else {
        unreachable!("parsed as a scan")
    };
    if a.targets.is_empty() && a.hosts_file.is_none() {
        return Err(Error::Usage(format!(
            "{p}: [sweep.{name}] needs `targets` or `hosts_file`"
        )));
    }
    Ok(DaemonSweep {
        name: name.to_string(),
        opts: cmd::sweep::sweep_options(&c, a),
        every,
        alerts: Arc::from(notifier(&a.alert_to, &a.mail)?),
    })
}

/// Everything the config file declares for the daemon.
fn plan(cli: &Cli) -> Result<Plan, Error> {
    let Some((path, cfg)) = config::load(cli.global.config.as_deref())? else {
        return Err(Error::Usage(
            "vault daemon needs a config file (./vault.toml or --config FILE) with jobs".into(),
        ));
    };
    let mut plan = Plan::default();
    for (name, job) in &cfg.job {
        plan.jobs.extend(backup_job(name, job, &path, &cfg)?);
    }
    plan.jobs.extend(fleet_job(&path, &cfg)?);
    for (name, s) in &cfg.sweep {
        plan.sweeps.push(sweep_of(name, s, &path, &cfg)?);
    }
    if plan.jobs.is_empty() && plan.sweeps.is_empty() {
        return Err(Error::Usage(format!(
            "{}: nothing to schedule: no [job.NAME] has `every` or `at`, [fleet] has none of `every`, `at`, `on_up`, and there is no [sweep.NAME]",
            path.display()
        )));
    }
    Ok(plan)
}

fn print_schedule(plan: &Plan, out: &Out) -> Result<Outcome, Error> {
    let list = schedule(plan);
    if out.json {
        let sweeps: Vec<serde_json::Value> = plan
            .sweeps
            .iter()
            .map(|s| serde_json::json!({"sweep": s.name, "targets": s.opts.targets, "every_s": s.every.as_secs_f64()}))
            .collect();
        out.json(&serde_json::json!({ "jobs": list, "sweeps": sweeps }))?;
    }
    for p in &list {
        let next = p.next.map_or("when triggered".into(), |s| {
            format!(
                "next {}",
                vault::time::compact_utc(s.saturating_mul(1_000_000_000))
            )
        });
        out.say(&format!(
            "{}: {} {} -> {}, {}, {next}",
            p.job, p.kind, p.source, p.repo, p.schedule
        ));
    }
    for s in &plan.sweeps {
        let every = vault::time::human_duration(s.every);
        out.say(&format!(
            "sweep {}: {} every {every}",
            s.name,
            s.opts.targets.join(" ")
        ));
    }
    Ok(Outcome::Done)
}

pub(in crate::cli) fn daemon(
    cli: &Cli,
    d: &DaemonArgs,
    out: &Out,
    pool: &Pool,
    (stop, abort): (&CancelToken, &CancelToken),
) -> Result<Outcome, Error> {
    let mut plan = plan(cli)?;
    if d.print_schedule {
        return print_schedule(&plan, out);
    }
    let server = d
        .listen
        .map(|a| serve::listen(a, d.listen_public))
        .transpose()?;
    let mut daemon = Daemon::new(server);
    out.note(&format!(
        "daemon: {} jobs, {} sweeps{}; SIGTERM to stop, SIGHUP to reload the config",
        plan.jobs.len(),
        plan.sweeps.len(),
        d.listen
            .map(|a| format!(", status page on http://{a}/"))
            .unwrap_or_default()
    ));
    let mut reports: Vec<serde_json::Value> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    loop {
        let mut note = |n: vault::ops::daemon::Note<'_>| log(n, out, &mut reports, &mut failures);
        if run(&mut daemon, &plan, pool, (stop, abort), &mut note) == Stopped::Signal {
            break;
        }
        // SIGHUP: the new config, or the old one kept (one line naming the file and line).
        match self::plan(cli) {
            Ok(new) => {
                plan = new;
                out.note(&format!(
                    "daemon: config reloaded: {} scheduled jobs, {} sweeps",
                    plan.jobs.len(),
                    plan.sweeps.len()
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

/// One line a daemon event: failures, DOWN hosts and overdue jobs on stderr, the rest on
/// stdout (both under `-q` only for problems); reports kept for `--json`.
fn log(
    n: vault::ops::daemon::Note<'_>,
    out: &Out,
    reports: &mut Vec<serde_json::Value>,
    failures: &mut Vec<String>,
) {
    use vault::ops::daemon::status::EventKind;
    match n {
        vault::ops::daemon::Note::Event(e) => match e.kind {
            EventKind::Failed | EventKind::Down | EventKind::Overdue => {
                eprintln!("vault: {}", e.text);
                if e.kind == EventKind::Failed {
                    failures.push(e.text.clone());
                }
            }
            _ => out.say(&e.text),
        },
        vault::ops::daemon::Note::Report { job, report } => {
            let mut v = report;
            v["job"] = job.into();
            reports.push(v);
        }
    }
}
