//! `vault push` / `vault pull` over SFTP to the harness's sshd, and through rclone.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::Sshd;

fn backup(src: &Path, repo: &Path, extra: &[&str]) {
    let mut a = vec![
        "backup",
        p(src),
        "--repo",
        p(repo),
        "--full-on",
        "never",
        "-q",
    ];
    a.extend_from_slice(extra);
    vault_ok(&a, 0);
}

fn ssh_flags(s: &Sshd, kh: &Path) -> Vec<String> {
    s.known_hosts(kh);
    vec![
        "-i".into(),
        s.path("id").display().to_string(),
        "--known-hosts".into(),
        kh.display().to_string(),
        "--no-agent".into(),
    ]
}

#[test]
fn push_to_sftp_pull_into_an_empty_folder_and_restore() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    rich_tree(&src);
    backup(&src, &repo, &[]);
    write(src.join("later.txt"), "second snapshot");
    backup(&src, &repo, &[]);
    let remote_dir = t.path().join("offsite/vault");
    let dest = format!("sftp://root@127.0.0.1:{}{}", s.port, remote_dir.display());
    let flags = ssh_flags(&s, &t.path().join("kh"));
    let mut a: Vec<&str> = vec!["push", &dest, "--repo", p(&repo), "--verify", "--json"];
    a.extend(flags.iter().map(String::as_str));
    let r = vault_env(&a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["sent"].as_array().unwrap().len(), 2, "{j}");
    assert!(remote_dir.join("vault.db").is_file());
    assert_eq!(
        fs::read_dir(remote_dir.join("archives")).unwrap().count(),
        2
    );

    // Again: nothing to send.
    let r = vault_env(&a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["sent"].as_array().unwrap().len(), 0);
    assert_eq!(r.json()["skipped"], 2);

    // Pull into an empty folder; restore from it.
    let pulled = t.path().join("pulled");
    let mut a: Vec<&str> = vec!["pull", &dest, "--repo", p(&pulled), "--json"];
    a.extend(flags.iter().map(String::as_str));
    let r = vault_env(&a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["snapshots"], 2);
    vault_ok(&["check", "--repo", p(&pulled), "--read-data"], 0);
    assert_latest_restores(&pulled, &src, &t.path().join("restored"));

    // A bad destination is a usage error.
    let r = vault_env(&["push", "ftp://example", "--repo", p(&repo)], &[]);
    assert_eq!(r.code, 2);
}

