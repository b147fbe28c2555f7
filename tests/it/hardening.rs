//! Crash consistency, locking and corruption: a snapshot is complete or absent, nothing stored
//! is lost, damage is reported per snapshot.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn spawn_backup(src: &Path, repo: &Path, extra: &[&str]) -> Child {
    Command::new(vault_bin())
        .args([
            "backup",
            p(src),
            "--repo",
            p(repo),
            "--full-on",
            "never",
            "-q",
        ])
        .args(extra)
        .env_remove("VAULT_REPO")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_partial(repo: &Path) {
    let start = Instant::now();
    while partials(repo) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the backup never started writing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn noise_tree(src: &Path, files: usize, size: usize) {
    for i in 0..files {
        noise_file(&src.join(format!("n{i}.bin")), size);
    }
}

#[test]
fn a_second_writer_fails_or_waits_and_readers_are_never_blocked() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("small.txt"), "x");
    vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--full-on",
            "never",
            "-q",
        ],
        0,
    );
    noise_tree(&src, 4, 40 << 20);
    let mut first = spawn_backup(&src, &repo, &["--full"]);
    wait_partial(&repo);
    let r = vault(&["backup", p(&src), "--repo", p(&repo)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("is locked by PID {} since", first.id())),
        "{}",
        r.stderr
    );
    // So does a forget.
    let r = vault(&["forget", "--keep-fulls", "1", "--repo", p(&repo)]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("is locked by PID {} since", first.id())),
        "{}",
        r.stderr
    );
    // Readers are not blocked by the running backup.
    assert_eq!(snapshot_ids(&repo).len(), 1);
    vault_ok(&["ls", "latest", "--repo", p(&repo)], 0);
    vault_ok(
        &[
            "restore",
            "latest",
            "--repo",
            p(&repo),
            "--target",
            p(&t.path().join("r1")),
        ],
        0,
    );
    // --lock-wait waits for the first to finish, then runs.
    let r = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--full-on",
        "never",
        "--lock-wait",
        "60s",
        "-q",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(first.wait().unwrap().success());
    assert_eq!(snapshot_ids(&repo).len(), 3);

    // A killed writer's lock dies with it: the next backup runs at once.
    write(src.join("later.txt"), "later");
    let mut killed = spawn_backup(&src, &repo, &["--full"]);
    wait_partial(&repo);
    killed.kill().unwrap();
    killed.wait().unwrap();
    vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--full-on",
            "never",
            "-q",
        ],
        0,
    );
    let c = vault_ok(&["check", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(c["partials_removed"].as_array().unwrap().len(), 1, "{c}");
    assert_latest_restores(&repo, &src, &t.path().join("r2"));
}

#[test]
fn newer_schema_missing_and_truncated_archives_are_specific_errors() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, repo) = (
        t.path().join("alpha"),
        t.path().join("beta"),
        t.path().join("repo"),
    );
    noise_tree(&a, 2, 200_000);
    noise_tree(&b, 2, 200_000);
    vault_ok(&["backup", p(&a), "--repo", p(&repo), "-q"], 0);
    let beta = vault_ok(&["backup", p(&b), "--repo", p(&repo), "--json"], 0).json();
    let alpha_id = snapshot_ids(&repo)[0].clone();
    let alpha_archive = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json()[0]
        ["archive"]
        .as_str()
        .unwrap()
        .to_string();

    // A missing archive: check names the snapshot; the other source still restores.
    let saved = t.path().join("saved.tar.gz");
    fs::rename(repo.join(&alpha_archive), &saved).unwrap();
    let r = vault(&["check", "--repo", p(&repo), "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.json()["affected_snapshots"][0], alpha_id.as_str());
    assert!(r.stderr.contains("cannot open"), "{}", r.stderr);
    let rb = t.path().join("rb");
    vault_ok(
        &[
            "restore",
            beta["snapshot"].as_str().unwrap(),
            "--repo",
            p(&repo),
            "--target",
            p(&rb),
        ],
        0,
    );
    assert_same_tree(&b, &rb);
    let r = vault(&[
        "restore",
        &alpha_id,
        "--repo",
        p(&repo),
        "--target",
        p(&t.path().join("ra")),
    ]);
    assert_eq!(r.code, 3, "a missing archive is a per-item failure");
    assert!(r.stderr.contains("is missing"), "{}", r.stderr);

    // A truncated archive.
    let bytes = fs::read(&saved).unwrap();
    fs::write(repo.join(&alpha_archive), &bytes[..bytes.len() / 2]).unwrap();
    let r = vault(&["check", "--repo", p(&repo), "--read-data"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&alpha_archive) && r.stderr.contains(&alpha_id),
        "{}",
        r.stderr
    );

    // A manifest from a newer vault is refused, not misread.
    let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute('PRAGMA user_version = 99')\nc.commit()\n";
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(repo.join("vault.db"))
        .status()
        .unwrap();
    assert!(st.success());
    let r = vault(&["snapshots", "--repo", p(&repo)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("schema version 99, newer than this vault understands"),
        "{}",
        r.stderr
    );
}

/// SIGKILL at random moments of backups (fulls and incrementals): after each, `check` passes,
/// every recorded snapshot restores to exactly the tree it was taken of, the next backup runs.
/// VAULT_KILL_TRIALS sets the number of trials (default 8); VAULT_KILL_SEED the seed.
#[test]
fn kill_9_at_random_moments_never_breaks_the_repository() {
    let (trials, seed) = kill_trials_and_seed(8);
    let mut rng = Lcg(seed);
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    for d in 0..20 {
        for f in 0..100 {
            write(
                src.join(format!("d{d:02}/f{f:03}.txt")),
                format!("{d}/{f} {}\n", "x".repeat(f * 7)),
            );
        }
    }
    noise_tree(&src.join("big"), 3, 4 << 20);
    let mut recorded: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut killed = 0;
    for trial in 0..trials {
        // Change some files (seeded), keep a copy of the state being backed up.
        for _ in 0..50 {
            let (d, f) = (rng.next() % 20, rng.next() % 120);
            let path = src.join(format!("d{d:02}/f{f:03}.txt"));
            match rng.next() % 4 {
                0 => {
                    let _ = fs::remove_file(&path);
                }
                _ => write(&path, format!("trial {trial} {}\n", rng.next())),
            }
        }
        let state = t.path().join(format!("state{trial}"));
        copy_tree(&src, &state);
        let before = snapshot_ids(&repo);
        let extra: &[&str] = if trial % 3 == 0 { &["--full"] } else { &[] };
        let mut child = spawn_backup(&src, &repo, extra);
        std::thread::sleep(Duration::from_millis(rng.next() % 200));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let _ = child.wait();
        if repo.join("vault.db").exists() {
            let c = vault(&["check", "--repo", p(&repo), "--json"]);
            assert_eq!(c.code, 0, "trial {trial} (seed {seed}): {c:?}");
        }
        let after = snapshot_ids(&repo);
        assert!(after.len() == before.len() || after.len() == before.len() + 1);
        if after.len() > before.len() {
            recorded.push((after.last().unwrap().clone(), state));
        }
        for (id, state) in &recorded {
            let target = t.path().join(format!("r{trial}-{id}"));
            vault_ok(
                &["restore", id, "--repo", p(&repo), "--target", p(&target)],
                0,
            );
            assert_same_tree(state, &target);
            fs::remove_dir_all(&target).unwrap();
        }
    }
    println!("kill -9 harness: {trials} trials (seed {seed}), {killed} killed mid-backup, {} snapshots recorded, failures: 0", recorded.len());
    vault_ok(
        &[
            "backup",
            p(&src),
            "--repo",
            p(&repo),
            "--full-on",
            "never",
            "-q",
        ],
        0,
    );
    assert_latest_restores(&repo, &src, &t.path().join("final"));
}

/// A damaged page of vault.db: the snapshots whose rows it held fail with "is damaged", `check`
/// names exactly those, and the other source's snapshot still restores exactly.
#[test]
fn a_damaged_manifest_page_affects_only_the_snapshots_on_it() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, repo) = (
        t.path().join("alpha"),
        t.path().join("beta"),
        t.path().join("repo"),
    );
    // Enough rows that each source's entries fill many pages of their own.
    for i in 0..1500 {
        write(a.join(format!("alpha-{i:05}-padding-padding.txt")), "a");
        write(b.join(format!("beta-{i:05}-padding-padding.txt")), "b");
    }
    vault_ok(&["backup", p(&a), "--repo", p(&repo), "-q"], 0);
    vault_ok(&["backup", p(&b), "--repo", p(&repo), "-q"], 0);
    let ids = snapshot_ids(&repo);
    assert_eq!(ids.len(), 2);
    let (alpha_id, beta_id) = (ids[0].clone(), ids[1].clone());
    assert!(
        !repo.join("vault.db-wal").exists()
            || fs::metadata(repo.join("vault.db-wal")).unwrap().len() == 0,
        "the WAL should be checkpointed when vault exits"
    );

    // Overwrite one B-tree leaf page that holds only alpha's rows, in the middle of them.
    let db_path = repo.join("vault.db");
    let mut db = fs::read(&db_path).unwrap();
    let page = match u16::from_be_bytes([db[16], db[17]]) {
        1 => 65536,
        n => usize::from(n),
    };
    let has = |pg: &[u8], pat: &[u8]| pg.windows(pat.len()).any(|w| w == pat);
    let alpha_leaves: Vec<usize> = (1..db.len() / page)
        .filter(|&i| {
            let pg = &db[i * page..(i + 1) * page];
            matches!(pg[0], 0x0a | 0x0d) && has(pg, b"alpha-0") && !has(pg, b"beta-0")
        })
        .collect();
    assert!(
        alpha_leaves.len() >= 3,
        "alpha's rows span {} pages",
        alpha_leaves.len()
    );
    let victim = alpha_leaves[alpha_leaves.len() / 2];
    for (k, byte) in db[victim * page..(victim + 1) * page]
        .iter_mut()
        .enumerate()
    {
        *byte = (k * 131 % 251) as u8;
    }
    fs::write(&db_path, &db).unwrap();

    // The snapshot list itself is intact.
    assert_eq!(snapshot_ids(&repo), [alpha_id.clone(), beta_id.clone()]);
    // check: exit 1, vault.db named, alpha's snapshot (only) affected.
    let r = vault(&["check", "--repo", p(&repo), "--json"]);
    assert_eq!(r.code, 1, "{r:?}");
    let j = r.json();
    assert_eq!(j["problems"][0]["what"], "vault.db", "{j}");
    assert_eq!(
        j["affected_snapshots"],
        serde_json::json!([alpha_id]),
        "{j}"
    );
    let line = r.stderr.lines().last().unwrap_or("");
    assert!(
        line.contains("vault.db") || r.stderr.contains("vault.db"),
        "{}",
        r.stderr
    );
    // Restoring alpha fails with a specific one-line error; beta restores exactly.
    let r = vault(&[
        "restore",
        &alpha_id,
        "--repo",
        p(&repo),
        "--target",
        p(&t.path().join("ra")),
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is damaged"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let rb = t.path().join("rb");
    vault_ok(
        &["restore", &beta_id, "--repo", p(&repo), "--target", p(&rb)],
        0,
    );
    assert_same_tree(&b, &rb);
    // The same for the read-only views: ls of alpha fails, ls of beta works.
    assert_eq!(vault(&["ls", &alpha_id, "--repo", p(&repo)]).code, 1);
    vault_ok(&["ls", &beta_id, "--repo", p(&repo)], 0);
}

/// SIGKILL at random moments of `vault forget`: after each, `check` passes, the snapshots left
/// are a subset of those before, each restores to exactly the tree it was taken of, and the
/// next forget removes what a killed one left behind.
#[test]
fn kill_9_during_forget_never_breaks_the_repository() {
    let (trials, seed) = kill_trials_and_seed(8);
    let mut rng = Lcg(seed ^ 0xf0f0);
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    for f in 0..200 {
        write(src.join(format!("d/f{f:03}.txt")), format!("{f}\n"));
    }
    noise_tree(&src.join("big"), 2, 2 << 20);
    let mut recorded: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut killed = 0;
    let mut applied = 0;
    let mut n = 0;
    for trial in 0..trials {
        // Two new chains (a full and an incremental each) for forget to drop.
        for k in 0..4 {
            n += 1;
            write(
                src.join(format!("d/f{:03}.txt", rng.next() % 200)),
                format!("{n}\n"),
            );
            noise_tree(&src.join(format!("big/t{trial}k{k}")), 1, 256 << 10);
            let state = t.path().join(format!("state{n}"));
            copy_tree(&src, &state);
            let kind = if k % 2 == 0 {
                "--full"
            } else {
                "--incremental"
            };
            let j = backup_json(&src, &repo, &[kind], 0);
            recorded.push((j["snapshot"].as_str().unwrap().to_string(), state));
        }
        let before = snapshot_ids(&repo);
        let mut child = Command::new(vault_bin())
            .args(["forget", "--keep-fulls", "2", "--repo", p(&repo), "-q"])
            .env_remove("VAULT_REPO")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % 25_000));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let _ = child.wait();
        let c = vault(&["check", "--repo", p(&repo), "--json"]);
        assert_eq!(c.code, 0, "trial {trial} (seed {seed}): {c:?}");
        let after = snapshot_ids(&repo);
        assert!(
            after.iter().all(|id| before.contains(id)),
            "trial {trial}: forget invented snapshots"
        );
        assert!(
            after.len() == before.len() || after.len() == 4,
            "trial {trial}: a chain was half forgotten: {} of {} left",
            after.len(),
            before.len()
        );
        if after.len() < before.len() {
            applied += 1;
        }
        recorded.retain(|(id, state)| {
            let keep = after.contains(id);
            if !keep {
                fs::remove_dir_all(state).unwrap();
            }
            keep
        });
        for (id, state) in &recorded {
            let target = t.path().join(format!("r{trial}-{id}"));
            vault_ok(
                &["restore", id, "--repo", p(&repo), "--target", p(&target)],
                0,
            );
            assert_same_tree(state, &target);
            fs::remove_dir_all(&target).unwrap();
        }
    }
    println!(
        "forget kill -9 harness: {trials} trials (seed {seed}), {killed} killed mid-forget, {applied} forgets committed, failures: 0"
    );
    // A complete forget leaves exactly the archives its snapshots refer to.
    vault_ok(
        &["forget", "--keep-fulls", "1", "--repo", p(&repo), "-q"],
        0,
    );
    let c = vault_ok(&["check", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(c["orphans"], serde_json::json!([]), "{c}");
    let listed = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    let mut want: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            s["archive"]
                .as_str()
                .map(|a| a.trim_start_matches("archives/").to_string())
        })
        .collect();
    want.sort();
    let mut have: Vec<String> = fs::read_dir(repo.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    assert_eq!(have, want);
}

/// A full disk: `snapshots` still reads, `forget` still frees space (using the reserve), a
/// backup fails with "disk full" and records nothing; afterwards the repository checks clean
/// and what is left restores.
#[test]
fn a_full_disk_still_lets_you_list_and_forget() {
    if !require_root("mounting a tmpfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "16m");
    let (src, repo) = (t.path().join("src"), mnt.join("repo"));
    for f in 0..300 {
        write(src.join(format!("f{f:03}.txt")), format!("{f}\n"));
    }
    let mut ids = Vec::new();
    for k in 0..3 {
        write(src.join("k.txt"), format!("{k}"));
        ids.push(
            backup_json(&src, &repo, &["--full"], 0)["snapshot"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let state = t.path().join("state");
    copy_tree(&src, &state);
    // Fill the disk to the last byte.
    {
        use std::io::Write;
        let mut f = fs::File::create(mnt.join("filler")).unwrap();
        let block = vec![0x55u8; 64 << 10];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let mut byte = [0u8; 1];
        while f.write_all(&byte).is_ok() {
            byte[0] += 1;
        }
    }
    // Readers still work, and forget frees space: it deletes the repository's reserve to make
    // room for its manifest transaction.
    assert!(repo.join("reserve").is_file());
    assert_eq!(snapshot_ids(&repo), ids);
    let r = vault(&["forget", "--keep-fulls", "1", "--repo", p(&repo), "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(snapshot_ids(&repo), ids[2..]);
    // A backup on the full disk fails with "disk full" and changes nothing.
    noise_tree(&src.join("more"), 1, 12 << 20);
    let r = vault(&["backup", p(&src), "--repo", p(&repo), "--full", "-q"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("disk full"), "{}", r.stderr);
    assert_eq!(snapshot_ids(&repo), ids[2..]);
    fs::remove_dir_all(src.join("more")).unwrap();
    fs::remove_file(mnt.join("filler")).unwrap();
    vault_ok(&["check", "--repo", p(&repo), "--read-data"], 0);
    let target = t.path().join("r");
    vault_ok(
        &[
            "restore",
            &ids[2],
            "--repo",
            p(&repo),
            "--target",
            p(&target),
        ],
        0,
    );
    assert_same_tree(&state, &target);
    vault_ok(
        &["forget", "--keep-fulls", "1", "--repo", p(&repo), "-q"],
        0,
    );
    assert_eq!(snapshot_ids(&repo), ids[2..]);
}

/// Whatever the caller's umask, what vault leaves in a repository is private: files 0600,
/// folders 0700.
#[test]
fn repository_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && '{}' backup '{}' --repo '{}' -q",
            vault_bin(),
            p(&src),
            p(&repo)
        ))
        .env_remove("VAULT_REPO")
        .status()
        .unwrap();
    assert!(st.success());
    fn walk(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.push((
                e.path().display().to_string(),
                m.permissions().mode() & 0o777,
                m.is_dir(),
            ));
            if m.is_dir() {
                walk(&e.path(), out);
            }
        }
    }
    let mut all = vec![(
        p(&repo).to_string(),
        fs::metadata(&repo).unwrap().permissions().mode() & 0o777,
        true,
    )];
    walk(&repo, &mut all);
    for (path, mode, dir) in all {
        assert_eq!(mode, if dir { 0o700 } else { 0o600 }, "{path}: {mode:o}");
    }
}
