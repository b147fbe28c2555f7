//! The command line: clap types ([`args`]) become the library's option structs here, each
//! command calls one library function, and its report is printed as human text or as one JSON
//! document. Exit codes: 0 done, 1 error, 2 usage, 3 done with failed items.

/// `println!` that survives a closed stdout: see [`stdout_failed`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

/// `print!` that survives a closed stdout: see [`stdout_failed`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

pub mod args;
mod cmd;
pub mod config;
pub mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use args::{
    BackupArgs, Cli, Command, MailFlags, RestoreArgs, ScanArgs, SshArgs, SshFlags, WatchArgs,
};
use vault::{BackupOptions, CancelToken, Error, Kind, Pool, Repository};

/// Standard output could not be written. A reader that went away (`vault ls | head`) is no
/// failure of the command: vault ends quietly with exit 0, its work (a backup, say) already
/// done. Any other error (a full disk behind a redirect) is reported, exit 1.
pub fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("vault: error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// How a command ended.
pub enum Outcome {
    Done,
    /// Done, but some items failed (exit 3).
    Partial,
}

/// Output settings shared by all commands.
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    /// Set once the command's JSON document is out (a failure after it prints no second one).
    pub printed: std::cell::Cell<bool>,
}

impl Out {
    /// Human text: stdout normally, stderr when the JSON document owns stdout.
    fn say(&self, text: &str) {
        if self.quiet {
            return;
        }
        if self.json {
            eprintln!("{text}");
        } else {
            outln!("{text}");
        }
    }
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("vault: {text}");
        }
    }
    fn json<T: serde::Serialize>(&self, value: &T) -> Result<(), Error> {
        self.printed.set(true);
        let mut out = std::io::stdout().lock();
        if let Err(e) = serde_json::to_writer_pretty(&mut out, value) {
            match e.io_error_kind() {
                Some(kind) => stdout_failed(kind.into()),
                None => return Err(Error::Internal(format!("cannot write JSON: {e}"))),
            }
        }
        if let Err(e) = writeln!(out).and_then(|()| out.flush()) {
            stdout_failed(e);
        }
        Ok(())
    }
}

/// Runs a parsed command line. `cancel` is set by the first SIGINT/SIGTERM, `abort` by the
/// second (only `vault watch` tells the two apart).
pub fn run(cli: Cli, cancel: CancelToken, abort: CancelToken) -> ExitCode {
    let out = Out {
        json: cli.global.json,
        quiet: cli.global.quiet,
        printed: std::cell::Cell::new(false),
    };
    let pool = Pool::with_network(cli.global.jobs.map_or(0, usize::from), network_lane(&cli));
    let result = dispatch(&cli, &out, &pool, &cancel, &abort);
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Partial) => ExitCode::from(3),
        Err(e) => {
            let mut msg = format!("vault: error: {e}");
            let mut src = std::error::Error::source(&e);
            // Add the lower cause when the message does not already carry it.
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg.push_str(": ");
                    msg.push_str(&t);
                }
                src = s.source();
            }
            eprintln!("{}", vault::text::one_line(&msg));
            if out.json && !out.printed.get() {
                json_error(e.kind(), msg.trim_start_matches("vault: error: "));
            }
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

/// The size of the pool's network lane: the command's `--parallel` (0: the cores).
fn network_lane(cli: &Cli) -> usize {
    match &cli.command {
        Command::Ssh(a) => usize::from(a.parallel),
        Command::Scan(a) => a.parallel.map_or(0, usize::from),
        _ => 0,
    }
}

/// Under `--json`, a command that fails still prints one JSON document:
/// `{"error": {"kind": KIND, "message": TEXT}}`.
pub fn json_error(kind: &str, message: &str) {
    let doc = serde_json::json!({ "error": { "kind": kind, "message": message } });
    outln!("{doc:#}");
}

fn repo_arg(cli: &Cli) -> Result<PathBuf, Error> {
    cli.global
        .repo
        .clone()
        .ok_or_else(|| Error::Usage("--repo DIR is required (or set VAULT_REPO)".into()))
}

