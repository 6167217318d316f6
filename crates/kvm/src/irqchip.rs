//! Interrupts under kvm: a split irqchip (`KVM_CAP_SPLIT_IRQCHIP`,
//! `Documentation/virt/kvm/api.rst` §7.x).
//!
//! KVM emulates the local APICs in the kernel (timer, IPIs, INIT/SIPI, the
//! guest's EOIs, HLT); the 8259A pair, the IOAPIC and the PIT stay in user
//! space (`alcazar-devices`). [`KvmApicBus`] is how those reach KVM's
//! APICs:
//!
//! * an IOAPIC or MSI message becomes `KVM_SIGNAL_MSI` with the message's
//!   MSI address/data encoding ([`msi_address`], [`msi_data`]; SDM Vol. 3A
//!   §10.11.1, §10.11.2);
//! * the 8259A's INTR output is recorded in an atomic and the bootstrap
//!   vCPU's thread is kicked out of `KVM_RUN`; before its next entry that
//!   thread runs the INTA cycle and injects the vector with
//!   `KVM_INTERRUPT` when KVM says it can take one
//!   (`kvm_run.ready_for_interrupt_injection`), or asks for an
//!   interrupt-window exit (`request_interrupt_window`). KVM takes such a
//!   vector only while the BSP's LVT LINT0 is ExtINT and unmasked, which
//!   is the virtual-wire state set at reset ([`reset_lapic`]). An IOAPIC
//!   message with ExtINT delivery (KVM's APIC drops those) takes the same
//!   path, once;
//! * a guest EOI of a level-triggered vector exits with
//!   `KVM_EXIT_IOAPIC_EOI`, forwarded to [`PlatformInterrupts::eoi`]. KVM
//!   only exits for vectors that a level-triggered MSI route in the first
//!   [`RESERVED_IOAPIC_PINS`] GSIs points at, so the IOAPIC's redirection
//!   table is mirrored there, pin *n* as GSI *n*, whenever the guest
//!   rewrites an entry ([`MsiSink::route_changed`]).
//!
//! **HLT.** With an in-kernel local APIC, KVM handles HLT itself: the vCPU
//! sleeps inside `KVM_RUN` until an interrupt is deliverable or a signal
//! (our kick) arrives, and `KVM_EXIT_HLT` never reaches user space. KVM has
//! no switch to send HLT to user space while it owns the APIC
//! (`KVM_CAP_X86_DISABLE_EXITS` with `HLT` does the opposite: the guest
//! halts the physical CPU without even exiting to KVM), and user space
//! could not wake a vCPU that KVM's APIC must wake anyway. So a vCPU that
//! executes `cli; hlt` sleeps until the VM stops — what the emu engine does
//! once its APICs are connected. The irqchip is created only when the
//! platform asks for the APIC bus ([`crate::KvmVm`]'s `apic_bus`); a VM
//! built without one (an embedder driving `Vcpu::run` by hand) has no
//! local APICs, and HLT returns `VcpuExit::Halted` as before.
//!
//! **Verified on the PVM backend** (this project's test host): the
//! capability, `KVM_SET_LAPIC`, the MP states, `KVM_SIGNAL_MSI`,
//! `KVM_INTERRUPT` with interrupt windows, `KVM_SET_GSI_ROUTING` and
//! `KVM_EXIT_IOAPIC_EOI` (kit programs `apic-timer`, `smp-sipi`,
//! `isa-irq`). Seen there and not explained: after an EOI exit, a
//! level-triggered vector made pending by another thread while the vCPU
//! sat in HLT (IF = 1) stayed in IRR without waking it, until an
//! unrelated interrupt did; KVM's EOI exit itself was reported only when
//! the guest reached its next HLT. `isa-irq` therefore waits awake for its
//! IOAPIC ticks. On the host kernel 6.18 PVM backend the EOI exit waits
//! for the vCPU's next exit of any kind, so a level-triggered pin starved:
//! now, when such a pin rises again while its remote IRR is still set, the
//! IOAPIC says the EOI is overdue ([`MsiSink::eoi_overdue`]) and every
//! vCPU is kicked out of `KVM_RUN`, which makes KVM report it.
//!
//! Left out: PIC interrupts reach only vCPU 0 (the BSP), as on a PC whose
//! APs keep LINT0 masked; x2APIC destinations above 255 (they need
//! `KVM_CAP_X2APIC_API`).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};

