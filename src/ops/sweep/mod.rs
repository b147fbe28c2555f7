//! `vault scan`: which hosts are up. Targets are expanded and names resolved on the pool; ICMP
//! echo runs on one paced socket ([`crate::ops::sweep::icmp`]); TCP connect probes run on the pool,
//! many non-blocking connects per worker ([`crate::ops::sweep::tcp`]). With a state folder the last
//! state of every host is kept and transitions (up->down, down->up) are reported once, as
//! [`crate::alert::Event`]s.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::alert::Event;
use crate::error::{Error, Result};
use crate::manifest::hosts::HostStore;
pub mod icmp;
pub mod targets;
pub mod tcp;

use crate::pool::{CancelToken, Pool};
use icmp::{Pacing, SocketKind};
use targets::Target;
use tcp::PortState;

/// Sweeps larger than this need `yes`.
pub const CONFIRM_ABOVE: u128 = 65_536;
/// No sweep is ever larger than this.
pub const HARD_LIMIT: u128 = 1 << 24;

/// What `vault scan` was asked to do.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub targets: Vec<String>,
    pub hosts_file: Option<PathBuf>,
    /// Send ICMP echo (the default; off when only `--tcp` is given).
    pub icmp: bool,
    pub tcp_ports: Vec<u16>,
    pub timeout: Duration,
    pub retries: u32,
    /// Probes per second.
    pub rate: u32,
    /// Allow sweeps larger than [`CONFIRM_ABOVE`] addresses.
    pub yes: bool,
    /// Where the last state of each host is kept (`DIR/scan.db`).
    pub state_dir: Option<PathBuf>,
}

impl SweepOptions {
    pub fn new(targets: Vec<String>) -> SweepOptions {
        SweepOptions {
            targets,
            hosts_file: None,
            icmp: true,
            tcp_ports: Vec::new(),
            timeout: Duration::from_secs(1),
            retries: 1,
            rate: 1000,
            yes: false,
            state_dir: None,
        }
    }
}

/// A list of TCP ports, as `--tcp` and `[scan] tcp` give it (`22,80,8000-8010`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

impl std::str::FromStr for PortList {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<PortList, String> {
        parse_ports(s).map(PortList)
    }
}

/// Parses `22,80,8000-8010`.
pub fn parse_ports(s: &str) -> std::result::Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let bad = || format!("bad port list '{s}': '{part}' is not a port (1-65535) or a range");
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = part.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if a == 0 || b < a {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    let mut seen = HashSet::new();
    out.retain(|p| seen.insert(*p));
    Ok(out)
}

/// One host's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostReport {
    /// The target as given (an address, or a host name).
    pub host: String,
    /// The address probed.
    pub address: String,
    pub up: bool,
    /// The first answer's round trip (ICMP, else the fastest answered TCP probe).
    pub rtt_ms: Option<f64>,
    /// By port number (numeric order; JSON keys are the numbers as text).
    pub ports: BTreeMap<u16, PortState>,
}

/// Whether a host answered a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Up,
    Down,
}

impl HostState {
    pub fn of(up: bool) -> HostState {
        if up {
            HostState::Up
        } else {
            HostState::Down
        }
    }
}

impl std::fmt::Display for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostState::Up => "up",
            HostState::Down => "down",
        })
    }
}

/// A change of a host's state since the previous sweep that used the same state folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Transition {
    pub host: String,
    pub from: HostState,
    pub to: HostState,
}

/// The outcome of one sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepReport {
    pub hosts: Vec<HostReport>,
    pub up: usize,
    pub down: usize,
    pub transitions: Vec<Transition>,
    /// `raw` or `datagram` when ICMP was used.
    pub icmp_socket: Option<SocketKind>,
    pub duration_s: f64,
}

