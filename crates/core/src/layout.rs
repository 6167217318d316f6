//! The machine layout: where the virtual PC puts its interrupt controllers,
//! its PCI windows and its firmware tables, and how interrupt lines are
//! wired. One source for every address, pin and window that more than one
//! part of the VMM must agree on: the chipset and the PCI bus are built
//! from it, both engines place their local APICs by it, and the ACPI and
//! MP tables describe it to the guest (a test in `alcazar-vmm` reads the
//! tables back and checks them against the devices as built).
//!
//! A device's own register block (the RTC's 0x70, the 8254's 0x40) stays
//! in the device's file: only that device answers there.
//!
//! ```text
//! 0x0000_0000 ┬ RAM (to the MMIO hole, or less)
//!   0x000e_0000 │ ACPI tables (RSDP first)        ┐ reserved in e820,
//!   0x000f_0000 │ MP floating pointer and table   ┘ the BIOS area
//! 0xc000_0000 ┼ MMIO hole: PCI BAR window
//! 0xe000_0000 │ PCI ECAM (bus 0, 1 MiB)
//! 0xe010_0000 │ PCI BAR window 2 (where a BIOS puts BARs)
//! 0xfec0_0000 │ IOAPIC (82093AA, 24 pins, GSI 0-23)
//! 0xfee0_0000 │ local APICs (each CPU sees its own); MSI address window
//! 0x1_0000_0000 ┴ RAM above 4 GiB
//! ```
//!
//! Interrupt routing, as on a PC with an 82093AA: ISA IRQ *n* drives 8259A
//! input *n* and IOAPIC pin *n*, except IRQ 0 (the 8254), which is wired
//! to pin 2 ([`isa_irq_to_gsi`]); PCI INTA# of slot *s* drives pin
//! `16 + s % 4` ([`pci_intx_gsi`]). Intel SDM Vol. 3A §11.4 (local APIC),
//! 82093AA datasheet, ACPI 6.5 §5.2.12 (MADT), PCI Firmware spec (ECAM).

/// Physical base of every CPU's local APIC register page (the reset value
/// of IA32_APIC_BASE, Intel SDM Vol. 3A §11.4.4).
pub const LOCAL_APIC_BASE: u64 = 0xfee0_0000;
/// The MSI address window: a memory write to 0xFEEx_xxxx is an interrupt
/// message, not a memory access (SDM Vol. 3A §11.11.1).
pub const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// Physical base of the IOAPIC's register window (82093AA §3.0).
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Bytes of the IOAPIC's register window (IOREGSEL, IOWIN, EOI).
pub const IOAPIC_WINDOW: u64 = 0x20;
/// The IOAPIC's input pins (redirection table entries); its GSIs are
/// `IOAPIC_GSI_BASE..IOAPIC_GSI_BASE + IOAPIC_PINS`.
pub const IOAPIC_PINS: u8 = 24;
/// The first global system interrupt of the IOAPIC.
pub const IOAPIC_GSI_BASE: u32 = 0;

/// The ISA IRQ of the 8254 PIT's counter 0.
pub const PIT_ISA_IRQ: u8 = 0;
/// The ISA IRQ of the RTC (MC146818).
pub const RTC_ISA_IRQ: u8 = 8;
/// The ISA IRQ of the ACPI SCI (level-triggered, active high).
pub const SCI_ISA_IRQ: u8 = 9;
/// The ISA IRQ of the keyboard controller's output buffer.
pub const KEYBOARD_ISA_IRQ: u8 = 1;

/// The IOAPIC pin (GSI) ISA IRQ `irq` arrives on: the same number, except
/// IRQ 0 (the PIT), which is wired to pin 2 — the interrupt source
/// override the MADT and the MP table announce.
pub const fn isa_irq_to_gsi(irq: u8) -> u32 {
    if irq == PIT_ISA_IRQ {
        2
    } else {
        irq as u32
    }
}

/// The first IOAPIC pin the PCI slots' INTx lines use.
pub const PCI_INTX_FIRST_GSI: u8 = 16;
/// How many IOAPIC pins the PCI INTx lines share.
pub const PCI_INTX_PINS: u8 = 4;

