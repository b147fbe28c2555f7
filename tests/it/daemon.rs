//! `vault daemon`: scheduled jobs from a config file, stopped by SIGTERM.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A config file at `dir/vault.toml` (mode 0600) with `text`.
fn config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("vault.toml");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn snapshots(repo: &Path) -> Vec<serde_json::Value> {
    if !repo.join("vault.db").exists() {
        return Vec::new();
    }
    let r = vault(&["snapshots", "--repo", p(repo), "--json"]);
    serde_json::from_str::<serde_json::Value>(&r.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_job_every_2s_runs_again_and_again_and_sigterm_stops_the_daemon_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let cfg = config(
        t.path(),
        &format!(
            "[job.often]\nsource = \"{}\"\nrepo = \"{}\"\nevery = \"2s\"\nfull_on = \"never\"\n",
            src.display(),
            repo.display()
        ),
    );
    let plan = vault_ok(
        &["daemon", "--config", p(&cfg), "--print-schedule", "--json"],
        0,
    )
    .json();
    assert_eq!(plan["jobs"][0]["job"], "often", "{plan}");
    assert_eq!(plan["jobs"][0]["every_s"], 2.0, "{plan}");
    let mut child = Command::new(vault_bin())
        .args(["daemon", "--config", p(&cfg), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while snapshots(&repo).len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "fewer than 3 snapshots in 30 s"
        );
        write(src.join("a.txt"), format!("{:?}", Instant::now()));
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = report["backups"].as_array().unwrap();
    assert!(runs.len() >= 3, "{report}");
    assert!(runs.iter().all(|r| r["job"] == "often"), "{report}");
    // Runs are every 2 s, not back to back (times are whole seconds: at least 1 apart).
    let secs = |s: &serde_json::Value| -> i64 {
        let t = s["time"].as_str().unwrap();
        let hms: Vec<i64> = t[11..19].split(':').map(|x| x.parse().unwrap()).collect();
        hms[0] * 3600 + hms[1] * 60 + hms[2]
    };
    let list = snapshots(&repo);
    let day = |s: &serde_json::Value| s["time"].as_str().unwrap()[..10].to_string();
    if day(&list[0]) == day(&list[1]) {
        assert!(secs(&list[1]) - secs(&list[0]) >= 1, "{list:?}");
    }
    vault_ok(&["check", "--repo", p(&repo), "--read-data", "-q"], 0);
}

#[test]
fn a_daemon_without_scheduled_jobs_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    let cfg = config(
        t.path(),
        "[job.once]\nsource = \"/tmp\"\nrepo = \"/tmp/r\"\n",
    );
    let r = vault_ok(&["daemon", "--config", p(&cfg)], 2);
    assert!(
        r.stderr.contains("no [job.NAME] has `every`"),
        "{}",
        r.stderr
    );
    let cfg = config(t.path(), "[job.bad]\nsource = \"/tmp\"\nevery = \"0s\"\n");
    let r = vault_ok(&["daemon", "--config", p(&cfg)], 2);
    assert!(
        r.stderr.contains("every must be more than 0"),
        "{}",
        r.stderr
    );
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one_and_a_good_one_is_taken() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let job = |every: &str| {
        format!(
            "[job.often]\nsource = \"{}\"\nrepo = \"{}\"\nevery = \"{every}\"\nfull_on = \"never\"\n",
            src.display(),
            repo.display()
        )
    };
    let cfg = config(t.path(), &job("1s"));
    let mut child = Command::new(vault_bin())
        .args(["daemon", "--config", p(&cfg)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |n: usize| {
        let start = Instant::now();
        while snapshots(&repo).len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "fewer than {n} snapshots"
            );
            write(src.join("a.txt"), format!("{:?}", Instant::now()));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(1);
    let signal = |sig| {
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(child.id() as i32, sig) };
    };
    // A broken file: the daemon says so on one line naming the file and the line, and goes on.
    config(t.path(), "[job.often]\nsource = \n");
    signal(libc::SIGHUP);
    let had = snapshots(&repo).len();
    wait_for(had + 2);
    // A good file is taken: the job now runs every hour, so no more snapshots come.
    config(t.path(), &job("1h"));
    signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1500));
    let had = snapshots(&repo).len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(snapshots(&repo).len(), had);
    signal(libc::SIGTERM);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("config not reloaded"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&format!("{}:2", cfg.display())), "{err}");
    assert!(err.contains("config reloaded: 1 scheduled jobs"), "{err}");
}

