//! The PCI host bridge: bus 0, its configuration cycles and its memory
//! window.
//!
//! **Configuration mechanism #1** (PCI Local Bus 3.0 §3.2.2.3.2): a dword
//! write to `CONFIG_ADDRESS` (port 0xCF8) selects enable bit 31, bus
//! (23:16), device (15:11), function (10:8) and register (7:2); accesses
//! to `CONFIG_DATA` (0xCFC-0xCFF, any width) then reach that register.
//! Only dword accesses at 0xCF8 are the address register: byte accesses
//! there (0xCF9 is the reset-control register on Intel chipsets) are
//! ignored.
//!
//! **ECAM** (PCI Express Base 4.0 §7.2.2): the same space memory-mapped,
//! 4 KiB per function at `bus << 20 | device << 15 | function << 12`.
//! Alcazar decodes bus 0 only, so the window is 1 MiB; the ACPI MCFG
//! table says where it is.
//!
//! **Memory window**: guest accesses in the range the VMM reserves for
//! BARs reach whichever BAR the guest programmed there (memory decoding
//! enabled in its command register); the root keeps a table of the
//! current BAR windows, refreshed after every configuration write.
//!
//! **INTx**: a device's INTA# on slot *s* is wired to IOAPIC pin
//! `16 + s % 4` (the usual rotation, so neighbouring slots spread over the
//! four lines; [`alcazar_core::layout::pci_intx_gsi`]); several devices may share a line, which is
//! asserted while any of them asserts it ([`SharedLine`]).
//!
//! Slot 0 holds the host bridge function itself (class 06/00). Devices are
//! single-function; functions 1-7 and other buses read as absent (all
//! ones).

use std::sync::{Arc, Mutex};

use alcazar_core::bus::lock;
use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::BusDevice;

use super::config::{PciConfig, PciIds};
use super::PciDevice;

/// Slots on bus 0.
pub const SLOTS: usize = 32;
/// Ports the configuration mechanism claims (0xCF8-0xCFF, from
/// [`alcazar_core::layout::PCI_CONFIG_PORT`]).
pub const CONFIG_PORT_COUNT: u16 = 8;

/// Errors from populating the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// All 32 slots are taken.
    #[error("the PCI bus is full (32 slots)")]
    NoSlot,
}

/// Which host bridge sits at 00:00.0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostBridgeKind {
    /// Red Hat's generic PCIe host bridge (1b36:0008): identification
    /// only, for guests that need no firmware.
    #[default]
    Generic,
    /// The Intel 82441FX (i440FX) PCI and memory controller (8086:1237),
    /// which a PC BIOS looks for: its device-specific registers 0x50-0x7f
    /// (PAM0-6 at 0x59-0x5f, which control shadow RAM below 1 MiB, DRAM
    /// rows, SMRAM at 0x72) read back what was written. Alcazar keeps
    /// 0xc0000-0xfffff as RAM whatever the PAM registers say (Intel 82441FX
    /// datasheet §3.2.16; see the firmware boot notes in the VMM).
    I440fx,
}

/// The first and last+1 device-specific register the i440FX keeps.
const I440FX_REGS: std::ops::Range<usize> = 0x50..0x80;

/// The host bridge function at 00:00.0.
#[derive(Debug)]
struct HostBridge {
    config: PciConfig,
    kind: HostBridgeKind,
    /// The i440FX's device-specific registers 0x50-0x7f.
    chipset: [u8; 0x30],
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
        if self.kind == HostBridgeKind::I440fx {
            for (i, b) in data.iter_mut().enumerate() {
                if let Some(r) = offset
                    .checked_add(i)
                    .filter(|o| I440FX_REGS.contains(o))
                    .and_then(|o| self.chipset.get(o - I440FX_REGS.start))
                {
                    *b = *r;
                }
            }
        }
    }
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
        if self.kind == HostBridgeKind::I440fx {
            for (i, b) in data.iter().enumerate() {
                if let Some(r) = offset
                    .checked_add(i)
                    .filter(|o| I440FX_REGS.contains(o))
                    .and_then(|o| self.chipset.get_mut(o - I440FX_REGS.start))
                {
                    *r = *b;
                }
            }
        }
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    fn name(&self) -> String {
        "host-bridge".into()
    }
}

/// The identity of the host bridge: Red Hat's generic PCIe host bridge
/// ID (1b36:0008), which no driver binds to, class "host bridge".
const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor_id: 0x1b36,
    device_id: 0x0008,
    revision_id: 0,
    class_code: 0x06_00_00,
    subsystem_vendor_id: 0x1b36,
    subsystem_id: 0x0008,
};

