//! The MMU: page walks and the software TLB.
//!
//! A guest load or store goes: segment (done by the caller) -> linear
//! address -> [`Mmu`] -> physical address -> host memory or the MMIO bus.
//! The TLB maps a linear page straight to a host pointer, per access kind
//! (read, write, fetch) and privilege (supervisor, user), so the common
//! access is an index, a compare and a pointer dereference.
//!
//! Page walks implement the three paging modes of Intel SDM Vol. 3A ch. 4:
//! 32-bit (§4.3, with 4 MiB pages under CR4.PSE), PAE (§4.4) and 4-level
//! (§4.5), with U/S, R/W, CR0.WP, NX (EFER.NXE), global pages (CR4.PGE),
//! reserved-bit checks, and accessed/dirty bits set atomically. SMEP, SMAP,
//! PCID and protection keys are not implemented (and not advertised).
//!
//! A TLB entry for writing is only made once the page's dirty bit is set,
//! so every first write still walks and sets D.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alcazar_core::memory::HostRegion;

use crate::code::CodePages;
use crate::fault::{pf, Fault};
use crate::state::{cr0, cr4, efer, CpuState};

/// Entries per TLB (a power of two).
pub const TLB_ENTRIES: usize = 1024;
/// Physical address width the CPU reports (CPUID 0x80000008).
pub const PHYS_ADDR_BITS: u32 = 40;
const PAGE_MASK: u64 = !0xfff;
const PHYS_MASK: u64 = (1 << PHYS_ADDR_BITS) - 1;

/// What an access does to the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// A data read.
    Read = 0,
    /// A data write.
    Write = 1,
    /// An instruction fetch.
    Fetch = 2,
}

/// Where a translated page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the byte.
    pub phys: u64,
    /// Host address of the byte, when it is RAM (or ROM, for reads).
    pub host: Option<*mut u8>,
}

#[derive(Clone, Copy)]
struct TlbEntry {
    /// Linear page number + 1; 0 means empty.
    tag: u64,
    /// Host address of the page's first byte, or null for MMIO.
    host: *mut u8,
    /// Physical page address.
    phys: u64,
    /// Survives CR3 writes (PTE.G with CR4.PGE).
    global: bool,
}

const EMPTY: TlbEntry = TlbEntry {
    tag: 0,
    host: std::ptr::null_mut(),
    phys: 0,
    global: false,
};

/// A contiguous piece of guest RAM or ROM and where it is on the host.
#[derive(Clone, Copy, Debug)]
struct Backing {
    start: u64,
    end: u64,
    host: *mut u8,
    read_only: bool,
}

/// The MMU of one vCPU.
pub struct Mmu {
    tlb: Box<[[TlbEntry; TLB_ENTRIES]; 6]>,
    backing: Vec<Backing>,
    /// TLB flushes so far (telemetry).
    pub flushes: u64,
    /// Page walks so far (telemetry).
    pub walks: u64,
    /// Bumped by every flush and every fetch-TLB refill (part of the link
    /// epoch, [`crate::code::Link`]).
    pub epoch: u64,
    /// The physical page of this CPU's xAPIC registers (or
    /// [`crate::apic::startup::NO_APIC_PAGE`]): never given a host pointer,
    /// so its accesses take the MMIO path, where the APIC claims them
    /// before the machine bus. Checked on TLB refills only.
    pub apic_page: u64,
}

// SAFETY: the raw pointers point into guest memory mappings that the
// owning `Machine` keeps alive for the lifetime of the vCPU; they are only
// dereferenced by the vCPU that owns this MMU.
unsafe impl Send for Mmu {}

impl std::fmt::Debug for Mmu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mmu")
            .field("flushes", &self.flushes)
            .field("walks", &self.walks)
            .finish()
    }
}

/// Why a page walk failed: the page-fault error code bits it found.
struct WalkFault(u32);

impl Mmu {
    /// An MMU over the given host regions (from `GuestMemory::host_regions`).
    pub fn new(regions: &[HostRegion]) -> Self {
        let backing = regions
            .iter()
            .map(|r| Backing {
                start: r.guest_addr,
                end: r.guest_addr + r.size,
                host: r.host_addr,
                read_only: r.read_only,
            })
            .collect();
        Mmu {
            tlb: Box::new([[EMPTY; TLB_ENTRIES]; 6]),
            backing,
            flushes: 0,
            walks: 0,
            epoch: 0,
            apic_page: crate::apic::startup::NO_APIC_PAGE,
        }
    }

