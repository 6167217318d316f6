//! Intel 8259A programmable interrupt controllers: the PC/AT's cascaded
//! pair and the PIIX edge/level control register.
//!
//! Ports: the master at 0x20-0x21, the slave at 0xa0-0xa1 (its INT output
//! wired to the master's IR2), and the ELCR at 0x4d0 (IRQ 0-7) and 0x4d1
//! (IRQ 8-15). Inputs: ISA IRQ 0-15 through [`Pic8259::set_irq`] (or a
//! [`PicLine`] per line). Output: the master's INTR pin, an
//! [`IrqLine`] driven high while an interrupt is deliverable; the CPU side
//! reads the vector with [`Pic8259::pending_vector`] and performs the
//! interrupt-acknowledge cycle with [`Pic8259::acknowledge`].
//!
//! Reference: Intel 8259A datasheet (order 231468): "Interrupt Sequence",
//! "Initialization Command Words" (ICW1-ICW4), "Operation Command Words"
//! (OCW1 mask, OCW2 EOI and rotation, OCW3 read select, poll and special
//! mask), "Edge and Level Triggered Modes", "The Special Fully Nested
//! Mode", "Cascade Buffer/Comparator"; Intel 82371AB (PIIX4) datasheet
//! §12.1.12 for ELCR1/ELCR2 and their reserved bits.
//!
//! Modelled: the initialization sequence, IMR, non-specific and specific
//! EOI, rotation (on EOI, in auto-EOI, set priority), read IRR/ISR, poll
//! mode, special mask mode, special fully nested mode, auto-EOI, edge and
//! level triggering (ICW1.LTIM or the ELCR bit), and the spurious IRQ 7 /
//! IRQ 15 the chips answer an INTA with when the request went away.
//!
//! Deliberate differences and omissions:
//! - Edge-triggered requests are latched in IRR until acknowledged (the
//!   real chip also wants the input still high at INTA), because ISA
//!   devices signal with a short [`IrqLine::pulse`].
//! - The master's IR2 is latched whenever the slave has a deliverable
//!   request (as in KVM's model) rather than on a rising edge of the
//!   slave's INT, so a slave request is never lost, however the guest
//!   orders its acknowledgements; a request that vanishes from the slave
//!   after it was latched still produces the spurious IRQ 15.
//! - ISA IRQ 2 does not exist on the AT bus: a device driving line 2 is
//!   rerouted to IRQ 9, as the PC/AT wires it.
//! - MCS-80/85 mode (ICW4.µPM = 0), the buffered-mode pins and the call
//!   address interval are ignored: vectors are always formed the 8086
//!   way, ICW2 bits 7:3 with the request level in bits 2:0. A master
//!   programmed (through ICW3) to have slaves on lines other than IR2
//!   answers the INTA for those lines with a floating bus (0xff): the PC
//!   has no such slave.
//! - The power-on state is the one a PC BIOS leaves (vector bases 0x08
//!   and 0x70, slave on IR2, 8086 mode) with every line masked, so nothing
//!   is delivered before the guest initializes the pair.

use std::sync::{Arc, Mutex};

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::BusDevice;

mod inspect;

/// The master's command port (its data port is the next one).
pub const MASTER_PORT: u16 = 0x20;
/// The slave's command port (its data port is the next one).
pub const SLAVE_PORT: u16 = 0xa0;
/// ELCR1 (IRQ 0-7); ELCR2 (IRQ 8-15) is the next port.
pub const ELCR_PORT: u16 = 0x4d0;
/// The master input the slave's INT output drives.
pub const CASCADE_IRQ: u8 = 2;
/// Number of ISA interrupt lines.
pub const LINES: u8 = 16;

// ICW1.
const ICW1_IC4: u8 = 1 << 0;
const ICW1_SNGL: u8 = 1 << 1;
const ICW1_LTIM: u8 = 1 << 3;
const ICW1_SELECT: u8 = 1 << 4;
// ICW4.
const ICW4_AEOI: u8 = 1 << 1;
const ICW4_SFNM: u8 = 1 << 4;
// OCW3.
const OCW3_SELECT: u8 = 1 << 3;
const OCW3_RIS: u8 = 1 << 0;
const OCW3_RR: u8 = 1 << 1;
const OCW3_POLL: u8 = 1 << 2;
const OCW3_SMM: u8 = 1 << 5;
const OCW3_ESMM: u8 = 1 << 6;
// Poll word: an interrupt is present.
const POLL_INTERRUPT: u8 = 1 << 7;
// PIIX ELCR: IRQ 0, 1, 2, 8 and 13 are always edge-triggered.
const ELCR1_MASK: u8 = 0xf8;
const ELCR2_MASK: u8 = 0xde;
// The vector a master answers an INTA with for a slave that is not there.
const FLOATING_BUS: u8 = 0xff;

