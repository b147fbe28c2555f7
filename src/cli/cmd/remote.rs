//! Copies of a repository elsewhere: push and pull (plain or age-encrypted), checking a copy
//! in place, and `vault keygen`.

use super::super::*;
use std::path::Path;

/// `vault push`.
pub(in crate::cli) fn push(
    cli: &Cli,
    out: &Out,
    dest: &str,
    (verify, force): (bool, bool),
    (encrypt_to, files): (&[String], &[PathBuf]),
    ssh: &SshFlags,
) -> Result<Outcome, Error> {
    use vault::ops::remote::{push, push_sealed, PushOptions, Remote};
    let remote = Remote::parse(dest).map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(ssh)?;
    let how = PushOptions { verify, force };
    let recipients = vault::ops::crypt::Recipients::parse(encrypt_to, files)
        .map_err(|e| Error::Usage(e.to_string()))?;
    let repo = repo_arg(cli)?;
    let r = if recipients.is_empty() {
        push(&repo, &remote, &auth, &opts, how)?
    } else {
        push_sealed(&repo, &remote, (&auth, &opts), how, &recipients)?
    };
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
    identity: Option<&Path>,
    ssh: &SshFlags,
) -> Result<Outcome, Error> {
    use vault::ops::remote::{pull_with, Remote};
    let remote = Remote::parse(src).map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(ssh)?;
    let ids = identities(identity, ssh)?;
    let r = pull_with(&remote, &repo_arg(cli)?, (&auth, &opts), ids.as_ref())?;
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

/// The age identities of `--age-identity` (an SSH key's passphrase from --passphrase-env).
fn identities(
    path: Option<&Path>,
    ssh: &SshFlags,
) -> Result<Option<vault::ops::crypt::Identities>, Error> {
    let Some(path) = path else { return Ok(None) };
    let passphrase = match &ssh.passphrase_env {
        Some(var) => Some(std::env::var(var).map_err(|_| {
            Error::Usage(format!("--passphrase-env {var}: the variable is not set"))
        })?),
        None => None,
    };
    vault::ops::crypt::Identities::read(path, passphrase)
        .map(Some)
        .map_err(|e| Error::Usage(e.to_string()))
}

/// `vault check --remote`.
pub(in crate::cli) fn check_remote(
    out: &Out,
    dest: &str,
    identity: Option<&Path>,
    ssh: &SshFlags,
) -> Result<Outcome, Error> {
    use vault::ops::remote::{check_remote, Remote};
    let remote = Remote::parse(dest).map_err(Error::Usage)?;
    let (auth, opts) = ssh_settings(ssh)?;
    let ids = identities(identity, ssh)?;
    let r = check_remote(&remote, (&auth, &opts), ids.as_ref())?;
    if out.json {
        out.json(&r)?;
    }
    for p in &r.problems {
        eprintln!("vault: damaged: {}: {p}", r.remote);
    }
    out.say(&format!(
        "{}: {} archives ({}) of {} snapshots checked{}, {} problems",
        r.remote,
        r.archives,
        human_bytes(r.bytes),
        r.snapshots,
        if r.encrypted { " (decrypted)" } else { "" },
        r.problems.len()
    ));
    if r.problems.is_empty() {
        Ok(Outcome::Done)
    } else {
        Err(Error::Refused(format!(
            "{}: {} of {} archives are missing or damaged",
            r.remote,
            r.problems.len(),
            r.archives
        )))
    }
}

/// `vault keygen FILE`.
pub(in crate::cli) fn keygen(out: &Out, path: &Path) -> Result<Outcome, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (text, recipient) = vault::ops::crypt::keygen();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Refused(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Refused(format!("cannot write {}: {e}", path.display())))?;
    if out.json {
        out.json(&serde_json::json!({"identity": path, "recipient": recipient}))?;
    }
    out.say(&recipient);
    out.note(&format!(
        "wrote {} (keep it offline: it decrypts every copy); push with --encrypt-to {recipient}",
        path.display()
    ));
    Ok(Outcome::Done)
}
