//! SSH sessions (libssh2 through the ssh2 crate) for `vault ssh` and SFTP replication.
//!
//! Promises:
//! - Host keys are checked against a known_hosts file (hashed entries understood): an unknown
//!   host is refused unless `accept_new`, which records it; a changed key is always refused, with
//!   the fingerprint shown.
//! - Every step is bounded by one deadline: TCP connect, handshake, authentication and the
//!   command (libssh2 has no timeout of its own unless told).
//! - Authentication tries, in order: the SSH agent's identities (all of them), the given key
//!   files, then the password. Secrets are never printed, logged or put in errors.
//! - A command's stdout and stderr are read together without deadlock, however much either one
//!   produces.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

/// `[user@]host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshTarget {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    /// Parses `[user@]host[:port]`; IPv6 addresses in brackets (`[::1]:2222`).
    pub fn parse(s: &str) -> Result<SshTarget, String> {
        let bad = || format!("bad SSH target '{s}': expected [user@]host[:port]");
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => return Err(bad()),
            None => (None, s),
        };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 22,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').expect("one colon");
            (h.to_string(), p.parse().map_err(|_| bad())?)
        } else {
            (rest.to_string(), 22)
        };
        if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(SshTarget { user, host, port })
    }

    /// How the host appears in known_hosts: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != 22 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// How to authenticate. Secrets live here only; `Debug` hides them.
#[derive(Clone, Default)]
pub struct SshAuth {
    /// Default user for targets without `user@` (else $USER).
    pub user: Option<String>,
    pub keys: Vec<PathBuf>,
    pub passphrase: Option<String>,
    pub password: Option<String>,
    /// Try the SSH agent (when SSH_AUTH_SOCK is set).
    pub agent: bool,
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshAuth")
            .field("user", &self.user)
            .field("keys", &self.keys)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<hidden>"))
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("agent", &self.agent)
            .finish()
    }
}

/// Host key policy and patience.
#[derive(Clone, Debug)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub accept_new: bool,
    /// Covers connect, handshake, authentication and the command.
    pub timeout: Duration,
}

/// What went wrong with one host.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot resolve: {0}")]
    Resolve(String),
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("timed out after {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("SSH handshake failed: {0}")]
    Handshake(String),
    #[error("unknown host key ({fingerprint}); refusing. Check it, then pass --accept-new to trust and record it in {known_hosts}")]
    UnknownHost {
        fingerprint: String,
        known_hosts: String,
    },
    #[error("HOST KEY CHANGED ({fingerprint} does not match {known_hosts}); refusing. This may be an attack; if the key really changed, remove the old entry")]
    HostKeyChanged {
        fingerprint: String,
        known_hosts: String,
    },
    #[error("cannot update {0}: {1}")]
    KnownHostsFile(String, String),
    #[error("authentication failed for user '{user}' (tried: {tried})")]
    Auth { user: String, tried: String },
    #[error("{0}")]
    Session(String),
}

fn timeout_or(e: ssh2::Error, what: &'static str, limit: Duration, deadline: Instant) -> SshError {
    if Instant::now() >= deadline || e.code() == ssh2::ErrorCode::Session(-9) {
        SshError::Timeout(limit, what)
    } else {
        SshError::Session(format!("{what}: {}", e.message()))
    }
}

fn b64(bytes: &[u8]) -> String {
    crate::hash::base64(bytes, false)
}

/// An authenticated session and the time left of its deadline.
pub struct Connected {
    pub session: Session,
    pub deadline: Instant,
    /// Cuts the connection at the deadline (or on cancel); disarm it for work that may take
    /// longer (transfers).
    pub guard: crate::ops::ssh_guard::Watchdog,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

fn remaining_ms(deadline: Instant) -> u32 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .clamp(1, u128::from(u32::MAX)) as u32
}

fn banner_error(e: crate::ops::ssh_guard::BannerError, limit: Duration) -> SshError {
    use crate::ops::ssh_guard::BannerError;
    match e {
        BannerError::TimedOut => SshError::Timeout(limit, "waiting for the SSH banner"),
        BannerError::Closed => {
            SshError::Handshake("the server closed the connection before identifying itself".into())
        }
        BannerError::NotSsh(why) => SshError::Handshake(why),
        BannerError::Io(e) => SshError::Connect(e),
    }
}

