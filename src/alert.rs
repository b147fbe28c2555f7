//! Events that any module can raise for a person to hear about, and the notifier interface
//! that delivers them (mail, in `vault mail`'s module; nothing else yet).
//!
//! Promises: an event carries what a person needs to triage it (what, where, when); raising
//! events never fails the work that raised them: a notifier's error is returned to the caller
//! to report as a warning.

/// Something worth telling a person about.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A scanned host stopped answering.
    HostDown {
        host: String,
        /// RFC 3339 time of the sweep that saw it down.
        at: String,
    },
    /// A scanned host answers again.
    HostUp {
        host: String,
        at: String,
        rtt_ms: Option<f64>,
    },
    /// A backup ended with a snapshot (`partial` when some files could not be read).
    BackupDone {
        source: String,
        kind: String,
        snapshot: String,
        partial: bool,
        /// The backup's JSON report.
        report: serde_json::Value,
    },
    /// A backup failed: nothing was recorded.
    BackupFailed { source: String, error: String },
    /// A `vault daemon` job has had no successful run for longer than its `max_age`.
    Overdue {
        job: String,
        /// RFC 3339 time of its last success, if it ever had one.
        last: Option<String>,
        max_age: String,
    },
}

impl Event {
    /// A one-line subject a person can triage from an inbox list.
    pub fn subject(&self) -> String {
        match self {
            Event::HostDown { host, .. } => format!("[vault] scan: {host} is DOWN"),
            Event::HostUp { host, .. } => format!("[vault] scan: {host} is up again"),
            Event::BackupDone {
                source,
                kind,
                partial,
                report,
                ..
            } => {
                let st = &report["stats"];
                let n = |k: &str| st[k].as_u64().unwrap_or(0);
                format!(
                    "[vault] backup of {source}: {kind}, {} new, {} changed, {} deleted, {}",
                    n("new"),
                    n("changed"),
                    n("deleted"),
                    if *partial {
                        format!(
                            "PARTIAL ({} warnings)",
                            report["warnings"].as_array().map_or(0, Vec::len)
                        )
                    } else {
                        "OK".to_string()
                    }
                )
            }
            Event::BackupFailed { source, .. } => format!("[vault] backup of {source}: FAILED"),
            Event::Overdue { job, max_age, .. } => {
                format!("[vault] job {job} is OVERDUE (no success in {max_age})")
            }
        }
    }

    /// A short human paragraph for the body.
    pub fn summary(&self) -> String {
        match self {
            Event::HostDown { host, at } => format!("{host} stopped answering (sweep at {at})."),
            Event::HostUp { host, at, rtt_ms } => format!(
                "{host} answers again (sweep at {at}{}).",
                rtt_ms.map(|r| format!(", {r} ms")).unwrap_or_default()
            ),
            Event::BackupDone {
                source,
                kind,
                snapshot,
                partial,
                ..
            } => format!(
                "The {kind} backup of {source} recorded snapshot {snapshot}{}.",
                if *partial {
                    "; some files could not be read (see warnings)"
                } else {
                    ""
                }
            ),
            Event::BackupFailed { source, error } => {
                format!("The backup of {source} failed; nothing was recorded.\n\n{error}")
            }
            Event::Overdue { job, last, max_age } => format!(
                "Job {job} has not succeeded for longer than its max_age of {max_age} (last success: {}).",
                last.as_deref().unwrap_or("never")
            ),
        }
    }
}

/// Delivers events somewhere (mail, …).
pub trait Notifier: Send + Sync {
    /// Sends the events; an error is a warning for the caller, never a failure of its work.
    fn notify(&self, events: &[Event]) -> Result<(), String>;
}

/// A notifier that delivers nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _events: &[Event]) -> Result<(), String> {
        Ok(())
    }
}
