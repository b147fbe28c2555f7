//! `vault push` / `vault pull`: replicate a repository to an SFTP server or an rclone remote,
//! and back.
//!
//! Promises:
//! - Only archives the other side lacks are sent; each goes under a temporary name, is checked
//!   (size; BLAKE3 of the bytes read, against the manifest; with `verify`, read back), then
//!   renamed. A complete file under its final name is therefore always a verified one, and a rerun
//!   after an interruption sends only what is missing.
//! - The manifest travels last, as a consistent copy (SQLite's backup API), so the other side
//!   never names an archive it does not have.
//! - Pulling into an empty folder gives a repository `vault restore` works from.

mod sealed;
mod store;
mod unseal;

pub use sealed::{push_sealed, SEALED_DB, STATE_FILE};
pub use unseal::{check_remote, RemoteCheck};

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::repo::{self, Repository};
use crate::error::{repo_io, Error, Result};
use crate::manifest::Manifest;
use crate::ops::crypt::Identities;
use crate::ops::ssh::{SshAuth, SshOptions, SshTarget};
use store::{open_store, remote_err, Store};

/// Where a repository is replicated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// `sftp://[user@]host[:port]/path`
    Sftp { target: SshTarget, path: String },
    /// `rclone:REMOTE:PATH`, through the `rclone` command.
    Rclone { spec: String },
}

impl Remote {
    pub fn parse(s: &str) -> std::result::Result<Remote, String> {
        if let Some(rest) = s.strip_prefix("sftp://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => {
                    return Err(format!(
                        "bad destination '{s}': sftp://[user@]host[:port]/path needs a path"
                    ))
                }
            };
            let target = SshTarget::parse(authority)?;
            let path = path.trim_end_matches('/');
            if path.is_empty() {
                return Err(format!("bad destination '{s}': the path must not be /"));
            }
            return Ok(Remote::Sftp {
                target,
                path: path.to_string(),
            });
        }
        if let Some(spec) = s.strip_prefix("rclone:") {
            if spec.starts_with('-') {
                return Err(format!(
                    "bad destination '{s}': an rclone remote cannot start with '-'"
                ));
            }
            if !spec.contains(':') {
                return Err(format!(
                    "bad destination '{s}': expected rclone:REMOTE:PATH"
                ));
            }
            return Ok(Remote::Rclone {
                spec: spec.trim_end_matches('/').to_string(),
            });
        }
        Err(format!(
            "bad destination '{s}': expected sftp://[user@]host[:port]/path or rclone:REMOTE:PATH"
        ))
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Sftp { target, path } => write!(f, "sftp://{target}{path}"),
            Remote::Rclone { spec } => write!(f, "rclone:{spec}"),
        }
    }
}

/// What `push` or `pull` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SyncReport {
    pub remote: String,
    /// Archives transferred this time.
    pub sent: Vec<String>,
    /// Archives already on the other side.
    pub skipped: u64,
    pub bytes: u64,
    pub snapshots: u64,
    /// Push with `verify`: archives found damaged on the remote and sent again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// How `push` treats what is already on the remote.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushOptions {
    /// Read back (BLAKE3) every archive: those just sent before they are renamed into place,
    /// and those already there (a damaged one is sent again).
    pub verify: bool,
    /// Replace a remote manifest that holds snapshots this repository lacks, or that belongs
    /// to another repository.
    pub force: bool,
}

/// Deletes a file when dropped (temporary manifest copies, whatever way the command ends).
pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The archives a manifest refers to: (name, size, BLAKE3).
pub(super) fn archives_of(m: &Manifest) -> Result<Vec<(String, u64, Vec<u8>)>> {
    Ok(m.snapshots(None)?
        .into_iter()
        .filter_map(|s| Some((s.archive?, s.archive_size?, s.archive_blake3?)))
        .collect())
}

