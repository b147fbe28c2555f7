//! `vault backup`, `snapshots`, `ls`, `diff`: change detection, archive contents, policy,
//! error handling. Every test works on its own temporary folders.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;

use crate::common::*;

#[test]
fn incremental_records_exactly_the_changes() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    write(src.join("a.txt"), "alpha\n");
    write(src.join("docs/old.txt"), "to be renamed\n");
    write(src.join("keep.txt"), "chmod me\n");
    write(src.join("touch.txt"), "touch me\n");
    write(src.join("gone.txt"), "delete me\n");
    write(src.join("big.bin"), vec![7u8; 3 << 20]);

    let full = backup_json(&src, &repo, &[], 0);
    assert_eq!(full["kind"], "full");
    assert_eq!(full["stats"]["new"], 7); // 6 files + docs
    let full_id = full["snapshot"].as_str().unwrap().to_string();

    // Every kind of change.
    write(src.join("a.txt"), "alpha, edited\n");
    write(src.join("new.txt"), "brand new\n");
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::rename(src.join("docs/old.txt"), src.join("docs/renamed.txt")).unwrap();
    fs::set_permissions(src.join("keep.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&src.join("touch.txt"), 1_600_000_000, 123);
    fs::create_dir(src.join("emptydir")).unwrap();
    symlink("a.txt", src.join("newlink")).unwrap();

    let incr = backup_json(&src, &repo, &[], 0);
    assert_eq!(incr["kind"], "incremental");
    let s = &incr["stats"];
    assert_eq!(s["new"], 4, "{incr}");
    assert_eq!(s["changed"], 4, "{incr}"); // a.txt, keep.txt, touch.txt, docs
    assert_eq!(s["deleted"], 2, "{incr}");
    assert_eq!(s["unchanged"], 1, "{incr}"); // big.bin
    let incr_id = incr["snapshot"].as_str().unwrap().to_string();

    let d = vault_ok(
        &["diff", &full_id, &incr_id, "--repo", p(&repo), "--json"],
        0,
    )
    .json();
    assert_eq!(
        strs(&d["added"]),
        ["docs/renamed.txt", "emptydir", "new.txt", "newlink"]
    );
    assert_eq!(
        strs(&d["modified"]),
        ["a.txt", "docs", "keep.txt", "touch.txt"]
    );
    assert_eq!(strs(&d["deleted"]), ["docs/old.txt", "gone.txt"]);
    let what = |path: &str| -> Vec<String> {
        let c = d["changes"].as_array().unwrap();
        let m = c.iter().find(|m| m["path"] == path).unwrap();
        strs(&m["what"])
    };
    assert_eq!(what("touch.txt"), ["mtime"]);
    assert!(what("keep.txt").contains(&"mode".to_string()));
    assert!(what("a.txt").contains(&"content".to_string()));

    // Only new content is stored: not the touched, chmodded or renamed files.
    let archive = repo.join(incr["archive"].as_str().unwrap());
    let mut members = tar_list(&archive);
    members.sort();
    assert_eq!(members, ["data/a.txt", "data/new.txt"]);

    // A no-change incremental reads nothing and stores nothing.
    let none = backup_json(&src, &repo, &[], 0);
    assert_eq!(none["kind"], "incremental");
    assert_eq!(none["stats"]["bytes_read"], 0);
    assert_eq!(none["stats"]["bytes_stored"], 0);
    assert_eq!(none["archive"], serde_json::Value::Null);
    assert_eq!(none["stats"]["new"], 0);
    assert_eq!(none["stats"]["changed"], 0);
    assert_eq!(none["stats"]["deleted"], 0);
    let none_id = none["snapshot"].as_str().unwrap().to_string();
    let d = vault_ok(
        &["diff", &incr_id, &none_id, "--repo", p(&repo), "--json"],
        0,
    )
    .json();
    assert!(d["added"].as_array().unwrap().is_empty());
    assert!(d["modified"].as_array().unwrap().is_empty());
    assert!(d["deleted"].as_array().unwrap().is_empty());

    // A reverted file's content is already in the chain: not stored again.
    write(src.join("a.txt"), "alpha\n");
    let rev = backup_json(&src, &repo, &[], 0);
    assert_eq!(rev["stats"]["changed"], 1);
    assert_eq!(rev["archive"], serde_json::Value::Null, "{rev}");

    // snapshots lists all four, oldest first, parents linked.
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["id"], full_id.as_str());
    assert_eq!(list[0]["parent"], serde_json::Value::Null);
    assert_eq!(list[1]["parent"], full_id.as_str());
    assert_eq!(list[1]["kind"], "incremental");
    for key in [
        "id",
        "time",
        "source",
        "kind",
        "parent",
        "archive",
        "files",
        "bytes_stored",
    ] {
        assert!(list[0].get(key).is_some(), "snapshots --json lacks {key}");
    }

    // ls of the full still shows the old tree.
    let ls = vault_ok(&["ls", &full_id[..6], "--repo", p(&repo), "--json"], 0).json();
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"gone.txt") && paths.contains(&"docs/old.txt"));
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let link = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "newlink")
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "a.txt");
}

