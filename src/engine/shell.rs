//! A command run on another host, as the engine sees it: the backup of a remote source lists
//! and fetches its files through this, and `ops::ssh` provides it over an SSH channel. The
//! engine never links SSH itself.

use std::io::{self, Read};

/// Runs commands on one host.
pub trait Shell: Send + Sync {
    /// Starts `command` (a POSIX shell command line) with what `input` gives as its standard
    /// input. Reading the result gives its standard output as it arrives, while the input is
    /// still being written: the command may read and write at once without either side
    /// waiting.
    fn start<'s>(
        &'s self,
        command: &str,
        input: Box<dyn Read + Send + 's>,
    ) -> io::Result<Box<dyn Running + 's>>;

    /// The host's files by SFTP, for a host without GNU find and tar; None when not offered.
    fn files(&self) -> Option<&dyn RemoteFiles> {
        None
    }
}

/// A host's files read one request at a time (SFTP): slower than one tar stream, but it
/// needs nothing on the host beyond its SSH server.
pub trait RemoteFiles {
    /// `path` itself, not following a symlink.
    fn lstat(&self, path: &[u8]) -> io::Result<RemoteStat>;
    /// The names in folder `path` (not `.` or `..`), each with its `lstat` data.
    fn read_dir(&self, path: &[u8]) -> io::Result<Vec<(Vec<u8>, RemoteStat)>>;
    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>>;
    /// Opens file `path` for reading.
    fn open(&self, path: &[u8]) -> io::Result<Box<dyn Read + '_>>;
}

/// What SFTP tells of a path: less than `lstat` (whole-second mtime, no ctime, inode or
/// device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStat {
    /// `st_mode`: the type bits and the permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
}

/// A command that is running; reading it reads its standard output.
pub trait Running: Read {
    /// Waits for the end, once standard output is read to its end.
    fn finish(self: Box<Self>) -> io::Result<Finished>;
    /// Bytes received from the host so far (standard output and error).
    fn received(&self) -> u64;
}

/// How a command ended.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    pub status: i32,
    /// The start of its standard error (at most [`STDERR_KEPT`] bytes).
    pub stderr: Vec<u8>,
    /// Bytes received from the host (standard output and error).
    pub received: u64,
    /// The signal that ended it, when one did (then `status` means nothing).
    pub signal: Option<String>,
}

/// Standard error kept of one command.
pub const STDERR_KEPT: usize = 64 * 1024;

/// `arg` quoted for a POSIX shell: in single quotes, each `'` as `'\''`.
pub fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// The most standard output [`run_to_end`] keeps: a listing of ten million paths fits; a host
/// that never stops talking is cut off there.
pub const OUTPUT_MAX: u64 = 4 << 30;

/// Runs `command` to its end and gives its whole standard output, refusing more than `max`
/// bytes of it.
pub fn run_to_end(
    shell: &dyn Shell,
    command: &str,
    (input, max): (Vec<u8>, u64),
) -> io::Result<(Vec<u8>, Finished)> {
    let mut r = shell.start(command, Box::new(io::Cursor::new(input)))?;
    let mut out = Vec::new();
    (&mut r).take(max.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::other(format!(
            "the host sent more than {max} bytes; stopped reading"
        )));
    }
    Ok((out, r.finish()?))
}

/// The line of a command's standard error that says what failed: the first from the shell or
/// a tool (a login shell's start-up noise comes before), else the last.
pub fn first_error(errors: &str) -> &str {
    let tools = ["tar: ", "find: ", "sh: ", "bash: ", "cd: "];
    errors
        .lines()
        .find(|l| tools.iter().any(|t| l.starts_with(t)))
        .or_else(|| errors.lines().last())
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host whose command never stops writing.
    struct Endless;
    struct Flood(io::Repeat);
    impl Read for Flood {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }
    impl Running for Flood {
        fn finish(self: Box<Self>) -> io::Result<Finished> {
            Ok(Finished::default())
        }
        fn received(&self) -> u64 {
            0
        }
    }
    impl Shell for Endless {
        fn start<'s>(
            &'s self,
            _: &str,
            _: Box<dyn Read + Send + 's>,
        ) -> io::Result<Box<dyn Running + 's>> {
            Ok(Box::new(Flood(io::repeat(b'x'))))
        }
    }

    #[test]
    fn a_host_that_never_stops_talking_is_cut_off() {
        let e = run_to_end(&Endless, "find /", (Vec::new(), 1 << 20)).unwrap_err();
        assert!(e.to_string().contains("more than 1048576 bytes"), "{e}");
    }

    #[test]
    fn quoting_keeps_every_byte_literal() {
        assert_eq!(quote("/srv/a b"), "'/srv/a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
