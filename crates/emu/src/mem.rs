//! Guest memory as instructions see it: segmentation, then the MMU, then
//! host RAM or the MMIO bus.
//!
//! Segmentation follows SDM Vol. 3A §3.4 and §5.3: in 64-bit mode only FS
//! and GS have a base and addresses must be canonical; elsewhere every
//! access is checked against the segment's limit (expand-up or
//! expand-down) and type. Faults are #GP(0), or #SS(0) for the stack
//! segment. Accesses that cross a page are split after both pages are
//! translated, so a fault on the second page leaves memory untouched.

use std::sync::Mutex;

use alcazar_core::engine::ExitKind;
use alcazar_core::IoSpace;

use crate::fault::Fault;
use crate::mmu::{AccessKind, Privilege, Translation};
use crate::state::seg;
use crate::Cpu;

/// Serializes locked read-modify-writes that cannot use a host atomic
/// (split across pages, or on MMIO) — the "split lock" of real CPUs.
pub(crate) static SPLIT_LOCK: Mutex<()> = Mutex::new(());

/// Whether `addr` is canonical for 48-bit linear addresses.
#[inline]
pub fn canonical(addr: u64) -> bool {
    ((addr as i64) << 16 >> 16) as u64 == addr
}

fn seg_fault(seg_index: usize) -> Fault {
    if seg_index == seg::SS {
        Fault::StackFault(0)
    } else {
        Fault::GeneralProtection(0)
    }
}

impl Cpu {
    /// Whether accesses are made with user privilege (CPL 3).
    #[inline]
    pub fn user(&self) -> bool {
        self.s.cpl == 3
    }

    /// Applies segment `seg_index` to offset `off` for an access of `size`
    /// bytes; returns the linear address.
    #[inline]
    pub fn linear(
        &self,
        seg_index: usize,
        off: u64,
        size: u8,
        kind: AccessKind,
    ) -> Result<u64, Fault> {
        if self.s.long_mode() && self.s.seg[seg::CS].l {
            let base = if seg_index >= seg::FS {
                self.s.seg[seg_index].base
            } else {
                0
            };
            let lin = base.wrapping_add(off);
            return self.check_linear64(seg_index, lin, size);
        }
        let s = &self.s.seg[seg_index];
        if self.s.protected_mode() && !self.s.v86_mode() {
            self.check_segment_type(seg_index, kind)?;
        }
        let last = off.wrapping_add(u64::from(size) - 1);
        let expand_down = s.s && s.type_ & 0xc == 0x4;
        let ok = if expand_down {
            let upper = if s.db { 0xffff_ffff } else { 0xffff };
            off > u64::from(s.limit) && last <= upper && last >= off
        } else {
            last <= u64::from(s.limit) && last >= off
        };
        if !ok {
            return Err(seg_fault(seg_index));
        }
        let lin = s.base.wrapping_add(off) & 0xffff_ffff;
        if self.misaligned_for_ac(lin, size) {
            return Err(Fault::AlignmentCheck);
        }
        Ok(lin)
    }

    /// The checks of a 64-bit-mode data access at linear `lin`: a
    /// non-canonical start (#GP(0), or #SS(0) for the stack), then
    /// alignment (#AC), then — for the stack segment only — a non-canonical
    /// far end, whose #SS(0) wins over a page fault on the first part;
    /// other segments check the far end in the split-access path, after
    /// the first page (the order the differential tester observed on real
    /// CPUs).
    #[inline]
    pub fn check_linear64(&self, seg_index: usize, lin: u64, size: u8) -> Result<u64, Fault> {
        if !canonical(lin) {
            return Err(seg_fault(seg_index));
        }
        if self.misaligned_for_ac(lin, size) {
            return Err(Fault::AlignmentCheck);
        }
        let last = lin.wrapping_add(u64::from(size.max(1)) - 1);
        if seg_index == seg::SS && !canonical(last) {
            return Err(seg_fault(seg_index));
        }
        Ok(lin)
    }

