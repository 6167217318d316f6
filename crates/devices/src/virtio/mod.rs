//! Virtio devices (OASIS virtio 1.2): the device side of the split
//! virtqueue, behind one trait the PCI transport drives.
//!
//! A virtio device is a set of virtqueues plus a small configuration
//! structure. The driver (the guest) negotiates features, places the
//! queues in guest memory, sets `DRIVER_OK` (virtio 1.2 §3.1.1), then
//! offers buffers (descriptor chains, §2.7.5) and notifies the device. The
//! transport ([`pci::VirtioPci`], the "Virtio Over PCI Bus" of §4.1) owns
//! the registers of that negotiation; a [`VirtioDevice`] owns only what is
//! specific to it: its features, its configuration bytes and what it does
//! with a chain.
//!
//! | file | device | ID (§5) |
//! |---|---|---|
//! | [`rng`] | entropy source | 4 |
//! | [`block`] | block device | 2 |
//! | [`net`] | network card | 1 |
//! | [`console`] | console | 3 |
//!
//! **The guest is hostile.** Everything in a queue comes from the guest:
//! the rings, the descriptor chains, their addresses and lengths.
//! [`chain::Chain`] reads a chain once, validates it (every segment inside
//! guest RAM, device-readable segments before device-writable ones, a
//! bounded total length, no loops — virtio-queue's chain iterator stops
//! after as many descriptors as the queue has) and gives the device
//! buffers it cannot misuse. A bad chain is returned to the guest as used
//! with nothing written (or with the device's error status), and the
//! device goes on.
//!
//! **Where the work happens.** A queue notification reaches
//! [`VirtioDevice::queue_notify`] on the thread that made it: the vCPU
//! thread under the emu engine (the transport calls the device directly
//! from the MMIO write), an I/O thread woken by an ioeventfd under kvm.
//! Devices fed by the host (network receive, console input) run their own
//! thread and take the device's lock to fill the guest's buffers.

pub mod block;
pub mod chain;
pub mod console;
pub mod net;
pub mod net_backend;
mod net_rx;
pub mod pci;
pub mod rng;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use alcazar_core::DmaMemory;
use virtio_queue::{Queue, QueueT};

/// Feature bit: the device conforms to virtio 1.x (§6, "Reserved Feature
/// Bits"). Always offered: Alcazar has no legacy interface.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Feature bit: the driver may use indirect descriptors (§2.7.5.3).
pub const VIRTIO_F_RING_INDIRECT_DESC: u64 = 1 << 28;
/// Feature bit: `used_event`/`avail_event` suppress notifications (§2.7.10).
pub const VIRTIO_F_RING_EVENT_IDX: u64 = 1 << 29;

/// The device types of virtio 1.2 §5 that Alcazar models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceType {
    /// §5.1 network device.
    Net = 1,
    /// §5.2 block device.
    Block = 2,
    /// §5.3 console.
    Console = 3,
    /// §5.4 entropy device.
    Rng = 4,
}

impl DeviceType {
    /// The PCI class code (base, sub-class, programming interface) the
    /// device advertises: what `lspci` prints before the vendor name.
    pub fn pci_class(self) -> u32 {
        match self {
            DeviceType::Net => 0x02_00_00,     // network controller, Ethernet
            DeviceType::Block => 0x01_80_00,   // mass storage, other
            DeviceType::Console => 0x07_80_00, // communication controller, other
            DeviceType::Rng => 0xff_00_00,     // unassigned class
        }
    }

    /// A short name for logs and the inspector.
    pub fn name(self) -> &'static str {
        match self {
            DeviceType::Net => "virtio-net",
            DeviceType::Block => "virtio-blk",
            DeviceType::Console => "virtio-console",
            DeviceType::Rng => "virtio-rng",
        }
    }
}

/// How a device tells the driver it has used buffers or changed its
/// configuration: an MSI-X message or the INTx line with the ISR bits
/// (§4.1.4.5), whichever the driver set up. The transport provides it.
pub trait VirtioInterrupt: Send + Sync {
    /// Queue `queue` has new used buffers.
    fn signal_queue(&self, queue: u16);
    /// The device configuration changed.
    fn signal_config(&self);
    /// The device met an error it cannot go on from (a ring the driver
    /// broke): set `DEVICE_NEEDS_RESET` in `device_status` and tell the
    /// driver with a configuration-change interrupt (§2.1.2: "The device
    /// SHOULD set DEVICE_NEEDS_RESET when it enters an error state that a
    /// reset is needed").
    ///
    /// The default does nothing: for sinks with no transport and no
    /// driver to tell (test and fuzzing harnesses). The PCI transport's
    /// [`pci::TransportInterrupt`] implements it.
    fn needs_reset(&self) {}
}

/// What a device gets when the driver sets `DRIVER_OK`.
pub struct Activation {
    /// The features the driver accepted (a subset of the device's).
    pub features: u64,
    /// The queues, configured and enabled by the driver, in index order.
    /// A queue the driver did not enable is present with `ready() ==
    /// false`; the device must not touch it.
    pub queues: Vec<Queue>,
    /// Guest memory, for the rings and the buffers.
    pub memory: DmaMemory,
    /// Where the device's interrupts go.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activation")
            .field("features", &format_args!("{:#x}", self.features))
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

impl Activation {
    /// Takes queue `index` out of the activation, if the driver enabled
    /// it (a queue left disabled is an error for a device that needs it).
    pub fn take_queue(&mut self, index: u16) -> Result<Queue, ActivateError> {
        self.queues
            .get_mut(usize::from(index))
            .filter(|q| q.ready())
            .map(std::mem::take)
            .ok_or(ActivateError::QueueNotReady(index))
    }

    /// For a device with one queue: queue 0 with the memory and the
    /// interrupt it is served with.
    pub fn into_single_queue(mut self) -> Result<SingleQueue, ActivateError> {
        Ok(SingleQueue {
            queue: self.take_queue(0)?,
            memory: self.memory,
            interrupt: self.interrupt,
        })
    }
}

/// A live queue with what serving it takes (single-queue devices: rng,
/// block).
pub struct SingleQueue {
    /// The queue.
    pub queue: Queue,
    /// Guest memory.
    pub memory: DmaMemory,
    /// Where its interrupts go.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Why a device refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// A queue the device needs was not enabled by the driver.
    #[error("queue {0} is needed but was not enabled")]
    QueueNotReady(u16),
    /// The host side could not be set up (a thread, a file).
    #[error("{0}")]
    Host(String),
}

/// A virtio device, as the transport drives it.
pub trait VirtioDevice: Send {
    /// The device type (§5).
    fn device_type(&self) -> DeviceType;

    /// The maximum size of each queue, in queue-index order (the driver
    /// may choose smaller). Its length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;

    /// The feature bits the device offers, including
    /// [`VIRTIO_F_VERSION_1`].
    fn device_features(&self) -> u64;

    /// Reads the device-specific configuration structure at `offset`.
    /// Bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration (most fields are
    /// read-only; writes to them are ignored).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Starts the device: the driver set `DRIVER_OK`.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// The driver notified queue `queue` (it has new available buffers).
    /// Only called while the device is active.
    fn queue_notify(&mut self, queue: u16);

    /// The driver reset the device (wrote 0 to `device_status`, §2.4):
    /// drop the queues, stop any worker, forget negotiated state.
    fn reset(&mut self);

    /// Named values for the inspector (queue indices, counters).
    fn inspect(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
