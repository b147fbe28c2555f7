//! Bounds for an SSH peer that misbehaves: libssh2 reads the server's identification byte by
//! byte and, fed a stream of garbage, can spin without end whatever timeout it was given.
//!
//! - [`check_banner`] reads the identification before libssh2 does: lines before it (which RFC
//!   4253 allows) are consumed, within a small budget; the `SSH-` line itself is only peeked at
//!   and left for libssh2. Anything else (a line over 255 bytes, more than 64 lines or 8 KiB of
//!   preamble, a NUL) ends the connection at once, as "not an SSH server".
//! - [`Watchdog`] shuts the socket down when the deadline passes or the command is cancelled,
//!   so whatever libssh2 is blocked in returns at once (on the pool's one ticker thread).

use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pool::CancelToken;

/// RFC 4253 4.2: the identification line, CR LF included, is at most 255 bytes.
const MAX_LINE: usize = 255;
const MAX_PREAMBLE_LINES: usize = 64;
const MAX_PREAMBLE_BYTES: usize = 8 << 10;

/// Why the banner was refused.
#[derive(Debug)]
pub enum BannerError {
    TimedOut,
    Closed,
    NotSsh(String),
    Io(io::Error),
}

/// Waits until `tcp` holds the server's `SSH-` identification line (consuming any lines sent
/// before it), or fails.
pub fn check_banner(tcp: &TcpStream, deadline: Instant) -> Result<(), BannerError> {
    let fd = tcp.as_raw_fd();
    let mut buf = [0u8; MAX_LINE + 1];
    let (mut lines, mut bytes) = (0usize, 0usize);
    loop {
        wait_readable(fd, deadline)?;
        // SAFETY: recv into a buffer we own, of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(BannerError::Io(e));
        }
        let seen = &buf[..n as usize];
        if seen.is_empty() {
            return Err(BannerError::Closed);
        }
        if seen.contains(&0) {
            return Err(not_ssh("it sent a NUL byte before its identification"));
        }
        if seen.starts_with(b"SSH-") || b"SSH-".starts_with(seen) {
            match seen.iter().position(|&b| b == b'\n') {
                Some(_) => return Ok(()),
                None if seen.len() > MAX_LINE => {
                    return Err(not_ssh("its identification line is over 255 bytes"))
                }
                // Part of the line: wait for the rest without spinning on the same bytes.
                None => sleep_until(deadline, Duration::from_millis(5))?,
            }
            continue;
        }
        let Some(end) = seen.iter().position(|&b| b == b'\n') else {
            if seen.len() > MAX_LINE {
                return Err(not_ssh(
                    "it sent a line of over 255 bytes instead of an SSH identification",
                ));
            }
            sleep_until(deadline, Duration::from_millis(5))?;
            continue;
        };
        consume(fd, end + 1)?;
        lines += 1;
        bytes += end + 1;
        if lines > MAX_PREAMBLE_LINES || bytes > MAX_PREAMBLE_BYTES {
            return Err(not_ssh(&format!(
                "it sent {lines} lines ({bytes} bytes) without an SSH identification"
            )));
        }
    }
}

fn not_ssh(why: &str) -> BannerError {
    BannerError::NotSsh(format!("not an SSH server: {why}"))
}

fn consume(fd: i32, n: usize) -> Result<(), BannerError> {
    let mut sink = [0u8; MAX_LINE + 1];
    // SAFETY: recv into a buffer we own; n is at most its length (a line we just peeked).
    let got = unsafe { libc::recv(fd, sink.as_mut_ptr().cast(), n.min(sink.len()), 0) };
    if got < 0 {
        return Err(BannerError::Io(io::Error::last_os_error()));
    }
    Ok(())
}

fn sleep_until(deadline: Instant, step: Duration) -> Result<(), BannerError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(BannerError::TimedOut);
    }
    std::thread::sleep(step.min(left));
    Ok(())
}

fn wait_readable(fd: i32, deadline: Instant) -> Result<(), BannerError> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BannerError::TimedOut);
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        crate::ops::wait_fds(std::slice::from_mut(&mut p), left);
        if p.revents != 0 {
            return Ok(());
        }
    }
}

/// Shuts a connection down at its deadline, or when the command is cancelled, unless disarmed
/// first (dropping it disarms it). The pool's ticker serves every armed connection of the
/// process, however many hosts `vault ssh` talks to at once.
#[derive(Debug)]
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

/// A connection the timer thread watches.
struct Armed {
    sock: TcpStream,
    deadline: Instant,
    cancel: Option<CancelToken>,
    done: Arc<AtomicBool>,
}

static ARMED: Mutex<Vec<Armed>> = Mutex::new(Vec::new());

/// Every tick: forgets disarmed connections, shuts down those past their deadline or cancelled.
fn tick() {
    let now = Instant::now();
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.retain(|a| {
        if a.done.load(Ordering::SeqCst) {
            return false;
        }
        let cancelled = a.cancel.as_ref().is_some_and(CancelToken::is_cancelled);
        if cancelled || now >= a.deadline {
            let _ = a.sock.shutdown(Shutdown::Both);
            return false;
        }
        true
    });
}

impl Watchdog {
    pub fn arm(tcp: &TcpStream, deadline: Instant, cancel: Option<CancelToken>) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        if let Ok(sock) = tcp.try_clone() {
            crate::pool::ticker::every_tick(tick);
            ARMED.lock().unwrap_or_else(|e| e.into_inner()).push(Armed {
                sock,
                deadline,
                cancel,
                done: done.clone(),
            });
        }
        Watchdog { done }
    }

    pub fn disarm(&self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}
