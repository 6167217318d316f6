//! Where a console device's output goes.

use std::io::Write;

/// A byte sink for console output (the host's stdout, a file, or nothing).
/// Write errors are logged once and otherwise ignored: a full disk or a
/// closed terminal must not stop the guest.
pub struct ConsoleSink {
    out: Option<Box<dyn Write + Send>>,
    failed: bool,
}

impl std::fmt::Debug for ConsoleSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSink")
            .field("connected", &self.out.is_some())
            .finish()
    }
}

impl ConsoleSink {
    /// A sink writing to `out`, flushed after every write.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        ConsoleSink {
            out: Some(out),
            failed: false,
        }
    }

    /// A sink that drops everything.
    pub fn none() -> Self {
        ConsoleSink {
            out: None,
            failed: false,
        }
    }

    /// Writes `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        let Some(out) = self.out.as_mut() else {
            return;
        };
        if let Err(e) = out.write_all(bytes).and_then(|_| out.flush()) {
            if !self.failed {
                tracing::warn!("console output failed, dropping output: {e}");
                self.failed = true;
            }
        }
    }
}