use alcazar_core::engine::EngineError;
use alcazar_core::irq::{ApicBus, DeliveryMode, InterruptMessage, MsiSink, PlatformInterrupts};
use alcazar_core::layout;
use kvm_bindings::{
    kvm_enable_cap, kvm_interrupt, kvm_irq_routing_entry, kvm_lapic_state, kvm_msi, kvm_run,
    KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::kick::Target;

/// IOAPIC pins whose GSIs KVM reserves for user-space IOAPIC routes: the
/// IOAPIC's ([`layout::IOAPIC_PINS`]).
pub const RESERVED_IOAPIC_PINS: u64 = layout::IOAPIC_PINS as u64;

/// The MSI address window (SDM Vol. 3A §10.11.1: bits 31:20 = 0xFEE).
const MSI_ADDRESS_BASE: u32 = layout::MSI_ADDRESS_BASE as u32;

/// Local APIC register offsets (SDM Vol. 3A Table 10-1).
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;
/// LVT delivery modes (bits 10:8).
const LVT_EXTINT: u32 = 7 << 8;
const LVT_NMI: u32 = 4 << 8;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;

/// The ioctl kvm-ioctls does not wrap.
mod ioctls {
    use kvm_bindings::kvm_interrupt;
    // KVM_INTERRUPT (api.rst §4.16): queue an external interrupt vector;
    // with a split irqchip it is taken as if from an 8259A on LINT0.
    vmm_sys_util::ioctl_iow_nr!(KVM_INTERRUPT, kvm_bindings::KVMIO, 0x86, kvm_interrupt);
}
use ioctls::KVM_INTERRUPT;

/// The MSI address of `m` (SDM Vol. 3A §10.11.1): the destination in bits
/// 19:12, the redirection hint (bit 3, set for lowest-priority delivery)
/// and the destination mode (bit 2, 1 = logical).
pub fn msi_address(m: &InterruptMessage) -> u32 {
    let hint = m.delivery_mode == DeliveryMode::LowestPriority;
    MSI_ADDRESS_BASE
        | u32::from(m.destination) << 12
        | u32::from(hint) << 3
        | u32::from(m.dest_mode_logical) << 2
}

/// The MSI data of `m` (SDM Vol. 3A §10.11.2): the vector, the delivery
/// mode in bits 10:8, level = assert (bit 14) and the trigger mode (bit
/// 15, 1 = level).
pub fn msi_data(m: &InterruptMessage) -> u32 {
    u32::from(m.vector) | (m.delivery_mode as u32) << 8 | 1 << 14 | u32::from(m.trigger_level) << 15
}

/// Turns on the split irqchip with [`RESERVED_IOAPIC_PINS`] IOAPIC routes.
/// KVM accepts it only before the first vCPU exists.
pub(crate) fn enable_split_irqchip(vm: &VmFd) -> Result<(), EngineError> {
    let cap = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        args: [RESERVED_IOAPIC_PINS, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap)
        .map_err(|e| EngineError::host("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)", e.errno()))
}

/// Makes a new vCPU runnable. With an in-kernel local APIC, KVM creates
/// every vCPU but the BSP in `KVM_MP_STATE_UNINITIALIZED` (waiting for an
/// INIT it would never get); the engine's contract is that a created vCPU
/// runs from the state it is given, unless [`alcazar_core::engine::Vcpu::set_wait_for_sipi`]
/// says otherwise.
pub(crate) fn make_runnable(fd: &VcpuFd) -> Result<(), EngineError> {
    let state = kvm_bindings::kvm_mp_state {
        mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
    };
    fd.set_mp_state(state)
        .map_err(|e| EngineError::host("KVM_SET_MP_STATE", e.errno()))
}

/// Puts vCPU `id`'s local APIC in the state a PC BIOS leaves it: on the
/// BSP, LINT0 ExtINT and LINT1 NMI, unmasked (virtual-wire mode, MP
/// specification §3.6.2.2); on APs both masked (the reset value, SDM Vol.
/// 3A §10.12.5.1). The APIC base MSR is KVM's reset value: 0xfee00000,
/// enabled, BSP flag on vCPU 0.
pub(crate) fn reset_lapic(fd: &VcpuFd, id: u32) -> Result<(), EngineError> {
    let mut lapic = fd
        .get_lapic()
        .map_err(|e| EngineError::host("KVM_GET_LAPIC", e.errno()))?;
    let (lint0, lint1) = if id == 0 {
        (LVT_EXTINT, LVT_NMI)
    } else {
        (LVT_MASKED, LVT_MASKED)
    };
    set_lapic_reg(&mut lapic, LVT_LINT0, lint0);
    set_lapic_reg(&mut lapic, LVT_LINT1, lint1);
    fd.set_lapic(&lapic)
        .map_err(|e| EngineError::host("KVM_SET_LAPIC", e.errno()))
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = byte as _;
    }
}

