//! Tier 1 of the emu engine: a same-ISA binary translator.
//!
//! Guest x86-64 code runs on an x86-64 host, so most guest instructions
//! can run as themselves. The interpreter (tier 0, [`crate::exec`]) stays
//! the reference and runs cold code, interrupt shadows and the system and
//! rare instructions; a decoded block it has run [`JitConfig::threshold`]
//! times is translated to host code, which then runs instead of the
//! interpreter until something needs tier 0. [`EmuTier`] chooses
//! (`ALCAZAR_EMU_TIER=interp` in the environment keeps the interpreter
//! alone, for measuring).
//!
//! ## The shape of translated code
//! * Guest GPRs stay in host registers while translated code runs (twelve
//!   of them; four live in the frame: `regs.rs`). One register, R15,
//!   reaches the frame and the software TLB, which share an allocation
//!   ([`frame`], [`crate::mmu::TlbTable`]).
//! * Guest arithmetic flags are the host RFLAGS: instructions that compute
//!   them run natively; there is no lazy-flags record. The flags are saved
//!   to the frame (`LAHF`/`SETO`) before glue that clobbers them, and
//!   restored (`SAHF`) only where an instruction needs them, which a
//!   per-flag liveness pass decides (`flags.rs`). At block boundaries the
//!   frame's copy is the home, so blocks, the interpreter and exits agree
//!   without knowing about each other. The interpreter's lazy record is
//!   converted at tier transitions.
//! * Register instructions are re-encoded with iced-x86 with their
//!   registers renamed (`native.rs`), SSE/SSE2 moves and integer
//!   instructions included; memory operands, explicit and implicit (PUSH,
//!   POP, CALL, RET, FS/GS- and RIP-relative), become an inline probe of
//!   the existing TLB's entries, with the interpreter as the slow path
//!   (`memory.rs`); DIV/IDIV run behind a guard against #DE (`arith.rs`).
//! * Everything else runs in the interpreter through one helper ABI
//!   (`helpers.rs`): the instruction's own handler, with the state exactly
//!   as the interpreter would have it. Instructions that may change what
//!   translated code assumes (mode, CPL, paging, IF: the handlers declared
//!   [`crate::exec::LinkEffect::DropsLinks`]) end the translated run.
//! * Direct branches to the same page are chained by patching; other
//!   branches and returns go through a per-privilege lookup cache
//!   (`chain.rs`, `branch.rs`).
//! * Each block counts its instructions against a budget (exact retired
//!   instruction counts, and a bound on each run so stop requests are
//!   seen); branches that may close a loop (backward ones and lookups)
//!   also poll the vCPU's attention byte, so an interrupt gets into any
//!   loop of linked blocks. A block's entry checks that the code it came
//!   from is unchanged ([`crate::code::CodePages`] generations:
//!   self-modifying code, DMA, other vCPUs); stores check the code bit of
//!   the page they write.
//! * Faults are precise: every access that can fault is a probe whose
//!   slow path runs the whole instruction in the interpreter, with the
//!   registers and flags as of its start; the interpreter raises the fault
//!   with RIP at the instruction, exactly as tier 0 alone would.
//!
//! ## Decisions, and why (measured on Debian's cloud kernel booting to its
//! ready marker, busybox workloads and the kit benchmarks; 2 shared cores)
//! * **Flags home at block boundaries.** The frame, not RFLAGS: block
//!   entries can then run glue freely, and a precise slow path always
//!   finds the flags. The cost is a 5-instruction `LAHF`/`SETO` save at
//!   exits after a flag write.
//! * **The budget lives in XMM15** ([`frame::BUDGET_XMM`]), not in the
//!   frame: a memory counter chains every block to the previous one's
//!   store, and moving it to a register made the interpreter benchmark
//!   twice as fast. Polls moved from every block entry to loop-closing
//!   branches for the same reason.
//! * **Same-page chaining only; a lookup cache for the rest.** A patched
//!   jump to another page would have to be undone on TLB flushes; instead
//!   the lookup cache survives CR3 writes and INVLPGs by checking its code
//!   pages' mappings with a page walk (with page-table isolation a guest
//!   writes CR3 twice per system call). Two ways and a multiplicative hash:
//!   direct-mapped on low bits, 70% of lookups missed.
//! * **Found by physical address.** The run loop finds translations in the
//!   lookup cache, then by physical address (`Jit::latest`), and only
//!   then through the decoded-block cache, whose lookups were 10% of a
//!   boot (cache misses). A block decoded again after its code changed is
//!   translated again at once, and the old translation's entry redirected.
//! * **Native SSE** for moves and integer SIMD: glibc's string functions
//!   made 120 M helper calls in a shell + sort run; floating-point SSE and
//!   x87 stay in the interpreter (MXCSR and exceptions would need
//!   switching).
//! * **The code cache is one shared mapping seen twice**, writable and
//!   executable, never both ([`cache`]): no system call per translation or
//!   patch. Its default is 32 MiB per vCPU; a boot translates ~28 000
//!   blocks into ~21 MiB.
//!
//! Results (same machine, interleaved runs): boot to the ready marker
//! ~1.8 s (interpreter ~7 s, QEMU TCG `-M pc` 2.2-2.4 s); the kit
//! benchmarks 2.7 (sieve), 2.3-2.4 (memcpy) and 4.7-4.9 (interp) G
//! instructions/s against 0.16, 0.14 and 0.25 for the interpreter.
//!
//! ## Where translations live
//! Per vCPU, like the decoded-block cache: a bounded code cache
//! ([`cache`], flushed whole when full), whose translations are found
//! through the decoded [`crate::code::Block`] they came from ([`BlockJit`])
//! or by physical address. Translations are specialized for 64-bit mode
//! and for a `Mode` (user or supervisor TLB entries; SSE usable or not);
//! real, protected and compatibility mode, RFLAGS.TF and alignment
//! checking stay in the interpreter.
//!
//! ## Counters
//! [`JitStats`], per vCPU, shown by the inspector under `jit`: blocks
//! translated and refused, translation time, code-cache bytes and flushes,
//! instructions retired in translated code, entries, exits by reason
//! (attention, budget, stale code, a link to make, a lookup miss, an
//! interpreter exit), links made, lookup-cache fills, and the instructions
//! translated code left to the interpreter by mnemonic. Following a link
//! or hitting the lookup cache costs no counter (it would cost an
//! instruction on every branch): `instructions / entries` and the exits
//! tell how long translated code ran without the run loop.
//! `ALCAZAR_JIT_STATS=1` prints them when a vCPU goes away, and
//! `ALCAZAR_JIT_DUMP=1` prints every translation.
//!
//! ## Files
//! | concept | file |
//! | --- | --- |
//! | tiering policy, the run loop's entry into translated code, counters | `mod.rs` |
//! | the code cache, W^X, flushing | `cache.rs` |
//! | the frame and the tier-transition state | `frame.rs` |
//! | the host emitter | `emit.rs` |
//! | the register map | `regs.rs` |
//! | the trampoline, epilogue and helper thunk | `glue.rs` |
//! | planning and translating a block | `translate.rs` |
//! | branches, exits, slow paths and stubs | `branch.rs` |
//! | division behind its #DE guard | `arith.rs` |
//! | native instructions: selection and re-encoding | `native.rs` |
//! | memory accesses: addresses, TLB probes, the stack | `memory.rs` |
//! | flags: state tracking and liveness | `flags.rs` |
//! | linking and the lookup cache | `chain.rs` |
//! | the helper ABI into the interpreter | `helpers.rs` |
//! | tests: the hard cases, and differential runs against tier 0 | `tests/` |

