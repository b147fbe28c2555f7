//! Regression tests for the adversarial review of the CLI (issue 13), one per finding, named
//! `review_NN_…` after its number there. The watch findings (3 and 7) are in watch.rs, the
//! garbage-streaming SSH peer (6) in ssh.rs.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn backup(src: &Path, repo: &Path, extra: &[&str]) -> serde_json::Value {
    backup_json(src, repo, extra, 0)
}

fn archives(repo: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `check --read-data` is clean and every snapshot restores (compared with the copies taken
/// when each was made, when given).
fn assert_intact(repo: &Path, states: &[(String, PathBuf)]) {
    vault_ok(&["check", "--repo", p(repo), "--read-data", "-q"], 0);
    let t = tempfile::tempdir().unwrap();
    for (i, (id, state)) in states.iter().enumerate() {
        let target = t.path().join(format!("r{i}"));
        vault_ok(
            &[
                "restore",
                id,
                "--repo",
                p(repo),
                "--target",
                p(&target),
                "-q",
            ],
            0,
        );
        assert_same_tree(state, &target);
    }
}

/// A source with two snapshots, and a copy of the tree as each snapshot saw it.
fn two_snapshots(t: &Path) -> (PathBuf, PathBuf, Vec<(String, PathBuf)>) {
    let (src, repo) = (t.join("src"), t.join("repo"));
    let mut states = Vec::new();
    write(src.join("a"), "one");
    write(src.join("d/b"), "two");
    for round in 0..2 {
        if round == 1 {
            write(src.join("d/c"), "three");
        }
        let j = backup(&src, &repo, &[]);
        let copy = t.join(format!("state{round}"));
        copy_tree(&src, &copy);
        states.push((j["snapshot"].as_str().unwrap().to_string(), copy));
    }
    (src, repo, states)
}

#[test]
fn review_01_an_empty_or_truncated_manifest_is_refused_and_nothing_is_deleted() {
    let t = tempfile::tempdir().unwrap();
    let (_, repo, states) = two_snapshots(t.path());
    let db = repo.join("vault.db");
    let saved = fs::read(&db).unwrap();
    let before = archives(&repo);
    for damage in [0usize, 100, saved.len() / 2] {
        fs::write(&db, &saved[..damage]).unwrap();
        for args in [
            vec!["snapshots"],
            vec!["check"],
            vec!["forget", "--keep-fulls", "5"],
            vec!["ls", "latest"],
        ] {
            let mut a = args.clone();
            a.extend(["--repo", p(&repo)]);
            let r = vault(&a);
            assert_eq!(r.code, 1, "{a:?} on a {damage}-byte vault.db: {r:?}");
            assert!(r.stderr.contains("vault.db"), "{a:?}: {}", r.stderr);
        }
        // A backup must not take it for a new repository either.
        let r = vault(&["backup", p(&t.path().join("src")), "--repo", p(&repo)]);
        assert_eq!(r.code, 1, "{r:?}");
        assert_eq!(archives(&repo), before, "an archive was deleted or added");
    }
    fs::write(&db, &saved).unwrap();
    assert_intact(&repo, &states);
}

#[test]
fn review_02_restore_delete_never_removes_the_repository_it_reads() {
    let t = tempfile::tempdir().unwrap();
    let s = t.path().join("s");
    write(s.join("a"), "a");
    fs::create_dir_all(s.join("sub")).unwrap();
    let repo = s.join("sub/repo");
    let j = backup(&s, &repo, &[]);
    let state = t.path().join("state");
    copy_tree(&s, &state);
    fs::remove_dir_all(state.join("sub/repo")).unwrap();
    let m = fs::metadata(s.join("sub")).unwrap();
    set_mtime(&state.join("sub"), m.mtime(), m.mtime_nsec());
    write(s.join("extra"), "not in the snapshot");
    let args = [
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&s),
        "--force",
        "--delete",
        "--json",
    ];
    let r = vault(&[&args[..], &["--dry-run"]].concat());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(strs(&r.json()["would_delete"]), ["extra"], "{}", r.stdout);
    let r = vault(&args);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["deleted"], 1, "{}", r.stdout);
    assert!(repo.join("vault.db").is_file() && !s.join("extra").exists());
    // Restoring into a folder inside the repository is refused.
    let r = vault(&[
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&repo.join("x")),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    let id = j["snapshot"].as_str().unwrap().to_string();
    let moved = t.path().join("repo-moved");
    fs::rename(&repo, &moved).unwrap();
    assert_intact(&moved, &[(id, state)]);
}

fn rclone_env() -> [(&'static str, &'static str); 1] {
    [("RCLONE_CONFIG_VTEST_TYPE", "local")]
}

fn push(repo: &Path, dest: &str, extra: &[&str]) -> Run {
    vault_env(
        &[&["push", dest, "--repo", p(repo), "--json"], extra].concat(),
        &rclone_env(),
    )
}

/// Pulls `dest` into a fresh folder; returns it.
fn pull_fresh(dest: &str, into: &Path) -> PathBuf {
    let r = vault_env(&["pull", dest, "--repo", p(into), "-q"], &rclone_env());
    assert_eq!(r.code, 0, "{r:?}");
    into.to_path_buf()
}

#[test]
fn review_04_push_refuses_to_replace_a_newer_or_foreign_remote_manifest() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo, mut states) = two_snapshots(t.path());
    let old = t.path().join("old-copy");
    copy_tree(&repo, &old);
    write(src.join("e"), "four");
    let j = backup(&src, &repo, &[]);
    let newest = j["snapshot"].as_str().unwrap().to_string();
    let copy = t.path().join("state2");
    copy_tree(&src, &copy);
    states.push((newest.clone(), copy));
    let dest = format!("rclone:vtest:{}", t.path().join("remote").display());
    assert_eq!(push(&repo, &dest, &[]).code, 0);
    let r = push(&old, &dest, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains(&newest), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    // Another repository entirely.
    let (other_src, other) = (t.path().join("osrc"), t.path().join("other"));
    write(other_src.join("x"), "x");
    backup(&other_src, &other, &[]);
    let r = push(&other, &dest, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not this one"), "{}", r.stderr);
    // The remote still holds all three snapshots, intact.
    let pulled = pull_fresh(&dest, &t.path().join("pulled"));
    assert_eq!(snapshot_ids(&pulled).len(), 3);
    assert_intact(&pulled, &states);
    // What forget removed may go from the remote without --force; --force overrides.
    vault_ok(
        &["forget", "--repo", p(&repo), "--keep-fulls", "1", "-q"],
        0,
    );
    assert_eq!(push(&repo, &dest, &[]).code, 0);
    assert_eq!(push(&old, &dest, &["--force"]).code, 0);
}

#[test]
fn review_05_force_without_delete_never_removes_a_folder_in_the_way() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo, target) = (t.path().join("s"), t.path().join("r"), t.path().join("t"));
    write(src.join("y"), "file y");
    backup(&src, &repo, &[]);
    for k in ["deep/k1", "deep/k2", "deep/k3", "deep/more/m"] {
        write(target.join("y").join(k), k);
    }
    let args = [
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&target),
        "--json",
    ];
    let r = vault(&[&args[..], &["--force"]].concat());
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.json()["errors"][0]["path"], "y", "{}", r.stdout);
    assert!(
        target.join("y/deep/more/m").is_file(),
        "the folder was removed"
    );
    let r = vault(&[&args[..], &["--force", "--delete", "--dry-run"]].concat());
    assert_eq!(strs(&r.json()["would_delete"]), ["y"], "{}", r.stdout);
    let r = vault(&[&args[..], &["--force", "--delete"]].concat());
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["deleted"], 1, "{}", r.stdout);
    assert_eq!(fs::read_to_string(target.join("y")).unwrap(), "file y");
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
}

