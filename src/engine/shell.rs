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
}

/// Standard error kept of one command.
pub const STDERR_KEPT: usize = 64 * 1024;

/// `arg` quoted for a POSIX shell: in single quotes, each `'` as `'\''`.
pub fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// Runs `command` to its end and gives its whole standard output.
pub fn run_to_end(
    shell: &dyn Shell,
    command: &str,
    input: Vec<u8>,
) -> io::Result<(Vec<u8>, Finished)> {
    let mut r = shell.start(command, Box::new(io::Cursor::new(input)))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok((out, r.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_every_byte_literal() {
        assert_eq!(quote("/srv/a b"), "'/srv/a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }
}