mod arith;
mod branch;
pub mod cache;
mod chain;
pub mod emit;
mod flags;
pub mod frame;
mod glue;
mod helpers;
mod memory;
mod native;
mod regs;
#[cfg(test)]
mod tests;
mod translate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use iced_x86::{Encoder, InstructionInfoFactory, Mnemonic};

use self::cache::CodeCache;
use self::frame::{flags_to_image, image_to_flags, Exit, Frame};
use self::glue::Glue;
use crate::code::{Block, BuildKeyHasher};
use crate::fault::Fault;
use crate::flags::{AC, ARITH, IF, TF};
use crate::mmu::{AccessKind, Privilege};
use crate::state::{cr0, seg, CodeSize};
use crate::Cpu;

/// Which tier runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmuTier {
    /// The interpreter only.
    Interp,
    /// Hot blocks are translated to host code (x86-64 hosts).
    Jit,
}

impl EmuTier {
    /// Whether this host can run translated code: x86-64 with LAHF/SAHF
    /// in 64-bit mode (CPUID.80000001H:ECX.LAHF-SAHF).
    pub fn jit_supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: CPUID is available on every x86-64 CPU (the intrinsic
            // is `unsafe` in older Rust releases, safe in newer ones).
            #[allow(unused_unsafe)]
            let ext = unsafe { std::arch::x86_64::__cpuid(0x8000_0001) };
            ext.ecx & 1 != 0
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The default: [`EmuTier::Jit`] where supported, unless the
    /// environment variable `ALCAZAR_EMU_TIER` says `interp` (for
    /// measuring one tier against the other).
    pub fn host_default() -> EmuTier {
        match std::env::var("ALCAZAR_EMU_TIER").as_deref() {
            Ok("interp") => EmuTier::Interp,
            _ if Self::jit_supported() => EmuTier::Jit,
            _ => EmuTier::Interp,
        }
    }
}

/// Tunables of the translator.
#[derive(Clone, Copy, Debug)]
pub struct JitConfig {
    /// Runs of a block by the interpreter before it is translated.
    pub threshold: u32,
    /// The size of each vCPU's code cache in bytes.
    pub cache_bytes: usize,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            threshold: 16,
            cache_bytes: cache::DEFAULT_CACHE_BYTES,
        }
    }
}

