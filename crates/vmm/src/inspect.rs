//! The inspector's view of a machine's devices and memory, the
//! `devices/...` and `memory/...` branches of a VM's tree (Palacios's
//! inspector, `alcazar inspect NAME devices/pic/master/imr`).
//!
//! [`devices_tree`] walks the bus: one child per device id, holding the
//! ranges it claims with their access counts and then whatever the device
//! shows of itself ([`alcazar_core::BusDevice::inspect`]: registers named
//! as in its manual). A device registered through several adapters under
//! one id (the 8259A pair's three port ranges, the i8042's two ports)
//! appears once. [`memory_tree`] lists the guest physical memory map.
//!
//! Both only read: each device is locked in turn for the time of its own
//! `inspect`, which has no side effect on the device, so the VM may be
//! running or paused.

use alcazar_core::bus::lock;
use alcazar_core::inspect::{Node, Tree};
use alcazar_core::memory::RegionKind;
use alcazar_core::{IoSpace, Machine};

/// Hex digits of an address in `space`: 16-bit ports, 64-bit MMIO.
fn address_width(space: IoSpace) -> usize {
    match space {
        IoSpace::Port => 4,
        IoSpace::Mmio => 16,
    }
}

/// Every device on `machine`'s bus, by id, with its ranges and registers.
pub fn devices_tree(machine: &Machine) -> Tree {
    let ranges = machine.bus.ranges();
    let mut seen: Vec<String> = Vec::new();
    let mut tree = Tree::new();
    for (name, device) in machine.bus.devices() {
        if seen.contains(&name) {
            continue;
        }
        let mut claimed = Tree::new();
        for (i, r) in ranges.iter().filter(|r| r.name == name).enumerate() {
            let mut range = Tree::new();
            range
                .value("space", r.space)
                .hex("base", r.base, address_width(r.space))
                .hex("len", r.len, address_width(r.space))
                .value("reads", r.reads)
                .value("writes", r.writes);
            claimed.child(i.to_string(), range);
        }
        let mut node = Tree::new();
        node.child("ranges", claimed);
        let own = lock(&device).inspect();
        for (entry, value) in own.entries() {
            match value {
                Node::Value(v) => node.value(entry.as_str(), v),
                Node::Tree(t) => node.child(entry.as_str(), t.clone()),
            };
        }
        tree.child(name.as_str(), node);
        seen.push(name);
    }
    tree
}

