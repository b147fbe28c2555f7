//! The ticker: one thread that calls registered functions every 20 ms, for deadlines that must
//! fire while a worker is blocked inside a library call (an SSH peer that never stops talking).
//! It starts with the first registration and is the only such thread of the process.

use std::sync::{Mutex, Once};
use std::time::Duration;

/// The tick period.
pub const PERIOD: Duration = Duration::from_millis(20);

static TICKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
static STARTED: Once = Once::new();

/// Calls `tick` every [`PERIOD`] from now on (registering the same function twice calls it once).
pub fn every_tick(tick: fn()) {
    {
        let mut ticks = TICKS.lock().unwrap_or_else(|e| e.into_inner());
        if !ticks.iter().any(|t| *t as usize == tick as usize) {
            ticks.push(tick);
        }
    }
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("vault-ticker".into())
            .spawn(run);
    });
}

fn run() {
    loop {
        std::thread::sleep(PERIOD);
        let ticks: Vec<fn()> = TICKS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for t in ticks {
            t();
        }
    }
}
