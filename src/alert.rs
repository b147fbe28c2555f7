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
}

impl Event {
    /// A one-line subject a person can triage from an inbox list.
    pub fn subject(&self) -> String {
        match self {
            Event::HostDown { host, .. } => format!("[vault] scan: {host} is DOWN"),
            Event::HostUp { host, .. } => format!("[vault] scan: {host} is up again"),
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