impl SweepReport {
    /// The transitions as alert events.
    pub fn events(&self) -> Vec<Event> {
        let at = crate::time::rfc3339(crate::time::now_ns());
        self.transitions
            .iter()
            .map(|t| {
                if t.to == HostState::Down {
                    Event::HostDown {
                        host: t.host.clone(),
                        at: at.clone(),
                    }
                } else {
                    let rtt_ms = self
                        .hosts
                        .iter()
                        .find(|h| h.host == t.host)
                        .and_then(|h| h.rtt_ms);
                    Event::HostUp {
                        host: t.host.clone(),
                        at: at.clone(),
                        rtt_ms,
                    }
                }
            })
            .collect()
    }
}

/// The targets, expanded and resolved: (as given, address), in order, without duplicates.
pub fn resolve_targets(
    opts: &SweepOptions,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Vec<(String, IpAddr)>> {
    let mut texts = opts.targets.clone();
    if let Some(f) = &opts.hosts_file {
        texts.extend(targets::read_hosts_file(f).map_err(Error::Usage)?);
    }
    if texts.is_empty() {
        return Err(Error::Usage(
            "no targets: give addresses, blocks, ranges, names or --hosts-file".into(),
        ));
    }
    let limit = if opts.yes { HARD_LIMIT } else { CONFIRM_ABOVE };
    let mut parsed = Vec::with_capacity(texts.len());
    let mut total: u128 = 0;
    for t in &texts {
        let p = targets::parse(t, limit).map_err(Error::Usage)?;
        total += match &p {
            Target::Addrs(v) => v.len() as u128,
            Target::Name(_) => 1,
        };
        if total > limit {
            return Err(Error::Usage(if opts.yes {
                format!("the targets hold more than {HARD_LIMIT} addresses")
            } else {
                format!("the targets hold more than {CONFIRM_ABOVE} addresses; pass --yes to sweep them anyway")
            }));
        }
        parsed.push(p);
    }
    // Names are resolved in parallel on the pool.
    let names: Vec<String> = parsed
        .iter()
        .filter_map(|p| match p {
            Target::Name(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::result::Result<IpAddr, String>> = Vec::with_capacity(names.len());
    let r = pool.network().map_ordered(
        cancel,
        names.clone(),
        || (),
        |_, name: String| {
            (name.as_str(), 0u16)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve host '{name}': {e}"))
                .and_then(|mut it| {
                    it.next()
                        .map(|a| a.ip())
                        .ok_or_else(|| format!("host '{name}' has no address"))
                })
        },
        |r| {
            resolved.push(r);
            Ok::<(), ()>(())
        },
    );
    crate::error::pool_done(r)?;
    let mut resolved = resolved.into_iter();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for p in parsed {
        match p {
            Target::Addrs(v) => {
                for a in v {
                    if seen.insert(a) {
                        out.push((a.to_string(), a));
                    }
                }
            }
            Target::Name(n) => {
                let a = resolved
                    .next()
                    .expect("one result per name")
                    .map_err(Error::Refused)?;
                if seen.insert(a) {
                    out.push((n, a));
                }
            }
        }
    }
    Ok(out)
}

/// The ICMP sweep's round-trip times and socket kind (None when not asked for).
type IcmpResult = std::io::Result<Option<(Vec<Option<f64>>, icmp::SocketKind)>>;

/// ICMP on this thread while the TCP probes run on the pool's network lane, in one share of
/// the rate per worker.
fn probe(
    opts: &SweepOptions,
    addrs: &[IpAddr],
    probes: &[(IpAddr, u16)],
    pacing: Pacing,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<(IcmpResult, Vec<tcp::ProbeResult>)> {
    let lane = pool.network();
    let workers = lane.threads().max(1);
    let share = Pacing {
        rate: (opts.rate / workers as u32).max(1),
        ..pacing
    };
    let (tx, rx) = crossbeam::channel::unbounded();
    let icmp_result = lane
        .scope(|s| {
            if !probes.is_empty() {
                for (k, c) in probes.chunks(probes.len().div_ceil(workers)).enumerate() {
                    let tx = tx.clone();
                    s.spawn(move || {
                        let _ = tx.send((k, tcp::probe_all(c, share, cancel)));
                    });
                }
            }
            if opts.icmp {
                icmp::sweep(addrs, pacing, cancel).map(Some)
            } else {
                Ok(None)
            }
        })
        .map_err(Error::Internal)?;
    drop(tx);
    let mut parts: Vec<(usize, Vec<tcp::ProbeResult>)> = rx.into_iter().collect();
    parts.sort_by_key(|p| p.0);
    Ok((icmp_result, parts.into_iter().flat_map(|p| p.1).collect()))
}

/// Runs one sweep (and, with a state folder, records it and reports transitions).
pub fn sweep(opts: &SweepOptions, pool: &Pool, cancel: &CancelToken) -> Result<SweepReport> {
    if opts.rate == 0 {
        return Err(Error::Usage("--rate must be at least 1".into()));
    }
    if opts.timeout.is_zero() {
        return Err(Error::Usage("--timeout must be more than 0".into()));
    }
    let started = Instant::now();
    let hosts = resolve_targets(opts, pool, cancel)?;
    let addrs: Vec<IpAddr> = hosts.iter().map(|(_, a)| *a).collect();
    let pacing = Pacing {
        timeout: opts.timeout,
        retries: opts.retries,
        rate: opts.rate,
    };

    // TCP probes on the pool (they run while ICMP runs on this thread).
    let probes: Vec<(IpAddr, u16)> = addrs
        .iter()
        .flat_map(|a| opts.tcp_ports.iter().map(move |p| (*a, *p)))
        .collect();
    let (icmp_result, tcp_results) = probe(opts, &addrs, &probes, pacing, pool, cancel)?;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let icmp_result = icmp_result.map_err(|e| Error::Refused(e.to_string()))?;
    let (icmp_rtts, socket) = match icmp_result {
        Some((r, k)) => (r, Some(k)),
        None => (vec![None; addrs.len()], None),
    };

    let nports = opts.tcp_ports.len();
    let mut reports = Vec::with_capacity(hosts.len());
    for (i, (name, addr)) in hosts.iter().enumerate() {
        let mut ports = BTreeMap::new();
        let mut tcp_rtt: Option<f64> = None;
        let mut answered = false;
        for (k, p) in opts.tcp_ports.iter().enumerate() {
            let (state, rtt) = tcp_results[i * nports + k];
            ports.insert(*p, state);
            if state != PortState::Filtered {
                answered = true;
                tcp_rtt =
                    Some(tcp_rtt.map_or(rtt.unwrap_or(0.0), |t: f64| t.min(rtt.unwrap_or(t))));
            }
        }
        let up = icmp_rtts[i].is_some() || answered;
        reports.push(HostReport {
            host: name.clone(),
            address: addr.to_string(),
            up,
            rtt_ms: icmp_rtts[i]
                .or(tcp_rtt)
                .map(|r| (r * 1000.0).round() / 1000.0),
            ports,
        });
    }
    let up = reports.iter().filter(|h| h.up).count();
    let mut report = SweepReport {
        down: reports.len() - up,
        up,
        hosts: reports,
        transitions: Vec::new(),
        icmp_socket: socket,
        duration_s: 0.0,
    };
    if let Some(dir) = &opts.state_dir {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::repo_io(dir, e))?;
        let mut store = HostStore::open(dir)?;
        for h in &report.hosts {
            if let Some(prev) = store.get(&h.host)? {
                if prev.up != h.up {
                    report.transitions.push(Transition {
                        host: h.host.clone(),
                        from: HostState::of(prev.up),
                        to: HostState::of(h.up),
                    });
                }
            }
        }
        let states: Vec<(String, bool)> = report
            .hosts
            .iter()
            .map(|h| (h.host.clone(), h.up))
            .collect();
        store.record(&states, crate::time::now_ns())?;
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(
            parse_ports("22,80,8000-8002").unwrap(),
            [22, 80, 8000, 8001, 8002]
        );
        assert_eq!(parse_ports("22,22").unwrap(), [22]);
        for bad in ["0", "70000", "80-22", "ssh", "", "1,,2"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }
}