fn dispatch(
    cli: &Cli,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
    abort: &CancelToken,
) -> Result<Outcome, Error> {
    match &cli.command {
        Command::Init => cmd::repo::init(cli, out),
        Command::Backup(b) => backup(cli, b, out, pool, cancel),
        Command::Watch(w) => watch(cli, w, out, pool, cancel, abort),
        Command::Completions { shell } => cmd::docs::completions(*shell),
        Command::Man { dir } => cmd::docs::man(out, dir),
        Command::Restore(r) => restore(cli, r, out, pool, cancel),
        Command::Scan(a) => scan(cli, a, out, pool, cancel),
        Command::Ssh(a) => ssh(a, out, pool, cancel),
        Command::Mail {
            to,
            subject,
            body,
            mail,
        } => cmd::mail::mail(out, to, subject, body, mail),
        Command::Push {
            dest,
            verify,
            force,
            ssh,
        } => cmd::remote::push(cli, out, dest, *verify, *force, ssh),
        Command::Pull { src, ssh } => cmd::remote::pull(cli, out, src, ssh),
        Command::Check { read_data } => cmd::repo::check(cli, out, pool, cancel, *read_data),
        Command::Forget {
            keep_fulls,
            dry_run,
            lock_wait,
        } => cmd::repo::forget(cli, out, *keep_fulls, *dry_run, *lock_wait),
        Command::Snapshots { source } => cmd::repo::snapshots(cli, out, source),
        Command::Ls { snap, source } => cmd::repo::ls(cli, out, snap, source),
        Command::Diff {
            snap_a,
            snap_b,
            source,
        } => cmd::repo::diff(cli, out, snap_a, snap_b, source),
    }
}

/// The library's backup options from `vault backup`'s (or `vault watch`'s) flags.
fn backup_options(cli: &Cli, b: &BackupArgs) -> Result<BackupOptions, Error> {
    let src = b
        .src
        .clone()
        .ok_or_else(|| Error::Usage("give SRC or --job NAME".into()))?;
    let mut opts = BackupOptions::new(&src, repo_arg(cli)?);
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
    Ok(opts)
}

