//! The virtio PCI transport, modern interface only (virtio 1.2 §4.1).
//!
//! A virtio device appears as a PCI function with vendor 0x1AF4 and device
//! ID `0x1040 + type` (§4.1.2). Its registers sit in one 32-bit memory BAR
//! (BAR 0), found through vendor-specific capabilities (§4.1.4):
//!
//! | BAR 0 offset | structure | capability `cfg_type` |
//! |---|---|---|
//! | 0x0000 | common configuration (§4.1.4.3) | 1 |
//! | 0x1000 | ISR status (§4.1.4.5) | 3 |
//! | 0x2000 | device-specific configuration | 4 |
//! | 0x3000 | notifications: queue *n* at `0x3000 + 4n` (§4.1.4.4) | 2 |
//! | 0x4000 | MSI-X table (one vector per queue + config) | (MSI-X cap) |
//! | 0x5000 | MSI-X pending bits | |
//!
//! plus the `VIRTIO_PCI_CAP_PCI_CFG` window (§4.1.4.9), through which a
//! driver can reach BAR 0 with configuration cycles only.
//!
//! Interrupts: with MSI-X enabled, queue *n* signals the vector the
//! driver wrote to its `queue_msix_vector` (none if `NO_VECTOR`); without,
//! the device sets the ISR bit and asserts INTA#, which stays asserted
//! until the driver reads the ISR (§4.1.4.5.1).
//!
//! Left out: the legacy (0.9.5) interface, `VIRTIO_F_NOTIFICATION_DATA`,
//! queue reset, packed rings, shared memory regions.

use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::inspect::Tree;
use alcazar_core::irq::{IrqLine, MsiSink};
use alcazar_core::DmaMemory;
use virtio_queue::{Queue, QueueT};

use super::{Activation, DeviceType, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::pci::config::{reg, Bar, BarKind, PciConfig, PciIds, COMMAND_INTX_DISABLE};
use crate::pci::msix::{self, Msix};
use crate::pci::PciDevice;

mod inspect;

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// Offset of the common configuration structure.
pub const COMMON_CFG: u64 = 0x0000;
/// Bytes of the common configuration structure (up to `queue_device`).
pub const COMMON_CFG_LEN: u64 = 0x38;
/// Offset of the ISR status byte.
pub const ISR_CFG: u64 = 0x1000;
/// Offset of the device-specific configuration.
pub const DEVICE_CFG: u64 = 0x2000;
/// Bytes reserved for the device-specific configuration.
pub const DEVICE_CFG_LEN: u64 = 0x1000;
/// Offset of the notification area.
pub const NOTIFY_CFG: u64 = 0x3000;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table.
pub const MSIX_TABLE: u64 = 0x4000;
/// Offset of the MSI-X pending-bit array.
pub const MSIX_PBA: u64 = 0x5000;
/// "No vector" in `config_msix_vector` / `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// `device_status` bits (§2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: queues are live.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// `cfg_type` values of the virtio capabilities (§4.1.4).
mod cap {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const ISR: u8 = 3;
    pub const DEVICE: u8 = 4;
    pub const PCI_CFG: u8 = 5;
    /// Vendor-specific capability ID.
    pub const VENDOR: u8 = 0x09;
}

/// How many times a transport logs "device needs reset" at warning level;
/// later ones go to debug. The guest triggers it at will (reset, then
/// DRIVER_OK with broken queues), and a detached VM's log is a file.
const NEEDS_RESET_WARNINGS: u32 = 8;

/// ISR bit 0: a queue was used.
const ISR_QUEUE: u8 = 1;
/// ISR bit 1: the configuration changed.
const ISR_CONFIG: u8 = 2;

/// The interrupt state the transport shares with its device (which may
/// signal from its own thread): MSI-X table, vector assignment, ISR.
struct InterruptState {
    msix: Msix,
    config_vector: u16,
    queue_vectors: Vec<u16>,
    isr: u8,
    intx_disabled: bool,
    /// The device asked for a reset ([`VirtioInterrupt::needs_reset`]);
    /// `device_status` shows `DEVICE_NEEDS_RESET` until the driver resets.
    needs_reset: bool,
}

/// The transport's [`VirtioInterrupt`].
pub struct TransportInterrupt {
    state: Mutex<InterruptState>,
    sink: Arc<dyn MsiSink>,
    intx: Arc<dyn IrqLine>,
}

impl TransportInterrupt {
    fn state(&self) -> std::sync::MutexGuard<'_, InterruptState> {
        lock(&self.state)
    }

    fn raise(&self, vector: Option<u16>, isr_bit: u8) {
        let mut s = self.state();
        if s.msix.enabled() {
            if let Some(v) = vector.filter(|&v| v != NO_VECTOR) {
                s.msix.signal(v, self.sink.as_ref());
            }
            return;
        }
        s.isr |= isr_bit;
        if !s.intx_disabled {
            self.intx.set_level(true);
        }
    }
}

