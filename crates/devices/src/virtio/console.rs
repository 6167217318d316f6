//! virtio-console: a character device for the guest's console, `hvc0`
//! in Linux (virtio 1.2 §5.3).
//!
//! One port, no `VIRTIO_CONSOLE_F_MULTIPORT`: queues `receiveq0` (index
//! 0, host to guest) and `transmitq0` (index 1, guest to host). Features:
//! `VIRTIO_F_VERSION_1` and `VIRTIO_CONSOLE_F_EMERG_WRITE` (a byte written
//! to the configuration's `emerg_wr` is output at once, §5.3.6.1). No
//! `VIRTIO_CONSOLE_F_SIZE`: the guest keeps its own idea of the terminal
//! size.
//!
//! **Output**: every transmit chain's readable bytes (at most
//! [`MAX_TX_CHAIN`] per chain) go to a [`ConsoleSink`] on the notifying
//! thread, like the 16550's transmitter.
//!
//! **Input**: the host calls [`ConsoleInput::push_input`] (the terminal's
//! input thread, a test). Bytes fill the guest's receive buffers at once;
//! while it has none they wait in a buffer of [`INPUT_CAPACITY`] bytes,
//! and `push_input` takes only what fits (the caller retries, as with the
//! UART's FIFO). A notification on `receiveq0` (new buffers) delivers
//! what waits.
//!
//! Bad chains are returned with nothing written and counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::DmaMemory;
use virtio_queue::{Queue, QueueT};

use super::chain::{complete, pop_chain};
use super::{ActivateError, Activation, DeviceType, VirtioDevice, VirtioInterrupt};
use crate::sink::ConsoleSink;

/// Index of `receiveq0`.
pub const RX_QUEUE: u16 = 0;
/// Index of `transmitq0`.
pub const TX_QUEUE: u16 = 1;
/// The size of each queue.
pub const QUEUE_SIZE: u16 = 128;
/// Host input held while the guest has no receive buffer.
pub const INPUT_CAPACITY: usize = 64 * 1024;
/// The most bytes taken from one transmit chain.
pub const MAX_TX_CHAIN: u64 = 64 * 1024;
/// The most bytes put into one receive chain (larger chains are used in
/// part).
const MAX_RX_CHAIN: u64 = 1 << 20;

/// Feature bit: the driver may write single bytes to `emerg_wr`.
pub const VIRTIO_CONSOLE_F_EMERG_WRITE: u64 = 1 << 2;
/// Offset of `emerg_wr` in `struct virtio_console_config` (after `cols`,
/// `rows` and `max_nr_ports`).
pub const EMERG_WR_OFFSET: u64 = 8;
/// Size of `struct virtio_console_config`.
const CONFIG_LEN: u64 = 12;

/// Counters, shown by the inspector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleCounters {
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Bytes the guest wrote (queue and `emerg_wr`).
    pub tx_bytes: u64,
    /// Chains refused as malformed.
    pub bad_chains: u64,
}

struct Active {
    rx: Queue,
    tx: Queue,
    memory: DmaMemory,
    interrupt: Arc<dyn VirtioInterrupt>,
}

struct State {
    active: Option<Active>,
    input: VecDeque<u8>,
    out: ConsoleSink,
    counters: ConsoleCounters,
}

impl State {
    /// Moves waiting input into the guest's receive buffers.
    fn fill_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        while !self.input.is_empty() {
            let Some((head, parsed)) = pop_chain(
                &mut active.rx,
                &active.memory,
                MAX_RX_CHAIN,
                active.interrupt.as_ref(),
            ) else {
                return;
            };
            let written = match parsed {
                Ok(chain) => {
                    let n = (chain.writable_len() as usize).min(self.input.len());
                    let bytes: Vec<u8> = self.input.iter().take(n).copied().collect();
                    let written = chain.write_at(&active.memory, 0, &bytes);
                    self.input.drain(..written);
                    self.counters.rx_bytes += written as u64;
                    written
                }
                Err(e) => {
                    tracing::debug!("virtio-console: bad receive chain: {e}");
                    self.counters.bad_chains += 1;
                    0
                }
            };
            complete(
                &mut active.rx,
                RX_QUEUE,
                &active.memory,
                head,
                written as u32,
                active.interrupt.as_ref(),
            );
        }
    }

    /// Outputs every available transmit chain.
    fn transmit(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut buf = Vec::new();
        while let Some((head, parsed)) = pop_chain(
            &mut active.tx,
            &active.memory,
            MAX_TX_CHAIN,
            active.interrupt.as_ref(),
        ) {
            match parsed {
                Ok(chain) => {
                    buf.resize(chain.readable_len() as usize, 0);
                    let n = chain.read_at(&active.memory, 0, &mut buf);
                    self.out.write(&buf[..n]);
                    self.counters.tx_bytes += n as u64;
                }
                Err(e) => {
                    tracing::debug!("virtio-console: bad transmit chain: {e}");
                    self.counters.bad_chains += 1;
                }
            }
            complete(
                &mut active.tx,
                TX_QUEUE,
                &active.memory,
                head,
                0,
                active.interrupt.as_ref(),
            );
        }
    }
}