/// Parallel connections (vault ssh on many hosts) check and add keys one at a time, so one
/// never reads the file while another rewrites it; the file is replaced by rename, never
/// truncated in place.
static KNOWN_HOSTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Connects, checks the host key, authenticates. Every step ends by `opts.timeout`, or when
/// `cancel` is set.
pub fn connect(
    t: &SshTarget,
    auth: &SshAuth,
    opts: &SshOptions,
    cancel: Option<&crate::pool::CancelToken>,
) -> Result<Connected, SshError> {
    use crate::ops::ssh_guard::{check_banner, BannerError, Watchdog};
    let deadline = Instant::now() + opts.timeout;
    let tcp = open_tcp(t, opts.timeout)?;
    let guard = Watchdog::arm(&tcp, deadline, cancel.cloned());
    check_banner(&tcp, deadline).map_err(|e| match e {
        // The watchdog cuts the socket at the deadline: an end seen then is the timeout
        // (whichever of the two woke first on a busy machine).
        BannerError::Closed if Instant::now() >= deadline => {
            SshError::Timeout(opts.timeout, "waiting for the SSH banner")
        }
        e => banner_error(e, opts.timeout),
    })?;
    let mut session = Session::new().map_err(|e| SshError::Session(e.message().to_string()))?;
    session.set_tcp_stream(tcp);
    handshake(&mut session, opts.timeout, deadline)?;

    let host_key = HostKey::of(&session)?;
    // Held until `connect` returns, so authentication is serialised with it too.
    let _known_hosts_lock = KNOWN_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    check_known_hosts(&session, t, opts, host_key)?;

    authenticate(&session, t, auth, opts, deadline)?;
    session.set_timeout(remaining_ms(deadline));
    Ok(Connected {
        session,
        deadline,
        guard,
    })
}

/// Resolves the target and opens the TCP connection to its first address, within `limit`.
fn open_tcp(t: &SshTarget, limit: Duration) -> Result<TcpStream, SshError> {
    let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| SshError::Resolve(e.to_string()))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| SshError::Resolve("no address".into()))?;
    let tcp = TcpStream::connect_timeout(&addr, limit).map_err(|e| {
        if e.kind() == io::ErrorKind::TimedOut {
            SshError::Timeout(limit, "connect")
        } else {
            SshError::Connect(e)
        }
    })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Runs the SSH handshake on a session that has its TCP stream, within the deadline.
fn handshake(session: &mut Session, limit: Duration, deadline: Instant) -> Result<(), SshError> {
    session.set_timeout(remaining_ms(deadline));
    session
        .handshake()
        .map_err(|e| match timeout_or(e, "handshake", limit, deadline) {
            SshError::Session(m) => SshError::Handshake(m),
            other => other,
        })
}

/// The server's host key, as the handshake left it in the session.
struct HostKey<'a> {
    key: &'a [u8],
    kind: ssh2::HostKeyType,
    /// `SHA256:<base64>`, for error messages.
    fingerprint: String,
}

