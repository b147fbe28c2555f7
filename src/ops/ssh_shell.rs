//! The engine's [`Shell`] over one SSH session: the commands a remote backup runs on its host
//! (the listing and the fetch), `ssh://[user@]host[:port]/path` parsed into a
//! [`RemoteSource`].
//!
//! A command's standard input is written while its output is read, on one thread, with the
//! session non-blocking: a `tar -T -` that answers before it has read all its names cannot
//! deadlock against us. Its standard error is read as it comes (the first 64 KiB kept), so a
//! talkative command never stalls its output either. A host that sends nothing for the
//! `--timeout` is given up on.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::backup::RemoteSource;
use crate::engine::shell::{Finished, RemoteFiles, RemoteStat, Running, Shell, STDERR_KEPT};
use crate::ops::ssh::{self, Connected, SshAuth, SshError, SshOptions, SshTarget};

/// One authenticated session to a host.
pub struct SshShell {
    conn: Connected,
    idle: Duration,
    /// The SFTP channel, opened on first use (None: the server offers none).
    sftp: std::sync::OnceLock<Option<SftpFiles>>,
}

impl std::fmt::Debug for SshShell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshShell")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

/// The host's files over the session's SFTP channel.
struct SftpFiles(ssh2::Sftp);

fn os_path(p: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(p))
}

fn stat_of(s: &ssh2::FileStat) -> RemoteStat {
    RemoteStat {
        mode: s.perm.unwrap_or(0),
        uid: s.uid.unwrap_or(0),
        gid: s.gid.unwrap_or(0),
        size: s.size.unwrap_or(0),
        mtime: s.mtime.map_or(0, |m| i64::try_from(m).unwrap_or(i64::MAX)),
    }
}

impl RemoteFiles for SftpFiles {
    fn lstat(&self, path: &[u8]) -> io::Result<RemoteStat> {
        self.0
            .lstat(os_path(path))
            .map(|s| stat_of(&s))
            .map_err(ssh_io)
    }

    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, RemoteStat)>> {
        use std::os::unix::ffi::OsStrExt;
        let entries = self.0.readdir(os_path(path)).map_err(sftp_io)?;
        Ok(entries
            .iter()
            .filter_map(|(p, st)| Some((p.file_name()?.as_bytes().to_vec(), stat_of(st))))
            .collect())
    }

    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        let t = self.0.readlink(os_path(path)).map_err(sftp_io)?;
        Ok(t.into_os_string().into_vec())
    }

    /// Refuses anything but a regular file (a symlink swapped in since the listing is never
    /// followed to another file's content).
    fn open(&self, path: &[u8]) -> io::Result<Box<dyn Read + '_>> {
        let p = os_path(path);
        let regular = |st: &ssh2::FileStat| st.perm.unwrap_or(0) & libc::S_IFMT == libc::S_IFREG;
        let gone = || io::Error::new(io::ErrorKind::NotFound, "is no longer a regular file");
        let before = self.0.lstat(p).map_err(sftp_io)?;
        if !regular(&before) {
            return Err(gone());
        }
        let mut f = self.0.open(p).map_err(sftp_io)?;
        let now = f.stat().map_err(sftp_io)?;
        if !regular(&now) || (now.size, now.mtime) != (before.size, before.mtime) {
            return Err(gone());
        }
        Ok(Box::new(f))
    }
}

impl SshShell {
    /// Connects and authenticates as `vault ssh` does (same host key policy). The connect
    /// deadline covers only the connection: transfers may last longer.
    pub fn connect(
        t: &SshTarget,
        auth: &SshAuth,
        opts: &SshOptions,
        cancel: Option<&crate::pool::CancelToken>,
    ) -> Result<SshShell, SshError> {
        let conn = ssh::connect(t, auth, opts, cancel)?;
        conn.guard.disarm();
        Ok(SshShell {
            conn,
            idle: opts.timeout,
            sftp: std::sync::OnceLock::new(),
        })
    }
}

/// An SFTP error as an I/O error whose kind tells a missing or forbidden file (the server's
/// answer) from a broken session.
fn sftp_io(e: ssh2::Error) -> io::Error {
    let kind = match e.code() {
        ssh2::ErrorCode::SFTP(2) => io::ErrorKind::NotFound,
        ssh2::ErrorCode::SFTP(3) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.message().to_string())
}

fn ssh_io(e: ssh2::Error) -> io::Error {
    io::Error::other(e.message().to_string())
}

impl Shell for SshShell {
    fn files(&self) -> Option<&dyn RemoteFiles> {
        let files = self.sftp.get_or_init(|| {
            self.conn.session.set_blocking(true);
            self.conn.session.sftp().ok().map(SftpFiles)
        });
        files.as_ref().map(|f| f as &dyn RemoteFiles)
    }

    fn start<'s>(
        &'s self,
        command: &str,
        input: Box<dyn Read + Send + 's>,
    ) -> io::Result<Box<dyn Running + 's>> {
        let s = &self.conn.session;
        s.set_blocking(true);
        s.set_timeout(self.idle.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
        let mut ch = s.channel_session().map_err(ssh_io)?;
        ch.exec(command).map_err(ssh_io)?;
        s.set_blocking(false);
        Ok(Box::new(SshRun {
            shell: self,
            ch,
            input,
            pending: Vec::new(),
            sent: 0,
            input_done: false,
            eof_sent: false,
            stderr: Vec::new(),
            received: 0,
            last: Instant::now(),
        }))
    }
}

