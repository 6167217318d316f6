//! The guest console as a stream that clients attach to and detach from
//! (`alcazar console NAME`, the API's console endpoint).
//!
//! Output: everything the guest writes to its console (COM1, or the
//! virtio console `hvc0` with `--console virtio`) is appended to a
//! [`ConsoleHub`], which keeps the last [`HUB_BYTES`] bytes with their
//! absolute offsets. A client reads from an offset; a new client starts
//! where the previous one stopped, so what the guest printed while nobody
//! was attached is shown at the next attach and several attach/detach
//! cycles lose nothing (as long as no more than [`HUB_BYTES`] piled up
//! meanwhile; the client is told how much was dropped). The buffer is
//! bounded: a VM nobody watches does not grow.
//!
//! The hub is filled by [`HubTerminal`], the process's
//! [`HostTerminal`]: every VM the process runs (a reboot builds a new one)
//! writes into the same hub, so attached clients stay attached.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use alcazar_vmm::console::{HostTerminal, Stdout};

/// How many bytes of console output a hub keeps.
pub const HUB_BYTES: usize = 1 << 20;

/// What [`ConsoleHub::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum HubRead {
    /// Bytes starting at `offset` (later than asked if older output was
    /// dropped: `dropped` bytes were lost); the next read starts at
    /// `offset + data.len()`.
    Data {
        /// Absolute offset of `data[0]`.
        offset: u64,
        /// Bytes lost between the asked offset and `offset`.
        dropped: u64,
        /// The output.
        data: Vec<u8>,
    },
    /// Nothing new within the timeout.
    Idle,
    /// The VM has stopped and everything was read.
    Ended,
}

#[derive(Default)]
struct HubState {
    buf: VecDeque<u8>,
    /// Absolute offset of `buf[0]`.
    start: u64,
    /// Where the last client stopped reading: the next attach starts here.
    delivered: u64,
    ended: bool,
}

impl HubState {
    fn end_offset(&self) -> u64 {
        self.start + self.buf.len() as u64
    }
}

/// The guest console's recent output, for attach clients.
#[derive(Default)]
pub struct ConsoleHub {
    state: Mutex<HubState>,
    more: Condvar,
}

impl std::fmt::Debug for ConsoleHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("ConsoleHub")
            .field("start", &st.start)
            .field("len", &st.buf.len())
            .field("ended", &st.ended)
            .finish()
    }
}

impl ConsoleHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends guest output, dropping the oldest bytes beyond
    /// [`HUB_BYTES`].
    pub fn write(&self, bytes: &[u8]) {
        let mut st = self.lock();
        let keep = bytes.len().min(HUB_BYTES);
        st.buf.extend(&bytes[bytes.len() - keep..]);
        let start_shift = (bytes.len() - keep) as u64;
        st.start += start_shift;
        let excess = st.buf.len().saturating_sub(HUB_BYTES);
        st.buf.drain(..excess);
        st.start += excess as u64;
        self.more.notify_all();
    }

    /// The VM has stopped: readers get what is left, then
    /// [`HubRead::Ended`]. A restarted VM (reboot) writes on; readers
    /// keep going.
    pub fn end(&self) {
        self.lock().ended = true;
        self.more.notify_all();
    }

    /// The VM runs (again): readers wait for output instead of ending.
    pub fn reopen(&self) {
        self.lock().ended = false;
    }

    /// Where a new client starts reading: where the last client stopped
    /// (or the oldest byte kept, if that is later).
    pub fn attach_offset(&self) -> u64 {
        let st = self.lock();
        st.delivered.max(st.start)
    }

    /// The offset just past the newest byte.
    pub fn end_offset(&self) -> u64 {
        self.lock().end_offset()
    }

    /// Records that a client has shown the output up to `upto`: the next
    /// attach starts there.
    pub fn mark_delivered(&self, upto: u64) {
        let mut st = self.lock();
        st.delivered = st.delivered.max(upto);
    }

    /// Reads up to `max` bytes from `offset`, waiting up to `timeout` for
    /// output.
    pub fn read(&self, offset: u64, max: usize, timeout: Duration) -> HubRead {
        let mut st = self.lock();
        if st.end_offset() <= offset && !st.ended {
            st = self
                .more
                .wait_timeout_while(st, timeout, |s| s.end_offset() <= offset && !s.ended)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let from = offset.max(st.start);
        let end = st.end_offset();
        if from >= end {
            return if st.ended {
                HubRead::Ended
            } else {
                HubRead::Idle
            };
        }
        let skip = (from - st.start) as usize;
        let n = ((end - from) as usize).min(max);
        let data: Vec<u8> = st.buf.range(skip..skip + n).copied().collect();
        HubRead::Data {
            offset: from,
            dropped: from.saturating_sub(offset),
            data,
        }
    }
}

