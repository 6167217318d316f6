//! The machine's PCI bus: where the host bridge's registers sit, where
//! BARs are placed, how INTx reaches the IOAPIC, and how a virtio device
//! joins the bus.
//!
//! | range | what |
//! |---|---|
//! | ports 0xCF8-0xCFF | configuration mechanism #1 |
//! | [`ECAM_BASE`] + 1 MiB | ECAM for bus 0 (ACPI MCFG; reserved in e820) |
//! | [`PCI_MMIO_START`]..[`PCI_MMIO_END`] | the 32-bit memory window for BARs (the `_CRS` of `\_SB.PCI0`) |
//! | [`PCI_MMIO2_START`]..[`PCI_MMIO2_END`] | a second one, where a PC BIOS puts BARs (top down) |
//! | ports [`PCI_IO_START`]..=[`PCI_IO_LAST`] | I/O BARs |
//!
//! Alcazar is the firmware here: it assigns each BAR an address in the
//! window (naturally aligned, in slot order) and writes the interrupt line
//! register; the OS may keep or move them. INTA# of slot *s* drives IOAPIC
//! pin `16 + s % 4`, as the DSDT's `_PRT` says; functions on the same pin
//! share it (wired-OR). Under the kvm engine each live virtio device's
//! queue notifications go through ioeventfds ([`crate::doorbell`]).

use std::sync::{Arc, Mutex};

use alcazar_core::bus::{lock, SharedDevice};
use alcazar_core::irq::MsiSink;
use alcazar_core::layout::{
    pci_intx_gsi, ECAM_BASE, ECAM_SIZE, PCI_CONFIG_PORT, PCI_INTX_FIRST_GSI, PCI_IO_LAST,
    PCI_IO_START, PCI_MMIO2_END, PCI_MMIO2_START, PCI_MMIO_END, PCI_MMIO_START,
};
use alcazar_core::{DmaMemory, IoEvents, IoSpace, Machine, VmControl};
use alcazar_devices::pci::root::{PciEcam, SharedLine, CONFIG_PORT_COUNT};
use alcazar_devices::pci::{
    HostBridgeKind, PciDevice, PciIoWindow, PciRoot, PciRootPorts, PciWindow,
};
use alcazar_devices::virtio::pci::{VirtioPci, BAR_SIZE};
use alcazar_devices::virtio::VirtioDevice;

use crate::doorbell::DoorbellRoute;
use crate::error::VmmError;
use crate::platform::Chipset;

/// The PCI bus of one machine.
pub struct PciBus {
    root: Arc<Mutex<PciRoot>>,
    next_bar: Mutex<u64>,
    intx: Vec<Arc<SharedLine>>,
    msi: Arc<dyn MsiSink>,
    memory: DmaMemory,
    virtio: Mutex<Vec<(u8, Arc<Mutex<VirtioPci>>)>>,
    /// The engine's ioeventfds, if it has them, and the VM's stop switch
    /// (which ends the doorbell threads).
    io_events: Option<Arc<dyn IoEvents>>,
    control: Arc<VmControl>,
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciBus").finish_non_exhaustive()
    }
}

