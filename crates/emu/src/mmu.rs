//! The MMU: the software TLB in front of the page walk (Intel SDM Vol. 3A
//! chapter 4 "Paging"; §4.10 "Caching translation information").
//!
//! A guest load or store goes: segment (done by the caller) -> linear
//! address -> [`Mmu`] -> physical address -> host memory or the MMIO bus.
//! The TLB maps a linear page straight to a host pointer, per access kind
//! (read, write, fetch) and privilege (supervisor, user), so the common
//! access is an index, a compare and a pointer dereference. A miss walks
//! the paging structures (`mmu/walk.rs`: 32-bit, PAE and 4-level paging)
//! and refills the entry.
//!
//! An entry records that one access was allowed, so it may only serve
//! accesses that the rules of §4.6 would allow too. SMEP and SMAP make
//! that depend on more than kind and CPL (§4.6.1): with CR4.SMAP, a
//! supervisor-mode data access reaches a user-mode page only if it is
//! explicit and RFLAGS.AC = 1 (STAC/CLAC flip AC around every copy to or
//! from user memory, so flushing on AC changes would cost much). The
//! supervisor sets therefore hold only what the strictest supervisor access
//! may reach (no user-mode page for data under SMAP, none for fetches under
//! SMEP: the walk refuses them), and an explicit supervisor access with
//! AC = 1 under SMAP has sets of its own ([`AC_SETS`]), which nothing but
//! [`Mmu::translate`] and translated supervisor code consult, the latter
//! only after a runtime test that AC is set (a frame byte kept current at
//! every entry into translated code and after every instruction the
//! interpreter runs for it: [`crate::jit::frame::Frame::smap_ac`]). So an
//! entry filled with AC = 1 can never serve an access after CLAC, nor an
//! implicit access (descriptor tables, IDT, TSS: [`Privilege::Implicit`]).
//! Changing CR4.SMEP or CR4.SMAP flushes the TLB ([`crate::modes`]).
//!
//! Global pages (CR4.PGE) survive CR3 writes; which writes flush what is
//! in [`crate::modes`], INVLPG in `exec/system/control.rs`. A TLB entry
//! for writing is only made once the page's dirty bit is set, so every
//! first write still walks and sets D; pages holding decoded code never
//! get one, so that their stores reach [`crate::code::CodePages`].
//!
//! Translated code ([`crate::jit`]) probes the same entries inline, so
//! their layout is fixed (`#[repr(C)]`, [`TlbEntry`]) and chosen for a
//! short probe: the tag is the linear page address itself, and an entry
//! that must not hit (empty, or MMIO) holds the address of a page with
//! another index, so `address - tag` lies within the page exactly when the
//! entry maps that page to RAM. The table shares its allocation with the
//! translator's frame ([`TlbTable`]).

#[cfg(test)]
mod tests;
mod walk;

use std::sync::atomic::AtomicU32;

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

/// Who makes an access, for the access rights of SDM Vol. 3A §4.6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    /// An explicit supervisor-mode access: one an instruction makes at CPL
    /// 0, 1 or 2. Under CR4.SMAP it reaches user-mode pages only with
    /// RFLAGS.AC = 1.
    Supervisor,
    /// A user-mode access (CPL 3).
    User,
    /// An implicit supervisor-mode access, at any CPL: the CPU reading or
    /// writing a system data structure (GDT, LDT, IDT, TSS). Under
    /// CR4.SMAP it never reaches a user-mode page, whatever RFLAGS.AC.
    Implicit,
}

impl Privilege {
    /// The privilege of an explicit access: [`Privilege::User`] if `user`
    /// (CPL 3), else [`Privilege::Supervisor`].
    #[inline(always)]
    pub fn explicit(user: bool) -> Privilege {
        if user {
            Privilege::User
        } else {
            Privilege::Supervisor
        }
    }

