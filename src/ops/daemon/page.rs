//! The status page: one HTML document drawn on the server (no script): the jobs table, the
//! host grid, a chart of each repository's size and files per snapshot (inline SVG), and the
//! last events. It reloads itself every 10 seconds.

use std::fmt::Write;

use super::status::{EventKind, HostRow, JobRow, Outcome, RepoSeries, Status};

/// Text made safe for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A unix time as local `YYYY-MM-DD HH:MM:SS`.
fn when(t: Option<i64>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| {
            let c = crate::time::local(t.saturating_mul(1_000_000_000));
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                c.year, c.month, c.day, c.hour, c.minute, c.second
            )
        },
    )
}

/// An age in words: `42s`, `5m`, `3h`, `2d`.
fn age(now: i64, t: Option<i64>) -> String {
    let Some(t) = t else { return "never".into() };
    let s = now.saturating_sub(t).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}\
.bad{color:#b00;font-weight:bold}.ok{color:#070}.part{color:#a60}\
.grid{display:flex;flex-wrap:wrap;gap:.5em}.host{border:1px solid #ccc;border-radius:4px;padding:.4em .6em;min-width:11em}\
.up{background:#e8f6e8}.down{background:#fbe4e4}.ev td{font-family:monospace;font-size:13px}";

pub fn html(s: &Status) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>vault daemon</title>\
         <style>{STYLE}</style></head><body><h1>vault daemon</h1>\
         <p>vault {} · up since {} · {}</p>",
        esc(s.version),
        when(Some(s.started)),
        match &s.running {
            Some(j) => format!("running: {}", esc(j)),
            None => "idle".into(),
        }
    );
    jobs(&mut out, s);
    hosts(&mut out, s);
    out.push_str("<h2>Repositories</h2><div id=\"charts\">");
    for r in &s.repos {
        chart(&mut out, r);
    }
    out.push_str("</div>");
    events(&mut out, s);
    out.push_str("</body></html>\n");
    out
}

fn outcome(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Ok) => "<span class=\"ok\">ok</span>",
        Some(Outcome::Partial) => "<span class=\"part\">partial</span>",
        Some(Outcome::Failed) => "<span class=\"bad\">FAILED</span>",
        None => "-",
    }
}

fn jobs(out: &mut String, s: &Status) {
    out.push_str(
        "<h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>job</th><th>kind</th><th>source</th>\
         <th>schedule</th><th>last run</th><th>outcome</th><th>duration</th><th>next run</th>\
         <th>last success</th></tr></thead><tbody>",
    );
    for j in &s.jobs {
        let _ = write!(
            out,
            "<tr data-job=\"{}\"{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&j.name),
            if j.overdue { " class=\"bad\"" } else { "" },
            esc(&j.name),
            j.kind,
            esc(&j.source),
            esc(&j.schedule),
            if j.running { "running".into() } else { when(j.last_run) },
            outcome(j.outcome),
            j.duration_s.map_or("-".into(), |d| format!("{d:.1}s")),
            when(j.next_run),
            last_success(s.now, j),
        );
    }
    out.push_str("</tbody></table>");
}

fn last_success(now: i64, j: &JobRow) -> String {
    let text = match j.last_success {
        Some(_) => format!("{} ago", age(now, j.last_success)),
        None => "never".to_string(),
    };
    if j.overdue {
        format!("<span class=\"bad\">OVERDUE: {}</span>", esc(&text))
    } else {
        esc(&text)
    }
}

fn hosts(out: &mut String, s: &Status) {
    out.push_str("<h2>Hosts</h2><div class=\"grid\" id=\"hosts\">");
    for h in &s.hosts {
        host(out, s.now, h);
    }
    if s.hosts.is_empty() {
        out.push_str("<p>no sweeps configured</p>");
    }
    out.push_str("</div>");
}

fn host(out: &mut String, now: i64, h: &HostRow) {
    let _ = write!(
        out,
        "<div class=\"host {}\" data-host=\"{}\"><b>{}</b><br>{} {}<br>last backup: {}<br><small>{} since {}</small></div>",
        if h.up { "up" } else { "down" },
        esc(&h.host),
        esc(&h.host),
        if h.up { "up" } else { "<span class=\"bad\">DOWN</span>" },
        h.rtt_ms.map_or(String::new(), |r| format!("{r:.2} ms")),
        esc(&age(now, h.last_backup)),
        esc(&h.sweep),
        when(Some(h.since)),
    );
}

/// Size of the repository (line) and files per snapshot (dots) over time, in one SVG.
fn chart(out: &mut String, r: &RepoSeries) {
    let (w, h, pad) = (640.0, 180.0, 30.0);
    let _ = write!(
        out,
        "<figure><figcaption>{} · {} snapshots · {}</figcaption>\
         <svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        esc(&r.repo),
        r.snapshots,
        crate::text::human_bytes(r.size_bytes),
    );
    let pts = &r.points;
    if let (Some(first), Some(last)) = (pts.first(), pts.last()) {
        let span = (last.time - first.time).max(1) as f64;
        let max_b = pts.iter().map(|p| p.total_bytes).max().unwrap_or(1).max(1) as f64;
        let max_f = pts.iter().map(|p| p.files).max().unwrap_or(1).max(1) as f64;
        let x = |t: i64| pad + (t - first.time) as f64 / span * (w - 2.0 * pad);
        let y = |v: f64, max: f64| h - pad - v / max * (h - 2.0 * pad);
        let line: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.time), y(p.total_bytes as f64, max_b)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"size\" fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        for p in pts {
            let _ = write!(
                out,
                "<circle class=\"files\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d9822b\"><title>{} files</title></circle>",
                x(p.time),
                y(p.files as f64, max_f),
                p.files
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{pad}\" y=\"16\" font-size=\"11\" fill=\"#2a6fdb\">size</text>\
         <text x=\"{}\" y=\"16\" font-size=\"11\" fill=\"#d9822b\">files per snapshot</text></svg></figure>",
        pad + 40.0
    );
}

fn events(out: &mut String, s: &Status) {
    out.push_str("<h2>Last events</h2><table id=\"events\" class=\"ev\"><tbody>");
    for e in &s.events {
        let bad = matches!(
            e.kind,
            EventKind::Failed | EventKind::Down | EventKind::Overdue
        );
        let _ = write!(
            out,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td></tr>",
            if bad { " class=\"bad\"" } else { "" },
            when(Some(e.time)),
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            esc(&e.text)
        );
    }
    out.push_str("</tbody></table>");
}
