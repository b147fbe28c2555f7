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
