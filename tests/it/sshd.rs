//! A real OpenSSH sshd for the tests: its own host key, config and port on 127.0.0.1 (and
//! 127.0.0.2), started by the harness and killed when dropped.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The password user the harness creates.
pub const PW_USER: &str = "vaulttest";
pub const PW_PASSWORD: &str = "vault-test-password-7";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Creates the password user once (idempotent).
fn ensure_password_user() {
    let exists = Command::new("id")
        .arg(PW_USER)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !exists {
        run(Command::new("useradd").args(["-m", "-s", "/bin/sh", PW_USER]));
    }
    let mut c = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(c.stdin.take().unwrap(), "{PW_USER}:{PW_PASSWORD}").unwrap();
    assert!(c.wait().unwrap().success(), "chpasswd");
}

impl Sshd {
    /// Starts sshd; the client key `id` is authorised for root.
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all("/run/sshd").unwrap();
        for k in ["hostkey", "id", "otherkey"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", k, "-f"])
                .arg(d.join(k)));
        }
        fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
        ensure_password_user();
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {d}/hostkey\n\
             PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
             PermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             UsePAM no\nMaxStartups 200\nMaxSessions 200\nLogLevel ERROR\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { dir, port, child }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn target(&self, user: &str, host: &str) -> String {
        format!("{user}@{host}:{}", self.port)
    }

    /// A known_hosts file holding this server's key for 127.0.0.1 and 127.0.0.2.
    pub fn known_hosts(&self, into: &Path) {
        let key = fs::read_to_string(self.path("hostkey.pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        let line = |h: &str| format!("[{h}]:{} {} {}\n", self.port, key[0], key[1]);
        fs::write(into, line("127.0.0.1") + &line("127.0.0.2")).unwrap();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
