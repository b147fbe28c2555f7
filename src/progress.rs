//! Progress reporting, as a trait the engine calls and the CLI implements (with indicatif).
//! The engine never draws anything itself; [`NoProgress`] ignores every call.

/// Receives progress from long operations. Calls come from one thread at a time.
pub trait Progress: Send + Sync {
    /// A new phase starts (`scan`, `read`, …); `total` is the amount of work when known, in
    /// bytes for byte phases and items otherwise.
    fn phase(&self, _name: &str, _total: Option<u64>) {}
    /// Work done since the last call.
    fn advance(&self, _amount: u64) {}
    /// The operation ended (successfully or not).
    fn finish(&self) {}
}

/// Progress that goes nowhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
