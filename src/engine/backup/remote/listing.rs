//! The tree of a remote source, listed by GNU `find -printf` on the host: one record a path
//! with the stat data a local walk takes from `lstat`, NUL-separated so that any byte of a
//! name survives. Nothing is installed on the host.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::GlobSet;
use thin_vec::ThinVec;

use crate::engine::paths::parent_of;
use crate::engine::problem::Problem;
use crate::tree::{Entry, EntryKind, StatCache};

/// Type, mode, owner, group, size, mtime, ctime, inode, device, links, then the path below
/// the source and the link target, each ended by a NUL.
const FORMAT: &str = r"%y %m %U %G %s %T@ %C@ %i %D %n %P\0%l\0";

/// The command that lists `root` on the host (`-xdev`: stay on its file system).
pub(super) fn command(root: &str, one_file_system: bool) -> String {
    let xdev = if one_file_system { " -xdev" } else { "" };
    format!(
        "LC_ALL=C exec find -P {}{xdev} -printf {}",
        crate::engine::shell::quote(root),
        crate::engine::shell::quote(FORMAT)
    )
}

/// A parsed listing, in path byte order.
#[derive(Debug)]
pub(super) struct Listed {
    pub root: Entry,
    pub entries: Vec<Entry>,
    pub warnings: Vec<Problem>,
    /// Folders that could not be read (sorted): the plan keeps what they held before.
    pub failed: Vec<Vec<u8>>,
}

/// Parses `find`'s output; `errors` is its standard error, `root` the listed folder. An
/// error is a listing that cannot be trusted (malformed, or without the folder itself).
pub(super) fn parse(
    out: &[u8],
    errors: &[u8],
    root: &str,
    exclude: &GlobSet,
) -> Result<Listed, String> {
    let (mut entries, mut warnings) = (Vec::new(), Vec::new());
    let nuls = out.iter().filter(|&&b| b == 0).count();
    if out.last().is_some_and(|&b| b != 0) || nuls % 2 != 0 {
        return Err("the listing ends in the middle of a record".into());
    }
    let mut root_entry = None;
    let mut dropped: HashSet<Vec<u8>> = HashSet::new();
    let mut fields = out.split(|&b| b == 0);
    while let Some(head) = fields.next() {
        if head.is_empty() {
            break;
        }
        let target = fields
            .next()
            .ok_or("the listing ends in the middle of a record")?;
        let (e, kind_char) = record(head, target)?;
        if e.path.is_empty() {
            root_entry = Some(e);
            continue;
        }
        let parent = parent_of(&e.path);
        let excluded = exclude.is_match(Path::new(OsStr::from_bytes(&e.path)));
        if dropped.contains(parent) || excluded {
            if e.kind == EntryKind::Dir {
                dropped.insert(e.path);
            }
            continue;
        }
        match kind_char {
            b's' => warnings.push(Problem::skipped(
                e.path,
                "skipped: socket (sockets cannot be backed up; GNU tar skips them too)",
            )),
            b'c' | b'b' => warnings.push(Problem::skipped(
                e.path,
                "skipped: device file (find on the host does not give its device number)",
            )),
            _ => entries.push(e),
        }
    }
    let root_entry = root_entry.ok_or("the listing does not hold the folder itself")?;
    if root_entry.kind != EntryKind::Dir {
        return Err(format!("{root} is not a folder on the host"));
    }
    entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = entries.windows(2).find(|w| w[0].path == w[1].path) {
        let p = crate::text::display_path(&w[0].path);
        return Err(format!("the listing names {p} twice"));
    }
    let mut listed = Listed {
        root: root_entry,
        entries,
        warnings,
        failed: Vec::new(),
    };
    unreadable(errors, root, &mut listed);
    Ok(listed)
}

