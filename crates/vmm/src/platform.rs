//! The chipset of the virtual PC: the interrupt controllers and the
//! platform timers every PC has, and how ISA interrupt lines reach them.
//!
//! Like the south bridge of a real PC (Intel's ICH/PCH "LPC" function),
//! the chipset holds:
//!
//! | device | where | models |
//! |---|---|---|
//! | [`Pic8259`] pair + ELCR | ports 0x20, 0xa0, 0x4d0 | cascaded 8259As |
//! | [`Ioapic`] | MMIO [`layout::IOAPIC_BASE`] | 82093AA, [`layout::IOAPIC_PINS`] pins |
//! | [`Pit8254`] | ports 0x40-0x43 | counter 0 on IRQ 0 |
//! | [`Rtc`] | ports 0x70-0x71 | MC146818 RTC/CMOS on IRQ 8 |
//!
//! **Interrupt routing.** Every ISA line is wired to both controllers, as
//! on a PC: ISA IRQ *n* drives 8259A input *n* and IOAPIC pin
//! [`layout::isa_irq_to_gsi`]`(n)` — *n*, except IRQ 0, which is pin 2 (the
//! ACPI MADT and the MP table tell the guest so with an interrupt source
//! override). The guest chooses which
//! controller it uses by masking the other. The 8259A's INTR output goes
//! to every local APIC's LINT0 (virtual-wire mode), and the IOAPIC sends
//! its messages to the local APICs, both through the engine's
//! [`ApicBus`] (emu: its own APICs; kvm: KVM's, through a split irqchip).
//! An engine without local APICs gets a bus that drops everything, with a
//! one-time log line.

use std::sync::{Arc, Mutex};

use alcazar_core::bus::{lock, SharedDevice};
use alcazar_core::irq::{ApicBus, InterruptMessage, IrqLine, MsiSink, PlatformInterrupts};
use alcazar_core::{layout, IoSpace, Machine};
use alcazar_devices::pic::MASTER_PORT;
use alcazar_devices::{pit, rtc};
use alcazar_devices::{Ioapic, IoapicLine, MemorySizes, Pic8259, PicLine, PicPort, Pit8254, Rtc};

use crate::error::VmmError;

/// The chipset's devices, shared with whoever needs to reach them.
pub struct Chipset {
    /// The 8259A pair.
    pub pic: Arc<Mutex<Pic8259>>,
    /// The IOAPIC.
    pub ioapic: Arc<Mutex<Ioapic>>,
    /// The 8254 (port 0x61 also reads its counter 2).
    pub pit: Arc<Mutex<Pit8254>>,
    /// The RTC and CMOS.
    pub rtc: Arc<Mutex<Rtc>>,
    /// The local APICs, where message-signalled interrupts (PCI MSI-X)
    /// go.
    apics: Arc<dyn ApicBus>,
}

impl std::fmt::Debug for Chipset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chipset").finish_non_exhaustive()
    }
}

/// One ISA interrupt line, wired to an 8259A input and an IOAPIC pin.
struct IsaLine {
    pic: PicLine,
    ioapic: IoapicLine,
}

impl IrqLine for IsaLine {
    fn set_level(&self, high: bool) {
        self.pic.set_level(high);
        self.ioapic.set_level(high);
    }
}

/// The 8259A's INTR output, wired to LINT0 of every local APIC.
struct IntrToLint0(Arc<dyn ApicBus>);

impl IrqLine for IntrToLint0 {
    fn set_level(&self, high: bool) {
        self.0.set_ext_int(high);
    }
}

/// What the local APICs ask of the platform: the 8259A's INTA cycle and
/// the IOAPIC's EOI.
struct PlatformSide {
    pic: Arc<Mutex<Pic8259>>,
    ioapic: Arc<Mutex<Ioapic>>,
}

impl PlatformInterrupts for PlatformSide {
    fn ext_int_acknowledge(&self) -> Option<u8> {
        let mut pic = lock(&self.pic);
        pic.intr().then(|| pic.acknowledge())
    }

    fn eoi(&self, vector: u8) {
        lock(&self.ioapic).eoi(vector);
    }
}