#[test]
fn full_archive_extracts_identically_with_gnu_tar_and_python() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("proj"), t.path().join("repo"));
    rich_tree(&src);
    let r = backup_json(&src, &repo, &[], 0);
    let archive = repo.join(r["archive"].as_str().unwrap());
    assert!(archive.to_str().unwrap().ends_with(".tar.gz"));
    let name = archive.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("proj_full_"), "{name}");

    // The duplicate is a hard link member, stored once.
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&archive)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("proj/dup/two.txt link to proj/dup/one.txt"),
        "{listing}"
    );

    let gnu = t.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&gnu)
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_tree(&src, &gnu.join("proj"));

    let py = t.path().join("py");
    fs::create_dir(&py).unwrap();
    let script = "import sys, tarfile\n\
        with tarfile.open(sys.argv[1]) as t:\n    t.extractall(sys.argv[2], filter='fully_trusted')\n";
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&archive)
        .arg(&py)
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_tree(&src, &py.join("proj"));

    // bsdtar (libarchive) and gzip itself read it too: one ordinary gzip member.
    let bsd = t.path().join("bsd");
    fs::create_dir(&bsd).unwrap();
    let st = Command::new("bsdtar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&bsd)
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_tree(&src, &bsd.join("proj"));
    let st = Command::new("gzip")
        .arg("-t")
        .arg(&archive)
        .status()
        .unwrap();
    assert!(st.success());

    // zstd archives extract with GNU tar too.
    let rz = backup_json(
        &src,
        &repo,
        &["--full", "--compression", "zstd", "--level", "5"],
        0,
    );
    let az = repo.join(rz["archive"].as_str().unwrap());
    assert!(az.to_str().unwrap().ends_with(".tar.zst"));
    let zd = t.path().join("zst");
    fs::create_dir(&zd).unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&az)
        .arg("-C")
        .arg(&zd)
        .status()
        .unwrap();
    assert!(st.success());
    assert_same_tree(&src, &zd.join("proj"));
}

#[test]
fn two_backups_in_one_day_keep_both_archives_and_record_dangling_symlinks() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("security"), t.path().join("backup"));
    write(src.join("passwd"), "root:x:0:0\n");
    symlink("/does/not/exist", src.join("dangling")).unwrap();
    let a = backup_json(&src, &repo, &["--full"], 0);
    let b = backup_json(&src, &repo, &["--full"], 0);
    assert_ne!(a["archive"], b["archive"]);
    for r in [&a, &b] {
        assert!(repo.join(r["archive"].as_str().unwrap()).is_file());
        assert!(r["archive"]
            .as_str()
            .unwrap()
            .starts_with("archives/security_full_"));
    }
    assert_eq!(fs::read_dir(repo.join("archives")).unwrap().count(), 2);
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let d = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "dangling")
        .unwrap();
    assert_eq!(d["type"], "symlink");
    assert_eq!(d["target"], "/does/not/exist");
}