/// The i440FX's identity (82441FX datasheet §3.2: vendor 8086, device
/// 1237, revision 02), with the subsystem ID QEMU gives it (1af4:1100),
/// by which SeaBIOS knows it runs on a machine with QEMU's firmware
/// interfaces (fw_cfg).
const I440FX_IDS: PciIds = PciIds {
    vendor_id: 0x8086,
    device_id: 0x1237,
    revision_id: 2,
    class_code: 0x06_00_00,
    subsystem_vendor_id: 0x1af4,
    subsystem_id: 0x1100,
};

/// A memory access's target: the device, the BAR index and the offset in
/// that BAR.
pub type BarTarget = (Arc<Mutex<dyn PciDevice>>, usize, u64);

/// A device in a slot, with the BAR windows it decodes now.
struct Slot {
    device: Arc<Mutex<dyn PciDevice>>,
    /// (BAR index, base, size) of each enabled memory BAR.
    windows: Vec<(usize, u64, u64)>,
    /// (BAR index, base port, size) of each enabled I/O BAR.
    io_windows: Vec<(usize, u64, u64)>,
}

/// Bus 0 behind the host bridge.
pub struct PciRoot {
    config_address: u32,
    slots: Vec<Option<Slot>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field(
                "config_address",
                &format_args!("{:#x}", self.config_address),
            )
            .field("devices", &self.slots.iter().flatten().count())
            .finish()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// A bus with the generic host bridge in slot 0.
    pub fn new() -> Self {
        Self::with_host_bridge(HostBridgeKind::Generic)
    }

    /// A bus with host bridge `kind` in slot 0.
    pub fn with_host_bridge(kind: HostBridgeKind) -> Self {
        let mut root = PciRoot {
            config_address: 0,
            slots: (0..SLOTS).map(|_| None).collect(),
        };
        let ids = match kind {
            HostBridgeKind::Generic => HOST_BRIDGE_IDS,
            HostBridgeKind::I440fx => I440FX_IDS,
        };
        let bridge = HostBridge {
            config: PciConfig::new(ids, 0),
            kind,
            chipset: [0; 0x30],
        };
        root.slots[0] = Some(Slot {
            device: Arc::new(Mutex::new(bridge)),
            windows: Vec::new(),
            io_windows: Vec::new(),
        });
        root
    }

    /// The first free slot.
    pub fn free_slot(&self) -> Result<u8, PciError> {
        self.slots
            .iter()
            .position(Option::is_none)
            .map(|s| s as u8)
            .ok_or(PciError::NoSlot)
    }

    /// Puts `device` in `slot` (from [`PciRoot::free_slot`]).
    pub fn add(&mut self, slot: u8, device: Arc<Mutex<dyn PciDevice>>) -> Result<(), PciError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot))
            .filter(|s| s.is_none())
            .ok_or(PciError::NoSlot)?;
        *entry = Some(Slot {
            device,
            windows: Vec::new(),
            io_windows: Vec::new(),
        });
        self.refresh_windows(usize::from(slot));
        Ok(())
    }

    /// The devices on the bus with their slot numbers (for the
    /// inspector and the firmware tables).
    pub fn devices(&self) -> Vec<(u8, Arc<Mutex<dyn PciDevice>>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i as u8, s.device.clone())))
            .collect()
    }

    /// A configuration read of function `function` of `slot` on `bus`.
    pub fn config_read(&self, bus: u8, slot: u8, function: u8, offset: usize, data: &mut [u8]) {
        match self.function(bus, slot, function) {
            Some(dev) => lock(&dev).read_config(offset, data),
            None => data.fill(0xff),
        }
    }

    /// A configuration write.
    pub fn config_write(&mut self, bus: u8, slot: u8, function: u8, offset: usize, data: &[u8]) {
        if let Some(dev) = self.function(bus, slot, function) {
            lock(&dev).write_config(offset, data);
            self.refresh_windows(usize::from(slot));
        }
    }

    fn function(&self, bus: u8, slot: u8, function: u8) -> Option<Arc<Mutex<dyn PciDevice>>> {
        if bus != 0 || function != 0 {
            return None;
        }
        let slot = self.slots.get(usize::from(slot))?.as_ref()?;
        Some(slot.device.clone())
    }

    fn refresh_windows(&mut self, slot: usize) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let dev = lock(&s.device);
        let config = dev.config();
        let of_kind = |want: super::BarKind| -> Vec<(usize, u64, u64)> {
            (0..6)
                .filter_map(|bar| {
                    let (kind, base, size) = config.bar_window(bar)?;
                    (kind == want && base != 0).then_some((bar, base, size))
                })
                .collect()
        };
        let windows = of_kind(super::BarKind::Memory32);
        let io_windows = of_kind(super::BarKind::Io);
        drop(dev);
        s.windows = windows;
        s.io_windows = io_windows;
    }

    /// The device BAR decoding guest physical `addr`, with the offset
    /// into that BAR.
    pub fn decode_memory(&self, addr: u64) -> Option<BarTarget> {
        self.slots.iter().flatten().find_map(|s| {
            s.windows
                .iter()
                .find(|(_, base, size)| addr >= *base && addr - base < *size)
                .map(|&(bar, base, _)| (s.device.clone(), bar, addr - base))
        })
    }

    /// The device I/O BAR decoding `port`, with the offset into that BAR.
    pub fn decode_io(&self, port: u64) -> Option<BarTarget> {
        self.slots.iter().flatten().find_map(|s| {
            s.io_windows
                .iter()
                .find(|(_, base, size)| port >= *base && port - base < *size)
                .map(|&(bar, base, _)| (s.device.clone(), bar, port - base))
        })
    }

    /// A data-port access: the register `CONFIG_ADDRESS` selects, plus
    /// `port_offset` (0-3) within the dword.
    fn data_port_target(&self, port_offset: u64) -> Option<(u8, u8, u8, usize)> {
        let a = self.config_address;
        if a & (1 << 31) == 0 {
            return None;
        }
        let bus = (a >> 16) as u8;
        let slot = ((a >> 11) & 0x1f) as u8;
        let function = ((a >> 8) & 7) as u8;
        let register = (a & 0xfc) as usize + port_offset as usize;
        Some((bus, slot, function, register))
    }
}

