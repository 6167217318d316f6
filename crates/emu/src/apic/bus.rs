//! The VM-wide "APIC bus": the emu engine's local APICs as the platform
//! (8259A, IOAPIC) and each other see them (SDM Vol. 3A §10.6 "Issuing
//! interprocessor interrupts", §10.11 "Message signalled interrupts").
//!
//! [`EmuApicBus`] implements [`ApicBus`]: IOAPIC/MSI messages and IPIs are
//! routed by the same rules ([`super::ipi`]); the 8259A's INTR output is
//! one level wired to every APIC's LINT0. Routing locks one target APIC at
//! a time and never the sender, so an APIC may send to itself and two
//! APICs may send to each other at once.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, RwLock};

use alcazar_core::irq::{ApicBus, InterruptMessage, MsiSink, PlatformInterrupts};
use alcazar_core::GuestClock;

use super::ipi::{Ipi, Mode, Shorthand};
use super::LocalApic;

/// What the APICs of one VM share.
#[derive(Default)]
pub(crate) struct BusShared {
    apics: RwLock<Vec<Arc<LocalApic>>>,
    platform: OnceLock<Arc<dyn PlatformInterrupts>>,
    ext_int: AtomicBool,
    /// The VM's guest clock.
    pub(crate) clock: Arc<GuestClock>,
}

impl BusShared {
    /// The 8259A's and IOAPIC's side, once connected.
    pub(crate) fn platform(&self) -> Option<&Arc<dyn PlatformInterrupts>> {
        self.platform.get()
    }

    /// The level of the 8259A's INTR output.
    pub(crate) fn ext_int(&self) -> bool {
        self.ext_int.load(SeqCst)
    }

    fn apics(&self) -> Vec<Arc<LocalApic>> {
        self.apics.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Delivers `ipi` from `from` (None: from the IOAPIC or an MSI) to its
    /// destinations. Lowest-priority delivery picks the destination with
    /// the lowest TPR, ties going to the lowest vCPU index.
    pub(crate) fn send(&self, from: Option<&LocalApic>, ipi: Ipi) {
        let from_index = from.map(|a| a.index());
        if ipi.shorthand == Shorthand::SelfOnly {
            if let Some(me) = from {
                me.receive(&ipi);
            }
            return;
        }
        let apics = self.apics();
        let targets = apics.iter().filter(|a| match ipi.shorthand {
            Shorthand::All => true,
            Shorthand::AllButSelf => Some(a.index()) != from_index,
            _ => a.matches(&ipi),
        });
        if ipi.mode == Mode::LowestPriority {
            if let Some(t) = targets.min_by_key(|a| (a.priority_for_arbitration(), a.index())) {
                t.receive(&ipi);
            }
            return;
        }
        for t in targets {
            t.receive(&ipi);
        }
    }
}

/// The local APICs of one emu VM.
#[derive(Clone, Default)]
pub struct EmuApicBus {
    shared: Arc<BusShared>,
}

impl std::fmt::Debug for EmuApicBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuApicBus")
            .field("apics", &self.shared.apics().len())
            .field("ext_int", &self.shared.ext_int())
            .field("connected", &self.shared.platform().is_some())
            .finish()
    }
}

impl EmuApicBus {
    /// A bus with no APICs, on a clock of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A bus with no APICs whose timers and TSC-deadline compare run on
    /// `clock` (the VM's guest clock).
    pub fn with_clock(clock: Arc<GuestClock>) -> Self {
        EmuApicBus {
            shared: Arc::new(BusShared {
                clock,
                ..Default::default()
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<BusShared> {
        &self.shared
    }

    /// Puts `apic` on the bus.
    pub(crate) fn add(&self, apic: Arc<LocalApic>) {
        self.shared
            .apics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(apic);
    }

    /// The APICs on the bus, in the order they were added.
    pub fn apics(&self) -> Vec<Arc<LocalApic>> {
        self.shared.apics()
    }
}

impl MsiSink for EmuApicBus {
    fn deliver(&self, message: InterruptMessage) {
        // Called with the IOAPIC locked: receiving only touches the
        // target APIC and its vCPU's lines.
        self.shared.send(None, Ipi::from_message(message));
    }
}

impl ApicBus for EmuApicBus {
    fn set_ext_int(&self, level: bool) {
        self.shared.ext_int.store(level, SeqCst);
        for apic in self.shared.apics() {
            apic.lint0(level);
        }
    }

    fn connect(&self, platform: Arc<dyn PlatformInterrupts>) {
        if self.shared.platform.set(platform).is_err() {
            tracing::warn!("the APIC bus was connected twice; keeping the first platform");
        }
    }
}