impl<'a> HostKey<'a> {
    /// Reads the host key and its SHA-256 fingerprint from a session after the handshake.
    fn of(session: &'a Session) -> Result<HostKey<'a>, SshError> {
        let (key, kind) = session
            .host_key()
            .ok_or_else(|| SshError::Handshake("the server sent no host key".into()))?;
        let fingerprint = format!(
            "SHA256:{}",
            b64(session.host_key_hash(HashType::Sha256).unwrap_or_default())
        );
        Ok(HostKey {
            key,
            kind,
            fingerprint,
        })
    }
}

/// Checks the host key against `opts.known_hosts`: refuses a changed key, and an unknown one
/// unless `opts.accept_new` (then records it). The caller holds the `KNOWN_HOSTS` lock.
fn check_known_hosts(
    session: &Session,
    t: &SshTarget,
    opts: &SshOptions,
    host_key: HostKey<'_>,
) -> Result<(), SshError> {
    let kh_path = opts.known_hosts.display().to_string();
    let mut kh = session
        .known_hosts()
        .map_err(|e| SshError::Session(e.message().to_string()))?;
    if opts.known_hosts.exists() {
        kh.read_file(&opts.known_hosts, KnownHostFileKind::OpenSSH)
            .map_err(|e| SshError::KnownHostsFile(kh_path.clone(), e.message().to_string()))?;
    }
    match kh.check_port(&t.host, t.port, host_key.key) {
        CheckResult::Match => {}
        CheckResult::Mismatch => {
            return Err(SshError::HostKeyChanged {
                fingerprint: host_key.fingerprint,
                known_hosts: kh_path,
            })
        }
        CheckResult::NotFound | CheckResult::Failure => {
            if !opts.accept_new {
                return Err(SshError::UnknownHost {
                    fingerprint: host_key.fingerprint,
                    known_hosts: kh_path,
                });
            }
            kh.add(
                &t.known_hosts_name(),
                host_key.key,
                "added by vault --accept-new",
                host_key.kind.into(),
            )
            .map_err(|e| SshError::KnownHostsFile(kh_path.clone(), e.message().to_string()))?;
            write_known_hosts(&kh, &opts.known_hosts, &kh_path)?;
        }
    }
    Ok(())
}

/// Writes `kh` to `path` through a temporary file and a rename (never truncating in place);
/// `kh_path` names the file in errors.
fn write_known_hosts(kh: &ssh2::KnownHosts, path: &Path, kh_path: &str) -> Result<(), SshError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(format!(".vault-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    kh.write_file(&tmp, KnownHostFileKind::OpenSSH)
        .map_err(|e| SshError::KnownHostsFile(kh_path.to_string(), e.message().to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SshError::KnownHostsFile(kh_path.to_string(), e.to_string())
    })?;
    Ok(())
}

/// The user to log in as: the target's `user@`, else `auth.user`, else $USER, else root.
fn login_user(t: &SshTarget, auth: &SshAuth) -> String {
    t.user
        .clone()
        .or_else(|| auth.user.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

/// Authenticates: the agent's identities, then the key files, then the password. The error
/// lists what was tried (never the secrets).
fn authenticate(
    session: &Session,
    t: &SshTarget,
    auth: &SshAuth,
    opts: &SshOptions,
    deadline: Instant,
) -> Result<(), SshError> {
    let user = login_user(t, auth);
    let mut tried: Vec<String> = Vec::new();
    if auth.agent
        && std::env::var_os("SSH_AUTH_SOCK").is_some()
        && try_agent(session, &user, deadline)
    {
        tried.push("agent".into());
    }
    for k in &auth.keys {
        if session.authenticated() {
            break;
        }
        session.set_timeout(remaining_ms(deadline));
        let _ = session.userauth_pubkey_file(&user, None, k, auth.passphrase.as_deref());
        tried.push(format!("key {}", k.display()));
        if Instant::now() >= deadline {
            return Err(SshError::Timeout(opts.timeout, "authentication"));
        }
    }
    if !session.authenticated() {
        if let Some(pw) = &auth.password {
            session.set_timeout(remaining_ms(deadline));
            let _ = session.userauth_password(&user, pw);
            tried.push("password".into());
        }
    }
    if !session.authenticated() {
        if Instant::now() >= deadline {
            return Err(SshError::Timeout(opts.timeout, "authentication"));
        }
        if tried.is_empty() {
            tried.push("nothing: no agent, no -i KEY, no password".into());
        }
        return Err(SshError::Auth {
            user,
            tried: tried.join(", "),
        });
    }
    Ok(())
}

/// Tries each of the SSH agent's identities until one authenticates; true when the agent
/// could be reached and listed (whether or not an identity was accepted).
fn try_agent(session: &Session, user: &str, deadline: Instant) -> bool {
    let Ok(mut agent) = session.agent() else {
        return false;
    };
    if !(agent.connect().is_ok() && agent.list_identities().is_ok()) {
        return false;
    }
    for id in agent.identities().unwrap_or_default() {
        session.set_timeout(remaining_ms(deadline));
        if agent.userauth(user, &id).is_ok() && session.authenticated() {
            break;
        }
    }
    true
}

/// A finished remote command.
#[derive(Clone, Debug, Default)]
pub struct CommandOutput {
    pub exit_status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `command` and collects both streams, within the session's deadline.
pub fn exec(c: &Connected, command: &str, limit: Duration) -> Result<CommandOutput, SshError> {
    let s = &c.session;
    let mut ch = s
        .channel_session()
        .map_err(|e| timeout_or(e, "opening a channel", limit, c.deadline))?;
    ch.exec(command)
        .map_err(|e| timeout_or(e, "starting the command", limit, c.deadline))?;
    let _ = ch.send_eof();
    s.set_blocking(false);
    let mut out = CommandOutput::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut err_stream = ch.stderr();
    loop {
        let mut progress = false;
        match ch.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                out.stdout.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) if Instant::now() >= c.deadline => {
                return Err(SshError::Timeout(limit, "the command"))
            }
            Err(e) => return Err(SshError::Session(format!("reading stdout: {e}"))),
        }
        match err_stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                out.stderr.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) if Instant::now() >= c.deadline => {
                return Err(SshError::Timeout(limit, "the command"))
            }
            Err(e) => return Err(SshError::Session(format!("reading stderr: {e}"))),
        }
        if ch.eof() && !progress {
            break;
        }
        if Instant::now() >= c.deadline {
            return Err(SshError::Timeout(limit, "the command"));
        }
        if !progress {
            wait_socket(s, Duration::from_millis(20));
        }
    }
    s.set_blocking(true);
    s.set_timeout(remaining_ms(c.deadline));
    ch.wait_close()
        .map_err(|e| timeout_or(e, "closing the channel", limit, c.deadline))?;
    // Data that came in after the end-of-file message (OpenSSH may still send stderr then)
    // waits in the session's queue: take it before the channel goes.
    drain_closed(&mut ch, &mut out)?;
    out.exit_status = ch
        .exit_status()
        .map_err(|e| SshError::Session(e.message().to_string()))?;
    Ok(out)
}

/// Reads what a closed channel still holds queued, stdout and stderr.
fn drain_closed(ch: &mut ssh2::Channel, out: &mut CommandOutput) -> Result<(), SshError> {
    let mut buf = vec![0u8; 64 * 1024];
    for (stream, into) in [(0, &mut out.stdout), (1, &mut out.stderr)] {
        let mut s = ch.stream(stream);
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) => return Err(SshError::Session(format!("reading after close: {e}"))),
            }
        }
    }
    Ok(())
}

