//! The local APIC of each emu vCPU (Intel SDM Vol. 3A chapter 10,
//! "Advanced Programmable Interrupt Controller"), in xAPIC and x2APIC
//! mode.
//!
//! * **Registers** ([`regs`]): ID, version 0x50014, TPR, PPR, APR, EOI,
//!   LDR, DFR (flat and cluster), SVR, ISR/TMR/IRR, ESR, ICR, the six LVT
//!   entries, the timer's counts and divider. No CMCI LVT, no directed-EOI
//!   suppression, no remote read, no focus processor.
//! * **xAPIC MMIO**: the 4 KiB page at IA32_APIC_BASE, per CPU; the emu
//!   memory path sends accesses there to this CPU's APIC before the
//!   machine bus ([`crate::mem`]) and never maps the page to RAM
//!   ([`crate::mmu::Mmu::apic_page`]). Registers sit at 16-byte strides;
//!   aligned 32-bit accesses are the architectural ones (§10.4.1). What
//!   this model does with others: reads of 1, 2 or 4 bytes inside a
//!   register's first dword return those bytes, reads of an 8-byte access
//!   return the dword zero-extended, bytes 4-15 of each slot read as 0;
//!   writes that are not 32-bit at offset 0 of a slot are dropped.
//!   Reserved registers read as 0, drop writes and set the ESR's
//!   illegal-register-address bit.
//! * **x2APIC** (§10.12): MSRs 0x800-0x8ff, #GP for reserved registers,
//!   read-only ones written, write-only ones read, reserved bits, and
//!   whenever the APIC is not in x2APIC mode.
//! * **Timer** ([`timer`]), **IPIs** ([`ipi`], [`bus`]), **INIT/SIPI**
//!   ([`startup`]).
//!
//! Locking: one mutex per APIC. The owning vCPU, other vCPUs (IPIs), the
//! IOAPIC (messages) and the timer thread take it briefly; nothing else is
//! called while it is held (EOI broadcasts, IPIs, timer notifications and
//! wake-ups happen after it is dropped).

pub mod bus;
pub mod inspect;
pub mod ipi;
pub mod regs;
pub mod startup;
pub mod timer;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use alcazar_core::timer::DeadlineNotifier;
use alcazar_core::GuestClock;

use crate::interrupts::{InterruptLines, InterruptSource};
use crate::msr::guest_tsc;
use bus::BusShared;
use ipi::{Ipi, Mode};
use regs::{base, esr, lvt, After, ApicState, RegFault};

pub use bus::EmuApicBus;
pub use timer::ApicTimerDevice;

/// First x2APIC MSR.
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// Last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;

/// What an INIT or STARTUP IPI asks of the CPU ([`LocalApic::take_startup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Startup {
    /// Nothing.
    None,
    /// Go to the INIT state and wait for a STARTUP IPI.
    Init,
    /// Start in real mode at `vector << 12`.
    Sipi(u8),
}

/// One local APIC.
pub struct LocalApic {
    index: u32,
    state: Mutex<ApicState>,
    lines: Arc<InterruptLines>,
    bus: Weak<BusShared>,
    timer_notifier: OnceLock<DeadlineNotifier>,
    /// The VM's guest clock, which the TSC counts.
    clock: Arc<GuestClock>,
}

impl std::fmt::Debug for LocalApic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("LocalApic")
            .field("index", &self.index)
            .field("base", &format_args!("{:#x}", s.base))
            .field("svr", &format_args!("{:#x}", s.svr))
            .field("ppr", &s.ppr())
            .finish_non_exhaustive()
    }
}

impl LocalApic {
    /// The APIC of vCPU `index` (its initial APIC ID), in its power-up
    /// state, driving `lines` and put on `bus`. vCPU 0 is the BSP.
    pub fn new(index: u32, lines: Arc<InterruptLines>, bus: &EmuApicBus) -> Arc<LocalApic> {
        let apic = Arc::new(LocalApic {
            index,
            state: Mutex::new(ApicState::new(index, index == 0)),
            lines,
            bus: Arc::downgrade(bus.shared()),
            timer_notifier: OnceLock::new(),
            clock: bus.shared().clock.clone(),
        });
        bus.add(apic.clone());
        apic
    }

