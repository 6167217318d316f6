//! Instruction fetch and block decoding: turning the bytes at CS:RIP into
//! a decoded [`Block`] (SDM Vol. 2 chapter 2, "Instruction format"; the
//! decoding itself is iced-x86's).
//!
//! [`Cpu::block_at_rip`] translates CS:RIP for a fetch, asks the
//! [`BlockCache`] for a valid block there and, on a miss, decodes one:
//! straight-line code up to a control transfer, the end of the page or
//! [`MAX_BLOCK_INSNS`], each instruction given its handler by
//! [`crate::exec::fast::decode`] (and a CMP/TEST fused with a following
//! Jcc). The pages the bytes came from are marked as holding code
//! ([`super::CodePages::mark_code`]), so a later store to them invalidates
//! the block.

use std::sync::Arc;

use iced_x86::{Decoder, DecoderOptions, FlowControl};

use super::{Block, BlockCache};
use crate::exec;
use crate::fault::Fault;
use crate::mmu::AccessKind;
use crate::state::seg;
use crate::Cpu;

/// Most instructions in one decoded block.
pub(crate) const MAX_BLOCK_INSNS: usize = 64;

impl Cpu {
    /// The decoded block at CS:RIP (with its cache key), from the cache or
    /// freshly decoded. Hand it back with [`BlockCache::put_back`].
    #[inline(always)]
    pub(crate) fn block_at_rip(&mut self) -> Result<(u64, Arc<Block>), Fault> {
        let lin = self.linear(seg::CS, self.s.rip, 1, AccessKind::Fetch)?;
        let user = self.user();
        let t = self.translate(lin, AccessKind::Fetch, user)?;
        let bitness = self.s.code_size().bitness();
        let key = BlockCache::key(t.phys, bitness);
        if let Some(b) = self.cache.take(key, self.s.rip, &self.code) {
            return Ok((key, b));
        }
        let block = Arc::new(self.decode_block(lin, t.phys, bitness)?);
        self.cache.insert(key, block.clone());
        Ok((key, block))
    }

    /// Decodes from linear `lin` (physical `phys`) until a control
    /// transfer, a page boundary or [`MAX_BLOCK_INSNS`].
    fn decode_block(&mut self, lin: u64, phys: u64, bitness: u32) -> Result<Block, Fault> {
        let page_left = 0x1000 - (lin & 0xfff) as usize;
        let mut bytes = self.fetch_bytes(phys, page_left);
        let mut pages = [(phys & !0xfff, 0u32), (0, 0)];
        let mut page_count = 1u8;
        // An instruction may run into the next page: fetch up to 15 more
        // bytes from it if it is mapped (if not, the decoder sees a short
        // buffer and the fault is raised when that instruction runs).
        if page_left < 15 + MAX_BLOCK_INSNS * 15 {
            let next_lin = lin.wrapping_add(page_left as u64);
            if let Ok(next) = self.translate(next_lin, AccessKind::Fetch, self.user()) {
                bytes.extend(self.fetch_bytes(next.phys, 15));
                pages[1] = (next.phys & !0xfff, 0);
                page_count = 2;
            }
        }
        for p in pages.iter_mut().take(page_count as usize) {
            p.1 = self.code.mark_code(p.0);
        }
        let mut decoder = Decoder::with_ip(bitness, &bytes, self.s.rip, DecoderOptions::NONE);
        let mut insns = Vec::with_capacity(16);
        let ip_mask = match bitness {
            64 => u64::MAX,
            32 => 0xffff_ffff,
            _ => 0xffff,
        };
        let mut rip = self.s.rip;
        let mut offset = 0usize;
        while decoder.can_decode() && insns.len() < MAX_BLOCK_INSNS {
            let insn = decoder.decode();
            let len = insn.len();
            if insn.is_invalid() && offset + 15 > bytes.len() && page_count == 1 {
                // Ran off the page into an unmapped one: fetch the next
                // page so the CPU raises the page fault at that address.
                if insns.is_empty() {
                    let next = lin.wrapping_add(page_left as u64);
                    self.translate(next, AccessKind::Fetch, self.user())?;
                }
                break;
            }
            let next_rip = rip.wrapping_add(len as u64) & ip_mask;
            let d = exec::fast::decode(&insn, bitness, rip, next_rip);
            let fused = bitness == 64
                && exec::fast::flow::is_fast_jcc(&insn, bitness)
                && insns
                    .last_mut()
                    .is_some_and(|p| exec::fast::fused::fuse(p, &insn, &d));
            if !fused {
                insns.push(d);
            }
            rip = next_rip;
            offset += len;
            let goes_on = match insn.flow_control() {
                FlowControl::Next => true,
                // Specialized Jcc's end the block when taken.
                FlowControl::ConditionalBranch => exec::fast::flow::is_fast_jcc(&insn, bitness),
                _ => false,
            };
            if !goes_on || offset >= page_left || insn.is_invalid() {
                break;
            }
        }
        // Blocks live in the cache for long: no spare capacity.
        insns.shrink_to_fit();
        Ok(Block {
            insns,
            pages,
            page_count,
            rip: self.s.rip,
            ip_mask,
            links: Default::default(),
            jit: Default::default(),
        })
    }

    /// Copies up to `len` code bytes from physical `phys` (RAM/ROM only).
    ///
    /// Code is not fetched from MMIO or from addresses with nothing
    /// behind them: such a page reads as all ones, the value of a read
    /// nothing claims (PCI Local Bus 3.0 §3.3.3.1, master abort), and
    /// `FF FF` is no instruction (group 5 /7, SDM Vol. 2 Table A-6), so
    /// the CPU raises #UD there. (An empty block would run nothing and
    /// leave RIP where the last instruction run put it.)
    fn fetch_bytes(&self, phys: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        match self.machine.memory.read(phys, &mut out) {
            Ok(()) => out,
            Err(_) => {
                // The range may end early (RAM end): take what exists.
                let mut n = 0;
                while n < len
                    && self
                        .machine
                        .memory
                        .read(phys + n as u64, &mut out[n..n + 1])
                        .is_ok()
                {
                    n += 1;
                }
                if n == 0 {
                    return vec![0xff; len];
                }
                out.truncate(n);
                out
            }
        }
    }
}