/// Where the initialization sequence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InitStep {
    /// Initialized: data-port writes are OCW1.
    Ready,
    /// ICW1 seen: the next data-port write is ICW2.
    Icw2,
    /// Waiting for ICW3 (cascade mode).
    Icw3,
    /// Waiting for ICW4 (ICW1.IC4 was set).
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Chip {
    is_master: bool,
    step: InitStep,
    icw1: u8,
    /// ICW2 bits 7:3.
    vector_base: u8,
    icw3: u8,
    icw4: u8,
    imr: u8,
    irr: u8,
    isr: u8,
    /// The current level of each IR input.
    inputs: u8,
    elcr: u8,
    elcr_mask: u8,
    /// The IR with the highest priority (IR0 until rotated).
    highest: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    rotate_on_aeoi: bool,
}

impl Chip {
    /// A chip as the BIOS leaves it, every line masked.
    fn new(is_master: bool) -> Self {
        Chip {
            is_master,
            step: InitStep::Ready,
            icw1: ICW1_SELECT | ICW1_IC4,
            vector_base: if is_master { 0x08 } else { 0x70 },
            icw3: if is_master {
                1 << CASCADE_IRQ
            } else {
                CASCADE_IRQ
            },
            icw4: 0x01,
            imr: 0xff,
            irr: 0,
            isr: 0,
            inputs: 0,
            elcr: 0,
            elcr_mask: if is_master { ELCR1_MASK } else { ELCR2_MASK },
            highest: 0,
            read_isr: false,
            poll: false,
            special_mask: false,
            rotate_on_aeoi: false,
        }
    }

    fn auto_eoi(&self) -> bool {
        self.icw4 & ICW4_AEOI != 0
    }

    fn single(&self) -> bool {
        self.icw1 & ICW1_SNGL != 0
    }

    /// Lines whose IRR bit follows the input level.
    fn level_mask(&self) -> u8 {
        if self.icw1 & ICW1_LTIM != 0 {
            0xff
        } else {
            self.elcr
        }
    }

    /// Whether the master expects a slave to supply the vector for `ir`.
    fn cascaded(&self, ir: u8) -> bool {
        self.is_master && !self.single() && self.icw3 & (1 << ir) != 0
    }

    fn vector(&self, ir: u8) -> u8 {
        self.vector_base | (ir & 7)
    }

    /// Refreshes the IRR bits of level-triggered lines from their inputs.
    fn refresh_levels(&mut self) {
        let levels = self.level_mask();
        self.irr = (self.irr & !levels) | (self.inputs & levels);
    }

    /// Drives input `ir`: a rising edge latches an edge-triggered request;
    /// a level-triggered request follows the input.
    fn set_input(&mut self, ir: u8, high: bool) {
        let bit = 1 << (ir & 7);
        if high {
            if self.inputs & bit == 0 {
                self.irr |= bit;
            }
            self.inputs |= bit;
        } else {
            self.inputs &= !bit;
        }
        self.refresh_levels();
    }

    /// The priority rank (0 = highest) of the highest-priority bit of
    /// `mask`, under the current rotation.
    fn rank(&self, mask: u8) -> Option<u8> {
        (0..8).find(|rank| mask & (1 << ((rank + self.highest) & 7)) != 0)
    }

    fn ir_of_rank(&self, rank: u8) -> u8 {
        (rank + self.highest) & 7
    }

    /// The request the chip would signal on INT: the highest-priority
    /// unmasked request above every level in service (datasheet: "fully
    /// nested mode"; in special mask mode masked levels in service block
    /// nothing; in special fully nested mode a cascaded level in service
    /// does not block a new request from its slave).
    fn requested(&self) -> Option<u8> {
        let rank = self.rank(self.irr & !self.imr)?;
        let ir = self.ir_of_rank(rank);
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        let blocking = self.rank(in_service).unwrap_or(8);
        let nested_slave = self.icw4 & ICW4_SFNM != 0 && self.cascaded(ir) && rank == blocking;
        (rank < blocking || nested_slave).then_some(ir)
    }

    /// The INTA cycle for `ir`: IRR to ISR (or straight to done in
    /// auto-EOI mode).
    fn intack(&mut self, ir: u8) {
        let bit = 1 << ir;
        self.irr &= !bit;
        self.refresh_levels();
        if !self.auto_eoi() {
            self.isr |= bit;
        } else if self.rotate_on_aeoi {
            self.highest = (ir + 1) & 7;
        }
    }

