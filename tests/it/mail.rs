//! `vault mail` and `--alert-to` against a real postfix on 127.0.0.1:25 (local delivery to
//! /var/mail/USER) and a STARTTLS + AUTH server (aiosmtpd) the test starts.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) fn postfix_ready() -> bool {
    if TcpStream::connect("127.0.0.1:25").is_ok() {
        return true;
    }
    if Path::new("/usr/sbin/postfix").exists() && is_root() {
        let _ = Command::new("postfix").arg("start").output();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect("127.0.0.1:25").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "postfix must listen on 127.0.0.1:25 in CI (scripts/test.sh starts it)"
    );
    eprintln!("skipping: no postfix on 127.0.0.1:25");
    false
}

/// Creates a local user (once) and empties its mailbox.
pub(crate) fn fresh_mailbox(user: &str) {
    let exists = Command::new("id")
        .arg(user)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        let st = Command::new("useradd").args(["-m", user]).status().unwrap();
        assert!(st.success(), "useradd {user}");
    }
    let _ = fs::remove_file(format!("/var/mail/{user}"));
}

/// The messages in /var/mail/USER, decoded: (subject, body, from, to). Waits for `n`.
pub(crate) fn mailbox(user: &str, n: usize) -> Vec<serde_json::Value> {
    let script = r#"
import json, mailbox, sys
from email.header import decode_header, make_header
out = []
for m in mailbox.mbox(sys.argv[1]):
    body = m.get_payload(decode=True) or b""
    out.append({"subject": str(make_header(decode_header(m["Subject"] or ""))),
                "from": str(make_header(decode_header(m["From"] or ""))),
                "to": str(make_header(decode_header(m["To"] or ""))),
                "body": body.decode("utf-8").replace("\r\n", "\n")})
print(json.dumps(out))
"#;
    let path = format!("/var/mail/{user}");
    let start = Instant::now();
    loop {
        if Path::new(&path).exists() {
            let o = Command::new("python3")
                .args(["-c", script, &path])
                .output()
                .unwrap();
            let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
            if v.len() >= n {
                return v;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{n} mails did not reach {path}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_tutorial_message_reaches_bob_and_alice() {
    if !require_root("local users and /var/mail") || !postfix_ready() {
        return;
    }
    fresh_mailbox("bob");
    fresh_mailbox("alice");
    let mut c = Command::new(vault_bin())
        .args([
            "mail",
            "--to",
            "接收者们 <bob@localhost>",
            "--to",
            "alice@localhost",
        ])
        .args([
            "--from",
            "发送者 <root@localhost>",
            "--subject",
            "python 本地邮件测试",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    c.stdin
        .take()
        .unwrap()
        .write_all("python 本地邮件测试\n".as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for user in ["bob", "alice"] {
        let m = &mailbox(user, 1)[0];
        assert_eq!(m["subject"], "python 本地邮件测试");
        assert_eq!(m["body"], "python 本地邮件测试\n");
        assert_eq!(m["from"], "发送者 <root@localhost>");
        assert!(
            m["to"]
                .as_str()
                .unwrap()
                .contains("接收者们 <bob@localhost>"),
            "{m}"
        );
    }
}

#[test]
fn smtp_errors_are_one_clear_line() {
    if !require_root("local users") || !postfix_ready() {
        return;
    }
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{closed}");
    let r = vault(&[
        "mail",
        "--to",
        "bob@localhost",
        "--body",
        "x",
        "--smtp",
        &url,
    ]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains(&format!("127.0.0.1:{closed}")) && r.stderr.contains("refused"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let r = vault(&["mail", "--to", "no-such-user-here@localhost", "--body", "x"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no-such-user-here@localhost") && r.stderr.contains("550"),
        "{}",
        r.stderr
    );
    let r = vault(&["mail", "--to", "not an address", "--body", "x"]);
    assert_eq!(r.code, 2, "{r:?}");
}

#[test]
fn backup_alerts_and_a_broken_smtp_never_fail_a_backup() {
    if !require_root("local users") || !postfix_ready() {
        return;
    }
    fresh_mailbox("vaultops");
    let t = tempfile::tempdir().unwrap();
    let (src, repo) = (t.path().join("etc-copy"), t.path().join("repo"));
    write(src.join("hosts"), "127.0.0.1 localhost\n");
    let r = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--alert-to",
        "vaultops@localhost",
        "--json",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    let m = &mailbox("vaultops", 1)[0];
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.starts_with(&format!("[vault] backup of {}: full", src.display())),
        "{subject}"
    );
    assert!(subject.ends_with("OK"), "{subject}");
    assert!(m["body"].as_str().unwrap().contains("\"snapshot\""), "{m}");

    // SMTP unreachable: the snapshot is still recorded, exit 0, a warning.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://127.0.0.1:{closed}");
    write(src.join("new"), "x");
    let r = vault(&[
        "backup",
        p(&src),
        "--repo",
        p(&repo),
        "--alert-to",
        "vaultops@localhost",
        "--smtp",
        &url,
        "--full-on",
        "never",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stderr.contains("warning: alert mail not sent"),
        "{}",
        r.stderr
    );
    let list = vault_ok(&["snapshots", "--repo", p(&repo), "--json"], 0).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn a_host_going_down_then_up_sends_exactly_two_alerts() {
    if !require_root("network namespaces") || !postfix_ready() {
        return;
    }
    fresh_mailbox("vaultscan");
    // A namespace joined to this one by a veth pair; vault scans it from here (and so can reach
    // postfix on this namespace's loopback).
    let id = std::process::id() % 100_000;
    let ns = format!("vault-m-{id}");
    let setup = format!(
        "set -e; ip netns add {ns}; ip link add vm{id} type veth peer name vn{id} netns {ns}; \
         ip addr add 10.251.9.1/24 dev vm{id}; ip link set vm{id} up; \
         ip -n {ns} addr add 10.251.9.2/24 dev vn{id}; ip -n {ns} link set vn{id} up; ip -n {ns} link set lo up"
    );
    assert!(Command::new("sh")
        .args(["-c", &setup])
        .status()
        .unwrap()
        .success());
    struct Cleanup(String, u32);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("vm{}", self.1)])
                .status();
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _c = Cleanup(ns.clone(), id);
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let scan = || {
        vault(&[
            "scan",
            "10.251.9.2",
            "--timeout",
            "300ms",
            "--retries",
            "0",
            "--state",
            p(&state),
            "--alert-to",
            "vaultscan@localhost",
        ])
    };
    let ignore = |v: u8| {
        let st = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                &format!("net.ipv4.icmp_echo_ignore_all={v}"),
            ])
            .status()
            .unwrap();
        assert!(st.success());
    };
    assert_eq!(scan().code, 0);
    ignore(1);
    assert_eq!(scan().code, 3);
    assert_eq!(scan().code, 3);
    ignore(0);
    assert_eq!(scan().code, 0);
    assert_eq!(scan().code, 0);
    mailbox("vaultscan", 2);
    // Give a third (wrong) alert the time to arrive before counting.
    std::thread::sleep(Duration::from_secs(1));
    let mails = mailbox("vaultscan", 2);
    let subjects: Vec<&str> = mails
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            "[vault] scan: 10.251.9.2 is DOWN",
            "[vault] scan: 10.251.9.2 is up again"
        ]
    );
}

struct TlsServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server() -> Option<TlsServer> {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-aiosmtpd is needed and CI is set"
        );
        eprintln!("skipping: python3-aiosmtpd is not installed");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req");
    fs::create_dir(d.join("out")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp/starttls_server.py");
    let mut child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(d.join("cert.pem"))
        .arg(d.join("key.pem"))
        .arg(port.to_string())
        .arg(d.join("out"))
        .args(["mailer", "s3cret-mail-pw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Some(TlsServer { child, port, dir })
}

#[test]
fn starttls_and_authentication_for_real() {
    let Some(s) = tls_server() else { return };
    let url = format!("smtp://127.0.0.1:{}", s.port);
    let ca = s.dir.path().join("cert.pem");
    let send = |pw: &str, extra: &[&str]| {
        let mut c = Command::new(vault_bin());
        c.args([
            "mail",
            "--to",
            "ops@example.test",
            "--subject",
            "über TLS",
            "--body",
            "gesichert",
            "--smtp",
            &url,
        ]);
        c.args([
            "--smtp-user",
            "mailer",
            "--password-env",
            "MAIL_PW",
            "--smtp-ca",
            ca.to_str().unwrap(),
        ]);
        c.args(extra).env("MAIL_PW", pw);
        Run::from(c.output().unwrap())
    };
    let r = send("s3cret-mail-pw", &["--starttls"]);
    assert_eq!(r.code, 0, "{r:?}");
    let saved = fs::read_to_string(s.dir.path().join("out/0.eml")).unwrap();
    assert!(saved.contains("Subject: =?utf-8?"), "{saved}");
    let r = send("wrong-password", &["--starttls"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("authentication failed") && !r.stderr.contains("wrong-password"),
        "{}",
        r.stderr
    );
    // Without STARTTLS the server refuses to go on.
    let r = send("s3cret-mail-pw", &[]);
    assert_eq!(r.code, 1, "{r:?}");
    assert_eq!(fs::read_dir(s.dir.path().join("out")).unwrap().count(), 1);
}