    fn lock(&self) -> MutexGuard<'_, ApicState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The vCPU index (initial APIC ID).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A copy of the register file (tests, the inspector).
    pub fn snapshot(&self) -> ApicState {
        self.lock().clone()
    }

    /// Who to tell when the timer's deadline moves (the VM's timer
    /// service). Set once.
    pub fn set_timer_notifier(&self, notifier: DeadlineNotifier) {
        let _ = self.timer_notifier.set(notifier);
    }

    /// Carries out what a register access left to do, with the lock
    /// dropped.
    fn finish(&self, after: After) {
        if after.timer_moved {
            if let Some(n) = self.timer_notifier.get() {
                n();
            }
        }
        if let Some(vector) = after.eoi_broadcast {
            if let Some(p) = self.bus.upgrade().and_then(|b| b.platform().cloned()) {
                p.eoi(vector);
            }
        }
        if let Some(ipi) = after.ipi {
            self.send(ipi);
        }
        if after.notify {
            self.lines.notify();
        }
    }

    /// Sends an IPI from this APIC (an ICR or SELF IPI write).
    fn send(&self, ipi: Ipi) {
        if ipi.illegal_vector() {
            if self.lock().error(esr::SEND_ILLEGAL_VECTOR) {
                self.lines.notify();
            }
            return;
        }
        match self.bus.upgrade() {
            Some(bus) => bus.send(Some(self), ipi),
            None if ipi.shorthand != ipi::Shorthand::AllButSelf => self.receive(&ipi),
            None => {}
        }
    }

