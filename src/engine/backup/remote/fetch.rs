//! Fetching what a remote backup reads: one `tar -c` on the host streams every planned file in
//! plan order; each regular member that is the next wanted path is staged ([`Staging`]) as its
//! plan item, and the normal pipeline reads, hashes and archives it from there. Members the
//! host sends that were not asked for are ignored.

use std::io;
use std::path::Path;

use super::staging::{Copy, Staging};
use crate::archive::reader::{for_each_member_in, Flow, MemberKind, ReadError};
use crate::engine::plan::Plan;
use crate::engine::shell::{first_error, quote, Finished, Shell};
use crate::error::{Error, Result};
use crate::pool::CancelToken;
use crate::progress::Progress;

fn repo_io(path: &Path, e: io::Error) -> Error {
    Error::RepoIo {
        path: path.to_path_buf(),
        source: e,
    }
}

/// What the fetch is asked for: the host's label, the source folder on it, the items to get.
pub(in crate::engine::backup) struct Wanted<'a> {
    pub label: &'a str,
    pub root: &'a str,
    pub plan: &'a Plan,
    /// Plan item numbers, in plan (path) order.
    pub items: Vec<u32>,
}

/// Fetches `want.items` into `staging` through one `tar -c` on the host.
pub(in crate::engine::backup) fn fetch(
    shell: &dyn Shell,
    want: &Wanted<'_>,
    staging: &mut Staging,
    cancel: &CancelToken,
    progress: &dyn Progress,
) -> Result<()> {
    if want.items.is_empty() {
        return Ok(());
    }
    let remote = |what: String| Error::Remote {
        remote: want.label.to_string(),
        what,
    };
    let mut list = Vec::new();
    for &i in &want.items {
        list.extend_from_slice(&want.plan.items[i as usize].entry.path);
        list.push(0);
    }
    let total: u64 = want
        .items
        .iter()
        .map(|&i| want.plan.items[i as usize].entry.size)
        .sum();
    progress.phase("fetch", Some(total));
    // A folder that cannot be entered is status 100: never mistaken for per-file trouble.
    let command = format!(
        "cd {} || exit 100; LC_ALL=C exec tar -c -f - --null --verbatim-files-from \
         --no-recursion --hard-dereference -T -",
        quote(want.root)
    );
    let mut run = shell
        .start(&command, Box::new(io::Cursor::new(list)))
        .map_err(|e| remote(format!("cannot start tar: {e}")))?;
    let mut next = 0usize;
    let mut skipped: Vec<u32> = Vec::new();
    let walked = for_each_member_in(&mut *run, Path::new(want.label), |m| {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if m.kind != MemberKind::Regular || m.sparse {
            return Ok(Flow::Continue);
        }
        let rest = &want.items[next..];
        let Some(pos) = rest
            .iter()
            .position(|&i| want.plan.items[i as usize].entry.path == m.name)
        else {
            return Ok(Flow::Continue);
        };
        skipped.extend_from_slice(&rest[..pos]);
        let idx = rest[pos];
        next += pos + 1;
        let e = &want.plan.items[idx as usize].entry;
        match staging.write(idx, (m.data, m.size, m.mtime), (e.size, e.mtime_ns)) {
            Ok(()) => {}
            Err(Copy::Read(err)) => return Err(remote(format!("the fetch broke off: {err}"))),
            Err(Copy::Write(err)) => return Err(repo_io(&staging.place_of(idx), err)),
        }
        progress.advance(e.size);
        Ok(Flow::Continue)
    });
    match walked {
        Ok(()) => {}
        Err(Ok(e)) => return Err(e),
        Err(Err(ReadError::Damaged { source, .. })) => {
            return Err(remote(format!("the fetch broke off: {source}")))
        }
        Err(Err(e)) => return Err(remote(format!("the fetch broke off: {e}"))),
    }
    let drained = io::copy(&mut *run, &mut io::sink())
        .map_err(|e| remote(format!("reading tar's output: {e}")))?;
    let done = run
        .finish()
        .map_err(|e| remote(format!("tar did not end: {e}")))?;
    staging.received = done.received;
    skipped.extend_from_slice(&want.items[next..]);
    settle(&done, drained, (want, staging), skipped).map_err(remote)
}

/// tar's messages about one file: that file is missing or torn, the rest of the fetch holds.
const PER_FILE: [&str; 7] = [
    "Cannot stat",
    "Cannot open",
    "File removed before we read it",
    "file changed as we read it",
    "File shrank by",
    "Read error",
    "Exiting with failure status due to previous errors",
];

/// tar's messages about a file it sent, but not as it was listed.
const TORN: [&str; 3] = ["file changed as we read it", "File shrank by", "Read error"];

/// Checks how tar ended and records what it did not send whole. Anything but a complete
/// stream with per-file trouble fails the fetch, so a tar that could not run (too old, the
/// folder gone, killed) never passes for a host whose files all vanished.
fn settle(
    done: &Finished,
    drained: u64,
    (want, staging): (&Wanted<'_>, &mut Staging),
    skipped: Vec<u32>,
) -> std::result::Result<(), String> {
    let errors = String::from_utf8_lossy(&done.stderr);
    let tar_lines: Vec<&str> = errors.lines().filter(|l| l.starts_with("tar: ")).collect();
    if let Some(sig) = &done.signal {
        return Err(format!("tar was killed by signal {sig}"));
    }
    if drained == 0 {
        return Err("the file stream ended before tar's end-of-archive blocks".into());
    }
    let per_file = |l: &&str| PER_FILE.iter().any(|m| l.contains(m));
    match done.status {
        0 | 1 => {}
        2 if tar_lines.iter().all(per_file) => {}
        s => {
            return Err(format!(
                "tar exited with status {s}: {}",
                first_error(&errors)
            ))
        }
    }
    let path_of =
        |i: u32| String::from_utf8_lossy(&want.plan.items[i as usize].entry.path).into_owned();
    let named = |i: u32, l: &str| l.starts_with(&format!("tar: {}: ", path_of(i)));
    for l in tar_lines
        .iter()
        .filter(|l| TORN.iter().any(|m| l.contains(m)))
    {
        match want.items.iter().find(|&&i| named(i, l)) {
            Some(&i) => staging.mark_moved(i),
            // A name tar quoted: every fetched file may be the one.
            None => want.items.iter().for_each(|&i| staging.mark_moved(i)),
        }
    }
    for i in skipped {
        let why = match tar_lines.iter().find(|l| named(i, l)) {
            Some(l) => format!("not sent by the host ({l})"),
            None => "not sent by the host (it vanished or is no longer a regular file)".into(),
        };
        staging.missing.insert(i, why);
    }
    Ok(())
}
