//! Per-item problems: a path that could not be backed up, restored or checked as it is, or that
//! was skipped by design. Reported, never fatal; a failed one makes the command exit 3.

/// A per-item problem, reported and not fatal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    #[serde(serialize_with = "ser_path")]
    pub path: Vec<u8>,
    pub error: String,
    /// True when the item could not be handled as it is (unreadable, vanished, changed while
    /// read, not writable): the command exits 3. False for items skipped by design (sockets).
    pub failed: bool,
}

impl Problem {
    /// A failed item.
    pub fn failed(path: Vec<u8>, error: impl ToString) -> Problem {
        Problem {
            path,
            error: error.to_string(),
            failed: true,
        }
    }

    /// An item left out on purpose.
    pub fn skipped(path: Vec<u8>, why: impl ToString) -> Problem {
        Problem {
            path,
            error: why.to_string(),
            failed: false,
        }
    }
}

fn ser_path<S: serde::Serializer>(p: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::text::display_path(p))
}