    /// A read of `size` bytes at `offset` in the xAPIC page.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        let within = offset & 0xf;
        if within >= 4 {
            return 0;
        }
        let r = ((offset >> 4) & 0xff) as u32;
        let s = self.lock();
        let v = match s.read(r, false, guest_tsc(&self.clock)) {
            Ok(v) => v,
            Err(RegFault::Illegal) => {
                drop(s);
                self.illegal_register();
                return 0;
            }
        };
        drop(s);
        // Only the bytes read come back: an odd width (3) gets three,
        // anything wider than a dword gets the dword.
        let bits = 8 * u32::from(size.min(4));
        (v >> (8 * within)) & ((1u64 << bits) - 1)
    }

    /// A write of `size` bytes of `value` at `offset` in the xAPIC page.
    pub fn mmio_write(&self, offset: u64, size: u8, value: u64) {
        if size != 4 || offset & 0xf != 0 {
            tracing::debug!(
                apic = self.index,
                offset,
                size,
                "xAPIC write of an odd width or offset dropped"
            );
            return;
        }
        let r = ((offset >> 4) & 0xff) as u32;
        let result = self
            .lock()
            .write(r, value & 0xffff_ffff, false, guest_tsc(&self.clock));
        match result {
            Ok(after) => self.finish(after),
            Err(RegFault::Illegal) => self.illegal_register(),
        }
    }

    fn illegal_register(&self) {
        if self.lock().error(esr::ILLEGAL_REGISTER) {
            self.lines.notify();
        }
    }

    /// RDMSR of x2APIC register `msr` (0x800-0x8ff). Faults unless the
    /// APIC is in x2APIC mode.
    pub fn msr_read(&self, msr: u32) -> Result<u64, RegFault> {
        let s = self.lock();
        if !s.x2apic() || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return Err(RegFault::Illegal);
        }
        s.read(msr - X2APIC_MSR_FIRST, true, guest_tsc(&self.clock))
    }

    /// WRMSR of x2APIC register `msr`.
    pub fn msr_write(&self, msr: u32, value: u64) -> Result<(), RegFault> {
        let after = {
            let mut s = self.lock();
            if !s.x2apic() || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
                return Err(RegFault::Illegal);
            }
            s.write(msr - X2APIC_MSR_FIRST, value, true, guest_tsc(&self.clock))?
        };
        self.finish(after);
        Ok(())
    }

    /// IA32_APIC_BASE.
    pub fn base(&self) -> u64 {
        self.lock().base
    }

    /// WRMSR IA32_APIC_BASE (`checked`) or a VMM state load (unchecked).
    /// Checked writes follow SDM Vol. 3A §10.12.5: reserved bits 7:0 and
    /// 9, EXTD without EN, x2APIC -> xAPIC and disabled -> x2APIC fault;
    /// the BSP flag is read-only. Disabling the APIC (EN = 0) resets its
    /// registers to their power-up state. The caller checks the
    /// physical-address width.
    pub fn set_base(&self, value: u64, checked: bool) -> Result<(), RegFault> {
        let mut s = self.lock();
        let old = s.base;
        let new_mode = value & (base::EN | base::EXTD);
        if checked {
            let old_mode = old & (base::EN | base::EXTD);
            let x2 = base::EN | base::EXTD;
            let illegal = value & 0x2ff != 0
                || new_mode == base::EXTD
                || (old_mode == x2 && new_mode == base::EN)
                || (old_mode == 0 && new_mode == x2);
            if illegal {
                return Err(RegFault::Illegal);
            }
        }
        let bsp = if checked {
            old & base::BSP
        } else {
            value & base::BSP
        };
        s.base = (value & !(0xfff | base::BSP)) | new_mode | bsp;
        let disabled = old & base::EN != 0 && s.base & base::EN == 0;
        if disabled {
            s.reset_registers();
        }
        drop(s);
        if disabled {
            self.finish(After {
                timer_moved: true,
                ..After::default()
            });
        }
        Ok(())
    }

    /// IA32_TSC_DEADLINE as RDMSR sees it.
    pub fn read_tsc_deadline(&self) -> u64 {
        self.lock().read_tsc_deadline()
    }

    /// WRMSR IA32_TSC_DEADLINE of `value` by a CPU whose TSC is the host
    /// clock plus `tsc_offset`: a deadline already passed fires at once.
    pub fn write_tsc_deadline(&self, value: u64, tsc_offset: u64) {
        let now = guest_tsc(&self.clock);
        let guest_now = now.wrapping_add(tsc_offset);
        let due = now.saturating_add(value.saturating_sub(guest_now));
        self.lock().write_tsc_deadline(value, due);
        self.finish(After {
            timer_moved: true,
            ..After::default()
        });
    }

    /// When the timer next expires (host ns), if it is armed.
    pub fn timer_deadline(&self) -> Option<u64> {
        self.lock().timer.next
    }

    /// Brings the timer up to host ns `now` (the timer thread's tick).
    pub fn timer_tick(&self, now: u64) {
        let fired = self.lock().timer_tick(now);
        if fired {
            self.lines.notify();
        }
    }

    /// Whether `ipi`'s destination field selects this APIC.
    pub(crate) fn matches(&self, ipi: &Ipi) -> bool {
        let s = self.lock();
        s.hw_enabled() && ipi.matches(&s)
    }

    /// The priority lowest-priority arbitration compares (the TPR).
    pub(crate) fn priority_for_arbitration(&self) -> u8 {
        self.lock().tpr
    }

    /// Takes a message delivered to this APIC (SDM Vol. 3A §10.6.1).
    /// A globally disabled APIC takes nothing; a software-disabled one
    /// drops fixed and lowest-priority interrupts but still takes NMI,
    /// INIT and STARTUP (§10.4.7.2).
    pub(crate) fn receive(&self, ipi: &Ipi) {
        let mut s = self.lock();
        if !s.hw_enabled() {
            return;
        }
        match ipi.mode {
            Mode::Fixed | Mode::LowestPriority => {
                if !s.sw_enabled() {
                    return;
                }
                let requested = s.accept(ipi.vector, ipi.level_trigger);
                drop(s);
                if requested {
                    self.lines.notify();
                }
            }
            Mode::Nmi => {
                drop(s);
                self.lines.raise_nmi();
            }
            Mode::Init => {
                if ipi.level_trigger && !ipi.assert {
                    return; // INIT level de-assert: no effect.
                }
                s.init_pending = true;
                s.sipi = None;
                drop(s);
                self.lines.raise_startup();
            }
            Mode::StartUp => {
                if (s.wait_for_sipi || s.init_pending) && s.sipi.is_none() {
                    s.sipi = Some(ipi.vector);
                    drop(s);
                    self.lines.raise_startup();
                }
            }
            Mode::ExtInt => {
                s.ext_int_message = true;
                drop(s);
                self.lines.notify();
            }
            Mode::Smi | Mode::Reserved => {
                tracing::debug!(
                    apic = self.index,
                    ?ipi,
                    "SMI / reserved delivery mode dropped"
                );
            }
        }
    }

    /// A new level on LINT0 (the 8259A's INTR). ExtINT mode fetches the
    /// vector at acknowledge time; fixed and NMI modes act on a rising
    /// edge (level-triggered fixed LINT0 is not modelled).
    pub(crate) fn lint0(&self, level: bool) {
        let mut s = self.lock();
        let rising = level && !s.lint0_level;
        s.lint0_level = level;
        let entry = s.lvt[lvt::LINT0];
        let masked = entry & lvt::MASKED != 0;
        if !s.hw_enabled() || (!masked && entry & 0x700 == lvt::EXT_INT) {
            drop(s);
            if level {
                self.lines.notify();
            }
            return;
        }
        if masked || !rising {
            return;
        }
        match entry & 0x700 {
            0 => {
                let requested = s.accept(entry as u8, false);
                drop(s);
                if requested {
                    self.lines.notify();
                }
            }
            lvt::NMI => {
                drop(s);
                self.lines.raise_nmi();
            }
            _ => {}
        }
    }

    /// Whether an ExtINT is waiting: an IOAPIC ExtINT message, or INTR
    /// high with LINT0 unmasked in ExtINT mode, or INTR high with the APIC
    /// globally disabled (the 8259A then drives the CPU directly).
    fn ext_int_pending(&self, s: &ApicState) -> bool {
        if s.ext_int_message {
            return true;
        }
        let entry = s.lvt[lvt::LINT0];
        let through_lint0 =
            !s.hw_enabled() || (entry & lvt::MASKED == 0 && entry & 0x700 == lvt::EXT_INT);
        through_lint0 && self.bus.upgrade().is_some_and(|b| b.ext_int())
    }

    /// Handles a pending INIT or STARTUP for the owning CPU: an INIT
    /// resets the registers (keeping the ID and IA32_APIC_BASE) and puts
    /// the APIC in wait-for-SIPI; a STARTUP then releases it.
    pub fn take_startup(&self) -> Startup {
        let mut s = self.lock();
        if s.init_pending {
            let sipi = s.sipi.take();
            s.reset_registers();
            s.wait_for_sipi = true;
            s.sipi = sipi;
            drop(s);
            self.finish(After {
                timer_moved: true,
                ..After::default()
            });
            return Startup::Init;
        }
        if s.wait_for_sipi {
            if let Some(v) = s.sipi.take() {
                s.wait_for_sipi = false;
                return Startup::Sipi(v);
            }
        }
        Startup::None
    }

    /// RESET (not INIT): every register back to its power-up value,
    /// IA32_APIC_BASE included (xAPIC mode at 0xfee00000, enabled, the
    /// BSP flag kept), SDM Vol. 3A §10.4.7.1; the timer stops and nothing
    /// stays pending. The LINT0 level is the 8259A's, which a CPU reset
    /// does not change.
    pub fn reset(&self) {
        let mut s = self.lock();
        let bsp = s.base & base::BSP != 0;
        let lint0 = s.lint0_level;
        *s = ApicState::new(s.initial_id, bsp);
        s.lint0_level = lint0;
        drop(s);
        self.finish(After {
            timer_moved: true,
            ..After::default()
        });
    }

    /// Puts the APIC in wait-for-SIPI without an INIT (an AP at creation).
    pub fn enter_wait_for_sipi(&self) {
        let mut s = self.lock();
        s.wait_for_sipi = true;
        s.sipi = None;
    }
}

impl InterruptSource for LocalApic {
    fn pending(&self) -> bool {
        let s = self.lock();
        if s.wait_for_sipi || s.init_pending {
            return false;
        }
        self.ext_int_pending(&s) || s.deliverable().is_some()
    }

    fn acknowledge(&self) -> Option<u8> {
        {
            let mut s = self.lock();
            if !self.ext_int_pending(&s) {
                return Some(s.acknowledge());
            }
            s.ext_int_message = false;
        }
        // The INTA cycle goes to the 8259A without this APIC's lock; the
        // vector bypasses IRR and ISR.
        self.bus
            .upgrade()
            .and_then(|b| b.platform().cloned())
            .and_then(|p| p.ext_int_acknowledge())
    }

    fn set_tpr(&self, cr8: u8) {
        self.lock().tpr = (cr8 & 0xf) << 4;
        self.lines.notify();
    }

    fn tpr(&self) -> Option<u8> {
        Some(self.lock().tpr >> 4)
    }
}

#[cfg(test)]
mod tests;
