//! The register file of one local APIC and the rules that act on it:
//! priorities (SDM Vol. 3A §10.8.3.1), acceptance into IRR/TMR, the
//! interrupt-acknowledge step IRR -> ISR, EOI (§10.8.5), the error status
//! register (§10.5.3), the LVT (§10.5.1) and the xAPIC/x2APIC register
//! accesses (§10.4.1, §10.12.1.2).
//!
//! Everything here is plain data, driven by [`super::LocalApic`] under its
//! lock; times are guest-clock nanoseconds (the TSC clock, [`crate::msr::guest_tsc`])
//! passed in by the caller, so tests can use a fake clock.

use super::ipi::Ipi;
use super::timer::Timer;

/// Register indices: the xAPIC MMIO offset divided by 16, which is also
/// the x2APIC MSR index minus 0x800 (SDM Vol. 3A Table 10-1, Table 10-6).
pub mod reg {
    #![allow(missing_docs)]
    pub const ID: u32 = 0x02;
    pub const VERSION: u32 = 0x03;
    pub const TPR: u32 = 0x08;
    pub const APR: u32 = 0x09;
    pub const PPR: u32 = 0x0a;
    pub const EOI: u32 = 0x0b;
    pub const RRD: u32 = 0x0c;
    pub const LDR: u32 = 0x0d;
    pub const DFR: u32 = 0x0e;
    pub const SVR: u32 = 0x0f;
    pub const ISR0: u32 = 0x10;
    pub const TMR0: u32 = 0x18;
    pub const IRR0: u32 = 0x20;
    pub const ESR: u32 = 0x28;
    pub const ICR: u32 = 0x30;
    pub const ICR2: u32 = 0x31;
    pub const LVT_TIMER: u32 = 0x32;
    pub const LVT_ERROR: u32 = 0x37;
    pub const TIMER_INITIAL: u32 = 0x38;
    pub const TIMER_CURRENT: u32 = 0x39;
    pub const TIMER_DIVIDE: u32 = 0x3e;
    pub const SELF_IPI: u32 = 0x3f;
}

/// The version register: version 0x14 (an integrated APIC), highest LVT
/// entry 5 (timer, thermal, performance, LINT0, LINT1, error; no CMCI),
/// no EOI-broadcast suppression.
pub const VERSION_VALUE: u32 = 0x0005_0014;

/// LVT slots, in register order.
pub mod lvt {
    #![allow(missing_docs)]
    pub const TIMER: usize = 0;
    pub const THERMAL: usize = 1;
    pub const PERF: usize = 2;
    pub const LINT0: usize = 3;
    pub const LINT1: usize = 4;
    pub const ERROR: usize = 5;
    /// The mask bit of every LVT entry.
    pub const MASKED: u32 = 1 << 16;
    /// LINT0/LINT1 delivery mode bits 10:8 = 0b111: ExtINT.
    pub const EXT_INT: u32 = 7 << 8;
    /// LINT0/LINT1 delivery mode NMI.
    pub const NMI: u32 = 4 << 8;
    /// Writable bits per slot (the rest read as 0; delivery status and
    /// remote IRR are never set: delivery is immediate).
    pub const WRITABLE: [u32; 6] = [
        0xff | MASKED | 3 << 17,
        0xff | 0x700 | MASKED,
        0xff | 0x700 | MASKED,
        0xff | 0x700 | 1 << 13 | 1 << 15 | MASKED,
        0xff | 0x700 | 1 << 13 | 1 << 15 | MASKED,
        0xff | MASKED,
    ];
}

/// Error status register bits (SDM Vol. 3A Figure 10-9).
pub mod esr {
    #![allow(missing_docs)]
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
    pub const ILLEGAL_REGISTER: u32 = 1 << 7;
}

/// SVR bit 8: APIC software enable.
pub const SVR_ENABLE: u32 = 1 << 8;
/// SVR bits the guest can write: vector, enable, focus-check disable
/// (stored, no effect: focus processors are not modelled).
const SVR_WRITABLE: u32 = 0xff | SVR_ENABLE | 1 << 9;
/// ICR low bits that hold state: vector, delivery mode, destination mode,
/// level, trigger mode, destination shorthand.
pub const ICR_LOW_WRITABLE: u32 = 0xff | 0x700 | 1 << 11 | 1 << 14 | 1 << 15 | 3 << 18;

/// IA32_APIC_BASE bits (SDM Vol. 3A §10.4.4, §10.12.1).
pub mod base {
    #![allow(missing_docs)]
    pub const BSP: u64 = 1 << 8;
    pub const EXTD: u64 = 1 << 10;
    pub const EN: u64 = 1 << 11;
    pub const DEFAULT: u64 = alcazar_core::layout::LOCAL_APIC_BASE;
}