#[test]
fn fatal_errors_exit_1_with_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let missing = t.path().join("no-such-folder");
    let r = vault_ok(&["backup", p(&missing), "--repo", p(&repo)], 1);
    assert!(
        r.stderr.contains("no-such-folder") && r.stderr.contains("No such file"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        !repo.exists(),
        "a failed backup must not create the repository"
    );

    // A repository path that cannot be created.
    let src = t.path().join("src");
    write(src.join("f"), "x");
    write(t.path().join("a-file"), "x");
    let bad = t.path().join("a-file/repo");
    let r = vault_ok(&["backup", p(&src), "--repo", p(&bad)], 1);
    assert!(
        r.stderr.contains("a-file/repo") && r.stderr.contains("Not a directory"),
        "{}",
        r.stderr
    );

    // A source that is a file.
    let r = vault_ok(&["backup", p(&src.join("f")), "--repo", p(&repo)], 1);
    assert!(r.stderr.contains("is not a directory"), "{}", r.stderr);

    // Usage errors exit 2.
    vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--compression",
            "rar",
        ],
        2,
    );
    vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--full-on",
            "someday",
        ],
        2,
    );
    vault_ok(
        &["backup", p(&src), "--repo", p(&repo), "--exclude", "a[b"],
        2,
    );
    vault_ok(&["backup", p(&src), "--repo", p(&repo), "--level", "42"], 2);
    vault_ok(
        &["backup", p(&src), "--repo", p(&repo), "--no-such-flag"],
        2,
    );
    vault_ok(&["backup", p(&src)], 2);
    vault_ok(&["ls", "latest", "--repo", p(&t.path().join("nothing"))], 1);
}

#[test]
fn read_only_repository_exits_1_and_keeps_earlier_snapshots() {
    if !require_root("mounting a tmpfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "16m");
    let repo = mnt.join("repo");
    let src = t.path().join("src");
    write(src.join("f.txt"), "first");
    backup_json(&src, &repo, &[], 0);
    write(src.join("g.txt"), "second");
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let r = vault_ok(
        &["backup", p(&src), "--repo", p(&repo), "--full-on", "never"],
        1,
    );
    assert!(r.stderr.contains(p(&repo)), "{}", r.stderr);
    assert!(
        r.stderr.to_lowercase().contains("read-only"),
        "{}",
        r.stderr
    );
    let st = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let leftovers: Vec<_> = fs::read_dir(repo.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // Disk full: a tree larger than the tmpfs.
    let mut noise = vec![0u8; 24 << 20];
    std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut noise).unwrap();
    write(src.join("huge.bin"), noise);
    let r = vault_ok(&["backup", p(&src), "--repo", p(&repo), "--full"], 1);
    assert!(r.stderr.contains("disk full"), "{}", r.stderr);
    let names: Vec<_> = fs::read_dir(repo.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no partial archive may remain: {names:?}");
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn unreadable_files_are_warnings_and_exit_3() {
    if !require_root("running vault as another user") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("ok.txt"), "readable");
    write(src.join("secret.txt"), "not for nobody");
    fs::create_dir(src.join("locked")).unwrap();
    write(src.join("locked/inside.txt"), "x");
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            vault_bin(),
            "backup",
        ])
        .args([p(&src), "--repo", p(&repo), "--json"])
        .output()
        .unwrap();
    let r = Run::from(out);
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    let warned: Vec<&str> = j["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["path"].as_str().unwrap())
        .collect();
    assert!(
        warned.contains(&"secret.txt") && warned.contains(&"locked"),
        "{warned:?}"
    );
    assert!(j["snapshot"].is_string());
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"ok.txt") && !paths.contains(&"secret.txt"),
        "{paths:?}"
    );
}

#[test]
fn fifos_are_recorded_and_sockets_skipped_with_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("f"), "x");
    let fifo = std::ffi::CString::new(p(&src.join("pipe"))).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let r = backup_json(&src, &repo, &[], 0);
    let w = &r["warnings"][0];
    assert_eq!(w["path"], "sock");
    assert!(w["error"].as_str().unwrap().contains("socket"), "{w}");
    assert_eq!(w["failed"], false);
    assert_eq!(r["warnings"].as_array().unwrap().len(), 1, "{r}");
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let pipe = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "pipe")
        .unwrap();
    assert_eq!(pipe["type"], "fifo");
    assert_eq!(pipe["mode"], "0640");
    let out = t.path().join("out");
    vault_ok(
        &["restore", "latest", "--repo", p(&repo), "--target", p(&out)],
        0,
    );
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = fs::symlink_metadata(out.join("pipe")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o640);
}

