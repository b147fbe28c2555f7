//! Encrypted off-site copies (`vault push --encrypt-to`): every archive goes to the remote as
//! `archives/NAME.age` and the manifest as `vault.db.age`, each one age stream encrypted on the
//! fly to the recipients. The pushing host needs only their public keys and can never read the
//! copy back, so what it knows of the remote is kept locally, in `sealed-pushes.json` of the
//! repository: for each remote, the size and BLAKE3 of every encrypted file it sent and of the
//! manifest it left there.
//!
//! Promises, as for plain pushes: an archive is sent under a temporary name and renamed only
//! once checked (its plaintext against the manifest's BLAKE3, its size on the remote against
//! what was sent); the manifest goes last; a manifest on the remote that this repository did
//! not leave there (another repository's, or a newer copy pushed from elsewhere) is never
//! replaced without `--force`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::store::{copy_hashing, open_store, remote_err, Sink, Store};
use super::{archives_of, manifest_copy, PushOptions, Remote, SyncReport};
use crate::engine::repo::{self, Repository};
use crate::error::{repo_io, Error, Result};
use crate::manifest::Manifest;
use crate::ops::crypt::Recipients;
use crate::ops::ssh::{SshAuth, SshOptions};

/// The encrypted manifest on the remote, and its temporary and previous names.
pub const SEALED_DB: &str = "vault.db.age";
const SEALED_PREV: &str = "vault.db.age.prev";
const SEALED_PUSHING: &str = "vault.db.age.partial-push";
/// Where a repository remembers what it pushed encrypted.
pub const STATE_FILE: &str = "sealed-pushes.json";

/// One encrypted file as sent: its size and the BLAKE3 (hex) of its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sent {
    pub size: u64,
    pub blake3: String,
}

/// What this repository left on one remote.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteState {
    pub manifest: Option<Sent>,
    /// By remote name (`archives/NAME.age`).
    pub archives: BTreeMap<String, Sent>,
}

type State = BTreeMap<String, RemoteState>;