impl PciRoot {
    /// The inspector's view of bus 0: `CONFIG_ADDRESS` decoded, then each
    /// function (`bb:dd.f`) with its name, its configuration space and
    /// its own state. Locks each function in turn; changes nothing.
    pub fn inspect(&self) -> Tree {
        let a = self.config_address;
        let mut address = Tree::new();
        address
            .hex("value", u64::from(a), 8)
            .value("enable", a & (1 << 31) != 0)
            .value("bus", (a >> 16) & 0xff)
            .value("device", (a >> 11) & 0x1f)
            .value("function", (a >> 8) & 7)
            .hex("register", u64::from(a & 0xfc), 2);
        let mut functions = Tree::new();
        for (slot, device) in self.devices() {
            let device = lock(&device);
            let mut f = Tree::new();
            f.value("name", device.name());
            for (name, node) in device.config().inspect().entries() {
                push(&mut f, name, node);
            }
            let own = device.inspect_tree();
            if !own.is_empty() {
                f.child("device", own);
            }
            functions.child(format!("00:{slot:02x}.0"), f);
        }
        let mut t = Tree::new();
        t.child("config_address", address)
            .child("functions", functions);
        t
    }

    /// The BAR windows decoding guest memory now, for the inspector.
    fn windows_tree(&self) -> Tree {
        let mut t = Tree::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(s) = s.as_ref().filter(|s| !s.windows.is_empty()) else {
                continue;
            };
            let mut f = Tree::new();
            for &(bar, base, size) in &s.windows {
                let mut w = Tree::new();
                w.hex("base", base, 8).hex("size", size, 8);
                f.child(format!("bar{bar}"), w);
            }
            t.child(format!("00:{slot:02x}.0"), f);
        }
        t
    }
}

/// Appends `node` to `tree` under `name`.
fn push(tree: &mut Tree, name: &str, node: &alcazar_core::inspect::Node) {
    match node {
        alcazar_core::inspect::Node::Value(v) => tree.value(name, v),
        alcazar_core::inspect::Node::Tree(t) => tree.child(name, t.clone()),
    };
}

/// Splits an ECAM offset into (slot, function, register), for bus 0.
fn ecam_target(offset: u64) -> (u8, u8, usize) {
    (
        ((offset >> 15) & 0x1f) as u8,
        ((offset >> 12) & 7) as u8,
        (offset & 0xfff) as usize,
    )
}

