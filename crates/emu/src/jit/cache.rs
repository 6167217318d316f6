//! The code cache: where one vCPU's translated code lives, bounded,
//! flushed as a whole when full, and never writable and executable
//! through the same mapping (W^X).
//!
//! ## W^X and patching
//! The cache is one shared anonymous memory object mapped twice: once
//! read+write (the only view the translator writes through) and once
//! read+execute (the only view the CPU executes from), at unrelated
//! addresses. No page is ever mapped writable and executable at once, so a
//! stray write through a guest-controlled pointer cannot land in code that
//! runs, and no `mprotect` round trip is needed to add a translation or to
//! patch a chained jump (which happens tens of thousands of times during a
//! Linux boot: flipping protections would cost a system call and a TLB
//! shootdown of the other vCPU threads each time). Patching a direct jump
//! writes its 4-byte rel32 through the writable view; x86 keeps
//! instruction fetch coherent with stores (SDM Vol. 3A §8.1.3, "Handling
//! self- and cross-modifying code"), and only the owning vCPU's thread
//! executes this cache, so the next jump through the patched bytes sees
//! the new target.
//!
//! The second view is made with `mremap(old_size = 0)` of the shared
//! mapping, so only `mmap`, `mremap`, `mprotect` and `munmap` are used:
//! calls the VMM's seccomp allow-list already has.
//!
//! ## Bound and flush
//! Space is handed out by a bump pointer. When a translation does not fit,
//! the whole cache is flushed: every translation is forgotten (its
//! [`CodeCache::generation`] ends), and the shared glue at the start is
//! kept. Flushing only happens between runs of translated code.

use std::io;

/// The default size of one vCPU's code cache.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
/// The smallest cache accepted (the glue plus a few blocks).
pub const MIN_CACHE_BYTES: usize = 64 << 10;

/// One vCPU's code cache.
pub struct CodeCache {
    rw: *mut u8,
    rx: *mut u8,
    size: usize,
    used: usize,
    /// Where the space for translations starts (after the shared glue).
    glue_end: usize,
    /// Bumped by every flush; a translation made in another generation is
    /// gone. Starts at 1 (0 means "never translated").
    pub generation: u32,
    /// Flushes so far.
    pub flushes: u64,
}

// SAFETY: the mappings are owned by this value and only used by the thread
// that owns it (the vCPU's); moving it to another thread moves that
// ownership.
unsafe impl Send for CodeCache {}

impl std::fmt::Debug for CodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeCache")
            .field("size", &self.size)
            .field("used", &self.used)
            .field("generation", &self.generation)
            .finish()
    }
}

impl CodeCache {
    /// Maps a cache of `size` bytes (rounded up to pages, at least
    /// [`MIN_CACHE_BYTES`]).
    pub fn new(size: usize) -> io::Result<Self> {
        let size = size.max(MIN_CACHE_BYTES).next_multiple_of(4096);
        // SAFETY: a fresh anonymous shared mapping; no existing memory is
        // affected.
        let rw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if rw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `rw` is the shared mapping just made; with old_size 0,
        // mremap makes a second mapping of the same pages and leaves the
        // first one in place.
        let rx = unsafe { libc::mremap(rw, 0, size, libc::MREMAP_MAYMOVE) };
        if rx == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping the mapping made above.
            unsafe { libc::munmap(rw, size) };
            return Err(e);
        }
        // SAFETY: `rx` is our second view; make it read+execute only.
        if unsafe { libc::mprotect(rx, size, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: unmapping both views made above.
            unsafe {
                libc::munmap(rx, size);
                libc::munmap(rw, size);
            }
            return Err(e);
        }
        Ok(CodeCache {
            rw: rw.cast(),
            rx: rx.cast(),
            size,
            used: 0,
            glue_end: 0,
            generation: 1,
            flushes: 0,
        })
    }

    /// The cache's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Bytes in use (glue included).
    pub fn used(&self) -> usize {
        self.used
    }

    /// The executable address of offset `off`.
    pub fn addr(&self, off: usize) -> u64 {
        self.rx as u64 + off as u64
    }

    /// The offset of executable address `addr`, if it is in the cache.
    pub fn offset_of(&self, addr: u64) -> Option<usize> {
        let off = addr.checked_sub(self.rx as u64)?;
        (off < self.size as u64).then_some(off as usize)
    }

    /// The address the next allocation will start at.
    pub fn next_addr(&self) -> u64 {
        self.addr(self.used)
    }