/// The IOAPIC pin that interrupt pin `pin` (1 = INTA# .. 4 = INTD#) of PCI
/// slot `slot` drives (the DSDT's `_PRT` says the same): the usual
/// rotation, `16 + (slot + pin - 1) % 4`, so neighbouring slots spread
/// over the four lines and devices on the same line share it.
pub const fn pci_intx_gsi(slot: u8, pin: u8) -> u8 {
    PCI_INTX_FIRST_GSI + (slot.wrapping_add(pin.saturating_sub(1))) % PCI_INTX_PINS
}

/// Start of the 32-bit PCI memory window BARs are placed in (the start of
/// the MMIO hole below 4 GiB).
pub const PCI_MMIO_START: u64 = crate::memory::MMIO_HOLE_START;
/// End (exclusive) of the PCI memory window.
pub const PCI_MMIO_END: u64 = 0xe000_0000;
/// Start of the second 32-bit PCI memory window, between ECAM and the
/// IOAPIC: where a PC BIOS (SeaBIOS) places BARs, top down from
/// [`PCI_MMIO2_END`].
pub const PCI_MMIO2_START: u64 = ECAM_BASE + ECAM_SIZE;
/// End (exclusive) of the second PCI memory window.
pub const PCI_MMIO2_END: u64 = IOAPIC_BASE;
/// The I/O ports where I/O BARs live (a PC BIOS assigns from 0xc000).
pub const PCI_IO_START: u16 = 0x1000;
/// End (inclusive) of the PCI I/O port window.
pub const PCI_IO_LAST: u16 = 0xffff;
/// Physical base of PCI Express enhanced configuration space (ECAM).
pub const ECAM_BASE: u64 = 0xe000_0000;
/// Bytes of ECAM: bus 0 only (32 devices x 8 functions x 4 KiB).
pub const ECAM_SIZE: u64 = 1 << 20;
/// `CONFIG_ADDRESS` of configuration mechanism #1; with `CONFIG_DATA` the
/// ports 0xCF8-0xCFF.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;

/// The ACPI PM1a event/control blocks and PM timer: first port.
pub const ACPI_PM_BASE_PORT: u16 = 0x600;

/// Guest-physical address of the ACPI RSDP (ACPI 6.5 §5.2.5.1: a 16-byte
/// boundary in the BIOS read-only area 0xe0000..0xfffff).
pub const RSDP_ADDRESS: u64 = 0xe_0000;
/// End (exclusive) of the area for the RSDP and the ACPI tables.
pub const ACPI_TABLES_END: u64 = 0xf_0000;
/// Guest-physical address of the MP floating pointer (MP spec 1.4 §4.1).
pub const MPTABLE_START: u64 = 0xf_0000;
/// End (exclusive) of the MP table area: the top of the first MiB.
pub const MPTABLE_END: u64 = 0x10_0000;

// The layout's invariants, checked at compile time.
const _: () = {
    assert!(PCI_MMIO_END <= ECAM_BASE);
    assert!(ECAM_BASE + ECAM_SIZE <= IOAPIC_BASE);
    assert!(PCI_MMIO2_START < PCI_MMIO2_END);
    assert!(IOAPIC_BASE + IOAPIC_WINDOW <= LOCAL_APIC_BASE);
    assert!((PCI_INTX_FIRST_GSI + PCI_INTX_PINS) as u32 <= IOAPIC_GSI_BASE + IOAPIC_PINS as u32);
    assert!(
        RSDP_ADDRESS & 0xf == 0 && RSDP_ADDRESS >= 0xe_0000 && ACPI_TABLES_END <= MPTABLE_START
    );
    assert!(MPTABLE_START & 0xf == 0 && MPTABLE_START >= 0xf_0000 && MPTABLE_END <= 0x10_0000);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_lines_map_to_their_own_pins_but_the_pit() {
        assert_eq!(isa_irq_to_gsi(PIT_ISA_IRQ), 2);
        for irq in 1..16 {
            assert_eq!(isa_irq_to_gsi(irq), u32::from(irq));
        }
    }

    #[test]
    fn pci_slots_share_four_pins_above_the_isa_lines() {
        assert_eq!(pci_intx_gsi(0, 1), 16);
        assert_eq!(pci_intx_gsi(5, 1), 17);
        assert_eq!(pci_intx_gsi(31, 1), 19);
        assert_eq!(pci_intx_gsi(1, 4), 16);
    }
}