    /// Whether this is a user-mode access.
    #[inline(always)]
    pub fn is_user(self) -> bool {
        self == Privilege::User
    }
}

/// Where a translated page lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the byte.
    pub phys: u64,
    /// Host address of the byte, when it is RAM (or ROM, for reads).
    pub host: Option<*mut u8>,
}

/// One TLB entry (32 bytes; translated code reads it at fixed offsets).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlbEntry {
    /// The linear page address if the entry maps RAM (or ROM, for reads);
    /// that address XOR [`MMIO_TAG`] if it maps MMIO (no host pointer); for
    /// an empty entry [`empty_tag`] of its index. Only the first kind
    /// satisfies `tag == address & !0xfff` for an address of this index.
    pub tag: u64,
    /// Host address of the page's first byte, or null for MMIO.
    pub host: *mut u8,
    /// Physical page address, with [`GLOBAL`] in bit 0.
    pub phys: u64,
    /// Write entries: the [`CodePages`] word of the physical page, whose
    /// code bit translated stores test (a page may gain decoded code after
    /// its write entry was made). Null in other entries.
    pub code: *const AtomicU32,
}

/// The tag bit flipped in MMIO entries (it changes the TLB index, so an
/// MMIO entry never looks like a RAM entry of its own index).
pub const MMIO_TAG: u64 = 0x1000;
/// [`TlbEntry::phys`] bit 0: the entry survives CR3 writes (PTE.G with
/// CR4.PGE).
pub const GLOBAL: u64 = 1;

/// The tag of an empty entry at `index`: a page of index `index ^ 2`,
/// which is neither a RAM nor (with [`MMIO_TAG`]) an MMIO tag of `index`.
pub const fn empty_tag(index: usize) -> u64 {
    ((index ^ 2) as u64) << 12
}

const fn empty(index: usize) -> TlbEntry {
    TlbEntry {
        tag: empty_tag(index),
        host: std::ptr::null_mut(),
        phys: 0,
        code: std::ptr::null(),
    }
}

/// TLB sets: one per access kind and privilege (index `kind * 2 + user`),
/// then the two of [`AC_SETS`].
pub const TLB_SETS: usize = 8;
/// The first of the sets for explicit supervisor reads and writes made
/// with CR4.SMAP and RFLAGS.AC set (index `AC_SETS + kind`): they may hold
/// user-mode pages, so only such accesses look there.
pub const AC_SETS: usize = 6;

/// The TLB entries (one set per access kind and privilege: index
/// `kind * 2 + user`; then [`AC_SETS`]), after the translator's frame in
/// the same allocation, so translated code reaches both from one base
/// register.
#[repr(C)]
pub struct TlbTable {
    /// The translator's per-vCPU frame ([`crate::jit::frame`]).
    pub frame: crate::jit::frame::Frame,
    /// The entries.
    pub sets: [[TlbEntry; TLB_ENTRIES]; TLB_SETS],
}

impl TlbTable {
    /// A table with every entry empty, built in place on the heap (it is
    /// too big for a thread's stack).
    fn new_boxed() -> Box<TlbTable> {
        let layout = std::alloc::Layout::new::<TlbTable>();
        // SAFETY: `TlbTable` has a non-zero size; all-zero bytes are a
        // valid value of every field (integers, raw pointers, arrays of
        // them), and the pointer comes from the global allocator with
        // `TlbTable`'s layout, as `Box` requires.
        let mut table = unsafe {
            let p = std::alloc::alloc_zeroed(layout).cast::<TlbTable>();
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        };
        for set in table.sets.iter_mut() {
            for (i, e) in set.iter_mut().enumerate() {
                *e = empty(i);
            }
        }
        table.frame.init();
        table
    }
}