/// A decoded block's translation state (used by its vCPU only; atomics
/// keep [`Block`] `Sync`).
#[derive(Debug, Default)]
pub struct BlockJit {
    heat: AtomicU32,
    /// The code-cache generation the translation is in (0: none).
    generation: AtomicU32,
    /// Cache offsets of the checked and the chained entry.
    entry: AtomicU32,
    chained: AtomicU32,
    /// The [`Mode`] it was translated for ([`Mode::bits`]).
    mode: AtomicU8,
    /// The generation in which translating it failed.
    failed: AtomicU32,
}

/// The translator's counters (the inspector shows them).
#[derive(Clone, Debug, Default)]
pub struct JitStats {
    /// Blocks translated.
    pub blocks_translated: u64,
    /// Blocks that could not be translated (they stay interpreted).
    pub blocks_refused: u64,
    /// Time spent translating, in nanoseconds.
    pub translation_ns: u64,
    /// Instructions retired while in translated code (helpers included).
    pub instructions: u64,
    /// Entries into translated code from the run loop.
    pub entries: u64,
    /// Exits from translated code, by [`Exit`] reason (index = reason).
    pub exits: [u64; 7],
    /// Direct branches linked to their target (patched).
    pub chain_links: u64,
    /// Entries added to the indirect-branch lookup cache.
    pub lookup_fills: u64,
    /// Code-cache flushes.
    pub cache_flushes: u64,
    /// Instructions retired by the vCPU in all, both tiers (as of the last
    /// exit from translated code).
    pub all_instructions: u64,
    /// Instructions run by the interpreter for translated code, by
    /// mnemonic (iced-x86's `Mnemonic as usize`).
    pub fallbacks: Vec<u64>,
}

impl JitStats {
    pub(crate) fn count_fallback(&mut self, m: Mnemonic) {
        let i = m as usize;
        if self.fallbacks.len() <= i {
            self.fallbacks.resize(i + 1, 0);
        }
        self.fallbacks[i] += 1;
    }

    /// The mnemonics the interpreter ran most for translated code, most
    /// first.
    pub fn top_fallbacks(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(usize, u64)> = self
            .fallbacks
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, c)| c > 0)
            .collect();
        v.sort_by_key(|&(_, c)| std::cmp::Reverse(c));
        v.into_iter()
            .take(n)
            .map(|(i, c)| (mnemonic_name(i), c))
            .collect()
    }
}

fn mnemonic_name(i: usize) -> String {
    Mnemonic::values()
        .nth(i)
        .map_or_else(|| format!("#{i}"), |m| format!("{m:?}").to_lowercase())
}