/// How an access to a register went wrong: reserved, or the wrong
/// direction. x2APIC accesses turn it into #GP(0); xAPIC accesses set the
/// ESR's illegal-register bit and read 0 or drop the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegFault {
    /// A reserved or absent register, or a reserved value.
    #[error("illegal local APIC register access")]
    Illegal,
}

/// What the owner must do after a register write, with the lock dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct After {
    /// Broadcast an EOI for this level-triggered vector to the IOAPIC.
    pub eoi_broadcast: Option<u8>,
    /// Send this IPI.
    pub ipi: Option<Ipi>,
    /// The timer deadline may have moved: wake the timer thread.
    pub timer_moved: bool,
    /// Something may have become deliverable: set the CPU's attention.
    pub notify: bool,
}

/// A 256-bit vector register (ISR, TMR, IRR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bits256(pub [u32; 8]);

impl Bits256 {
    /// Sets bit `v`.
    pub fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] |= 1 << (v & 31);
    }
    /// Clears bit `v`.
    pub fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 5)] &= !(1 << (v & 31));
    }
    /// Whether bit `v` is set.
    pub fn test(&self, v: u8) -> bool {
        self.0[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }
    /// The highest set bit (the highest-priority vector).
    pub fn highest(&self) -> Option<u8> {
        (0..8)
            .rev()
            .find(|&i| self.0[i] != 0)
            .map(|i| (i * 32 + 31 - self.0[i].leading_zeros() as usize) as u8)
    }
}

/// The register file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApicState {
    /// The initial APIC ID (the vCPU index): the x2APIC ID.
    pub initial_id: u32,
    /// The xAPIC ID register's bits 31:24 (writable in xAPIC mode).
    pub xapic_id: u8,
    /// IA32_APIC_BASE.
    pub base: u64,
    /// Task priority.
    pub tpr: u8,
    /// xAPIC logical destination (bits 31:24 significant).
    pub ldr: u32,
    /// xAPIC destination format (model in bits 31:28).
    pub dfr: u32,
    /// Spurious-interrupt vector register.
    pub svr: u32,
    /// In service.
    pub isr: Bits256,
    /// Trigger mode of accepted vectors (1 = level).
    pub tmr: Bits256,
    /// Requested.
    pub irr: Bits256,
    /// The error status as last latched by an ESR write (what reads see).
    pub esr: u32,
    /// Errors found since the last ESR write.
    pub esr_pending: u32,
    /// Interrupt command register: low dword, then the destination dword.
    pub icr: u64,
    /// LVT: timer, thermal, performance, LINT0, LINT1, error.
    pub lvt: [u32; 6],
    /// The APIC timer.
    pub timer: Timer,
    /// An IOAPIC/MSI ExtINT message waits for its INTA cycle.
    pub ext_int_message: bool,
    /// The last level seen on LINT0 (the 8259A's INTR).
    pub lint0_level: bool,
    /// An INIT arrived and the CPU has not reset yet.
    pub init_pending: bool,
    /// The CPU is in the wait-for-SIPI state.
    pub wait_for_sipi: bool,
    /// A STARTUP IPI's vector, for a CPU that waits for one.
    pub sipi: Option<u8>,
}

impl ApicState {
    /// The power-up state of APIC `id` (SDM Vol. 3A §10.4.7.1): LVT entries
    /// masked, SVR = 0xff (software-disabled), xAPIC mode at 0xfee00000.
    ///
    /// Exception, as firmware leaves a PC (MP specification §3.6.2.2,
    /// "virtual wire mode"): the bootstrap processor's LINT0 is unmasked
    /// in ExtINT mode and LINT1 in NMI mode, so an 8259A reaches the BSP
    /// without any APIC programming.
    pub fn new(id: u32, bsp: bool) -> Self {
        let mut s = ApicState {
            initial_id: id,
            xapic_id: id as u8,
            base: base::DEFAULT | base::EN | if bsp { base::BSP } else { 0 },
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: Bits256::default(),
            tmr: Bits256::default(),
            irr: Bits256::default(),
            esr: 0,
            esr_pending: 0,
            icr: 0,
            lvt: [lvt::MASKED; 6],
            timer: Timer::default(),
            ext_int_message: false,
            lint0_level: false,
            init_pending: false,
            wait_for_sipi: false,
            sipi: None,
        };
        if bsp {
            s.lvt[lvt::LINT0] = lvt::EXT_INT;
            s.lvt[lvt::LINT1] = lvt::NMI;
        }
        s
    }

    /// Back to the power-up register state, keeping the APIC ID and
    /// IA32_APIC_BASE (INIT, SDM Vol. 3A §10.4.7.3), and the LINT0 level.
    pub fn reset_registers(&mut self) {
        let bsp = self.base & base::BSP != 0;
        let keep = (self.initial_id, self.xapic_id, self.base, self.lint0_level);
        *self = ApicState::new(keep.0, bsp);
        (self.xapic_id, self.base, self.lint0_level) = (keep.1, keep.2, keep.3);
    }

