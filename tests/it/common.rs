//! Helpers shared by the integration tests: running the binary, building trees, and
//! describing a tree so that two trees can be compared.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: this build's, or the one VAULT_TEST_BIN names (to see a regression
/// test fail against an older build).
pub fn vault_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("VAULT_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vault").into())
    })
}

/// The result of one `vault` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `vault ARGS` with VAULT_REPO unset.
pub fn vault(args: &[&str]) -> Run {
    Command::new(vault_bin())
        .args(args)
        .env_remove("VAULT_REPO")
        .output()
        .expect("run vault")
        .into()
}

/// Runs `vault ARGS` with extra environment variables (and no SSH agent).
pub fn vault_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(vault_bin());
    c.args(args)
        .env_remove("VAULT_REPO")
        .env_remove("SSH_AUTH_SOCK");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run vault").into()
}

/// A JSON array of strings.
pub fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// Runs `vault ARGS` and insists on exit code `code`.
pub fn vault_ok(args: &[&str], code: i32) -> Run {
    let r = vault(args);
    assert_eq!(
        r.code, code,
        "vault {args:?} exited {} (wanted {code})\nstdout: {}\nstderr: {}",
        r.code, r.stdout, r.stderr
    );
    r
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 test path")
}

/// Writes a file, creating parents.
pub fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, data).unwrap();
}

/// Sets a path's mtime (seconds + nanoseconds), not following symlinks.
pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as _,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    // SAFETY: valid C string and timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

/// What a tree looks like: path -> (type, mode, content or target, mtime in nanoseconds).
pub type TreeShape = BTreeMap<String, (char, u32, Vec<u8>, i64)>;

/// Describes every path below `root` (not `root` itself).
pub fn shape(root: &Path) -> TreeShape {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut TreeShape) {
        let mut names: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let m = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (t, data) = if m.file_type().is_symlink() {
                (
                    'l',
                    fs::read_link(&path)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if m.is_dir() {
                ('d', Vec::new())
            } else if std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()) {
                ('p', Vec::new())
            } else {
                ('f', fs::read(&path).unwrap())
            };
            let mode = if t == 'l' { 0 } else { m.mode() & 0o7777 };
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            out.insert(rel, (t, mode, data, if t == 'l' { 0 } else { mtime }));
            if t == 'd' {
                walk(root, &path, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Asserts two trees are identical, naming the first difference.
pub fn assert_same_tree(want: &Path, got: &Path) {
    let (a, b) = (shape(want), shape(got));
    for (k, v) in &a {
        match b.get(k) {
            None => panic!("{k} is missing from {}", got.display()),
            Some(w) if w != v => panic!(
                "{k} differs: want type {} mode {:o} mtime {} ({} bytes), got type {} mode {:o} mtime {} ({} bytes)",
                v.0, v.1, v.3, v.2.len(), w.0, w.1, w.3, w.2.len()
            ),
            _ => {}
        }
    }
    for k in b.keys() {
        assert!(a.contains_key(k), "{k} is extra in {}", got.display());
    }
}

/// Restores the newest snapshot of `repo` into `target` and asserts it equals `src`.
pub fn assert_latest_restores(repo: &Path, src: &Path, target: &Path) {
    vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(repo),
            "--target",
            p(target),
        ],
        0,
    );
    assert_same_tree(src, target);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// In CI a test that needs root must fail rather than skip.
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} needs root, and CI is set"
    );
    eprintln!("skipping {what}: needs root");
    false
}

/// Member names of a tar archive, as GNU tar lists them.
pub fn tar_list(archive: &Path) -> Vec<String> {
    let o = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -tf {}: {}",
        archive.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A tree with every kind of member, with fixed mtimes.
pub fn rich_tree(src: &Path) {
    write(src.join("top.txt"), "top level\n");
    write(src.join("exec.sh"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(src.join("empty.txt"), "");
    write(src.join("nested/deeper/leaf.txt"), "leaf\n");
    write(
        src.join("nested/big.bin"),
        (0..2_500_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    write(src.join("dup/one.txt"), "same bytes\n");
    write(src.join("dup/two.txt"), "same bytes\n");
    write(src.join("数据/报告.txt"), "非 ASCII 名字\n");
    let long = "a-rather-long-folder-name-that-goes-on/".repeat(4) + "and-a-long-file-name-too.txt";
    write(src.join(&long), "long path\n");
    fs::create_dir_all(src.join("empty/folder")).unwrap();
    symlink("top.txt", src.join("link-to-top")).unwrap();
    symlink("../nowhere/at/all", src.join("nested/dangling")).unwrap();
    // Fixed mtimes, folders last so that setting a file's time does not move its folder's.
    let mut all: Vec<_> = shape(src).keys().cloned().collect();
    all.sort_by_key(|k| std::cmp::Reverse(k.matches('/').count()));
    for (i, k) in all.iter().enumerate() {
        set_mtime(&src.join(k), 1_700_000_000 + (i as i64 % 3), 0);
    }
    set_mtime(&src.join("dup/one.txt"), 1_700_000_000, 0);
    set_mtime(&src.join("dup/two.txt"), 1_700_000_000, 0);
    set_mtime(&src.join("dup"), 1_700_000_000, 0);
}

/// `vault backup SRC --repo REPO --json --full-on never EXTRA…`, insisting on exit `code`.
pub fn backup_json(src: &Path, repo: &Path, extra: &[&str], code: i32) -> serde_json::Value {
    let mut args = vec![
        "backup",
        p(src),
        "--repo",
        p(repo),
        "--json",
        "--full-on",
        "never",
    ];
    args.extend_from_slice(extra);
    vault_ok(&args, code).json()
}

/// How many `.partial` archives a repository holds (a backup in progress or interrupted).
pub fn partials(repo: &Path) -> usize {
    fs::read_dir(repo.join("archives"))
        .map(|it| {
            it.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".partial")
            })
            .count()
        })
        .unwrap_or(0)
}

/// A tmpfs of `size` (e.g. "16m") mounted on `dir` (created), unmounted when dropped. Needs root.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A small deterministic generator, so that a failing kill trial can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// The kill harnesses' trial count (VAULT_KILL_TRIALS, else `default_trials`) and seed
/// (VAULT_KILL_SEED, else a fixed one).
pub fn kill_trials_and_seed(default_trials: usize) -> (usize, u64) {
    let trials = std::env::var("VAULT_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_trials);
    let seed = std::env::var("VAULT_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261126);
    (trials, seed)
}

/// A file of `len` random bytes (incompressible).
pub fn noise_file(path: &Path, len: usize) {
    let mut buf = vec![0u8; len];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut buf).unwrap();
    write(path, buf);
}

/// The ids of a repository's snapshots, oldest first (none when it has no vault.db yet).
pub fn snapshot_ids(repo: &Path) -> Vec<String> {
    if !repo.join("vault.db").exists() {
        return Vec::new();
    }
    let j = vault_ok(&["snapshots", "--repo", p(repo), "--json"], 0).json();
    j.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// `cp -a FROM TO`: a copy of a tree's state, to compare a restore with later.
pub fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}