    /// The poll command's read: acknowledges the highest request, as an
    /// INTA would, and returns the poll word.
    fn poll_read(&mut self) -> u8 {
        match self.requested() {
            Some(ir) => {
                self.intack(ir);
                POLL_INTERRUPT | ir
            }
            None => 0,
        }
    }

    fn non_specific_eoi(&mut self, rotate: bool) {
        if let Some(rank) = self.rank(self.isr) {
            let ir = self.ir_of_rank(rank);
            self.isr &= !(1 << ir);
            if rotate {
                self.highest = (ir + 1) & 7;
            }
        }
    }

    /// ICW1: starts the initialization sequence and resets the chip
    /// (datasheet: "Initialization Command Words").
    fn icw1(&mut self, value: u8) {
        self.icw1 = value;
        self.step = InitStep::Icw2;
        self.imr = 0;
        self.isr = 0;
        // The edge sense circuit is reset: an input already high must go
        // low and high again to request.
        self.irr = 0;
        self.refresh_levels();
        self.highest = 0;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
        self.rotate_on_aeoi = false;
        if value & ICW1_IC4 == 0 {
            self.icw4 = 0;
        }
    }

    /// OCW2: EOI, rotation and priority commands (bits 7:5 are R, SL, EOI).
    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            0b001 => self.non_specific_eoi(false),
            0b011 => self.isr &= !(1 << level),
            0b101 => self.non_specific_eoi(true),
            0b100 => self.rotate_on_aeoi = true,
            0b000 => self.rotate_on_aeoi = false,
            0b111 => {
                self.isr &= !(1 << level);
                self.highest = (level + 1) & 7;
            }
            0b110 => self.highest = (level + 1) & 7,
            _ => {} // 0b010: no operation
        }
    }

    /// OCW3: read register select, poll, special mask mode.
    fn ocw3(&mut self, value: u8) {
        if value & OCW3_ESMM != 0 {
            self.special_mask = value & OCW3_SMM != 0;
        }
        if value & OCW3_RR != 0 {
            self.read_isr = value & OCW3_RIS != 0;
        }
        self.poll = value & OCW3_POLL != 0;
    }

    /// A write to the command port (A0 = 0).
    fn write_command(&mut self, value: u8) {
        if value & ICW1_SELECT != 0 {
            self.icw1(value);
        } else if value & OCW3_SELECT != 0 {
            self.ocw3(value);
        } else {
            self.ocw2(value);
        }
    }

    /// A write to the data port (A0 = 1): ICW2-ICW4 during
    /// initialization, OCW1 (the IMR) otherwise.
    fn write_data(&mut self, value: u8) {
        let needs_icw4 = self.icw1 & ICW1_IC4 != 0;
        self.step = match self.step {
            InitStep::Ready => {
                self.imr = value;
                InitStep::Ready
            }
            InitStep::Icw2 => {
                self.vector_base = value & 0xf8;
                match (self.single(), needs_icw4) {
                    (false, _) => InitStep::Icw3,
                    (true, true) => InitStep::Icw4,
                    (true, false) => InitStep::Ready,
                }
            }
            InitStep::Icw3 => {
                self.icw3 = value;
                if needs_icw4 {
                    InitStep::Icw4
                } else {
                    InitStep::Ready
                }
            }
            InitStep::Icw4 => {
                self.icw4 = value;
                InitStep::Ready
            }
        };
    }

    /// A read of either port: the poll word after a poll command, else
    /// the IMR (A0 = 1) or the register OCW3 selected (A0 = 0).
    fn read(&mut self, data_port: bool) -> u8 {
        if std::mem::take(&mut self.poll) {
            return self.poll_read();
        }
        match (data_port, self.read_isr) {
            (true, _) => self.imr,
            (false, true) => self.isr,
            (false, false) => self.irr,
        }
    }

    fn write_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_mask;
        self.refresh_levels();
    }
}

/// The cascaded 8259A pair of a PC, with the ELCR.
pub struct Pic8259 {
    master: Chip,
    slave: Chip,
    intr: Arc<dyn IrqLine>,
    intr_level: bool,
}

impl std::fmt::Debug for Pic8259 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pic8259")
            .field("master", &self.master)
            .field("slave", &self.slave)
            .field("intr", &self.intr_level)
            .finish()
    }
}

