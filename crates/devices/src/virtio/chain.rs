//! Descriptor chains, validated once (virtio 1.2 §2.7.5, §2.7.13).
//!
//! A chain is a list of guest buffers: first those the device reads
//! ("device-readable"), then those it writes ("device-writable",
//! `VIRTQ_DESC_F_WRITE`). [`Chain::parse`] walks the chain through
//! virtio-queue (which follows `next` and indirect tables and gives up
//! after as many descriptors as the queue holds, so a loop cannot spin
//! the device) and checks every segment before the device sees it:
//!
//! - it lies entirely in guest RAM (not MMIO, not past the end);
//! - no readable segment follows a writable one (§2.7.4.2);
//! - the totals stay under the device's limit;
//! - the chain ends: its last descriptor has no `VIRTQ_DESC_F_NEXT`.
//!   virtio-queue's iterator stops quietly on a loop, a `next` index past
//!   the table, an indirect table it cannot read or a chain of more than
//!   queue-size descriptors (§2.7.5.1, §2.7.5.3.1); serving what it
//!   yielded until then would hand the device a truncated chain, so such
//!   a chain is refused instead.
//!
//! Reads and writes then go through [`DmaMemory`], so a device write is
//! bounds-checked again and seen by the emu engine's code cache.

use std::ops::Deref;

use alcazar_core::DmaMemory;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use super::VirtioInterrupt;

/// One guest buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// A segment is not (entirely) guest RAM.
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Segment address.
        addr: u64,
        /// Segment length.
        len: u32,
    },
    /// A device-readable segment came after a device-writable one.
    #[error("a device-readable descriptor follows a device-writable one")]
    ReadableAfterWritable,
    /// The chain holds more bytes than the device accepts.
    #[error("the chain holds more than {0} bytes")]
    TooLong(u64),
    /// The chain has no descriptor at all (a bad head or indirect table).
    #[error("the chain is empty or its descriptors cannot be read")]
    Empty,
    /// The walk stopped at a descriptor that still points to a next one:
    /// a loop, more descriptors than the queue (or indirect table) holds,
    /// a `next` index outside the table, or an unreadable indirect table.
    #[error("the chain does not end (a loop, a bad next index or an unreadable table)")]
    Unterminated,
}

/// A validated descriptor chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The head index, to return the chain as used.
    pub head: u16,
    readable: Vec<Segment>,
    writable: Vec<Segment>,
}

impl Chain {
    /// Reads and validates `chain`; the totals (readable plus writable
    /// bytes) may not exceed `max_len`.
    pub fn parse<M>(chain: DescriptorChain<M>, max_len: u64) -> Result<Chain, ChainError>
    where
        M: Deref + Clone,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        let mem = chain.memory();
        let mut parsed = Chain {
            head,
            ..Chain::default()
        };
        let mut total: u64 = 0;
        let mut descriptors = 0usize;
        let mut unterminated = false;
        for desc in chain.clone() {
            descriptors += 1;
            unterminated = desc.has_next();
            let segment = Segment {
                addr: desc.addr().0,
                len: desc.len(),
            };
            total += u64::from(segment.len);
            if total > max_len {
                return Err(ChainError::TooLong(max_len));
            }
            let fits = segment.addr.checked_add(u64::from(segment.len)).is_some()
                && mem.check_range(
                    GuestAddress(segment.addr),
                    segment.len as usize,
                    Permissions::ReadWrite,
                );
            if !fits {
                return Err(ChainError::OutsideMemory {
                    addr: segment.addr,
                    len: segment.len,
                });
            }
            if desc.is_write_only() {
                parsed.writable.push(segment);
            } else if parsed.writable.is_empty() {
                parsed.readable.push(segment);
            } else {
                return Err(ChainError::ReadableAfterWritable);
            }
        }
        if descriptors == 0 {
            return Err(ChainError::Empty);
        }
        if unterminated {
            return Err(ChainError::Unterminated);
        }
        Ok(parsed)
    }

    /// A chain built from segments (tests, fuzzing).
    pub fn from_segments(head: u16, readable: Vec<Segment>, writable: Vec<Segment>) -> Chain {
        Chain {
            head,
            readable,
            writable,
        }
    }

    /// The device-readable segments.
    pub fn readable(&self) -> &[Segment] {
        &self.readable
    }

    /// The device-writable segments.
    pub fn writable(&self) -> &[Segment] {
        &self.writable
    }

    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Copies readable bytes starting at `offset` (counted across the
    /// readable segments) into `buf`; returns how many were copied (less
    /// than `buf.len()` at the end of the readable part).
    pub fn read_at(&self, mem: &DmaMemory, offset: u64, buf: &mut [u8]) -> usize {
        copy_segments(&self.readable, offset, buf.len(), |addr, at, len| {
            mem.read(addr, &mut buf[at..at + len]).is_ok()
        })
    }

    /// Copies `data` into the writable segments starting at `offset`;
    /// returns how many bytes were written.
    pub fn write_at(&self, mem: &DmaMemory, offset: u64, data: &[u8]) -> usize {
        copy_segments(&self.writable, offset, data.len(), |addr, at, len| {
            mem.write(addr, &data[at..at + len]).is_ok()
        })
    }
}

