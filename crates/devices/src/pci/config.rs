//! A PCI function's configuration space (PCI Local Bus 3.0 §6.1,
//! "Configuration Space Organization"; type 0 header, Figure 6-1).
//!
//! 256 bytes: the predefined header (IDs, command/status, class, BARs,
//! interrupt line/pin, the capabilities pointer), then the capability
//! list. The extended space of PCI Express (256..4096, reachable only
//! through ECAM) reads as zero: no extended capabilities.
//!
//! Every byte has a write mask: the guest changes only the bits a real
//! function lets it change (the command register's enables, the
//! interrupt line, a BAR's address bits, capability bits a device
//! marks writable). BARs follow §6.2.5.1: writing all ones and reading
//! back yields the size mask, which is how an OS sizes them.

/// Configuration space size of a conventional PCI function.
pub const CONFIG_SIZE: usize = 256;

/// Offsets of the type 0 header registers.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION_ID: usize = 0x08;
    /// Class code: programming interface, sub-class, base class.
    pub const CLASS_CODE: usize = 0x09;
    /// Header type (bit 7: multi-function).
    pub const HEADER_TYPE: usize = 0x0e;
    /// Base Address Register 0; BARs 1-5 follow at 4-byte steps.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID.
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    /// Subsystem ID.
    pub const SUBSYSTEM_ID: usize = 0x2e;
    /// Capabilities pointer.
    pub const CAPABILITIES_POINTER: usize = 0x34;
    /// Interrupt line (for the OS; the hardware ignores it).
    pub const INTERRUPT_LINE: usize = 0x3c;
    /// Interrupt pin: 1 = INTA# .. 4 = INTD#, 0 = none.
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register: the function responds to I/O space accesses.
pub const COMMAND_IO_SPACE: u16 = 1 << 0;
/// Command register: the function responds to memory space accesses.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command register: the function may master the bus (DMA, MSI).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: the function must not assert INTx#.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: the function has a capability list.
pub const STATUS_CAPABILITIES_LIST: u16 = 1 << 4;
/// Status register: the function's INTx# is asserted (read-only).
pub const STATUS_INTERRUPT: u16 = 1 << 3;

/// Where a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit memory space, not prefetchable.
    Memory32,
    /// I/O space.
    Io,
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its size in bytes (a power of two; at least 16 for memory, 4 for
    /// I/O).
    pub size: u64,
    /// Memory or I/O.
    pub kind: BarKind,
}

/// Errors from building a configuration space (device bugs, caught when
/// the machine is built).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A BAR size is not a power of two or too small.
    #[error("BAR {0} has a bad size")]
    BadBarSize(usize),
    /// The capability list does not fit in the 256-byte space.
    #[error("capabilities do not fit in the configuration space")]
    NoRoom,
}

/// The configuration space of one function.
#[derive(Clone)]
pub struct PciConfig {
    bytes: [u8; CONFIG_SIZE],
    write_mask: [u8; CONFIG_SIZE],
    bars: [Option<Bar>; 6],
    /// Offset of the last capability added (0: none).
    last_capability: usize,
    /// Where the next capability goes.
    next_free: usize,
}

impl std::fmt::Debug for PciConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciConfig")
            .field(
                "vendor_id",
                &format_args!("{:#06x}", self.read_u16(reg::VENDOR_ID)),
            )
            .field(
                "device_id",
                &format_args!("{:#06x}", self.read_u16(reg::DEVICE_ID)),
            )
            .finish_non_exhaustive()
    }
}

/// The identity a function presents in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// Class code (base class << 16 | sub-class << 8 | prog-if).
    pub class_code: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
}

