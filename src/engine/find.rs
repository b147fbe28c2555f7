//! `vault find`: every snapshot in which a path matching a glob (or holding a content) exists,
//! with runs of snapshots in which it stayed the same collapsed into one match. Read from the
//! versioned tree in one pass per source; no archive is opened.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::engine::history::holding;
use crate::engine::query::{covering_second, json_name, rfc3339_ns, source_id};
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::manifest::{SnapshotRow, Version, VersionFilter};
use crate::text::display_path;
use crate::tree::Entry;

/// What to look for.
#[derive(Clone, Debug, Default)]
pub struct FindOptions<'a> {
    /// A glob (`*`, `?`, `[…]`, `**`). Without `/` it matches a path's last component; with a
    /// leading `/`, the whole absolute path (source folder included); else the path inside
    /// the source.
    pub pattern: Option<&'a str>,
    /// Only paths whose content digest starts with these hex digits (at least 8).
    pub content: Option<&'a str>,
    pub source: Option<&'a Path>,
    /// Only snapshots taken at or after this time (ns).
    pub since_ns: Option<i64>,
    /// Only snapshots taken at or before this time (ns).
    pub until_ns: Option<i64>,
}

/// One match of `vault find --json`: a path that stayed the same over a run of snapshots.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FindMatch {
    pub path: String,
    /// Base64 of the path's bytes, only when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Time of the first and the last snapshot of the run.
    pub first: String,
    pub last: String,
    /// The run's snapshot ids, oldest first.
    pub snapshots: Vec<String>,
    pub size: u64,
    pub mtime: String,
    pub digest: Option<String>,
}

/// `vault find --json`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FindReport {
    /// By path, then oldest first.
    pub matches: Vec<FindMatch>,
    /// How many snapshots were searched (after --since/--until).
    pub snapshots_searched: usize,
}

/// How a pattern is matched.
#[derive(Debug)]
enum Against {
    /// The last component.
    Name,
    /// The path inside the source.
    Relative,
    /// The source folder joined with the path.
    Absolute,
}

/// A compiled `PATTERN`.
#[derive(Debug)]
struct PathGlob {
    glob: GlobMatcher,
    against: Against,
}

impl PathGlob {
    fn new(pattern: &str) -> Result<PathGlob> {
        let against = if pattern.starts_with('/') {
            Against::Absolute
        } else if pattern.contains('/') {
            Against::Relative
        } else {
            Against::Name
        };
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|source| Error::BadPattern {
                pattern: pattern.to_string(),
                source,
            })?;
        Ok(PathGlob {
            glob: glob.compile_matcher(),
            against,
        })
    }

    fn matches(&self, source: &[u8], rel: &[u8], buf: &mut Vec<u8>) -> bool {
        let subject: &[u8] = match self.against {
            Against::Name => rel.rsplit(|&b| b == b'/').next().unwrap_or(rel),
            Against::Relative => rel,
            Against::Absolute => {
                buf.clear();
                buf.extend_from_slice(source.strip_suffix(b"/").unwrap_or(source));
                buf.push(b'/');
                buf.extend_from_slice(rel);
                buf
            }
        };
        self.glob.is_match(Path::new(OsStr::from_bytes(subject)))
    }
}

/// The longest run of plain characters in the pattern's last component: every path the
/// pattern matches holds it, so SQLite can skip the others before they are read out. None for
/// a pattern with a class or alternates (`[…]`, `{…}`), whose parts are not all required.
fn required_literal(pattern: &str) -> Option<Vec<u8>> {
    if pattern.contains(['[', '{']) {
        return None;
    }
    let last = pattern.rsplit('/').next().unwrap_or(pattern);
    let (mut best, mut run) = (Vec::new(), Vec::new());
    let mut it = last.bytes();
    while let Some(b) = it.next() {
        match b {
            b'*' | b'?' => {
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
            }
            b'\\' => run.extend(it.next()),
            _ => run.push(b),
        }
    }
    if run.len() > best.len() {
        best = run;
    }
    (!best.is_empty()).then_some(best)
}

/// Where in a source's sorted paths a pattern's matches can lie.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    Anywhere,
    /// Only paths starting with these bytes (a range of the primary key).
    Prefix(Vec<u8>),
    /// Nowhere: an absolute pattern for another folder.
    Nowhere,
}