/// Walks `segments` from byte `offset` for up to `len` bytes, calling
/// `copy(guest_addr, position_in_buffer, length)` per piece; stops at the
/// first failed piece. Returns the bytes copied.
fn copy_segments(
    segments: &[Segment],
    offset: u64,
    len: usize,
    mut copy: impl FnMut(u64, usize, usize) -> bool,
) -> usize {
    let mut skip = offset;
    let mut done = 0usize;
    for s in segments {
        if done == len {
            break;
        }
        let seg_len = u64::from(s.len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let piece = ((seg_len - skip) as usize).min(len - done);
        if !copy(s.addr + skip, done, piece) {
            break;
        }
        done += piece;
        skip = 0;
    }
    done
}

/// Pops the next chain the driver made available on `queue` and
/// validates it ([`Chain::parse`]): its head index (to return it as used
/// whatever the verdict) with the chain or why it was refused. `None`
/// when the driver has offered nothing more, or when its available ring
/// `idx` ran more than a queue size ahead of the device (§2.7.6: the
/// ring cannot hold that many entries): then the device can make no sense
/// of the ring, and `interrupt` is told it needs a reset.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &DmaMemory,
    max_len: u64,
    interrupt: &dyn VirtioInterrupt,
) -> Option<(u16, Result<Chain, ChainError>)> {
    let desc = match queue.iter(mem.mmap()) {
        Ok(mut available) => available.next()?,
        Err(virtio_queue::Error::InvalidAvailRingIndex) => {
            tracing::debug!("the available ring's idx is more than a queue size ahead");
            interrupt.needs_reset();
            return None;
        }
        Err(e) => {
            tracing::debug!("the available ring cannot be read: {e}");
            return None;
        }
    };
    let head = desc.head_index();
    Some((head, Chain::parse(desc, max_len)))
}