impl Pic8259 {
    /// The port ranges the pair answers, as (first port, count). The bus
    /// device's offsets are relative to [`MASTER_PORT`]; register one
    /// [`PicPort`] per range.
    pub const RANGES: [(u16, u16); 3] = [(MASTER_PORT, 2), (SLAVE_PORT, 2), (ELCR_PORT, 2)];

    /// The pair as the BIOS leaves it (see the module documentation),
    /// driving `intr`, the CPU's INTR pin. `intr` is called with the PIC
    /// locked whenever INTR changes level: it must only wake the vCPU
    /// (and never lock the PIC itself).
    pub fn new(intr: Arc<dyn IrqLine>) -> Self {
        Pic8259 {
            master: Chip::new(true),
            slave: Chip::new(false),
            intr,
            intr_level: false,
        }
    }

    /// Drives ISA interrupt line `line` (0-15). Line 2 is the cascade and
    /// is rerouted to IRQ 9, as on the AT bus; other lines are ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            CASCADE_IRQ => self.slave.set_input(9 - 8, level),
            0..=7 => self.master.set_input(line, level),
            8..=15 => self.slave.set_input(line - 8, level),
            _ => {
                tracing::debug!(line, "8259A: no such interrupt line");
                return;
            }
        }
        self.update();
    }

    /// Whether INTR is high: an interrupt is waiting for the CPU.
    pub fn intr(&self) -> bool {
        self.intr_level
    }

    /// The vector an INTA cycle would return now, if INTR is high: the
    /// highest-priority unmasked request not blocked by a level in
    /// service, through the slave for the cascade line (the slave's IR7
    /// if its request went away: spurious IRQ 15).
    pub fn pending_vector(&self) -> Option<u8> {
        let ir = self.master.requested()?;
        Some(self.vector_for(ir))
    }

    fn vector_for(&self, ir: u8) -> u8 {
        if !self.master.cascaded(ir) {
            self.master.vector(ir)
        } else if ir == CASCADE_IRQ {
            let slave_ir = self.slave.requested().unwrap_or(7);
            self.slave.vector(slave_ir)
        } else {
            FLOATING_BUS
        }
    }

    /// The interrupt-acknowledge cycle: moves the winning request from IRR
    /// to ISR (not in auto-EOI mode) on the master and, for the cascade
    /// line, on the slave, and returns the vector. With nothing to deliver
    /// (INTR fell before the CPU answered) the master returns its IR7
    /// vector without setting an ISR bit: the spurious IRQ 7. A slave
    /// whose request vanished after the master latched it likewise
    /// returns its IR7 vector (spurious IRQ 15), the master's IR2 staying
    /// in service.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.requested() {
            None => self.master.vector(7),
            Some(ir) => {
                let vector = self.vector_for(ir);
                self.master.intack(ir);
                if ir == CASCADE_IRQ && self.master.cascaded(ir) {
                    if let Some(slave_ir) = self.slave.requested() {
                        self.slave.intack(slave_ir);
                    }
                }
                vector
            }
        };
        self.update();
        vector
    }

    /// Back to the power-on state; the input levels are kept.
    pub fn reset(&mut self) {
        let (master_inputs, slave_inputs) = (self.master.inputs, self.slave.inputs);
        self.master = Chip::new(true);
        self.slave = Chip::new(false);
        self.master.inputs = master_inputs;
        self.slave.inputs = slave_inputs;
        self.update();
    }

    /// Reads `port` (0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1; others read
    /// 0xff).
    pub fn read_port(&mut self, port: u16) -> u8 {
        let value = match port {
            0x20 => self.master.read(false),
            0x21 => self.master.read(true),
            0xa0 => self.slave.read(false),
            0xa1 => self.slave.read(true),
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => 0xff,
        };
        self.update();
        value
    }

    /// Writes `value` to `port` (others are ignored).
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.master.write_command(value),
            0x21 => self.master.write_data(value),
            0xa0 => self.slave.write_command(value),
            0xa1 => self.slave.write_data(value),
            0x4d0 => self.master.write_elcr(value),
            0x4d1 => self.slave.write_elcr(value),
            _ => return,
        }
        self.update();
    }

    /// Propagates the slave's INT to the master's IR2 and the master's
    /// INT to the CPU's INTR.
    fn update(&mut self) {
        let slave_int = self.slave.requested().is_some();
        let bit = 1 << CASCADE_IRQ;
        if slave_int {
            self.master.inputs |= bit;
            self.master.irr |= bit;
        } else {
            self.master.inputs &= !bit;
        }
        self.master.refresh_levels();
        let intr = self.master.requested().is_some();
        if intr != self.intr_level {
            self.intr_level = intr;
            self.intr.set_level(intr);
        }
    }
}