/// Removes the manifest copies (`.push-PID.db`, `.pull-PID.db` and their WAL files) that a
/// killed push or pull left in the repository, when their process is gone.
pub(super) fn remove_stale_copies(repo: &Path) {
    let Ok(it) = fs::read_dir(repo) else { return };
    for e in it.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(".push-")
            .or_else(|| name.strip_prefix(".pull-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = pid == std::process::id() as i32
            || unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Opens the repository to push and makes a consistent copy of its manifest (removed when the
/// guard drops): what the copy names is what gets sent.
pub(super) fn manifest_copy(repo: &Path) -> Result<(Repository, RemoveOnDrop)> {
    let r = Repository::open(repo)?;
    remove_stale_copies(repo);
    let copy = repo.join(format!(".push-{}.db", std::process::id()));
    let _ = fs::remove_file(&copy);
    r.manifest().copy_to(&copy)?;
    Ok((r, RemoveOnDrop(copy)))
}

/// Sends the repository at `repo` to `remote`.
pub fn push(
    repo: &Path,
    remote: &Remote,
    auth: &SshAuth,
    opts: &SshOptions,
    push: PushOptions,
) -> Result<SyncReport> {
    let label = remote.to_string();
    let (r, copy) = manifest_copy(repo)?;
    let snapshot = Manifest::open(&copy.0)?;
    let wanted = archives_of(&snapshot)?;
    let ours = snapshot.snapshots(None)?;
    let snapshots = ours.len() as u64;
    let our_id = snapshot.repository_id()?;
    let forgotten = snapshot.forgotten()?;
    drop(snapshot);

    let mut store = open_store(remote, auth, opts)?;
    store.prepare()?;
    if !push.force {
        let mut known: std::collections::HashSet<String> =
            ours.iter().map(|s| s.id.clone()).collect();
        known.extend(forgotten);
        refuse_to_drop_snapshots(repo, &mut *store, &label, &our_id, &known)?;
    }
    let have: std::collections::HashMap<String, u64> = store.list_archives()?.into_iter().collect();
    let mut report = SyncReport {
        remote: label.clone(),
        snapshots,
        ..SyncReport::default()
    };
    for (name, size, blake) in &wanted {
        if have.get(name) == Some(size) {
            if !push.verify || remote_intact(&mut *store, name, *size, blake)? {
                report.skipped += 1;
                continue;
            }
            report.repaired.push(Repository::archive_name(name));
        }
        let local = r.archives_dir().join(name);
        send_archive(
            &mut *store,
            &label,
            &local,
            name,
            (*size, blake),
            push.verify,
        )?;
        report.sent.push(Repository::archive_name(name));
        report.bytes += size;
    }
    // The manifest last. The one it replaces stays as vault.db.prev until the new one is in
    // place, so that the remote always holds a manifest whose archives are all there (an SFTP
    // rename cannot replace a file in one step).
    let (_, n) = match store.upload(&copy.0, repo::DB_PUSHING) {
        Ok(v) => v,
        Err(e) => {
            store.remove(repo::DB_PUSHING);
            return Err(e);
        }
    };
    if store.size(repo::DB_PUSHING)? != Some(n) {
        return Err(remote_err(
            &label,
            "vault.db has the wrong size after upload",
        ));
    }
    if store.size(repo::DB)?.is_some() {
        store.rename(repo::DB, repo::DB_PREV)?;
    }
    store.rename(repo::DB_PUSHING, repo::DB)?;
    store.remove(repo::DB_PREV);
    Ok(report)
}

/// Sends one archive under a temporary name, checks it (size and BLAKE3 of what was sent;
/// with `verify`, read back), then renames it into place.
fn send_archive(
    store: &mut dyn Store,
    label: &str,
    local: &Path,
    name: &str,
    (size, blake): (u64, &[u8]),
    verify: bool,
) -> Result<()> {
    let tmp = format!("{}.partial-push", Repository::archive_name(name));
    let (sent_hash, sent) = match store.upload(local, &tmp) {
        Ok(v) => v,
        Err(e) => {
            store.remove(&tmp);
            return Err(e);
        }
    };
    if sent != size || sent_hash[..] != blake[..] {
        return Err(Error::Refused(format!(
            "local archive {} does not match the manifest (size or BLAKE3); run vault check; nothing renamed",
            local.display()
        )));
    }
    if store.size(&tmp)? != Some(size) {
        return Err(remote_err(
            label,
            format!("{tmp} has the wrong size after upload"),
        ));
    }
    if verify {
        let (h, n) = store.read_back(&tmp)?;
        if n != size || h[..] != blake[..] {
            return Err(remote_err(
                label,
                format!("{tmp} differs from what was sent"),
            ));
        }
    }
    store.rename(&tmp, &Repository::archive_name(name))
}

/// With `verify`: reads an archive already on the remote back; false when its bytes do not
/// match the manifest's BLAKE3 (it is then sent again).
fn remote_intact(store: &mut dyn Store, name: &str, size: u64, blake: &[u8]) -> Result<bool> {
    let (h, n) = store.read_back(&Repository::archive_name(name))?;
    Ok(n == size && h[..] == blake[..])
}

/// Refuses a push that would replace a remote manifest holding snapshots this repository
/// neither has nor forgot (`known`: an older copy pushed over a newer one) or belonging to
/// another repository.
fn refuse_to_drop_snapshots(
    repo: &Path,
    store: &mut dyn Store,
    label: &str,
    our_id: &str,
    known: &std::collections::HashSet<String>,
) -> Result<()> {
    let name = if store.size(repo::DB)?.is_some() {
        repo::DB
    } else if store.size(repo::DB_PREV)?.is_some() {
        repo::DB_PREV
    } else {
        return Ok(());
    };
    let tmp = repo.join(format!(".push-{}-remote.db", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    store.download(name, &tmp)?;
    let their_id = Manifest::peek_repository_id(&tmp).map_err(|e| {
        remote_err(
            label,
            format!("its {name} cannot be read ({e}); refusing to replace it (use --force)"),
        )
    })?;
    if let Some(theirs) = their_id.filter(|t| t != our_id) {
        return Err(remote_err(
            label,
            format!(
                "holds repository {theirs}, not this one ({our_id}); refusing to replace its manifest (use another destination, or --force)"
            ),
        ));
    }
    let theirs = Manifest::open(&tmp)?.snapshots(None)?;
    let lost: Vec<&str> = theirs
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| !known.contains(*id))
        .collect();
    if lost.is_empty() {
        return Ok(());
    }
    Err(remote_err(
        label,
        format!(
            "holds {} snapshot(s) that {} lacks ({}); pushing would drop them. Pull first, or use --force",
            lost.len(),
            repo.display(),
            lost.join(", ")
        ),
    ))
}

/// Fetches `remote` into the repository folder `repo` (missing or empty, or an earlier pull).
pub fn pull(remote: &Remote, repo: &Path, auth: &SshAuth, opts: &SshOptions) -> Result<SyncReport> {
    pull_with(remote, repo, (auth, opts), None)
}

/// [`pull`], decrypting an encrypted copy (`vault.db.age`) with `ids`. An encrypted copy
/// without `ids`, or one that `ids` cannot open, fails before anything is written.
pub fn pull_with(
    remote: &Remote,
    repo: &Path,
    (auth, opts): (&SshAuth, &SshOptions),
    ids: Option<&Identities>,
) -> Result<SyncReport> {
    let label = remote.to_string();
    let mut store = open_store(remote, auth, opts)?;
    let sealed = unseal::which_manifest(&mut *store, &label, ids)?;
    let existing = Repository::db_path(repo).exists();
    let mut local = if existing {
        Repository::open(repo)?
    } else {
        let (r, _) = Repository::open_or_create(repo, std::time::Duration::ZERO)?;
        r
    };
    local.lock_exclusive()?;
    remove_stale_copies(repo);
    let tmp_db = repo.join(format!(".pull-{}.db", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp_db.clone());
    let n = unseal::fetch_manifest(&mut *store, &label, &sealed, &tmp_db)?;
    if n == 0 {
        let _ = fs::remove_file(&tmp_db);
        return Err(remote_err(
            &label,
            "holds no vault.db: not a vault repository",
        ));
    }
    let theirs = Manifest::open(&tmp_db)?;
    let wanted = archives_of(&theirs)?;
    let their_ids: std::collections::HashSet<String> =
        theirs.snapshots(None)?.into_iter().map(|s| s.id).collect();
    drop(theirs);
    let mine: Vec<String> = local
        .manifest()
        .snapshots(None)?
        .into_iter()
        .map(|s| s.id)
        .collect();
    if let Some(extra) = mine.iter().find(|id| !their_ids.contains(*id)) {
        let _ = fs::remove_file(&tmp_db);
        return Err(Error::Refused(format!(
            "{} has snapshot {extra} that {label} lacks; refusing to replace its manifest (push it first, or pull into an empty folder)",
            repo.display()
        )));
    }
    let mut report = SyncReport {
        remote: label.clone(),
        snapshots: their_ids.len() as u64,
        ..SyncReport::default()
    };
    let dir = local.archives_dir();
    for (name, size, blake) in &wanted {
        let fin = dir.join(name);
        if fs::metadata(&fin).map(|m| m.len()).ok() == Some(*size) {
            report.skipped += 1;
            continue;
        }
        let part = dir.join(format!("{name}.partial"));
        let (h, got) = unseal::fetch_archive(&mut *store, &label, (&sealed, name), &part)?;
        if got != *size || h[..] != blake[..] {
            let _ = fs::remove_file(&part);
            return Err(remote_err(
                &label,
                format!(
                    "{} does not match its manifest (size or BLAKE3)",
                    Repository::archive_name(name)
                ),
            ));
        }
        fs::rename(&part, &fin).map_err(|e| repo_io(&fin, e))?;
        report.sent.push(Repository::archive_name(name));
        report.bytes += size;
    }
    install_manifest(local, repo, &dir, &tmp_db)?;
    Ok(report)
}

/// Installs the pulled manifest last, replacing ours (a subset of theirs): ours is closed (its
/// WAL checkpointed) first, and the writer lock is held until the new one is in place.
fn install_manifest(local: Repository, repo: &Path, dir: &Path, tmp_db: &Path) -> Result<()> {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let _lock = local.close_keeping_lock();
    for stale in repo::DB_SIDE_FILES {
        let _ = fs::remove_file(repo.join(stale));
    }
    fs::rename(tmp_db, Repository::db_path(repo))
        .map_err(|e| repo_io(Repository::db_path(repo), e))?;
    if let Ok(d) = fs::File::open(repo) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert!(matches!(
            Remote::parse("rclone:s3:bucket/x"),
            Ok(Remote::Rclone { .. })
        ));
        assert!(Remote::parse("rclone:--config=/tmp/x:y").is_err());
        assert!(Remote::parse("rclone:nocolon").is_err());
        assert!(Remote::parse("sftp://127.0.0.1").is_err());
        assert!(Remote::parse("sftp://127.0.0.1/").is_err());
        assert!(matches!(
            Remote::parse("sftp://u@127.0.0.1:2222/srv/x/"),
            Ok(Remote::Sftp { ref path, .. }) if path == "/srv/x"
        ));
    }
}