#[test]
fn a_watch_job_backs_up_after_changes_settle_and_records_nothing_when_nothing_changed() {
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("src"), t.path().join("repo"));
    write(src.join("a.txt"), "a");
    let cfg = config(
        t.path(),
        &format!(
            "[job.live]\nsource = \"{}\"\nrepo = \"{}\"\nwatch = true\ndebounce = \"300ms\"\n",
            src.display(),
            repo.display()
        ),
    );
    let plan = vault_ok(
        &["daemon", "--config", p(&cfg), "--print-schedule", "--json"],
        0,
    )
    .json();
    assert_eq!(
        plan["jobs"][0]["schedule"], "on changes (settled 300ms)",
        "{plan}"
    );
    assert!(plan["jobs"][0]["next"].is_null(), "{plan}");
    let mut child = Command::new(vault_bin())
        .args(["daemon", "--config", p(&cfg)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let wait_for = |n: usize| {
        let start = Instant::now();
        while snapshots(&repo).len() < n {
            assert!(start.elapsed() < Duration::from_secs(20), "{n} snapshots");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The first run is a full rescan; then one change makes one more snapshot.
    wait_for(1);
    write(src.join("sub/b.txt"), "b");
    wait_for(2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(snapshots(&repo).len(), 2);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let list = snapshots(&repo);
    assert_eq!(list[1]["new"], 2, "the folder and its file: {list:?}");
    assert!(out.contains("live: incremental snapshot"), "{out}");
}

#[test]
fn bad_daemon_configs_and_flags_are_one_line_and_exit_2() {
    let t = tempfile::tempdir().unwrap();
    let job = |extra: &str| format!("[job.j]\nsource = \"/tmp\"\nrepo = \"/tmp/r\"\n{extra}");
    for (text, needle) in [
        (
            job("every = \"1h\"\nat = \"01:30\"\n"),
            "has both `every` and `at`",
        ),
        (
            job("at = \"someday 25:99\"\n"),
            "bad calendar spec 'someday 25:99'",
        ),
        (
            job("watch = true\nevery = \"1h\"\n"),
            "has `watch` and a schedule",
        ),
        (
            "[sweep.s]\ntargets = [\"127.0.0.1\"]\n".to_string(),
            "[sweep.s] needs `every`",
        ),
    ] {
        let cfg = config(t.path(), &text);
        let r = vault(&["daemon", "--config", p(&cfg)]);
        assert_eq!(r.code, 2, "{text}: {r:?}");
        assert!(r.stderr.contains(needle), "{text}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    }
    let cfg = config(t.path(), &job("every = \"1h\"\n"));
    let r = vault(&["daemon", "--config", p(&cfg), "--listen", "0.0.0.0:9"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("add --listen-public"), "{}", r.stderr);
    let r = vault(&["daemon", "--config", p(&cfg), "--listen", "nowhere"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("bad address 'nowhere'"), "{}", r.stderr);
}

#[test]
fn push_to_copies_the_repository_after_each_run_that_recorded_a_snapshot() {
    if Command::new("rclone").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "rclone is needed and CI is set"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (src, repo, remote) = (
        t.path().join("src"),
        t.path().join("repo"),
        t.path().join("rc"),
    );
    write(src.join("a.txt"), "a");
    let cfg = config(
        t.path(),
        &format!(
            "[job.off]\nsource = \"{}\"\nrepo = \"{}\"\nevery = \"1s\"\nfull_on = \"never\"\npush_to = \"rclone:vtest:{}\"\n",
            src.display(),
            repo.display(),
            remote.display()
        ),
    );
    let mut child = Command::new(vault_bin())
        .args(["daemon", "--config", p(&cfg)])
        .env("RCLONE_CONFIG_VTEST_TYPE", "local")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut n = 0;
    while snapshots(&repo).len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "3 snapshots");
        n += 1;
        write(src.join("a.txt"), format!("change {n}"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let pushes = out.lines().filter(|l| l.contains("off: pushed to")).count();
    assert!(pushes >= 3, "{out}");
    let pulled = t.path().join("pulled");
    let r = vault_env(
        &[
            "pull",
            &format!("rclone:vtest:{}", remote.display()),
            "--repo",
            p(&pulled),
        ],
        &[("RCLONE_CONFIG_VTEST_TYPE", "local")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    vault_ok(&["check", "--repo", p(&pulled), "--read-data", "-q"], 0);
    assert_eq!(snapshots(&pulled).len(), snapshots(&repo).len());
}
