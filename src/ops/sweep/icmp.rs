//! ICMP echo, done like fping: one socket sends every probe, paced, while replies are collected
//! and matched on (source address, sequence number).
//!
//! A raw socket is used when the process may open one (CAP_NET_RAW); otherwise an unprivileged
//! ICMP datagram socket (Linux "ping socket", allowed by `net.ipv4.ping_group_range`), where the
//! kernel owns the identifier and delivers only this socket's replies. IPv4 and IPv6 (ICMPv6)
//! share one event loop. Every wait is bounded by the probe timeouts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::pool::CancelToken;

/// Which kind of ICMP socket a sweep got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    Raw,
    Datagram,
}

/// Probe pacing and patience.
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    pub timeout: Duration,
    pub retries: u32,
    /// Probes per second.
    pub rate: u32,
}

/// Timeouts grow by this factor with each retry, as fping's default backoff.
pub const BACKOFF: f64 = 1.5;

const PAYLOAD: usize = 56;

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 8 + PAYLOAD];
    p[0] = if v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    if !v6 {
        // (The kernel computes ICMPv6 checksums itself.)
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

struct Sock {
    fd: OwnedFd,
    kind: SocketKind,
    v6: bool,
}

fn open(v6: bool) -> io::Result<Sock> {
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2) calls; a returned fd is owned by the OwnedFd.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_RAW | flags, proto);
        let (fd, kind) = if fd >= 0 {
            (fd, SocketKind::Raw)
        } else {
            let raw_err = io::Error::last_os_error();
            let fd = libc::socket(domain, libc::SOCK_DGRAM | flags, proto);
            if fd < 0 {
                let dgram_err = io::Error::last_os_error();
                return Err(io::Error::new(
                    dgram_err.kind(),
                    format!(
                        "cannot open an ICMP socket: raw: {raw_err}; datagram: {dgram_err}. ICMP needs \
                         CAP_NET_RAW (root) or net.ipv4.ping_group_range to include your group; \
                         or probe TCP ports instead with --tcp PORTS"
                    ),
                ));
            }
            (fd, SocketKind::Datagram)
        };
        let size: libc::c_int = 4 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        Ok(Sock {
            fd: OwnedFd::from_raw_fd(fd),
            kind,
            v6,
        })
    }
}