/// A command running on the session.
struct SshRun<'a> {
    shell: &'a SshShell,
    ch: ssh2::Channel,
    input: Box<dyn Read + Send + 'a>,
    /// Input read but not yet taken by the channel, from `sent` on.
    pending: Vec<u8>,
    sent: usize,
    input_done: bool,
    eof_sent: bool,
    stderr: Vec<u8>,
    received: u64,
    /// When the host last sent or took something.
    last: Instant,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl SshRun<'_> {
    /// Writes what the channel takes of the input (reading more of it when all read so far
    /// is taken); sends its end once all is written.
    fn pump_input(&mut self) -> io::Result<bool> {
        if self.sent == self.pending.len() && !self.input_done {
            self.pending.resize(64 * 1024, 0);
            let n = loop {
                match self.input.read(&mut self.pending) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r?,
                }
            };
            self.pending.truncate(n);
            self.sent = 0;
            self.input_done = n == 0;
        }
        if self.sent < self.pending.len() {
            return match self.ch.write(&self.pending[self.sent..]) {
                Ok(n) => {
                    self.sent += n;
                    Ok(n > 0)
                }
                Err(e) if would_block(&e) => Ok(false),
                Err(e) => Err(e),
            };
        }
        if !self.eof_sent {
            // Blocking: libssh2 must resend a half-sent EOF from the same buffer, which a retry
            // from another stack frame would not be.
            let session = &self.shell.conn.session;
            session.set_blocking(true);
            let sent = self.ch.send_eof();
            session.set_blocking(false);
            sent.map_err(ssh_io)?;
            self.eof_sent = true;
        }
        Ok(false)
    }

    /// Reads what standard error has, keeping its start.
    fn pump_stderr(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        match self.ch.stderr().read(&mut buf) {
            Ok(n) => {
                self.keep_stderr(&buf[..n]);
                Ok(n > 0)
            }
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        let room = STDERR_KEPT.saturating_sub(self.stderr.len());
        self.stderr.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn idle_check(&mut self, progress: bool) -> io::Result<()> {
        if progress {
            self.last = Instant::now();
        } else if self.last.elapsed() > self.shell.idle {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the host sent nothing for {:?}", self.shell.idle),
            ));
        } else {
            ssh::wait_socket(&self.shell.conn.session, Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Read for SshRun<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut progress = self.pump_input()?;
            match self.ch.read(buf) {
                Ok(0) if self.ch.eof() => return Ok(0),
                Ok(0) => {}
                Ok(n) => {
                    self.received += n as u64;
                    self.last = Instant::now();
                    return Ok(n);
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
            progress |= self.pump_stderr()?;
            self.idle_check(progress)?;
        }
    }
}

impl Running for SshRun<'_> {
    fn finish(mut self: Box<Self>) -> io::Result<Finished> {
        let s = &self.shell.conn.session;
        s.set_blocking(true);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.ch.stderr().read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.keep_stderr(&buf[..n]);
        }
        self.ch.wait_close().map_err(ssh_io)?;
        let status = self.ch.exit_status().map_err(ssh_io)?;
        let signal = self.ch.exit_signal().ok().and_then(|s| s.exit_signal);
        Ok(Finished {
            status,
            stderr: std::mem::take(&mut self.stderr),
            received: self.received,
            signal,
        })
    }

    fn received(&self) -> u64 {
        self.received
    }
}

impl Drop for SshRun<'_> {
    fn drop(&mut self) {
        self.shell.conn.session.set_blocking(true);
    }
}

/// Parses `ssh://[user@]host[:port]/path` into the target and the folder.
pub fn parse_source(s: &str) -> Result<(SshTarget, String), String> {
    let rest = s.strip_prefix("ssh://").ok_or_else(|| {
        format!("bad remote source '{s}': expected ssh://[user@]host[:port]/path")
    })?;
    let Some(i) = rest.find('/') else {
        return Err(format!(
            "bad remote source '{s}': ssh://[user@]host[:port]/path needs a path"
        ));
    };
    let target = SshTarget::parse(&rest[..i])?;
    let path = RemoteSource::folder(&rest[i..])?;
    Ok((target, path))
}

/// Connects to `target` and gives the remote source of its folder `path` that a backup takes.
pub fn connect_source(
    (target, path): (SshTarget, String),
    auth: &SshAuth,
    opts: &SshOptions,
    cancel: Option<&crate::pool::CancelToken>,
) -> Result<RemoteSource, SshError> {
    let shell = SshShell::connect(&target, auth, opts, cancel)?;
    let host = match target.port {
        22 => target.host.clone(),
        p => format!("{}:{p}", target.host),
    };
    Ok(RemoteSource {
        host,
        path,
        shell: Arc::new(shell),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_sources_parse() {
        let (t, p) = parse_source("ssh://root@127.0.0.2:2222/etc/").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.host.as_str(), t.port),
            (Some("root"), "127.0.0.2", 2222)
        );
        assert_eq!(p, "/etc");
        assert!(parse_source("ssh://host").is_err());
        assert!(parse_source("ssh://host/a/../b").is_err());
        assert!(parse_source("sftp://host/a").is_err());
    }
}
