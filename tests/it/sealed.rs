//! Encrypted pushes (`--encrypt-to`) to a real OpenSSH SFTP server and an rclone local remote:
//! nothing readable on the remote, pulls and `check --remote` with the right key, clear
//! refusals with a wrong or no key, Debian's `age` tool reading an archive by hand, and a killed
//! push that leaves the previous state.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::Sshd;

const NAMES: [&str; 3] = [
    "alpha-secret-name.txt",
    "beta-confidential.conf",
    "gamma-private-notes.md",
];
const CONTENT: &str = "the-known-content-string-4711";

fn keygen(path: &Path) -> String {
    let r = vault_ok(&["keygen", p(path), "--json"], 0).json();
    let m = fs::metadata(path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
        0o600
    );
    r["recipient"].as_str().unwrap().to_string()
}

fn ssh_flags(s: &Sshd, kh: &Path) -> Vec<String> {
    s.known_hosts(kh);
    let id = s.path("id").display().to_string();
    let kh = kh.display().to_string();
    vec![
        "-i".into(),
        id,
        "--known-hosts".into(),
        kh,
        "--no-agent".into(),
    ]
}

fn run(args: &[&str], extra: &[String], env: &[(&str, &str)]) -> Run {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(extra.iter().map(String::as_str));
    vault_env(&a, env)
}

fn backup(src: &Path, repo: &Path) {
    vault_ok(
        &[
            "backup",
            p(src),
            "--repo",
            p(repo),
            "--full-on",
            "never",
            "-q",
        ],
        0,
    );
}

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// No file on the remote is readable: each starts with the age header, none with a gzip or
/// zstd magic, and no file name or content of the source appears in any name or byte.
fn assert_nothing_readable(remote: &Path) {
    let all = files(remote);
    assert!(all.len() >= 3, "{all:?}");
    for f in &all {
        let bytes = fs::read(f).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1\n"),
            "{}",
            f.display()
        );
        assert!(!bytes.starts_with(&[0x1f, 0x8b]) && !bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        let name = f.display().to_string();
        for needle in NAMES.iter().chain([&CONTENT]) {
            assert!(!name.contains(needle), "{name}");
            let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{needle} in {name}");
        }
    }
}

fn source(t: &Path) -> (PathBuf, PathBuf) {
    let (src, repo) = (t.join("data"), t.join("repo"));
    rich_tree(&src);
    for (i, n) in NAMES.iter().enumerate() {
        write(
            src.join(format!("d{i}/{n}")),
            format!("{CONTENT} in file {i}\n"),
        );
    }
    backup(&src, &repo);
    write(
        src.join("d0").join(NAMES[0]),
        format!("{CONTENT} changed\n"),
    );
    backup(&src, &repo);
    (src, repo)
}

