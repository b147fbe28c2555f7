//! Reading a copy back: plain or encrypted (`vault.db.age`, `archives/NAME.age`), for
//! `vault pull` and for `vault check --remote`, which verifies an encrypted copy in place
//! (each file streamed, decrypted and hashed; only the manifest touches the disk, in $TMPDIR).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use super::store::{copy_hashing, new_local_file, open_store, remote_err, remote_failed, Store};
use super::{archives_of, Remote, RemoveOnDrop};
use crate::engine::repo::{self, Repository};
use crate::error::{repo_io, Error, Result};
use crate::manifest::Manifest;
use crate::ops::crypt::{CryptError, Identities};
use crate::ops::ssh::{SshAuth, SshOptions};

const SEALED_PREV: &str = "vault.db.age.prev";

/// Which manifest a pull reads, and how.
pub(super) enum Source<'a> {
    Plain(&'static str),
    Sealed(&'static str, &'a Identities),
}

fn crypt_err(label: &str, e: CryptError) -> Error {
    match e {
        CryptError::WrongIdentity { .. }
        | CryptError::BadIdentity { .. }
        | CryptError::Read { .. } => Error::Refused(format!("{label}: {e}")),
        e => remote_err(label, e),
    }
}

/// The manifest to read: an encrypted one needs `ids`, and they must open it (checked here,
/// before anything is written). An interrupted push leaves only the `.prev` one: as good.
pub(super) fn which_manifest<'a>(
    store: &mut dyn Store,
    label: &str,
    ids: Option<&'a Identities>,
) -> Result<Source<'a>> {
    let sealed = if store.size(super::SEALED_DB)?.is_some() {
        Some(super::SEALED_DB)
    } else if store.size(SEALED_PREV)?.is_some() && store.size(repo::DB)?.is_none() {
        Some(SEALED_PREV)
    } else {
        None
    };
    let Some(name) = sealed else {
        let plain = if store.size(repo::DB)?.is_some() || store.size(repo::DB_PREV)?.is_none() {
            repo::DB
        } else {
            repo::DB_PREV
        };
        return Ok(Source::Plain(plain));
    };
    let Some(ids) = ids else {
        return Err(Error::Usage(format!(
            "{label} holds an encrypted copy ({name}): give --age-identity FILE"
        )));
    };
    let r = store.open(name)?;
    ids.decrypt(r, name).map_err(|e| crypt_err(label, e))?;
    Ok(Source::Sealed(name, ids))
}

/// Fetches the manifest into `tmp`; returns its size.
pub(super) fn fetch_manifest(
    store: &mut dyn Store,
    label: &str,
    src: &Source<'_>,
    tmp: &Path,
) -> Result<u64> {
    match src {
        Source::Plain(name) => store.download(name, tmp).map(|(_, n)| n),
        Source::Sealed(name, ids) => fetch_sealed(store, label, (name, ids), tmp).map(|(_, n)| n),
    }
}

/// Fetches the archive `name` into `part`: (BLAKE3, size) of its plaintext.
pub(super) fn fetch_archive(
    store: &mut dyn Store,
    label: &str,
    (src, name): (&Source<'_>, &str),
    part: &Path,
) -> Result<([u8; 32], u64)> {
    let remote_name = Repository::archive_name(name);
    match src {
        Source::Plain(_) => store.download(&remote_name, part),
        Source::Sealed(_, ids) => {
            let sealed = format!("{remote_name}.age");
            fetch_sealed(store, label, (&sealed, ids), part)
        }
    }
}

/// Decrypts the remote file `name` into the local file `to`.
fn fetch_sealed(
    store: &mut dyn Store,
    label: &str,
    (name, ids): (&str, &Identities),
    to: &Path,
) -> Result<([u8; 32], u64)> {
    let r = store.open(name)?;
    let mut plain = ids.decrypt(r, name).map_err(|e| crypt_err(label, e))?;
    let mut dst = new_local_file(to)?;
    let got = copy_hashing(&mut plain, &mut dst);
    let got = got.map_err(|e| {
        let _ = fs::remove_file(to);
        remote_failed(label, format!("receiving {name}"), e)
    })?;
    dst.sync_all().map_err(|e| repo_io(to, e))?;
    Ok(got)
}

/// What `vault check --remote` found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RemoteCheck {
    pub remote: String,
    pub encrypted: bool,
    pub snapshots: u64,
    pub archives: u64,
    /// Plaintext bytes read and checked.
    pub bytes: u64,
    /// One line per missing or damaged file.
    pub problems: Vec<String>,
}

/// Reads every archive of the copy at `remote` (decrypting it with `ids` when it is
/// encrypted) and checks its size and BLAKE3 against the copy's manifest.
pub fn check_remote(
    remote: &Remote,
    (auth, opts): (&SshAuth, &SshOptions),
    ids: Option<&Identities>,
) -> Result<RemoteCheck> {
    let label = remote.to_string();
    let mut store = open_store(remote, auth, opts)?;
    let src = which_manifest(&mut *store, &label, ids)?;
    let tmp = std::env::temp_dir().join(format!("vault-check-{}.db", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    if fetch_manifest(&mut *store, &label, &src, &tmp)? == 0 {
        return Err(remote_err(
            &label,
            "holds no vault.db: not a vault repository",
        ));
    }
    let m = Manifest::open(&tmp)?;
    let wanted = archives_of(&m)?;
    let mut report = RemoteCheck {
        remote: label.clone(),
        encrypted: matches!(src, Source::Sealed(..)),
        snapshots: m.snapshots(None)?.len() as u64,
        ..RemoteCheck::default()
    };
    drop(m);
    for (name, size, blake) in &wanted {
        let shown = Repository::archive_name(name);
        let got = match &src {
            Source::Plain(_) => store.read_back(&shown).map_err(|e| e.to_string()),
            Source::Sealed(_, ids) => {
                let sealed = format!("{shown}.age");
                read_sealed(&mut *store, &sealed, ids).map_err(|e| e.to_string())
            }
        };
        report.archives += 1;
        match got {
            Ok((h, n)) if n == *size && h[..] == blake[..] => report.bytes += n,
            Ok(_) => report.problems.push(format!(
                "{shown}: does not match the manifest (size or BLAKE3)"
            )),
            Err(e) => report.problems.push(format!("{shown}: {e}")),
        }
    }
    Ok(report)
}

/// Decrypts the remote file `name` and hashes its plaintext.
fn read_sealed(store: &mut dyn Store, name: &str, ids: &Identities) -> Result<([u8; 32], u64)> {
    let r = store.open(name)?;
    let mut plain = ids.decrypt(r, name).map_err(|e| crypt_err(name, e))?;
    copy_hashing(&mut plain as &mut dyn Read, &mut io::sink())
        .map_err(|e| Error::Refused(format!("{name}: {e}")))
}
