//! PCI: configuration space, the host bridge and MSI-X (PCI Local Bus
//! 3.0; PCI Express Base 4.0 §7.2.2 for ECAM).
//!
//! | file | models |
//! |---|---|
//! | [`config`] | a function's 256-byte configuration space: header, BARs, capability list |
//! | [`msix`] | the MSI-X table and pending bits |
//! | [`root`] | the host bridge: configuration mechanism #1 (ports 0xCF8/0xCFC), ECAM, BAR decoding, INTx wiring |
//!
//! A device on the bus implements [`PciDevice`]: it owns a [`PciConfig`]
//! and answers accesses to its BARs. The root dispatches configuration
//! cycles by device number and memory cycles by the BAR windows the guest
//! programmed, so an OS that moves a BAR is followed without touching
//! the machine's bus.

pub mod config;
mod inspect;
pub mod msix;
pub mod root;

pub use config::{Bar, BarKind, PciConfig, PciIds};
pub use msix::Msix;
pub use root::{HostBridgeKind, PciIoWindow, PciRoot, PciRootPorts, PciWindow};

/// A PCI function as the host bridge sees it.
pub trait PciDevice: Send {
    /// Its configuration space.
    fn config(&self) -> &PciConfig;

    /// A guest configuration read (the default reads the space as is).
    fn read_config(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }

    /// A guest configuration write. Devices that react to their
    /// capabilities' registers (MSI-X enable) override it and call
    /// [`PciConfig::write`] themselves.
    fn write_config(&mut self, offset: usize, data: &[u8]);

    /// A read of `data.len()` bytes at `offset` in BAR `bar`.
    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]);

    /// A write at `offset` in BAR `bar`.
    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]);

    /// A short name for logs and the inspector (`virtio-blk`).
    fn name(&self) -> String;

    /// Named values for the inspector.
    fn inspect(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// The function's own state for the inspector, beyond its
    /// configuration space (which the root shows from [`Self::config`]):
    /// the registers in its BARs and its counters. The default shows the
    /// [`Self::inspect`] values. Called with the function locked; must
    /// not change its state.
    fn inspect_tree(&self) -> alcazar_core::inspect::Tree {
        let mut t = alcazar_core::inspect::Tree::new();
        for (name, value) in self.inspect() {
            t.value(name, value);
        }
        t
    }
}