#[test]
fn a_killed_push_resumes_without_resending() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    let mut noise = vec![0u8; 40 << 20];
    for i in 0..6 {
        std::io::Read::read_exact(&mut fs::File::open("/dev/urandom").unwrap(), &mut noise)
            .unwrap();
        write(src.join(format!("blob{i}.bin")), &noise);
        backup(&src, &repo, &["--full", "--compression", "none"]);
    }
    let remote_dir = t.path().join("offsite");
    let dest = format!("sftp://root@127.0.0.1:{}{}", s.port, remote_dir.display());
    let flags = ssh_flags(&s, &t.path().join("kh"));
    let mut a: Vec<&str> = vec!["push", &dest, "--repo", p(&repo), "--json"];
    a.extend(flags.iter().map(String::as_str));

    let mut child = Command::new(vault_bin())
        .args(&a)
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let done = |d: &Path| -> usize {
        fs::read_dir(d.join("archives"))
            .map(|it| {
                it.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".partial-push")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let start = Instant::now();
    while done(&remote_dir) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "push made no progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = done(&remote_dir);
    assert!(
        before < 6,
        "the push finished before it could be killed ({before} archives)"
    );
    assert!(
        !remote_dir.join("vault.db").exists(),
        "the manifest goes last"
    );

    let r = vault_env(&a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["skipped"], before as u64, "{j}");
    assert_eq!(j["sent"].as_array().unwrap().len(), 6 - before, "{j}");
    assert_eq!(done(&remote_dir), 6);
    let pulled = t.path().join("pulled");
    let mut a: Vec<&str> = vec!["pull", &dest, "--repo", p(&pulled)];
    a.extend(flags.iter().map(String::as_str));
    let r = vault_env(&a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    vault_ok(&["check", "--repo", p(&pulled), "--read-data"], 0);
}

#[test]
fn push_and_pull_through_rclone() {
    let have_rclone = Command::new("rclone")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_rclone {
        assert!(
            std::env::var_os("CI").is_none(),
            "rclone is needed and CI is set"
        );
        eprintln!("skipping: rclone is not installed");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    rich_tree(&src);
    backup(&src, &repo, &[]);
    // An rclone remote of the local backend, configured through the environment.
    let env = [("RCLONE_CONFIG_VTEST_TYPE", "local")];
    let dest = format!("rclone:vtest:{}", t.path().join("rc-remote").display());
    let r = vault_env(
        &["push", &dest, "--repo", p(&repo), "--verify", "--json"],
        &env,
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["sent"].as_array().unwrap().len(), 1);
    let r = vault_env(&["push", &dest, "--repo", p(&repo), "--json"], &env);
    assert_eq!(r.json()["skipped"], 1, "{r:?}");
    let pulled = t.path().join("pulled");
    let r = vault_env(&["pull", &dest, "--repo", p(&pulled)], &env);
    assert_eq!(r.code, 0, "{r:?}");
    assert_latest_restores(&pulled, &src, &t.path().join("restored"));
}

/// SIGKILL at random moments of `vault push` (VAULT_KILL_TRIALS, default 6; VAULT_KILL_SEED):
/// after each, the local repository checks clean; the remote, whenever it holds a manifest,
/// pulls into an empty folder that checks clean with --read-data and restores the newest
/// snapshot it has exactly; and a complete push afterwards leaves nothing half-sent.
#[test]
fn kill_9_during_push_never_breaks_either_side() {
    if !require_root("starting sshd") {
        return;
    }
    let (trials, seed) = kill_trials_and_seed(6);
    let mut rng = Lcg(seed ^ 0x5eed);
    let s = Sshd::start();
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    for i in 0..4 {
        noise_file(&src.join(format!("n{i}.bin")), 3 << 20);
    }
    for f in 0..100 {
        write(src.join(format!("d/f{f:03}.txt")), format!("{f}\n"));
    }
    let remote_dir = t.path().join("offsite");
    let dest = format!("sftp://root@127.0.0.1:{}{}", s.port, remote_dir.display());
    let flags = ssh_flags(&s, &t.path().join("kh"));
    let mut push: Vec<&str> = vec!["push", &dest, "--repo", p(&repo), "-q"];
    push.extend(flags.iter().map(String::as_str));
    let mut states: Vec<(String, std::path::PathBuf)> = Vec::new();
    let mut killed = 0;
    for trial in 0..trials {
        noise_file(&src.join(format!("n{}.bin", rng.next() % 4)), 3 << 20);
        write(
            src.join(format!("d/f{:03}.txt", rng.next() % 100)),
            format!("t{trial}\n"),
        );
        let kind = if trial % 3 == 0 {
            "--full"
        } else {
            "--incremental"
        };
        backup(&src, &repo, &[kind]);
        let state = t.path().join(format!("state{trial}"));
        copy_tree(&src, &state);
        states.push((snapshot_ids(&repo).last().unwrap().clone(), state));

        let mut child = Command::new(vault_bin())
            .args(&push)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("VAULT_REPO")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.next() % 300_000));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        let _ = child.wait();
        vault_ok(&["check", "--repo", p(&repo)], 0);
        if !remote_dir.join("vault.db").exists() && !remote_dir.join("vault.db.prev").exists() {
            continue; // killed before the first manifest arrived
        }
        let pulled = t.path().join(format!("pulled{trial}"));
        let mut pull: Vec<&str> = vec!["pull", &dest, "--repo", p(&pulled), "-q"];
        pull.extend(flags.iter().map(String::as_str));
        let r = vault_env(&pull, &[]);
        assert_eq!(r.code, 0, "trial {trial} (seed {seed}): {r:?}");
        vault_ok(&["check", "--repo", p(&pulled), "--read-data"], 0);
        let newest = snapshot_ids(&pulled).last().unwrap().clone();
        let (_, state) = states
            .iter()
            .find(|(id, _)| *id == newest)
            .expect("the remote's newest snapshot is one of ours");
        let target = t.path().join(format!("r{trial}"));
        vault_ok(
            &[
                "restore",
                &newest,
                "--repo",
                p(&pulled),
                "--target",
                p(&target),
            ],
            0,
        );
        assert_same_tree(state, &target);
        fs::remove_dir_all(&target).unwrap();
        fs::remove_dir_all(&pulled).unwrap();
    }
    println!("push kill -9 harness: {trials} trials (seed {seed}), {killed} killed mid-push, failures: 0");
    // A complete push: everything arrives, nothing half-sent is left on either side.
    let r = vault_env(&push, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let leftovers: Vec<String> = fs::read_dir(remote_dir.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    assert!(!remote_dir.join("vault.db.prev").exists());
    let local_debris: Vec<String> = fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".push-"))
        .collect();
    assert_eq!(local_debris, Vec::<String>::new());
    let pulled = t.path().join("final");
    let mut pull: Vec<&str> = vec!["pull", &dest, "--repo", p(&pulled), "-q"];
    pull.extend(flags.iter().map(String::as_str));
    vault_ok(&pull.iter().map(|s| &**s).collect::<Vec<_>>(), 0);
    assert_eq!(snapshot_ids(&pulled), snapshot_ids(&repo));
    assert_latest_restores(&pulled, &src, &t.path().join("restored-final"));
}

/// Pushing to a remote whose disk is full: exit 1 naming the file and the likely cause, nothing
/// half-sent left there, the remote's earlier manifest (and what it names) intact; with room
/// again, the push completes.
#[test]
fn push_to_a_full_remote_disk_keeps_the_remote_consistent() {
    if !require_root("starting sshd and mounting a tmpfs") {
        return;
    }
    let s = Sshd::start();
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, "6m");
    let (src, repo) = (t.path().join("data"), t.path().join("repo"));
    noise_file(&src.join("small.bin"), 1 << 20);
    backup(&src, &repo, &[]);
    let first = snapshot_ids(&repo);
    let remote_dir = mnt.join("offsite");
    let dest = format!("sftp://root@127.0.0.1:{}{}", s.port, remote_dir.display());
    let flags = ssh_flags(&s, &t.path().join("kh"));
    let mut push: Vec<&str> = vec!["push", &dest, "--repo", p(&repo)];
    push.extend(flags.iter().map(String::as_str));
    let r = vault_env(&push, &[]);
    assert_eq!(r.code, 0, "{r:?}");

    noise_file(&src.join("big.bin"), 8 << 20);
    backup(&src, &repo, &[]);
    let r = vault_env(&push, &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("partial-push"), "{}", r.stderr);
    assert!(r.stderr.contains("remote disk is full"), "{}", r.stderr);
    let names: Vec<String> = fs::read_dir(remote_dir.join("archives"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "nothing half-sent may stay: {names:?}");
    let pulled = t.path().join("pulled");
    let mut pull: Vec<&str> = vec!["pull", &dest, "--repo", p(&pulled), "-q"];
    pull.extend(flags.iter().map(String::as_str));
    vault_ok(&pull.iter().map(|s| &**s).collect::<Vec<_>>(), 0);
    assert_eq!(snapshot_ids(&pulled), first);
    vault_ok(&["check", "--repo", p(&pulled), "--read-data"], 0);

    let st = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let r = vault_env(&push, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    fs::remove_dir_all(&pulled).unwrap();
    vault_ok(&pull.iter().map(|s| &**s).collect::<Vec<_>>(), 0);
    assert_eq!(snapshot_ids(&pulled), snapshot_ids(&repo));
}