    /// Whether an access of `size` bytes at `lin` must raise #AC: CPL 3,
    /// CR0.AM and RFLAGS.AC set, and the address not a multiple of the size
    /// (SDM Vol. 3A §6.15, "Interrupt 17").
    #[inline]
    pub fn misaligned_for_ac(&self, lin: u64, size: u8) -> bool {
        size > 1
            && lin & (u64::from(size) - 1) != 0
            && self.s.cpl == 3
            && self.s.cr0 & crate::state::cr0::AM != 0
            && self.s.flags.test(crate::flags::AC)
    }

    /// In 64-bit mode, the second part of a page-crossing access must be
    /// canonical too (#GP(0) after the first page translated).
    #[inline]
    fn check_second_part(&self, second: u64) -> Result<(), Fault> {
        if self.s.long_mode() && self.s.seg[seg::CS].l && !canonical(second) {
            return Err(Fault::GeneralProtection(0));
        }
        Ok(())
    }

    fn check_segment_type(&self, seg_index: usize, kind: AccessKind) -> Result<(), Fault> {
        let s = &self.s.seg[seg_index];
        if s.unusable || !s.present {
            return Err(seg_fault(seg_index));
        }
        let code = s.type_ & 0x8 != 0;
        let bad = match kind {
            AccessKind::Write => code || s.type_ & 0x2 == 0,
            AccessKind::Read => code && s.type_ & 0x2 == 0,
            AccessKind::Fetch => false,
        };
        if bad {
            Err(seg_fault(seg_index))
        } else {
            Ok(())
        }
    }

    /// Translates a linear address for an explicit access, with user
    /// privilege if `user`.
    #[inline]
    pub fn translate(
        &mut self,
        lin: u64,
        kind: AccessKind,
        user: bool,
    ) -> Result<Translation, Fault> {
        self.translate_as(lin, kind, Privilege::explicit(user))
    }