/// Ports 0xCF8-0xCFF: configuration mechanism #1.
#[derive(Debug)]
pub struct PciRootPorts(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciRootPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let root = lock(&self.0);
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&root.config_address.to_le_bytes()),
            4..=7 => match root.data_port_target(offset - 4) {
                Some((bus, slot, function, register)) => {
                    root.config_read(bus, slot, function, register, data)
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut root = lock(&self.0);
        match offset {
            0 if data.len() == 4 => {
                let mut b = [0u8; 4];
                b.copy_from_slice(data);
                // Bits 1:0 are reserved and read back as zero.
                root.config_address = u32::from_le_bytes(b) & !3;
            }
            4..=7 => {
                if let Some((bus, slot, function, register)) = root.data_port_target(offset - 4) {
                    root.config_write(bus, slot, function, register, data);
                }
            }
            _ => {}
        }
    }

    /// The whole bus (see [`PciRoot::inspect`]).
    fn inspect(&self) -> Tree {
        lock(&self.0).inspect()
    }
}

/// The ECAM window (bus 0).
#[derive(Debug)]
pub struct PciEcam(pub Arc<Mutex<PciRoot>>);

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let (slot, function, register) = ecam_target(offset);
        lock(&self.0).config_read(0, slot, function, register, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (slot, function, register) = ecam_target(offset);
        lock(&self.0).config_write(0, slot, function, register, data);
    }
}

/// The memory window where BARs live: each access goes to the BAR that
/// decodes it, or reads all ones.
#[derive(Debug)]
pub struct PciWindow {
    /// The bus.
    pub root: Arc<Mutex<PciRoot>>,
    /// Guest physical address of the window's first byte.
    pub base: u64,
}

impl BusDevice for PciWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let target = lock(&self.root).decode_memory(self.base + offset);
        match target {
            Some((dev, bar, at)) => lock(&dev).read_bar(bar, at, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let target = lock(&self.root).decode_memory(self.base + offset);
        if let Some((dev, bar, at)) = target {
            lock(&dev).write_bar(bar, at, data);
        }
    }

    /// Which BARs the window decodes now (the functions themselves are
    /// under the configuration ports' device).
    fn inspect(&self) -> Tree {
        let mut t = Tree::new();
        t.child("bar_windows", lock(&self.root).windows_tree());
        t
    }
}

/// The I/O port range where I/O BARs live (a firmware assigns them from
/// 0xc000 up): each access goes to the BAR that decodes it, or reads all
/// ones.
#[derive(Debug)]
pub struct PciIoWindow {
    /// The bus.
    pub root: Arc<Mutex<PciRoot>>,
    /// The window's first port.
    pub base: u64,
}

impl BusDevice for PciIoWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let target = lock(&self.root).decode_io(self.base + offset);
        match target {
            Some((dev, bar, at)) => lock(&dev).read_bar(bar, at, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let target = lock(&self.root).decode_io(self.base + offset);
        if let Some((dev, bar, at)) = target {
            lock(&dev).write_bar(bar, at, data);
        }
    }
}

/// An interrupt line several PCI functions share: asserted while any
/// source asserts it (the wired-OR of PCI INTx#, PCI 3.0 §2.2.6).
pub struct SharedLine {
    line: Arc<dyn IrqLine>,
    asserted: Mutex<u32>,
}

impl std::fmt::Debug for SharedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLine").finish_non_exhaustive()
    }
}

impl SharedLine {
    /// A shared line driving `line`.
    pub fn new(line: Arc<dyn IrqLine>) -> Arc<Self> {
        Arc::new(SharedLine {
            line,
            asserted: Mutex::new(0),
        })
    }

    /// The line as source `source` (0-31, the slot number) drives it.
    pub fn source(self: &Arc<Self>, source: u8) -> Arc<dyn IrqLine> {
        Arc::new(LineSource {
            shared: self.clone(),
            bit: 1u32 << (source % 32),
        })
    }
}

struct LineSource {
    shared: Arc<SharedLine>,
    bit: u32,
}

impl IrqLine for LineSource {
    fn set_level(&self, high: bool) {
        let mut asserted = lock(&self.shared.asserted);
        let before = *asserted != 0;
        if high {
            *asserted |= self.bit;
        } else {
            *asserted &= !self.bit;
        }
        let after = *asserted != 0;
        if before != after || high {
            self.shared.line.set_level(after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::reg;
    use super::*;

    fn cf8(bus: u8, slot: u8, reg: u8) -> u32 {
        1 << 31 | u32::from(bus) << 16 | u32::from(slot) << 11 | u32::from(reg)
    }

    #[test]
    fn mechanism_1_reads_the_host_bridge_and_absent_slots_read_ones() {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mut ports = PciRootPorts(root);
        ports.write(0, &cf8(0, 0, 0).to_le_bytes());
        let mut id = [0u8; 4];
        ports.read(4, &mut id);
        assert_eq!(u32::from_le_bytes(id), 0x0008_1b36);
        // A 16-bit read at 0xCFE gives the device ID.
        let mut w = [0u8; 2];
        ports.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0008);
        ports.write(0, &cf8(0, 5, 0).to_le_bytes());
        ports.read(4, &mut id);
        assert_eq!(id, [0xff; 4]);
        ports.write(0, &cf8(1, 0, 0).to_le_bytes());
        ports.read(4, &mut id);
        assert_eq!(id, [0xff; 4]);
        // A byte write to 0xCF9 (reset control) leaves the address alone.
        ports.write(1, &[0x06]);
        let mut a = [0u8; 4];
        ports.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), cf8(1, 0, 0));
    }