fn send_to(s: &Sock, addr: IpAddr, packet: &[u8]) -> io::Result<()> {
    // SAFETY: the sockaddr structs are fully initialised and outlive the call.
    let rc = unsafe {
        match addr {
            IpAddr::V4(a) => {
                let mut sa: libc::sockaddr_in = mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
                libc::sendto(
                    s.fd.as_raw_fd(),
                    packet.as_ptr() as *const libc::c_void,
                    packet.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            IpAddr::V6(a) => {
                let mut sa: libc::sockaddr_in6 = mem::zeroed();
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_addr.s6_addr = a.octets();
                libc::sendto(
                    s.fd.as_raw_fd(),
                    packet.as_ptr() as *const libc::c_void,
                    packet.len(),
                    0,
                    &sa as *const _ as *const libc::sockaddr,
                    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads one datagram: (source, ICMP message) or None when nothing is waiting.
fn recv_one(s: &Sock, buf: &mut [u8]) -> io::Result<Option<(IpAddr, usize, usize)>> {
    // SAFETY: recvfrom writes at most buf.len() bytes and a sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let n = unsafe {
        libc::recvfrom(
            s.fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
            &mut ss as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let n = n as usize;
    let src = match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sa: &libc::sockaddr_in = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sa: &libc::sockaddr_in6 =
                unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
        }
        _ => return Ok(Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 0))),
    };
    // Raw IPv4 sockets deliver the IP header too.
    let start = if !s.v6 && s.kind == SocketKind::Raw && n > 0 {
        usize::from(buf[0] & 0x0f) * 4
    } else {
        0
    };
    Ok(Some((src, start, n)))
}

/// Pings every address; returns each one's round-trip time in ms, or None when it never
/// answered, and the socket kind used.
pub fn sweep(
    addrs: &[IpAddr],
    pacing: Pacing,
    cancel: &CancelToken,
) -> io::Result<(Vec<Option<f64>>, SocketKind)> {
    if addrs.is_empty() {
        let rtt: Vec<Option<f64>> = vec![None; addrs.len()];
        return Ok((rtt, SocketKind::Raw));
    }
    let mut st = SweepState::new(addrs, pacing)?;
    let kind = st.kind();
    loop {
        if cancel.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
        }
        let now = Instant::now();
        st.send_due(now);
        st.expire(now);
        if st.queue.is_empty() && st.waiting == 0 {
            break;
        }
        st.wait_for_replies();
        st.receive_replies()?;
    }
    Ok((st.rtt, kind))
}

/// Everything one sweep keeps between rounds of its event loop.
struct SweepState<'a> {
    addrs: &'a [IpAddr],
    pacing: Pacing,
    v4: Option<Sock>,
    v6: Option<Sock>,
    /// The ICMP identifier (raw sockets; the kernel picks it on datagram sockets).
    id: u16,
    /// Time between two probes sent.
    interval: Duration,
    /// Round-trip times in ms, by address index.
    rtt: Vec<Option<f64>>,
    /// Probes to send: (address index, attempt).
    queue: VecDeque<(usize, u32)>,
    /// When each probe out expires: (deadline, address index, attempt, sequence number).
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32, u16)>>,
    /// Probes out: (address, sequence number) -> (address index, time sent).
    pending: HashMap<(IpAddr, u16), (usize, Instant)>,
    /// Hosts with a probe out and no answer yet.
    waiting: usize,
    seq: u16,
    next_send: Instant,
    buf: Vec<u8>,
}

impl<'a> SweepState<'a> {
    /// Opens a socket for each address family present and queues a first probe per address.
    fn new(addrs: &'a [IpAddr], pacing: Pacing) -> io::Result<SweepState<'a>> {
        let rtt: Vec<Option<f64>> = vec![None; addrs.len()];
        let v4 = if addrs.iter().any(|a| a.is_ipv4()) {
            Some(open(false)?)
        } else {
            None
        };
        let v6 = if addrs.iter().any(|a| a.is_ipv6()) {
            Some(open(true)?)
        } else {
            None
        };
        let id = (std::process::id() & 0xffff) as u16;
        let interval = Duration::from_secs_f64(1.0 / f64::from(pacing.rate.max(1)));
        Ok(SweepState {
            addrs,
            pacing,
            v4,
            v6,
            id,
            interval,
            rtt,
            queue: (0..addrs.len()).map(|i| (i, 0)).collect(),
            deadlines: BinaryHeap::new(),
            pending: HashMap::new(),
            waiting: 0,
            seq: 0,
            next_send: Instant::now(),
            buf: vec![0u8; 4096],
        })
    }

    /// The kind of socket in use (the IPv4 one's when both families are present).
    fn kind(&self) -> SocketKind {
        self.v4
            .as_ref()
            .or(self.v6.as_ref())
            .map_or(SocketKind::Raw, |s| s.kind)
    }

    /// Sends the queued probes that are due at `now`, paced by `interval`.
    fn send_due(&mut self, now: Instant) {
        while let Some(&(i, attempt)) = self.queue.front() {
            if now < self.next_send {
                break;
            }
            self.queue.pop_front();
            if self.rtt[i].is_some() {
                continue;
            }
            self.send_probe(i, attempt);
            self.next_send =
                (self.next_send + self.interval).max(now.checked_sub(self.interval).unwrap_or(now));
        }
    }

    /// Sends one probe to address `i` and records it as pending, with its deadline.
    fn send_probe(&mut self, i: usize, attempt: u32) {
        let addr = self.addrs[i];
        let sock = if addr.is_ipv4() {
            self.v4.as_ref()
        } else {
            self.v6.as_ref()
        };
        let sock = sock.expect("a socket for each family present");
        self.seq = self.seq.wrapping_add(1);
        let packet = echo_request(addr.is_ipv6(), self.id, self.seq);
        let sent = Instant::now();
        // A send error (no route, …) is an unanswered probe, not a failed sweep.
        let _ = send_to(sock, addr, &packet);
        self.pending.insert((addr, self.seq), (i, sent));
        let t = self.pacing.timeout.mul_f64(BACKOFF.powi(attempt as i32));
        self.deadlines
            .push(Reverse((sent + t, i, attempt, self.seq)));
        if attempt == 0 {
            self.waiting += 1;
        }
    }

    /// Expires the probes whose deadline passed by `now`: retries them, or gives up on the host.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((dl, i, attempt, s))) = self.deadlines.peek().copied() {
            if self.rtt[i].is_some() {
                self.deadlines.pop();
                continue;
            }
            if dl > now {
                break;
            }
            self.deadlines.pop();
            self.pending.remove(&(self.addrs[i], s));
            if attempt < self.pacing.retries {
                self.queue.push_back((i, attempt + 1));
            } else {
                self.waiting -= 1;
            }
        }
    }

    /// Waits for replies on the sockets until the next send or deadline.
    fn wait_for_replies(&self) {
        let mut until = self.deadlines.peek().map(|Reverse((d, ..))| *d);
        if !self.queue.is_empty() {
            until = Some(until.map_or(self.next_send, |u| u.min(self.next_send)));
        }
        let wait = until.map_or(Duration::from_millis(10), |u| {
            u.saturating_duration_since(Instant::now())
        });
        let mut fds: Vec<libc::pollfd> = [self.v4.as_ref(), self.v6.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| libc::pollfd {
                fd: s.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        crate::ops::wait_fds(&mut fds, wait);
    }

    /// Reads every waiting datagram and records the round-trip time of each matching reply.
    fn receive_replies(&mut self) -> io::Result<()> {
        for s in [self.v4.as_ref(), self.v6.as_ref()].into_iter().flatten() {
            while let Some((src, start, n)) = recv_one(s, &mut self.buf)? {
                let got = Instant::now();
                if n < start + 8 {
                    continue;
                }
                let Some(rseq) = reply_seq(s, self.id, &self.buf[start..n]) else {
                    continue;
                };
                if let Some((i, sent)) = self.pending.remove(&(src, rseq)) {
                    if self.rtt[i].is_none() {
                        self.rtt[i] = Some(got.duration_since(sent).as_secs_f64() * 1000.0);
                        self.waiting -= 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The sequence number of `m` (an ICMP message of at least 8 bytes) when it is an echo reply
/// to this sweep; None for anything else.
fn reply_seq(s: &Sock, id: u16, m: &[u8]) -> Option<u16> {
    let reply = if s.v6 { 129 } else { 0 };
    if m[0] != reply {
        return None;
    }
    if s.kind == SocketKind::Raw && u16::from_be_bytes([m[4], m[5]]) != id {
        return None;
    }
    Some(u16::from_be_bytes([m[6], m[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(p.len(), 64);
        assert_eq!(checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }
}
