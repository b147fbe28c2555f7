//! The two kinds of remote a repository is replicated to, behind one interface: an SFTP
//! server (through ssh2) and any rclone remote (through the `rclone` command).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Remote;
use crate::error::{repo_io, Error, Result};
use crate::ops::ssh::{self, SshAuth, SshOptions, SshTarget};

/// File operations on the remote side, relative to its repository folder.
pub(super) trait Store {
    fn list_archives(&mut self) -> Result<Vec<(String, u64)>>;
    fn prepare(&mut self) -> Result<()>;
    /// Uploads `local` to `name`, returning the BLAKE3 and size of the bytes sent.
    fn upload(&mut self, local: &Path, name: &str) -> Result<([u8; 32], u64)>;
    fn size(&mut self, name: &str) -> Result<Option<u64>>;
    fn read_back(&mut self, name: &str) -> Result<([u8; 32], u64)>;
    /// Renames, replacing `to` if present.
    fn rename(&mut self, from: &str, to: &str) -> Result<()>;
    /// Downloads `name` to `local`, returning the BLAKE3 and size of the bytes received.
    fn download(&mut self, name: &str, local: &Path) -> Result<([u8; 32], u64)>;
    /// Removes `name` if it is there (best effort: for clean-up after a failure).
    fn remove(&mut self, name: &str);
    /// Creates (or truncates) `name` to be written as a stream; `finish` the sink to end it.
    fn create(&mut self, name: &str) -> Result<Box<dyn Sink + '_>>;
    /// Reads `name` as a stream.
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + '_>>;
}

/// A remote file being written.
pub(super) trait Sink: Write {
    /// Ends the file; an error means it may not be complete.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

impl Sink for ssh2::File {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
}

/// `rclone rcat`'s standard input.
struct Rcat {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Write for Rcat {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stdin {
            Some(w) => w.write(buf),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stdin.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Sink for Rcat {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        drop(self.stdin.take());
        let st = self.child.wait()?;
        if st.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("rclone rcat failed ({st})")))
        }
    }
}

impl Drop for Rcat {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            // Not finished: stop rclone before it completes a partial file.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `rclone cat`'s standard output; the end of it is an error when rclone failed.
struct Cat {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
}

impl Read for Cat {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let st = self.child.wait()?;
            if !st.success() {
                return Err(io::Error::other(format!("rclone cat failed ({st})")));
            }
        }
        Ok(n)
    }
}

impl Drop for Cat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn remote_err(remote: &str, what: impl std::fmt::Display) -> Error {
    Error::Remote {
        remote: remote.to_string(),
        what: what.to_string(),
    }
}