/// Where host input for a [`VirtioConsole`] goes; cheap to clone and
/// usable from any thread.
#[derive(Clone)]
pub struct ConsoleInput {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for ConsoleInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleInput").finish_non_exhaustive()
    }
}

impl ConsoleInput {
    /// Queues `bytes` for the guest and delivers what its receive buffers
    /// hold. Returns how many bytes were taken (fewer than `bytes.len()`
    /// when the input buffer is full; retry the rest later).
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        let mut st = lock(&self.state);
        let room = INPUT_CAPACITY - st.input.len();
        let taken = bytes.len().min(room);
        st.input.extend(&bytes[..taken]);
        st.fill_rx();
        taken
    }

    /// Bytes waiting for a receive buffer.
    pub fn pending(&self) -> usize {
        lock(&self.state).input.len()
    }
}

/// The virtio console device.
pub struct VirtioConsole {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for VirtioConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioConsole").finish_non_exhaustive()
    }
}

impl VirtioConsole {
    /// A console whose output goes to `out`.
    pub fn new(out: ConsoleSink) -> Self {
        VirtioConsole {
            state: Arc::new(Mutex::new(State {
                active: None,
                input: VecDeque::new(),
                out,
                counters: ConsoleCounters::default(),
            })),
        }
    }