/// Where the matches of `glob` can lie among the paths of `source`: after the pattern's plain
/// start (up to its first special character), which for an absolute pattern must lead into
/// the source folder or lie above it.
fn start_of(glob: &PathGlob, source: &[u8]) -> Start {
    let pattern = glob.glob.glob().glob();
    let end = pattern
        .find(['*', '?', '[', '{', '\\'])
        .unwrap_or(pattern.len());
    let lit = &pattern.as_bytes()[..end];
    let rel = match glob.against {
        Against::Name => return Start::Anywhere,
        Against::Relative => lit,
        Against::Absolute => {
            let mut dir = source.strip_suffix(b"/").unwrap_or(source).to_vec();
            dir.push(b'/');
            match lit.strip_prefix(dir.as_slice()) {
                Some(rest) => rest,
                None if dir.starts_with(lit) => return Start::Anywhere,
                None => return Start::Nowhere,
            }
        }
    };
    match rel.is_empty() {
        true => Start::Anywhere,
        false => Start::Prefix(rel.to_vec()),
    }
}

/// Parses `--content`: an even number of hex digits, 8 to 64.
fn digest_prefix(hex: &str) -> Result<Vec<u8>> {
    let ok = (8..=64).contains(&hex.len())
        && hex.len() % 2 == 0
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(Error::Usage(format!(
            "bad --content '{hex}': expected a hex digest, or its first 8 or more digits (an even number)"
        )));
    }
    let b = hex.as_bytes();
    let nibble = |c: u8| (c as char).to_digit(16).expect("checked") as u8;
    Ok(b.chunks(2)
        .map(|p| (nibble(p[0]) << 4) | nibble(p[1]))
        .collect())
}

/// Searches every source (or `--source`) for matching paths.
pub fn find(repo: &Repository, opts: &FindOptions<'_>) -> Result<FindReport> {
    if opts.pattern.is_none() && opts.content.is_none() {
        return Err(Error::Usage(
            "find: give a PATTERN, --content DIGEST or both".into(),
        ));
    }
    let glob = opts.pattern.map(PathGlob::new).transpose()?;
    let prefix = opts.content.map(digest_prefix).transpose()?;
    let literal = opts.pattern.and_then(required_literal);
    let sources = match opts.source {
        Some(s) => vec![source_id(repo, s)?],
        None => repo
            .manifest
            .sources()?
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
    };
    let mut report = FindReport::default();
    for sid in sources {
        let snaps: Vec<SnapshotRow> = repo
            .manifest
            .snapshots(Some(sid))?
            .into_iter()
            .filter(|s| opts.since_ns.map_or(true, |t| s.time_ns >= t))
            .filter(|s| {
                opts.until_ns
                    .map_or(true, |t| s.time_ns <= covering_second(t))
            })
            .collect();
        let Some(first) = snaps.first() else {
            continue;
        };
        report.snapshots_searched += snaps.len();
        let source = first.source_path.clone();
        let start = glob
            .as_ref()
            .map_or(Start::Anywhere, |g| start_of(g, &source));
        let prefix_range = match &start {
            Start::Nowhere => continue,
            Start::Prefix(p) => Some(p.as_slice()),
            Start::Anywhere => None,
        };
        let mut buf = Vec::new();
        let mut wanted = |rel: &[u8]| {
            glob.as_ref()
                .map_or(true, |g| g.matches(&source, rel, &mut buf))
        };
        let filter = VersionFilter {
            prefix: prefix_range,
            contains: literal.as_deref(),
            digest_prefix: prefix.as_deref(),
            path: &mut wanted,
        };
        let versions = repo.manifest.scan_versions(sid, filter)?;
        collapse(&snaps, &versions, &mut report.matches);
    }
    Ok(report)
}

/// Turns a source's versions (by path, oldest first) into matches: each run of consecutive
/// snapshots (of those searched) in which the path looked the same is one match.
fn collapse(snaps: &[SnapshotRow], versions: &[Version], out: &mut Vec<FindMatch>) {
    let mut run: Option<(&Entry, std::ops::Range<usize>)> = None;
    for v in versions {
        let r = holding(snaps, v);
        if r.is_empty() {
            continue;
        }
        run = match run.take() {
            Some((e, prev))
                if e.path == v.entry.path && prev.end == r.start && !v.entry.differs_from(e) =>
            {
                Some((e, prev.start..r.end))
            }
            Some((e, prev)) => {
                out.push(one_match(snaps, e, prev));
                Some((&v.entry, r))
            }
            None => Some((&v.entry, r)),
        };
    }
    if let Some((e, r)) = run {
        out.push(one_match(snaps, e, r));
    }
}