/// The guest physical memory map: each region's start, size and kind
/// (RAM, ROM or MMIO hole), and the total RAM.
pub fn memory_tree(machine: &Machine) -> Tree {
    let map = machine.memory.map();
    let mut regions = Tree::new();
    for (i, e) in map.entries().iter().enumerate() {
        let kind = match e.kind {
            RegionKind::Ram => "RAM",
            RegionKind::Rom => "ROM",
            RegionKind::Mmio => "MMIO",
        };
        let mut r = Tree::new();
        r.hex("start", e.start, 16)
            .hex("size", e.size, 16)
            .value("kind", kind);
        regions.child(i.to_string(), r);
    }
    let ram = map.ram_bytes();
    let mut tree = Tree::new();
    tree.child("regions", regions)
        .hex("ram_bytes", ram, 16)
        .value("ram_mib", ram >> 20);
    tree
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use alcazar_core::bus::SharedDevice;
    use alcazar_core::memory::{GuestMemory, MemoryMap};
    use alcazar_core::BusDevice;

    use super::*;

    /// A device with one register that counts its writes.
    #[derive(Default)]
    struct Latch {
        value: u8,
    }

    impl BusDevice for Latch {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            data.fill(self.value);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.value = data.first().copied().unwrap_or(0);
        }
        fn inspect(&self) -> Tree {
            let mut t = Tree::new();
            let mut regs = Tree::new();
            regs.hex("value", u64::from(self.value), 2);
            t.child("registers", regs).value("model", "latch");
            t
        }
    }

    /// Presents a shared [`Latch`] at another range, as the PIC's and
    /// the i8042's adapters do.
    struct Alias(Arc<Mutex<Latch>>);

    impl BusDevice for Alias {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            lock(&self.0).read(offset, data);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            lock(&self.0).write(offset, data);
        }
        fn inspect(&self) -> Tree {
            lock(&self.0).inspect()
        }
    }

    fn machine() -> Machine {
        Machine::new(
            GuestMemory::new(MemoryMap::pc(16 << 20).unwrap()).unwrap(),
            1,
        )
    }

    fn value(t: &Tree, path: &str) -> String {
        match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn each_device_appears_once_with_its_ranges_and_registers() {
        let m = machine();
        let latch = Arc::new(Mutex::new(Latch::default()));
        let alias: SharedDevice = Arc::new(Mutex::new(Alias(latch.clone())));
        m.bus
            .insert(IoSpace::Port, 0x80, 1, "post", latch.clone())
            .unwrap();
        m.bus.insert(IoSpace::Port, 0x84, 2, "post", alias).unwrap();
        let other: SharedDevice = Arc::new(Mutex::new(Latch::default()));
        m.bus
            .insert(IoSpace::Mmio, 0xfed0_0000, 0x400, "mmio-latch", other)
            .unwrap();
        m.bus.write(IoSpace::Port, 0x84, &[0x5a]);
        m.bus.write(IoSpace::Port, 0x80, &[0x5a]);
        let mut b = [0u8];
        m.bus.read(IoSpace::Port, 0x80, &mut b);
        let t = devices_tree(&m);
        let names: Vec<&str> = t.entries().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["post", "mmio-latch"]);
        assert_eq!(value(&t, "post/ranges/0/space"), "port");
        assert_eq!(value(&t, "post/ranges/0/base"), "0x0080");
        assert_eq!(value(&t, "post/ranges/0/reads"), "1");
        assert_eq!(value(&t, "post/ranges/0/writes"), "1");
        assert_eq!(value(&t, "post/ranges/1/base"), "0x0084");
        assert_eq!(value(&t, "post/ranges/1/len"), "0x0002");
        assert_eq!(value(&t, "post/ranges/1/writes"), "1");
        assert_eq!(value(&t, "post/registers/value"), "0x5a");
        assert_eq!(value(&t, "post/model"), "latch");
        assert_eq!(value(&t, "mmio-latch/ranges/0/space"), "MMIO");
        assert_eq!(value(&t, "mmio-latch/ranges/0/base"), "0x00000000fed00000");
        assert_eq!(value(&t, "mmio-latch/registers/value"), "0x00");
        assert!(t.get("post/ranges/2").is_none());
    }

    #[test]
    fn memory_map_lists_regions_and_total_ram() {
        let m = machine();
        let t = memory_tree(&m);
        assert_eq!(value(&t, "regions/0/start"), "0x0000000000000000");
        assert_eq!(value(&t, "regions/0/size"), "0x0000000001000000");
        assert_eq!(value(&t, "regions/0/kind"), "RAM");
        assert_eq!(value(&t, "regions/1/kind"), "MMIO");
        assert_eq!(value(&t, "ram_mib"), "16");
    }

    #[test]
    fn the_chipset_shows_under_its_ids() {
        let m = machine();
        let _chipset = crate::platform::Chipset::new(&m, None).unwrap();
        m.bus.write(IoSpace::Port, 0x21, &[0xfb]);
        let t = devices_tree(&m);
        let names: Vec<&str> = t.entries().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pic", "pit", "rtc", "ioapic"]);
        assert_eq!(value(&t, "pic/master/imr"), "0xfb");
        assert_eq!(value(&t, "pic/ranges/2/base"), "0x04d0");
        assert_eq!(value(&t, "ioapic/redirection_table/23/masked"), "true");
        assert_eq!(value(&t, "pit/counter0/gate"), "true");
        assert_eq!(value(&t, "rtc/register_d/vrt"), "true");
    }

    #[test]
    fn a_whole_vm_shows_every_device_once() {
        use crate::config::{BootSource, DeviceSpec, EngineChoice, FlatImage, FlatMode, Origin};
        let mut config = crate::VmConfig::new(BootSource::Flat {
            image: FlatImage::Bytes(vec![0xf4]), // hlt
            mode: FlatMode::Real,
            load_address: 0x10000,
            aps_wait_for_sipi: false,
        });
        config.engine = EngineChoice::Emu;
        config.serial = crate::config::ConsoleTarget::None;
        let rng = DeviceSpec::parse(
            Origin::File(0),
            "virtio-rng",
            "rng0",
            &Default::default(),
            std::path::Path::new("."),
        )
        .unwrap();
        config.devices.push(rng);
        let vm = crate::Vm::create(&config).unwrap();
        let t = devices_tree(vm.machine());
        let names: Vec<&str> = t.entries().iter().map(|(n, _)| n.as_str()).collect();
        for id in [
            "pic",
            "pit",
            "rtc",
            "ioapic",
            "com1",
            "i8042",
            "port61",
            "debug-exit",
            "debugcon",
            "acpi-pm",
            "pci-config",
            "pci-ecam",
            "pci-window",
        ] {
            assert_eq!(
                names.iter().filter(|n| **n == id).count(),
                1,
                "{id}: {names:?}"
            );
        }
        assert_eq!(value(&t, "i8042/a20"), "true");
        assert_eq!(value(&t, "com1/ranges/0/base"), "0x03f8");
        assert_eq!(
            value(&t, "pci-config/functions/00:00.0/name"),
            "host-bridge"
        );
        let rng = t
            .get("pci-config/functions")
            .and_then(|f| match f {
                Node::Tree(f) => f
                    .entries()
                    .iter()
                    .find(|(_, n)| {
                        n.flatten("")
                            .contains(&("name".into(), "virtio-rng".into()))
                    })
                    .map(|(slot, _)| slot.clone()),
                Node::Value(_) => None,
            })
            .expect("virtio-rng on the PCI bus");
        let path = format!("pci-config/functions/{rng}/device/queues/0/enabled");
        assert_eq!(value(&t, &path), "false");
        assert!(value(&memory_tree(vm.machine()), "ram_mib") == "32");
    }
}
