//! Fleet backups: `vault backup --hosts-file FILE --path P…` pulls a folder of every host over
//! SSH into one repository. Hosts are connected, listed, planned and fetched in parallel on the
//! pool's network lane (`--parallel`), each with its own read-only view of the manifest; the
//! calling thread, which holds the repository's lock, archives and records each as it comes
//! in, on the compute lane. One host that is down, refuses, or breaks off is reported and
//! never stops the others.

use crate::engine::backup::{prepare_remote, BackupOptions, BackupStats, Prepared};
use crate::engine::problem::Problem;
use crate::engine::repo::Repository;
use crate::error::{Error, Result};
use crate::ops::ssh::{SshAuth, SshOptions, SshTarget};
use crate::ops::ssh_shell::connect_source;
use crate::pool::{CancelToken, Pool};
use crate::progress::NoProgress;

/// A fleet run.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub hosts: Vec<SshTarget>,
    /// Probe every host's SSH port first and back up only those that answer.
    pub up_from_scan: bool,
    /// Blocks to sweep (`[user@]CIDR[:port]`): every address whose SSH port answers is a host.
    pub sweep: Vec<SshTarget>,
    /// Absolute folders to back up on every host.
    pub paths: Vec<String>,
    pub auth: SshAuth,
    pub ssh: SshOptions,
    /// Everything else (repository, policy, codec, excludes); its source is ignored.
    pub backup: BackupOptions,
}

/// What became of one host's folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostReport {
    /// The host as given (`[user@]host[:port]`).
    pub host: String,
    pub path: String,
    /// The source key in the repository (`host:/path`).
    pub source: String,
    pub snapshot: Option<String>,
    pub kind: Option<&'static str>,
    pub archive: Option<String>,
    pub stats: Option<BackupStats>,
    pub warnings: Vec<Problem>,
    /// Why there is no snapshot (unreachable, refused, broke off).
    pub error: Option<String>,
}

impl HostReport {
    fn failed(host: &SshTarget, path: &str, error: String) -> HostReport {
        HostReport {
            host: host.to_string(),
            path: path.to_string(),
            source: source_key(host, path),
            snapshot: None,
            kind: None,
            archive: None,
            stats: None,
            warnings: Vec::new(),
            error: Some(error),
        }
    }

    /// No snapshot, or one with files it could not back up.
    pub fn trouble(&self) -> bool {
        self.error.is_some() || self.warnings.iter().any(|w| w.failed)
    }
}

fn source_key(t: &SshTarget, path: &str) -> String {
    match t.port {
        22 => format!("{}:{path}", t.host),
        p => format!("{}:{p}:{path}", t.host),
    }
}

/// What a fleet run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FleetReport {
    /// Each (host, path), in the order of the hosts and paths given.
    pub hosts: Vec<HostReport>,
    /// Hosts left out because their SSH port did not answer (`--up-from-scan`).
    pub down: Vec<String>,
}

/// The open SSH ports a sweep of `addrs` (addresses or blocks) on `port` found, by address.
fn open_on(
    addrs: Vec<String>,
    port: u16,
    (pool, cancel): (&Pool, &CancelToken),
) -> Result<Vec<String>> {
    use crate::ops::sweep::{sweep, tcp::PortState, SweepOptions};
    let mut o = SweepOptions::new(addrs);
    (o.icmp, o.tcp_ports) = (false, vec![port]);
    let found = sweep(&o, pool, cancel)?.hosts;
    let open = |h: &&crate::ops::sweep::HostReport| h.ports.get(&port) == Some(&PortState::Open);
    Ok(found
        .iter()
        .filter(open)
        .map(|h| h.address.clone())
        .collect())
}

/// Splits `targets` into those whose SSH port answers a TCP probe and those that do not (with
/// why). Each name is resolved on its own, so one that does not resolve is down, not the
/// run's failure, and two names of one address are both kept.
pub fn answering(
    targets: &[SshTarget],
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<(Vec<SshTarget>, Vec<String>)> {
    use std::net::ToSocketAddrs;
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut resolved: Vec<(&SshTarget, String)> = Vec::new();
    for t in targets {
        match (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map(|mut a| a.next())
        {
            Ok(Some(a)) => resolved.push((t, a.ip().to_string())),
            _ => down.push(format!("{t} (cannot resolve)")),
        }
    }
    let mut ports: Vec<u16> = resolved.iter().map(|(t, _)| t.port).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        let mut addrs: Vec<String> = resolved
            .iter()
            .filter(|(t, _)| t.port == port)
            .map(|(_, a)| a.clone())
            .collect();
        addrs.sort();
        addrs.dedup();
        let open = open_on(addrs, port, (pool, cancel))?;
        for (t, a) in resolved.iter().filter(|(t, _)| t.port == port) {
            match open.contains(a) {
                true => up.push((*t).clone()),
                false => down.push(t.to_string()),
            }
        }
    }
    Ok((up, down))
}

/// The hosts of blocks (`[user@]CIDR[:port]`) whose SSH port answers.
fn swept(blocks: &[SshTarget], pool: &Pool, cancel: &CancelToken) -> Result<Vec<SshTarget>> {
    let mut found = Vec::new();
    for b in blocks {
        for address in open_on(vec![b.host.clone()], b.port, (pool, cancel))? {
            let (user, port) = (b.user.clone(), b.port);
            found.push(SshTarget {
                user,
                host: address,
                port,
            });
        }
    }
    Ok(found)
}

/// The hosts to back up: those given (only the answering ones with `up_from_scan`) and those
/// a sweep found; and the ones left out.
fn hosts_of(
    o: &FleetOptions,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<(Vec<SshTarget>, Vec<String>)> {
    let (mut hosts, mut down) = match o.up_from_scan {
        true => answering(&o.hosts, pool, cancel)?,
        false => (o.hosts.clone(), Vec::new()),
    };
    hosts.extend(swept(&o.sweep, pool, cancel)?);
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.to_string()));
    down.sort();
    Ok((hosts, down))
}