/// One vCPU's translator.
pub struct Jit {
    tier: EmuTier,
    /// Tunables (set before the first translation).
    pub config: JitConfig,
    code: Option<(CodeCache, Glue)>,
    /// The code cache could not be made: stay with the interpreter.
    broken: bool,
    /// The blocks whose translations are in the cache (their decoded
    /// instructions are referenced from the code).
    keep: Vec<Arc<Block>>,
    /// The latest translation (its checked entry's offset) of each block
    /// start: its physical address with the [`Mode`] in bits 62-63, and
    /// its RIP. A translation holds virtual addresses (branch targets,
    /// return addresses, RIP-relative operands), so the same physical
    /// code mapped at another address (a shared library in another
    /// process) is another entry. A block decoded again after its code
    /// changed is translated again at once, and the superseded
    /// translation's entry is redirected to the new one (links and
    /// lookups may still lead there).
    latest: HashMap<(u64, u64), u32, BuildKeyHasher>,
    /// The RIP of the last stale exit: the next entry there must go
    /// through the block cache (which decodes the new code), not
    /// [`Jit::latest`].
    stale_rip: Option<u64>,
    /// The current run's mode allows SSE: the guest's XMM registers are in
    /// the frame.
    run_sse: bool,
    jumps: chain::JumpCache,
    /// A fault raised by the interpreter for translated code, to deliver.
    pub(crate) fault: Option<Fault>,
    /// Counters.
    pub stats: JitStats,
    enc: Encoder,
    info: InstructionInfoFactory,
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("tier", &self.tier)
            .field("translated", &self.stats.blocks_translated)
            .finish_non_exhaustive()
    }
}

impl Default for Jit {
    fn default() -> Self {
        Jit::new(EmuTier::host_default())
    }
}

/// Instructions a run of translated code may retire before it returns to
/// the run loop (which then looks at stop requests and timers).
const BUDGET: i64 = 1 << 16;
/// Exits to link or look up a branch target handled without returning to
/// the run loop.
const MAX_ROUNDS: usize = 64;

/// What a translation is specialized for, besides 64-bit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode {
    /// CPL 3: memory accesses use the user TLB entries.
    pub user: bool,
    /// SSE instructions may run (CR4.OSFXSR = 1, CR0.EM = CR0.TS = 0):
    /// the translation runs some of them natively ([`native`]).
    pub sse: bool,
    /// VEX instructions may run too (CR4.OSXSAVE = 1 and XCR0 enables
    /// the SSE and AVX state): some run natively.
    pub avx: bool,
}

impl Mode {
    /// The mode as three bits.
    pub fn bits(self) -> u8 {
        u8::from(self.user) | u8::from(self.sse) << 1 | u8::from(self.avx) << 2
    }
}

/// A translation's entry points (host addresses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    checked: u64,
}

impl Jit {
    /// A translator for `tier` (an unsupported [`EmuTier::Jit`] means
    /// [`EmuTier::Interp`]).
    pub fn new(tier: EmuTier) -> Self {
        let tier = if EmuTier::jit_supported() {
            tier
        } else {
            EmuTier::Interp
        };
        Jit {
            tier,
            config: JitConfig::default(),
            code: None,
            broken: false,
            keep: Vec::new(),
            latest: HashMap::default(),
            stale_rip: None,
            run_sse: false,
            jumps: chain::JumpCache::default(),
            fault: None,
            stats: JitStats::default(),
            enc: Encoder::new(64),
            info: InstructionInfoFactory::new(),
        }
    }

    /// The tier in use.
    pub fn tier(&self) -> EmuTier {
        self.tier
    }

    /// Code-cache bytes in use and in total.
    pub fn cache_bytes(&self) -> (usize, usize) {
        self.code
            .as_ref()
            .map_or((0, self.config.cache_bytes), |(c, _)| (c.used(), c.size()))
    }

    fn generation(&self) -> u32 {
        self.code.as_ref().map_or(0, |(c, _)| c.generation)
    }

    /// Whether the run loop should hand `block` to the translator now
    /// (counts a run of it).
    pub(crate) fn wants(&self, block: &Block) -> bool {
        if self.tier != EmuTier::Jit {
            return false;
        }
        let j = &block.jit;
        let generation = self.generation();
        if generation != 0 && j.generation.load(Relaxed) == generation {
            return true;
        }
        if generation != 0 && j.failed.load(Relaxed) == generation {
            return false;
        }
        j.heat.fetch_add(1, Relaxed) + 1 >= self.config.threshold
    }

    fn ensure_cache(&mut self) -> Option<()> {
        if self.code.is_some() {
            return Some(());
        }
        if self.broken {
            return None;
        }
        let made = CodeCache::new(self.config.cache_bytes)
            .ok()
            .and_then(|mut c| {
                let g = glue::emit(&mut c)?;
                Some((c, g))
            });
        match made {
            Some(c) => {
                self.code = Some(c);
                Some(())
            }
            None => {
                tracing::warn!("emu: cannot map a code cache; the interpreter runs everything");
                self.broken = true;
                self.tier = EmuTier::Interp;
                None
            }
        }
    }
}