/// The ports an access of `len` bytes at `offset` from [`MASTER_PORT`]
/// covers: an 8-bit device sees a wide access as consecutive byte cycles.
fn ports(offset: u64, len: usize) -> impl Iterator<Item = u16> {
    (0..len as u64).map(move |i| {
        offset
            .checked_add(i)
            .and_then(|o| o.checked_add(u64::from(MASTER_PORT)))
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0)
    })
}

impl BusDevice for Pic8259 {
    /// `offset` is the port minus [`MASTER_PORT`].
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, port) in data.iter_mut().zip(ports(offset, len)) {
            *byte = self.read_port(port);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (&byte, port) in data.iter().zip(ports(offset, data.len())) {
            self.write_port(port, byte);
        }
    }

    /// Both chips' ICWs, IMR, IRR, ISR, ELCR and modes (read-only).
    fn inspect(&self) -> Tree {
        inspect::tree(self)
    }
}

/// One of the pair's port ranges as its own bus device, so the three
/// ranges of [`Pic8259::RANGES`] can share one controller.
pub struct PicPort {
    /// The shared controller.
    pub pic: Arc<Mutex<Pic8259>>,
    /// The range's first port minus [`MASTER_PORT`].
    pub offset: u64,
}

impl BusDevice for PicPort {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let at = self.offset.saturating_add(offset);
        alcazar_core::bus::lock(&self.pic).read(at, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let at = self.offset.saturating_add(offset);
        alcazar_core::bus::lock(&self.pic).write(at, data);
    }

    /// The whole pair, whichever of its ranges this adapter is.
    fn inspect(&self) -> Tree {
        alcazar_core::bus::lock(&self.pic).inspect()
    }
}

/// An ISA interrupt line into the pair, for devices that take an
/// [`IrqLine`].
pub struct PicLine {
    pic: Arc<Mutex<Pic8259>>,
    line: u8,
}

impl PicLine {
    /// Line `line` (0-15) of `pic`.
    pub fn new(pic: Arc<Mutex<Pic8259>>, line: u8) -> Self {
        PicLine { pic, line }
    }
}

