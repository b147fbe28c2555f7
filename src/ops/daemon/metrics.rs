//! `/metrics`: the status in the Prometheus text exposition format (version 0.0.4), for
//! Prometheus, VictoriaMetrics or anything else that scrapes it.

use std::fmt::Write;

use super::status::{Outcome, Status};

/// A label value with `\`, `"` and newlines escaped as the format asks.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its help, its type and its samples (`{labels} value`).
fn family(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

pub fn text(s: &Status) -> String {
    let mut out = String::new();
    job_families(&mut out, s);
    host_families(&mut out, s);
    repo_families(&mut out, s);
    out
}

/// The per-job series.
fn job_families(out: &mut String, s: &Status) {
    let job = |j: &super::status::JobRow| format!("{{job=\"{}\"}}", label(&j.name));
    let jobs = |f: &dyn Fn(&super::status::JobRow) -> Option<f64>| -> Vec<(String, f64)> {
        s.jobs
            .iter()
            .filter_map(|j| f(j).map(|v| (job(j), v)))
            .collect()
    };
    family(
        out,
        "vault_job_last_success_timestamp_seconds",
        "Unix time of the job's last successful run.",
        "gauge",
        &jobs(&|j| j.last_success.map(|t| t as f64)),
    );
    family(
        out,
        "vault_job_last_run_timestamp_seconds",
        "Unix time the job's last run started.",
        "gauge",
        &jobs(&|j| j.last_run.map(|t| t as f64)),
    );
    family(
        out,
        "vault_job_last_duration_seconds",
        "How long the job's last run took.",
        "gauge",
        &jobs(&|j| j.duration_s),
    );
    family(
        out,
        "vault_job_last_success",
        "1 when the job's last run succeeded, 0 when it failed.",
        "gauge",
        &jobs(&|j| j.outcome.map(|o| f64::from(u8::from(o != Outcome::Failed)))),
    );
    family(
        out,
        "vault_job_bytes_stored",
        "Bytes the job's last successful run stored.",
        "gauge",
        &jobs(&|j| Some(j.bytes_stored as f64)),
    );
    family(
        out,
        "vault_job_files",
        "Paths in the job's last successful snapshot.",
        "gauge",
        &jobs(&|j| Some(j.files as f64)),
    );
    family(
        out,
        "vault_job_overdue",
        "1 when the job has had no success within its max_age.",
        "gauge",
        &jobs(&|j| Some(f64::from(u8::from(j.overdue)))),
    );
    family(
        out,
        "vault_job_runs_total",
        "Runs of the job since the daemon started.",
        "counter",
        &jobs(&|j| Some(j.runs as f64)),
    );
    family(
        out,
        "vault_job_failures_total",
        "Failed runs of the job since the daemon started.",
        "counter",
        &jobs(&|j| Some(j.failures as f64)),
    );
}

/// The per-repository series.
fn repo_families(out: &mut String, s: &Status) {
    let repos: Vec<(String, f64)> = s
        .repos
        .iter()
        .map(|r| {
            (
                format!("{{repo=\"{}\"}}", label(&r.repo)),
                r.size_bytes as f64,
            )
        })
        .collect();
    family(
        out,
        "vault_repository_size_bytes",
        "Bytes of the repository's archives.",
        "gauge",
        &repos,
    );
    let snaps: Vec<(String, f64)> = s
        .repos
        .iter()
        .map(|r| {
            (
                format!("{{repo=\"{}\"}}", label(&r.repo)),
                r.snapshots as f64,
            )
        })
        .collect();
    family(
        out,
        "vault_repository_snapshots",
        "Snapshots in the repository.",
        "gauge",
        &snaps,
    );
}

/// `vault_host_up`, `vault_host_rtt_seconds` and `vault_sweep_duration_seconds`.
fn host_families(out: &mut String, s: &Status) {
    let host = |h: &super::status::HostRow| {
        format!(
            "{{host=\"{}\",address=\"{}\",sweep=\"{}\"}}",
            label(&h.host),
            label(&h.address),
            label(&h.sweep)
        )
    };
    let up: Vec<(String, f64)> = s
        .hosts
        .iter()
        .map(|h| (host(h), f64::from(u8::from(h.up))))
        .collect();
    family(
        out,
        "vault_host_up",
        "1 when the host answered the last sweep.",
        "gauge",
        &up,
    );
    let rtt: Vec<(String, f64)> = s
        .hosts
        .iter()
        .filter_map(|h| h.rtt_ms.map(|r| (host(h), r / 1000.0)))
        .collect();
    family(
        out,
        "vault_host_rtt_seconds",
        "The host's round trip in the last sweep.",
        "gauge",
        &rtt,
    );
    let sweeps: Vec<(String, f64)> = s
        .sweeps
        .iter()
        .filter_map(|w| {
            let t = w.timings.back()?;
            Some((format!("{{sweep=\"{}\"}}", label(&w.name)), t.duration_s))
        })
        .collect();
    family(
        out,
        "vault_sweep_duration_seconds",
        "How long the sweep's last run took.",
        "gauge",
        &sweeps,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut s = Status::default();
        s.jobs.push(super::super::status::JobRow {
            name: "we\"ird".into(),
            ..Default::default()
        });
        let t = text(&s);
        assert!(t.contains("vault_job_files{job=\"we\\\"ird\"} 0"), "{t}");
        assert!(t.contains("# TYPE vault_host_up gauge"), "{t}");
    }
}