impl Jit {
    /// The translator's counters by name, as telemetry publishes them
    /// (`alcazar_core::stats::VcpuStats::publish_engine_counters`): blocks,
    /// cache use, translation time, chaining, exits, and the instructions
    /// the interpreter ran for translated code (`jit_fallback_<mnemonic>`,
    /// the 12 most frequent).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let s = &self.stats;
        let (used, size) = self.cache_bytes();
        let mut out: Vec<(String, u64)> = [
            ("jit_blocks_translated", s.blocks_translated),
            ("jit_blocks_refused", s.blocks_refused),
            ("jit_translation_ns", s.translation_ns),
            ("jit_code_cache_bytes_used", used as u64),
            ("jit_code_cache_bytes", size as u64),
            ("jit_code_cache_flushes", s.cache_flushes),
            ("jit_instructions", s.instructions),
            ("jit_entries", s.entries),
            ("jit_chain_links", s.chain_links),
            ("jit_lookup_fills", s.lookup_fills),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (name, i) in [
            ("attention", 1),
            ("budget", 2),
            ("stale", 3),
            ("chain", 4),
            ("lookup_miss", 5),
            ("interpreter", 6),
        ] {
            out.push((format!("jit_exits_{name}"), s.exits[i]));
        }
        for (m, n) in s.top_fallbacks(12) {
            out.push((format!("jit_fallback_{m}"), n));
        }
        out
    }
}

impl Drop for Jit {
    /// With `ALCAZAR_JIT_STATS` set, prints the counters on stderr when the
    /// vCPU goes away (a measuring aid; the inspector shows them live).
    fn drop(&mut self) {
        if std::env::var_os("ALCAZAR_JIT_STATS").is_none() || self.stats.entries == 0 {
            return;
        }
        let s = &self.stats;
        eprintln!(
            "jit: {} blocks ({} refused) in {} ms, {} KiB of code, {} flushes; {} instructions \
             translated (of {}) in {} entries; exits attention/budget/stale/chain/lookup/interp {:?}; \
             {} links, {} lookup fills; fallbacks {:?}",
            s.blocks_translated,
            s.blocks_refused,
            s.translation_ns / 1_000_000,
            self.cache_bytes().0 / 1024,
            s.cache_flushes,
            s.instructions,
            s.all_instructions,
            s.entries,
            &s.exits[1..],
            s.chain_links,
            s.lookup_fills,
            s.top_fallbacks(25)
        );
    }
}

/// The key of a block start in [`Jit::latest`].
fn latest_key(block: &Block, mode: Mode) -> (u64, u64) {
    (
        (block.pages[0].0 | (block.rip & 0xfff)) | u64::from(mode.bits()) << 61,
        block.rip,
    )
}

/// Whether `ALCAZAR_JIT_DUMP` asks for every translation on stderr.
fn dump_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("ALCAZAR_JIT_DUMP").is_some())
}

/// Prints a block and its translation (debugging aid).
fn dump(block: &Block, mode: Mode, at: u64, code: &[u8]) {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    use std::fmt::Write;
    let mut f = IntelFormatter::new();
    let mut out = format!("jit: block {:#x} ({mode:?}) at {at:#x}\n", block.rip);
    for d in &block.insns {
        let mut s = String::new();
        f.format(&d.insn, &mut s);
        let _ = writeln!(
            out,
            "  guest {:#x}: {s}{}",
            d.rip,
            if d.fused { " +jcc" } else { "" }
        );
    }
    let mut dec = Decoder::with_ip(64, code, at, DecoderOptions::NONE);
    while dec.can_decode() {
        let i = dec.decode();
        let mut s = String::new();
        f.format(&i, &mut s);
        let _ = writeln!(out, "    {:#x}: {s}", i.ip());
    }
    eprint!("{out}");
}

impl Cpu {
    /// Chooses the tier ([`EmuTier::Jit`] falls back to the interpreter on
    /// hosts that cannot run it); returns the one in effect.
    pub fn set_tier(&mut self, tier: EmuTier) -> EmuTier {
        let config = self.jit.config;
        self.jit = Jit::new(tier);
        self.jit.config = config;
        self.jit.tier
    }