/// A remote failure with its cause kept as the error's source.
pub(super) fn remote_failed(
    remote: &str,
    what: impl std::fmt::Display,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::RemoteFailed {
        remote: remote.to_string(),
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// Copies a stream, hashing it.
pub(super) fn copy_hashing(r: &mut dyn Read, w: &mut dyn Write) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
    w.flush()?;
    Ok((*h.finalize().as_bytes(), n))
}

struct SftpStore {
    sftp: ssh2::Sftp,
    base: PathBuf,
    label: String,
    _conn: ssh::Connected,
}

impl SftpStore {
    fn open(
        target: &SshTarget,
        path: &str,
        auth: &SshAuth,
        opts: &SshOptions,
        label: String,
    ) -> Result<SftpStore> {
        let conn = ssh::connect(target, auth, opts, None).map_err(|e| Error::Remote {
            remote: label.clone(),
            what: e.to_string(),
        })?;
        conn.guard.disarm();
        // Transfers may take longer than one command: lift the per-call limit, keep keepalives.
        conn.session
            .set_timeout(opts.timeout.as_millis().min(u128::from(u32::MAX)) as u32);
        let sftp = conn
            .session
            .sftp()
            .map_err(|e| remote_err(&label, e.message()))?;
        Ok(SftpStore {
            sftp,
            base: PathBuf::from(path),
            label,
            _conn: conn,
        })
    }
    fn p(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }
    fn err(&self, what: &str, e: ssh2::Error) -> Error {
        remote_err(&self.label, format!("{what}: {}", e.message()))
    }
}

impl Store for SftpStore {
    fn list_archives(&mut self) -> Result<Vec<(String, u64)>> {
        match self.sftp.readdir(self.p("archives")) {
            Ok(v) => Ok(v
                .into_iter()
                .filter_map(|(p, st)| {
                    Some((
                        p.file_name()?.to_string_lossy().into_owned(),
                        st.size.unwrap_or(0),
                    ))
                })
                .collect()),
            Err(_) => Ok(Vec::new()),
        }
    }
    fn prepare(&mut self) -> Result<()> {
        let mut cur = PathBuf::new();
        for c in self.p("archives").components() {
            cur.push(c);
            if cur.as_os_str() == "/" {
                continue;
            }
            if self.sftp.stat(&cur).is_err() {
                self.sftp
                    .mkdir(&cur, 0o700)
                    .map_err(|e| self.err(&format!("cannot create {}", cur.display()), e))?;
            }
        }
        Ok(())
    }
    fn upload(&mut self, local: &Path, name: &str) -> Result<([u8; 32], u64)> {
        let mut src = fs::File::open(local).map_err(|e| repo_io(local, e))?;
        let label = self.label.clone();
        let mut dst = self.create(name)?;
        copy_hashing(&mut src, &mut dst).map_err(|e| {
            // SFTP version 3 has no "no space" status: a full disk arrives as a bare failure.
            let hint = if e.to_string().eq_ignore_ascii_case("failure") {
                " (SFTP gives no reason; most likely the remote disk is full or over quota)"
            } else {
                ""
            };
            remote_err(&label, format!("sending {name}: {e}{hint}"))
        })
    }
    fn size(&mut self, name: &str) -> Result<Option<u64>> {
        Ok(self.sftp.stat(&self.p(name)).ok().and_then(|s| s.size))
    }
    fn read_back(&mut self, name: &str) -> Result<([u8; 32], u64)> {
        let mut f = self
            .sftp
            .open(self.p(name))
            .map_err(|e| self.err(&format!("cannot read {name}"), e))?;
        copy_hashing(&mut f, &mut io::sink())
            .map_err(|e| remote_failed(&self.label, format!("reading {name}"), e))
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        // OpenSSH's SFTP rename does not replace: remove the old file first.
        let _ = self.sftp.unlink(&self.p(to));
        self.sftp
            .rename(&self.p(from), &self.p(to), None)
            .map_err(|e| self.err(&format!("cannot rename {from} to {to}"), e))
    }
    fn remove(&mut self, name: &str) {
        let _ = self.sftp.unlink(&self.p(name));
    }
    fn create(&mut self, name: &str) -> Result<Box<dyn Sink + '_>> {
        let f = self
            .sftp
            .open_mode(
                self.p(name),
                ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                0o600,
                ssh2::OpenType::File,
            )
            .map_err(|e| self.err(&format!("cannot create {name}"), e))?;
        Ok(Box::new(f))
    }
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + '_>> {
        let f = self
            .sftp
            .open(self.p(name))
            .map_err(|e| self.err(&format!("cannot read {name}"), e))?;
        Ok(Box::new(f))
    }
    fn download(&mut self, name: &str, local: &Path) -> Result<([u8; 32], u64)> {
        let mut src = self
            .sftp
            .open(self.p(name))
            .map_err(|e| self.err(&format!("cannot read {name}"), e))?;
        let mut dst = new_local_file(local)?;
        let r = copy_hashing(&mut src, &mut dst)
            .map_err(|e| remote_failed(&self.label, format!("receiving {name}"), e))?;
        dst.sync_all().map_err(|e| repo_io(local, e))?;
        Ok(r)
    }
}

pub(super) fn new_local_file(p: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .map_err(|e| repo_io(p, e))
}

struct RcloneStore {
    spec: String,
    label: String,
}

