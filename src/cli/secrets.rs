//! Settings that carry secrets: SMTP and SSH passwords and key passphrases come from an
//! environment variable, a file or a terminal prompt, never from the command line.

use super::args::{MailFlags, SshFlags};
use vault::Error;

/// SMTP settings from the flags; the password only from the environment or a file.
pub(in crate::cli) fn smtp_settings(
    f: &MailFlags,
) -> Result<vault::ops::mail::SmtpSettings, Error> {
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
pub(in crate::cli) fn notifier(
    to: &[String],
    f: &MailFlags,
) -> Result<Box<dyn vault::alert::Notifier>, Error> {
    if to.is_empty() {
        return Ok(Box::new(vault::alert::NoNotifier));
    }
    Ok(Box::new(vault::ops::mail::MailNotifier {
        smtp: smtp_settings(f)?,
        to: to.to_vec(),
    }))
}

/// Reads a line from the terminal with echo off.
pub(in crate::cli) fn prompt_secret(prompt: &str) -> Result<String, Error> {
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
pub(in crate::cli) fn ssh_settings(
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