    /// Whether translated code may run in the current state: the
    /// translator is on, 64-bit mode, no single-stepping, no alignment
    /// checking.
    pub(crate) fn jit_ready(&self) -> bool {
        self.jit.tier == EmuTier::Jit
            && self.s.code_size() == CodeSize::Bits64
            && !self.s.flags.test(TF)
            && !(self.s.cpl == 3 && self.s.cr0 & cr0::AM != 0 && self.s.flags.test(AC))
    }

    /// Enters translated code at RIP if the lookup cache knows RIP (no
    /// block lookup at all); `false` otherwise. Call only when
    /// [`Cpu::jit_ready`].
    pub(crate) fn jit_enter_cached(&mut self) -> bool {
        self.jit_validate_lookups();
        let user = self.user();
        let rip = self.s.rip;
        let set = frame::jump_set(rip) * frame::JUMP_WAYS;
        let ways = &self.mmu.frame().jump_cache[usize::from(user)][set..set + frame::JUMP_WAYS];
        let Some(e) = ways.iter().find(|e| e.rip == rip) else {
            return false;
        };
        let checked = e.host;
        self.jit_run(Entry { checked });
        true
    }

    /// Enters translated code at `entry`, the translation of the block at
    /// RIP (from [`Cpu::jit_entry`]), and remembers it in the lookup cache.
    pub(crate) fn jit_enter(&mut self, entry: Entry) {
        let user = self.user();
        let rip = self.s.rip;
        if let Some(page) = self.mmu.fetch_entry(rip, user) {
            let frame = self.mmu.frame();
            self.jit.jumps.insert(frame, user, rip, page, entry.checked);
        }
        self.jit_run(entry);
    }

    /// The latest translation of the code at RIP for the current mode, if
    /// there is one: found by physical address in [`Jit::latest`], without
    /// the block cache (its entry checks that the code is unchanged).
    fn jit_latest_at_rip(&mut self) -> Option<Entry> {
        let rip = self.s.rip;
        if self.jit.stale_rip.take() == Some(rip) {
            return None;
        }
        let mode = self.jit_mode();
        let t = self
            .mmu
            .translate(
                &mut self.s,
                &self.code,
                rip,
                AccessKind::Fetch,
                Privilege::explicit(mode.user),
            )
            .ok()?;
        let off = *self
            .jit
            .latest
            .get(&(t.phys | u64::from(mode.bits()) << 61, rip))?;
        let (cache, _) = self.jit.code.as_ref()?;
        Some(Entry {
            checked: cache.addr(off as usize),
        })
    }

    /// Enters translated code at RIP if [`Cpu::jit_latest_at_rip`] finds
    /// its translation (remembering it in the lookup cache).
    pub(crate) fn jit_enter_latest(&mut self) -> bool {
        match self.jit_latest_at_rip() {
            Some(entry) => {
                self.jit_enter(entry);
                true
            }
            None => false,
        }
    }

    /// The translation of the block at RIP, translating it if it is hot.
    fn jit_entry_at_rip(&mut self) -> Option<Entry> {
        if let Some(entry) = self.jit_latest_at_rip() {
            return Some(entry);
        }
        let (key, block) = self.block_at_rip().ok()?;
        let entry = self.jit_entry(&block);
        self.cache.put_back(key, block);
        entry
    }

    /// The translation of `block` (at RIP) for the current privilege, if
    /// it has one or is hot enough to get one now (each call counts a run
    /// of it).
    pub(crate) fn jit_entry(&mut self, block: &Arc<Block>) -> Option<Entry> {
        let mode = self.jit_mode();
        let j = &block.jit;
        let generation = self.jit.generation();
        let translated = generation != 0 && j.generation.load(Relaxed) == generation;
        if translated && j.mode.load(Relaxed) == mode.bits() {
            let (cache, _) = self.jit.code.as_ref()?;
            return Some(Entry {
                checked: cache.addr(j.entry.load(Relaxed) as usize),
            });
        }
        if generation != 0 && j.failed.load(Relaxed) == generation {
            return None;
        }
        // Translated for another mode (the guest enabled SSE, or runs the
        // same code at another privilege): it was hot, translate it again.
        let retranslate = translated || self.jit.latest.contains_key(&latest_key(block, mode));
        if !retranslate && j.heat.load(Relaxed) < self.jit.config.threshold {
            j.heat.fetch_add(1, Relaxed);
            return None;
        }
        self.jit_translate(block, mode)
    }

