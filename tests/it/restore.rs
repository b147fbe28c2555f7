//! `vault restore`, `check`, `forget`: exact point-in-time round trips, hostile archives and
//! manifests, damaged archives, pruning.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn id(v: &serde_json::Value) -> String {
    v["snapshot"].as_str().unwrap().to_string()
}

fn restore(repo: &Path, snap: &str, target: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["restore", snap, "--repo", p(repo), "--target", p(target)];
    args.extend_from_slice(extra);
    vault(&args)
}

#[test]
fn every_snapshot_of_a_chain_restores_exactly() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    rich_tree(&src);
    write(src.join("hard/a"), "hard linked");
    fs::hard_link(src.join("hard/a"), src.join("hard/b")).unwrap();
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    let s0 = id(&backup_json(&src, &repo, &[], 0));
    copy_tree(&src, &t.path().join("state0"));

    // Every kind of change.
    write(src.join("top.txt"), "top level, edited\n");
    write(src.join("added/new.txt"), "new file\n");
    fs::remove_file(src.join("empty.txt")).unwrap();
    fs::rename(
        src.join("nested/deeper/leaf.txt"),
        src.join("nested/leaf-renamed.txt"),
    )
    .unwrap();
    fs::set_permissions(src.join("exec.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&src.join("dup/one.txt"), 1_650_000_000, 987_654_321);
    fs::create_dir(src.join("fresh-empty")).unwrap();
    symlink("nested/big.bin", src.join("link-to-big")).unwrap();
    fs::remove_dir_all(src.join("empty/folder")).unwrap();
    write(src.join("empty/folder"), "a file where a folder was\n");
    let s1 = id(&backup_json(&src, &repo, &[], 0));
    copy_tree(&src, &t.path().join("state1"));

    // (A second apart, so that --at below can tell s1 from s2.)
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // More: revert, remove a tree, change a large file, a file becomes a symlink.
    write(src.join("top.txt"), "top level\n");
    fs::remove_dir_all(src.join("数据")).unwrap();
    let mut big = fs::read(src.join("nested/big.bin")).unwrap();
    big[1_000_000] ^= 0xff;
    big.extend_from_slice(b"grown");
    write(src.join("nested/big.bin"), big);
    fs::remove_file(src.join("dup/two.txt")).unwrap();
    symlink("one.txt", src.join("dup/two.txt")).unwrap();
    let r2 = backup_json(&src, &repo, &[], 0);
    assert_eq!(r2["kind"], "incremental");
    let s2 = id(&r2);
    copy_tree(&src, &t.path().join("state2"));

    for (i, snap) in [&s0, &s1, &s2].into_iter().enumerate() {
        let target = t.path().join(format!("restored{i}"));
        let r = restore(&repo, snap, &target, &["--json"]);
        assert_eq!(r.code, 0, "{r:?}");
        assert_same_tree(&t.path().join(format!("state{i}")), &target);
        let j = r.json();
        assert!(j["errors"].as_array().unwrap().is_empty());
    }
    // Hard links inside the source come back as hard links.
    let (a, b) = (
        fs::metadata(t.path().join("restored2/hard/a")).unwrap(),
        fs::metadata(t.path().join("restored2/hard/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());

    // --include restores just a subtree (and the folders above it).
    let sub = t.path().join("subtree");
    let r = restore(&repo, &s2, &sub, &["--include", "nested/deeper"]);
    assert_eq!(r.code, 0, "{r:?}");
    let got: Vec<String> = shape(&sub).keys().cloned().collect();
    assert_eq!(got, ["nested", "nested/deeper"]);

    // A non-empty target is refused without --force.
    let newest = t.path().join("restored2");
    let r = restore(&repo, &s0, &newest, &[]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("not empty") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    // --force --delete over the newer tree reproduces the older snapshot.
    let r = restore(&repo, &s0, &newest, &["--force", "--delete"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_same_tree(&t.path().join("state0"), &newest);

    // --at picks the newest snapshot at or before a time.
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let t1 = list[1]["time"].as_str().unwrap().to_string();
    let at = t.path().join("at");
    let r = vault_ok(
        &[
            "restore",
            "--at",
            &t1,
            "--repo",
            p(&repo),
            "--target",
            p(&at),
            "--json",
        ],
        0,
    );
    assert_eq!(r.json()["snapshot"], s1.as_str());
    let r = vault(&[
        "restore",
        "--at",
        "2001-01-01",
        "--repo",
        p(&repo),
        "--target",
        p(&at),
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no snapshot matches 'at or before 2001"),
        "{}",
        r.stderr
    );

    // A dry run writes nothing.
    let dry = t.path().join("dry");
    let r = vault_ok(
        &[
            "restore",
            &s2,
            "--repo",
            p(&repo),
            "--target",
            p(&dry),
            "--dry-run",
            "--json",
        ],
        0,
    );
    assert!(r.json()["would_write"].as_array().unwrap().len() > 10);
    assert!(!dry.exists());
}

#[test]
fn setuid_bits_are_kept_by_root_and_cleared_with_no_setid_or_without_root() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("tool"), "#!/bin/sh\n");
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    backup_json(&src, &repo, &[], 0);
    let restore = |name: &str, extra: &[&str]| -> u32 {
        let target = t.path().join(name);
        let mut args = vec![
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ];
        args.extend_from_slice(extra);
        vault_ok(&args, 0);
        fs::metadata(target.join("tool")).unwrap().mode() & 0o7777
    };
    assert_eq!(restore("stripped", &["--no-setid"]), 0o755);
    // Root: exact by default (as GNU tar -p); anyone else: always cleared.
    let want = if is_root() { 0o4755 } else { 0o755 };
    assert_eq!(restore("plain", &[]), want);
    assert_eq!(restore("old-flag", &["--preserve-setid"]), want);
}

/// The folder the hostile fixtures stand in for.
fn hostile_source(t: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (src, repo) = (t.join("src"), t.join("repo"));
    write(src.join("good.txt"), "good\n");
    write(src.join("sub/inner.txt"), "inner\n");
    let r = backup_json(&src, &repo, &[], 0);
    let archive = repo.join(r["archive"].as_str().unwrap());
    (src, repo, archive)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile")
}

/// Nothing outside `target` was touched and the target holds only what the manifest lists.
fn assert_contained(work: &Path, target: &Path) {
    assert_eq!(
        fs::read_dir(work.join("outside")).unwrap().count(),
        0,
        "something was written to outside/"
    );
    for p in [
        work.join("escape.txt"),
        work.parent().unwrap().join("escape.txt"),
        target.join("escape.txt"),
    ] {
        assert!(fs::symlink_metadata(&p).is_err(), "{} exists", p.display());
    }
    assert!(fs::symlink_metadata("/vault-hostile-fixture").is_err());
    if target.exists() {
        for (path, (kind, ..)) in shape(target) {
            assert!(
                ["good.txt", "sub", "sub/inner.txt"].contains(&path.as_str()),
                "unexpected {path} in the target"
            );
            if path == "sub" {
                assert_eq!(kind, 'd', "sub must be a real folder");
            }
        }
    }
}

#[test]
fn hostile_archives_are_refused_and_nothing_escapes_the_target() {
    let cases = [
        ("dotdot", "not found in archive"),
        ("absolute", "not found in archive"),
        ("symlink_file", "digest mismatch"),
        ("symlink_dir", "not found in archive"),
        ("hardlink_outside", "not a regular file"),
        ("pax_size", "PAX size 600 disagrees with its header's 6"),
        ("unknown_member", "not found in archive"),
        ("digest_mismatch", "digest mismatch"),
        ("device", "not a regular file"),
    ];
    let t = tempfile::tempdir().unwrap();
    let (_src, repo, archive) = hostile_source(t.path());
    let work = t.path().join("work");
    fs::create_dir_all(work.join("outside")).unwrap();
    for (case, expect) in cases {
        fs::copy(fixtures().join(format!("{case}.tar.gz")), &archive).unwrap();
        let target = work.join(format!("target_{case}"));
        let r = restore(&repo, "latest", &target, &[]);
        assert_eq!(r.code, 3, "{case}: {r:?}");
        assert!(
            r.stderr.contains("sub/inner.txt") && r.stderr.contains(expect),
            "{case}: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("good.txt:"),
            "{case}: good.txt must restore: {}",
            r.stderr
        );
        assert_contained(&work, &target);
        assert_eq!(
            fs::read(target.join("good.txt")).unwrap(),
            b"good\n",
            "{case}"
        );
        assert!(
            !target.join("sub/inner.txt").exists(),
            "{case}: a refused file must not be left"
        );
    }
    // Modes come from the manifest, never from the archive.
    fs::copy(fixtures().join("setuid_member.tar.gz"), &archive).unwrap();
    let target = work.join("target_setuid");
    let r = restore(&repo, "latest", &target, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        fs::metadata(target.join("sub/inner.txt")).unwrap().mode() & 0o7777,
        0o644
    );
}

fn tamper(repo: &Path, sql: &str) {
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2])\nc.commit()\n";
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(repo.join("vault.db"))
        .arg(sql)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn tampered_manifests_are_refused() {
    let abs = "/tmp/vault-hostile-abs.txt";
    let cases = [
        ("UPDATE entries SET path = CAST('../../escape.txt' AS BLOB) WHERE path = CAST('good.txt' AS BLOB)", "'..' component"),
        (&*format!("UPDATE entries SET path = CAST('{abs}' AS BLOB) WHERE path = CAST('good.txt' AS BLOB)"), "is absolute"),
        ("UPDATE entries SET kind = 2, target = CAST('../../outside' AS BLOB) WHERE path = CAST('sub' AS BLOB)", "not a folder"),
    ];
    for (sql, expect) in cases {
        let t = tempfile::tempdir().unwrap();
        let (_src, repo, _archive) = hostile_source(t.path());
        let work = t.path().join("work");
        fs::create_dir_all(work.join("outside")).unwrap();
        tamper(&repo, sql);
        let target = work.join("target");
        let r = restore(&repo, "latest", &target, &[]);
        assert_eq!(r.code, 1, "{sql}: {r:?}");
        assert!(
            r.stderr.contains(expect) && r.stderr.contains("refusing"),
            "{sql}: {}",
            r.stderr
        );
        assert_contained(&work, &target);
        assert!(!Path::new(abs).exists());
        assert!(
            !target.exists() || fs::read_dir(&target).unwrap().count() == 0,
            "nothing restored from a refused manifest"
        );
    }
}

#[test]
fn a_flipped_byte_is_found_and_other_chains_still_restore() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let (a, b) = (t.path().join("alpha"), t.path().join("beta"));
    let noise = |n: usize| {
        let mut v = vec![0u8; n];
        std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut v).unwrap();
        v
    };
    for i in 0..4 {
        write(a.join(format!("f{i}.bin")), noise(300_000));
        write(b.join(format!("g{i}.bin")), noise(300_000));
    }
    let a_full = backup_json(&a, &repo, &[], 0);
    write(a.join("later.bin"), noise(1000));
    let a_incr = backup_json(&a, &repo, &[], 0);
    let b_full = backup_json(&b, &repo, &[], 0);
    vault_ok(&["check", "--repo", p(&repo), "--read-data"], 0);

    let archive = repo.join(a_full["archive"].as_str().unwrap());
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&archive, bytes).unwrap();

    for extra in [&[][..], &["--read-data"][..]] {
        let mut args = vec!["check", "--repo", p(&repo), "--json"];
        args.extend_from_slice(extra);
        let r = vault(&args);
        assert_eq!(r.code, 1, "{r:?}");
        let j = r.json();
        let affected = strs(&j["affected_snapshots"]);
        assert_eq!(affected, [id(&a_full), id(&a_incr)], "{j}");
        assert!(
            r.stderr.contains(a_full["archive"].as_str().unwrap()),
            "{}",
            r.stderr
        );
    }
    let r = restore(&repo, &id(&a_incr), &t.path().join("ra"), &[]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stderr.contains(".bin")
            && r.stderr.contains(
                a_full["archive"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("archives/")
            ),
        "{}",
        r.stderr
    );
    let rb = t.path().join("rb");
    vault_ok(
        &[
            "restore",
            &id(&b_full),
            "--repo",
            p(&repo),
            "--target",
            p(&rb),
        ],
        0,
    );
    assert_same_tree(&b, &rb);
}

#[test]
fn check_removes_partials_and_forget_drops_whole_chains() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    let mut fulls = Vec::new();
    for round in 0..3 {
        write(
            src.join(format!("round{round}.txt")),
            format!("round {round}"),
        );
        fulls.push(backup_json(&src, &repo, &["--full"], 0));
        write(
            src.join(format!("extra{round}.txt")),
            format!("extra {round}"),
        );
        backup_json(&src, &repo, &[], 0);
    }
    write(
        repo.join("archives/src_full_20000101T000000Z_dead.tar.gz.partial"),
        "half",
    );
    let r = vault_ok(&["check", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(strs(&r["partials_removed"]).len(), 1);
    assert!(!repo
        .join("archives/src_full_20000101T000000Z_dead.tar.gz.partial")
        .exists());

    let before = fs::read_dir(repo.join("archives")).unwrap().count();
    let dry = vault_ok(
        &[
            "forget",
            "--repo",
            p(&repo),
            "--keep-fulls",
            "1",
            "--dry-run",
            "--json",
        ],
        0,
    )
    .json();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(fs::read_dir(repo.join("archives")).unwrap().count(), before);
    let r = vault_ok(
        &["forget", "--repo", p(&repo), "--keep-fulls", "1", "--json"],
        0,
    )
    .json();
    assert_eq!(r["removed"].as_array().unwrap().len(), 2);
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], fulls[2]["snapshot"]);
    assert_eq!(list[0]["parent"], serde_json::Value::Null);
    assert_eq!(fs::read_dir(repo.join("archives")).unwrap().count(), 2);
    vault_ok(&["check", "--repo", p(&repo), "--read-data"], 0);
    assert_latest_restores(&repo, &src, &t.path().join("restored"));
    vault_ok(&["forget", "--repo", p(&repo), "--keep-fulls", "0"], 2);
}

/// A manifest (tampered with, or pulled from a hostile remote) whose archive name points outside
/// archives/: every command refuses it before touching a file; nothing outside is read or deleted.
#[test]
fn archive_names_outside_archives_are_refused_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "-q"], 0);
    write(src.join("a.txt"), "b");
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "--full", "-q"], 0);
    let victim = t.path().join("victim.tar.gz");
    write(&victim, "not yours");
    tamper(
        &repo,
        "UPDATE snapshots SET archive = '../../victim.tar.gz' WHERE seq = 1",
    );
    for args in [
        vec!["forget", "--keep-fulls", "1"],
        vec!["check"],
        vec!["snapshots"],
        vec!["restore", "latest", "--target", "r"],
    ] {
        let mut a = args.clone();
        let target = t.path().join("r");
        let tp = p(&target).to_string();
        if let Some(i) = a.iter().position(|x| *x == "r") {
            a[i] = &tp;
        }
        a.extend(["--repo", p(&repo)]);
        let r = vault(&a);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("is damaged") && r.stderr.contains("archive name"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "not yours");
    }
}
