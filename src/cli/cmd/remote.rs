//! Copies of a repository elsewhere: push and pull.

use super::super::*;

/// `vault push`.
pub(in crate::cli) fn push(
    cli: &Cli,
    out: &Out,
    dest: &str,
    verify: bool,
    force: bool,
    ssh: &SshFlags,
) -> Result<Outcome, Error> {
    use vault::ops::remote::{push, PushOptions, Remote};
    let remote = Remote::parse(dest).map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(ssh)?;
    let how = PushOptions { verify, force };
    let r = push(&repo_arg(cli)?, &remote, &auth, &opts, how)?;
    if out.json {
        out.json(&r)?;
    }
    for a in &r.repaired {
        out.note(&format!("{a} was damaged on {}; sent again", r.remote));
    }
    out.say(&format!(
        "pushed to {}: {} archives sent ({}), {} already there; manifest with {} snapshots",
        r.remote,
        r.sent.len(),
        human_bytes(r.bytes),
        r.skipped,
        r.snapshots
    ));
    Ok(Outcome::Done)
}

/// `vault pull`.
pub(in crate::cli) fn pull(
    cli: &Cli,
    out: &Out,
    src: &str,
    ssh: &SshFlags,
) -> Result<Outcome, Error> {
    use vault::ops::remote::{pull, Remote};
    let remote = Remote::parse(src).map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(ssh)?;
    let r = pull(&remote, &repo_arg(cli)?, &auth, &opts)?;
    if out.json {
        out.json(&r)?;
    }
    out.say(&format!(
        "pulled from {}: {} archives received ({}), {} already here; {} snapshots",
        r.remote,
        r.sent.len(),
        human_bytes(r.bytes),
        r.skipped,
        r.snapshots
    ));
    Ok(Outcome::Done)
}