    /// The handle host input goes through.
    pub fn input(&self) -> ConsoleInput {
        ConsoleInput {
            state: self.state.clone(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> ConsoleCounters {
        lock(&self.state).counters
    }
}

impl VirtioDevice for VirtioConsole {
    fn device_type(&self) -> DeviceType {
        DeviceType::Console
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        super::VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_EMERG_WRITE
    }

    /// `cols`, `rows` (valid only with `F_SIZE`), `max_nr_ports` (only
    /// with `F_MULTIPORT`) and `emerg_wr` (write-only) all read as zero.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // §5.3.4: a write to emerg_wr outputs its low byte.
        let end = offset.saturating_add(data.len() as u64);
        if offset <= EMERG_WR_OFFSET && EMERG_WR_OFFSET < end && end <= CONFIG_LEN {
            let byte = data[(EMERG_WR_OFFSET - offset) as usize];
            let mut st = lock(&self.state);
            st.out.write(&[byte]);
            st.counters.tx_bytes += 1;
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let Activation {
            queues,
            memory,
            interrupt,
            ..
        } = activation;
        let mut queues = queues.into_iter();
        let rx = queues.next().filter(|q| q.ready());
        let rx = rx.ok_or(ActivateError::QueueNotReady(RX_QUEUE))?;
        let tx = queues.next().filter(|q| q.ready());
        let tx = tx.ok_or(ActivateError::QueueNotReady(TX_QUEUE))?;
        let mut st = lock(&self.state);
        st.active = Some(Active {
            rx,
            tx,
            memory,
            interrupt,
        });
        st.transmit();
        st.fill_rx();
        Ok(())
    }

    fn queue_notify(&mut self, queue: u16) {
        let mut st = lock(&self.state);
        match queue {
            RX_QUEUE => st.fill_rx(),
            TX_QUEUE => st.transmit(),
            _ => {}
        }
    }

    fn reset(&mut self) {
        lock(&self.state).active = None;
    }

    fn inspect(&self) -> Vec<(String, String)> {
        let st = lock(&self.state);
        vec![
            ("rx_bytes".into(), st.counters.rx_bytes.to_string()),
            ("tx_bytes".into(), st.counters.tx_bytes.to_string()),
            ("bad_chains".into(), st.counters.bad_chains.to_string()),
            ("input_waiting".into(), st.input.len().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{memory, CountingInterrupt, DriverQueue};
    use alcazar_core::GuestMemory;
    use std::io::Write;

    const BUF: u64 = 0x40000;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Rig {
        mem: GuestMemory,
        rx: DriverQueue,
        tx: DriverQueue,
        console: VirtioConsole,
        out: Capture,
        irq: Arc<CountingInterrupt>,
    }

    fn rig() -> Rig {
        let out = Capture::default();
        Rig {
            mem: memory(),
            rx: DriverQueue::new(0x10000, 8),
            tx: DriverQueue::new(0x20000, 8),
            console: VirtioConsole::new(ConsoleSink::new(Box::new(out.clone()))),
            out,
            irq: CountingInterrupt::new(),
        }
    }

    impl Rig {
        fn activate(&mut self) {
            let a = Activation {
                features: self.console.device_features(),
                queues: vec![
                    self.rx.device_queue(&self.mem),
                    self.tx.device_queue(&self.mem),
                ],
                memory: self.mem.dma(),
                interrupt: self.irq.clone(),
            };
            self.console.activate(a).unwrap();
        }

        fn output(&self) -> Vec<u8> {
            self.out.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn guest_output_reaches_the_sink_chain_by_chain() {
        let mut r = rig();
        r.activate();
        r.mem.write(BUF, b"login: ").unwrap();
        r.mem.write(BUF + 0x100, b"root\r\n").unwrap();
        r.tx.add(&r.mem, &[(BUF, 7)], &[]);
        r.tx.add(&r.mem, &[(BUF + 0x100, 4), (BUF + 0x104, 2)], &[]);
        r.console.queue_notify(TX_QUEUE);
        assert_eq!(r.output(), b"login: root\r\n");
        assert_eq!(r.tx.used_entries(&r.mem), vec![(0, 0), (1, 0)]);
        assert_eq!(r.console.counters().tx_bytes, 13);
    }

    #[test]
    fn input_fills_buffers_and_waits_while_there_are_none() {
        let mut r = rig();
        let input = r.console.input();
        assert_eq!(
            input.push_input(b"early "),
            6,
            "buffered before the driver runs"
        );
        r.rx.add(&r.mem, &[], &[(BUF, 4)]);
        r.activate();
        assert_eq!(r.rx.used_entries(&r.mem), vec![(0, 4)]);
        assert_eq!(input.pending(), 2);
        input.push_input(b"typed");
        assert_eq!(input.pending(), 7);
        r.rx.add(&r.mem, &[], &[(BUF + 0x100, 64)]);
        r.console.queue_notify(RX_QUEUE);
        assert_eq!(r.rx.used_entries(&r.mem), vec![(0, 4), (1, 7)]);
        let mut got = [0u8; 11];
        r.mem.read(BUF, &mut got[..4]).unwrap();
        r.mem.read(BUF + 0x100, &mut got[4..]).unwrap();
        assert_eq!(&got, b"early typed");
        assert_eq!(input.pending(), 0);
        assert_eq!(r.irq.queue_count(), 2);
    }

    #[test]
    fn input_is_bounded_while_the_guest_reads_nothing() {
        let r = rig();
        let input = r.console.input();
        let big = vec![b'x'; INPUT_CAPACITY + 10];
        assert_eq!(input.push_input(&big), INPUT_CAPACITY);
        assert_eq!(input.push_input(b"more"), 0);
    }

    #[test]
    fn bad_chains_are_returned_empty_and_counted() {
        let mut r = rig();
        r.activate();
        r.tx.add(&r.mem, &[(0xffff_0000, 16)], &[]);
        r.tx.add(&r.mem, &[(BUF, 0x2_0000)], &[]);
        r.tx.add(&r.mem, &[], &[(BUF, 16)]); // nothing to read: empty output
        r.console.queue_notify(TX_QUEUE);
        assert_eq!(r.tx.used_entries(&r.mem).len(), 3);
        r.rx.add(&r.mem, &[], &[(0xffff_f000, 0x2000)]);
        r.rx.add(&r.mem, &[], &[(BUF, 8)]);
        r.console.input().push_input(b"ok");
        assert_eq!(r.rx.used_entries(&r.mem), vec![(0, 0), (1, 2)]);
        assert_eq!(r.console.counters().bad_chains, 3);
        assert!(r.output().is_empty());
    }

    #[test]
    fn emergency_writes_output_one_byte() {
        let mut r = rig();
        r.console
            .write_config(EMERG_WR_OFFSET, &u32::from(b'!').to_le_bytes());
        r.console.write_config(0, &[1, 2]); // cols: read-only, ignored
        r.console.write_config(u64::MAX, &[1]);
        assert_eq!(r.output(), b"!");
    }
}