/// Counts of TLB flushes by kind, and the pages of the latest INVLPGs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushLog {
    /// Full flushes (they drop global translations too).
    pub full: u64,
    /// Flushes of the non-global translations (CR3 writes).
    pub non_global: u64,
    /// Single-page flushes (INVLPG) so far.
    pub pages: u64,
    /// The linear pages of the last [`FLUSH_LOG_PAGES`] of them (ring).
    pub recent: [u64; FLUSH_LOG_PAGES],
}

/// Filled entries [`Mmu`] tracks one by one.
const FILLED_MAX: usize = 2048;

/// INVLPGs remembered in a [`FlushLog`].
pub const FLUSH_LOG_PAGES: usize = 64;

impl Default for FlushLog {
    fn default() -> Self {
        FlushLog {
            full: 0,
            non_global: 0,
            pages: 0,
            recent: [0; FLUSH_LOG_PAGES],
        }
    }
}

impl FlushLog {
    fn page(&mut self, page: u64) {
        self.recent[(self.pages as usize) % FLUSH_LOG_PAGES] = page;
        self.pages += 1;
    }

    /// The pages flushed one by one since the log counted `since` single-
    /// page flushes, or `None` if they are no longer all remembered.
    pub fn pages_since(&self, since: u64) -> Option<impl Iterator<Item = u64> + '_> {
        let n = self.pages.checked_sub(since)?;
        (n <= FLUSH_LOG_PAGES as u64)
            .then(|| (since..self.pages).map(move |i| self.recent[(i as usize) % FLUSH_LOG_PAGES]))
    }
}

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
    tlb: Box<TlbTable>,
    backing: Vec<Backing>,
    /// TLB flushes so far (telemetry).
    pub flushes: u64,
    /// Page walks so far (telemetry).
    pub walks: u64,
    /// Bumped by every flush and every fetch-TLB refill (part of the link
    /// epoch, [`crate::code::Link`]).
    pub epoch: u64,
    /// What was flushed, for the translator's lookup cache of branch
    /// targets ([`crate::jit`]), which must forget a linear address whose
    /// mapping may have changed.
    pub flush_log: FlushLog,
    /// The entries filled (set << 10 | index), non-global ones in
    /// `filled[0]`, global ones in `filled[1]`, so a flush touches only
    /// those it drops; [`FILLED_MAX`] in a list means "scan them all". A
    /// flush of all 6 x 1024 entries at every CR3 write was a few percent
    /// of a Linux boot.
    filled: [Vec<u16>; 2],
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

/// The TLB set that serves (and caches) an access of `kind` at
/// `privilege` in the CPU's current state: the user set, one of
/// [`AC_SETS`] for an explicit supervisor data access with CR4.SMAP and
/// RFLAGS.AC set, else the supervisor set.
#[inline(always)]
fn set_for(cpu: &CpuState, kind: AccessKind, privilege: Privilege) -> usize {
    match privilege {
        Privilege::User => kind as usize * 2 + 1,
        Privilege::Supervisor if smap_overridden(cpu, kind) => AC_SETS + kind as usize,
        Privilege::Supervisor | Privilege::Implicit => kind as usize * 2,
    }
}

/// Whether explicit supervisor data accesses use [`AC_SETS`] now (CR4.SMAP,
/// RFLAGS.AC and CPL < 3): what translated code learns through its frame
/// ([`crate::jit::frame::Frame::smap_ac`]).
#[inline]
pub(crate) fn ac_sets_in_use(cpu: &CpuState) -> bool {
    cpu.cpl < 3 && smap_overridden(cpu, AccessKind::Read)
}