impl IrqLine for PicLine {
    fn set_level(&self, high: bool) {
        alcazar_core::bus::lock(&self.pic).set_irq(self.line, high);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// The CPU's INTR pin.
    #[derive(Default)]
    struct Intr {
        level: AtomicBool,
        changes: AtomicU32,
    }

    impl IrqLine for Intr {
        fn set_level(&self, high: bool) {
            self.level.store(high, Ordering::SeqCst);
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn pic() -> (Pic8259, Arc<Intr>) {
        let intr = Arc::new(Intr::default());
        (Pic8259::new(intr.clone()), intr)
    }

    /// Linux's `init_8259A(auto_eoi)` (arch/x86/kernel/i8259.c), then the
    /// masks it restores with every line but the cascade enabled.
    fn linux_init(p: &mut Pic8259, auto_eoi: bool) {
        p.write_port(0x21, 0xff);
        p.write_port(0xa1, 0xff);
        p.write_port(0x20, 0x11); // ICW1: edge, cascade, ICW4 needed
        p.write_port(0x21, 0x30); // ICW2: ISA_IRQ_VECTOR(0)
        p.write_port(0x21, 1 << 2); // ICW3: slave on IR2
        p.write_port(0x21, if auto_eoi { 0x03 } else { 0x01 }); // ICW4
        p.write_port(0xa0, 0x11);
        p.write_port(0xa1, 0x38); // ISA_IRQ_VECTOR(8)
        p.write_port(0xa1, 2); // slave ID 2
        p.write_port(0xa1, 0x01);
        p.write_port(0x21, 0x00);
        p.write_port(0xa1, 0x00);
    }

    fn read_isr(p: &mut Pic8259, port: u16) -> u8 {
        p.write_port(port, 0x0b);
        let isr = p.read_port(port);
        p.write_port(port, 0x0a);
        isr
    }

    #[test]
    fn linux_init_then_irq0_delivers_vector_0x30() {
        let (mut p, intr) = pic();
        linux_init(&mut p, false);
        assert_eq!(p.pending_vector(), None);
        p.set_irq(0, true);
        p.set_irq(0, false);
        assert!(intr.level.load(Ordering::SeqCst), "INTR raised");
        assert_eq!(p.pending_vector(), Some(0x30));
        assert_eq!(p.acknowledge(), 0x30);
        assert!(!intr.level.load(Ordering::SeqCst), "INTR lowered by INTA");
        assert_eq!(read_isr(&mut p, 0x20), 0x01);
        p.write_port(0x20, 0x60); // specific EOI, as mask_and_ack_8259A
        assert_eq!(read_isr(&mut p, 0x20), 0x00);
    }

    #[test]
    fn probe_reads_back_the_mask_before_initialization() {
        let (mut p, _) = pic();
        p.write_port(0xa1, 0xff);
        p.write_port(0x21, 0xfb);
        assert_eq!(p.read_port(0x21), 0xfb);
        assert_eq!(p.read_port(0xa1), 0xff);
    }

    #[test]
    fn power_on_state_masks_everything() {
        let (mut p, intr) = pic();
        for line in 0..16 {
            p.set_irq(line, true);
        }
        assert_eq!(p.pending_vector(), None);
        assert_eq!(intr.changes.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn in_service_level_blocks_lower_priorities_until_eoi() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(3, true);
        assert_eq!(p.acknowledge(), 0x33);
        p.set_irq(4, true);
        assert_eq!(p.pending_vector(), None, "IRQ4 waits behind IRQ3");
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), Some(0x31), "IRQ1 preempts IRQ3");
        assert_eq!(p.acknowledge(), 0x31);
        p.write_port(0x20, 0x20); // non-specific EOI ends IRQ1
        assert_eq!(p.pending_vector(), None);
        p.write_port(0x20, 0x20); // ... then IRQ3
        assert_eq!(p.pending_vector(), Some(0x34));
    }

    #[test]
    fn cascade_irq9_delivers_through_the_slave() {
        let (mut p, intr) = pic();
        linux_init(&mut p, false);
        p.set_irq(9, true);
        p.set_irq(9, false);
        assert!(intr.level.load(Ordering::SeqCst));
        assert_eq!(p.pending_vector(), Some(0x39));
        assert_eq!(p.acknowledge(), 0x39);
        assert_eq!(read_isr(&mut p, 0x20), 0x04);
        assert_eq!(read_isr(&mut p, 0xa0), 0x02);
        // A second slave request waits for both EOIs.
        p.set_irq(12, true);
        assert_eq!(p.pending_vector(), None);
        p.write_port(0xa0, 0x61);
        assert_eq!(p.pending_vector(), None, "master IR2 still in service");
        p.write_port(0x20, 0x62);
        assert_eq!(p.pending_vector(), Some(0x3c));
    }

    #[test]
    fn master_lines_above_the_cascade_wait_for_slave_eoi() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(8, true);
        assert_eq!(p.acknowledge(), 0x38);
        p.set_irq(4, true);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x30, "IRQ0 outranks the cascade");
        p.write_port(0x20, 0x60);
        assert_eq!(p.pending_vector(), None, "IRQ4 ranks below IR2");
    }

