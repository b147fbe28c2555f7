//! Commands on a path's history: find, log, cat.

use super::super::*;
use vault::engine::find::{FindMatch, FindOptions};

/// `vault find`.
pub(in crate::cli) fn find(cli: &Cli, out: &Out, f: &FindArgs) -> Result<Outcome, Error> {
    let repo = Repository::open(&repo_arg(cli)?)?;
    let opts = FindOptions {
        pattern: f.pattern.as_deref(),
        content: f.content.as_deref(),
        source: f.source.as_deref(),
        since_ns: f.since,
        until_ns: f.until,
    };
    let report = vault::engine::find::find(&repo, &opts)?;
    if out.json || out.quiet {
        if out.json {
            out.json(&report)?;
        }
        return Ok(Outcome::Done);
    }
    // Buffered (stdout alone writes each line): a broad pattern gives many thousand lines.
    let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut last_path: Option<(&str, &str)> = None;
    for m in &report.matches {
        let here = Some((m.source.as_str(), m.path.as_str()));
        let r = if last_path != here {
            last_path = here;
            writeln!(w, "{}", joined(&m.source, &m.path))
        } else {
            Ok(())
        };
        if let Err(e) = r.and_then(|()| writeln!(w, "  {}", match_line(m))) {
            stdout_failed(e);
        }
    }
    if let Err(e) = w.flush() {
        stdout_failed(e);
    }
    out.note(&format!(
        "{} matches in {} snapshots",
        report.matches.len(),
        report.snapshots_searched
    ));
    Ok(Outcome::Done)
}

/// The source folder and a path inside it, as one absolute path.
fn joined(source: &str, path: &str) -> String {
    format!("{}/{path}", source.trim_end_matches('/'))
}

/// `2026-11-01T10:00:00Z → 2026-11-12T10:00:00Z  same in 12 snapshots (a1b2… → c3d4…)  …`
fn match_line(m: &FindMatch) -> String {
    let n = m.snapshots.len();
    let when = if n == 1 {
        format!("{}  in 1 snapshot ({})", m.first, m.snapshots[0])
    } else {
        format!(
            "{} → {}  same in {n} snapshots ({} → {})",
            m.first,
            m.last,
            m.snapshots[0],
            m.snapshots[n - 1]
        )
    };
    let what = match &m.digest {
        Some(d) => format!("{} {}", human_bytes(m.size), &d[..d.len().min(16)]),
        None => m.kind.to_string(),
    };
    format!("{when}  {what}  mtime {}", m.mtime)
}

/// `vault log`.
pub(in crate::cli) fn log(
    cli: &Cli,
    out: &Out,
    path: &std::path::Path,
    source: &Option<PathBuf>,
) -> Result<Outcome, Error> {
    let repo = Repository::open(&repo_arg(cli)?)?;
    let report = vault::engine::history::log(&repo, source.as_deref(), path)?;
    if out.json || out.quiet {
        if out.json {
            out.json(&report)?;
        }
        return Ok(Outcome::Done);
    }
    for v in &report.versions {
        let what = if v.what.is_empty() {
            String::new()
        } else {
            format!(": {}", v.what.join(", "))
        };
        let detail = match (&v.size, &v.digest) {
            (Some(s), Some(d)) => format!("  {} {}", human_bytes(*s), &d[..d.len().min(16)]),
            (Some(_), None) => format!("  {}", v.kind.unwrap_or_default()),
            _ => String::new(),
        };
        outln!(
            "{}  {}  {}{what}{detail}",
            v.snapshot,
            v.time,
            v.change.name()
        );
    }
    out.note(&format!(
        "{}: {} changes",
        joined(&report.source, &report.path),
        report.versions.len()
    ));
    Ok(Outcome::Done)
}

/// `vault cat`.
pub(in crate::cli) fn cat(
    cli: &Cli,
    out: &Out,
    snap: &str,
    path: &std::path::Path,
    source: &Option<PathBuf>,
) -> Result<Outcome, Error> {
    if out.json {
        return Err(Error::Usage(
            "vault cat writes the file to standard output; --json does not apply".into(),
        ));
    }
    let repo = Repository::open(&repo_arg(cli)?)?;
    let row = vault::engine::cat::resolve(&repo, snap, source.as_deref(), path)?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let r = vault::engine::cat::cat(&repo, &row, path, &mut w)
        .and_then(|_| std::io::Write::flush(&mut w).map_err(Error::Output));
    match r {
        Err(Error::Output(e)) => stdout_failed(e),
        Err(e) => Err(e),
        Ok(()) => Ok(Outcome::Done),
    }
}