fn one_match(snaps: &[SnapshotRow], e: &Entry, r: std::ops::Range<usize>) -> FindMatch {
    let run = &snaps[r];
    let (path, path_bytes) = json_name(&e.path);
    FindMatch {
        path,
        path_bytes,
        source: display_path(&run[0].source_path),
        kind: e.kind.name(),
        first: crate::time::rfc3339(run[0].time_ns),
        last: crate::time::rfc3339(run[run.len() - 1].time_ns),
        snapshots: run.iter().map(|s| s.id.clone()).collect(),
        size: e.size,
        mtime: rfc3339_ns(e.mtime_ns),
        digest: e.digest.map(|d| d.to_hex()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_relative_and_absolute_paths() {
        let m = |pat: &str, rel: &str| {
            PathGlob::new(pat)
                .unwrap()
                .matches(b"/srv", rel.as_bytes(), &mut Vec::new())
        };
        assert!(m("nginx.conf", "etc/nginx/nginx.conf"));
        assert!(m("*.conf", "etc/nginx/nginx.conf"));
        assert!(m("**/nginx.conf", "etc/nginx/nginx.conf"));
        assert!(m("**/nginx.conf", "nginx.conf"));
        assert!(!m("etc/*.conf", "etc/nginx/nginx.conf"));
        assert!(m("etc/**/*.conf", "etc/nginx/nginx.conf"));
        assert!(m("/srv/etc/nginx/*", "etc/nginx/nginx.conf"));
        assert!(!m("/etc/nginx/*", "etc/nginx/nginx.conf"));
        assert!(PathGlob::new("a[").is_err());
    }

    #[test]
    fn the_required_literal_is_the_longest_plain_run_of_the_last_component() {
        let lit = |p: &str| required_literal(p).map(|b| String::from_utf8(b).unwrap());
        assert_eq!(lit("**/nginx.conf").as_deref(), Some("nginx.conf"));
        assert_eq!(lit("etc/*.conf").as_deref(), Some(".conf"));
        assert_eq!(lit("/srv/etc/a*bcd?e").as_deref(), Some("bcd"));
        assert_eq!(lit("x[abcdef]yz"), None);
        assert_eq!(lit("etc/{nginx.conf,apache2/apache2.conf}"), None);
        assert_eq!(lit("[]a]x"), None);
        assert_eq!(lit(r"a\*bc").as_deref(), Some("a*bc"));
        assert_eq!(lit("etc/**"), None);
        assert_eq!(lit("*"), None);
    }

    #[test]
    fn prefixes_are_taken_from_relative_and_absolute_patterns() {
        let start = |pat: &str, source: &[u8]| start_of(&PathGlob::new(pat).unwrap(), source);
        let pre = |s: &str| Start::Prefix(s.as_bytes().to_vec());
        assert_eq!(start("etc/nginx/*.conf", b"/srv"), pre("etc/nginx/"));
        assert_eq!(start("d001/**", b"/srv"), pre("d001/"));
        assert_eq!(start("/srv/etc/n*", b"/srv"), pre("etc/n"));
        assert_eq!(start("/etc/n*", b"/"), pre("etc/n"));
        assert_eq!(start("/sr*/etc", b"/srv"), Start::Anywhere);
        assert_eq!(start("/srv/*", b"/srv"), Start::Anywhere);
        assert_eq!(start("/other/etc/x", b"/srv"), Start::Nowhere);
        assert_eq!(start("/srv/data2/x", b"/srv/data"), Start::Nowhere);
        assert_eq!(start("**/nginx.conf", b"/srv"), Start::Anywhere);
        assert_eq!(start("nginx.conf", b"/srv"), Start::Anywhere);
    }

    #[test]
    fn content_prefixes_are_checked() {
        assert_eq!(digest_prefix("00ff10ab").unwrap(), vec![0, 255, 16, 171]);
        for bad in [
            "abc",
            "00ff10a",
            "zzzzzzzz",
            &"a".repeat(66),
            "é0ff10ab",
            "+a+b+c+d",
        ] {
            assert!(digest_prefix(bad).is_err(), "{bad}");
        }
    }
}