impl PciConfig {
    /// A type 0 header with `ids`, no BARs and no capabilities.
    /// `interrupt_pin` is 1 (INTA#) for functions with an interrupt, 0
    /// for none.
    pub fn new(ids: PciIds, interrupt_pin: u8) -> Self {
        let mut c = PciConfig {
            bytes: [0; CONFIG_SIZE],
            write_mask: [0; CONFIG_SIZE],
            bars: [None; 6],
            last_capability: 0,
            next_free: 0x40,
        };
        c.set_u16(reg::VENDOR_ID, ids.vendor_id);
        c.set_u16(reg::DEVICE_ID, ids.device_id);
        c.bytes[reg::REVISION_ID] = ids.revision_id;
        c.bytes[reg::CLASS_CODE] = ids.class_code as u8;
        c.bytes[reg::CLASS_CODE + 1] = (ids.class_code >> 8) as u8;
        c.bytes[reg::CLASS_CODE + 2] = (ids.class_code >> 16) as u8;
        c.set_u16(reg::SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor_id);
        c.set_u16(reg::SUBSYSTEM_ID, ids.subsystem_id);
        c.bytes[reg::INTERRUPT_PIN] = interrupt_pin;
        let command = COMMAND_IO_SPACE | COMMAND_MEMORY_SPACE | COMMAND_BUS_MASTER;
        let command = if interrupt_pin != 0 {
            command | COMMAND_INTX_DISABLE
        } else {
            command
        };
        c.set_mask(reg::COMMAND, &command.to_le_bytes());
        c.set_mask(reg::INTERRUPT_LINE, &[0xff]);
        // Cache line size and latency timer: plain read/write registers.
        c.set_mask(0x0c, &[0xff, 0xff]);
        c
    }

    /// Declares BAR `index` (0-5) with `bar`'s size and kind, placed at
    /// `address` (the firmware's assignment; the OS may move it).
    pub fn add_bar(&mut self, index: usize, bar: Bar, address: u64) -> Result<(), ConfigError> {
        let min = match bar.kind {
            BarKind::Memory32 => 16,
            BarKind::Io => 4,
        };
        if index >= 6 || !bar.size.is_power_of_two() || bar.size < min || bar.size > 1 << 31 {
            return Err(ConfigError::BadBarSize(index));
        }
        self.bars[index] = Some(bar);
        let offset = reg::BAR0 + 4 * index;
        let mask = !(bar.size as u32 - 1);
        self.set_mask(offset, &mask.to_le_bytes());
        self.set_u32(offset, (address as u32 & mask) | bar_flags(bar.kind));
        Ok(())
    }

    /// Appends a capability with ID `id` and `body` (the bytes after the
    /// ID and next pointer); `writable` masks the body bytes the guest may
    /// change (same length as `body`, or empty for none). Returns the
    /// capability's offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<usize, ConfigError> {
        let offset = self.next_free;
        let len = (2 + body.len()).next_multiple_of(4);
        if offset + len > CONFIG_SIZE {
            return Err(ConfigError::NoRoom);
        }
        self.bytes[offset] = id;
        self.bytes[offset + 2..offset + 2 + body.len()].copy_from_slice(body);
        let mask_len = writable.len().min(body.len());
        self.write_mask[offset + 2..offset + 2 + mask_len].copy_from_slice(&writable[..mask_len]);
        if self.last_capability == 0 {
            self.bytes[reg::CAPABILITIES_POINTER] = offset as u8;
        } else {
            self.bytes[self.last_capability + 1] = offset as u8;
        }
        let status = self.read_u16(reg::STATUS) | STATUS_CAPABILITIES_LIST;
        self.set_u16(reg::STATUS, status);
        self.last_capability = offset;
        self.next_free = offset + len;
        Ok(offset)
    }

    /// Reads `data.len()` bytes at `offset`; beyond the 256 bytes (the
    /// PCIe extended space) reads zero.
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset + i).copied().unwrap_or(0);
        }
    }

    /// A guest write of `data` at `offset`: only writable bits change.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let Some(mask) = self.write_mask.get(offset + i).copied() else {
                return;
            };
            let old = self.bytes[offset + i];
            self.bytes[offset + i] = (old & !mask) | (b & mask);
        }
    }

    /// The little-endian 16-bit value at `offset`.
    pub fn read_u16(&self, offset: usize) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// The little-endian 32-bit value at `offset`.
    pub fn read_u32(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Sets a 16-bit value regardless of the write mask (the device's own
    /// read-only registers).
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Sets a 32-bit value regardless of the write mask.
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    /// Sets bytes regardless of the write mask.
    pub fn set_bytes(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(offset..offset + data.len()) {
            dst.copy_from_slice(data);
        }
    }

    fn set_mask(&mut self, offset: usize, mask: &[u8]) {
        self.write_mask[offset..offset + mask.len()].copy_from_slice(mask);
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(reg::COMMAND)
    }

    /// Whether INTx# may be asserted (the command register's Interrupt
    /// Disable bit is clear).
    pub fn intx_enabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE == 0
    }

    /// Reflects the function's INTx# level in the status register.
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let status = self.read_u16(reg::STATUS) & !STATUS_INTERRUPT;
        let status = status | if asserted { STATUS_INTERRUPT } else { 0 };
        self.set_u16(reg::STATUS, status);
    }

    /// BAR `index`'s declaration.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// Where BAR `index` decodes now, if it exists and its space is
    /// enabled in the command register.
    pub fn bar_window(&self, index: usize) -> Option<(BarKind, u64, u64)> {
        let bar = self.bar(index)?;
        let enabled = match bar.kind {
            BarKind::Memory32 => COMMAND_MEMORY_SPACE,
            BarKind::Io => COMMAND_IO_SPACE,
        };
        if self.command() & enabled == 0 {
            return None;
        }
        let raw = self.read_u32(reg::BAR0 + 4 * index);
        let base = u64::from(raw & !(bar.size as u32 - 1));
        Some((bar.kind, base, bar.size))
    }
}