fn sql(repo: &Path, statement: &str) {
    let c = rusqlite::Connection::open(repo.join("vault.db")).unwrap();
    assert_eq!(c.execute(statement, []).unwrap(), 1, "{statement}");
}

#[test]
fn review_08_check_cross_checks_every_row_against_the_stored_contents() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("s"), t.path().join("r"));
    write(src.join("a"), "four");
    write(src.join("b"), "bbbb");
    backup(&src, &repo, &[]);
    let pristine = fs::read(repo.join("vault.db")).unwrap();
    for tamper in [
        "UPDATE entries SET size = 3 WHERE path = CAST('a' AS BLOB)",
        "UPDATE entries SET kind = 1 WHERE path = CAST('a' AS BLOB)",
        "UPDATE entries SET digest = NULL WHERE path = CAST('b' AS BLOB)",
    ] {
        fs::write(repo.join("vault.db"), &pristine).unwrap();
        sql(&repo, tamper);
        let r = vault(&["check", "--repo", p(&repo), "--read-data"]);
        assert_eq!(r.code, 1, "{tamper}: {r:?}");
        assert!(
            r.stderr.contains("damaged: snapshot"),
            "{tamper}: {}",
            r.stderr
        );
    }
    fs::write(repo.join("vault.db"), &pristine).unwrap();
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
}

