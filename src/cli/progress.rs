//! The terminal progress bar: the CLI's implementation of [`vault::Progress`], drawn on stderr
//! with indicatif, and only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (hidden when stderr is not a terminal or output is quiet).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn new(enabled: bool) -> Bar {
        let bar = if enabled && std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        Bar { bar }
    }
}

impl vault::Progress for Bar {
    fn phase(&self, name: &str, total: Option<u64>) {
        self.bar.reset();
        match total {
            Some(t) => {
                self.bar.set_length(t);
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>6} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
            }
            None => {
                self.bar.unset_length();
                self.bar.set_style(
                    ProgressStyle::with_template("{prefix:>6} {spinner} {pos} paths {per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
        self.bar.set_prefix(name.to_string());
    }

    fn advance(&self, amount: u64) {
        self.bar.inc(amount);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