impl VirtioInterrupt for TransportInterrupt {
    fn signal_queue(&self, queue: u16) {
        let vector = self.state().queue_vectors.get(usize::from(queue)).copied();
        self.raise(vector, ISR_QUEUE);
    }

    fn signal_config(&self) {
        let vector = self.state().config_vector;
        self.raise(Some(vector), ISR_CONFIG);
    }

    fn needs_reset(&self) {
        let newly = {
            let mut s = self.state();
            !std::mem::replace(&mut s.needs_reset, true)
        };
        // One interrupt per error state, however often the driver pokes
        // the broken queue.
        if newly {
            self.signal_config();
        }
    }
}

/// Someone who routes a live device's queue notifications another way
/// (the VMM, through the kvm engine's ioeventfds). Called with the
/// transport locked: it must not lock the transport itself.
pub trait NotifyRoute: Send + Sync {
    /// The driver set `DRIVER_OK`: queue `n`'s notification address is
    /// `addresses[n]` (guest physical; BAR 0 as the guest placed it).
    fn activated(&self, addresses: Vec<(u16, u64)>);
    /// The device was reset: stop routing.
    fn reset(&self);
}

/// A virtio device on the PCI bus.
pub struct VirtioPci {
    config: PciConfig,
    device: Box<dyn VirtioDevice>,
    memory: DmaMemory,
    interrupt: Arc<TransportInterrupt>,
    max_sizes: Vec<u16>,
    queues: Vec<Queue>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    device_status: u8,
    queue_select: u16,
    active: bool,
    msix_cap: usize,
    pci_cfg_cap: usize,
    route: Option<Arc<dyn NotifyRoute>>,
    /// Notifications that arrived as MMIO writes, and through the route.
    notifies_mmio: u64,
    notifies_routed: u64,
    /// Times the transport found the device needing a reset.
    needs_reset_count: u32,
}

impl std::fmt::Debug for VirtioPci {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPci")
            .field("device", &self.device.device_type())
            .field("status", &self.device_status)
            .finish_non_exhaustive()
    }
}

/// Errors from building the transport (a device with an impossible
/// shape: a VMM bug).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration space could not hold the capabilities.
    #[error("virtio-pci configuration space: {0}")]
    Config(#[from] crate::pci::config::ConfigError),
    /// The device has no queues or too many.
    #[error("a virtio device needs 1 to 1024 queues, not {0}")]
    QueueCount(usize),
    /// A queue size is not a power of two up to 32768.
    #[error("queue size {0} is not a power of two up to 32768")]
    QueueSize(u16),
}