#[test]
fn review_09_push_verify_rereads_and_resends_a_damaged_remote_archive() {
    let t = tempfile::tempdir().unwrap();
    let (_, repo, states) = two_snapshots(t.path());
    let remote = t.path().join("remote");
    let dest = format!("rclone:vtest:{}", remote.display());
    assert_eq!(push(&repo, &dest, &[]).code, 0);
    let name = archives(&repo).remove(0);
    let victim = remote.join("archives").join(&name);
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    let r = push(&repo, &dest, &[]);
    assert_eq!(
        r.json()["skipped"],
        2,
        "without --verify sizes are compared: {r:?}"
    );
    let r = push(&repo, &dest, &["--verify"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(strs(&r.json()["repaired"]), [format!("archives/{name}")]);
    assert_eq!(
        fs::read(&victim).unwrap(),
        fs::read(repo.join("archives").join(&name)).unwrap()
    );
    let pulled = pull_fresh(&dest, &t.path().join("pulled"));
    assert_intact(&pulled, &states);
}

/// Runs vault with its stdout a pipe whose reading end is already closed.
fn into_closed_pipe(args: &[&str]) -> (i32, String) {
    let mut c = Command::new(vault_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    let o = c.wait_with_output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn review_10_huge_durations_and_a_closed_stdout_never_panic() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo, _) = two_snapshots(t.path());
    let huge = "5124095576030431h";
    for args in [
        vec!["backup", p(&src), "--repo", p(&repo), "--lock-wait", huge],
        vec![
            "forget",
            "--repo",
            p(&repo),
            "--keep-fulls",
            "1",
            "--lock-wait",
            huge,
        ],
        vec!["scan", "127.0.0.1", "--timeout", huge],
        vec!["ssh", "127.0.0.1", "--timeout", huge, "--", "true"],
    ] {
        let r = vault(&args);
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains("out of range"), "{args:?}: {}", r.stderr);
    }
    for args in [
        vec!["snapshots", "--repo", p(&repo)],
        vec!["diff", "latest", "latest", "--repo", p(&repo)],
        vec!["ls", "latest", "--repo", p(&repo)],
        vec!["snapshots", "--repo", p(&repo), "--json"],
    ] {
        let (code, stderr) = into_closed_pipe(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn review_11_far_future_times_pick_the_latest_and_impossible_dates_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (_, repo, states) = two_snapshots(t.path());
    let latest = &states[1].0;
    let target = t.path().join("t");
    let dry_restore_at = |at: &str| {
        let args = [
            "restore",
            "--at",
            at,
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ];
        vault(&[&args[..], &["--dry-run", "--json"]].concat())
    };
    for at in ["2300-01-01", "9999-12-31 23:59", "2262-04-12"] {
        let r = dry_restore_at(at);
        assert_eq!(r.code, 0, "{at}: {r:?}");
        assert_eq!(&r.json()["snapshot"], latest.as_str(), "{at}");
    }
    for at in ["2026-02-30", "2025-02-29", "2026-04-31", "2026-13-01"] {
        let r = dry_restore_at(at);
        assert_eq!(r.code, 2, "{at}: {r:?}");
    }
    let r = dry_restore_at("2024-02-29");
    assert_eq!(
        r.code, 1,
        "a leap day is a real date (no snapshot then): {r:?}"
    );
}

#[test]
fn review_12_two_first_backups_at_once_make_one_repository() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("s");
    write(src.join("a"), "a");
    for round in 0..6 {
        let repo = t.path().join(format!("r{round}"));
        let kids: Vec<_> = (0..2)
            .map(|_| {
                Command::new(vault_bin())
                    .args([
                        "backup",
                        p(&src),
                        "--repo",
                        p(&repo),
                        "--lock-wait",
                        "10s",
                        "-q",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_eq!(snapshot_ids(&repo).len(), 2, "round {round}");
        vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
    }
}

#[test]
fn review_13_listings_are_unambiguous_and_json_names_are_exact() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("s"), t.path().join("r"));
    write(src.join("x\ny"), "newline");
    write(src.join("x\\ny"), "backslash");
    write(src.join("evil\u{202e}txt.exe"), "bidi");
    let raw = std::ffi::OsStr::from_bytes(b"bin\xff");
    write(src.join(raw), "not utf-8");
    backup(&src, &repo, &[]);
    let r = vault_ok(&["ls", "latest", "--repo", p(&repo)], 0);
    assert!(r.stdout.contains("  x\\ny\n"), "{}", r.stdout);
    assert!(r.stdout.contains("  x\\\\ny\n"), "{}", r.stdout);
    assert!(r.stdout.contains("evil\\u{202e}txt.exe"), "{}", r.stdout);
    assert!(r.stdout.contains("bin\\xff"), "{}", r.stdout);
    let j = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0).json();
    let paths: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"x\ny") && paths.contains(&"x\\ny"),
        "{paths:?}"
    );
    let odd = j
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path_bytes"].is_string())
        .expect("a path_bytes for the non-UTF-8 name");
    assert_eq!(odd["path_bytes"], "Ymlu/w==", "{odd}");
    // --include takes the raw bytes too.
    let target = t.path().join("t");
    let o = Command::new(vault_bin())
        .args([
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ])
        .arg("--include")
        .arg(raw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(target.join(raw)).unwrap(), b"not utf-8");
}

#[test]
fn review_14_messages_and_limits_agree() {
    let t = tempfile::tempdir().unwrap();
    // A silent SMTP server: "timed out", promptly.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let start = Instant::now();
    let r = vault(&[
        "mail",
        "--to",
        "bob@localhost",
        "--body",
        "x",
        "--smtp",
        &url,
        "--smtp-timeout",
        "1s",
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("timed out after 1s"), "{}", r.stderr);
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(silent);
    // A zero timeout is a usage error for ssh as for scan.
    for cmd in [
        vec!["ssh", "127.0.0.1", "--timeout", "0s", "--", "true"],
        vec!["scan", "127.0.0.1", "--timeout", "0s"],
    ] {
        assert_eq!(vault(&cmd).code, 2, "{cmd:?}");
    }
    // jobs = 0 in vault.toml is refused as --jobs 0 is.
    let cfg = t.path().join("vault.toml");
    fs::write(&cfg, "jobs = 0\n").unwrap();
    let r = vault(&[
        "snapshots",
        "--repo",
        p(&t.path().join("none")),
        "--config",
        p(&cfg),
    ]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("jobs"), "{}", r.stderr);
    // Scan ports in numeric order.
    let r = vault(&[
        "scan",
        "127.0.0.1",
        "--tcp",
        "9,1000,22,100",
        "--timeout",
        "300ms",
        "--json",
    ]);
    let text = r.stdout;
    let at = |k: &str| {
        text.find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k}: {text}"))
    };
    assert!(
        at("9") < at("22") && at("22") < at("100") && at("100") < at("1000"),
        "{text}"
    );
    // A failed pull leaves no manifest copy behind.
    let (_, repo, _) = two_snapshots(t.path());
    let remote = t.path().join("remote");
    let dest = format!("rclone:vtest:{}", remote.display());
    assert_eq!(push(&repo, &dest, &[]).code, 0);
    let name = archives(&repo).remove(0);
    fs::write(remote.join("archives").join(&name), b"damaged").unwrap();
    let into = t.path().join("pulled");
    let r = vault_env(&["pull", &dest, "--repo", p(&into)], &rclone_env());
    assert_eq!(r.code, 1, "{r:?}");
    let left: Vec<_> = fs::read_dir(&into)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pull-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn review_14_a_delete_that_cannot_remove_names_the_path() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo, target) = (t.path().join("s"), t.path().join("r"), t.path().join("t"));
    write(src.join("a"), "a");
    backup(&src, &repo, &[]);
    write(target.join("stuck/inner"), "x");
    let stuck = target.join("stuck");
    let locked = Command::new("chattr").arg("+i").arg(&stuck).status();
    if !locked.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "chattr +i is needed and CI is set"
        );
        eprintln!("skipping: chattr +i does not work here");
        return;
    }
    let r = vault(&[
        "restore",
        "latest",
        "--repo",
        p(&repo),
        "--target",
        p(&target),
        "--force",
        "--delete",
    ]);
    let _ = Command::new("chattr").arg("-i").arg(&stuck).status();
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("stuck"), "{}", r.stderr);
}

