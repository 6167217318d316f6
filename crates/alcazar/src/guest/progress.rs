//! Progress on stderr: one line per step, and a bar that redraws itself in
//! place while a step has a known amount of work, when stderr is a terminal.
//! When it is not (CI logs, pipes), only the step lines appear, so logs stay
//! readable.

use std::io::{IsTerminal, Write};

/// Width of the bar, in cells.
const BAR: usize = 30;

/// Where the steps of a fetch are reported.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    tty: bool,
    /// The last percentage drawn, so the bar is redrawn only when it moves.
    drawn: Option<u64>,
}

impl Progress {
    /// Reports on stderr if `enabled`; draws bars only on a terminal.
    pub fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            tty: enabled && std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    /// True if an external tool may draw its own progress on the terminal.
    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Starts a step: `alcazar: <message>`.
    pub fn step(&mut self, message: &str) {
        self.clear_bar();
        if self.enabled {
            eprintln!("alcazar: {message}");
        }
    }

    /// Shows `done` of `total` units of the current step as a bar.
    pub fn bar(&mut self, label: &str, done: u64, total: u64) {
        if !self.tty || total == 0 {
            return;
        }
        let percent = done.min(total) * 100 / total;
        if self.drawn == Some(percent) {
            return;
        }
        self.drawn = Some(percent);
        let filled = (percent as usize * BAR) / 100;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r  {label} [{}{}] {percent:3}%",
            "#".repeat(filled),
            " ".repeat(BAR - filled)
        );
        let _ = err.flush();
    }

    /// Ends the bar line, if one is drawn.
    pub fn clear_bar(&mut self) {
        if self.drawn.take().is_some() {
            eprintln!();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear_bar();
    }
}