/// Hosts prepared (their files staged) and not yet stored, at most one per network worker:
/// workers that are done wait here instead of fetching host after host while the calling
/// thread stores one, which would stage many hosts' trees at once.
struct Slots {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            free: std::sync::Mutex::new(n.max(1)),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a free slot and takes it; false when cancelled first.
    fn take(&self, cancel: &CancelToken) -> bool {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            if cancel.is_cancelled() {
                return false;
            }
            let wait = std::time::Duration::from_millis(100);
            free = match self.freed.wait_timeout(free, wait) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        *free -= 1;
        true
    }

    /// Gives a slot back (a host stored or failed).
    fn give(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.freed.notify_one();
    }
}

/// Backs up every (host, path) pair.
pub fn backup_fleet(o: &FleetOptions, pool: &Pool, cancel: &CancelToken) -> Result<FleetReport> {
    let (hosts, down) = hosts_of(o, pool, cancel)?;
    let (repo, _) = Repository::open_or_create(&o.backup.repo, o.backup.lock_wait)?;
    let mut jobs: Vec<(&SshTarget, &str)> = Vec::new();
    for h in &hosts {
        for p in &o.paths {
            if !jobs
                .iter()
                .any(|(jh, jp)| source_key(jh, jp) == source_key(h, p))
            {
                jobs.push((h, p));
            }
        }
    }
    let root = repo.root().to_path_buf();
    let mut reports = Vec::with_capacity(jobs.len());
    let env = (pool, cancel, &NoProgress as &dyn crate::progress::Progress);
    let net = pool.network();
    let staged = Slots::new(net.threads());
    let r = net.map_unordered(
        cancel,
        jobs.clone(),
        || None::<Repository>,
        |view, (host, path)| {
            let took = staged.take(cancel);
            let prepared = match took {
                true => prepare_one(o, (host, path), env, (view, &root)),
                false => Err("cancelled".to_string()),
            };
            (host, path, (took, prepared))
        },
        |(host, path, (took, prepared))| {
            let report = match prepared {
                Ok(p) => store_one(p, &repo, host, path),
                Err(e) => HostReport::failed(host, path, e),
            };
            if took {
                staged.give();
            }
            reports.push(report);
            Ok::<(), ()>(())
        },
    );
    crate::error::pool_done(r)?;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    reports.sort_by_key(|r| jobs.iter().position(|(h, p)| source_key(h, p) == r.source));
    Ok(FleetReport {
        hosts: reports,
        down,
    })
}

/// Connects to the host and prepares its backup, reading the manifest through the worker's
/// own connection (`view`, opened on first use).
fn prepare_one<'a>(
    o: &FleetOptions,
    (host, path): (&SshTarget, &str),
    env: crate::engine::backup::Env<'a>,
    (view, root): (&mut Option<Repository>, &std::path::Path),
) -> std::result::Result<Prepared<'a>, String> {
    let (_, cancel, _) = env;
    let remote = connect_source(
        (host.clone(), path.to_string()),
        &o.auth,
        &o.ssh,
        Some(cancel),
    )
    .map_err(|e| e.to_string())?;
    if view.is_none() {
        *view = Some(Repository::open(root).map_err(|e| e.to_string())?);
    }
    let repo = view.as_ref().expect("just opened");
    let mut opts = o.backup.clone();
    opts.remote = Some(remote);
    prepare_remote(&opts, env, repo).map_err(|e| e.to_string())
}

fn store_one(p: Prepared<'_>, repo: &Repository, host: &SshTarget, path: &str) -> HostReport {
    match p.store(repo) {
        Ok(r) => HostReport {
            host: host.to_string(),
            path: path.to_string(),
            source: r.source,
            snapshot: r.snapshot,
            kind: Some(r.kind),
            archive: r.archive,
            stats: Some(r.stats),
            warnings: r.warnings,
            error: None,
        },
        Err(e) => HostReport::failed(host, path, e.to_string()),
    }
}
