//! The page walk (Intel SDM Vol. 3A chapter 4 "Paging"): from a linear
//! address to a physical page through the paging structures in guest
//! memory, for the three paging modes the CPU implements:
//!
//! * 32-bit paging (§4.3), with 4 MiB pages under CR4.PSE (and PSE-36);
//! * PAE paging (§4.4): the four PDPTEs, then 2 MiB or 4 KiB pages;
//! * 4-level paging (§4.5), in IA-32e mode: 1 GiB, 2 MiB or 4 KiB pages.
//!
//! Permissions accumulate down the walk (§4.6: U/S, R/W with CR0.WP, NX
//! with EFER.NXE); reserved bits are checked (a set one is a #PF with
//! RSVD in the error code, §4.7); accessed and dirty bits are set
//! atomically (§4.8), since another vCPU may walk the same tables. With
//! CR4.SMEP a supervisor-mode fetch from a user-mode page is refused, and
//! with CR4.SMAP a supervisor-mode data access to one unless it is explicit
//! and RFLAGS.AC = 1 (§4.6.1). Protection keys are not implemented (and
//! not advertised); PCIDs do not reach the walk (CR3 bits 11:0 are not
//! address bits in IA-32e mode, see [`crate::modes`]).
//!
//! The software TLB in front of the walk is in [`super::Mmu`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{smap_overridden, AccessKind, Mmu, Privilege, WalkFault, PAGE_MASK, PHYS_MASK};
use crate::fault::pf;
use crate::state::{cr0, cr4, efer, CpuState};

impl Mmu {
    /// Reads a paging-structure entry of `size` bytes at physical `addr`.
    fn entry_ptr(&self, addr: u64) -> Option<*mut u8> {
        self.host_of(addr).map(|(p, _)| p)
    }

    /// Walks the paging structures for `lin`; returns the physical page
    /// and whether it is global, setting accessed/dirty bits.
    pub(super) fn walk(
        &mut self,
        cpu: &CpuState,
        lin: u64,
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(u64, bool), WalkFault> {
        if cpu.cr4 & cr4::PAE == 0 {
            return self.walk32(cpu, lin, kind, privilege);
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
                perms.check(cpu, kind, privilege)?;
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
        privilege: Privilege,
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
            perms.check(cpu, kind, privilege)?;
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
        perms.check(cpu, kind, privilege)?;
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

    /// Whether `privilege` may make an access of `kind` to the page
    /// (SDM §4.6.1): U/S for user-mode accesses, SMEP and SMAP for
    /// supervisor-mode accesses to user-mode pages, then R/W (with CR0.WP
    /// for supervisor writes) and XD.
    fn check(
        &self,
        cpu: &CpuState,
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<(), WalkFault> {
        let user = privilege.is_user();
        let supervisor_to_user_page = !user && self.user;
        let denied = match kind {
            _ if user && !self.user => true,
            AccessKind::Fetch if supervisor_to_user_page && cpu.cr4 & cr4::SMEP != 0 => true,
            AccessKind::Read | AccessKind::Write
                if supervisor_to_user_page
                    && cpu.cr4 & cr4::SMAP != 0
                    && !(privilege == Privilege::Supervisor && smap_overridden(cpu, kind)) =>
            {
                true
            }
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