impl PciBus {
    /// Host bridge `bridge` with an empty bus, its registers and windows
    /// on `machine`'s buses, INTx wired to `chipset`'s IOAPIC; virtio
    /// doorbells go through `io_events` when the engine has them.
    pub fn new(
        machine: &Machine,
        chipset: &Chipset,
        io_events: Option<Arc<dyn IoEvents>>,
        bridge: HostBridgeKind,
    ) -> Result<Self, VmmError> {
        let root = Arc::new(Mutex::new(PciRoot::with_host_bridge(bridge)));
        let ports: SharedDevice = Arc::new(Mutex::new(PciRootPorts(root.clone())));
        let ecam: SharedDevice = Arc::new(Mutex::new(PciEcam(root.clone())));
        let window: SharedDevice = Arc::new(Mutex::new(PciWindow {
            root: root.clone(),
            base: PCI_MMIO_START,
        }));
        let bus = &machine.bus;
        bus.insert(
            IoSpace::Port,
            u64::from(PCI_CONFIG_PORT),
            u64::from(CONFIG_PORT_COUNT),
            "pci-config",
            ports,
        )?;
        bus.insert(IoSpace::Mmio, ECAM_BASE, ECAM_SIZE, "pci-ecam", ecam)?;
        bus.insert(
            IoSpace::Mmio,
            PCI_MMIO_START,
            PCI_MMIO_END - PCI_MMIO_START,
            "pci-window",
            window,
        )?;
        let window2: SharedDevice = Arc::new(Mutex::new(PciWindow {
            root: root.clone(),
            base: PCI_MMIO2_START,
        }));
        bus.insert(
            IoSpace::Mmio,
            PCI_MMIO2_START,
            PCI_MMIO2_END - PCI_MMIO2_START,
            "pci-window-2",
            window2,
        )?;
        let io_window: SharedDevice = Arc::new(Mutex::new(PciIoWindow {
            root: root.clone(),
            base: u64::from(PCI_IO_START),
        }));
        bus.insert(
            IoSpace::Port,
            u64::from(PCI_IO_START),
            u64::from(PCI_IO_LAST - PCI_IO_START) + 1,
            "pci-io-window",
            io_window,
        )?;
        let intx = (0..4)
            .map(|i| SharedLine::new(chipset.ioapic_line(PCI_INTX_FIRST_GSI + i)))
            .collect();
        Ok(PciBus {
            root,
            next_bar: Mutex::new(PCI_MMIO_START),
            intx,
            msi: chipset.msi_sink(),
            memory: machine.memory.dma(),
            virtio: Mutex::new(Vec::new()),
            io_events,
            control: machine.control.clone(),
        })
    }

    /// The bus behind the host bridge.
    pub fn root(&self) -> &Arc<Mutex<PciRoot>> {
        &self.root
    }

    /// The virtio devices with their slots (the kvm engine's ioeventfds
    /// reach them directly).
    pub fn virtio_devices(&self) -> Vec<(u8, Arc<Mutex<VirtioPci>>)> {
        lock(&self.virtio).clone()
    }

    /// Assigns `size` bytes of the window, naturally aligned.
    fn allocate_bar(&self, size: u64) -> Result<u64, VmmError> {
        let mut next = lock(&self.next_bar);
        let base = next.next_multiple_of(size);
        if base + size > PCI_MMIO_END {
            return Err(VmmError::Pci("the PCI memory window is full".into()));
        }
        *next = base + size;
        Ok(base)
    }

    /// Puts `device` on the bus behind the virtio PCI transport; returns
    /// its slot.
    pub fn add_virtio(&self, device: Box<dyn VirtioDevice>) -> Result<u8, VmmError> {
        let slot = lock(&self.root)
            .free_slot()
            .map_err(|e| VmmError::Pci(e.to_string()))?;
        let bar = self.allocate_bar(BAR_SIZE)?;
        let gsi = pci_intx_gsi(slot, 1);
        let line = self.intx[usize::from(gsi - PCI_INTX_FIRST_GSI)].source(slot);
        let transport = VirtioPci::new(
            device,
            self.memory.clone(),
            bar,
            line,
            gsi,
            self.msi.clone(),
        )
        .map_err(|e| VmmError::Pci(e.to_string()))?;
        let name = transport.device_type().name();
        let transport = Arc::new(Mutex::new(transport));
        if let Some(io) = &self.io_events {
            let route = DoorbellRoute::new(
                io.clone(),
                &transport,
                format!("{name}-{slot}"),
                &self.control,
            )
            .map_err(|source| VmmError::Io {
                what: "creating an eventfd".into(),
                source,
            })?;
            lock(&transport).set_notify_route(route);
        }
        let as_pci: Arc<Mutex<dyn PciDevice>> = transport.clone();
        lock(&self.root)
            .add(slot, as_pci)
            .map_err(|e| VmmError::Pci(e.to_string()))?;
        lock(&self.virtio).push((slot, transport));
        tracing::debug!(
            slot,
            bar = format_args!("{bar:#x}"),
            gsi,
            "{name} on the PCI bus"
        );
        Ok(slot)
    }
}
