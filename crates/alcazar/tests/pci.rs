//! The PCI bus and virtio-rng, end to end in a Linux guest: the kernel
//! finds the host bridge through ACPI (`\_SB.PCI0`, MCFG), enumerates the
//! devices with the right IDs and classes (what `lspci` would print; the
//! busybox guest reads sysfs), binds virtio-pci with MSI-X, and
//! `/dev/hwrng` gives host randomness.

mod common;

use common::{interrupt_count, Guest};

/// sysfs lines `SLOT VENDOR DEVICE CLASS DRIVER` for every PCI function.
const LIST_PCI: &str = "for d in /sys/bus/pci/devices/*; do \
     echo PCI $(basename $d) $(cat $d/vendor $d/device $d/class) \
     $(basename $(readlink $d/driver) 2>/dev/null); done";

#[test]
fn guest_enumerates_pci_and_reads_the_virtio_rng() {
    let script = format!(
        "{LIST_PCI}; echo RNG $(cat /sys/class/misc/hw_random/rng_current); \
         A=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'); \
         B=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'); \
         echo HWRNG $A $B; dmesg | grep -o 'MMCONFIG at .*reserved in E820'; \
         cat /proc/interrupts"
    );
    let lines = Guest::run_ok(&["run", "--engine", "emu", "--rng", "--exec", &script]);
    let text = lines.join("\n");

    let pci: Vec<Vec<&str>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("PCI "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        pci,
        vec![
            vec!["0000:00:00.0", "0x1b36", "0x0008", "0x060000"],
            vec!["0000:00:01.0", "0x1af4", "0x1044", "0xff0000", "virtio-pci"],
        ],
        "{text}"
    );
    assert!(text.contains("RNG virtio_rng.0"), "{text}");
    let hwrng = lines
        .iter()
        .find_map(|l| l.strip_prefix("HWRNG "))
        .expect("the HWRNG line");
    let reads: Vec<&str> = hwrng.split_whitespace().collect();
    assert_eq!(reads.len(), 2, "two reads of 32 bytes: {hwrng}");
    assert!(
        reads.iter().all(|r| r.len() == 64),
        "32 bytes each: {hwrng}"
    );
    assert_ne!(reads[0], reads[1], "two reads of randomness differ");
    assert!(text.contains("MMCONFIG at [mem 0xe0000000-0xe00fffff] reserved in E820"));
    // The device interrupts through MSI-X, not INTx.
    assert!(interrupt_count(&lines, "virtio0-input") > 0, "{text}");
}

#[test]
fn every_virtio_device_shows_its_ids_and_class_and_binds_virtio_pci() {
    // What `lspci -n` would list, read from sysfs: one function per device
    // class, each with the modern virtio device ID (0x1040 + type).
    let image = std::env::temp_dir().join(format!("alcazar-pci-{}.img", std::process::id()));
    std::fs::write(&image, vec![0u8; 1 << 20]).expect("a scratch disk image");
    let disk = image.to_string_lossy().into_owned();
    let lines = Guest::run_ok(&[
        "run",
        "--engine",
        "emu",
        "--rng",
        "--disk",
        &disk,
        "--net",
        "tap,host=10.213.9.1/24",
        "--console",
        "virtio",
        "--exec",
        LIST_PCI,
    ]);
    let _ = std::fs::remove_file(&image);
    let mut found: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("PCI "))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "0x1af4 0x1041 0x020000 virtio-pci", // network
            "0x1af4 0x1042 0x018000 virtio-pci", // block
            "0x1af4 0x1043 0x078000 virtio-pci", // console
            "0x1af4 0x1044 0xff0000 virtio-pci", // entropy
            "0x1b36 0x0008 0x060000",            // host bridge
        ],
        "{}",
        lines.join("\n")
    );
}

#[test]
fn without_msi_the_device_interrupts_through_intx_and_the_acpi_routing_table() {
    // `pci=nomsi`: the driver falls back to INTA#, which the DSDT's _PRT
    // routes to IOAPIC pin 17 for slot 1 (level-triggered); reading the
    // ISR deasserts it.
    let script = "dd if=/dev/hwrng bs=32 count=4 2>/dev/null | od -An -tx1 | wc -l; \
                  cat /proc/interrupts";
    let lines = Guest::run_ok(&[
        "run",
        "--engine",
        "emu",
        "--rng",
        "--cmdline",
        "console=ttyS0 quiet cryptomgr.notests pci=nomsi",
        "--exec",
        script,
    ]);
    let text = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.trim() == "8"),
        "128 bytes read: {text}"
    );
    let intx = lines
        .iter()
        .find(|l| l.contains("virtio0"))
        .unwrap_or_else(|| panic!("no virtio0 interrupt line: {text}"));
    assert!(
        intx.contains("IO-APIC") && intx.contains("17-fasteoi"),
        "{intx}"
    );
    assert!(interrupt_count(&lines, "virtio0") > 0, "{text}");
}