    /// The host address of guest-physical `phys` if it is RAM/ROM, and
    /// whether it is read-only.
    #[inline]
    pub fn host_of(&self, phys: u64) -> Option<(*mut u8, bool)> {
        self.backing
            .iter()
            .find(|b| b.start <= phys && phys < b.end)
            .map(|b| {
                // SAFETY: `phys - start` is inside the region, so the offset
                // pointer stays inside its host mapping.
                (
                    unsafe { b.host.add((phys - b.start) as usize) },
                    b.read_only,
                )
            })
    }

    /// Entries holding a translation, over all six TLBs (per access kind
    /// and privilege); the inspector's view, a scan of every entry.
    pub fn entries_in_use(&self) -> usize {
        self.tlb
            .iter()
            .map(|set| set.iter().filter(|e| e.tag != 0).count())
            .sum()
    }

    /// Drops every entry.
    pub fn flush_all(&mut self) {
        for set in self.tlb.iter_mut() {
            set.fill(EMPTY);
        }
        self.flushes += 1;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Drops every entry except global ones (a CR3 write with CR4.PGE).
    pub fn flush_non_global(&mut self) {
        for set in self.tlb.iter_mut() {
            for e in set.iter_mut().filter(|e| !e.global) {
                *e = EMPTY;
            }
        }
        self.flushes += 1;
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Drops the entries for the page containing `lin` (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        let vpn = lin >> 12;
        let idx = (vpn as usize) & (TLB_ENTRIES - 1);
        self.epoch = self.epoch.wrapping_add(1);
        for set in self.tlb.iter_mut() {
            if set[idx].tag == vpn + 1 {
                set[idx] = EMPTY;
            }
        }
    }

    /// Translates `lin` for an access of `kind` at privilege `user`.
    /// `code` is consulted so that pages holding decoded code never get a
    /// write entry (their stores must invalidate the code cache).
    #[inline]
    pub fn translate(
        &mut self,
        cpu: &mut CpuState,
        code: &CodePages,
        lin: u64,
        kind: AccessKind,
        user: bool,
    ) -> Result<Translation, Fault> {
        let vpn = lin >> 12;
        let set = kind as usize * 2 + usize::from(user);
        let idx = (vpn as usize) & (TLB_ENTRIES - 1);
        let e = self.tlb[set][idx];
        let offset = lin & 0xfff;
        if e.tag == vpn + 1 {
            let host = (!e.host.is_null()).then(|| {
                // SAFETY: `host` is the start of a mapped 4 KiB page.
                unsafe { e.host.add(offset as usize) }
            });
            return Ok(Translation {
                phys: e.phys | offset,
                host,
            });
        }
        self.translate_slow(cpu, code, lin, kind, user, set, idx)
    }

    /// The host address (and the guest-physical address) of `size` bytes
    /// at `lin` if they lie in one RAM page that has a TLB entry for `kind`
    /// at privilege `user`; `None` sends the access down the full path
    /// ([`Mmu::translate`]: a TLB miss, MMIO, or a page-crossing access).
    /// This is the one check a load or store of the interpreter's fast
    /// handlers makes inline.
    #[inline(always)]
    pub fn host_hit(
        &self,
        lin: u64,
        size: u8,
        kind: AccessKind,
        user: bool,
    ) -> Option<(*mut u8, u64)> {
        let offset = lin & 0xfff;
        if offset + u64::from(size) > 0x1000 {
            return None;
        }
        let vpn = lin >> 12;
        let e =
            &self.tlb[kind as usize * 2 + usize::from(user)][(vpn as usize) & (TLB_ENTRIES - 1)];
        if e.tag != vpn + 1 || e.host.is_null() {
            return None;
        }
        // SAFETY: `host` is the start of a mapped 4 KiB page and `offset`
        // is inside it.
        Some((unsafe { e.host.add(offset as usize) }, e.phys | offset))
    }

    #[allow(clippy::too_many_arguments)]
    fn translate_slow(
        &mut self,
        cpu: &mut CpuState,
        code: &CodePages,
        lin: u64,
        kind: AccessKind,
        user: bool,
        set: usize,
        idx: usize,
    ) -> Result<Translation, Fault> {
        if kind == AccessKind::Fetch {
            self.epoch = self.epoch.wrapping_add(1);
        }
        let (phys_page, global) = if cpu.cr0 & cr0::PG == 0 {
            (lin & PAGE_MASK & 0xffff_ffff_ffff, false)
        } else {
            self.walks += 1;
            self.walk(cpu, lin, kind, user).map_err(|WalkFault(code)| {
                let mut code = code;
                if kind == AccessKind::Write {
                    code |= pf::WRITE;
                }
                if user {
                    code |= pf::USER;
                }
                if kind == AccessKind::Fetch && cpu.efer & efer::NXE != 0 {
                    code |= pf::FETCH;
                }
                Fault::PageFault { addr: lin, code }
            })?
        };
        let offset = lin & 0xfff;
        let backing = if phys_page == self.apic_page {
            None
        } else {
            self.host_of(phys_page)
        };
        let host_page = match backing {
            Some((_, true)) if kind == AccessKind::Write => std::ptr::null_mut(),
            Some((p, _)) => p,
            None => std::ptr::null_mut(),
        };
        // Pages with decoded code are never cached for writing.
        let cacheable = !(kind == AccessKind::Write && code.has_code(phys_page));
        if cacheable {
            self.tlb[set][idx] = TlbEntry {
                tag: (lin >> 12) + 1,
                host: host_page,
                phys: phys_page,
                global,
            };
        }
        let host = (!host_page.is_null()).then(|| {
            // SAFETY: `host_page` is the start of a mapped 4 KiB page.
            unsafe { host_page.add(offset as usize) }
        });
        Ok(Translation {
            phys: phys_page | offset,
            host,
        })
    }

    /// Reads a paging-structure entry of `size` bytes at physical `addr`.
    fn entry_ptr(&self, addr: u64) -> Option<*mut u8> {
        self.host_of(addr).map(|(p, _)| p)
    }

    /// Walks the paging structures for `lin`; returns the physical page
    /// and whether it is global, setting accessed/dirty bits.
    fn walk(
        &mut self,
        cpu: &CpuState,
        lin: u64,
        kind: AccessKind,
        user: bool,
    ) -> Result<(u64, bool), WalkFault> {
        if cpu.cr4 & cr4::PAE == 0 {
            return self.walk32(cpu, lin, kind, user);
        }
        let nxe = cpu.efer & efer::NXE != 0;
        // Physical-address bits 40..51 are reserved; so is XD without NXE.
        let rsvd = 0x000f_ff00_0000_0000 | if nxe { 0 } else { 1 << 63 };
        let mut perms = Perms::all();
        let mut entries: [Option<(*mut u8, u64)>; 4] = [None; 4];
        let (mut table, levels): (u64, &[u32]) = if cpu.long_mode() {
            (cpu.cr3 & PHYS_MASK & PAGE_MASK, &[39, 30, 21, 12])
        } else {
            // PAE: the PDPTE (bits 31:30) has no U/S, R/W or NX.
            let pdpte_addr = (cpu.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
            let p = self.entry_ptr(pdpte_addr).ok_or(WalkFault(0))?;
            let pdpte = load_entry(p, 8);
            if pdpte & 1 == 0 {
                return Err(WalkFault(0));
            }
            if pdpte & (rsvd | 0x1e6) != 0 {
                return Err(WalkFault(pf::PRESENT | pf::RSVD));
            }
            (pdpte & PHYS_MASK & PAGE_MASK, &[21, 12])
        };
        for (depth, &shift) in levels.iter().enumerate() {
            let addr = table + ((lin >> shift) & 0x1ff) * 8;
            let p = self.entry_ptr(addr).ok_or(WalkFault(0))?;
            let e = load_entry(p, 8);
            if e & 1 == 0 {
                return Err(WalkFault(0));
            }
            let large = shift != 12 && e & 0x80 != 0;
            let mut bad = e & rsvd;
            if large && shift == 39 {
                bad |= 0x80; // PS in a PML4E is reserved
            }
            if large && shift == 30 && !cpu.long_mode() {
                bad |= 0x80;
            }
            if large {
                bad |= e & ((1u64 << shift) - 1) & !0x1fff; // low address bits of a large page
            }
            if bad != 0 {
                return Err(WalkFault(pf::PRESENT | pf::RSVD));
            }
            perms.narrow(e, nxe);
            entries[depth] = Some((p, e));
            if large || shift == 12 {
                perms.check(cpu, kind, user)?;
                self.set_accessed_dirty(&entries[..=depth], kind == AccessKind::Write, 8);
                let frame = e & PHYS_MASK & !((1u64 << shift) - 1);
                let page = frame | (lin & ((1u64 << shift) - 1) & PAGE_MASK);
                let global = e & 0x100 != 0 && cpu.cr4 & cr4::PGE != 0;
                return Ok((page, global));
            }
            table = e & PHYS_MASK & PAGE_MASK;
        }
        Err(WalkFault(0))
    }

    /// 32-bit paging (SDM §4.3): 4 KiB pages, or 4 MiB with CR4.PSE.
    fn walk32(
        &mut self,
        cpu: &CpuState,
        lin: u64,
        kind: AccessKind,
        user: bool,
    ) -> Result<(u64, bool), WalkFault> {
        let lin = lin & 0xffff_ffff;
        let mut perms = Perms::all();
        let pde_addr = (cpu.cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
        let pde_ptr = self.entry_ptr(pde_addr).ok_or(WalkFault(0))?;
        let pde = load_entry(pde_ptr, 4);
        if pde & 1 == 0 {
            return Err(WalkFault(0));
        }
        perms.narrow(pde, false);
        if pde & 0x80 != 0 && cpu.cr4 & cr4::PSE != 0 {
            if pde & (1 << 21) != 0 {
                return Err(WalkFault(pf::PRESENT | pf::RSVD));
            }
            perms.check(cpu, kind, user)?;
            self.set_accessed_dirty(&[Some((pde_ptr, pde))], kind == AccessKind::Write, 4);
            // PSE-36: bits 20:13 give physical address bits 39:32.
            let frame = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32;
            let global = pde & 0x100 != 0 && cpu.cr4 & cr4::PGE != 0;
            return Ok((frame | (lin & 0x3f_f000), global));
        }
        let pte_addr = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
        let pte_ptr = self.entry_ptr(pte_addr).ok_or(WalkFault(0))?;
        let pte = load_entry(pte_ptr, 4);
        if pte & 1 == 0 {
            return Err(WalkFault(0));
        }
        perms.narrow(pte, false);
        perms.check(cpu, kind, user)?;
        self.set_accessed_dirty(
            &[Some((pde_ptr, pde)), Some((pte_ptr, pte))],
            kind == AccessKind::Write,
            4,
        );
        let global = pte & 0x100 != 0 && cpu.cr4 & cr4::PGE != 0;
        Ok((pte & 0xffff_f000, global))
    }

    /// Sets A on every entry of the walk and D on the last one for writes,
    /// atomically (another vCPU may be walking the same tables).
    fn set_accessed_dirty(&self, entries: &[Option<(*mut u8, u64)>], write: bool, size: usize) {
        let last = entries.len() - 1;
        for (i, (p, e)) in entries
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.map(|x| (i, x)))
        {
            let mut bits = 0x20; // accessed
            if write && i == last {
                bits |= 0x40; // dirty
            }
            if e & bits != bits {
                or_entry(p, size, bits);
            }
        }
    }
}

/// The accumulated permissions of a walk (SDM §4.6).
struct Perms {
    writable: bool,
    user: bool,
    no_exec: bool,
}

impl Perms {
    fn all() -> Self {
        Perms {
            writable: true,
            user: true,
            no_exec: false,
        }
    }

    fn narrow(&mut self, entry: u64, nxe: bool) {
        self.writable &= entry & 2 != 0;
        self.user &= entry & 4 != 0;
        self.no_exec |= nxe && entry & (1 << 63) != 0;
    }

    fn check(&self, cpu: &CpuState, kind: AccessKind, user: bool) -> Result<(), WalkFault> {
        let denied = match kind {
            _ if user && !self.user => true,
            AccessKind::Write => !self.writable && (user || cpu.cr0 & cr0::WP != 0),
            AccessKind::Fetch => self.no_exec,
            AccessKind::Read => false,
        };
        if denied {
            Err(WalkFault(pf::PRESENT))
        } else {
            Ok(())
        }
    }
}

fn load_entry(p: *mut u8, size: usize) -> u64 {
    if size == 8 {
        // SAFETY: `p` points at an 8-byte paging entry inside guest RAM
        // (entries are naturally aligned: table base is 4 KiB aligned and
        // the index is scaled by 8).
        unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.load(Ordering::Relaxed)
    } else {
        // SAFETY: as above for a 4-byte entry.
        u64::from(unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(Ordering::Relaxed))
    }
}

fn or_entry(p: *mut u8, size: usize, bits: u64) {
    if size == 8 {
        // SAFETY: see `load_entry`.
        unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }.fetch_or(bits, Ordering::Relaxed);
    } else {
        // SAFETY: see `load_entry`.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.fetch_or(bits as u32, Ordering::Relaxed);
    }
}
