//! `vault ssh`: a command on many hosts, on the pool's network lane.

use super::super::*;

/// The SSH targets given, and those of a hosts file, parsed (`[user@]host[:port]`).
pub(in crate::cli) fn targets(
    given: &[String],
    hosts_file: Option<&std::path::Path>,
) -> Result<Vec<vault::ops::ssh::SshTarget>, Error> {
    let mut texts = given.to_vec();
    if let Some(f) = hosts_file {
        texts.extend(vault::ops::sweep::targets::read_hosts_file(f).map_err(Error::Usage)?);
    }
    texts
        .iter()
        .map(|t| vault::ops::ssh::SshTarget::parse(t))
        .collect::<Result<_, _>>()
        .map_err(Error::Usage)
}

pub(in crate::cli) fn ssh(
    a: &SshArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::ops::ssh::run_many;
    let targets = targets(&a.targets, a.hosts_file.as_deref())?;
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