    /// The [`Mode`] translations made now are for.
    fn jit_mode(&self) -> Mode {
        use crate::state::cr4;
        let sse = self.s.cr4 & cr4::OSFXSR != 0 && self.s.cr0 & (cr0::EM | cr0::TS) == 0;
        Mode {
            user: self.user(),
            sse,
            avx: sse && crate::fpu::avx::check_avx(self).is_ok(),
        }
    }

    fn jit_translate(&mut self, block: &Arc<Block>, mode: Mode) -> Option<Entry> {
        let started = Instant::now();
        self.jit.ensure_cache()?;
        for _ in 0..2 {
            let jit = &mut self.jit;
            let (cache, glue) = jit.code.as_mut()?;
            let start = cache.used();
            let t = translate::translate(
                block,
                mode,
                &self.code,
                *glue,
                start,
                cache.next_addr(),
                &mut jit.enc,
                &mut jit.info,
            );
            let Some(t) = t else {
                block.jit.failed.store(cache.generation, Relaxed);
                jit.stats.blocks_refused += 1;
                // An earlier translation of this code must not be found
                // by physical address any more.
                jit.latest.remove(&latest_key(block, mode));
                return None;
            };
            let Some(off) = cache.push(&t.code) else {
                self.jit_flush();
                continue;
            };
            let j = &block.jit;
            j.entry.store(off as u32, Relaxed);
            j.chained.store((off + t.chained) as u32, Relaxed);
            j.mode.store(mode.bits(), Relaxed);
            j.generation.store(cache.generation, Relaxed);
            let checked = cache.addr(off);
            if dump_enabled() {
                dump(block, mode, checked, &t.code);
            }
            jit.keep.push(block.clone());
            if let Some(old) = jit.latest.insert(latest_key(block, mode), off as u32) {
                cache.redirect(old as usize, off);
            }
            jit.stats.blocks_translated += 1;
            jit.stats.translation_ns += started.elapsed().as_nanos() as u64;
            return Some(Entry { checked });
        }
        None
    }

    /// Forgets every translation.
    fn jit_flush(&mut self) {
        if let Some((cache, _)) = self.jit.code.as_mut() {
            cache.flush();
        }
        self.jit.keep.clear();
        self.jit.latest.clear();
        self.jit.stats.cache_flushes += 1;
        let frame = self.mmu.frame();
        self.jit.jumps.clear(frame);
        self.jit_validate_lookups();
    }

    /// Runs translated code from `entry` until it must return to the run
    /// loop, linking and looking up branch targets on the way.
    fn jit_run(&mut self, mut entry: Entry) {
        let Some((_, glue)) = self.jit.code.as_ref() else {
            return;
        };
        let enter = glue.enter;
        self.jit_sync_in();
        self.jit.stats.entries += 1;
        for round in 0..=MAX_ROUNDS {
            let frame: *mut Frame = self.mmu.table_ptr().cast();
            let cpu: *mut Cpu = self;
            // SAFETY: `enter` is the glue's trampoline in this vCPU's code
            // cache, an `extern "sysv64" fn(*mut Frame, u64)`; `entry` is a
            // translation in the current generation of that cache. The
            // frame is the first field of the TLB table (`#[repr(C)]`), and
            // its `cpu` points at this CPU, which nothing else uses while
            // translated code runs (the helpers reach it through `frame`).
            unsafe {
                (*frame).cpu = cpu;
                let f: extern "sysv64" fn(*mut Frame, u64) = std::mem::transmute(enter as usize);
                f(frame, entry.checked);
            }
            let frame = self.mmu.frame();
            let reason = frame.exit_reason;
            if let Some(n) = self.jit.stats.exits.get_mut(reason as usize) {
                *n += 1;
            }
            if reason == Exit::Stale as u64 {
                // Lookups must not lead to the stale translation again.
                let rip = frame.exit_rip;
                self.jit.stale_rip = Some(rip);
                let user = self.s.cpl == 3;
                self.jit.jumps.remove(self.mmu.frame(), user, rip);
            }
            if round == MAX_ROUNDS || self.jit.fault.is_some() {
                break;
            }
            let next = if reason == Exit::Chain as u64 {
                self.jit_link()
            } else if reason == Exit::Indirect as u64 {
                self.jit_lookup()
            } else {
                None
            };
            match next {
                Some(e) => entry = e,
                None => break,
            }
        }
        self.jit_sync_out();
    }

