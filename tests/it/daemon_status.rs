//! `vault daemon` with sweeps, a fleet host in a network namespace this test makes, alerts
//! through postfix, and its status page (`/`, `/api/status`, `/metrics`) read over loopback,
//! by Python's Prometheus parser and by headless Chromium.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mail::{fresh_mailbox, mailbox, postfix_ready};

/// `GET path` on 127.0.0.1:port: (status code, body).
pub(crate) fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the status page");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

pub(crate) fn status(port: u16) -> serde_json::Value {
    let (code, body) = http_get(port, "/api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sh(script: &str) {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A host in a network namespace of its own, reached over a veth pair from this one:
/// 10.77.N.1 here, 10.77.N.2 there. `down()` takes its side of the link down.
pub(crate) struct NetHost {
    pub ns: String,
    pub addr: String,
    link: String,
    sshd: Option<Child>,
}

impl NetHost {
    pub(crate) fn new() -> NetHost {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 200) as u32 + 20 + N.fetch_add(1, Ordering::SeqCst);
        let ns = format!("vdns{n}");
        let (here, there) = (format!("vdh{n}"), format!("vdt{n}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &here]).output();
        sh(&format!(
            "set -e; ip netns add {ns}; ip link add {here} type veth peer name {there} netns {ns}; \
             ip addr add 10.77.{n}.1/30 dev {here}; ip link set {here} up; \
             ip netns exec {ns} ip addr add 10.77.{n}.2/30 dev {there}; \
             ip netns exec {ns} ip link set lo up; ip netns exec {ns} ip link set {there} up"
        ));
        NetHost {
            addr: format!("10.77.{n}.2"),
            link: there,
            ns,
            sshd: None,
        }
    }

    pub(crate) fn down(&self) {
        sh(&format!(
            "ip netns exec {} ip link set {} down",
            self.ns, self.link
        ));
    }

    pub(crate) fn up(&self) {
        sh(&format!(
            "ip netns exec {} ip link set {} up",
            self.ns, self.link
        ));
    }

    /// Starts sshd inside the namespace on port 22 with the host key and authorized_keys in
    /// `dir`; returns its known_hosts line.
    fn sshd(&mut self, dir: &Path) -> String {
        let d = dir.display();
        let config = format!(
            "Port 22\nListenAddress {}\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPermitRootLogin yes\n\
             UsePAM no\nLogLevel ERROR\nSubsystem sftp internal-sftp\n",
            self.addr
        );
        fs::write(dir.join("sshd_config"), config).unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.sshd = Some(child);
        let start = Instant::now();
        while TcpStream::connect((self.addr.as_str(), 22)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd in {}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let key = fs::read_to_string(dir.join("hostkey.pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        format!("{} {} {}\n", self.addr, key[0], key[1])
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        if let Some(c) = &mut self.sshd {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn keygen(dir: &Path) {
    for k in ["hostkey", "id"] {
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", k, "-f"])
            .arg(dir.join(k))
            .status()
            .unwrap();
        assert!(st.success());
    }
    fs::copy(dir.join("id.pub"), dir.join("authorized_keys")).unwrap();
}

/// Polls `/api/status` until `ok` holds (at most `secs`), returning the status it held for.
pub(crate) fn wait_status(
    port: u16,
    secs: u64,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let s = status(port);
        if ok(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn host_row<'a>(s: &'a serde_json::Value, addr: &str) -> Option<&'a serde_json::Value> {
    s["hosts"].as_array()?.iter().find(|h| h["host"] == addr)
}

fn job<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name}: {s:#}"))
}

fn events(s: &serde_json::Value, kind: &str) -> usize {
    s["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .count()
}

/// The config of the big test: a job every 2 s, an overdue calendar job, the fleet with the
/// host-up trigger, and a sweep of 127.0.0.0/29 plus the namespace host every 2 s.
fn big_config(t: &Path, host: &NetHost, keys: &Path) -> PathBuf {
    let d = t.display();
    let text = format!(
        r#"[alert]
from = "vault <vault@localhost>"

[job.quick]
source = "{d}/src"
repo = "{d}/repo-quick"
every = "2s"
full_on = "never"

[job.stale]
source = "{d}/src"
repo = "{d}/repo-stale"
at = "0 0 1 1 *"
max_age = "3s"
alert_to = ["vaultd@localhost"]

[fleet]
hosts = ["root@{addr}"]
paths = ["{d}/hosttree"]
repo = "{d}/repo-fleet"
identity = ["{k}/id"]
known_hosts = "{k}/known_hosts"
on_up = true
max_age = "1h"
alert_to = ["vaultd@localhost"]

[sweep.lan]
targets = ["127.0.0.0/29", "{addr}"]
every = "2s"
timeout = "300ms"
retries = 0
alert_to = ["vaultd@localhost"]
"#,
        addr = host.addr,
        k = keys.display(),
    );
    let path = t.join("vault.toml");
    fs::write(&path, text).unwrap();
    path
}

/// The families and samples `/metrics` holds, as the prometheus_client package parses them.
fn parse_metrics(text: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [[s.labels, s.value] for s in fam.samples]
print(json.dumps(out))
"#;
    let mut c = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_daemon_backs_up_sweeps_alerts_triggers_and_serves_its_status() {
    if !require_root("network namespaces, sshd and /var/mail") || !postfix_ready() {
        return;
    }
    fresh_mailbox("vaultd");
    let t = tempfile::tempdir().unwrap();
    let keys = t.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    keygen(&keys);
    write(t.path().join("src/a.txt"), "a");
    for i in 0..20 {
        write(
            t.path().join(format!("hosttree/d{}/f{i}.txt", i % 3)),
            format!("host file {i}"),
        );
    }
    let mut host = NetHost::new();
    let known = host.sshd(&keys);
    fs::write(keys.join("known_hosts"), known).unwrap();
    host.down();
    let cfg = big_config(t.path(), &host, &keys);
    let port = free_port();
    let mut child = Command::new(vault_bin())
        .args([
            "daemon",
            "--config",
            p(&cfg),
            "--listen",
            &port.to_string(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    wait_for_listener(port);
    // Two sweeps see the host down (the first only learns it).
    wait_status(port, 15, "two sweeps with the host down", |s| {
        s["sweeps"][0]["timings"]
            .as_array()
            .is_some_and(|t| t.len() >= 2)
            && host_row(s, &host.addr).is_some_and(|h| h["up"] == false)
    });
    host.up();
    let up_at = Instant::now();
    let s = wait_status(port, 15, "the host-up trigger", |s| {
        events(s, "trigger") == 1
    });
    let trigger_s = up_at.elapsed().as_secs_f64();
    let s2 = wait_status(port, 30, "the fleet snapshot", |s| {
        job(s, "fleet")["last_snapshot"].is_string()
    });
    println!(
        "host up -> fleet backup started after {trigger_s:.2} s (sweep every 2 s), snapshot after {:.2} s",
        up_at.elapsed().as_secs_f64()
    );
    assert!(trigger_s <= 2.0 + 1.0, "{trigger_s} s: {s:#}");
    assert_eq!(job(&s2, "fleet")["outcome"], "ok", "{s2:#}");
    host.down();
    let s = wait_status(port, 20, "DOWN, overdue and 3 snapshots", |s| {
        events(s, "down") == 1
            && job(s, "stale")["overdue"] == true
            && job(s, "quick")["runs"].as_u64().unwrap_or(0) >= 3
    });
    let within = started.elapsed().as_secs_f64();
    println!("all of it within {within:.1} s of the daemon's start");
    assert!(within <= 30.0, "{within}");
    check_status(&s, &host.addr);
    check_mail(&host.addr);
    check_metrics(port, &host.addr);
    check_page(port);
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(st.code(), Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["backups"].as_array().unwrap().len() >= 4, "{report}");
    for repo in ["repo-quick", "repo-fleet"] {
        vault_ok(
            &[
                "check",
                "--repo",
                p(&t.path().join(repo)),
                "--read-data",
                "-q",
            ],
            0,
        );
    }
    let r = vault_ok(
        &[
            "snapshots",
            "--repo",
            p(&t.path().join("repo-fleet")),
            "--json",
        ],
        0,
    )
    .json();
    assert_eq!(
        r[0]["source"],
        format!("{}:{}/hosttree", host.addr, t.path().display())
    );
}

pub(crate) fn wait_for_listener(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "no status page");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `/api/status` holds the jobs, the hosts and the events.
fn check_status(s: &serde_json::Value, addr: &str) {
    let quick = job(s, "quick");
    assert_eq!(quick["outcome"], "ok", "{s:#}");
    assert!(quick["last_success"].as_i64().is_some(), "{s:#}");
    assert_eq!(job(s, "stale")["overdue"], true);
    assert_eq!(job(s, "stale")["runs"], 0);
    assert_eq!(host_row(s, addr).unwrap()["up"], false);
    assert!(host_row(s, addr).unwrap()["last_backup"].is_i64(), "{s:#}");
    assert_eq!(host_row(s, "127.0.0.1").unwrap()["up"], true);
    assert!(host_row(s, "127.0.0.1").unwrap()["rtt_ms"].is_f64());
    assert_eq!(events(s, "up"), 1, "{s:#}");
    assert_eq!(events(s, "overdue"), 1, "{s:#}");
    let repos: Vec<&str> = s["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repo"].as_str().unwrap())
        .collect();
    assert!(repos.iter().any(|r| r.ends_with("repo-quick")), "{repos:?}");
    assert!(repos.iter().any(|r| r.ends_with("repo-fleet")), "{repos:?}");
}

/// Exactly one DOWN, one up-again and one overdue mail reach the mailbox.
fn check_mail(addr: &str) {
    let mails = mailbox("vaultd", 3);
    std::thread::sleep(Duration::from_secs(3));
    let mails = if mails.len() == 3 {
        mailbox("vaultd", 3)
    } else {
        mails
    };
    let subjects: Vec<&str> = mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    let count = |needle: &str| subjects.iter().filter(|s| s.contains(needle)).count();
    assert_eq!(count(&format!("{addr} is DOWN")), 1, "{subjects:?}");
    assert_eq!(count(&format!("{addr} is up again")), 1, "{subjects:?}");
    assert_eq!(count("job stale is OVERDUE"), 1, "{subjects:?}");
}

/// `/metrics` parses as the Prometheus text format and has the job and host series.
fn check_metrics(port: u16, addr: &str) {
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let m = parse_metrics(&text);
    let sample = |fam: &str, key: &str, val: &str| -> Option<f64> {
        m[fam]
            .as_array()?
            .iter()
            .find(|s| s[0][key] == val)
            .and_then(|s| s[1].as_f64())
    };
    assert!(sample("vault_job_last_success_timestamp_seconds", "job", "quick").unwrap() > 1.7e9);
    assert!(
        sample("vault_job_files", "job", "fleet").unwrap() >= 20.0,
        "{text}"
    );
    assert_eq!(
        sample("vault_job_overdue", "job", "stale"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample("vault_host_up", "host", addr), Some(0.0), "{text}");
    assert_eq!(
        sample("vault_host_up", "host", "127.0.0.1"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample("vault_host_rtt_seconds", "host", "127.0.0.1").is_some(),
        "{text}"
    );
    assert!(
        m["vault_repository_size_bytes"].as_array().unwrap().len() >= 2,
        "{text}"
    );
    let (code, _) = http_get(port, "/nothing-here");
    assert_eq!(code, 404);
}

/// Headless Chromium renders the page: a screenshot in the test output folder, and the
/// rendered DOM holds the jobs table, the host grid and the chart, with no console error.
fn check_page(port: u16) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon-status");
    fs::create_dir_all(&out).unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let shot = out.join("status.png");
    let _ = fs::remove_file(&shot);
    let chromium = |extra: &[&str]| {
        let o = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg("--window-size=1280,1400")
            .arg(format!("--user-data-dir={}", out.join("profile").display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium (scripts/test.sh installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let o = chromium(&[&format!("--screenshot={}", shot.display())]);
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(fs::metadata(&shot).unwrap().len() > 10_000, "{log}");
    let o = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    let log = log + &String::from_utf8_lossy(&o.stderr);
    println!("screenshot: {}", shot.display());
    for needle in [
        "<table id=\"jobs\"",
        "data-job=\"quick\"",
        "data-job=\"stale\" class=\"bad\"",
        "<div class=\"grid\" id=\"hosts\"",
        "class=\"host down\"",
        "class=\"host up\"",
        "<svg class=\"chart\"",
        "<polyline class=\"size\"",
        "<table id=\"events\"",
    ] {
        assert!(dom.contains(needle), "{needle} not in the DOM:\n{dom}");
    }
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    fs::write(out.join("status.dom.html"), dom).unwrap();
}

/// A tree of `n` files of 5 MB that do not compress.
fn big_tree(dir: &Path, n: usize) {
    let mut rnd = fs::File::open("/dev/urandom").unwrap();
    let mut buf = vec![0u8; 5_000_000];
    for i in 0..n {
        rnd.read_exact(&mut buf).unwrap();
        write(dir.join(format!("f{i:03}.bin")), &buf);
    }
}

fn big_job_config(t: &Path, repo: &str) -> PathBuf {
    let d = t.display();
    let text = format!(
        "[job.big]\nsource = \"{d}/big\"\nrepo = \"{d}/{repo}\"\nevery = \"1h\"\n\n\
         [sweep.lan]\ntargets = [\"127.0.0.0/29\"]\nevery = \"300ms\"\ntimeout = \"300ms\"\n"
    );
    let path = t.join(format!("{repo}.toml"));
    fs::write(&path, text).unwrap();
    path
}

fn start_daemon(cfg: &Path, port: u16) -> Child {
    let child = Command::new(vault_bin())
        .args(["daemon", "--config", p(cfg), "--listen", &port.to_string()])
        .args(["--jobs", "2", "--parallel", "8", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_listener(port);
    child
}

fn threads(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The thread budget of docs/architecture.md for `vault daemon --jobs 2 --parallel 8 --listen`
/// with one client at a time: main, signal, 2 compute, 8 network, the task worker, the ticker,
/// and tiny_http's accept thread and its 4 connection threads.
const BUDGET: usize = 2 + 2 + 8 + 1 + 1 + 5;

#[test]
fn a_full_backup_keeps_the_thread_budget_and_does_not_slow_sweeps_and_sigterm_is_clean() {
    if !require_root("ICMP sweeps") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    big_tree(&t.path().join("big"), 60);
    let port = free_port();
    let mut child = start_daemon(&big_job_config(t.path(), "repo"), port);
    let pid = child.id();
    let mut most = 0;
    let start = Instant::now();
    let mut polled = Instant::now();
    let s = loop {
        most = most.max(threads(pid));
        if polled.elapsed() > Duration::from_millis(250) {
            polled = Instant::now();
            let s = status(port);
            let idle_after = s["sweeps"][0]["timings"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .take_while(|x| x["busy"] == false)
                .count();
            if s["jobs"][0]["outcome"].is_string() && idle_after >= 8 {
                break s;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the backup did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s["jobs"][0]["outcome"], "ok", "{s:#}");
    let timings = s["sweeps"][0]["timings"].as_array().unwrap();
    let pick = |busy: bool| -> Vec<f64> {
        timings
            .iter()
            .filter(|x| x["busy"] == busy)
            .map(|x| x["duration_s"].as_f64().unwrap())
            .collect()
    };
    let (busy, idle) = (pick(true), pick(false));
    let (mb, mi) = (median(busy.clone()), median(idle.clone()));
    println!(
        "threads: at most {most} (budget {BUDGET}); sweep of 127.0.0.0/29: median {:.2} ms over {} sweeps during the full backup ({} s), {:.2} ms over {} idle: {:.2}x",
        mb * 1000.0,
        busy.len(),
        s["jobs"][0]["duration_s"],
        mi * 1000.0,
        idle.len(),
        mb / mi
    );
    assert!(busy.len() >= 3, "{s:#}");
    assert!(most <= BUDGET, "{most} threads");
    assert!(mb <= 2.0 * mi, "{mb} vs {mi}");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    sigterm_during_a_backup(t.path());
}

/// SIGTERM while the backup runs lets it finish; twice abandons it. Either way the repository
/// passes `check --read-data` and holds a whole snapshot or none.
fn sigterm_during_a_backup(t: &Path) {
    for (repo, signals, snapshots) in [("once", 1, 1), ("twice", 2, 0)] {
        let port = free_port();
        let mut child = start_daemon(&big_job_config(t, repo), port);
        wait_status(port, 30, "the backup running", |s| s["running"] == "big");
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..signals {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(100));
        }
        let st = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(st.code(), Some(0), "{repo}: {err}");
        let r = t.join(repo);
        vault_ok(&["check", "--repo", p(&r), "--read-data", "-q"], 0);
        let list = vault_ok(&["snapshots", "--repo", p(&r), "--json"], 0).json();
        assert_eq!(list.as_array().unwrap().len(), snapshots, "{repo}: {list}");
        let left: Vec<_> = fs::read_dir(r.join("archives"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(left.len(), snapshots, "{repo}: {left:?}");
    }
}