#[test]
fn policy_full_day_max_chain_and_hash() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("f.txt"), "content");
    let today = Command::new("date").arg("+%a").output().unwrap();
    let today = String::from_utf8_lossy(&today.stdout).trim().to_lowercase();
    let run = |extra: &[&str]| {
        let mut args = vec!["backup", p(&src), "--repo", p(&repo), "--json"];
        args.extend_from_slice(extra);
        vault_ok(&args, 0).json()
    };
    // Today is the full day: the first run is a full, the second (same day) is not.
    assert_eq!(run(&["--full-on", &today])["kind"], "full");
    let second = run(&["--full-on", &today]);
    assert_eq!(second["kind"], "incremental");
    // --max-chain 2: two incrementals, then a full.
    assert_eq!(
        run(&["--full-on", "never", "--max-chain", "2"])["kind"],
        "incremental"
    );
    let r = run(&["--full-on", "never", "--max-chain", "2"]);
    assert_eq!(r["kind"], "full", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("max-chain"));
    // A different hash needs a new chain: forced incremental is refused, the policy makes a full.
    let bad = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--incremental",
        "--hash",
        "md5",
    ]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("--hash md5 needs a new full"),
        "{}",
        bad.stderr
    );
    let r = run(&["--full-on", "never", "--hash", "md5"]);
    assert_eq!(r["kind"], "full");
    // The md5 digest is what md5sum says.
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let f = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "f.txt")
        .unwrap();
    let md5 = Command::new("md5sum")
        .arg(src.join("f.txt"))
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout);
    assert_eq!(
        f["digest"].as_str().unwrap(),
        md5.split_whitespace().next().unwrap()
    );
    // The chain keeps md5 without repeating the flag; --rehash reads every byte.
    let r = run(&["--full-on", "never", "--rehash"]);
    assert_eq!(r["kind"], "incremental");
    assert_eq!(r["stats"]["bytes_read"], 7);
    assert_eq!(r["stats"]["changed"], 0);
    // --incremental on a source with no full is refused.
    let other = t.path().join("other");
    write(other.join("x"), "x");
    let r = vault(&["backup", p(&other), "--repo", p(&repo), "--incremental"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no full snapshot"), "{}", r.stderr);
    // Two sources: `latest` needs --source.
    vault_ok(&["backup", p(&other), "--repo", p(&repo)], 0);
    let r = vault(&["ls", "latest", "--repo", p(&repo)]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--source"));
    let _ = run(&["--full-on", "never"]);
    let ls = vault_ok(
        &[
            "ls",
            "latest",
            "--source",
            p(&src),
            "--repo",
            p(&repo),
            "--json",
        ],
        0,
    )
    .json();
    assert_eq!(ls.as_array().unwrap().len(), 1);
}

#[test]
fn excludes_dry_run_and_repository_inside_source() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("home");
    let repo = src.join(".backups");
    write(src.join("notes.txt"), "keep");
    write(src.join("debug.log"), "drop");
    write(src.join("sub/trace.log"), "drop");
    write(src.join("cache/blob"), "drop");

    // A dry run writes nothing, not even the repository.
    let r = backup_json(
        &src,
        &repo,
        &["--dry-run", "--exclude", "*.log", "--exclude", "cache/"],
        0,
    );
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["kind"], "full");
    let reads: Vec<&str> = r["would_read"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert_eq!(reads, ["notes.txt"]);
    assert!(!repo.exists());

    let r = backup_json(
        &src,
        &repo,
        &["--exclude", "*.log", "--exclude", "cache/"],
        0,
    );
    assert_eq!(r["created_repository"], true);
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let paths: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    // The repository inside the source is never backed up into itself.
    assert_eq!(paths, ["notes.txt", "sub"]);

    write(src.join("new.txt"), "n");
    let before = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let r = backup_json(
        &src,
        &repo,
        &["--dry-run", "--exclude", "*.log", "--exclude", "cache/"],
        0,
    );
    assert_eq!(r["stats"]["new"], 1);
    let after = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(before, after);
}

#[test]
fn hard_links_inside_the_source_are_recorded() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a"), "linked content");
    fs::hard_link(src.join("a"), src.join("b")).unwrap();
    let r = backup_json(&src, &repo, &[], 0);
    let members = tar_list(&repo.join(r["archive"].as_str().unwrap()));
    assert_eq!(members, ["src/", "src/a", "src/b"]);
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(repo.join(r["archive"].as_str().unwrap()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("src/b link to src/a"));
    let ls = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let d: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap())
        .collect();
    assert_eq!(d[0], d[1]);
}

