//! The `vault` binary: parses arguments, wires Ctrl-C to the cancellation token, runs one
//! library call per command and maps the result to an exit code (see `cli`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cancel = vault::CancelToken::new();
    install_signal_thread(&cancel);
    let matches = match <cli::args::Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let mut parsed = match <cli::args::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    // The config file fills what the command line left unset.
    match cli::config::load(parsed.global.config.as_deref()) {
        Ok(None) => {}
        Ok(Some((path, cfg))) => {
            if let Err(e) = cli::config::apply(&mut parsed, &matches, &path, &cfg) {
                eprintln!("vault: error: {e}");
                return ExitCode::from(2);
            }
        }
        Err(e) => {
            eprintln!("vault: error: {e}");
            return ExitCode::from(2);
        }
    }
    cli::run(parsed, cancel)
}

/// SIGINT/SIGTERM cancel the running work; a second one exits at once (130).
fn install_signal_thread(cancel: &vault::CancelToken) {
    // SAFETY: plain libc signal-mask calls on memory we own; done before any other thread
    // exists, so every thread inherits the mask and only the waiter receives the signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            let mut count = 0;
            loop {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) != 0 {
                    return;
                }
                count += 1;
                if count == 1 {
                    eprintln!("vault: interrupted; stopping (press Ctrl-C again to quit at once)");
                    cancel.cancel();
                } else {
                    std::process::exit(130);
                }
            }
        });
    }
}
