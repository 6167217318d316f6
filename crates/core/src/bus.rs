//! The I/O buses: where a guest's `in`/`out` and MMIO accesses go.
//!
//! A PC has two address spaces for devices: the 64 KiB port space reached
//! with `in`/`out` (Intel SDM Vol. 1, ch. 19 "Input/Output") and memory-mapped
//! I/O, physical addresses that are not RAM. A [`Bus`] holds one range map
//! for each ([`IoSpace`]); a device claims ranges and receives accesses as
//! `(offset within its range, bytes)`.
//!
//! Both engines call the same bus: the kvm engine on `KVM_EXIT_IO` /
//! `KVM_EXIT_MMIO`, the emu engine straight from its `in`/`out` and
//! load/store paths. Accesses nobody claims behave like an empty ISA bus:
//! reads return all ones, writes vanish, and both are counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// A device on the bus. Accesses arrive with the offset from the start of
/// the range the device was registered at; `data.len()` is 1, 2, 4 or 8.
pub trait BusDevice: Send {
    /// Handles a read: fill `data` (little-endian).
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` (little-endian).
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The device's registers for the inspector, named as in its manual
    /// (empty by default). Called with the device locked, from any
    /// thread, while the VM runs or is paused: it must not change state.
    fn inspect(&self) -> crate::inspect::Tree {
        crate::inspect::Tree::new()
    }
}

/// A device shared between the bus and whoever else holds it (the VMM, the
/// inspector).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Which address space an access is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoSpace {
    /// The 16-bit port space of `in`/`out`.
    Port,
    /// Memory-mapped I/O in the physical address space.
    Mmio,
}

impl std::fmt::Display for IoSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoSpace::Port => "port",
            IoSpace::Mmio => "MMIO",
        })
    }
}

/// The width of one bus access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessWidth {
    /// 8 bits.
    Byte = 1,
    /// 16 bits.
    Word = 2,
    /// 32 bits.
    Dword = 4,
    /// 64 bits (MMIO only on real hardware).
    Qword = 8,
}

impl AccessWidth {
    /// The width of an access of `len` bytes, if it is a legal one.
    pub fn from_len(len: usize) -> Option<Self> {
        match len {
            1 => Some(AccessWidth::Byte),
            2 => Some(AccessWidth::Word),
            4 => Some(AccessWidth::Dword),
            8 => Some(AccessWidth::Qword),
            _ => None,
        }
    }
}

/// Errors from building the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Two devices claim overlapping ranges.
    #[error("{space} range {base:#x}..{end:#x} of `{name}` overlaps `{other}` at {other_base:#x}..{other_end:#x}")]
    Overlap {
        /// Address space.
        space: IoSpace,
        /// The device being added.
        name: String,
        /// Its first address.
        base: u64,
        /// One past its last address.
        end: u64,
        /// The device already there.
        other: String,
        /// Its first address.
        other_base: u64,
        /// One past its last address.
        other_end: u64,
    },
    /// A range is empty, wraps around, or leaves the 64 KiB port space.
    #[error("{space} range {base:#x}+{len:#x} of `{name}` is not a valid range")]
    BadRange {
        /// Address space.
        space: IoSpace,
        /// The device.
        name: String,
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
}

/// What happened to one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A device handled it.
    Claimed,
    /// Nobody is there: a read returned all ones, a write was dropped.
    Unclaimed,
    /// The width was not 1, 2, 4 or 8 bytes: treated as unclaimed.
    BadWidth,
}

#[derive(Clone)]
struct Range {
    len: u64,
    name: Arc<str>,
    target: Arc<Target>,
}

/// A range's device and its counters, handed out together by one `Arc`
/// clone per access.
struct Target {
    device: SharedDevice,
    counts: AccessCounts,
}

/// Accesses a range received and the host time its device spent on them
/// (telemetry: MMIO and port I/O by device).
#[derive(Debug, Default)]
struct AccessCounts {
    reads: AtomicU64,
    writes: AtomicU64,
    /// Host nanoseconds from asking for the device's lock to the return of
    /// its handler (waiting for another vCPU's access included).
    time_ns: AtomicU64,
}

impl AccessCounts {
    /// Charges the time since `start` to the range.
    fn add_time(&self, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.time_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Counters of accesses nobody claimed.
#[derive(Debug, Default)]
pub struct UnclaimedCounters {
    /// Port reads that returned all ones.
    pub port_reads: AtomicU64,
    /// Port writes that were dropped.
    pub port_writes: AtomicU64,
    /// MMIO reads that returned all ones.
    pub mmio_reads: AtomicU64,
    /// MMIO writes that were dropped.
    pub mmio_writes: AtomicU64,
}

/// The port and MMIO buses of one machine.
pub struct Bus {
    ports: RwLock<BTreeMap<u64, Range>>,
    mmio: RwLock<BTreeMap<u64, Range>>,
    unclaimed: UnclaimedCounters,
    /// Accesses (reads and writes, claimed or not) per I/O port.
    port_counts: Box<[AtomicU64]>,
    /// Whether device handlers are timed (see [`Bus::set_timing`]).
    timing: AtomicBool,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            ports: RwLock::default(),
            mmio: RwLock::default(),
            unclaimed: UnclaimedCounters::default(),
            port_counts: (0..0x1_0000).map(|_| AtomicU64::new(0)).collect(),
            timing: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("ranges", &self.ranges())
            .finish_non_exhaustive()
    }
}

/// A registered range, as listed by [`Bus::ranges`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeInfo {
    /// Address space.
    pub space: IoSpace,
    /// First address.
    pub base: u64,
    /// Length.
    pub len: u64,
    /// Name of the device that claimed it.
    pub name: String,
    /// Reads it has received.
    pub reads: u64,
    /// Writes it has received.
    pub writes: u64,
    /// Host nanoseconds spent in its device's handlers, lock waits
    /// included.
    pub time_ns: u64,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self, space: IoSpace) -> &RwLock<BTreeMap<u64, Range>> {
        match space {
            IoSpace::Port => &self.ports,
            IoSpace::Mmio => &self.mmio,
        }
    }

    /// Turns the timing of device handlers on or off (off at first).
    ///
    /// While on, every claimed access reads the host's monotonic clock
    /// twice and charges the difference to its range
    /// ([`RangeInfo::time_ns`]). That costs as much as the dispatch itself
    /// (measured on a PVM host: ~90 ns per untimed access to a trivial
    /// device, ~190 ns timed), so it is left to whoever wants the times:
    /// the CLI's `--telemetry`, the API server. While off the cost is one
    /// relaxed atomic load.
    pub fn set_timing(&self, on: bool) {
        self.timing.store(on, Ordering::Relaxed);
    }

    /// Whether device handlers are being timed.
    pub fn timing(&self) -> bool {
        self.timing.load(Ordering::Relaxed)
    }

    /// Registers `device` for `len` addresses starting at `base`.
    pub fn insert(
        &self,
        space: IoSpace,
        base: u64,
        len: u64,
        name: &str,
        device: SharedDevice,
    ) -> Result<(), BusError> {
        let limit = match space {
            IoSpace::Port => 0x1_0000,
            IoSpace::Mmio => u64::MAX,
        };
        let end = base.checked_add(len).filter(|&e| len > 0 && e <= limit);
        let Some(end) = end else {
            return Err(BusError::BadRange {
                space,
                name: name.to_string(),
                base,
                len,
            });
        };
        let mut map = self.map(space).write().unwrap_or_else(|p| p.into_inner());
        let clash = map
            .range(..end)
            .next_back()
            .filter(|(&b, r)| b + r.len > base);
        if let Some((&other_base, other)) = clash {
            return Err(BusError::Overlap {
                space,
                name: name.to_string(),
                base,
                end,
                other: other.name.to_string(),
                other_base,
                other_end: other_base + other.len,
            });
        }
        let target = Arc::new(Target {
            device,
            counts: AccessCounts::default(),
        });
        map.insert(
            base,
            Range {
                len,
                name: Arc::from(name),
                target,
            },
        );
        Ok(())
    }

    /// Removes the range starting exactly at `base` (used when a PCI BAR
    /// moves). Returns whether one was there.
    pub fn remove(&self, space: IoSpace, base: u64) -> bool {
        let mut map = self.map(space).write().unwrap_or_else(|p| p.into_inner());
        map.remove(&base).is_some()
    }

    /// The range claiming `len` bytes at `addr` and the offset into it;
    /// counts the access.
    fn find(
        &self,
        space: IoSpace,
        addr: u64,
        len: usize,
        write: bool,
    ) -> Option<(u64, Arc<Target>)> {
        if space == IoSpace::Port {
            if let Some(c) = self.port_counts.get(addr as usize) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        let map = self.map(space).read().unwrap_or_else(|p| p.into_inner());
        let (&base, range) = map.range(..=addr).next_back()?;
        let fits = addr
            .checked_add(len as u64)
            .is_some_and(|end| end <= base + range.len);
        if !fits {
            return None;
        }
        let counts = &range.target.counts;
        let counter = if write { &counts.writes } else { &counts.reads };
        counter.fetch_add(1, Ordering::Relaxed);
        Some((addr - base, range.target.clone()))
    }

    /// The I/O ports accessed so far with their access counts, busiest
    /// first.
    pub fn port_counts(&self) -> Vec<(u16, u64)> {
        let mut v: Vec<(u16, u64)> = self
            .port_counts
            .iter()
            .enumerate()
            .map(|(port, c)| (port as u16, c.load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// Performs a read of `data.len()` bytes at `addr`.
    pub fn read(&self, space: IoSpace, addr: u64, data: &mut [u8]) -> Access {
        if AccessWidth::from_len(data.len()).is_none() {
            data.fill(0xff);
            return Access::BadWidth;
        }
        match self.find(space, addr, data.len(), false) {
            Some((offset, target)) => {
                let start = self.timing.load(Ordering::Relaxed).then(Instant::now);
                lock(&target.device).read(offset, data);
                if let Some(start) = start {
                    target.counts.add_time(start);
                }
                Access::Claimed
            }
            None => {
                data.fill(0xff);
                self.count_unclaimed(space, false);
                Access::Unclaimed
            }
        }
    }

    /// Performs a write of `data` at `addr`.
    pub fn write(&self, space: IoSpace, addr: u64, data: &[u8]) -> Access {
        if AccessWidth::from_len(data.len()).is_none() {
            return Access::BadWidth;
        }
        match self.find(space, addr, data.len(), true) {
            Some((offset, target)) => {
                let start = self.timing.load(Ordering::Relaxed).then(Instant::now);
                lock(&target.device).write(offset, data);
                if let Some(start) = start {
                    target.counts.add_time(start);
                }
                Access::Claimed
            }
            None => {
                self.count_unclaimed(space, true);
                Access::Unclaimed
            }
        }
    }

    fn count_unclaimed(&self, space: IoSpace, write: bool) {
        let c = &self.unclaimed;
        let counter = match (space, write) {
            (IoSpace::Port, false) => &c.port_reads,
            (IoSpace::Port, true) => &c.port_writes,
            (IoSpace::Mmio, false) => &c.mmio_reads,
            (IoSpace::Mmio, true) => &c.mmio_writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters of unclaimed accesses so far.
    pub fn unclaimed(&self) -> &UnclaimedCounters {
        &self.unclaimed
    }

    /// Every device on the bus once (a device with several ranges is
    /// listed under the name of its first), ports first, in address
    /// order: what the inspector walks.
    pub fn devices(&self) -> Vec<(String, SharedDevice)> {
        let mut out: Vec<(String, SharedDevice)> = Vec::new();
        for space in [IoSpace::Port, IoSpace::Mmio] {
            let map = self.map(space).read().unwrap_or_else(|p| p.into_inner());
            for r in map.values() {
                let device = &r.target.device;
                let seen = out
                    .iter()
                    .any(|(_, d)| std::ptr::addr_eq(Arc::as_ptr(d), Arc::as_ptr(device)));
                if !seen {
                    out.push((r.name.to_string(), device.clone()));
                }
            }
        }
        out
    }

    /// Every registered range, ports first, in address order.
    pub fn ranges(&self) -> Vec<RangeInfo> {
        let mut out = Vec::new();
        for space in [IoSpace::Port, IoSpace::Mmio] {
            let map = self.map(space).read().unwrap_or_else(|p| p.into_inner());
            out.extend(map.iter().map(|(&base, r)| RangeInfo {
                space,
                base,
                len: r.len,
                name: r.name.to_string(),
                reads: r.target.counts.reads.load(Ordering::Relaxed),
                writes: r.target.counts.writes.load(Ordering::Relaxed),
                time_ns: r.target.counts.time_ns.load(Ordering::Relaxed),
            }));
        }
        out
    }
}

/// Locks a device, recovering from a poisoned lock: a device whose handler
/// panicked on another vCPU thread keeps its last state rather than taking
/// the whole VMM down with it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that remembers the last write and echoes its offset.
    #[derive(Default)]
    struct Scratch {
        last: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Scratch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last.push((offset, data.to_vec()));
        }
    }

    fn scratch() -> Arc<Mutex<Scratch>> {
        Arc::new(Mutex::new(Scratch::default()))
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let bus = Bus::new();
        let dev = scratch();
        bus.insert(IoSpace::Port, 0x3f8, 8, "uart", dev.clone())
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!(bus.read(IoSpace::Port, 0x3fd, &mut b), Access::Claimed);
        assert_eq!(b[0], 5);
        bus.write(IoSpace::Port, 0x3f8, b"A");
        assert_eq!(dev.lock().unwrap().last, vec![(0, vec![b'A'])]);
    }

    #[test]
    fn overlapping_ranges_are_a_typed_error() {
        let bus = Bus::new();
        bus.insert(IoSpace::Port, 0x60, 5, "i8042", scratch())
            .unwrap();
        let err = bus
            .insert(IoSpace::Port, 0x64, 1, "other", scratch())
            .unwrap_err();
        assert!(matches!(
            err,
            BusError::Overlap {
                other_base: 0x60,
                ..
            }
        ));
        assert!(err.to_string().contains("i8042"));
        // Adjacent ranges and the other space are fine.
        bus.insert(IoSpace::Port, 0x65, 1, "next", scratch())
            .unwrap();
        bus.insert(IoSpace::Mmio, 0x60, 5, "mmio", scratch())
            .unwrap();
    }

    #[test]
    fn ports_beyond_64k_and_empty_ranges_are_rejected() {
        let bus = Bus::new();
        assert!(bus
            .insert(IoSpace::Port, 0xffff, 2, "x", scratch())
            .is_err());
        assert!(bus
            .insert(IoSpace::Mmio, 0x1000, 0, "x", scratch())
            .is_err());
        assert!(bus
            .insert(IoSpace::Mmio, u64::MAX, 2, "x", scratch())
            .is_err());
    }

    #[test]
    fn unclaimed_reads_are_all_ones_and_counted() {
        let bus = Bus::new();
        let mut b = [0u8; 4];
        assert_eq!(bus.read(IoSpace::Port, 0x1234, &mut b), Access::Unclaimed);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(
            bus.write(IoSpace::Mmio, 0xd000_0000, &[1]),
            Access::Unclaimed
        );
        assert_eq!(bus.unclaimed().port_reads.load(Ordering::Relaxed), 1);
        assert_eq!(bus.unclaimed().mmio_writes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn odd_widths_and_straddling_accesses_never_reach_devices() {
        let bus = Bus::new();
        let dev = scratch();
        bus.insert(IoSpace::Mmio, 0x1000, 4, "d", dev.clone())
            .unwrap();
        let mut three = [0u8; 3];
        assert_eq!(
            bus.read(IoSpace::Mmio, 0x1000, &mut three),
            Access::BadWidth
        );
        assert_eq!(bus.write(IoSpace::Mmio, 0x1002, &[0; 4]), Access::Unclaimed);
        assert_eq!(
            bus.write(IoSpace::Mmio, u64::MAX, &[0; 8]),
            Access::Unclaimed
        );
        assert!(dev.lock().unwrap().last.is_empty());
    }

    /// A device whose handlers take `delay`.
    struct Slow {
        delay: std::time::Duration,
    }

    impl BusDevice for Slow {
        fn read(&mut self, _offset: u64, data: &mut [u8]) {
            std::thread::sleep(self.delay);
            data.fill(0);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {
            std::thread::sleep(self.delay);
        }
    }

    #[test]
    fn timed_accesses_charge_the_handler_time_to_their_range() {
        let bus = Bus::new();
        let delay = std::time::Duration::from_millis(1);
        bus.insert(
            IoSpace::Mmio,
            0x1000,
            0x10,
            "slow",
            Arc::new(Mutex::new(Slow { delay })),
        )
        .unwrap();
        bus.insert(IoSpace::Port, 0x80, 1, "fast", scratch())
            .unwrap();
        // Untimed by default: counted, but no time.
        bus.write(IoSpace::Mmio, 0x1000, &[0; 4]);
        assert_eq!(bus.ranges()[1].time_ns, 0);
        assert!(!bus.timing());
        bus.set_timing(true);
        let mut b = [0u8; 4];
        bus.read(IoSpace::Mmio, 0x1004, &mut b);
        bus.write(IoSpace::Mmio, 0x1008, &b);
        // Unclaimed accesses are charged to nobody.
        bus.write(IoSpace::Mmio, 0x2000, &b);
        let ranges = bus.ranges();
        let slow = &ranges[1];
        assert_eq!(
            (slow.name.as_str(), slow.reads, slow.writes),
            ("slow", 1, 2)
        );
        assert!(slow.time_ns >= 2_000_000, "{slow:?}");
        assert!(slow.time_ns < 1_000_000_000, "{slow:?}");
        assert_eq!(ranges[0].time_ns, 0);
        bus.set_timing(false);
        bus.write(IoSpace::Mmio, 0x1000, &[0; 4]);
        assert_eq!(bus.ranges()[1].time_ns, slow.time_ns);
    }

    #[test]
    fn devices_lists_a_device_once_across_its_ranges() {
        let bus = Bus::new();
        let dev = scratch();
        bus.insert(IoSpace::Port, 0x20, 2, "pic", dev.clone())
            .unwrap();
        bus.insert(IoSpace::Port, 0xa0, 2, "pic2", dev).unwrap();
        bus.insert(IoSpace::Mmio, 0xfec0_0000, 0x20, "ioapic", scratch())
            .unwrap();
        let names: Vec<String> = bus.devices().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["pic", "ioapic"]);
    }
}
