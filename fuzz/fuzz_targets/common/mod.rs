//! A fixed repository for the restore-path fuzz targets, made once per process, and the checks
//! that every input must pass: no panic, nothing written or removed outside the restore target,
//! and no file restored with content other than what was backed up.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vault::{
    BackupOptions, CancelToken, NoProgress, Pool, RestoreOptions, RestoreReport, SnapSpec,
};

/// The source tree: relative path -> file content (folders and the symlink are fixed below).
pub const FILES: &[(&str, &[u8])] = &[
    ("a.txt", b"alpha\n"),
    ("d/b.bin", &[0x5a; 3000]),
    ("d/c.txt", b"alpha\n"), // same content as a.txt: restored as a copy of it
    ("d/e/f", b""),
];

pub struct Fixture {
    /// Everything this process writes lives below here.
    pub root: PathBuf,
    pub repo: PathBuf,
    /// The only archive of the repository's one (full) snapshot.
    pub archive: PathBuf,
    pub archive_bytes: Vec<u8>,
    pub db_bytes: Vec<u8>,
    /// Per iteration: `work/outside` (a sentinel file that must survive untouched) and
    /// `work/target` (where restore writes).
    pub work: PathBuf,
    pub pool: Pool,
}

impl Fixture {
    pub fn outside(&self) -> PathBuf {
        self.work.join("outside")
    }
    pub fn target(&self) -> PathBuf {
        self.work.join("target")
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("vault-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let src = root.join("src");
        for (p, data) in FILES {
            let p = src.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, data).unwrap();
        }
        fs::create_dir_all(src.join("empty")).unwrap();
        symlink("a.txt", src.join("l")).unwrap();
        let repo = root.join("repo");
        let pool = Pool::new(2);
        vault::backup(
            &BackupOptions::new(&src, &repo),
            &pool,
            &CancelToken::new(),
            &NoProgress,
        )
        .expect("fixture backup");
        let archives = repo.join("archives");
        let names = listing(&archives);
        assert_eq!(names.len(), 1, "one archive expected: {names:?}");
        let archive = archives.join(&names[0]);
        let archive_bytes = fs::read(&archive).unwrap();
        let db_bytes = fs::read(repo.join("vault.db")).unwrap();
        if let Ok(dir) = std::env::var("VAULT_FUZZ_SEED_DIR") {
            write_seeds(Path::new(&dir), &archive_bytes);
        }
        Fixture {
            work: root.join("work"),
            root,
            repo,
            archive,
            archive_bytes,
            db_bytes,
            pool,
        }
    })
}

/// Seeds for `archive_restore`: the real archive, raw (mode byte 1) and as plain tar (mode 0).
fn write_seeds(dir: &Path, gz: &[u8]) {
    use std::io::Read;
    fs::create_dir_all(dir).unwrap();
    let mut raw = vec![1u8];
    raw.extend_from_slice(gz);
    fs::write(dir.join("seed-gzip"), raw).unwrap();
    let mut tar = vec![0u8];
    flate2::read::MultiGzDecoder::new(gz)
        .read_to_end(&mut tar)
        .unwrap();
    // Trailing zero blocks are not needed to reach every member; keep the seed small.
    while tar.len() > 1 && tar[tar.len() - 1] == 0 {
        tar.pop();
    }
    fs::write(dir.join("seed-tar"), tar).unwrap();
}

/// A fresh work area: `outside/keep` and, when `pre` is set, a target already holding symlinks
/// that point outside (which restore with `--force` must replace, never follow).
pub fn fresh_work(f: &Fixture, pre: u8) {
    let _ = fs::remove_dir_all(&f.work);
    fs::create_dir_all(f.outside()).unwrap();
    fs::write(f.outside().join("keep"), b"keep").unwrap();
    if pre & 1 != 0 {
        let t = f.target();
        fs::create_dir_all(&t).unwrap();
        symlink(f.outside(), t.join("d")).unwrap();
        symlink(f.outside().join("a.txt"), t.join("a.txt")).unwrap();
        if pre & 2 != 0 {
            symlink("../outside", t.join("empty")).unwrap();
        }
        if pre & 4 != 0 {
            fs::write(t.join("extra"), b"x").unwrap();
        }
    }
}

pub fn restore(
    f: &Fixture,
    force: bool,
    delete: bool,
    include: Vec<String>,
) -> vault::Result<RestoreReport> {
    let opts = RestoreOptions {
        repo: f.repo.clone(),
        snapshot: SnapSpec::Id("latest".into()),
        source: None,
        target: f.target(),
        include: include.into_iter().map(String::into_bytes).collect(),
        force,
        delete,
        dry_run: false,
        no_setid: true,
    };
    vault::restore(&opts, &f.pool, &CancelToken::new(), &NoProgress)
}

/// What every input must leave true.
pub fn assert_contained(f: &Fixture) {
    assert_eq!(
        listing(&f.outside()),
        ["keep"],
        "something was written outside the target"
    );
    assert_eq!(fs::read(f.outside().join("keep")).unwrap(), b"keep");
    let work = listing(&f.work);
    assert!(
        work.iter().all(|n| n == "outside" || n == "target"),
        "unexpected entries beside the target: {work:?}"
    );
    assert_eq!(
        listing(&f.root),
        ["repo", "src", "work"],
        "unexpected entries in the fuzz root"
    );
    let archives = listing(&f.repo.join("archives"));
    assert_eq!(archives.len(), 1, "archives changed: {archives:?}");
}

/// Every regular file restored at a path the fixture has holds that path's content, unless the
/// report lists it as failed (the archive target: the manifest is intact).
pub fn assert_right_content(f: &Fixture, report: &RestoreReport) {
    let t = f.target();
    for (p, want) in FILES {
        if report.errors.iter().any(|w| w.path == p.as_bytes()) {
            continue;
        }
        let path = t.join(p);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if meta.is_file() {
                assert_eq!(
                    fs::read(&path).unwrap(),
                    *want,
                    "{p}: wrong content restored"
                );
            }
        }
    }
}

/// Every regular file anywhere in the target holds one of the backed-up contents (or is the
/// `extra` file `fresh_work` put there): a tampered manifest can rename content, never invent it.
pub fn assert_no_foreign_content(f: &Fixture) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(it) = fs::read_dir(dir) else { return };
        for e in it {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&e.path(), out);
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(&f.target(), &mut files);
    for p in files {
        let got = fs::read(&p).unwrap();
        assert!(
            got == b"x" || FILES.iter().any(|(_, c)| *c == got.as_slice()),
            "{}: restored content that was never backed up",
            p.display()
        );
    }
}
