//! Console outputs: turning a [`ConsoleTarget`] into a device's sink.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use alcazar_devices::ConsoleSink;

use crate::config::ConsoleTarget;

/// A file that is created only when the first byte is written, so that a
/// VM that fails to start leaves no file behind.
struct LazyFile {
    path: PathBuf,
    file: Option<File>,
}

impl Write for LazyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(File::create(&self.path)?);
        }
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// The sink for `target`.
pub fn sink_for(target: &ConsoleTarget) -> ConsoleSink {
    match target {
        ConsoleTarget::Stdio => ConsoleSink::new(Box::new(std::io::stdout())),
        ConsoleTarget::File(path) => ConsoleSink::new(Box::new(LazyFile {
            path: path.clone(),
            file: None,
        })),
        ConsoleTarget::None => ConsoleSink::none(),
    }
}