    /// IA32_APIC_BASE.EN: the APIC is globally enabled.
    pub fn hw_enabled(&self) -> bool {
        self.base & base::EN != 0
    }

    /// x2APIC mode (EN and EXTD).
    pub fn x2apic(&self) -> bool {
        self.base & (base::EN | base::EXTD) == base::EN | base::EXTD
    }

    /// SVR.8: the APIC is software-enabled.
    pub fn sw_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The APIC ID physical destinations match: the x2APIC ID, or the
    /// xAPIC ID register.
    pub fn id(&self) -> u32 {
        if self.x2apic() {
            self.initial_id
        } else {
            u32::from(self.xapic_id)
        }
    }

    /// The logical destination register as routing sees it; in x2APIC
    /// mode derived from the ID (SDM Vol. 3A §10.12.10.2): cluster
    /// `id >> 4` in bits 31:16, bit `id & 15` set in bits 15:0.
    pub fn logical_id(&self) -> u32 {
        if self.x2apic() {
            (self.initial_id >> 4) << 16 | 1 << (self.initial_id & 15)
        } else {
            self.ldr
        }
    }

    /// The processor priority (SDM Vol. 3A §10.8.3.1): the TPR if its
    /// class is at least the highest in-service class, else that class.
    pub fn ppr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The arbitration priority (§10.6.2.4, simplified: no bus
    /// arbitration): the TPR if its class is at least that of the highest
    /// requested or in-service vector, else that class.
    fn apr(&self) -> u8 {
        let isrv = self.isr.highest().unwrap_or(0);
        let irrv = self.irr.highest().unwrap_or(0);
        let top = isrv.max(irrv);
        if self.tpr >> 4 >= top >> 4 {
            self.tpr
        } else {
            (self.tpr & 0xf0).max(top & 0xf0)
        }
    }

    /// The requested vector the CPU may take now: the highest IRR vector,
    /// if its class is above the processor priority's class.
    pub fn deliverable(&self) -> Option<u8> {
        let v = self.irr.highest()?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// Records error `bit`; a newly found error raises the error LVT's
    /// interrupt if it is unmasked (§10.5.3). Returns whether a vector was
    /// requested.
    pub fn error(&mut self, bit: u32) -> bool {
        if self.esr_pending & bit != 0 {
            return false;
        }
        self.esr_pending |= bit;
        let entry = self.lvt[lvt::ERROR];
        if entry & lvt::MASKED != 0 {
            return false;
        }
        // An illegal error vector is one more error, not a loop.
        self.accept(entry as u8, false)
    }

    /// Accepts fixed `vector` into IRR, recording its trigger mode in TMR
    /// (§10.8.4). Vectors 0-15 are illegal: they set the ESR's
    /// receive-illegal-vector bit instead. Returns whether a vector was
    /// requested.
    pub fn accept(&mut self, vector: u8, level: bool) -> bool {
        if vector < 16 {
            self.esr_pending |= esr::RECEIVE_ILLEGAL_VECTOR;
            return false;
        }
        self.irr.set(vector);
        if level {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        true
    }

    /// The interrupt-acknowledge step for fixed interrupts: the highest
    /// deliverable vector moves from IRR to ISR. If it was masked (by a
    /// TPR raised) since the CPU saw it pending, the CPU gets the
    /// spurious vector instead (§10.9), which sets no ISR bit.
    pub fn acknowledge(&mut self) -> u8 {
        match self.deliverable() {
            Some(v) => {
                self.irr.clear(v);
                self.isr.set(v);
                v
            }
            None => self.svr as u8,
        }
    }

    /// EOI: clears the highest in-service bit; returns the vector if it
    /// was level-triggered (its EOI goes to the IOAPIC).
    pub fn eoi(&mut self) -> Option<u8> {
        let v = self.isr.highest()?;
        self.isr.clear(v);
        self.tmr.test(v).then_some(v)
    }

    /// Reads register `r` (an MMIO offset / 16). `x2` selects the x2APIC
    /// view, where write-only and absent registers fault.
    pub fn read(&self, r: u32, x2: bool, now: u64) -> Result<u64, RegFault> {
        use reg::*;
        let v: u32 = match r {
            ID if x2 => self.initial_id,
            ID => u32::from(self.xapic_id) << 24,
            VERSION => VERSION_VALUE,
            TPR => u32::from(self.tpr),
            APR if !x2 => u32::from(self.apr()),
            PPR => u32::from(self.ppr()),
            LDR => self.logical_id(),
            DFR if !x2 => self.dfr | 0x0fff_ffff,
            SVR => self.svr,
            0x10..=0x17 => self.isr.0[(r - ISR0) as usize],
            0x18..=0x1f => self.tmr.0[(r - TMR0) as usize],
            0x20..=0x27 => self.irr.0[(r - IRR0) as usize],
            ESR => self.esr,
            ICR if x2 => return Ok(self.icr),
            ICR => self.icr as u32,
            ICR2 if !x2 => (self.icr >> 32) as u32 & 0xff00_0000,
            0x32..=0x37 => self.lvt[(r - LVT_TIMER) as usize],
            TIMER_INITIAL => self.timer.initial,
            TIMER_CURRENT => self.timer_current(now),
            TIMER_DIVIDE => self.timer.divide,
            // EOI and SELF IPI are write-only; RRD (remote read) is not
            // supported on this APIC version; the rest is reserved.
            _ => return Err(RegFault::Illegal),
        };
        Ok(u64::from(v))
    }

    /// Writes register `r`. In the x2APIC view, writes to read-only or
    /// absent registers and reserved bits fault; in the xAPIC view
    /// read-only registers ignore writes, and reserved ones fault (the
    /// caller records ESR bit 7).
    pub fn write(&mut self, r: u32, value: u64, x2: bool, now: u64) -> Result<After, RegFault> {
        use reg::*;
        let mut after = After::default();
        if x2 && r != ICR && value >> 32 != 0 {
            return Err(RegFault::Illegal);
        }
        let v = value as u32;
        match r {
            ID if !x2 => self.xapic_id = (v >> 24) as u8,
            TPR => {
                self.tpr = v as u8;
                after.notify = true;
            }
            EOI => {
                if x2 && v != 0 {
                    return Err(RegFault::Illegal);
                }
                after.eoi_broadcast = self.eoi();
                after.notify = true;
            }
            LDR if !x2 => self.ldr = v & 0xff00_0000,
            DFR if !x2 => self.dfr = v | 0x0fff_ffff,
            SVR => self.write_svr(v, now),
            ESR => {
                if x2 && v != 0 {
                    return Err(RegFault::Illegal);
                }
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            ICR if x2 => {
                // x2APIC ICR: bits 12, 13, 16, 17 and 31:20 are reserved.
                if value & 0xfff3_3000 != 0 {
                    return Err(RegFault::Illegal);
                }
                self.icr = value;
                after.ipi = Some(Ipi::from_icr(value, true));
            }
            ICR => {
                self.icr = (self.icr & !0xffff_ffff) | u64::from(v & ICR_LOW_WRITABLE);
                after.ipi = Some(Ipi::from_icr(self.icr, false));
            }
            ICR2 if !x2 => {
                self.icr = (self.icr & 0xffff_ffff) | u64::from(v & 0xff00_0000) << 32;
            }
            0x32..=0x37 => {
                let slot = (r - LVT_TIMER) as usize;
                let mut entry = v & lvt::WRITABLE[slot];
                if !self.sw_enabled() {
                    entry |= lvt::MASKED;
                }
                if slot == lvt::TIMER {
                    self.write_lvt_timer(entry, now);
                    after.timer_moved = true;
                } else {
                    let unmasked = self.lvt[slot] & lvt::MASKED != 0 && entry & lvt::MASKED == 0;
                    self.lvt[slot] = entry;
                    // Unmasking LINT0 may expose a waiting ExtINT.
                    after.notify = unmasked;
                }
            }
            TIMER_INITIAL => {
                self.write_initial_count(v, now);
                after.timer_moved = true;
            }
            TIMER_DIVIDE => {
                self.write_divide(v & 0b1011, now);
                after.timer_moved = true;
            }
            SELF_IPI if x2 => {
                if v >> 8 != 0 {
                    return Err(RegFault::Illegal);
                }
                // SDM §10.12.11: a self IPI, fixed and edge-triggered.
                after.ipi = Some(Ipi::self_ipi(v as u8));
            }
            // Read-only registers: the xAPIC ignores writes.
            ID | VERSION | APR | PPR | LDR | RRD | 0x10..=0x27 | TIMER_CURRENT if !x2 => {}
            _ => return Err(RegFault::Illegal),
        }
        Ok(after)
    }

    /// SVR: clearing the enable bit masks every LVT entry (§10.4.7.2).
    fn write_svr(&mut self, v: u32, now: u64) {
        self.svr = v & SVR_WRITABLE;
        if !self.sw_enabled() {
            for (slot, entry) in self.lvt.iter_mut().enumerate() {
                if slot != lvt::TIMER {
                    *entry |= lvt::MASKED;
                }
            }
            let timer = self.lvt[lvt::TIMER] | lvt::MASKED;
            self.write_lvt_timer(timer, now);
        }
    }
}