/// MSI writes, delivered on the APIC bus.
struct ApicMessages(Arc<dyn ApicBus>);

impl MsiSink for ApicMessages {
    fn deliver(&self, message: InterruptMessage) {
        self.0.deliver(message);
    }
}

/// The APIC bus of an engine without local APICs: nothing arrives.
struct NoApics;

impl MsiSink for NoApics {
    fn deliver(&self, message: InterruptMessage) {
        warn_once(&format!("interrupt message {message:?} dropped"));
    }
}

impl ApicBus for NoApics {
    fn set_ext_int(&self, high: bool) {
        if high {
            warn_once("8259A INTR dropped");
        }
    }
    fn connect(&self, _platform: Arc<dyn PlatformInterrupts>) {}
}

fn warn_once(what: &str) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!("{what}: this engine has no local APICs, so platform interrupts go nowhere");
    });
}

impl Chipset {
    /// Builds the chipset for `machine`, delivering to `apics` (the
    /// engine's local APICs, or `None`), and puts its devices on the bus.
    pub fn new(machine: &Machine, apics: Option<Arc<dyn ApicBus>>) -> Result<Self, VmmError> {
        let apics = apics.unwrap_or_else(|| Arc::new(NoApics));
        let pic = Arc::new(Mutex::new(Pic8259::new(Arc::new(IntrToLint0(
            apics.clone(),
        )))));
        // The ID the firmware tables give it.
        let ioapic_id = crate::firmware::ioapic_id(machine.vcpu_count());
        let ioapic = Arc::new(Mutex::new(Ioapic::new(ioapic_id, apics.clone())));
        apics.connect(Arc::new(PlatformSide {
            pic: pic.clone(),
            ioapic: ioapic.clone(),
        }));
        let irq = |n: u8| -> Arc<dyn IrqLine> { isa_line(&pic, &ioapic, n) };
        let pit = Arc::new(Mutex::new(Pit8254::new(
            irq(layout::PIT_ISA_IRQ),
            machine.clock.clone(),
        )));
        let map = machine.memory.map();
        let below_4g = map
            .backed()
            .filter(|e| e.start < alcazar_core::memory::MMIO_HOLE_START)
            .map(|e| e.size)
            .sum();
        let sizes = MemorySizes {
            below_4g,
            above_4g: map.ram_bytes().saturating_sub(below_4g),
        };
        let rtc = Arc::new(Mutex::new(Rtc::new(
            sizes,
            irq(layout::RTC_ISA_IRQ),
            machine.clock.clone(),
        )));
        let notifier = machine.timers.notifier();
        lock(&pit).set_deadline_notifier(notifier.clone());
        lock(&rtc).set_deadline_notifier(notifier);
        machine.timers.register(pit.clone());
        machine.timers.register(rtc.clone());
        let chipset = Chipset {
            pic,
            ioapic,
            pit,
            rtc,
            apics,
        };
        chipset.attach(machine)?;
        Ok(chipset)
    }

    /// The IOAPIC's APIC ID, as its ID register holds it.
    pub fn ioapic_id(&self) -> u8 {
        lock(&self.ioapic).id()
    }

    /// ISA interrupt line `n` (0-15) as a device drives it.
    pub fn isa_irq(&self, n: u8) -> Arc<dyn IrqLine> {
        isa_line(&self.pic, &self.ioapic, n)
    }

    /// IOAPIC pin `pin` alone (the PCI INTx lines, pins 16-23, have no
    /// 8259A input).
    pub fn ioapic_line(&self, pin: u8) -> Arc<dyn IrqLine> {
        Arc::new(IoapicLine::new(self.ioapic.clone(), pin))
    }

    /// Where a device's message-signalled interrupts go: the local APICs
    /// (the writes to 0xFEEx_xxxx of Intel SDM Vol. 3A §10.11).
    pub fn msi_sink(&self) -> Arc<dyn MsiSink> {
        Arc::new(ApicMessages(self.apics.clone()))
    }