    #[test]
    fn irq2_is_rerouted_to_irq9() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(2, true);
        assert_eq!(p.pending_vector(), Some(0x39));
    }

    #[test]
    fn level_triggered_line_reasserts_after_eoi_while_high() {
        let (mut p, intr) = pic();
        linux_init(&mut p, false);
        p.write_port(0x4d1, 1 << 2); // IRQ 10 level
        assert_eq!(p.read_port(0x4d1), 0x04);
        p.set_irq(10, true);
        assert_eq!(p.acknowledge(), 0x3a);
        p.write_port(0xa0, 0x20);
        p.write_port(0x20, 0x20);
        assert_eq!(p.pending_vector(), Some(0x3a), "still high: again");
        assert_eq!(p.acknowledge(), 0x3a);
        p.set_irq(10, false);
        p.write_port(0xa0, 0x20);
        p.write_port(0x20, 0x20);
        assert_eq!(p.pending_vector(), None);
        assert!(!intr.level.load(Ordering::SeqCst));
    }

    #[test]
    fn edge_triggered_line_needs_a_new_edge() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x34);
        p.write_port(0x20, 0x20);
        assert_eq!(p.pending_vector(), None, "held high: no new edge");
        p.set_irq(4, false);
        p.set_irq(4, true);
        assert_eq!(p.pending_vector(), Some(0x34));
    }

    #[test]
    fn elcr_cannot_make_the_timer_or_cascade_level_triggered() {
        let (mut p, _) = pic();
        p.write_port(0x4d0, 0xff);
        p.write_port(0x4d1, 0xff);
        assert_eq!(p.read_port(0x4d0), 0xf8);
        assert_eq!(p.read_port(0x4d1), 0xde);
    }

    #[test]
    fn ltim_makes_every_line_level_triggered() {
        let (mut p, _) = pic();
        p.write_port(0x20, 0x19); // ICW1 with LTIM
        p.write_port(0x21, 0x30);
        p.write_port(0x21, 0x04);
        p.write_port(0x21, 0x01);
        p.set_irq(5, true);
        p.set_irq(5, false);
        assert_eq!(p.pending_vector(), None, "the level went away");
    }

    #[test]
    fn spurious_irq7_when_the_request_goes_away_before_inta() {
        let (mut p, intr) = pic();
        linux_init(&mut p, false);
        p.write_port(0x4d0, 1 << 5); // IRQ 5 level
        p.set_irq(5, true);
        assert!(intr.level.load(Ordering::SeqCst));
        p.set_irq(5, false);
        assert_eq!(p.acknowledge(), 0x37);
        assert_eq!(read_isr(&mut p, 0x20), 0, "no ISR bit for a spurious IRQ");
    }

    #[test]
    fn spurious_irq15_leaves_the_cascade_in_service() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(11, true);
        // The guest masks IRQ 11 on the slave after the master latched IR2.
        p.write_port(0xa1, 1 << 3);
        assert_eq!(p.pending_vector(), Some(0x3f));
        assert_eq!(p.acknowledge(), 0x3f);
        assert_eq!(read_isr(&mut p, 0xa0), 0);
        assert_eq!(read_isr(&mut p, 0x20), 0x04);
        p.write_port(0x20, 0x62); // Linux EOIs the master's IR2
        assert_eq!(read_isr(&mut p, 0x20), 0);
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let (mut p, _) = pic();
        linux_init(&mut p, true);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x30);
        assert_eq!(read_isr(&mut p, 0x20), 0);
        p.set_irq(1, true);
        assert_eq!(p.pending_vector(), Some(0x31), "nothing blocks IRQ1");
        p.set_irq(9, true);
        p.acknowledge();
        assert_eq!(p.acknowledge(), 0x39, "slave works under a AEOI master");
        assert_eq!(read_isr(&mut p, 0x20), 0);
        assert_eq!(read_isr(&mut p, 0xa0), 0x02);
    }

    #[test]
    fn rotate_on_eoi_makes_the_serviced_line_lowest() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(0, true);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x30);
        p.write_port(0x20, 0xa0); // rotate on non-specific EOI
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x35, "IRQ0 now ranks last");
        p.write_port(0x20, 0xe5); // rotate on specific EOI of IR5
        assert_eq!(p.acknowledge(), 0x30);
    }

    #[test]
    fn set_priority_command_picks_the_lowest_line() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.write_port(0x20, 0xc3); // IR3 lowest, IR4 highest
        p.set_irq(1, true);
        p.set_irq(6, true);
        assert_eq!(p.acknowledge(), 0x36);
    }

    #[test]
    fn rotate_in_auto_eoi_mode() {
        let (mut p, _) = pic();
        linux_init(&mut p, true);
        p.write_port(0x20, 0x80); // set rotate in AEOI
        p.set_irq(0, true);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x30);
        p.set_irq(0, false);
        p.set_irq(0, true);
        assert_eq!(p.acknowledge(), 0x31, "IRQ0 rotated to lowest");
    }

    #[test]
    fn poll_mode_acknowledges_on_read() {
        let (mut p, intr) = pic();
        linux_init(&mut p, false);
        p.set_irq(6, true);
        p.write_port(0x20, 0x0c); // OCW3: poll
        assert_eq!(p.read_port(0x20), 0x86);
        assert_eq!(read_isr(&mut p, 0x20), 0x40);
        assert!(!intr.level.load(Ordering::SeqCst));
        p.write_port(0x20, 0x0c);
        assert_eq!(p.read_port(0x20), 0x00, "nothing requested");
        assert_eq!(p.read_port(0x21), 0x00, "poll is over: IMR again");
    }

    #[test]
    fn irr_reads_by_default_and_after_ocw3() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.write_port(0x21, 0xff);
        p.set_irq(3, true);
        assert_eq!(p.read_port(0x20), 0x08, "masked requests show in IRR");
        p.write_port(0x20, 0x0b);
        assert_eq!(p.read_port(0x20), 0x00);
        p.write_port(0x20, 0x08); // OCW3 without RR: selection kept
        assert_eq!(p.read_port(0x20), 0x00);
        p.write_port(0x20, 0x0a);
        assert_eq!(p.read_port(0x20), 0x08);
    }

    #[test]
    fn special_mask_mode_lets_lower_priorities_through() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x31);
        p.set_irq(5, true);
        assert_eq!(p.pending_vector(), None);
        p.write_port(0x20, 0x68); // set special mask mode
        p.write_port(0x21, 0x02); // mask the level in service
        assert_eq!(p.pending_vector(), Some(0x35));
        p.write_port(0x20, 0x48); // reset special mask mode
        assert_eq!(p.pending_vector(), None);
    }

    #[test]
    fn special_fully_nested_mode_admits_higher_slave_requests() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.write_port(0x20, 0x11);
        p.write_port(0x21, 0x30);
        p.write_port(0x21, 0x04);
        p.write_port(0x21, 0x11); // ICW4: SFNM, 8086
        p.set_irq(12, true);
        assert_eq!(p.acknowledge(), 0x3c);
        p.set_irq(8, true);
        assert_eq!(p.pending_vector(), Some(0x38));
    }

    #[test]
    fn icw1_resets_masks_and_in_service_bits() {
        let (mut p, _) = pic();
        linux_init(&mut p, false);
        p.write_port(0x21, 0x55);
        p.set_irq(3, true);
        p.acknowledge();
        p.write_port(0x20, 0x11);
        assert_eq!(p.read_port(0x21), 0x00, "IMR cleared");
        p.write_port(0x21, 0x50);
        p.write_port(0x21, 0x04);
        p.write_port(0x21, 0x01);
        assert_eq!(read_isr(&mut p, 0x20), 0);
        assert_eq!(p.pending_vector(), None, "IRQ3 still high: no new edge");
        p.set_irq(3, false);
        p.set_irq(3, true);
        assert_eq!(p.pending_vector(), Some(0x53));
    }

    #[test]
    fn single_mode_without_icw4_skips_icw3_and_icw4() {
        let (mut p, _) = pic();
        p.write_port(0x20, 0x12); // SNGL, no IC4
        p.write_port(0x21, 0x40);
        p.write_port(0x21, 0xfd); // already OCW1
        assert_eq!(p.read_port(0x21), 0xfd);
        p.set_irq(1, true);
        assert_eq!(p.acknowledge(), 0x41);
    }

    #[test]
    fn pic_lines_and_ports_work_through_the_bus_adapters() {
        let intr = Arc::new(Intr::default());
        let pic = Arc::new(Mutex::new(Pic8259::new(intr.clone())));
        let mut ports: Vec<PicPort> = Pic8259::RANGES
            .iter()
            .map(|&(port, _)| PicPort {
                pic: pic.clone(),
                offset: u64::from(port - MASTER_PORT),
            })
            .collect();
        ports[0].write(1, &[0x00]);
        ports[1].write(1, &[0x00]);
        PicLine::new(pic.clone(), 14).pulse();
        assert_eq!(alcazar_core::bus::lock(&pic).acknowledge(), 0x76);
        let mut elcr = [0u8; 2];
        ports[2].write(0, &[0x20, 0x08]);
        ports[2].read(0, &mut elcr);
        assert_eq!(elcr, [0x20, 0x08]);
        let mut word = [0u8; 2];
        ports[0].read(0, &mut word);
        assert_eq!(word, [0x00, 0x00], "IRR then IMR");
    }

    /// A small xorshift generator for the hostile-guest tests.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn every_port_takes_every_value() {
        let (mut p, _) = pic();
        for port in [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1] {
            for value in 0..=255 {
                p.write_port(port, value);
                for read in [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1] {
                    p.read_port(read);
                }
                p.set_irq(value % 16, value & 0x10 != 0);
                let _ = p.pending_vector();
                let _ = p.inspect();
                p.acknowledge();
            }
        }
    }

    #[test]
    fn hostile_guest_accesses_never_panic() {
        let (mut p, _) = pic();
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        let offsets: Vec<u64> = (0..4)
            .chain(0x7e..0x84)
            .chain(0x4ae..0x4b4)
            .chain([u64::MAX, u64::MAX - 1, 0xffe0])
            .collect();
        for round in 0..20_000 {
            let r = xorshift(&mut rng);
            let offset = offsets[(r % offsets.len() as u64) as usize];
            let len = [1, 2, 4, 8][(r >> 8) as usize % 4];
            let bytes = (r >> 16).to_le_bytes();
            if round % 3 == 0 {
                let mut data = [0u8; 8];
                p.read(offset, &mut data[..len]);
            } else {
                p.write(offset, &bytes[..len]);
            }
            p.set_irq((r >> 40) as u8 % 20, r & (1 << 50) != 0);
            if r & (1 << 51) != 0 {
                p.acknowledge();
            }
            let _ = p.pending_vector();
        }
    }
}