    /// After [`Exit::Chain`]: finds the target's translation and patches
    /// the branch to it.
    fn jit_link(&mut self) -> Option<Entry> {
        let frame = self.mmu.frame();
        let (rip, field) = (frame.exit_rip, frame.exit_patch as usize);
        self.s.rip = rip;
        let generation = self.jit.generation();
        let (key, block) = self.block_at_rip().ok()?;
        let entry = self.jit_entry(&block);
        let target = (block.page_count == 1).then(|| block.jit.chained.load(Relaxed));
        self.cache.put_back(key, block);
        let entry = entry?;
        if self.jit.generation() == generation {
            let (cache, _) = self.jit.code.as_mut()?;
            let target =
                target.map_or_else(|| cache.offset_of(entry.checked), |off| Some(off as usize))?;
            cache.patch_rel32(field, target);
            self.jit.stats.chain_links += 1;
        }
        Some(entry)
    }

    /// After [`Exit::Indirect`]: finds the target's translation and adds it
    /// to the lookup cache.
    fn jit_lookup(&mut self) -> Option<Entry> {
        let rip = self.mmu.frame().exit_rip;
        self.s.rip = rip;
        let entry = self.jit_entry_at_rip()?;
        let user = self.user();
        if let Some(page) = self.mmu.fetch_entry(rip, user) {
            let frame = self.mmu.frame();
            self.jit.jumps.insert(frame, user, rip, page, entry.checked);
        }
        self.jit.stats.lookup_fills += 1;
        Some(entry)
    }

    fn jit_validate_lookups(&mut self) {
        let generation = self.jit.generation();
        let mode = self.jit_mode();
        let keep = match self.jit.jumps.check(mode, &self.mmu.flush_log, generation) {
            chain::Check::Valid => true,
            chain::Check::Clear => false,
            // Walk the page tables for each code page (without faulting):
            // the cache stays if none moved.
            chain::Check::Recheck(pages) => pages.into_iter().all(|(lin, phys)| {
                self.mmu
                    .translate(
                        &mut self.s,
                        &self.code,
                        lin,
                        AccessKind::Fetch,
                        Privilege::explicit(mode.user),
                    )
                    .is_ok_and(|t| t.phys & !0xfff == phys)
            }),
        };
        let (log, frame) = self.mmu.log_and_frame();
        self.jit.jumps.settle(frame, mode, log, generation, keep);
    }

    /// Moves the guest state into the frame (the lookup caches were
    /// validated just before: [`Cpu::jit_enter_cached`]).
    fn jit_sync_in(&mut self) {
        let attention = if self.s.flags.test(IF) {
            Some(self.irq.attention_ptr())
        } else {
            None
        };
        let image = flags_to_image(self.s.flags.get());
        let seg_base = [self.s.seg[seg::FS].base, self.s.seg[seg::GS].base];
        let gpr = self.s.gpr;
        let sse = self.jit_mode().sse;
        self.jit.run_sse = sse;
        let (xmm, ymm_hi) = (self.s.fpu.xmm, self.s.fpu.ymm_hi);
        let smap_ac = u64::from(crate::mmu::ac_sets_in_use(&self.s));
        let frame = self.mmu.frame();
        frame.gpr = gpr;
        frame.smap_ac = smap_ac;
        if sse {
            frame.xmm = xmm;
            frame.ymm_hi = ymm_hi;
        }
        frame.flags = image;
        frame.budget = BUDGET;
        frame.seg_base = seg_base;
        frame.attention = attention.unwrap_or(std::ptr::addr_of!(frame.quiet).cast());
    }

    /// Moves the guest state back and delivers a fault the interpreter
    /// raised for translated code.
    fn jit_sync_out(&mut self) {
        // The mode the run started in (a helper may have changed it).
        let sse = self.jit.run_sse;
        let frame = self.mmu.frame();
        let (gpr, image, rip, budget) = (frame.gpr, frame.flags, frame.exit_rip, frame.budget);
        if sse {
            self.s.fpu.xmm = frame.xmm;
            self.s.fpu.ymm_hi = frame.ymm_hi;
        }
        self.s.gpr = gpr;
        self.s.flags.set_arith(ARITH, image_to_flags(image));
        self.s.rip = rip;
        let retired = (BUDGET - budget).max(0) as u64;
        self.icount += retired;
        self.jit.stats.instructions += retired;
        self.jit.stats.all_instructions = self.icount;
        if let Some(fault) = self.jit.fault.take() {
            self.raise(fault);
        }
    }
}