    /// Puts the chipset's registers on the buses.
    fn attach(&self, machine: &Machine) -> Result<(), VmmError> {
        let bus = &machine.bus;
        for (first, count) in Pic8259::RANGES {
            let port: SharedDevice = Arc::new(Mutex::new(PicPort {
                pic: self.pic.clone(),
                offset: u64::from(first - MASTER_PORT),
            }));
            bus.insert(
                IoSpace::Port,
                u64::from(first),
                u64::from(count),
                "pic",
                port,
            )?;
        }
        bus.insert(
            IoSpace::Mmio,
            layout::IOAPIC_BASE,
            layout::IOAPIC_WINDOW,
            "ioapic",
            self.ioapic.clone(),
        )?;
        bus.insert(
            IoSpace::Port,
            u64::from(pit::BASE_PORT),
            u64::from(pit::PORT_COUNT),
            "pit",
            self.pit.clone(),
        )?;
        bus.insert(
            IoSpace::Port,
            u64::from(rtc::INDEX_PORT),
            u64::from(rtc::PORT_COUNT),
            "rtc",
            self.rtc.clone(),
        )?;
        Ok(())
    }
}

fn isa_line(pic: &Arc<Mutex<Pic8259>>, ioapic: &Arc<Mutex<Ioapic>>, n: u8) -> Arc<dyn IrqLine> {
    let pin = layout::isa_irq_to_gsi(n) as u8;
    Arc::new(IsaLine {
        pic: PicLine::new(pic.clone(), n),
        ioapic: IoapicLine::new(ioapic.clone(), pin),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alcazar_core::memory::{GuestMemory, MemoryMap};
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    struct Recorder {
        messages: Mutex<Vec<InterruptMessage>>,
        ext_int: AtomicBool,
        platform: Mutex<Option<Arc<dyn PlatformInterrupts>>>,
    }

    impl MsiSink for Recorder {
        fn deliver(&self, message: InterruptMessage) {
            self.messages.lock().unwrap().push(message);
        }
    }

    impl ApicBus for Recorder {
        fn set_ext_int(&self, level: bool) {
            self.ext_int.store(level, Ordering::SeqCst);
        }
        fn connect(&self, platform: Arc<dyn PlatformInterrupts>) {
            *self.platform.lock().unwrap() = Some(platform);
        }
    }

    fn machine() -> Machine {
        Machine::new(
            GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap(),
            1,
        )
    }

    fn out(m: &Machine, port: u16, v: u8) {
        m.bus.write(IoSpace::Port, u64::from(port), &[v]);
    }

    #[test]
    fn isa_irq_reaches_the_8259a_and_lint0_delivers_its_vector() {
        let m = machine();
        let apics = Arc::new(Recorder::default());
        let chipset = Chipset::new(&m, Some(apics.clone())).unwrap();
        // ICW1-4 as Linux programs the master: vectors 0x30.., cascade on 2.
        for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01)] {
            out(&m, port, v);
        }
        out(&m, 0x21, !(1 << 4)); // unmask IRQ 4
        chipset.isa_irq(4).pulse();
        assert!(apics.ext_int.load(Ordering::SeqCst));
        let platform = apics.platform.lock().unwrap().clone().unwrap();
        assert_eq!(platform.ext_int_acknowledge(), Some(0x34));
    }

    #[test]
    fn isa_irq_0_is_ioapic_pin_2() {
        let m = machine();
        let apics = Arc::new(Recorder::default());
        let chipset = Chipset::new(&m, Some(apics.clone())).unwrap();
        // Redirection entry 2: vector 0x40, fixed, physical CPU 0, unmasked.
        let write = |reg: u32, v: u32| {
            m.bus
                .write(IoSpace::Mmio, layout::IOAPIC_BASE, &reg.to_le_bytes());
            m.bus
                .write(IoSpace::Mmio, layout::IOAPIC_BASE + 0x10, &v.to_le_bytes());
        };
        write(0x10 + 2 * 2 + 1, 0);
        write(0x10 + 2 * 2, 0x40);
        chipset.isa_irq(0).pulse();
        let got = apics.messages.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].vector, 0x40);
    }
}
