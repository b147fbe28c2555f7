//! Where the files a backup reads come from: the source folder itself, or the staged copies
//! of a remote source's files (whose stat data is the host's, from the listing).

use std::fs::File;
use std::io;
use std::path::Path;

use super::read::{fresh_entry, open_nofollow, stat_moved, Content, Worker};
use super::remote::Staging;
use crate::engine::plan::Item;
use crate::hash::HashAlgo;
use crate::tree::Entry;

/// The files' origin.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    /// The source folder.
    Local(&'a Path),
    /// Copies fetched from a host, by plan item number.
    Staged(&'a Staging),
}

impl Origin<'_> {
    /// Opens item `idx`'s file on a reading worker (which keeps the folder open).
    pub(super) fn open(&self, w: &mut Worker, idx: usize, item: &Item) -> io::Result<File> {
        match self {
            Origin::Local(src) => w.open(src, &item.entry.path),
            Origin::Staged(s) => staged(s, idx),
        }
    }

    /// Opens item `idx`'s file on the archive's thread.
    pub(super) fn open_alone(&self, idx: usize, item: &Item) -> io::Result<File> {
        match self {
            Origin::Local(src) => open_nofollow(&src.join(item.entry.path())),
            Origin::Staged(s) => staged(s, idx),
        }
    }

    /// A staged small file's content, read from the staging pack without opening a file.
    pub(super) fn small(&self, idx: usize, item: &Item, algo: HashAlgo) -> Option<Content> {
        let Origin::Staged(s) = self else {
            return None;
        };
        Some(match s.small(idx)? {
            Ok(data) => {
                let mut fresh = item.entry.clone();
                (fresh.size, fresh.digest) = (data.len() as u64, None);
                Content::Inline {
                    fresh,
                    digest: algo.digest(&data),
                    data,
                    changed: s.moved(idx),
                }
            }
            Err(e) => Content::Failed(format!("cannot read the staged copy: {e}")),
        })
    }

    /// What the open file is now. A staged copy is what the host listed, with the size it came
    /// with.
    pub(super) fn fresh(&self, f: &File, item: &Item) -> io::Result<Entry> {
        match self {
            Origin::Local(_) => fresh_entry(f, item),
            Origin::Staged(_) => {
                let mut e = item.entry.clone();
                e.size = f.metadata()?.len();
                e.digest = None;
                Ok(e)
            }
        }
    }

    /// Whether the file changed while it was read (a staged copy: since it was listed).
    pub(super) fn moved(&self, f: &File, idx: usize, fresh: &Entry) -> bool {
        match self {
            Origin::Local(_) => stat_moved(f, fresh),
            Origin::Staged(s) => {
                s.moved(idx) || f.metadata().map_or(true, |m| m.len() != fresh.size)
            }
        }
    }
}

fn staged(s: &Staging, idx: usize) -> io::Result<File> {
    if let Some(why) = s.missing(idx) {
        return Err(io::Error::other(why.to_string()));
    }
    open_nofollow(&s.path_of(idx)).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => io::Error::other("not sent by the host"),
        _ => e,
    })
}