    #[test]
    fn ecam_reaches_the_same_registers() {
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mut ecam = PciEcam(root);
        let mut class = [0u8; 4];
        ecam.read(reg::REVISION_ID as u64, &mut class);
        assert_eq!(u32::from_le_bytes(class) >> 8, 0x06_00_00);
        let mut far = [0u8; 4];
        ecam.read(0xf_ffff - 3, &mut far);
        assert_eq!(far, [0xff; 4]);
    }

    #[test]
    fn shared_line_stays_up_while_any_source_asserts() {
        #[derive(Default)]
        struct Level(Mutex<Vec<bool>>);
        impl IrqLine for Level {
            fn set_level(&self, high: bool) {
                self.0.lock().unwrap().push(high);
            }
        }
        let level = Arc::new(Level::default());
        let shared = SharedLine::new(level.clone());
        let (a, b) = (shared.source(1), shared.source(5));
        a.set_level(true);
        b.set_level(true);
        a.set_level(false);
        assert_eq!(level.0.lock().unwrap().last(), Some(&true));
        b.set_level(false);
        assert_eq!(level.0.lock().unwrap().last(), Some(&false));
    }

    /// A function with one 4 KiB memory BAR.
    struct OneBar(PciConfig);

    impl PciDevice for OneBar {
        fn config(&self) -> &PciConfig {
            &self.0
        }
        fn write_config(&mut self, offset: usize, data: &[u8]) {
            self.0.write(offset, data);
        }
        fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
        fn name(&self) -> String {
            "one-bar".into()
        }
        fn inspect(&self) -> Vec<(String, String)> {
            vec![("writes".into(), "0".into())]
        }
    }

    #[test]
    fn inspector_lists_functions_and_the_windows_they_decode() {
        use super::super::config::{Bar, BarKind};
        use alcazar_core::inspect::Node;
        let root = Arc::new(Mutex::new(PciRoot::new()));
        let mut config = PciConfig::new(HOST_BRIDGE_IDS, 1);
        let bar = Bar {
            size: 0x1000,
            kind: BarKind::Memory32,
        };
        config.add_bar(0, bar, 0xc000_1000).unwrap();
        let slot = lock(&root).free_slot().unwrap();
        lock(&root)
            .add(slot, Arc::new(Mutex::new(OneBar(config))))
            .unwrap();
        let mut ports = PciRootPorts(root.clone());
        let window = PciWindow {
            root: root.clone(),
            base: 0xc000_0000,
        };
        let shown = |t: &Tree, path: &str| match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        };
        assert!(window.inspect().get("bar_windows/00:01.0").is_none());
        ports.write(0, &cf8(0, 1, reg::COMMAND as u8).to_le_bytes());
        ports.write(4, &2u16.to_le_bytes()); // memory space on
        let t = ports.inspect();
        assert_eq!(shown(&t, "config_address/device"), "1");
        assert_eq!(shown(&t, "config_address/register"), "0x04");
        assert_eq!(shown(&t, "functions/00:00.0/name"), "host-bridge");
        assert_eq!(shown(&t, "functions/00:00.0/class_code"), "0x060000");
        assert_eq!(shown(&t, "functions/00:01.0/name"), "one-bar");
        assert_eq!(shown(&t, "functions/00:01.0/command/memory_space"), "true");
        assert_eq!(
            shown(&t, "functions/00:01.0/bars/bar0/address"),
            "0xc0001000"
        );
        assert_eq!(shown(&t, "functions/00:01.0/device/writes"), "0");
        let w = window.inspect();
        assert_eq!(shown(&w, "bar_windows/00:01.0/bar0/base"), "0xc0001000");
        assert_eq!(shown(&w, "bar_windows/00:01.0/bar0/size"), "0x00001000");
    }
}