/// Folders `find` could not read ("find: 'PATH': MESSAGE"): failed, and warnings. A message
/// that names no listed folder (the source itself, a name find quoted, or messages cut off
/// at the kept length) fails the whole source instead, so that the plan keeps everything the
/// previous snapshot had and records nothing as deleted. What else the host wrote on standard
/// error (a login shell's start-up noise) is not find's and is ignored.
fn unreadable(errors: &[u8], root: &str, listed: &mut Listed) {
    let prefix = format!("{}/", root.trim_end_matches('/'));
    let is_dir = |rel: &[u8]| {
        let found = listed
            .entries
            .binary_search_by(|e| e.path.as_slice().cmp(rel));
        found.is_ok_and(|i| listed.entries[i].kind == EntryKind::Dir)
    };
    let mut failed = Vec::new();
    let mut whole = errors.len() >= crate::engine::shell::STDERR_KEPT;
    let lines = errors.split(|&b| b == b'\n');
    for line in lines.filter(|l| l.starts_with(b"find: ")) {
        let text = String::from_utf8_lossy(line);
        let quoted = text
            .strip_prefix("find: '")
            .and_then(|r| r.split_once("': "))
            .and_then(|(p, msg)| Some((p.strip_prefix(prefix.as_str())?, msg)));
        match quoted {
            Some((rel, msg)) if is_dir(rel.as_bytes()) => {
                failed.push(rel.as_bytes().to_vec());
                let rel = rel.as_bytes().to_vec();
                listed.warnings.push(Problem::failed(rel, msg));
            }
            _ => {
                whole = true;
                listed.warnings.push(Problem::failed(Vec::new(), text));
            }
        }
    }
    if whole {
        failed.push(Vec::new());
    }
    failed.sort();
    failed.dedup();
    listed.failed = failed;
}

/// One record: its entry and `find`'s type letter.
fn record(head: &[u8], target: &[u8]) -> Result<(Entry, u8), String> {
    let bad = |what: &str| format!("malformed listing record ({what})");
    let mut f = head.splitn(11, |&b| b == b' ');
    let mut next = |what: &str| f.next().ok_or_else(|| bad(what));
    let ty = next("type")?;
    let (mode, uid, gid) = (next("mode")?, next("owner")?, next("group")?);
    let (size, mtime, ctime) = (next("size")?, next("mtime")?, next("ctime")?);
    let (ino, dev, nlink) = (next("inode")?, next("device")?, next("links")?);
    let path = next("path")?.to_vec();
    let &[t] = ty else { return Err(bad("type")) };
    let kind = match t {
        b'f' => EntryKind::File,
        b'd' => EntryKind::Dir,
        b'l' => EntryKind::Symlink,
        b'p' => EntryKind::Fifo,
        b's' | b'c' | b'b' => EntryKind::File,
        _ => return Err(bad("type")),
    };
    if !path.is_empty() && !sane(&path) {
        return Err(format!(
            "the listing holds a path that is not below the source: {}",
            crate::text::display_path(&path)
        ));
    }
    let num = |v: &[u8], what: &str| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(what))
    };
    let mode = std::str::from_utf8(mode)
        .ok()
        .and_then(|m| u32::from_str_radix(m, 8).ok());
    let mode = mode.filter(|m| *m <= 0o7777).ok_or_else(|| bad("mode"))?;
    let target = (kind == EntryKind::Symlink).then(|| ThinVec::from(target.to_vec()));
    let size = match kind {
        EntryKind::Dir => 0,
        EntryKind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
        _ => num(size, "size")?,
    };
    let uid = u32::try_from(num(uid, "owner")?).map_err(|_| bad("owner"))?;
    let gid = u32::try_from(num(gid, "group")?).map_err(|_| bad("group"))?;
    let e = Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        size,
        mtime_ns: time_ns(mtime).ok_or_else(|| bad("mtime"))?,
        digest: None,
        target,
        rdev: 0,
        xattrs: None,
        sparse: false,
        stat: StatCache {
            ctime_ns: time_ns(ctime).ok_or_else(|| bad("ctime"))?,
            ino: num(ino, "inode")?,
            dev: num(dev, "device")?,
            nlink: num(nlink, "links")?,
        },
    };
    Ok((e, t))
}