fn bar_flags(kind: BarKind) -> u32 {
    match kind {
        BarKind::Memory32 => 0, // memory, 32-bit, not prefetchable
        BarKind::Io => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor_id: 0x1af4,
            device_id: 0x1044,
            revision_id: 1,
            class_code: 0xff_00_00,
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x40,
        }
    }

    #[test]
    fn bar_sizing_reads_back_the_size_mask() {
        let mut c = PciConfig::new(ids(), 1);
        c.add_bar(
            0,
            Bar {
                size: 0x4000,
                kind: BarKind::Memory32,
            },
            0xc000_0000,
        )
        .unwrap();
        assert_eq!(c.read_u32(reg::BAR0), 0xc000_0000);
        c.write(reg::BAR0, &u32::MAX.to_le_bytes());
        assert_eq!(c.read_u32(reg::BAR0), 0xffff_c000);
        c.write(reg::BAR0, &0xc123_4567u32.to_le_bytes());
        assert_eq!(c.read_u32(reg::BAR0), 0xc123_4000);
        // Decoding is off until the OS enables memory space.
        assert_eq!(c.bar_window(0), None);
        c.write(reg::COMMAND, &COMMAND_MEMORY_SPACE.to_le_bytes());
        assert_eq!(
            c.bar_window(0),
            Some((BarKind::Memory32, 0xc123_4000, 0x4000))
        );
        // An unimplemented BAR stays zero whatever is written.
        c.write(reg::BAR0 + 4, &u32::MAX.to_le_bytes());
        assert_eq!(c.read_u32(reg::BAR0 + 4), 0);
    }

    #[test]
    fn read_only_registers_ignore_writes() {
        let mut c = PciConfig::new(ids(), 1);
        c.write(reg::VENDOR_ID, &[0, 0, 0, 0]);
        assert_eq!(c.read_u16(reg::VENDOR_ID), 0x1af4);
        c.write(reg::COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), 0x0407);
    }

    #[test]
    fn disabled_memory_space_hides_the_bar() {
        let mut c = PciConfig::new(ids(), 0);
        c.add_bar(
            0,
            Bar {
                size: 0x1000,
                kind: BarKind::Memory32,
            },
            0xc000_0000,
        )
        .unwrap();
        c.write(reg::COMMAND, &0u16.to_le_bytes());
        assert_eq!(c.bar_window(0), None);
    }

    #[test]
    fn capabilities_form_a_list() {
        let mut c = PciConfig::new(ids(), 0);
        let a = c.add_capability(0x09, &[0; 14], &[]).unwrap();
        let b = c.add_capability(0x11, &[0; 10], &[]).unwrap();
        assert_eq!(c.read(reg::CAPABILITIES_POINTER, &mut [0]), ());
        assert_eq!(c.bytes[reg::CAPABILITIES_POINTER] as usize, a);
        assert_eq!(c.bytes[a + 1] as usize, b);
        assert_eq!(c.bytes[b + 1], 0);
        assert_ne!(c.read_u16(reg::STATUS) & STATUS_CAPABILITIES_LIST, 0);
        // Reads past 256 bytes (ECAM's extended space) are zero.
        let mut ext = [0xffu8; 4];
        c.read(0x100, &mut ext);
        assert_eq!(ext, [0; 4]);
    }
}