impl VirtioPci {
    /// Wraps `device` in the PCI transport. `bar_address` is where BAR 0
    /// starts (the firmware's assignment); `intx` is the device's INTA#
    /// line and `gsi` the interrupt line number reported to the OS; `sink`
    /// receives MSI-X messages.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: DmaMemory,
        bar_address: u64,
        intx: Arc<dyn IrqLine>,
        gsi: u8,
        sink: Arc<dyn MsiSink>,
    ) -> Result<Self, TransportError> {
        let device_type = device.device_type();
        let max_sizes = device.queue_max_sizes();
        if max_sizes.is_empty() || max_sizes.len() > 1024 {
            return Err(TransportError::QueueCount(max_sizes.len()));
        }
        let queues = new_queues(&max_sizes)?;
        let ids = PciIds {
            vendor_id: 0x1af4,
            device_id: 0x1040 + device_type as u16,
            revision_id: 1,
            class_code: device_type.pci_class(),
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        };
        let mut config = PciConfig::new(ids, 1);
        config.set_bytes(reg::INTERRUPT_LINE, &[gsi]);
        config.add_bar(
            0,
            Bar {
                size: BAR_SIZE,
                kind: BarKind::Memory32,
            },
            bar_address,
        )?;
        let n = max_sizes.len() as u32;
        add_virtio_cap(&mut config, cap::COMMON, COMMON_CFG, COMMON_CFG_LEN, None)?;
        add_virtio_cap(
            &mut config,
            cap::NOTIFY,
            NOTIFY_CFG,
            u64::from(n * NOTIFY_OFF_MULTIPLIER),
            Some(NOTIFY_OFF_MULTIPLIER),
        )?;
        add_virtio_cap(&mut config, cap::ISR, ISR_CFG, 1, None)?;
        add_virtio_cap(&mut config, cap::DEVICE, DEVICE_CFG, DEVICE_CFG_LEN, None)?;
        let msix = Msix::new(max_sizes.len() as u16 + 1);
        let (body, mask) = msix.capability(0, MSIX_TABLE as u32, MSIX_PBA as u32);
        let msix_cap = config.add_capability(msix::CAPABILITY_ID, &body, &mask)?;
        let pci_cfg_cap = add_pci_cfg_cap(&mut config)?;
        let interrupt = Arc::new(TransportInterrupt {
            state: Mutex::new(InterruptState {
                msix,
                config_vector: NO_VECTOR,
                queue_vectors: vec![NO_VECTOR; max_sizes.len()],
                isr: 0,
                intx_disabled: false,
                needs_reset: false,
            }),
            sink,
            intx,
        });
        Ok(VirtioPci {
            config,
            device,
            memory,
            interrupt,
            max_sizes,
            queues,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            device_status: 0,
            queue_select: 0,
            active: false,
            msix_cap,
            pci_cfg_cap,
            route: None,
            notifies_mmio: 0,
            notifies_routed: 0,
            needs_reset_count: 0,
        })
    }

    /// Routes notifications through `route` from the next activation on.
    pub fn set_notify_route(&mut self, route: Arc<dyn NotifyRoute>) {
        self.route = Some(route);
    }

    /// A notification of `queue` that came through the route (an
    /// ioeventfd), counted apart from MMIO ones.
    pub fn notify_routed(&mut self, queue: u16) {
        self.notifies_routed += 1;
        self.notify(queue);
    }

    /// The device type.
    pub fn device_type(&self) -> DeviceType {
        self.device.device_type()
    }

    /// The driver notified queue `queue` (a write to its notification
    /// address, or an ioeventfd the kvm engine signalled).
    pub fn notify(&mut self, queue: u16) {
        if self.active && usize::from(queue) < self.max_sizes.len() {
            self.device.queue_notify(queue);
        }
    }

    /// The BAR 0 offset of queue `queue`'s notification address.
    pub fn notify_offset(queue: u16) -> u64 {
        NOTIFY_CFG + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER)
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.max_sizes.len()
    }

    /// `device_status` as the driver reads it: with DEVICE_NEEDS_RESET if
    /// the device asked for a reset ([`VirtioInterrupt::needs_reset`]).
    fn status_now(&self) -> u8 {
        let asked = self.interrupt.state().needs_reset;
        self.device_status | if asked { status::DEVICE_NEEDS_RESET } else { 0 }
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn device_features(&self) -> u64 {
        self.device.device_features() | VIRTIO_F_VERSION_1
    }

    /// The common configuration structure as the driver reads it now.
    fn common_image(&self) -> [u8; COMMON_CFG_LEN as usize] {
        let mut img = [0u8; COMMON_CFG_LEN as usize];
        let features = self.device_features();
        let device_feature = match self.device_feature_select {
            0 => features as u32,
            1 => (features >> 32) as u32,
            _ => 0,
        };
        let driver_feature = match self.driver_feature_select {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        };
        let irq = self.interrupt.state();
        let q = self.queues.get(usize::from(self.queue_select));
        let qv = irq
            .queue_vectors
            .get(usize::from(self.queue_select))
            .copied();
        put(&mut img, 0x00, &self.device_feature_select.to_le_bytes());
        put(&mut img, 0x04, &device_feature.to_le_bytes());
        put(&mut img, 0x08, &self.driver_feature_select.to_le_bytes());
        put(&mut img, 0x0c, &driver_feature.to_le_bytes());
        put(&mut img, 0x10, &irq.config_vector.to_le_bytes());
        put(&mut img, 0x12, &(self.max_sizes.len() as u16).to_le_bytes());
        img[0x14] = self.device_status
            | if irq.needs_reset {
                status::DEVICE_NEEDS_RESET
            } else {
                0
            };
        img[0x15] = 0; // config_generation: the configurations never change mid-read
        put(&mut img, 0x16, &self.queue_select.to_le_bytes());
        if let Some(q) = q {
            put(&mut img, 0x18, &q.size().to_le_bytes());
            put(&mut img, 0x1a, &qv.unwrap_or(NO_VECTOR).to_le_bytes());
            put(&mut img, 0x1c, &u16::from(q.ready()).to_le_bytes());
            put(&mut img, 0x1e, &self.queue_select.to_le_bytes());
            put(&mut img, 0x20, &q.desc_table().to_le_bytes());
            put(&mut img, 0x28, &q.avail_ring().to_le_bytes());
            put(&mut img, 0x30, &q.used_ring().to_le_bytes());
        } else {
            put(&mut img, 0x1a, &NO_VECTOR.to_le_bytes());
        }
        img
    }

    fn read_common(&self, offset: u64, data: &mut [u8]) {
        let img = self.common_image();
        for (i, b) in data.iter_mut().enumerate() {
            *b = img.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    /// A write to the common configuration: the bytes land on the current
    /// image, and every field they touch takes its new value.
    fn write_common(&mut self, offset: u64, data: &[u8]) {
        let mut img = self.common_image();
        let start = offset as usize;
        let Some(dst) = img.get_mut(start..start + data.len()) else {
            return;
        };
        dst.copy_from_slice(data);
        let touched = |field: usize, len: usize| start < field + len && field < start + data.len();
        let u16_at = |o: usize| u16::from_le_bytes([img[o], img[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([img[o], img[o + 1], img[o + 2], img[o + 3]]);
        if touched(0x00, 4) {
            self.device_feature_select = u32_at(0x00);
        }
        if touched(0x08, 4) {
            self.driver_feature_select = u32_at(0x08);
        }
        if touched(0x0c, 4) && self.device_status & status::FEATURES_OK == 0 {
            let value = u64::from(u32_at(0x0c));
            match self.driver_feature_select {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | value,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | value << 32,
                _ => {}
            }
        }
        if touched(0x10, 2) {
            let v = self.checked_vector(u16_at(0x10));
            self.interrupt.state().config_vector = v;
        }
        if touched(0x14, 1) {
            self.write_status(img[0x14]);
        }
        if touched(0x16, 2) {
            self.queue_select = u16_at(0x16);
        }
        if self.active {
            return; // queue registers are frozen once the device runs
        }
        if touched(0x18, 2) {
            let size = u16_at(0x18);
            if let Some(q) = self.selected() {
                q.set_size(size);
            }
        }
        if touched(0x1a, 2) {
            let v = self.checked_vector(u16_at(0x1a));
            let sel = usize::from(self.queue_select);
            if let Some(slot) = self.interrupt.state().queue_vectors.get_mut(sel) {
                *slot = v;
            }
        }
        if touched(0x1c, 2) && u16_at(0x1c) == 1 {
            if let Some(q) = self.selected() {
                q.set_ready(true);
            }
        }
        let address = |o: usize| (Some(u32_at(o)), Some(u32_at(o + 4)));
        if touched(0x20, 8) {
            let (lo, hi) = address(0x20);
            if let Some(q) = self.selected() {
                q.set_desc_table_address(lo, hi);
            }
        }
        if touched(0x28, 8) {
            let (lo, hi) = address(0x28);
            if let Some(q) = self.selected() {
                q.set_avail_ring_address(lo, hi);
            }
        }
        if touched(0x30, 8) {
            let (lo, hi) = address(0x30);
            if let Some(q) = self.selected() {
                q.set_used_ring_address(lo, hi);
            }
        }
    }

    /// A vector the table has, or `NO_VECTOR` (§4.1.5.1.2: the device
    /// answers `NO_VECTOR` when it cannot use the one written).
    fn checked_vector(&self, v: u16) -> u16 {
        if usize::from(v) < self.interrupt.state().msix.len() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.device_status;
        if newly & status::FEATURES_OK != 0 && !self.features_acceptable() {
            value &= !status::FEATURES_OK;
        }
        self.device_status = value;
        if newly & status::DRIVER_OK != 0 && !self.active {
            self.activate();
        }
    }

    /// The driver accepted only offered features, including VERSION_1.
    fn features_acceptable(&self) -> bool {
        let offered = self.device_features();
        self.driver_features & !offered == 0 && self.driver_features & VIRTIO_F_VERSION_1 != 0
    }

    fn activate(&mut self) {
        let ok = self.device_status & status::FEATURES_OK != 0
            && self
                .queues
                .iter()
                .all(|q| !q.ready() || q.is_valid(self.memory.mmap()));
        if !ok {
            self.needs_reset("queues or features are not valid at DRIVER_OK");
            return;
        }
        let event_idx = self.driver_features & super::VIRTIO_F_RING_EVENT_IDX != 0;
        // The transport keeps its copy for the driver to read back.
        let queues: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect();
        let Ok(mut queues) = queues else {
            self.needs_reset("a queue's state is invalid");
            return;
        };
        for q in &mut queues {
            q.set_event_idx(event_idx);
        }
        let activation = Activation {
            features: self.driver_features,
            queues,
            memory: self.memory.clone(),
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(e) => return self.needs_reset(&e.to_string()),
        }
        if let (Some(route), Some((_, base, _))) = (&self.route, self.config.bar_window(0)) {
            let addresses = (0..self.max_sizes.len() as u16)
                .filter(|&q| self.queues[usize::from(q)].ready())
                .map(|q| (q, base + Self::notify_offset(q)))
                .collect();
            route.activated(addresses);
        }
    }

    fn needs_reset(&mut self, why: &str) {
        self.needs_reset_count = self.needs_reset_count.saturating_add(1);
        let device = self.device_type().name();
        if self.needs_reset_count <= NEEDS_RESET_WARNINGS {
            tracing::warn!(device, "device needs reset: {why}");
        } else {
            tracing::debug!(device, "device needs reset: {why}");
        }
        self.device_status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.signal_config();
    }

    fn reset(&mut self) {
        if self.active {
            if let Some(route) = &self.route {
                route.reset();
            }
            self.device.reset();
        }
        self.active = false;
        self.device_status = 0;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        // Sizes were validated when the transport was built.
        self.queues = new_queues(&self.max_sizes).unwrap_or_default();
        let mut irq = self.interrupt.state();
        irq.config_vector = NO_VECTOR;
        irq.queue_vectors.fill(NO_VECTOR);
        irq.isr = 0;
        irq.needs_reset = false;
        self.interrupt.intx.set_level(false);
    }

    fn read_isr(&mut self, data: &mut [u8]) {
        let mut irq = self.interrupt.state();
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = irq.isr;
        }
        irq.isr = 0;
        self.interrupt.intx.set_level(false);
    }

    /// Performs the BAR access the `VIRTIO_PCI_CAP_PCI_CFG` window
    /// describes (§4.1.4.9): `bar`, `offset` and `length` from the
    /// capability, data in `pci_cfg_data`.
    fn pci_cfg_access(&mut self, write: bool) {
        let c = self.pci_cfg_cap;
        let bar = self.config.read_u32(c + 4) & 0xff;
        let offset = u64::from(self.config.read_u32(c + 8));
        let length = self.config.read_u32(c + 12) as usize;
        if bar != 0 || !matches!(length, 1 | 2 | 4) || !offset.is_multiple_of(length as u64) {
            return;
        }
        let mut data = [0u8; 4];
        if write {
            self.config.read(c + 16, &mut data[..length]);
            self.write_bar(0, offset, &data[..length]);
        } else {
            self.read_bar(0, offset, &mut data[..length]);
            self.config.set_bytes(c + 16, &data[..length]);
        }
    }
}

impl PciDevice for VirtioPci {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        let window = self.pci_cfg_cap + 16;
        if offset < window + 4 && window < offset + data.len() {
            self.pci_cfg_access(false);
        }
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        let touched = |at: usize, len: usize| offset < at + len && at < offset + data.len();
        if touched(reg::COMMAND, 2) {
            let disabled = self.config.command() & COMMAND_INTX_DISABLE != 0;
            self.interrupt.state().intx_disabled = disabled;
            if disabled {
                self.interrupt.intx.set_level(false);
            }
        }
        if touched(self.msix_cap + 2, 2) {
            let control = self.config.read_u16(self.msix_cap + 2);
            let sink = self.interrupt.sink.clone();
            self.interrupt
                .state()
                .msix
                .set_control(control, sink.as_ref());
        }
        if touched(self.pci_cfg_cap + 16, 4) {
            self.pci_cfg_access(true);
        }
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN => self.read_common(o - COMMON_CFG, data),
            o if o == ISR_CFG => self.read_isr(data),
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG, data)
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                self.interrupt.state().msix.read_table(o - MSIX_TABLE, data)
            }
            o if (MSIX_PBA..BAR_SIZE).contains(&o) => {
                self.interrupt.state().msix.read_pba(o - MSIX_PBA, data)
            }
            _ => {}
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN => self.write_common(o - COMMON_CFG, data),
            o if (DEVICE_CFG..DEVICE_CFG + DEVICE_CFG_LEN).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG, data)
            }
            o if (NOTIFY_CFG..MSIX_TABLE).contains(&o) => {
                let rel = o - NOTIFY_CFG;
                if rel.is_multiple_of(u64::from(NOTIFY_OFF_MULTIPLIER)) {
                    let queue = rel / u64::from(NOTIFY_OFF_MULTIPLIER);
                    self.notifies_mmio += 1;
                    self.notify(queue as u16);
                }
            }
            o if (MSIX_TABLE..MSIX_PBA).contains(&o) => {
                let sink = self.interrupt.sink.clone();
                self.interrupt
                    .state()
                    .msix
                    .write_table(o - MSIX_TABLE, data, sink.as_ref())
            }
            _ => {}
        }
    }

    fn name(&self) -> String {
        self.device_type().name().into()
    }

    fn inspect(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "device_status".into(),
                format!("{:#04x}", self.status_now()),
            ),
            (
                "driver_features".into(),
                format!("{:#x}", self.driver_features),
            ),
            (
                "msix_enabled".into(),
                self.interrupt.state().msix.enabled().to_string(),
            ),
            ("notifies_mmio".into(), self.notifies_mmio.to_string()),
            (
                "needs_reset_count".into(),
                self.needs_reset_count.to_string(),
            ),
            (
                "notifies_ioeventfd".into(),
                self.notifies_routed.to_string(),
            ),
        ];
        v.extend(self.device.inspect());
        v
    }

    /// The common configuration, ISR, MSI-X table, queues (with the ring
    /// indices read from guest memory) and the device's counters.
    fn inspect_tree(&self) -> Tree {
        inspect::tree(self)
    }
}