fn watch(
    cli: &Cli,
    w: &WatchArgs,
    out: &Out,
    pool: &Pool,
    stop: &CancelToken,
    abort: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::ops::watch::{watch, WatchEvent, WatchOptions};
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

fn backup(
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

/// SMTP settings from the flags; the password only from the environment or a file.
fn smtp_settings(f: &MailFlags) -> Result<vault::ops::mail::SmtpSettings, Error> {
    let password = match (&f.password_env, &f.password_file) {
        (Some(v), _) => Some(
            std::env::var(v)
                .map_err(|_| Error::Usage(format!("environment variable {v} is not set")))?,
        ),
        (None, Some(p)) => Some(vault::ops::ssh::read_secret_file(p).map_err(|e| {
            Error::Usage(format!("cannot read password file {}: {e}", p.display()))
        })?),
        _ => None,
    };
    if password.is_some() && f.smtp_user.is_none() {
        return Err(Error::Usage("a password needs --smtp-user".into()));
    }
    let timeout = f.smtp_timeout;
    if timeout.is_zero() {
        return Err(Error::Usage("--smtp-timeout must be more than 0".into()));
    }
    Ok(vault::ops::mail::SmtpSettings {
        url: f.smtp.clone(),
        starttls: f.starttls,
        tls: f.tls,
        user: f.smtp_user.clone(),
        password,
        ca: f.smtp_ca.clone(),
        from: f.from.clone(),
        timeout,
    })
}

/// The notifier for `--alert-to`, or none.
fn notifier(to: &[String], f: &MailFlags) -> Result<Box<dyn vault::alert::Notifier>, Error> {
    if to.is_empty() {
        return Ok(Box::new(vault::alert::NoNotifier));
    }
    Ok(Box::new(vault::ops::mail::MailNotifier {
        smtp: smtp_settings(f)?,
        to: to.to_vec(),
    }))
}

/// Reads a line from the terminal with echo off.
fn prompt_secret(prompt: &str) -> Result<String, Error> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| Error::Usage(format!("--ask-password needs a terminal: {e}")))?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios calls on the terminal we opened; the old mode is restored below.
    let mut old: libc::termios = unsafe { std::mem::zeroed() };
    unsafe { libc::tcgetattr(fd, &mut old) };
    let mut quiet = old;
    quiet.c_lflag &= !libc::ECHO;
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let _ = write!(&tty, "{prompt}");
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &old) };
    let _ = writeln!(&tty);
    r.map_err(|e| Error::Usage(format!("cannot read the password: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// SSH settings from the flags; secrets only from the environment, a file or the terminal.
fn ssh_settings(
    f: &SshFlags,
) -> Result<(vault::ops::ssh::SshAuth, vault::ops::ssh::SshOptions), Error> {
    use vault::ops::ssh::{default_known_hosts, read_secret_file, SshAuth, SshOptions};
    let env = |var: &str| {
        std::env::var(var)
            .map_err(|_| Error::Usage(format!("environment variable {var} is not set")))
    };
    let password = match (&f.password_env, &f.password_file, f.ask_password) {
        (Some(v), _, _) => Some(env(v)?),
        (None, Some(p), _) => Some(read_secret_file(p).map_err(|e| {
            Error::Usage(format!("cannot read password file {}: {e}", p.display()))
        })?),
        (None, None, true) => Some(prompt_secret("SSH password: ")?),
        _ => None,
    };
    let passphrase = f.passphrase_env.as_deref().map(env).transpose()?;
    let auth = SshAuth {
        user: None,
        keys: f.identity.clone(),
        passphrase,
        password,
        agent: !f.no_agent,
    };
    let timeout = f.timeout;
    if timeout.is_zero() {
        return Err(Error::Usage("--timeout must be more than 0".into()));
    }
    let opts = SshOptions {
        known_hosts: f.known_hosts.clone().unwrap_or_else(default_known_hosts),
        accept_new: f.accept_new,
        timeout,
    };
    Ok((auth, opts))
}

fn ssh(a: &SshArgs, out: &Out, pool: &Pool, cancel: &CancelToken) -> Result<Outcome, Error> {
    use vault::ops::ssh::{run_many, SshTarget};
    let mut texts = a.targets.clone();
    if let Some(f) = &a.hosts_file {
        texts.extend(vault::ops::sweep::targets::read_hosts_file(f).map_err(Error::Usage)?);
    }
    let targets: Vec<SshTarget> = texts
        .iter()
        .map(|t| SshTarget::parse(t))
        .collect::<Result<_, _>>()
        .map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(&a.ssh)?;
    let command = a.command.join(" ");
    let results = run_many(&targets, &command, &auth, &opts, pool, cancel)?;
    if out.json {
        out.json(&serde_json::json!({ "hosts": results }))?;
    } else if !out.quiet {
        for r in &results {
            outln!("[{}] OUT:", r.host);
            out!("{}", r.stdout);
            if !r.stdout.is_empty() && !r.stdout.ends_with('\n') {
                outln!();
            }
            outln!("[{}] ERROR:", r.host);
            out!("{}", r.stderr);
            if !r.stderr.is_empty() && !r.stderr.ends_with('\n') {
                outln!();
            }
            match (&r.error, r.exit_status) {
                (Some(e), _) => outln!("[{}] failed: {e}", r.host),
                (None, Some(s)) => outln!("[{}] exit status {s}", r.host),
                (None, None) => {}
            }
        }
    }
    let failed = results.iter().filter(|r| r.failed()).count();
    if !out.quiet {
        eprintln!(
            "{} hosts, {} ok, {} failed",
            results.len(),
            results.len() - failed,
            failed
        );
    }
    Ok(if failed == 0 {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

fn print_hosts(out: &Out, report: &vault::ops::sweep::SweepReport) {
    for h in &report.hosts {
        let mut line = if h.host == h.address {
            h.host.clone()
        } else {
            format!("{} ({})", h.host, h.address)
        };
        line.push_str(if h.up { " up" } else { " down" });
        if let Some(r) = h.rtt_ms {
            line.push_str(&format!(" {r}ms"));
        }
        for (p, st) in &h.ports {
            line.push_str(&format!(" {p}/{}", st.name()));
        }
        out.say(&line);
    }
}

fn scan(
    cli: &Cli,
    a: &ScanArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::ops::sweep::{sweep, SweepOptions};
    let mut opts = SweepOptions::new(a.targets.clone());
    opts.hosts_file = a.hosts_file.clone();
    if let Some(p) = &a.tcp {
        opts.tcp_ports = p.0.clone();
        opts.icmp = a.icmp;
    }
    opts.timeout = a.timeout;
    opts.retries = a.retries;
    opts.rate = a.rate;
    opts.yes = a.yes;
    opts.state_dir = a.state.clone().or_else(|| cli.global.repo.clone());
    let every = a.every;
    if every.is_some_and(|d| d.is_zero()) {
        return Err(Error::Usage("--every must be more than 0".into()));
    }
    if !a.alert_to.is_empty() && opts.state_dir.is_none() {
        return Err(Error::Usage(
            "--alert-to needs --state DIR (or --repo) to know what changed".into(),
        ));
    }
    let notifier = notifier(&a.alert_to, &a.mail)?;
    let mut all_transitions = Vec::new();
    let mut last = None;
    let mut rounds = 0u64;
    loop {
        let report = match sweep(&opts, pool, cancel) {
            Ok(r) => r,
            Err(Error::Cancelled) if last.is_some() => break,
            Err(e) => return Err(e),
        };
        rounds += 1;
        if rounds == 1 && !out.json {
            print_hosts(out, &report);
        }
        for t in &report.transitions {
            let line = format!("{}: {} -> {}", t.host, t.from, t.to);
            if out.json {
                out.note(&line);
            } else {
                out.say(&line);
            }
        }
        if let Err(e) = notifier.notify(&report.events()) {
            out.note(&format!("warning: alert not sent: {e}"));
        }
        if !out.quiet {
            eprintln!(
                "{} up, {} down ({} hosts in {:.2}s{})",
                report.up,
                report.down,
                report.hosts.len(),
                report.duration_s,
                match report.icmp_socket {
                    Some(vault::ops::sweep::icmp::SocketKind::Raw) => ", ICMP raw socket",
                    Some(vault::ops::sweep::icmp::SocketKind::Datagram) => ", ICMP datagram socket",
                    None => "",
                }
            );
        }
        all_transitions.extend(report.transitions.clone());
        last = Some(report);
        let Some(period) = every else { break };
        let until = std::time::Instant::now() + period;
        while std::time::Instant::now() < until && !cancel.is_cancelled() {
            std::thread::sleep(
                std::time::Duration::from_millis(50).min(until - std::time::Instant::now()),
            );
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    let mut report = last.expect("at least one sweep");
    report.transitions = all_transitions;
    if out.json {
        scan_json(out, &report, rounds)?;
    }
    Ok(if report.down == 0 {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

/// The sweep report and the number of rounds, written directly (not through
/// serde_json::Value, whose maps sort keys as text), so ports stay in numeric order.
fn scan_json(out: &Out, report: &vault::ops::sweep::SweepReport, rounds: u64) -> Result<(), Error> {
    #[derive(serde::Serialize)]
    struct WithRounds<'a> {
        #[serde(flatten)]
        report: &'a vault::ops::sweep::SweepReport,
        rounds: u64,
    }
    out.json(&WithRounds { report, rounds })
}

fn restore(
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
        preserve_setid: r.preserve_setid,
    };
    let bar = progress::Bar::new(!out.quiet);
    let report = vault::engine::restore::restore(&opts, pool, cancel, &bar);
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
        "{} snapshot {} of {} into {}: {} files, {} folders, {} symlinks, {} hard links, {}{}",
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

/// `1.5 MB`-style sizes (powers of 1000, as df -H and restic do).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