/// Whether an explicit supervisor access of `kind` may reach user-mode
/// pages under CR4.SMAP: a data access with RFLAGS.AC = 1 (SDM Vol. 3A
/// §4.6.1).
#[inline(always)]
fn smap_overridden(cpu: &CpuState, kind: AccessKind) -> bool {
    kind != AccessKind::Fetch && cpu.cr4 & cr4::SMAP != 0 && cpu.flags.test(crate::flags::AC)
}

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
            tlb: TlbTable::new_boxed(),
            backing,
            flushes: 0,
            walks: 0,
            epoch: 0,
            flush_log: FlushLog::default(),
            filled: [Vec::with_capacity(FILLED_MAX), Vec::new()],
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

    /// Entries holding a translation, over all the TLB sets (per access
    /// kind and privilege); the inspector's view, a scan of every entry.
    pub fn entries_in_use(&self) -> usize {
        self.tlb
            .sets
            .iter()
            .map(|set| {
                set.iter()
                    .enumerate()
                    .filter(|(i, e)| e.tag != empty_tag(*i))
                    .count()
            })
            .sum()
    }

    /// The table (TLB and translator frame) for translated code.
    pub(crate) fn table_ptr(&mut self) -> *mut TlbTable {
        &mut *self.tlb
    }

    /// The translator's frame.
    pub(crate) fn frame(&mut self) -> &mut crate::jit::frame::Frame {
        &mut self.tlb.frame
    }

    /// The flush log and the translator's frame, together.
    pub(crate) fn log_and_frame(&mut self) -> (&FlushLog, &mut crate::jit::frame::Frame) {
        (&self.flush_log, &mut self.tlb.frame)
    }

    /// The physical page of the fetch translation of `lin` at privilege
    /// `user`, and whether it is global (survives CR3 writes), if the TLB
    /// has it.
    pub(crate) fn fetch_entry(&self, lin: u64, user: bool) -> Option<(u64, bool)> {
        let idx = ((lin >> 12) as usize) & (TLB_ENTRIES - 1);
        let e = &self.tlb.sets[AccessKind::Fetch as usize * 2 + usize::from(user)][idx];
        (e.tag == lin & PAGE_MASK).then_some((e.phys & PAGE_MASK, e.phys & GLOBAL != 0))
    }

    /// Drops every entry.
    pub fn flush_all(&mut self) {
        if self.filled[0].len() >= FILLED_MAX || self.filled[1].len() >= FILLED_MAX {
            for set in self.tlb.sets.iter_mut() {
                for (i, e) in set.iter_mut().enumerate() {
                    *e = empty(i);
                }
            }
        } else {
            for &f in self.filled.iter().flatten() {
                let (set, i) = (usize::from(f) >> 10, usize::from(f) & (TLB_ENTRIES - 1));
                self.tlb.sets[set][i] = empty(i);
            }
        }
        self.filled[0].clear();
        self.filled[1].clear();
        self.flushes += 1;
        self.epoch = self.epoch.wrapping_add(1);
        self.flush_log.full += 1;
    }

    /// Drops every entry except global ones (a CR3 write with CR4.PGE).
    pub fn flush_non_global(&mut self) {
        if self.filled[0].len() >= FILLED_MAX {
            // Scan everything, and list the global entries kept again.
            self.filled[1].clear();
            for (s, set) in self.tlb.sets.iter_mut().enumerate() {
                for (i, e) in set.iter_mut().enumerate() {
                    if e.phys & GLOBAL == 0 {
                        *e = empty(i);
                    } else if e.tag != empty_tag(i) && self.filled[1].len() < FILLED_MAX {
                        self.filled[1].push((s << 10 | i) as u16);
                    }
                }
            }
        } else {
            for &f in &self.filled[0] {
                let (set, i) = (usize::from(f) >> 10, usize::from(f) & (TLB_ENTRIES - 1));
                let e = &mut self.tlb.sets[set][i];
                if e.phys & GLOBAL == 0 {
                    *e = empty(i);
                }
            }
        }
        self.filled[0].clear();
        self.flushes += 1;
        self.epoch = self.epoch.wrapping_add(1);
        self.flush_log.non_global += 1;
    }

    /// Drops the entries for the page containing `lin` (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        let page = lin & PAGE_MASK;
        let idx = ((lin >> 12) as usize) & (TLB_ENTRIES - 1);
        self.epoch = self.epoch.wrapping_add(1);
        self.flush_log.page(page);
        for set in self.tlb.sets.iter_mut() {
            if set[idx].tag == page || set[idx].tag == page ^ MMIO_TAG {
                set[idx] = empty(idx);
            }
        }
    }

    /// Translates `lin` for an access of `kind` at `privilege`. `code` is
    /// consulted so that pages holding decoded code never get a write entry
    /// (their stores must invalidate the code cache).
    #[inline]
    pub fn translate(
        &mut self,
        cpu: &mut CpuState,
        code: &CodePages,
        lin: u64,
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<Translation, Fault> {
        let page = lin & PAGE_MASK;
        let set = set_for(cpu, kind, privilege);
        let idx = ((lin >> 12) as usize) & (TLB_ENTRIES - 1);
        let e = &self.tlb.sets[set][idx];
        let offset = lin & 0xfff;
        if e.tag == page {
            return Ok(Translation {
                phys: (e.phys & PAGE_MASK) | offset,
                // SAFETY: `host` is the start of a mapped 4 KiB page (RAM
                // entries always have one).
                host: Some(unsafe { e.host.add(offset as usize) }),
            });
        }
        if e.tag == page ^ MMIO_TAG {
            return Ok(Translation {
                phys: (e.phys & PAGE_MASK) | offset,
                host: None,
            });
        }
        self.translate_slow(cpu, code, lin, kind, privilege, set, idx)
    }

    /// The host address (and the guest-physical address) of `size` bytes
    /// at `lin` if they lie in one RAM page that has a TLB entry for `kind`
    /// at privilege `user`; `None` sends the access down the full path
    /// ([`Mmu::translate`]: a TLB miss, MMIO, or a page-crossing access).
    /// This is the one check a load or store of the interpreter's fast
    /// handlers makes inline. It never looks in [`AC_SETS`]: what the
    /// supervisor sets hold, every explicit supervisor access may reach.
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
        let idx = ((lin >> 12) as usize) & (TLB_ENTRIES - 1);
        let e = &self.tlb.sets[kind as usize * 2 + usize::from(user)][idx];
        if e.tag != lin & PAGE_MASK {
            return None;
        }
        // SAFETY: a RAM entry: `host` is the start of a mapped 4 KiB page
        // and `offset` is inside it.
        Some((
            unsafe { e.host.add(offset as usize) },
            (e.phys & PAGE_MASK) | offset,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn translate_slow(
        &mut self,
        cpu: &mut CpuState,
        code: &CodePages,
        lin: u64,
        kind: AccessKind,
        privilege: Privilege,
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
            self.walk(cpu, lin, kind, privilege)
                .map_err(|WalkFault(code)| {
                    let mut code = code;
                    if kind == AccessKind::Write {
                        code |= pf::WRITE;
                    }
                    if privilege.is_user() {
                        code |= pf::USER;
                    }
                    // I/D is reported with SMEP or with NX (SDM Vol. 3A §4.7).
                    if kind == AccessKind::Fetch
                        && (cpu.efer & efer::NXE != 0 || cpu.cr4 & cr4::SMEP != 0)
                    {
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
            let page = lin & PAGE_MASK;
            let old = &self.tlb.sets[set][idx];
            let list = &mut self.filled[usize::from(global)];
            let listed = old.tag != empty_tag(idx) && (old.phys & GLOBAL != 0) == global;
            if !listed && list.len() < FILLED_MAX {
                list.push((set << 10 | idx) as u16);
            }
            self.tlb.sets[set][idx] = TlbEntry {
                tag: if host_page.is_null() {
                    page ^ MMIO_TAG
                } else {
                    page
                },
                host: host_page,
                phys: phys_page | if global { GLOBAL } else { 0 },
                code: if kind == AccessKind::Write {
                    code.word(phys_page)
                } else {
                    std::ptr::null()
                },
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
}
