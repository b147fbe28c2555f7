//! `vault restore … --target ssh://[user@]host[:port]/path`: a snapshot written back to a host.
//!
//! The snapshot is restored as usual into a staging folder here (in `$TMPDIR`, removed
//! afterwards), then sent to the host as one POSIX tar stream that the host's GNU tar extracts
//! into the folder, which must be missing or empty: numeric owners, all mode bits, nanosecond
//! mtimes, symlinks, hard links and FIFOs, and extended attributes and ACLs where the host's
//! tar and file system keep them. GNU tar refuses member names that climb out of the folder,
//! and the stream is made here from a tree restore has already checked.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::engine::restore::{restore, RestoreOptions, RestoreReport};
use crate::engine::shell::{quote, run_to_end, Shell};
use crate::error::{Error, Result};
use crate::ops::ssh::{SshAuth, SshOptions, SshTarget};
use crate::ops::ssh_shell::SshShell;
use crate::pool::{CancelToken, Pool};
use crate::progress::Progress;

/// A staging folder, removed on drop.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where to restore and how to reach it.
#[derive(Debug)]
pub struct HostTarget {
    pub target: SshTarget,
    /// The folder on the host, absolute.
    pub path: String,
    pub auth: SshAuth,
    pub ssh: SshOptions,
}

impl HostTarget {
    fn url(&self) -> String {
        format!("ssh://{}{}", self.target, self.path)
    }

    fn err(&self, what: String) -> Error {
        Error::Remote {
            remote: self.url(),
            what,
        }
    }
}

/// Restores `opts` (whose target is ignored) into the folder on the host.
pub fn restore_to_host(
    opts: &RestoreOptions,
    host: &HostTarget,
    (pool, cancel, progress): (&Pool, &CancelToken, &dyn Progress),
) -> Result<RestoreReport> {
    if opts.force || opts.delete {
        return Err(Error::Usage(
            "--force and --delete do not work with an ssh:// target: it must be missing or empty"
                .into(),
        ));
    }
    let shell = SshShell::connect(&host.target, &host.auth, &host.ssh, Some(cancel))
        .map_err(|e| host.err(e.to_string()))?;
    check_empty(&shell, host)?;
    let staging = Staging(stage_dir());
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging.0)
        .map_err(|e| Error::RepoIo {
            path: staging.0.clone(),
            source: e,
        })?;
    let mut local = opts.clone();
    local.target = staging.0.join("tree");
    let mut report = restore(&local, pool, cancel, progress)?;
    if !opts.dry_run {
        send(&shell, host, &local.target)?;
    }
    report.target = host.url();
    Ok(report)
}

/// `$TMPDIR/.vault-restore-PID`, after removing those of processes that are gone (killed
/// runs).
fn stage_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(rd) = fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(".vault-restore-")
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()));
            if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!(".vault-restore-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Refuses a folder on the host that exists and is not an empty folder.
fn check_empty(shell: &SshShell, host: &HostTarget) -> Result<()> {
    let q = quote(&host.path);
    let command = format!("[ ! -e {q} ] || {{ [ -d {q} ] && [ -z \"$(ls -A {q})\" ]; }}");
    let (_, done) = run_to_end(shell, &command, (Vec::new(), 4096))
        .map_err(|e| host.err(format!("cannot look at the folder: {e}")))?;
    if done.status != 0 {
        return Err(Error::Refused(format!(
            "{} exists and is not an empty folder; restore into a new one",
            host.url()
        )));
    }
    Ok(())
}

/// Streams the tree at `tree` to the host's tar.
fn send(shell: &SshShell, host: &HostTarget, tree: &std::path::Path) -> Result<()> {
    let local_err = |e: io::Error| host.err(format!("cannot run the local tar: {e}"));
    // Its messages go to a file: a pipe nobody reads while the stream flows could fill up and
    // stop the local tar for good.
    let err_path = tree.with_extension("tar-errors");
    let err_file = fs::File::create(&err_path).map_err(local_err)?;
    let mut tar = Command::new("tar")
        .args([
            "-c",
            "-f",
            "-",
            "--format=posix",
            "--numeric-owner",
            "--xattrs",
        ])
        .args(["--xattrs-include=*", "--acls", "-C"])
        .arg(tree)
        .arg(".")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err_file)
        .spawn()
        .map_err(local_err)?;
    let stream = tar.stdout.take().expect("piped");
    let q = quote(&host.path);
    let command = format!(
        "mkdir -p {q} && cd {q} && LC_ALL=C exec tar -x -f - --numeric-owner --same-owner \
         --same-permissions --xattrs --xattrs-include='*' --acls"
    );
    let sent = shell
        .start(&command, Box::new(stream))
        .and_then(|mut run| io::copy(&mut *run, &mut io::sink()).map(|_| run))
        .and_then(|run| run.finish());
    let local = tar.wait().map_err(local_err)?;
    let done = sent.map_err(|e| host.err(format!("the transfer broke off: {e}")))?;
    // The host's side first: when it fails, the local tar only dies of the closed pipe.
    if done.status != 0 || done.signal.is_some() {
        let why = String::from_utf8_lossy(&done.stderr);
        let first = crate::engine::shell::first_error(&why);
        return Err(host.err(format!(
            "tar on the host exited with status {}: {first}",
            done.status
        )));
    }
    if !local.success() {
        let why = fs::read_to_string(&err_path).unwrap_or_default();
        return Err(Error::Refused(format!(
            "reading the staged tree for {} failed: {}",
            host.url(),
            crate::engine::shell::first_error(&why)
        )));
    }
    Ok(())
}
