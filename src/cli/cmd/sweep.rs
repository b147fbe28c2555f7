//! `vault scan`: sweeps, `--every` rounds, host state changes and their alerts.

use super::super::*;

pub(in crate::cli) fn print_hosts(out: &Out, report: &vault::ops::sweep::SweepReport) {
    for h in &report.hosts {
        let mut line = if h.host == h.address {
            h.host.clone()
        } else {
            format!("{} ({})", h.host, h.address)
        };
        line.push_str(if h.up { " up" } else { " down" });
        if let Some(r) = h.rtt_ms {
            line.push_str(&format!(" {r}ms"));
        }
        for (p, st) in &h.ports {
            line.push_str(&format!(" {p}/{}", st.name()));
        }
        out.say(&line);
    }
}

/// The sweep `vault scan` (or a `[sweep.NAME]` of `vault daemon`) runs.
pub(in crate::cli) fn sweep_options(cli: &Cli, a: &ScanArgs) -> vault::ops::sweep::SweepOptions {
    let mut opts = vault::ops::sweep::SweepOptions::new(a.targets.clone());
    opts.hosts_file = a.hosts_file.clone();
    if let Some(p) = &a.tcp {
        opts.tcp_ports = p.0.clone();
        opts.icmp = a.icmp;
    }
    opts.timeout = a.timeout;
    opts.retries = a.retries;
    opts.rate = a.rate;
    opts.yes = a.yes;
    opts.state_dir = a.state.clone().or_else(|| cli.global.repo.clone());
    opts
}

pub(in crate::cli) fn scan(
    cli: &Cli,
    a: &ScanArgs,
    out: &Out,
    pool: &Pool,
    cancel: &CancelToken,
) -> Result<Outcome, Error> {
    use vault::ops::sweep::sweep;
    let opts = sweep_options(cli, a);
    let every = a.every;
    if every.is_some_and(|d| d.is_zero()) {
        return Err(Error::Usage("--every must be more than 0".into()));
    }
    if !a.alert_to.is_empty() && opts.state_dir.is_none() {
        return Err(Error::Usage(
            "--alert-to needs --state DIR (or --repo) to know what changed".into(),
        ));
    }
    let notifier = notifier(&a.alert_to, &a.mail)?;
    let mut all_transitions = Vec::new();
    let mut last = None;
    let mut rounds = 0u64;
    loop {
        let report = match sweep(&opts, pool, cancel) {
            Ok(r) => r,
            Err(Error::Cancelled) if last.is_some() => break,
            Err(e) => return Err(e),
        };
        rounds += 1;
        if rounds == 1 && !out.json {
            print_hosts(out, &report);
        }
        for t in &report.transitions {
            let line = format!("{}: {} -> {}", t.host, t.from, t.to);
            if out.json {
                out.note(&line);
            } else {
                out.say(&line);
            }
        }
        if let Err(e) = notifier.notify(&report.events()) {
            out.note(&format!("warning: alert not sent: {e}"));
        }
        if !out.quiet {
            eprintln!(
                "{} up, {} down ({} hosts in {:.2}s{})",
                report.up,
                report.down,
                report.hosts.len(),
                report.duration_s,
                match report.icmp_socket {
                    Some(vault::ops::sweep::icmp::SocketKind::Raw) => ", ICMP raw socket",
                    Some(vault::ops::sweep::icmp::SocketKind::Datagram) => ", ICMP datagram socket",
                    None => "",
                }
            );
        }
        all_transitions.extend(report.transitions.clone());
        last = Some(report);
        let Some(period) = every else { break };
        let until = std::time::Instant::now() + period;
        while std::time::Instant::now() < until && !cancel.is_cancelled() {
            std::thread::sleep(
                std::time::Duration::from_millis(50).min(until - std::time::Instant::now()),
            );
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    let mut report = last.expect("at least one sweep");
    report.transitions = all_transitions;
    if out.json {
        scan_json(out, &report, rounds)?;
    }
    Ok(if report.down == 0 {
        Outcome::Done
    } else {
        Outcome::Partial
    })
}

/// The sweep report and the number of rounds, written directly (not through
/// serde_json::Value, whose maps sort keys as text), so ports stay in numeric order.
pub(in crate::cli) fn scan_json(
    out: &Out,
    report: &vault::ops::sweep::SweepReport,
    rounds: u64,
) -> Result<(), Error> {
    #[derive(serde::Serialize)]
    struct WithRounds<'a> {
        #[serde(flatten)]
        report: &'a vault::ops::sweep::SweepReport,
        rounds: u64,
    }
    out.json(&WithRounds { report, rounds })
}