/// The IOAPIC's routes as KVM sees them: GSI *n* (< [`RESERVED_IOAPIC_PINS`])
/// is an MSI route with the message of IOAPIC pin *n*. KVM reports guest
/// EOIs (`KVM_EXIT_IOAPIC_EOI`) for the vectors of the level-triggered
/// ones; it never delivers through them (messages go by
/// `KVM_SIGNAL_MSI`).
#[derive(Default)]
struct IoapicRoutes([Option<InterruptMessage>; RESERVED_IOAPIC_PINS as usize]);

impl IoapicRoutes {
    /// Pin `pin` now sends `route`; `true` if KVM must be told.
    fn set(&mut self, pin: u8, route: Option<InterruptMessage>) -> bool {
        match self.0.get_mut(usize::from(pin)) {
            Some(slot) if *slot != route => {
                *slot = route;
                true
            }
            _ => false,
        }
    }

    fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(gsi, m)| m.map(|m| (gsi, m)))
            .map(|(gsi, m)| {
                let mut e = kvm_irq_routing_entry {
                    gsi: gsi as u32,
                    type_: KVM_IRQ_ROUTING_MSI,
                    ..Default::default()
                };
                e.u.msi.address_lo = msi_address(&m);
                e.u.msi.data = msi_data(&m);
                e
            })
            .collect()
    }
}

/// What KVM's local APICs and the platform share in one VM.
pub(crate) struct IrqChip {
    vm: Arc<VmFd>,
    platform: OnceLock<Arc<dyn PlatformInterrupts>>,
    /// The 8259A's INTR output.
    ext_int: AtomicBool,
    /// An IOAPIC message with ExtINT delivery waits for its INTA cycle.
    ext_int_message: AtomicBool,
    /// The bootstrap vCPU's thread, kicked when INTR rises.
    bsp: Target,
    /// Every vCPU's thread, kicked when an EOI is overdue.
    vcpus: Mutex<Vec<Target>>,
    routes: Mutex<IoapicRoutes>,
}

impl IrqChip {
    /// The chip of `vm`, whose split irqchip is already enabled.
    pub(crate) fn new(vm: Arc<VmFd>) -> Self {
        IrqChip {
            vm,
            platform: OnceLock::new(),
            ext_int: AtomicBool::new(false),
            ext_int_message: AtomicBool::new(false),
            bsp: Target::default(),
            vcpus: Mutex::default(),
            routes: Mutex::default(),
        }
    }

