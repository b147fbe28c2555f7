//! The config file (`vault.toml`, or `--config FILE`): defaults for flags, named backup jobs,
//! alert recipients and SMTP settings, scan targets and ssh host lists.
//!
//! Rules: every key is checked (an unknown key or a wrong type is an error naming the file, the
//! line and the key, exit 2); a flag given on the command line (or in the environment, for
//! `VAULT_REPO`) always wins over the file; `[job.NAME]` values win over `[backup]` defaults.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::args::{BackupArgs, Cli, Command, MailFlags, ScanArgs, SshArgs, SshFlags};
use vault::config::SshSettings;
pub use vault::config::{parse, AlertSettings, Config};
use vault::Error;

/// Loads `--config FILE`, or ./vault.toml when present, or nothing.
pub fn load(explicit: Option<&Path>) -> Result<Option<(PathBuf, Config)>, Error> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = PathBuf::from("vault.toml");
            if !p.is_file() {
                return Ok(None);
            }
            p
        }
    };
    trusted(&path)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    Ok(Some((path.clone(), parse(&path, &text)?)))
}

/// A config file can name password variables, key files, known_hosts and servers, so only one
/// that the user (or root) owns and that nobody else can write is read.
fn trusted(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)
        .map_err(|e| Error::Usage(format!("cannot read config file {}: {e}", path.display())))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(Error::Usage(format!(
            "refusing config file {}: owned by uid {}, not by you (uid {me}) or root",
            path.display(),
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(Error::Usage(format!(
            "refusing config file {}: others can write it (chmod go-w {})",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// True when the user set this argument (command line or environment).
fn given(m: &ArgMatches, id: &str) -> bool {
    matches!(
        m.value_source(id),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
}

fn set<T>(m: &ArgMatches, id: &str, slot: &mut T, value: Option<T>) {
    if !given(m, id) {
        if let Some(v) = value {
            *slot = v;
        }
    }
}

fn set_opt<T>(m: &ArgMatches, id: &str, slot: &mut Option<T>, value: Option<T>) {
    if !given(m, id) && value.is_some() {
        *slot = value;
    }
}

fn apply_mail(m: &ArgMatches, f: &mut MailFlags, a: &AlertSettings) {
    set(m, "smtp", &mut f.smtp, a.smtp.clone());
    set(m, "starttls", &mut f.starttls, a.starttls);
    set(m, "tls", &mut f.tls, a.tls);
    set_opt(m, "smtp_user", &mut f.smtp_user, a.smtp_user.clone());
    set_opt(
        m,
        "password_env",
        &mut f.password_env,
        a.password_env.clone(),
    );
    set_opt(
        m,
        "password_file",
        &mut f.password_file,
        a.password_file.clone(),
    );
    set_opt(m, "smtp_ca", &mut f.smtp_ca, a.smtp_ca.clone());
    set(m, "from", &mut f.from, a.from.clone());
}

/// The global repo slot, when the command line left it to the config.
fn cli_repo(slot: &mut Option<PathBuf>, given: bool) -> Option<&mut Option<PathBuf>> {
    (!given).then_some(slot)
}

/// `vault backup --fleet`: hosts, folders and their SSH settings from `[fleet]` (the command
/// line wins; `[backup]` still gives the policy and the codec).
fn apply_fleet(
    b: &mut BackupArgs,
    sub: &ArgMatches,
    path: &Path,
    cfg: &Config,
) -> Result<(), Error> {
    let f = &cfg.fleet;
    if b.host.is_empty() && b.hosts_file.is_none() && b.sweep.is_empty() {
        b.host = f.hosts.clone().unwrap_or_default();
        b.hosts_file = f.hosts_file.clone();
        b.sweep = f.sweep.clone().unwrap_or_default();
    }
    if b.host.is_empty() && b.hosts_file.is_none() && b.sweep.is_empty() {
        let p = path.display();
        return Err(Error::Usage(format!(
            "{p}: [fleet] names no hosts (hosts, hosts_file or sweep)"
        )));
    }
    if b.path.is_empty() {
        b.path = f.paths.clone().unwrap_or_default();
    }
    if b.exclude.is_empty() {
        b.exclude = f.exclude.clone().unwrap_or_default();
    }
    set(sub, "parallel", &mut b.parallel, f.parallel.map(u16::from));
    set(sub, "up_from_scan", &mut b.up_from_scan, f.up_from_scan);
    if b.ssh.identity.is_empty() {
        b.ssh.identity = f.identity.clone().unwrap_or_default();
    }
    set_opt(
        sub,
        "known_hosts",
        &mut b.ssh.known_hosts,
        f.known_hosts.clone(),
    );
    if b.alert_to.is_empty() {
        b.alert_to = f.alert_to.clone().unwrap_or_default();
    }
    Ok(())
}

/// `vault backup` (and `vault watch`) flags from `[job.NAME]`, then `[backup]`, then the top.
fn apply_backup(
    b: &mut BackupArgs,
    sub: &ArgMatches,
    repo_slot: Option<&mut Option<PathBuf>>,
    path: &Path,
    cfg: &Config,
) -> Result<(), Error> {
    let job = match &b.job {
        Some(name) => Some(cfg.job.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = cfg.job.keys().map(String::as_str).collect();
            Error::Usage(format!(
                "{}: no [job.{name}] (jobs: {})",
                path.display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })?),
        None => None,
    };
    let d = &cfg.backup;
    let j = job.unwrap_or_default();
    if b.fleet {
        apply_fleet(b, sub, path, cfg)?;
    }
    let fleet = !b.host.is_empty() || b.hosts_file.is_some() || !b.sweep.is_empty();
    if b.src.is_none() && !b.stdin && !fleet {
        b.src = j.source.clone().or_else(|| d.source.clone());
        if b.src.is_none() {
            return Err(Error::Usage(format!(
                "{}: job {} has no source",
                path.display(),
                b.job.as_deref().unwrap_or("")
            )));
        }
    }
    if let Some(slot) = repo_slot {
        let fleet_repo = b.fleet.then(|| cfg.fleet.repo.clone()).flatten();
        if let Some(r) = fleet_repo
            .or_else(|| j.repo.clone())
            .or_else(|| d.repo.clone())
            .or_else(|| cfg.repo.clone())
        {
            *slot = Some(r);
        }
    }
    if b.exclude.is_empty() {
        b.exclude = j
            .exclude
            .clone()
            .or_else(|| d.exclude.clone())
            .unwrap_or_default();
    }
    apply_selection(sub, b, &j, d);
    set(sub, "full_on", &mut b.full_on, j.full_on.or(d.full_on));
    set(
        sub,
        "max_chain",
        &mut b.max_chain,
        j.max_chain.or(d.max_chain),
    );
    set(
        sub,
        "compression",
        &mut b.compression,
        j.compression.or(d.compression),
    );
    set_opt(sub, "level", &mut b.level, j.level.or(d.level));
    set_opt(sub, "hash", &mut b.hash, j.hash.or(d.hash));
    set(sub, "rehash", &mut b.rehash, j.rehash.or(d.rehash));
    if b.alert_to.is_empty() {
        b.alert_to = j
            .alert_to
            .clone()
            .or_else(|| d.alert_to.clone())
            .or_else(|| cfg.alert.to.clone())
            .unwrap_or_default();
    }
    apply_mail(sub, &mut b.mail, &cfg.alert);
    if j.forget_after == Some(true) {
        let Some(keep) = j.keep.filter(|k| !k.rules().is_empty()) else {
            return Err(Error::Usage(format!(
                "{}: [job.{}] forget_after needs `keep = {{ daily = 7, … }}`",
                path.display(),
                b.job.as_deref().unwrap_or("")
            )));
        };
        b.forget_after = Some(keep.rules());
    }
    Ok(())
}

/// The selection keys (`exclude_file`, `exclude_caches`, `exclude_if_present`,
/// `one_file_system`) of a job, or of `[backup]`, where the command line gave none.
fn apply_selection(
    sub: &ArgMatches,
    b: &mut BackupArgs,
    j: &vault::config::BackupSettings,
    d: &vault::config::BackupSettings,
) {
    if b.exclude_if_present.is_empty() {
        b.exclude_if_present = j
            .exclude_if_present
            .clone()
            .or_else(|| d.exclude_if_present.clone())
            .unwrap_or_default();
    }
    if b.exclude_file.is_empty() {
        b.exclude_file = j
            .exclude_file
            .clone()
            .or_else(|| d.exclude_file.clone())
            .unwrap_or_default();
    }
    set(
        sub,
        "exclude_caches",
        &mut b.exclude_caches,
        j.exclude_caches.or(d.exclude_caches),
    );
    set(
        sub,
        "one_file_system",
        &mut b.one_file_system,
        j.one_file_system.or(d.one_file_system),
    );
}

/// Fills what the command line left unset from the config file.
pub fn apply(cli: &mut Cli, matches: &ArgMatches, path: &Path, cfg: &Config) -> Result<(), Error> {
    let (_, sub) = matches.subcommand().expect("a subcommand is required");
    // Global flags may be given before or after the subcommand.
    let global_given = |id: &str| given(matches, id) || given(sub, id);
    if !global_given("jobs") && cfg.jobs.is_some() {
        cli.global.jobs = cfg.jobs.map(u16::from);
    }
    let repo_given = global_given("repo");
    match &mut cli.command {
        Command::Backup(b) => apply_backup(
            b,
            sub,
            cli_repo(&mut cli.global.repo, repo_given),
            path,
            cfg,
        )?,
        Command::Watch(w) => apply_backup(
            &mut w.backup,
            sub,
            cli_repo(&mut cli.global.repo, repo_given),
            path,
            cfg,
        )?,
        Command::Scan(a) => {
            apply_scan(a, sub, cfg);
            default_repo(&mut cli.global.repo, repo_given, cfg);
        }
        Command::Ssh(a) => apply_ssh(a, sub, &cfg.ssh),
        Command::Mail { mail, .. } => apply_mail(sub, mail, &cfg.alert),
        Command::Push {
            ssh,
            encrypt_to,
            recipients_file,
            ..
        } => {
            apply_ssh_flags(sub, ssh, &cfg.ssh);
            if encrypt_to.is_empty() && recipients_file.is_empty() {
                *encrypt_to = cfg.push.encrypt_to.clone().unwrap_or_default();
                *recipients_file = cfg.push.recipients_file.clone().unwrap_or_default();
            }
            default_repo(&mut cli.global.repo, repo_given, cfg);
        }
        Command::Pull { ssh, .. } | Command::Check { ssh, .. } => {
            apply_ssh_flags(sub, ssh, &cfg.ssh);
            default_repo(&mut cli.global.repo, repo_given, cfg);
        }
        _ => default_repo(&mut cli.global.repo, repo_given, cfg),
    }
    Ok(())
}

/// The global repo from the config, when the command line left it unset.
fn default_repo(slot: &mut Option<PathBuf>, repo_given: bool, cfg: &Config) {
    if !repo_given && cfg.repo.is_some() {
        *slot = cfg.repo.clone();
    }
}

/// `vault scan` flags from `[scan]` (alert recipients also from `[alert]`).
fn apply_scan(a: &mut ScanArgs, sub: &ArgMatches, cfg: &Config) {
    let s = &cfg.scan;
    if a.targets.is_empty() && a.hosts_file.is_none() {
        a.targets = s.targets.clone().unwrap_or_default();
        a.hosts_file = s.hosts_file.clone();
    }
    set_opt(sub, "tcp", &mut a.tcp, s.tcp.clone());
    set(sub, "icmp", &mut a.icmp, s.icmp);
    set(sub, "timeout", &mut a.timeout, s.timeout);
    set(sub, "retries", &mut a.retries, s.retries);
    set(sub, "rate", &mut a.rate, s.rate);
    set_opt(sub, "every", &mut a.every, s.every);
    set_opt(sub, "state", &mut a.state, s.state.clone());
    if a.alert_to.is_empty() {
        a.alert_to = s
            .alert_to
            .clone()
            .or_else(|| cfg.alert.to.clone())
            .unwrap_or_default();
    }
    apply_mail(sub, &mut a.mail, &cfg.alert);
}

/// `vault ssh` flags from `[ssh]`.
fn apply_ssh(a: &mut SshArgs, sub: &ArgMatches, s: &SshSettings) {
    if a.targets.is_empty() && a.hosts_file.is_none() {
        a.targets = s.hosts.clone().unwrap_or_default();
        a.hosts_file = s.hosts_file.clone();
    }
    set(sub, "parallel", &mut a.parallel, s.parallel.map(u16::from));
    let f = &mut a.ssh;
    apply_ssh_flags(sub, f, s);
    set_opt(
        sub,
        "password_env",
        &mut f.password_env,
        s.password_env.clone(),
    );
    set_opt(
        sub,
        "password_file",
        &mut f.password_file,
        s.password_file.clone(),
    );
    set_opt(
        sub,
        "passphrase_env",
        &mut f.passphrase_env,
        s.passphrase_env.clone(),
    );
}

/// The SSH connection flags every SSH command shares (keys, known_hosts, timeout) from `[ssh]`.
fn apply_ssh_flags(sub: &ArgMatches, f: &mut SshFlags, s: &SshSettings) {
    if f.identity.is_empty() {
        f.identity = s.identity.clone().unwrap_or_default();
    }
    set_opt(
        sub,
        "known_hosts",
        &mut f.known_hosts,
        s.known_hosts.clone(),
    );
    set(sub, "timeout", &mut f.timeout, s.timeout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_key() {
        let p = Path::new("vault.toml");
        let e = parse(p, "repo = \"/r\"\n[backup]\nmax_chain = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("vault.toml:3: key `max_chain`:"), "{e}");
        let e = parse(p, "[backup]\nexlude = [\"*.tmp\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("vault.toml:2: key `exlude`:") && e.contains("unknown field"),
            "{e}"
        );
        assert!(parse(p, "").is_ok());
    }
}
