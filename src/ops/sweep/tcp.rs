//! TCP connect probes: non-blocking connects, many in flight per worker, each bounded by the
//! timeout. A port is `open` (connected), `closed` (refused: the host answered) or `filtered`
//! (no answer in time, or unreachable).

use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::ops::sweep::icmp::{Pacing, BACKOFF};
use crate::pool::CancelToken;

/// What a port probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    Open,
    Closed,
    Filtered,
}

impl PortState {
    pub fn name(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
        }
    }
}

/// One probe's result: the state and, when answered, the round trip in ms.
pub type ProbeResult = (PortState, Option<f64>);

/// At most this many connects in flight per worker (file descriptors are finite).
const MAX_IN_FLIGHT: usize = 256;

enum Start {
    Done(PortState),
    Pending(OwnedFd),
}

fn start_connect(addr: IpAddr, port: u16) -> Start {
    // SAFETY: socket/connect with fully initialised sockaddrs; the fd is owned by OwnedFd.
    unsafe {
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let fd = libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Start::Done(PortState::Filtered);
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let rc = match addr {
            IpAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = port.to_be();
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                libc::connect(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            IpAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = port.to_be();
                sa.sin6_addr.s6_addr = a.octets();
                libc::connect(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc == 0 {
            return Start::Done(PortState::Open);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINPROGRESS) => Start::Pending(fd),
            Some(libc::ECONNREFUSED) => Start::Done(PortState::Closed),
            _ => Start::Done(PortState::Filtered),
        }
    }
}

fn so_error(fd: &OwnedFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one c_int.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        );
    }
    err
}

/// Probes every (address, port) pair; results in the same order. `pacing.rate` is this
/// worker's share of the probe rate.
pub fn probe_all(
    probes: &[(IpAddr, u16)],
    pacing: Pacing,
    cancel: &CancelToken,
) -> Vec<ProbeResult> {
    let mut out: Vec<Option<ProbeResult>> = vec![None; probes.len()];
    let interval = Duration::from_secs_f64(1.0 / f64::from(pacing.rate.max(1)));
    let mut queue: std::collections::VecDeque<(usize, u32)> =
        (0..probes.len()).map(|i| (i, 0)).collect();
    // (fd, probe index, attempt, started, deadline)
    let mut flight: Vec<(OwnedFd, usize, u32, Instant, Instant)> = Vec::new();
    let mut next_send = Instant::now();
    while !queue.is_empty() || !flight.is_empty() {
        if cancel.is_cancelled() {
            break;
        }
        let now = Instant::now();
        while flight.len() < MAX_IN_FLIGHT && now >= next_send {
            let Some((i, attempt)) = queue.pop_front() else {
                break;
            };
            let (addr, port) = probes[i];
            let started = Instant::now();
            match start_connect(addr, port) {
                Start::Done(s) => {
                    let rtt = (s != PortState::Filtered)
                        .then(|| started.elapsed().as_secs_f64() * 1000.0);
                    out[i] = Some((s, rtt));
                }
                Start::Pending(fd) => {
                    let t = pacing.timeout.mul_f64(BACKOFF.powi(attempt as i32));
                    flight.push((fd, i, attempt, started, started + t));
                }
            }
            next_send = (next_send + interval).max(now.checked_sub(interval).unwrap_or(now));
        }
        if flight.is_empty() {
            if !queue.is_empty() {
                std::thread::sleep(next_send.saturating_duration_since(Instant::now()));
            }
            continue;
        }
        let mut until = flight
            .iter()
            .map(|f| f.4)
            .min()
            .expect("flight is not empty");
        if !queue.is_empty() && flight.len() < MAX_IN_FLIGHT {
            until = until.min(next_send);
        }
        let wait = until.saturating_duration_since(Instant::now());
        let mut fds: Vec<libc::pollfd> = flight
            .iter()
            .map(|f| libc::pollfd {
                fd: f.0.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        crate::ops::wait_fds(&mut fds, wait);
        let now = Instant::now();
        let mut keep = Vec::with_capacity(flight.len());
        for (k, f) in flight.into_iter().enumerate() {
            let (fd, i, attempt, started, deadline) = f;
            if fds[k].revents != 0 {
                let rtt = started.elapsed().as_secs_f64() * 1000.0;
                out[i] = Some(match so_error(&fd) {
                    0 => (PortState::Open, Some(rtt)),
                    libc::ECONNREFUSED => (PortState::Closed, Some(rtt)),
                    _ => (PortState::Filtered, None),
                });
            } else if now >= deadline {
                if attempt < pacing.retries {
                    queue.push_back((i, attempt + 1));
                } else {
                    out[i] = Some((PortState::Filtered, None));
                }
            } else {
                keep.push((fd, i, attempt, started, deadline));
            }
        }
        flight = keep;
    }
    out.into_iter()
        .map(|r| r.unwrap_or((PortState::Filtered, None)))
        .collect()
}