/// The `alcazar` process's [`HostTerminal`]: console output goes to
/// standard output and into a [`ConsoleHub`] for attach clients.
#[derive(Debug)]
pub struct HubTerminal {
    hub: Arc<ConsoleHub>,
}

impl HubTerminal {
    /// A terminal that tees into `hub`.
    pub fn new(hub: Arc<ConsoleHub>) -> Self {
        HubTerminal { hub }
    }
}

impl HostTerminal for HubTerminal {
    fn write(&self, bytes: &[u8]) {
        self.hub.write(bytes);
        Stdout.write(bytes);
    }

    fn flush(&self) {
        Stdout.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_millis(0);

    fn data(r: HubRead) -> (u64, u64, Vec<u8>) {
        match r {
            HubRead::Data {
                offset,
                dropped,
                data,
            } => (offset, dropped, data),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn a_new_client_starts_where_the_last_one_stopped() {
        let hub = ConsoleHub::new();
        hub.write(b"boot\n");
        assert_eq!(hub.attach_offset(), 0);
        let (off, _, d) = data(hub.read(0, 3, NOW));
        assert_eq!((off, d.as_slice()), (0, &b"boo"[..]));
        hub.mark_delivered(3);
        // Detached after 3 bytes; the guest prints more meanwhile.
        hub.write(b"login: ");
        let at = hub.attach_offset();
        assert_eq!(at, 3);
        let (_, dropped, d) = data(hub.read(at, 100, NOW));
        assert_eq!((dropped, d.as_slice()), (0, &b"t\nlogin: "[..]));
        assert_eq!(hub.read(hub.end_offset(), 10, NOW), HubRead::Idle);
    }

    #[test]
    fn the_buffer_is_bounded_and_a_late_reader_learns_what_it_lost() {
        let hub = ConsoleHub::new();
        let chunk = vec![b'x'; 4096];
        for _ in 0..(HUB_BYTES / 4096 + 10) {
            hub.write(&chunk);
        }
        assert_eq!(hub.lock().buf.len(), HUB_BYTES);
        let (off, dropped, d) = data(hub.read(0, 10, NOW));
        assert_eq!((off, dropped, d.len()), (40960, 40960, 10));
        // One write bigger than the whole buffer keeps its tail.
        hub.write(&vec![b'y'; HUB_BYTES + 7]);
        assert_eq!(hub.lock().buf.len(), HUB_BYTES);
        assert_eq!(
            hub.end_offset(),
            (HUB_BYTES / 4096 + 10 + 256) as u64 * 4096 + 7
        );
    }

    #[test]
    fn readers_wake_on_output_and_end_with_the_vm() {
        let hub = Arc::new(ConsoleHub::new());
        let h = hub.clone();
        let t = std::thread::spawn(move || h.read(0, 10, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        hub.write(b"hi");
        assert_eq!(data(t.join().unwrap()).2, b"hi");
        hub.end();
        assert_eq!(hub.read(2, 10, Duration::from_secs(10)), HubRead::Ended);
        hub.reopen();
        assert_eq!(hub.read(2, 10, NOW), HubRead::Idle);
    }
}