#[test]
fn encrypted_pushes_leak_nothing_and_only_the_right_key_reads_them_back() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = source(t.path());
    let key = t.path().join("key.txt");
    let recipient = keygen(&key);
    let flags = ssh_flags(&s, &t.path().join("kh"));
    let sftp_dir = t.path().join("offsite-sftp");
    let dest = format!("sftp://root@127.0.0.1:{}{}", s.port, sftp_dir.display());
    let r = run(
        &[
            "push",
            &dest,
            "--repo",
            p(&repo),
            "--encrypt-to",
            &recipient,
            "--json",
        ],
        &flags,
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["sent"].as_array().unwrap().len(), 2);
    assert_nothing_readable(&sftp_dir);
    // rclone, with the recipient from a file.
    let rfile = t.path().join("recipients.txt");
    fs::write(&rfile, format!("# the offline key\n{recipient}\n")).unwrap();
    let rc_dir = t.path().join("offsite-rclone");
    let rc = format!("rclone:vtest:{}", rc_dir.display());
    let env = [("RCLONE_CONFIG_VTEST_TYPE", "local")];
    let r = vault_env(
        &[
            "push",
            &rc,
            "--repo",
            p(&repo),
            "--recipients-file",
            p(&rfile),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_nothing_readable(&rc_dir);
    // The right key: a pull that checks clean and restores the source exactly.
    let pulled = t.path().join("pulled");
    let r = run(
        &[
            "pull",
            &dest,
            "--repo",
            p(&pulled),
            "--age-identity",
            p(&key),
        ],
        &flags,
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    vault_ok(&["check", "--repo", p(&pulled), "--read-data", "-q"], 0);
    assert_latest_restores(&pulled, &src, &t.path().join("restored"));
    let r = vault_env(
        &[
            "check",
            "--remote",
            &rc,
            "--age-identity",
            p(&key),
            "--json",
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(
        (j["encrypted"].clone(), j["archives"].clone()),
        (true.into(), 2.into()),
        "{j}"
    );
    wrong_or_no_key(t.path(), &rc, &env);
    by_hand_with_age(t.path(), &rc_dir, &repo, &key);
}

/// A wrong key is exit 1 with one line, no key exit 2; the target is never created.
fn wrong_or_no_key(t: &Path, rc: &str, env: &[(&str, &str)]) {
    let other = t.join("other.txt");
    keygen(&other);
    let target = t.join("not-pulled");
    let r = vault_env(
        &[
            "pull",
            rc,
            "--repo",
            p(&target),
            "--age-identity",
            p(&other),
        ],
        env,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("none of the identities in"),
        "{}",
        r.stderr
    );
    assert!(!target.exists());
    let r = vault_env(&["pull", rc, "--repo", p(&target)], env);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("give --age-identity FILE"),
        "{}",
        r.stderr
    );
    assert!(!target.exists());
    let r = vault_env(&["check", "--remote", rc, "--age-identity", p(&other)], env);
    assert_eq!(r.code, 1, "{r:?}");
}

/// Debian's `age -d` and GNU tar read the full's archive into the tree `vault restore` gives.
fn by_hand_with_age(t: &Path, remote: &Path, repo: &Path, key: &Path) {
    let list = vault_ok(&["snapshots", "--repo", p(repo), "--json"], 0).json();
    let full = &list[0];
    let name = full["archive"].as_str().unwrap();
    let sealed = remote.join(format!("{name}.age"));
    let by_hand = t.join("by-hand");
    fs::create_dir_all(&by_hand).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("age -d -i \"$1\" \"$2\" | tar -xzf - -C \"$3\"")
        .args(["sh", p(key), p(&sealed), p(&by_hand)])
        .status()
        .expect("age (scripts/test.sh installs it)");
    assert!(st.success());
    let restored = t.join("restored-full");
    let id = full["id"].as_str().unwrap();
    vault_ok(
        &[
            "restore",
            id,
            "--repo",
            p(repo),
            "--target",
            p(&restored),
            "-q",
        ],
        0,
    );
    assert_same_tree(&restored, &by_hand.join("data"));
}

#[test]
fn a_second_push_sends_only_the_new_archive_and_a_killed_one_leaves_the_previous_state() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    write(src.join("small.txt"), "first");
    backup(&src, &repo);
    let key = t.path().join("key.txt");
    let recipient = keygen(&key);
    let rc_dir = t.path().join("rc");
    let rc = format!("rclone:vtest:{}", rc_dir.display());
    let env = [("RCLONE_CONFIG_VTEST_TYPE", "local")];
    let push = [
        "push",
        &rc,
        "--repo",
        p(&repo),
        "--encrypt-to",
        &recipient,
        "--json",
    ];
    assert_eq!(vault_env(&push, &env).code, 0);
    // An incremental with 120 MB that does not compress, pushed and killed mid-archive.
    let mut noise = vec![0u8; 40 << 20];
    for i in 0..3 {
        std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut noise)
            .unwrap();
        write(src.join(format!("blob{i}.bin")), &noise);
    }
    backup(&src, &repo);
    let manifest_before = fs::read(rc_dir.join("vault.db.age")).unwrap();
    let old_copy = t.path().join("repo-old");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&repo)
        .arg(&old_copy)
        .status()
        .unwrap();
    assert!(st.success());
    let mut child = Command::new(vault_bin())
        .args(push)
        .env("RCLONE_CONFIG_VTEST_TYPE", "local")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let partial = || {
        fs::read_dir(rc_dir.join("archives"))
            .unwrap()
            .flatten()
            .any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.contains(".partial-push") || n.contains(".partial")
            })
    };
    let start = Instant::now();
    while !partial() {
        assert!(start.elapsed() < Duration::from_secs(60), "no upload began");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        fs::read(rc_dir.join("vault.db.age")).unwrap(),
        manifest_before
    );
    // The remote still gives the previous state.
    let before = t.path().join("before");
    let r = vault_env(
        &["pull", &rc, "--repo", p(&before), "--age-identity", p(&key)],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let n = vault_ok(&["snapshots", "--repo", p(&before), "--json"], 0).json();
    assert_eq!(n.as_array().unwrap().len(), 1, "{n}");
    vault_ok(&["check", "--repo", p(&before), "--read-data", "-q"], 0);
    // Pushed again: only the new archive and the manifest travel.
    let r = vault_env(&push, &env);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["sent"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["skipped"], 1, "{j}");
    assert_ne!(
        fs::read(rc_dir.join("vault.db.age")).unwrap(),
        manifest_before
    );
    let after = t.path().join("after");
    let r = vault_env(
        &["pull", &rc, "--repo", p(&after), "--age-identity", p(&key)],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    vault_ok(&["check", "--repo", p(&after), "--read-data", "-q"], 0);
    assert_latest_restores(&after, &src, &t.path().join("restored"));
    // An older copy of the repository may not push its manifest over the newer one.
    let r = vault_env(
        &[
            "push",
            &rc,
            "--repo",
            p(&old_copy),
            "--encrypt-to",
            &recipient,
        ],
        &env,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("did not push there last"), "{}", r.stderr);
}