impl RcloneStore {
    fn p(&self, name: &str) -> String {
        format!("{}/{}", self.spec, name)
    }
    /// Starts `rclone ARGS` with its standard input (`write`) or output piped.
    fn spawn(&self, args: &[&str], write: bool) -> Result<std::process::Child> {
        let (stdin, stdout) = if write {
            (Stdio::piped(), Stdio::null())
        } else {
            (Stdio::null(), Stdio::piped())
        };
        Command::new("rclone")
            .arg(args[0])
            .arg("--")
            .args(&args[1..])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                remote_failed(&self.label, "cannot run rclone (apt-get install rclone)", e)
            })
    }
    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        // `--` ends rclone's options: a remote spec can never be read as a flag.
        let out = Command::new("rclone")
            .arg(args[0])
            .arg("--")
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                remote_err(
                    &self.label,
                    format!("cannot run rclone (apt-get install rclone): {e}"),
                )
            })?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr);
            let last = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed");
            return Err(remote_err(
                &self.label,
                format!("rclone {}: {}", args[0], last.trim()),
            ));
        }
        Ok(out.stdout)
    }
}

impl Store for RcloneStore {
    fn list_archives(&mut self) -> Result<Vec<(String, u64)>> {
        let Ok(out) = self.run(&["lsjson", &self.p("archives")]) else {
            return Ok(Vec::new());
        };
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["IsDir"] != true)
                    .filter_map(|e| Some((e["Name"].as_str()?.to_string(), e["Size"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default())
    }
    fn prepare(&mut self) -> Result<()> {
        self.run(&["mkdir", &self.p("archives")]).map(drop)
    }
    fn upload(&mut self, local: &Path, name: &str) -> Result<([u8; 32], u64)> {
        let mut f = fs::File::open(local).map_err(|e| repo_io(local, e))?;
        let (h, n) = copy_hashing(&mut f, &mut io::sink()).map_err(|e| repo_io(local, e))?;
        self.run(&["copyto", &local.display().to_string(), &self.p(name)])?;
        Ok((h, n))
    }
    fn size(&mut self, name: &str) -> Result<Option<u64>> {
        let Ok(out) = self.run(&["lsjson", &self.p(name)]) else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(v.get(0).and_then(|e| e["Size"].as_u64()))
    }
    fn read_back(&mut self, name: &str) -> Result<([u8; 32], u64)> {
        let mut child = Command::new("rclone")
            .args(["cat", "--", &self.p(name)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| remote_failed(&self.label, "cannot run rclone", e))?;
        let r = copy_hashing(child.stdout.as_mut().expect("piped"), &mut io::sink());
        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
        match r {
            Ok(v) if ok => Ok(v),
            _ => Err(remote_err(&self.label, format!("cannot read back {name}"))),
        }
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.run(&["moveto", &self.p(from), &self.p(to)]).map(drop)
    }
    fn remove(&mut self, name: &str) {
        let _ = self.run(&["deletefile", &self.p(name)]);
    }
    fn create(&mut self, name: &str) -> Result<Box<dyn Sink + '_>> {
        let mut child = self.spawn(&["rcat", &self.p(name)], true)?;
        let stdin = child.stdin.take();
        if let Some(w) = &stdin {
            use std::os::fd::AsRawFd;
            // A 1 MiB pipe (when the system allows it): fewer switches between vault and rclone.
            // SAFETY: F_SETPIPE_SZ on a pipe we own; failure only leaves the default size.
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        }
        Ok(Box::new(Rcat { child, stdin }))
    }
    fn open(&mut self, name: &str) -> Result<Box<dyn Read + '_>> {
        let mut child = self.spawn(&["cat", &self.p(name)], false)?;
        let stdout = child.stdout.take().expect("piped");
        Ok(Box::new(Cat { child, stdout }))
    }
    fn download(&mut self, name: &str, local: &Path) -> Result<([u8; 32], u64)> {
        self.run(&["copyto", &self.p(name), &local.display().to_string()])?;
        let mut f = fs::File::open(local).map_err(|e| repo_io(local, e))?;
        copy_hashing(&mut f, &mut io::sink()).map_err(|e| repo_io(local, e))
    }
}

pub(super) fn open_store(
    remote: &Remote,
    auth: &SshAuth,
    opts: &SshOptions,
) -> Result<Box<dyn Store>> {
    let label = remote.to_string();
    Ok(match remote {
        Remote::Sftp { target, path } => {
            Box::new(SftpStore::open(target, path, auth, opts, label)?)
        }
        Remote::Rclone { spec } => Box::new(RcloneStore {
            spec: spec.clone(),
            label,
        }),
    })
}