/// Storage grows with changes, not with the tree: 20 no-change incrementals of a 40,000-file
/// tree add less than 1 MB to vault.db.
#[test]
fn manifest_growth_over_20_no_change_incrementals_of_40k_files() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    for d in 0..200 {
        let dir = src.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..200 {
            fs::write(dir.join(format!("f{f:03}.txt")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let r = backup_json(&src, &repo, &["--compression", "none"], 0);
    assert_eq!(r["stats"]["files"], 40_200);
    let db = repo.join("vault.db");
    let size = || {
        fs::metadata(&db).unwrap().len()
            + fs::metadata(repo.join("vault.db-wal")).map_or(0, |m| m.len())
    };
    let before = size();
    for _ in 0..20 {
        let r = backup_json(&src, &repo, &[], 0);
        assert_eq!(r["stats"]["bytes_read"], 0);
    }
    let after = size();
    let growth = after.saturating_sub(before);
    println!("vault.db: {before} bytes after the full, {after} after 20 no-change incrementals: +{growth} bytes");
    assert!(growth < 1_000_000, "vault.db grew by {growth} bytes");
}

#[test]
fn incrementals_store_no_content_the_chain_has_whether_few_or_many_files_are_read() {
    // Few reads against many files: the chain's digests are looked up one by one; many reads:
    // they are loaded at once. Both must find a copied file's content in the full.
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    for i in 0..40 {
        write(
            src.join(format!("f{i:02}.txt")),
            format!("content number {i}\n"),
        );
    }
    backup_json(&src, &repo, &[], 0);

    fs::copy(src.join("f07.txt"), src.join("copy07.txt")).unwrap();
    write(src.join("fresh.txt"), "not seen before\n");
    let few = backup_json(&src, &repo, &[], 0);
    assert_eq!(few["stats"]["new"], 2, "{few}");
    let archive = repo.join(few["archive"].as_str().unwrap());
    assert_eq!(tar_list(&archive), ["data/fresh.txt"]);

    for i in 10..20 {
        fs::copy(
            src.join(format!("f{i:02}.txt")),
            src.join(format!("copy{i:02}.txt")),
        )
        .unwrap();
    }
    let many = backup_json(&src, &repo, &[], 0);
    assert_eq!(many["stats"]["new"], 10, "{many}");
    assert_eq!(many["stats"]["bytes_stored"], 0, "{many}");
    assert_eq!(many["archive"], serde_json::Value::Null);

    let out = t.path().join("out");
    vault_ok(
        &["restore", "latest", "--repo", p(&repo), "--target", p(&out)],
        0,
    );
    for name in ["copy07.txt", "copy10.txt", "copy19.txt", "fresh.txt"] {
        assert_eq!(
            fs::read(out.join(name)).unwrap(),
            fs::read(src.join(name)).unwrap()
        );
    }
}

/// Must-show 4 of issue 16: a repository written by the last build with schema 3
/// (tests/fixtures/schema3/make.sh, run with eff6ee2) opens in this build, is migrated, restores
/// both of its snapshots, takes an incremental and restores that.
#[test]
fn a_schema_3_repository_opens_backs_up_incrementally_and_restores() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schema3");
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    copy_tree(&fixture.join("repo"), &repo);
    // The manifest names its source by this absolute path (see make.sh).
    let base = std::path::Path::new("/tmp/vault-schema3-fixture");
    let src = base.join("src");
    let _ = fs::remove_dir_all(base);
    fs::create_dir_all(base).unwrap();

    let snaps = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let ids: Vec<String> = (0..2)
        .map(|i| snaps[i]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "{snaps}");
    let m = vault::manifest::Manifest::open(&repo.join("vault.db")).unwrap();
    assert_eq!(m.schema_version().unwrap(), 4);
    drop(m);

    let restore = |id: &str, target: &std::path::Path| {
        vault_ok(
            &["restore", id, "--repo", p(&repo), "--target", p(target)],
            0,
        );
    };
    // The full, as make.sh left the tree before its incremental.
    let full = t.path().join("full");
    restore(&ids[0], &full);
    assert_eq!(
        fs::read(full.join("etc/app/app.conf")).unwrap(),
        b"port = 8080\n"
    );
    assert_eq!(
        fs::read(full.join("data/notes.txt")).unwrap(),
        b"first version\n"
    );
    assert!(!full.join("data/added.txt").exists());

    // The incremental becomes the source again, then changes and is backed up.
    restore(&ids[1], &src);
    assert_eq!(
        fs::read(src.join("data/notes.txt")).unwrap(),
        b"second version, longer\n"
    );
    assert_eq!(
        fs::read(src.join("data/added.txt")).unwrap(),
        b"new in the incremental\n"
    );
    assert!(!src.join("etc/app/app.conf").exists());
    assert_eq!(
        fs::read_link(src.join("etc/notes-link")).unwrap(),
        std::path::Path::new("../data/notes.txt")
    );
    write(src.join("data/same.txt"), "changed after the upgrade\n");
    write(src.join("data/third.txt"), "added after the upgrade\n");
    fs::remove_file(src.join("data/added.txt")).unwrap();
    let b = backup_json(&src, &repo, &["--incremental"], 0);
    assert_eq!(b["kind"], "incremental", "{b}");
    assert_eq!(b["stats"]["new"], 1, "{b}");
    assert_eq!(b["stats"]["deleted"], 1, "{b}");
    assert_latest_restores(&repo, &src, &t.path().join("latest"));
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
    let _ = fs::remove_dir_all(base);
}

/// The walk lists folders in parallel and merges the listings in path byte order as it goes,
/// against the manifest's rows in the same order. Names that sort between a folder and what it
/// holds (`a-b` and `a.b` come before `a/…`, `a0` after), names that are not UTF-8, and many
/// folders must still line up: an incremental of an untouched tree finds nothing, and one of
/// three changes finds exactly those.
#[test]
fn names_that_sort_around_the_slash_line_up_with_the_manifest() {
    use std::os::unix::ffi::OsStrExt;
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    for f in [
        "a-b", "a.txt", "a0", "a/b-c", "a/b.d", "a/b/c/x", "a/b/c-d", "a/b/c.e", "a/b0/z",
    ] {
        write(src.join(f), f);
    }
    write(
        src.join(std::ffi::OsStr::from_bytes(b"\xff\xfe")),
        "not utf-8",
    );
    write(
        src.join(std::ffi::OsStr::from_bytes(b"a/\x01low")),
        "control",
    );
    for d in 0..40 {
        for f in 0..25 {
            write(src.join(format!("many/d{d:02}/f{f}")), format!("{d} {f}"));
        }
    }
    let full = backup_json(&src, &repo, &[], 0);
    let total = full["stats"]["new"].as_u64().unwrap();
    // 11 files, folders a, a/b, a/b/c, a/b0, many and 40 below it, 1,000 files there.
    assert_eq!(total, 11 + 5 + 40 + 1000, "{full}");

    let same = backup_json(&src, &repo, &[], 0);
    let s = &same["stats"];
    assert_eq!(
        (&s["new"], &s["changed"], &s["deleted"], &s["unchanged"]),
        (&0.into(), &0.into(), &0.into(), &total.into()),
        "{same}"
    );

    write(src.join("a/b-c"), "A/B-C");
    fs::remove_file(src.join("a/b/c/x")).unwrap();
    write(src.join("a/b/c/y"), "new");
    let incr = backup_json(&src, &repo, &[], 0);
    let s = &incr["stats"];
    // Changed: a/b-c and the folder a/b/c (its listing moved).
    assert_eq!(
        (&s["new"], &s["changed"], &s["deleted"]),
        (&1.into(), &2.into(), &1.into()),
        "{incr}"
    );
    assert_latest_restores(&repo, &src, &t.path().join("back"));
}