    /// The kick target vCPU `id` must run under (the BSP's is the one
    /// the 8259A kicks when its INTR rises).
    pub(crate) fn vcpu_target(&self, id: u32) -> Target {
        let target = if id == 0 {
            self.bsp.clone()
        } else {
            Target::default()
        };
        self.vcpus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(target.clone());
        target
    }

    /// An EOI the guest has written may sit in KVM unreported: on the PVM
    /// backend KVM turns it into `KVM_EXIT_IOAPIC_EOI` only when the vCPU
    /// next leaves `KVM_RUN` (a guest spinning with IF = 1, or halted with
    /// nothing else pending, may not leave for a long time). A kick makes
    /// every vCPU leave and re-enter, and KVM reports the EOI on the way.
    fn collect_eois(&self) {
        for t in self.vcpus.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.kick();
        }
    }

    /// Whether the 8259A wants the BSP to run an INTA cycle.
    fn ext_int_pending(&self) -> bool {
        self.ext_int.load(SeqCst) || self.ext_int_message.load(SeqCst)
    }

    /// On the BSP's thread, before each `KVM_RUN`: inject the 8259A's
    /// vector if KVM can take one now, else ask KVM for an exit as soon as
    /// it can (`KVM_EXIT_IRQ_WINDOW_OPEN`).
    pub(crate) fn before_entry(&self, fd: &mut VcpuFd) -> Result<(), EngineError> {
        let run: &mut kvm_run = fd.get_kvm_run();
        if !self.ext_int_pending() {
            run.request_interrupt_window = 0;
            return Ok(());
        }
        if run.ready_for_interrupt_injection == 0 || run.if_flag == 0 {
            run.request_interrupt_window = 1;
            return Ok(());
        }
        run.request_interrupt_window = 0;
        self.ext_int_message.store(false, SeqCst);
        let Some(vector) = self.platform.get().and_then(|p| p.ext_int_acknowledge()) else {
            return Ok(());
        };
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the pointer,
        // which is a live local; `fd` is this thread's open vCPU fd.
        let ret = unsafe { ioctl_with_ref(&RawVcpu(fd.as_raw_fd()), KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(EngineError::host("KVM_INTERRUPT", errno));
        }
        Ok(())
    }

    /// A guest EOI of a level-triggered vector (`KVM_EXIT_IOAPIC_EOI`).
    pub(crate) fn ioapic_eoi(&self, vector: u8) {
        if let Some(p) = self.platform.get() {
            p.eoi(vector);
        }
    }

    fn signal_msi(&self, m: &InterruptMessage) {
        let msi = kvm_msi {
            address_lo: msi_address(m),
            data: msi_data(m),
            ..Default::default()
        };
        match self.vm.signal_msi(msi) {
            // 0: no APIC took it (no destination matched, or it is masked
            // there) — what the hardware does with such a message.
            Ok(_) => {}
            Err(e) => tracing::warn!("KVM_SIGNAL_MSI for {m:?} failed: {e}"),
        }
    }

    /// IOAPIC pin `pin` now sends `route`: give KVM the new table before
    /// the pin can fire, so that KVM has rescanned its EOI-exit vectors by
    /// the time the guest EOIs one (installing it at the first delivery
    /// instead raced with that EOI on the PVM backend).
    fn route_changed(&self, pin: u8, route: Option<InterruptMessage>) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.set(pin, route) {
            self.install_routes(&routes);
        }
    }

    fn install_routes(&self, routes: &IoapicRoutes) {
        let entries = routes.entries();
        let table = kvm_bindings::KvmIrqRouting::from_entries(&entries);
        match table.map(|t| self.vm.set_gsi_routing(&t)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("KVM_SET_GSI_ROUTING failed: {e}; EOIs may be lost"),
            Err(e) => tracing::warn!("building the GSI routing table failed: {e:?}"),
        }
    }
}

/// A borrowed vCPU fd, for ioctls kvm-ioctls does not wrap.
struct RawVcpu(std::os::fd::RawFd);

