//! `vault ssh` against a real OpenSSH sshd on 127.0.0.1 started by the harness.

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::sshd::{Sshd, PW_PASSWORD, PW_USER};

#[test]
fn key_password_and_host_key_policy() {
    if !require_root("starting sshd and creating a user") {
        return;
    }
    let s = Sshd::start();
    let kh = s.path("known_hosts_test");
    let id = s.path("id");
    let target = s.target("root", "127.0.0.1");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "ssh".into(),
            target.clone(),
            "-i".into(),
            id.display().to_string(),
        ];
        v.extend([
            "--known-hosts".into(),
            kh.display().to_string(),
            "--timeout".into(),
            "10s".into(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| {
        let args = base(extra);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        vault_env(&a, &[])
    };

    // Unknown host: refused, with the fingerprint.
    let r = run(&["--json", "--", "echo", "hello"]);
    assert_eq!(r.code, 3, "{r:?}");
    let err = r.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("unknown host key") && err.contains("SHA256:"),
        "{err}"
    );
    assert!(!kh.exists());

    // --accept-new trusts and records it; then it is known.
    let r = run(&["--accept-new", "--", "echo", "hello"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains(&format!("[{target}] OUT:\nhello\n")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("exit status 0"));
    let recorded = fs::read_to_string(&kh).unwrap();
    assert!(
        recorded.contains(&format!("[127.0.0.1]:{}", s.port)),
        "{recorded}"
    );
    let r = run(&["--json", "--", "id", "-un"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["hosts"][0]["stdout"], "root\n");

    // A changed host key is refused even with --accept-new.
    let other = fs::read_to_string(s.path("otherkey.pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    fs::write(
        &kh,
        format!("[127.0.0.1]:{} {} {}\n", s.port, other[0], other[1]),
    )
    .unwrap();
    let r = run(&["--accept-new", "--json", "--", "true"]);
    assert_eq!(r.code, 3, "{r:?}");
    let err = r.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("HOST KEY CHANGED") && err.contains("SHA256:"),
        "{err}"
    );

    // Password authentication for the user the harness made; the password never shows.
    s.known_hosts(&kh);
    let pw_target = s.target(PW_USER, "127.0.0.1");
    let r = vault_env(
        &[
            "ssh",
            &pw_target,
            "--known-hosts",
            kh.to_str().unwrap(),
            "--password-env",
            "TEST_PW",
            "--json",
            "--",
            "id",
            "-un",
        ],
        &[("TEST_PW", PW_PASSWORD)],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["hosts"][0]["stdout"], format!("{PW_USER}\n"));
    assert!(!r.stdout.contains(PW_PASSWORD) && !r.stderr.contains(PW_PASSWORD));
    let pwfile = s.path("pw");
    fs::write(&pwfile, "wrong-password\n").unwrap();
    let r = vault_env(
        &[
            "ssh",
            &pw_target,
            "--known-hosts",
            kh.to_str().unwrap(),
            "--password-file",
            pwfile.to_str().unwrap(),
            "--json",
            "--",
            "true",
        ],
        &[],
    );
    assert_eq!(r.code, 3);
    let err = r.json()["hosts"][0]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("authentication failed") && !err.contains("wrong-password"),
        "{err}"
    );
}

#[test]
fn per_host_exit_status_big_output_and_a_hanging_host() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let kh = s.path("kh");
    s.known_hosts(&kh);
    let id = s.path("id");
    let (t1, t2) = (s.target("root", "127.0.0.1"), s.target("root", "127.0.0.2"));
    let common = [
        "-i",
        id.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
    ];

    // Exit 7 on two hosts: reported per host, overall exit 3.
    let mut args = vec!["ssh", &t1, &t2];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--json", "--", "echo out; echo err >&2; exit 7"]);
    let r = vault_env(&args, &[]);
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    for (k, t) in [&t1, &t2].into_iter().enumerate() {
        let h = &j["hosts"][k];
        assert_eq!(h["host"], t.as_str());
        assert_eq!(h["exit_status"], 7);
        assert_eq!(h["stdout"], "out\n");
        assert_eq!(h["stderr"], "err\n");
        assert_eq!(h["error"], serde_json::Value::Null);
    }

    // 10 MB on stdout and stderr at the same time: no deadlock, nothing lost.
    let mut args = vec!["ssh", &t1];
    args.extend_from_slice(&common);
    args.extend_from_slice(&[
        "--json",
        "--",
        "(head -c 10000000 /dev/zero | tr '\\0' o) & (head -c 10000000 /dev/zero | tr '\\0' e >&2); wait",
    ]);
    let r = vault_env(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["hosts"][0]["stdout"].as_str().unwrap().len(), 10_000_000);
    assert_eq!(j["hosts"][0]["stderr"].as_str().unwrap().len(), 10_000_000);

    // A listener that accepts and never speaks SSH: cut off at --timeout; the others report.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_target = format!("root@127.0.0.1:{}", hang.local_addr().unwrap().port());
    // Every connection (other tests may probe loopback ports too) is held, silent, until the
    // command has returned, so none is ever closed under vault.
    hang.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match hang.accept() {
                Ok(c) => held.push(c),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let mut args = vec!["ssh", &hang_target, &t1];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--timeout", "2s", "--json", "--", "echo fine"]);
    let started = Instant::now();
    let r = vault_env(&args, &[]);
    let took = started.elapsed();
    assert_eq!(r.code, 3, "{r:?}");
    let j = r.json();
    assert!(
        j["hosts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{j}"
    );
    assert_eq!(j["hosts"][1]["stdout"], "fine\n");
    assert!(
        took < Duration::from_secs(6),
        "the hanging host took {took:?}, the limit is 2s"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    holder.join().unwrap();
}

/// A loopback peer that, for every connection, streams `chunk` for up to 15 s.
fn garbage_server(chunk: &'static [u8]) -> (u16, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(15);
        let mut peers: Vec<std::net::TcpStream> = Vec::new();
        while Instant::now() < until {
            if let Ok((c, _)) = l.accept() {
                c.set_nonblocking(true).unwrap();
                peers.push(c);
            }
            peers.retain_mut(|c| match c.write(chunk) {
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            });
            if peers.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    (port, h)
}

/// Issue 13, finding 6: a peer streaming garbage is cut off within the timeout (it hung
/// vault at 100% CPU for ever), the other host's result prints, and SIGTERM ends a run.
#[test]
fn review_06_a_garbage_streaming_peer_is_cut_off_within_the_timeout() {
    if !require_root("starting sshd") {
        return;
    }
    let s = Sshd::start();
    let kh = s.path("kh");
    s.known_hosts(&kh);
    let id = s.path("id");
    let good = s.target("root", "127.0.0.1");
    static AS: [u8; 1000] = [b'A'; 1000];
    static LINES: &[u8] = b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n";
    for chunk in [&AS[..], LINES] {
        let (port, server) = garbage_server(chunk);
        let bad = format!("root@127.0.0.1:{port}");
        let started = Instant::now();
        let o = std::process::Command::new("/usr/bin/time")
            .args(["-f", "cpu %U %S"])
            .arg(vault_bin())
            .args([
                "ssh",
                &bad,
                &good,
                "-i",
                id.to_str().unwrap(),
                "--known-hosts",
            ])
            .arg(&kh)
            .args(["--no-agent", "--timeout", "2s", "--json", "--", "echo fine"])
            .output()
            .unwrap();
        let wall = started.elapsed();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{stderr}");
        assert!(wall < Duration::from_secs(3), "took {wall:?}");
        let cpu: f64 = stderr
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .expect("GNU time's line")
            .split(' ')
            .map(|x| x.parse::<f64>().unwrap())
            .sum();
        assert!(cpu < 1.5, "vault used {cpu} s of CPU");
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            j["hosts"][0]["error"]
                .as_str()
                .unwrap()
                .contains("not an SSH server"),
            "{j}"
        );
        assert_eq!(j["hosts"][1]["stdout"], "fine\n", "{j}");
        drop(server);
    }
    // SIGTERM ends a run whose peer never answers, long before its timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("root@127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mut child = std::process::Command::new(vault_bin())
        .args(["ssh", &target, "--known-hosts"])
        .arg(&kh)
        .args(["--no-agent", "--timeout", "60s", "--", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stopped = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            stopped.elapsed() < Duration::from_secs(3),
            "vault ssh ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(silent);
}