/// Waits until the session's socket is readable (or `max` passes).
pub(crate) fn wait_socket(s: &Session, max: Duration) {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe {
        libc::poll(&mut p, 1, max.as_millis() as libc::c_int);
    }
}

/// The default known_hosts file: ~/.ssh/known_hosts.
pub fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".ssh/known_hosts")
}

/// Reads a secret from a file (first line, trailing newline dropped).
pub fn read_secret_file(p: &Path) -> io::Result<String> {
    let s = std::fs::read_to_string(p)?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_base64() {
        let t = SshTarget::parse("bob@127.0.0.1:2222").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("bob"), "127.0.0.1", 2222)
        );
        assert_eq!(t.known_hosts_name(), "[127.0.0.1]:2222");
        let t = SshTarget::parse("[::1]:2200").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 2200));
        assert_eq!(SshTarget::parse("localhost").unwrap().port, 22);
        for bad in ["", "@h", "h:0", "h:x", "[::1", "a b"] {
            assert!(SshTarget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(b64(b"abc"), "YWJj");
        assert_eq!(b64(b"ab"), "YWI");
    }
}

/// One host's outcome of `vault ssh`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostResult {
    pub host: String,
    /// The command's exit status; null when it did not run to the end.
    pub exit_status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Why the host failed (connection, host key, authentication, timeout).
    pub error: Option<String>,
}

impl HostResult {
    /// Failed, or ran and exited non-zero.
    pub fn failed(&self) -> bool {
        self.error.is_some() || self.exit_status != Some(0)
    }
}

/// Runs `command` on every target, as many hosts at a time as the pool's network lane has
/// workers (`--parallel`). Results come back in target order; a host that hangs is cut off at
/// the timeout and never holds up the others beyond it.
pub fn run_many(
    targets: &[SshTarget],
    command: &str,
    auth: &SshAuth,
    opts: &SshOptions,
    pool: &crate::pool::Pool,
    cancel: &crate::pool::CancelToken,
) -> crate::Result<Vec<HostResult>> {
    let mut out = Vec::with_capacity(targets.len());
    let r = pool.network().map_ordered(
        cancel,
        targets.iter(),
        || (),
        |_, t| {
            let host = t.to_string();
            let r =
                connect(t, auth, opts, Some(cancel)).and_then(|c| exec(&c, command, opts.timeout));
            match r {
                Ok(o) => HostResult {
                    host,
                    exit_status: Some(o.exit_status),
                    stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
                    error: None,
                },
                Err(e) => HostResult {
                    host,
                    exit_status: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    error: Some(e.to_string()),
                },
            }
        },
        |r| {
            out.push(r);
            Ok(())
        },
    );
    crate::error::pool_done(r)?;
    Ok(out)
}
