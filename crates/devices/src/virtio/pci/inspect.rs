//! The inspector's view of the virtio PCI transport (virtio 1.2 §4.1.4):
//! the common configuration structure's fields, `device_status` decoded
//! (§2.1), the ISR, the MSI-X table, and per queue its registers plus the
//! `idx` fields of its available and used rings read from guest memory
//! (§2.7.6, §2.7.8). Ring reads are bounds-checked: a ring outside guest
//! memory shows as such. Nothing is acknowledged: the ISR is shown, not
//! read.

use alcazar_core::inspect::Tree;
use alcazar_core::DmaMemory;
use virtio_queue::QueueT;

use super::{status, VirtioPci, NO_VECTOR};

/// `device_status` with its bits named (§2.1).
fn status_tree(value: u8) -> Tree {
    let mut t = Tree::new();
    t.hex("value", u64::from(value), 2)
        .value("acknowledge", value & status::ACKNOWLEDGE != 0)
        .value("driver", value & status::DRIVER != 0)
        .value("features_ok", value & status::FEATURES_OK != 0)
        .value("driver_ok", value & status::DRIVER_OK != 0)
        .value(
            "device_needs_reset",
            value & status::DEVICE_NEEDS_RESET != 0,
        )
        .value("failed", value & status::FAILED != 0);
    t
}

fn vector(t: &mut Tree, name: &str, v: u16) {
    if v == NO_VECTOR {
        t.value(name, "NO_VECTOR");
    } else {
        t.value(name, v);
    }
}

/// The 16-bit `idx` of a ring at `ring` (offset 2 in both the available
/// and the used ring), or why it cannot be read.
fn ring_idx(memory: &DmaMemory, ring: u64) -> String {
    let mut b = [0u8; 2];
    match ring.checked_add(2).map(|at| memory.read(at, &mut b)) {
        Some(Ok(())) => u16::from_le_bytes(b).to_string(),
        _ => format!("unreadable: {ring:#x} is outside guest memory"),
    }
}

/// `device_status` with the device's own reset request (the interrupt
/// state is locked by the caller, so it is passed in).
fn status_now(dev: &VirtioPci, needs_reset: bool) -> u8 {
    if needs_reset {
        dev.device_status | status::DEVICE_NEEDS_RESET
    } else {
        dev.device_status
    }
}

/// The transport's tree.
pub(super) fn tree(dev: &VirtioPci) -> Tree {
    let irq = dev.interrupt.state();
    let mut t = Tree::new();
    t.value("device_type", dev.device_type().name())
        .child(
            "device_status",
            status_tree(status_now(dev, irq.needs_reset)),
        )
        .hex("device_features", dev.device_features(), 16)
        .hex("driver_features", dev.driver_features, 16)
        .value("device_feature_select", dev.device_feature_select)
        .value("driver_feature_select", dev.driver_feature_select)
        .value("config_generation", 0)
        .value("queue_select", dev.queue_select)
        .value("num_queues", dev.max_sizes.len());
    vector(&mut t, "config_msix_vector", irq.config_vector);
    t.hex("isr", u64::from(irq.isr), 2)
        .value("intx_disabled", irq.intx_disabled)
        .value("active", dev.active)
        .value("notifies_mmio", dev.notifies_mmio)
        .value("notifies_ioeventfd", dev.notifies_routed);
    let mut queues = Tree::new();
    for (i, q) in dev.queues.iter().enumerate() {
        let mut qt = Tree::new();
        qt.value("size", q.size())
            .value("max_size", dev.max_sizes.get(i).copied().unwrap_or(0))
            .value("enabled", q.ready());
        vector(
            &mut qt,
            "msix_vector",
            irq.queue_vectors.get(i).copied().unwrap_or(NO_VECTOR),
        );
        qt.hex("desc_table", q.desc_table(), 16)
            .hex("avail_ring", q.avail_ring(), 16)
            .hex("used_ring", q.used_ring(), 16);
        if q.ready() {
            qt.value("avail_idx", ring_idx(&dev.memory, q.avail_ring()))
                .value("used_idx", ring_idx(&dev.memory, q.used_ring()));
        } else {
            qt.value("avail_idx", "queue not enabled")
                .value("used_idx", "queue not enabled");
        }
        queues.child(i.to_string(), qt);
    }
    t.child("queues", queues).child("msix", irq.msix.inspect());
    drop(irq);
    let mut own = Tree::new();
    for (name, value) in dev.device.inspect() {
        own.value(name, value);
    }
    t.child("counters", own);
    t
}

#[cfg(test)]
mod tests {
    use alcazar_core::inspect::{Node, Tree};

    use super::super::tests::rig;
    use super::super::ISR_CFG;
    use crate::pci::PciDevice;

    fn value(t: &Tree, path: &str) -> String {
        match t.get(path) {
            Some(Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn queues_status_and_ring_indices_are_shown() {
        let mut r = rig();
        let t = r.dev.inspect_tree();
        assert_eq!(value(&t, "device_type"), "virtio-rng");
        assert_eq!(value(&t, "queues/0/enabled"), "false");
        assert_eq!(value(&t, "queues/0/avail_idx"), "queue not enabled");
        assert_eq!(value(&t, "config_msix_vector"), "NO_VECTOR");
        r.negotiate();
        r.setup_queue();
        r.w8(0x14, 0x0f);
        r.offer_buffer();
        r.w16(super::super::NOTIFY_CFG, 0);
        let t = r.dev.inspect_tree();
        assert_eq!(value(&t, "device_status/value"), "0x0f");
        assert_eq!(value(&t, "device_status/driver_ok"), "true");
        assert_eq!(value(&t, "driver_features"), "0x0000000100000000");
        assert_eq!(value(&t, "queues/0/size"), "8");
        assert_eq!(value(&t, "queues/0/enabled"), "true");
        assert_eq!(value(&t, "queues/0/desc_table"), "0x0000000000001000");
        assert_eq!(value(&t, "queues/0/avail_idx"), "1");
        assert_eq!(value(&t, "queues/0/used_idx"), "1");
        assert_eq!(value(&t, "notifies_mmio"), "1");
        assert_eq!(value(&t, "isr"), "0x01");
        assert_eq!(value(&t, "msix/vectors/1/masked"), "true");
        // Shown, not read: the ISR and INTA# are still set for the driver.
        assert!(r.line.0.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(r.r8(ISR_CFG), 1);
    }

    #[test]
    fn a_ring_outside_guest_memory_is_reported_not_read() {
        let mut r = rig();
        r.negotiate();
        r.w16(0x16, 0);
        r.w16(0x18, 8);
        r.w32(0x28, 0xffff_fff0); // the available ring past the end of RAM
        r.w32(0x2c, 0xffff_ffff);
        r.w16(0x1c, 1);
        let t = r.dev.inspect_tree();
        assert_eq!(
            value(&t, "queues/0/avail_idx"),
            "unreadable: 0xfffffffffffffff0 is outside guest memory"
        );
        assert_eq!(value(&t, "queues/0/used_idx"), "0");
    }
}
