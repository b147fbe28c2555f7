//! Remote sources (`vault backup ssh://[user@]host[:port]/path`): a host's folder backed up into
//! the local repository with nothing installed on the host beyond OpenSSH and the standard
//! GNU `find` and `tar`. The tree is listed on the host ([`listing`]), compared with the
//! manifest here as a local walk is, and only the files to read are fetched ([`fetch`]), into
//! a staging folder that the normal pipeline reads, hashes and archives on the pool.

mod fetch;
mod listing;
mod sftp;
mod staging;

use std::sync::Arc;

use globset::GlobSet;

use fetch::fetch;
pub(super) use fetch::Wanted;
pub(super) use staging::Staging;

use crate::engine::shell::{run_to_end, Shell, OUTPUT_MAX};
use crate::engine::walk::Walk;
use crate::error::{Error, Result};

/// A folder on another host, reached through `shell`.
#[derive(Clone)]
pub struct RemoteSource {
    /// The host as the source key names it: `host`, or `host:port` for a port other than 22.
    pub host: String,
    /// The folder on the host: absolute, without `.` or `..` components.
    pub path: String,
    pub shell: Arc<dyn Shell>,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("host", &self.host)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RemoteSource {
    /// Checks `path`: absolute, no empty-but-last, `.` or `..` component, no NUL. Trailing
    /// slashes are dropped (`/` stays).
    pub fn folder(path: &str) -> std::result::Result<String, String> {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            t => t,
        };
        let parts_ok = trimmed
            .split('/')
            .skip(1)
            .all(|c| trimmed == "/" || (!c.is_empty() && c != "." && c != ".."));
        if !path.starts_with('/') || trimmed.contains('\0') || !parts_ok {
            return Err(format!(
                "bad remote folder '{path}': give an absolute path without '.' or '..'"
            ));
        }
        Ok(trimmed.to_string())
    }

    /// The source key in the manifest: `host:/path`.
    pub fn key(&self) -> Vec<u8> {
        format!("{}:{}", self.host, self.path).into_bytes()
    }

    /// The archive's top folder: the folder's base name (`root` for `/`).
    pub fn name(&self) -> Vec<u8> {
        match self.path.rsplit('/').next() {
            Some(n) if !n.is_empty() => n.as_bytes().to_vec(),
            _ => b"root".to_vec(),
        }
    }

    fn err(&self, what: String) -> Error {
        Error::Remote {
            remote: String::from_utf8_lossy(&self.key()).into_owned(),
            what,
        }
    }

    /// Lists the tree on the host: the walk's result, its entries in path order in
    /// `entries`, the bytes received for it, and whether it came by SFTP (the host has no GNU
    /// find; its files are then fetched by SFTP too).
    pub(super) fn list(
        &self,
        exclude: &GlobSet,
        one_file_system: bool,
    ) -> Result<(Walk, u64, bool)> {
        let command = listing::command(&self.path, one_file_system);
        let (out, done) = run_to_end(self.shell.as_ref(), &command, (Vec::new(), OUTPUT_MAX))
            .map_err(|e| self.err(format!("listing failed: {e}")))?;
        // find always prints the folder itself: nothing at all is a host without GNU find.
        if out.is_empty() && done.status != 0 {
            if let Some(files) = self.shell.files() {
                let l = sftp::list(files, &self.path, exclude).map_err(|e| self.err(e))?;
                return Ok((walk_of(l), done.received, true));
            }
        }
        // find: 0 all listed, 1 some folders unreadable (named on standard error).
        if out.is_empty() || !(0..=1).contains(&done.status) || done.signal.is_some() {
            let why = String::from_utf8_lossy(&done.stderr);
            let first = crate::engine::shell::first_error(&why);
            return Err(self.err(format!(
                "listing failed (find exited with status {}): {first}",
                done.status
            )));
        }
        let l = listing::parse(&out, &done.stderr, &self.path, exclude).map_err(|e| self.err(e))?;
        Ok((walk_of(l), done.received, false))
    }

    /// Fetches the wanted files into `staging`: one tar stream, or file by file over SFTP
    /// when the listing came by SFTP.
    pub(super) fn fetch(
        &self,
        (want, staging): (&Wanted<'_>, &mut Staging),
        by_sftp: bool,
        cancel: &crate::pool::CancelToken,
        progress: &dyn crate::progress::Progress,
    ) -> Result<()> {
        match (by_sftp, self.shell.files()) {
            (true, Some(files)) => sftp::fetch(files, want, staging, cancel),
            _ => fetch(self.shell.as_ref(), want, staging, cancel, progress),
        }
    }
}

fn walk_of(l: listing::Listed) -> Walk {
    Walk {
        root: l.root,
        entries: l.entries,
        warnings: l.warnings,
        failed: l.failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_folders_are_absolute_and_plain() {
        assert_eq!(RemoteSource::folder("/etc/").unwrap(), "/etc");
        assert_eq!(RemoteSource::folder("/").unwrap(), "/");
        assert_eq!(RemoteSource::folder("//").unwrap(), "/");
        for bad in ["etc", "/a/../b", "/a/./b", "/a//b", ""] {
            assert!(RemoteSource::folder(bad).is_err(), "{bad}");
        }
    }
}