fn load_state(repo: &Path) -> State {
    fs::read(repo.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes the state through a temporary file and a rename (never half a file).
fn save_state(repo: &Path, state: &State) -> Result<()> {
    let tmp = repo.join(format!(".{STATE_FILE}.{}", std::process::id()));
    let text = serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(e.to_string()))?;
    fs::write(&tmp, text).map_err(|e| repo_io(&tmp, e))?;
    fs::rename(&tmp, repo.join(STATE_FILE)).map_err(|e| repo_io(repo.join(STATE_FILE), e))
}

/// Counts and hashes what goes through to a remote sink.
struct Counting<'a> {
    inner: Box<dyn Sink + 'a>,
    hasher: blake3::Hasher,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Encrypts `src` to `name` on the remote: (plaintext BLAKE3 and size, what was sent).
fn upload_sealed(
    store: &mut dyn Store,
    label: &str,
    src: &mut dyn io::Read,
    name: &str,
    recipients: &Recipients,
) -> Result<(([u8; 32], u64), Sent)> {
    let sink = store.create(name)?;
    let counting = Counting {
        inner: sink,
        hasher: blake3::Hasher::new(),
        n: 0,
    };
    let broke = |e: io::Error| remote_err(label, format!("sending {name}: {e}"));
    // age writes 64 KiB chunks; the remote gets them 1 MiB at a time (SFTP pipelines a large
    // write, and a pipe to rclone switches less often).
    let buffered = io::BufWriter::with_capacity(1 << 20, counting);
    let mut enc = recipients
        .encrypt(buffered)
        .map_err(|e| remote_err(label, format!("sending {name}: {e}")))?;
    let plain = copy_hashing(src, &mut enc).map_err(broke)?;
    let buffered = enc.finish().map_err(broke)?;
    let counting = buffered.into_inner().map_err(|e| broke(e.into_error()))?;
    let sent = Sent {
        size: counting.n,
        blake3: counting.hasher.finalize().to_hex().to_string(),
    };
    counting.inner.finish().map_err(broke)?;
    Ok((plain, sent))
}

/// Sends one archive encrypted under a temporary name, checks it, renames it into place.
fn send_archive(
    store: &mut dyn Store,
    label: &str,
    local: &Path,
    (name, size, blake): (&str, u64, &[u8]),
    (recipients, verify): (&Recipients, bool),
) -> Result<Sent> {
    let fin = format!("{}.age", Repository::archive_name(name));
    let tmp = format!("{fin}.partial-push");
    let mut src = fs::File::open(local).map_err(|e| repo_io(local, e))?;
    let ((h, n), sent) = match upload_sealed(store, label, &mut src, &tmp, recipients) {
        Ok(v) => v,
        Err(e) => {
            store.remove(&tmp);
            return Err(e);
        }
    };
    if n != size || h[..] != blake[..] {
        store.remove(&tmp);
        return Err(Error::Refused(format!(
            "local archive {} does not match the manifest (size or BLAKE3); run vault check; nothing renamed",
            local.display()
        )));
    }
    if store.size(&tmp)? != Some(sent.size) {
        return Err(remote_err(
            label,
            format!("{tmp} has the wrong size after upload"),
        ));
    }
    if verify {
        let (rh, rn) = store.read_back(&tmp)?;
        if rn != sent.size || blake3::Hash::from(rh).to_hex().as_str() != sent.blake3 {
            return Err(remote_err(
                label,
                format!("{tmp} differs from what was sent"),
            ));
        }
    }
    store.rename(&tmp, &fin)?;
    Ok(sent)
}

/// Refuses to encrypt over what this repository did not leave on the remote: a plain copy
/// (it would stay readable beside the encrypted one), or an encrypted manifest other than the
/// one it pushed last (another repository's, or a newer copy pushed from elsewhere).
fn guard(store: &mut dyn Store, label: &str, mine: &RemoteState) -> Result<()> {
    if store.size(repo::DB)?.is_some() || store.size(repo::DB_PREV)?.is_some() {
        return Err(remote_err(
            label,
            "holds an unencrypted copy (vault.db); an encrypted push would leave it readable there. Use another destination, or --force",
        ));
    }
    let name = if store.size(SEALED_DB)?.is_some() {
        SEALED_DB
    } else if store.size(SEALED_PREV)?.is_some() {
        SEALED_PREV
    } else {
        return Ok(());
    };
    let (h, n) = store.read_back(name)?;
    let theirs = Sent {
        size: n,
        blake3: blake3::Hash::from(h).to_hex().to_string(),
    };
    if mine.manifest.as_ref() == Some(&theirs) {
        return Ok(());
    }
    Err(remote_err(
        label,
        format!("holds an encrypted manifest ({name}) that this repository did not push there last (another repository's, or a newer copy); refusing to replace it. Pull it with --age-identity to compare, or use --force"),
    ))
}

/// Sends the manifest copy `db` last: under a temporary name, then swapped in, the old one kept
/// as `.prev` until the new one is in place.
fn send_manifest(
    store: &mut dyn Store,
    label: &str,
    db: &Path,
    recipients: &Recipients,
) -> Result<Sent> {
    let mut src = fs::File::open(db).map_err(|e| repo_io(db, e))?;
    let (_, sent) = match upload_sealed(store, label, &mut src, SEALED_PUSHING, recipients) {
        Ok(v) => v,
        Err(e) => {
            store.remove(SEALED_PUSHING);
            return Err(e);
        }
    };
    if store.size(SEALED_PUSHING)? != Some(sent.size) {
        return Err(remote_err(
            label,
            "vault.db.age has the wrong size after upload",
        ));
    }
    if store.size(SEALED_DB)?.is_some() {
        store.rename(SEALED_DB, SEALED_PREV)?;
    }
    store.rename(SEALED_PUSHING, SEALED_DB)?;
    store.remove(SEALED_PREV);
    Ok(sent)
}

/// Sends the repository at `repo` to `remote`, encrypted to `recipients`.
pub fn push_sealed(
    repo: &Path,
    remote: &Remote,
    (auth, opts): (&SshAuth, &SshOptions),
    push: PushOptions,
    recipients: &Recipients,
) -> Result<SyncReport> {
    let label = remote.to_string();
    let (r, copy) = manifest_copy(repo)?;
    let snapshot = Manifest::open(&copy.0)?;
    let wanted = archives_of(&snapshot)?;
    let snapshots = snapshot.snapshots(None)?.len() as u64;
    drop(snapshot);
    let mut store = open_store(remote, auth, opts)?;
    store.prepare()?;
    let mut state = load_state(repo);
    let mut mine = state.get(&label).cloned().unwrap_or_default();
    if !push.force {
        guard(&mut *store, &label, &mine)?;
    }
    let have: BTreeMap<String, u64> = store.list_archives()?.into_iter().collect();
    let mut report = SyncReport {
        remote: label.clone(),
        snapshots,
        ..SyncReport::default()
    };
    for (name, size, blake) in &wanted {
        let fin = format!("{}.age", Repository::archive_name(name));
        let there = have.get(&format!("{name}.age"));
        if there.is_some() && there == mine.archives.get(&fin).map(|s| &s.size) {
            report.skipped += 1;
            continue;
        }
        let local = r.archives_dir().join(name);
        let sent = send_archive(
            &mut *store,
            &label,
            &local,
            (name, *size, blake),
            (recipients, push.verify),
        )?;
        mine.archives.insert(fin.clone(), sent);
        state.insert(label.clone(), mine.clone());
        save_state(repo, &state)?;
        report.sent.push(fin);
        report.bytes += size;
    }
    mine.manifest = Some(send_manifest(&mut *store, &label, &copy.0, recipients)?);
    state.insert(label, mine);
    save_state(repo, &state)?;
    Ok(report)
}