/// Returns chain `head` to the driver as used, with `len` bytes written,
/// and interrupts it if the queue asks for that (§2.7.7, §2.7.10).
/// Failures (a used ring outside guest memory) are logged and dropped:
/// the guest broke its own queue.
pub fn complete(
    queue: &mut Queue,
    index: u16,
    mem: &DmaMemory,
    head: u16,
    len: u32,
    interrupt: &dyn VirtioInterrupt,
) {
    if let Err(e) = queue.add_used(mem.mmap(), head, len) {
        tracing::debug!(queue = index, "add_used failed: {e}");
        return;
    }
    match queue.needs_notification(mem.mmap()) {
        Ok(true) => interrupt.signal_queue(index),
        Ok(false) => {}
        Err(e) => tracing::debug!(queue = index, "needs_notification failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{memory, CountingInterrupt, DriverQueue};

    /// `VIRTQ_DESC_F_NEXT`, `VIRTQ_DESC_F_WRITE`, `VIRTQ_DESC_F_INDIRECT`.
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;
    /// Descriptor table of the test queue (rings at +0x1000, +0x2000).
    const TABLE: u64 = 0x10000;

    /// Writes descriptor `index` of the table at `table`.
    fn put_desc(
        mem: &alcazar_core::GuestMemory,
        table: u64,
        index: u16,
        (addr, len, flags, next): (u64, u32, u16, u16),
    ) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write(table + 16 * u64::from(index), &d).expect("desc");
    }

    /// Offers the chain whose head is descriptor 0 of a 4-entry queue
    /// whose table holds `descs`, and parses it.
    fn parse_head(descs: &[(u64, u32, u16, u16)]) -> Result<Chain, ChainError> {
        let mem = memory();
        let driver = DriverQueue::new(TABLE, 4);
        let mut queue = driver.device_queue(&mem);
        for (i, &d) in descs.iter().enumerate() {
            put_desc(&mem, TABLE, i as u16, d);
        }
        // Available ring: entry 0 = head 0, idx = 1.
        mem.write(TABLE + 0x1000 + 2, &1u16.to_le_bytes())
            .expect("avail idx");
        let irq = CountingInterrupt::new();
        let (head, parsed) =
            pop_chain(&mut queue, &mem.dma(), u64::MAX, irq.as_ref()).expect("a chain");
        assert_eq!(head, 0);
        parsed
    }

    #[test]
    fn an_available_idx_far_ahead_asks_for_a_reset() {
        let mem = memory();
        let driver = DriverQueue::new(TABLE, 4);
        let mut queue = driver.device_queue(&mem);
        mem.write(TABLE + 0x1000 + 2, &0x8000u16.to_le_bytes())
            .expect("avail idx");
        let irq = CountingInterrupt::new();
        assert!(pop_chain(&mut queue, &mem.dma(), u64::MAX, irq.as_ref()).is_none());
        assert_eq!(irq.needs_reset.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(queue.next_avail(), 0, "nothing was consumed");
    }

    #[test]
    fn a_chain_looping_on_itself_is_refused() {
        let looped = parse_head(&[(0x40000, 32, F_WRITE | F_NEXT, 0)]);
        assert_eq!(looped, Err(ChainError::Unterminated));
    }

    #[test]
    fn a_two_descriptor_cycle_is_refused() {
        let cycle = parse_head(&[
            (0x40000, 32, F_WRITE | F_NEXT, 1),
            (0x41000, 32, F_WRITE | F_NEXT, 0),
        ]);
        assert_eq!(cycle, Err(ChainError::Unterminated));
    }

    #[test]
    fn a_next_index_outside_the_table_is_refused() {
        let bad_next = parse_head(&[(0x40000, 32, F_WRITE | F_NEXT, 9)]);
        assert_eq!(bad_next, Err(ChainError::Unterminated));
    }

    #[test]
    fn an_indirect_table_outside_memory_or_looping_is_refused() {
        let outside = parse_head(&[(0x1_0000_0000, 64, F_INDIRECT, 0)]);
        assert_eq!(outside, Err(ChainError::Empty));
        // A readable descriptor, then an indirect one past the end of RAM.
        let after_one = parse_head(&[(0x40000, 8, F_NEXT, 1), (0xfff_fff0, 64, F_INDIRECT, 0)]);
        assert_eq!(after_one, Err(ChainError::Unterminated));
    }

    #[test]
    fn a_well_formed_chain_still_parses() {
        let ok = parse_head(&[(0x40000, 8, F_NEXT, 1), (0x41000, 32, F_WRITE, 0)]);
        let chain = ok.expect("a valid chain");
        assert_eq!(chain.readable_len(), 8);
        assert_eq!(chain.writable_len(), 32);
    }

    #[test]
    fn a_buffer_straddling_the_end_of_ram_is_refused() {
        let end = 1u64 << 20;
        let straddle = parse_head(&[(end - 16, 32, F_WRITE, 0)]);
        assert_eq!(
            straddle,
            Err(ChainError::OutsideMemory {
                addr: end - 16,
                len: 32
            })
        );
    }

    #[test]
    fn copies_across_segment_boundaries_from_an_offset() {
        let segs = [Segment { addr: 100, len: 4 }, Segment { addr: 200, len: 4 }];
        let mut pieces = Vec::new();
        let n = copy_segments(&segs, 2, 5, |a, at, l| {
            pieces.push((a, at, l));
            true
        });
        assert_eq!(n, 5);
        assert_eq!(pieces, vec![(102, 0, 2), (200, 2, 3)]);
    }

    #[test]
    fn stops_at_the_end_of_the_segments() {
        let segs = [Segment { addr: 0, len: 3 }];
        assert_eq!(copy_segments(&segs, 1, 10, |_, _, _| true), 2);
        assert_eq!(copy_segments(&segs, 9, 10, |_, _, _| true), 0);
    }
}