    /// Bytes left.
    pub fn free(&self) -> usize {
        self.size - self.used
    }

    /// Copies `code` (emitted for [`CodeCache::next_addr`]) into the
    /// cache; returns its offset, or `None` if it does not fit.
    pub fn push(&mut self, code: &[u8]) -> Option<usize> {
        if code.len() > self.free() {
            return None;
        }
        let off = self.used;
        // SAFETY: `off + code.len() <= size`: inside the writable view,
        // which nothing else references.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), self.rw.add(off), code.len()) };
        // Keep the next block 16-byte aligned (branch targets).
        self.used = (off + code.len()).next_multiple_of(16).min(self.size);
        Some(off)
    }

    /// Marks everything pushed so far as the shared glue, kept by flushes.
    pub fn seal_glue(&mut self) {
        self.glue_end = self.used;
    }

    /// Forgets every translation (the glue stays).
    pub fn flush(&mut self) {
        self.used = self.glue_end;
        self.generation = self.generation.wrapping_add(1).max(1);
        self.flushes += 1;
    }

    /// Points the `jmp rel32` whose rel32 field is at offset `field` to
    /// offset `target`. Both must be inside the cache (checked).
    pub fn patch_rel32(&mut self, field: usize, target: usize) {
        if field + 4 > self.used || target >= self.size {
            return;
        }
        let rel = target as i64 - (field as i64 + 4);
        let bytes = (rel as i32).to_le_bytes();
        // SAFETY: `field + 4 <= used <= size`, inside the writable view.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.rw.add(field), 4) };
    }
}

impl CodeCache {
    /// Overwrites the code at offset `at` with `jmp rel32` to offset
    /// `target` (redirecting a superseded translation's entry). `at` must
    /// be the start of an instruction at least 5 bytes long that nothing is
    /// executing (checked: inside the used part).
    pub fn redirect(&mut self, at: usize, target: usize) {
        if at + 5 > self.used || target >= self.size {
            return;
        }
        let rel = target as i64 - (at as i64 + 5);
        let mut jmp = [0xe9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&(rel as i32).to_le_bytes());
        // SAFETY: `at + 5 <= used <= size`, inside the writable view.
        unsafe { std::ptr::copy_nonoverlapping(jmp.as_ptr(), self.rw.add(at), 5) };
    }
}

impl Drop for CodeCache {
    fn drop(&mut self) {
        // SAFETY: both views were mapped by `new` with this size and are
        // not used after this.
        unsafe {
            libc::munmap(self.rx.cast(), self.size);
            libc::munmap(self.rw.cast(), self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_written_through_one_view_runs_from_the_other() {
        let mut c = CodeCache::new(0).unwrap();
        // mov eax, 42; ret
        let off = c.push(&[0xb8, 42, 0, 0, 0, 0xc3]).unwrap();
        // SAFETY: the bytes above are a complete function returning 42.
        let f: extern "sysv64" fn() -> u32 = unsafe { std::mem::transmute(c.addr(off)) };
        assert_eq!(f(), 42);
        // Patch the immediate through the writable view.
        let rel_field = c.push(&[0xe9, 0, 0, 0, 0]).unwrap() + 1;
        c.patch_rel32(rel_field, off);
        // SAFETY: the jump now leads to the function above.
        let g: extern "sysv64" fn() -> u32 = unsafe { std::mem::transmute(c.addr(rel_field - 1)) };
        assert_eq!(g(), 42);
    }

    #[test]
    fn a_full_cache_refuses_code_and_a_flush_keeps_the_glue() {
        let mut c = CodeCache::new(MIN_CACHE_BYTES).unwrap();
        c.push(&[0xc3; 100]).unwrap();
        c.seal_glue();
        let gen = c.generation;
        while c.push(&[0xcc; 4000]).is_some() {}
        assert!(c.push(&[0xcc; 4000]).is_none());
        c.flush();
        assert_ne!(c.generation, gen);
        assert_eq!(c.used(), 112);
        assert!(c.push(&[0xcc; 4000]).is_some());
    }

    #[test]
    fn the_executable_view_is_not_writable() {
        let c = CodeCache::new(0).unwrap();
        // /proc/self/maps lists the executable view as r-xs.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{:x}-", c.addr(0));
        let line = maps.lines().find(|l| l.starts_with(&start)).unwrap();
        assert!(line.contains(" r-xs "), "{line}");
        assert!(!maps.lines().any(|l| l.contains("rwx")), "no rwx mapping");
    }
}