/// A relative path with no empty, `.` or `..` component.
fn sane(p: &[u8]) -> bool {
    p.split(|&b| b == b'/')
        .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// `find`'s `%T@`: seconds, a dot and up to 10 digits of fraction, maybe negative.
fn time_ns(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    if sec.is_empty()
        || !sec.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut ns: i64 = 0;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        ns = ns * 10 + d;
    }
    let total = sec
        .parse::<i64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(ns)?;
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_excludes() -> GlobSet {
        GlobSet::empty()
    }

    #[test]
    fn times_parse_to_nanoseconds() {
        assert_eq!(
            time_ns(b"1700000000.1234567890"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(time_ns(b"5"), Some(5_000_000_000));
        assert_eq!(time_ns(b"-1.5000000000"), Some(-1_500_000_000));
        assert_eq!(time_ns(b"99999999999999999999.0"), None);
        assert_eq!(time_ns(b"1e3"), None);
        assert_eq!(time_ns(b""), None);
    }

    #[test]
    fn records_become_entries_in_path_order() {
        let out = b"d 755 0 0 4096 10.0 11.0 2 9 3 \0\0\
f 4755 1000 100 5 20.5000000000 21.0 7 9 1 b c\0\0\
l 777 0 0 3 30.0 31.0 8 9 1 a\0x y\0\
s 755 0 0 0 30.0 31.0 9 9 1 sock\0\0";
        let l = parse(out, b"", "/srv", &no_excludes()).unwrap();
        assert_eq!(l.root.kind, EntryKind::Dir);
        assert_eq!(l.root.size, 0);
        let paths: Vec<&[u8]> = l.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [&b"a"[..], b"b c"]);
        assert_eq!(l.entries[0].target.as_deref(), Some(&b"x y"[..]));
        assert_eq!(l.entries[0].size, 3);
        let f = &l.entries[1];
        assert_eq!((f.mode, f.uid, f.gid, f.size), (0o4755, 1000, 100, 5));
        assert_eq!(
            (f.mtime_ns, f.stat.ctime_ns, f.stat.ino),
            (20_500_000_000, 21_000_000_000, 7)
        );
        assert_eq!(l.warnings.len(), 1);
        assert!(!l.warnings[0].failed);
    }

    #[test]
    fn hostile_or_broken_listings_are_refused() {
        let root = b"d 755 0 0 4096 10.0 11.0 2 9 3 \0\0";
        for bad in [
            &b"f 644 0 0 1 1.0 1.0 1 1 1 x\0"[..],
            b"f 644 0 0 1 1.0 1.0 1 1 1 ../etc/passwd\0\0",
            b"f 644 0 0 1 1.0 1.0 1 1 1 a//b\0\0",
            b"f 99999 0 0 1 1.0 1.0 1 1 1 a\0\0",
            b"f 644 0 0 1 1.0 1.0 1 1 1 a\0\0f 644 0 0 1 1.0 1.0 1 1 1 a\0\0",
        ] {
            let out = [&root[..], bad].concat();
            assert!(parse(&out, b"", "/srv", &no_excludes()).is_err(), "{out:?}");
        }
        assert!(parse(
            b"f 644 0 0 1 1.0 1.0 1 1 1 \0\0",
            b"",
            "/srv",
            &no_excludes()
        )
        .is_err());
        assert!(parse(b"", b"", "/srv", &no_excludes()).is_err());
    }

    #[test]
    fn excluded_folders_take_their_contents_and_unreadable_ones_are_failed() {
        let out = b"d 755 0 0 4096 10.0 11.0 2 9 3 \0\0\
d 755 0 0 4096 10.0 11.0 3 9 2 cache\0\0\
f 644 0 0 1 1.0 1.0 4 9 1 cache/x\0\0\
d 700 0 0 4096 10.0 11.0 5 9 2 locked\0\0\
f 644 0 0 1 1.0 1.0 6 9 1 keep\0\0";
        let mut b = globset::GlobSetBuilder::new();
        b.add(globset::Glob::new("cache").unwrap());
        // A login shell's noise on standard error is not find's.
        let errors = b"pyenv: cannot rehash\nfind: '/srv/locked': Permission denied\n";
        let l = parse(out, errors, "/srv", &b.build().unwrap()).unwrap();
        let paths: Vec<&[u8]> = l.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [&b"keep"[..], b"locked"]);
        assert_eq!(l.failed, vec![b"locked".to_vec()]);
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].failed);
        // A message about the source itself, or a name that is no listed folder, keeps the
        // whole previous tree.
        for errors in [
            &b"find: '/srv': Permission denied\n"[..],
            b"find: '/srv/caf\\303\\251': Permission denied\n",
        ] {
            let l = parse(out, errors, "/srv", &GlobSet::empty()).unwrap();
            assert!(l.failed.contains(&Vec::new()), "{:?}", l.failed);
        }
    }
}
