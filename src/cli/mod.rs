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
mod secrets;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use args::{
    BackupArgs, Cli, Command, DaemonArgs, FindArgs, ForgetArgs, MailFlags, RestoreArgs, ScanArgs,
    SshArgs, SshFlags, WatchArgs,
};
use secrets::{notifier, smtp_settings, ssh_settings};
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
        // Buffered: stdout alone is line-buffered, one write(2) per line of pretty JSON.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
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
        Command::Backup(b) => usize::from(b.parallel),
        Command::Daemon(d) => usize::from(d.parallel),
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
        Command::Backup(b)
            if b.fleet || !b.host.is_empty() || b.hosts_file.is_some() || !b.sweep.is_empty() =>
        {
            cmd::fleet::fleet(cli, b, out, pool, cancel)
        }
        Command::Backup(b) => cmd::backup::backup(cli, b, out, pool, cancel),
        Command::Watch(w) => cmd::backup::watch(cli, w, out, pool, cancel, abort),
        Command::Daemon(d) => cmd::daemon::daemon(cli, d, out, pool, (cancel, abort)),
        Command::Completions { shell } => cmd::docs::completions(*shell),
        Command::Man { dir } => cmd::docs::man(out, dir),
        Command::Restore(r) => cmd::restore::restore(cli, r, out, pool, cancel),
        Command::Scan(a) => cmd::sweep::scan(cli, a, out, pool, cancel),
        Command::Ssh(a) => cmd::ssh::ssh(a, out, pool, cancel),
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
            encrypt_to,
            recipients_file,
            ssh,
        } => cmd::remote::push(
            cli,
            out,
            dest,
            (*verify, *force),
            (encrypt_to, recipients_file),
            ssh,
        ),
        Command::Pull {
            src,
            age_identity,
            ssh,
        } => cmd::remote::pull(cli, out, src, age_identity.as_deref(), ssh),
        Command::Keygen { output } => cmd::remote::keygen(out, output),
        Command::Check {
            remote: Some(dest),
            age_identity,
            ssh,
            ..
        } => cmd::remote::check_remote(out, dest, age_identity.as_deref(), ssh),
        Command::Check { read_data, .. } => cmd::repo::check(cli, out, pool, cancel, *read_data),
        Command::Forget(f) => cmd::repo::forget(cli, out, f),
        Command::Snapshots { source } => cmd::repo::snapshots(cli, out, source),
        Command::Ls { snap, source } => cmd::repo::ls(cli, out, snap, source),
        Command::Find(f) => cmd::history::find(cli, out, f),
        Command::Log { path, source } => cmd::history::log(cli, out, path, source),
        Command::Cat { snap, path, source } => cmd::history::cat(cli, out, snap, path, source),
        Command::Diff {
            snap_a,
            snap_b,
            source,
        } => cmd::repo::diff(cli, out, snap_a, snap_b, source),
    }
}

pub use vault::text::human_bytes;