impl AsRawFd for RawVcpu {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// KVM's local APICs as the platform sees them.
#[derive(Clone)]
pub struct KvmApicBus(pub(crate) Arc<IrqChip>);

impl std::fmt::Debug for KvmApicBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmApicBus")
            .field("ext_int", &self.0.ext_int.load(SeqCst))
            .field("connected", &self.0.platform.get().is_some())
            .finish()
    }
}

impl MsiSink for KvmApicBus {
    fn deliver(&self, message: InterruptMessage) {
        // Called with the IOAPIC locked: only KVM ioctls and the routes'
        // own lock, never the platform.
        if message.delivery_mode == DeliveryMode::ExtInt {
            self.0.ext_int_message.store(true, SeqCst);
            self.0.bsp.kick();
            return;
        }
        self.0.signal_msi(&message);
    }

    fn route_changed(&self, pin: u8, route: Option<InterruptMessage>) {
        self.0.route_changed(pin, route);
    }

    fn eoi_overdue(&self, _message: InterruptMessage) {
        self.0.collect_eois();
    }
}

impl ApicBus for KvmApicBus {
    fn set_ext_int(&self, level: bool) {
        // Called with the 8259A locked, from any thread: record and kick.
        let was = self.0.ext_int.swap(level, SeqCst);
        if level && !was {
            self.0.bsp.kick();
        }
    }

    fn connect(&self, platform: Arc<dyn PlatformInterrupts>) {
        if self.0.platform.set(platform).is_err() {
            tracing::warn!("the APIC bus was connected twice; keeping the first platform");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(
        vector: u8,
        mode: DeliveryMode,
        dest: u8,
        logical: bool,
        level: bool,
    ) -> InterruptMessage {
        InterruptMessage {
            vector,
            delivery_mode: mode,
            dest_mode_logical: logical,
            destination: dest,
            trigger_level: level,
        }
    }

    #[test]
    fn fixed_physical_edge_message_encodes_as_plain_msi() {
        let m = message(0x31, DeliveryMode::Fixed, 2, false, false);
        assert_eq!(msi_address(&m), 0xfee0_2000);
        assert_eq!(msi_data(&m), 0x4031);
    }

    #[test]
    fn lowest_priority_logical_level_message_sets_hint_mode_and_trigger() {
        let m = message(0x52, DeliveryMode::LowestPriority, 0x0f, true, true);
        assert_eq!(msi_address(&m), 0xfee0_f00c);
        assert_eq!(msi_data(&m), 0xc152);
    }

    #[test]
    fn nmi_and_init_carry_their_delivery_mode() {
        let nmi = message(0, DeliveryMode::Nmi, 0xff, false, false);
        assert_eq!(msi_address(&nmi), 0xfeef_f000);
        assert_eq!(msi_data(&nmi), 0x4400);
        assert_eq!(
            msi_data(&message(0, DeliveryMode::Init, 1, false, false)),
            0x4500
        );
    }

    #[test]
    fn ioapic_routes_mirror_the_pins_that_send_something() {
        let mut routes = IoapicRoutes::default();
        let level = message(0x80, DeliveryMode::Fixed, 0, false, true);
        assert!(routes.set(3, Some(level)));
        assert!(
            !routes.set(3, Some(level)),
            "no change, nothing to tell KVM"
        );
        assert!(
            !routes.set(RESERVED_IOAPIC_PINS as u8, Some(level)),
            "no such pin"
        );
        assert!(routes.set(7, Some(message(0x31, DeliveryMode::Fixed, 1, false, false))));
        let entries = routes.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].gsi, entries[1].gsi), (3, 7));
        assert_eq!(entries[0].type_, KVM_IRQ_ROUTING_MSI);
        // SAFETY: the entries were built as MSI routes.
        let (data, address) = unsafe { (entries[0].u.msi.data, entries[1].u.msi.address_lo) };
        assert_eq!(data, 0xc080);
        assert_eq!(address, 0xfee0_1000);
        assert!(routes.set(3, None));
        assert_eq!(routes.entries().len(), 1);
    }
}