fn new_queues(max_sizes: &[u16]) -> Result<Vec<Queue>, TransportError> {
    max_sizes
        .iter()
        .map(|&size| Queue::new(size).map_err(|_| TransportError::QueueSize(size)))
        .collect()
}

fn put(img: &mut [u8], offset: usize, bytes: &[u8]) {
    img[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Adds a `virtio_pci_cap` (§4.1.4) pointing into BAR 0.
fn add_virtio_cap(
    config: &mut PciConfig,
    cfg_type: u8,
    offset: u64,
    length: u64,
    notify_multiplier: Option<u32>,
) -> Result<usize, crate::pci::config::ConfigError> {
    let cap_len: u8 = if notify_multiplier.is_some() { 20 } else { 16 };
    let mut body = vec![cap_len, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(m) = notify_multiplier {
        body.extend_from_slice(&m.to_le_bytes());
    }
    config.add_capability(cap::VENDOR, &body, &[])
}

/// Adds the `virtio_pci_cfg_cap` window: `bar`, `offset`, `length` and
/// `pci_cfg_data` are writable.
fn add_pci_cfg_cap(config: &mut PciConfig) -> Result<usize, crate::pci::config::ConfigError> {
    let mut body = vec![20u8, cap::PCI_CFG, 0, 0, 0, 0];
    body.extend_from_slice(&[0; 12]);
    let mut mask = vec![0u8, 0, 0xff, 0, 0, 0];
    mask.extend_from_slice(&[0xff; 12]);
    config.add_capability(cap::VENDOR, &body, &mask)
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