#[test]
fn review_15_root_metadata_anchored_excludes_json_errors_and_damaged_chains() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("s"), t.path().join("r"));
    write(src.join("cache/x"), "top cache");
    write(src.join("a/cache/y"), "deep cache");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o751)).unwrap();
    set_mtime(&src, 1_700_000_000, 123_456_789);
    backup(&src, &repo, &["--exclude", "/cache"]);
    let r = vault_ok(&["ls", "latest", "--repo", p(&repo), "--json"], 0);
    let paths: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert!(paths.contains(&"a/cache/y".to_string()), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("cache")), "{paths:?}");
    let target = t.path().join("t");
    vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ],
        0,
    );
    let m = fs::metadata(&target).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o751);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    // Errors under --json are a JSON document too.
    let r = vault(&[
        "snapshots",
        "--repo",
        p(&t.path().join("missing")),
        "--json",
    ]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["error"]["kind"], "repository", "{}", r.stdout);
    let r = vault(&["backup", "--json", "--no-such-flag"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json()["error"]["kind"], "usage", "{}", r.stdout);
    // An incremental onto a chain that lost an archive is refused.
    let name = archives(&repo).remove(0);
    fs::remove_file(repo.join("archives").join(&name)).unwrap();
    write(src.join("new"), "new");
    let r = vault(&["backup", p(&src), "--repo", p(&repo), "--incremental"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("chain is damaged"), "{}", r.stderr);
    assert_eq!(snapshot_ids(&repo).len(), 1);
}