    /// Translates a linear address for an access at `privilege`.
    #[inline]
    pub fn translate_as(
        &mut self,
        lin: u64,
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<Translation, Fault> {
        self.mmu
            .translate(&mut self.s, &self.code, lin, kind, privilege)
    }

    /// Reads `size` bytes (1, 2, 4, 8) at `seg:off`.
    #[inline]
    pub fn read(&mut self, seg_index: usize, off: u64, size: u8) -> Result<u64, Fault> {
        let lin = self.linear(seg_index, off, size, AccessKind::Read)?;
        let user = self.user();
        self.read_lin(lin, size, user)
    }

    /// Writes `size` bytes of `value` at `seg:off`.
    #[inline]
    pub fn write(&mut self, seg_index: usize, off: u64, size: u8, value: u64) -> Result<(), Fault> {
        let lin = self.linear(seg_index, off, size, AccessKind::Write)?;
        let user = self.user();
        self.write_lin(lin, size, value, user)
    }

    /// Reads at a linear address for an explicit access; `user` selects
    /// the privilege of the access.
    #[inline]
    pub fn read_lin(&mut self, lin: u64, size: u8, user: bool) -> Result<u64, Fault> {
        self.read_lin_as(lin, size, Privilege::explicit(user))
    }

    /// Writes at a linear address for an explicit access.
    #[inline]
    pub fn write_lin(&mut self, lin: u64, size: u8, value: u64, user: bool) -> Result<(), Fault> {
        self.write_lin_as(lin, size, value, Privilege::explicit(user))
    }

    /// Reads a system data structure (a descriptor table, the TSS) at a
    /// linear address: an implicit supervisor-mode access at any CPL (SDM
    /// Vol. 3A §4.6.1).
    #[inline]
    pub fn read_system(&mut self, lin: u64, size: u8) -> Result<u64, Fault> {
        self.read_lin_as(lin, size, Privilege::Implicit)
    }

    /// Writes a system data structure (a descriptor's accessed or busy
    /// bit): an implicit supervisor-mode access.
    #[inline]
    pub fn write_system(&mut self, lin: u64, size: u8, value: u64) -> Result<(), Fault> {
        self.write_lin_as(lin, size, value, Privilege::Implicit)
    }

    /// Reads at a linear address with `privilege`.
    #[inline]
    pub fn read_lin_as(&mut self, lin: u64, size: u8, privilege: Privilege) -> Result<u64, Fault> {
        if (lin & 0xfff) + u64::from(size) > 0x1000 {
            return self.read_split(lin, size, privilege);
        }
        let t = self.translate_as(lin, AccessKind::Read, privilege)?;
        Ok(self.read_phys_at(t, size))
    }

    /// Writes at a linear address with `privilege`.
    #[inline]
    pub fn write_lin_as(
        &mut self,
        lin: u64,
        size: u8,
        value: u64,
        privilege: Privilege,
    ) -> Result<(), Fault> {
        if (lin & 0xfff) + u64::from(size) > 0x1000 {
            return self.write_split(lin, size, value, privilege);
        }
        let t = self.translate_as(lin, AccessKind::Write, privilege)?;
        self.write_phys_at(t, size, value);
        Ok(())
    }

    fn read_split(&mut self, lin: u64, size: u8, privilege: Privilege) -> Result<u64, Fault> {
        let first = 0x1000 - (lin & 0xfff);
        let t0 = self.translate_as(lin, AccessKind::Read, privilege)?;
        self.check_second_part(lin.wrapping_add(first))?;
        let t1 = self.translate_as(lin.wrapping_add(first), AccessKind::Read, privilege)?;
        let mut v = 0u64;
        for i in 0..u64::from(size) {
            let t = if i < first {
                offset(t0, i)
            } else {
                offset(t1, i - first)
            };
            v |= self.read_phys_at(t, 1) << (8 * i);
        }
        Ok(v)
    }

    fn write_split(
        &mut self,
        lin: u64,
        size: u8,
        value: u64,
        privilege: Privilege,
    ) -> Result<(), Fault> {
        let first = 0x1000 - (lin & 0xfff);
        let t0 = self.translate_as(lin, AccessKind::Write, privilege)?;
        self.check_second_part(lin.wrapping_add(first))?;
        let t1 = self.translate_as(lin.wrapping_add(first), AccessKind::Write, privilege)?;
        for i in 0..u64::from(size) {
            let t = if i < first {
                offset(t0, i)
            } else {
                offset(t1, i - first)
            };
            self.write_phys_at(t, 1, value >> (8 * i));
        }
        Ok(())
    }

    /// Reads `size` bytes at a translated address: RAM through the host
    /// pointer, anything else through the MMIO bus.
    #[inline]
    pub fn read_phys_at(&mut self, t: Translation, size: u8) -> u64 {
        match t.host {
            // SAFETY: `host` points into a mapped guest page and the access
            // does not cross the page (callers split crossing accesses).
            Some(p) => unsafe {
                match size {
                    1 => u64::from(p.read()),
                    2 => u64::from(p.cast::<u16>().read_unaligned()),
                    4 => u64::from(p.cast::<u32>().read_unaligned()),
                    _ => p.cast::<u64>().read_unaligned(),
                }
            },
            None => self.mmio_read(t.phys, size),
        }
    }

    /// Writes `size` bytes at a translated address, invalidating decoded
    /// code on that page.
    #[inline]
    pub fn write_phys_at(&mut self, t: Translation, size: u8, value: u64) {
        if self.code.note_write(t.phys) {
            self.end_block = true;
        }
        match t.host {
            // SAFETY: as in `read_phys_at`; writable pages only (read-only
            // ROM never gets a host pointer for writes).
            Some(p) => unsafe {
                match size {
                    1 => p.write(value as u8),
                    2 => p.cast::<u16>().write_unaligned(value as u16),
                    4 => p.cast::<u32>().write_unaligned(value as u32),
                    _ => p.cast::<u64>().write_unaligned(value),
                }
            },
            None => self.mmio_write(t.phys, size, value),
        }
    }

    fn mmio_read(&mut self, phys: u64, size: u8) -> u64 {
        self.machine.vcpu_stats(self.id).count(ExitKind::Mmio);
        if phys & !0xfff == self.mmu.apic_page {
            if let Some(apic) = &self.apic {
                return apic.mmio_read(phys & 0xfff, size);
            }
        }
        let mut buf = [0u8; 8];
        let n = usize::from(size.min(8));
        self.machine.bus.read(IoSpace::Mmio, phys, &mut buf[..n]);
        u64::from_le_bytes(buf)
    }

    fn mmio_write(&mut self, phys: u64, size: u8, value: u64) {
        self.machine.vcpu_stats(self.id).count(ExitKind::Mmio);
        if phys & !0xfff == self.mmu.apic_page {
            if let Some(apic) = self.apic.clone() {
                // An EOI or TPR write that unmasks an interrupt sets the
                // attention flag: the run loop looks after this block.
                apic.mmio_write(phys & 0xfff, size, value);
                return;
            }
        }
        let n = usize::from(size.min(8));
        self.machine
            .bus
            .write(IoSpace::Mmio, phys, &value.to_le_bytes()[..n]);
    }

    /// An atomic read-modify-write of `size` bytes at `seg:off` (LOCK'd
    /// instructions, XCHG with memory): `f` maps the old value to the new
    /// one; returns the old value. Aligned RAM accesses use host atomics,
    /// so the guarantee holds even with vCPUs on several host threads;
    /// split or MMIO accesses fall back to a VM-wide lock.
    pub fn locked_rmw(
        &mut self,
        seg_index: usize,
        off: u64,
        size: u8,
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<u64, Fault> {
        let lin = self.linear(seg_index, off, size, AccessKind::Write)?;
        let user = self.user();
        let crosses = (lin & 0xfff) + u64::from(size) > 0x1000;
        let aligned = lin % u64::from(size) == 0;
        if !crosses && aligned {
            let t = self.translate(lin, AccessKind::Write, user)?;
            if let Some(p) = t.host {
                if self.code.note_write(t.phys) {
                    self.end_block = true;
                }
                return Ok(atomic_rmw(p, size, f));
            }
        }
        // Slow path: translate for write first so faults come before any
        // change, then read-modify-write under the VM-wide split lock.
        let guard = SPLIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // A locked access is a write access from the start: a fault on it
        // reports W=1 (SDM Vol. 3A §4.7), so translate both ends for
        // writing before reading anything.
        self.translate(lin, AccessKind::Write, user)?;
        if crosses {
            let second = (lin | 0xfff).wrapping_add(1);
            self.check_second_part(second)?;
            self.translate(second, AccessKind::Write, user)?;
        }
        let old = self.read_lin(lin, size, user)?;
        self.write_lin(lin, size, f(old), user)?;
        drop(guard);
        Ok(old)
    }
}

fn offset(t: Translation, by: u64) -> Translation {
    Translation {
        phys: t.phys + by,
        // SAFETY: callers only offset within the same page.
        host: t.host.map(|p| unsafe { p.add(by as usize) }),
    }
}

fn atomic_rmw(p: *mut u8, size: u8, f: &mut dyn FnMut(u64) -> u64) -> u64 {
    use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
    macro_rules! cas_loop {
        ($atomic:ty, $t:ty) => {{
            // SAFETY: `p` is aligned for the type (checked by the caller),
            // inside one mapped guest page, and only accessed atomically
            // by other vCPUs' locked operations.
            let a = unsafe { <$atomic>::from_ptr(p.cast::<$t>()) };
            let mut cur = a.load(SeqCst);
            loop {
                let new = f(u64::from(cur)) as $t;
                match a.compare_exchange_weak(cur, new, SeqCst, SeqCst) {
                    Ok(old) => break u64::from(old),
                    Err(actual) => cur = actual,
                }
            }
        }};
    }
    match size {
        1 => cas_loop!(AtomicU8, u8),
        2 => cas_loop!(AtomicU16, u16),
        4 => cas_loop!(AtomicU32, u32),
        _ => cas_loop!(AtomicU64, u64),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn canonical_addresses_sign_extend_bit_47() {
        assert!(canonical(0x0000_7fff_ffff_ffff));
        assert!(canonical(0xffff_8000_0000_0000));
        assert!(!canonical(0x0000_8000_0000_0000));
        assert!(!canonical(0xfff0_0000_0000_0000));
    }
}
