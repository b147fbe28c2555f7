//! The `vault` binary: parses arguments, wires Ctrl-C to the cancellation token, runs one
//! library call per command and maps the result to an exit code (see `cli`).

mod cli;

use std::process::ExitCode;

/// Set once the command is `vault watch`, where a second signal aborts the running backup
/// cleanly instead of exiting at once.
static WATCH_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once the command is `vault daemon`, where SIGHUP reloads the config.
static DAEMON_MODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    // Everything vault creates (repository files, SQLite's WAL and index files, scan state,
    // temporary copies) is private to its owner; restore sets recorded modes explicitly.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let cancel = vault::CancelToken::new();
    let abort = vault::CancelToken::new();
    install_signal_thread(&cancel, &abort);
    let matches = match <cli::args::Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            if bad_value(&e) {
                // A value a parser refused: one line naming the flag and why.
                eprintln!(
                    "vault: {}",
                    vault::text::one_line(first_line(&e.to_string()))
                );
            } else {
                let _ = e.print();
            }
            if code == 2 {
                usage_json("usage", &e.to_string());
            }
            return ExitCode::from(code);
        }
    };
    let mut parsed = match <cli::args::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            usage_json("usage", &e.to_string());
            return ExitCode::from(2);
        }
    };
    // The config file fills what the command line left unset.
    match cli::config::load(parsed.global.config.as_deref()) {
        Ok(None) => {}
        Ok(Some((path, cfg))) => {
            if let Err(e) = cli::config::apply(&mut parsed, &matches, &path, &cfg) {
                return config_failed(&e.to_string());
            }
        }
        Err(e) => return config_failed(&e.to_string()),
    }
    if matches!(
        parsed.command,
        cli::args::Command::Watch(_) | cli::args::Command::Daemon(_)
    ) {
        WATCH_MODE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    if matches!(parsed.command, cli::args::Command::Daemon(_)) {
        DAEMON_MODE.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    cli::run(parsed, cancel, abort)
}

/// A bad config file: one line on stderr (and the JSON error document under --json), exit 2.
fn config_failed(msg: &str) -> ExitCode {
    let msg = vault::text::one_line(msg);
    eprintln!("vault: error: {msg}");
    usage_json("config", &msg);
    ExitCode::from(2)
}

/// A flag's value that its parser refused (a bad duration, day, port list, time, …).
fn bad_value(e: &clap::Error) -> bool {
    e.kind() == clap::error::ErrorKind::ValueValidation
}

fn first_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("")
}

/// The JSON error document for a command line that did not parse, when it asked for --json.
fn usage_json(kind: &str, msg: &str) {
    if std::env::args_os().skip(1).any(|a| a == "--json") {
        let first = msg
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ");
        cli::json_error(kind, first);
    }
}

/// SIGINT/SIGTERM cancel the running work; a second one exits at once (130). Under
/// `vault watch` the first lets the running backup finish, the second abandons it cleanly and
/// only a third exits at once.
fn install_signal_thread(cancel: &vault::CancelToken, abort: &vault::CancelToken) {
    // SAFETY: plain libc signal-mask calls on memory we own; done before any other thread
    // exists, so every thread inherits the mask and only the waiter receives the signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let cancel = cancel.clone();
        let abort = abort.clone();
        std::thread::spawn(move || {
            let mut count = 0;
            loop {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) != 0 {
                    return;
                }
                let watching = WATCH_MODE.load(std::sync::atomic::Ordering::SeqCst);
                // SIGHUP: `vault daemon` reloads its config; anything else stops as on SIGTERM.
                if sig == libc::SIGHUP && DAEMON_MODE.load(std::sync::atomic::Ordering::SeqCst) {
                    vault::ops::daemon::RELOAD.store(true, std::sync::atomic::Ordering::SeqCst);
                    continue;
                }
                count += 1;
                if count == 1 {
                    if watching {
                        eprintln!(
                            "vault: stopping after the running backup (signal again to abandon it)"
                        );
                    } else {
                        eprintln!(
                            "vault: interrupted; stopping (press Ctrl-C again to quit at once)"
                        );
                    }
                    cancel.cancel();
                } else if count == 2 && watching {
                    eprintln!("vault: abandoning the running backup");
                    abort.cancel();
                } else {
                    std::process::exit(130);
                }
            }
        });
    }
}
