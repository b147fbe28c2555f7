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
    addr: String,
    bind: Option<(PathBuf, PathBuf)>,
    /// Tools replaced by `false` in its mount namespace (a host without them).
    hidden: &'static [&'static str],
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
    /// Starts sshd on 127.0.0.1 and 127.0.0.2; the client key `id` is authorised for root.
    pub fn start() -> Sshd {
        let dir = Sshd::keys();
        fs::copy(
            dir.path().join("id.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        ensure_password_user();
        let listen = "ListenAddress 127.0.0.1\nListenAddress 127.0.0.2\n";
        Sshd::spawn(dir, listen, "127.0.0.1", None)
    }

    /// A fleet host: sshd on `addr` only, authorising the client key `client_pub`. With
    /// `bind` (`(tree, mount point)`), it runs in a mount namespace of its own where `tree` is
    /// bind-mounted on the mount point: each host serves a different tree at the same path.
    pub fn start_host(addr: &str, client_pub: &Path, bind: Option<(&Path, &Path)>) -> Sshd {
        let dir = Sshd::keys();
        fs::copy(client_pub, dir.path().join("authorized_keys")).unwrap();
        Sshd::spawn(dir, &format!("ListenAddress {addr}\n"), addr, bind)
    }

    /// A fleet host as [`Sshd::start_host`] whose `/usr/bin/TOOL` for each of `tools` is
    /// `false`.
    pub fn start_host_without(
        addr: &str,
        client_pub: &Path,
        bind: (&Path, &Path),
        tools: &'static [&'static str],
    ) -> Sshd {
        let dir = Sshd::keys();
        fs::copy(client_pub, dir.path().join("authorized_keys")).unwrap();
        let listen = format!("ListenAddress {addr}\n");
        Sshd::spawn_hiding(dir, (&listen, addr), Some(bind), tools)
    }

    fn keys() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        for k in ["hostkey", "id", "otherkey"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", k, "-f"])
                .arg(dir.path().join(k)));
        }
        dir
    }

    fn spawn(
        dir: tempfile::TempDir,
        listen: &str,
        addr: &str,
        bind: Option<(&Path, &Path)>,
    ) -> Sshd {
        Sshd::spawn_hiding(dir, (listen, addr), bind, &[])
    }

    /// Writes the config and starts sshd; `hidden` tools are `false` in its namespace.
    fn spawn_hiding(
        dir: tempfile::TempDir,
        (listen, addr): (&str, &str),
        bind: Option<(&Path, &Path)>,
        hidden: &'static [&'static str],
    ) -> Sshd {
        let d = dir.path();
        let port = free_port();
        let config = format!(
            "Port {port}\n{listen}HostKey {d}/hostkey\n\
             PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
             PermitRootLogin yes\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n\
             UsePAM no\nMaxStartups 200\nMaxSessions 200\nLogLevel ERROR\nSubsystem sftp internal-sftp\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let bind = bind.map(|(t, m)| (t.to_path_buf(), m.to_path_buf()));
        let child = launch(d, bind.as_ref(), (addr, port), hidden);
        Sshd {
            dir,
            port,
            child,
            addr: addr.to_string(),
            bind,
            hidden,
        }
    }

    /// Starts this server again (after [`Sshd::kill_all`]): same address, port and host key.
    pub fn restart(&mut self) {
        let (bind, addr) = (self.bind.as_ref(), (self.addr.as_str(), self.port));
        self.child = launch(self.dir.path(), bind, addr, self.hidden);
    }

    /// Kills sshd and every process of its sessions (all of its mount namespace: a host
    /// started with `bind` only), as a host that dies does.
    pub fn kill_all(&mut self) {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let mine = ns(&self.child.id().to_string());
        let own = ns("self");
        if mine.is_some() && mine != own {
            for e in fs::read_dir("/proc").unwrap().flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if pid.bytes().all(|b| b.is_ascii_digit()) && ns(&pid) == mine {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn target(&self, user: &str, host: &str) -> String {
        format!("{user}@{host}:{}", self.port)
    }

    /// A known_hosts file holding this server's key for 127.0.0.1 and 127.0.0.2.
    pub fn known_hosts(&self, into: &Path) {
        fs::write(
            into,
            self.known_line("127.0.0.1") + &self.known_line("127.0.0.2"),
        )
        .unwrap();
    }

    /// This server's known_hosts line for `host` (on its port).
    pub fn known_line(&self, host: &str) -> String {
        let key = fs::read_to_string(self.path("hostkey.pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        format!("[{host}]:{} {} {}\n", self.port, key[0], key[1])
    }
}

/// Runs sshd with the config in `d` (in a mount namespace of its own with `bind`) and waits
/// until it answers on `addr`.
fn launch(
    d: &Path,
    bind: Option<&(PathBuf, PathBuf)>,
    addr: (&str, u16),
    hidden: &[&str],
) -> Child {
    let hide: String = hidden
        .iter()
        .map(|t| format!("mount --bind /bin/false /usr/bin/{t} && "))
        .collect();
    let mut cmd = match bind {
        None => Command::new("/usr/sbin/sshd"),
        Some((tree, mnt)) => {
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    r#"{hide}mount --bind "$0" "$1" && shift && exec /usr/sbin/sshd "$@""#
                ))
                .arg(tree)
                .arg(mnt);
            c
        }
    };
    let child = cmd
        .args(["-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd");
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "sshd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_all();
    }
}
