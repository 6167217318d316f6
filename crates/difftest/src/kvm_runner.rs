//! Runs a program at CPL 3 under KVM: the oracle.
//!
//! One VM and one vCPU are created once and reused. Before each run the
//! user pages are rewritten, the registers set, and (after an exception
//! left the vCPU in ring 0) the segment registers reloaded. The run ends
//! at the first port-I/O exit: the sequence's final `out` to
//! [`layout::DONE_PORT`], or an exception stub's `out` to
//! `VECTOR_PORT_BASE + vector`, whose interrupt frame on the ring-0 stack
//! holds the user RIP, RFLAGS and RSP at the fault.

use std::sync::Once;
use std::time::{Duration, Instant};

use alcazar_core::memory::{GuestMemory, MemoryMap};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::layout::{self, Chunk};
use crate::state::{has_error_code, Ending, FinalState, FpuRegs, InitState, Program, RSP};
use crate::Error;

/// RFLAGS bits the runners force on: bit 1 and IF (IOPL stays 0: PVM
/// keeps it 0 at CPL 3, so the final `out` is allowed by the TSS I/O
/// permission bitmap instead).
pub const FORCED_FLAGS: u64 = 0x2 | 0x200;

/// How long one run may take before it counts as hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(2);

/// The signal that interrupts a hung `KVM_RUN` (a real-time signal other
/// than the one alcazar-kvm kicks its vCPUs with).
fn watchdog_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_watchdog(_: libc::c_int) {}

/// A per-thread POSIX timer that sends [`watchdog_signal`] to the thread
/// running the vCPU, periodically while armed, so that a hung guest makes
/// `KVM_RUN` return `EINTR` (a tick that lands just before the ioctl is
/// followed by another).
struct Watchdog {
    timer: libc::timer_t,
    thread: libc::pid_t,
}

impl Watchdog {
    fn new() -> Result<Self, Error> {
        static HANDLER: Once = Once::new();
        HANDLER.call_once(|| {
            // SAFETY: a zeroed sigaction with a handler that does nothing
            // is valid; installing it only changes this signal's action.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_watchdog as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(watchdog_signal(), &sa, std::ptr::null_mut());
            }
        });
        // SAFETY: gettid has no preconditions.
        let thread = unsafe { libc::gettid() };
        // SAFETY: sigevent is plain data; zeroed, then the fields
        // SIGEV_THREAD_ID needs are set.
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_THREAD_ID;
        ev.sigev_signo = watchdog_signal();
        ev.sigev_notify_thread_id = thread;
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `ev` and `timer` are valid for the call.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } != 0 {
            return Err(Error::Kvm {
                op: "timer_create",
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        Ok(Watchdog { timer, thread })
    }

    fn set(&self, period: Duration) {
        let ts = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: period.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: the timer is live (deleted only in Drop); `spec` is valid.
        unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // SAFETY: the timer was created by timer_create and not yet deleted.
        unsafe { libc::timer_delete(self.timer) };
    }
}

/// The KVM side: a VM with one vCPU at CPL 3.
pub struct KvmRunner {
    _kvm: Kvm,
    _vm: VmFd,
    vcpu: VcpuFd,
    mem: GuestMemory,
    user_sregs: kvm_sregs,
    sregs_dirty: bool,
    watchdog: Option<Watchdog>,
}

impl std::fmt::Debug for KvmRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmRunner").finish_non_exhaustive()
    }
}

/// The standard-format XSAVE image of `f` (legacy area per SDM Vol. 1
/// §10.5.1, the AVX component at 576, XSTATE_BV = x87 | SSE | AVX).
fn to_kvm_xsave(f: &FpuRegs) -> kvm_bindings::kvm_xsave {
    let mut b = [0u8; 4096];
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.ftw;
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
    for (i, v) in f.st.iter().enumerate() {
        b[32 + 16 * i..48 + 16 * i].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in f.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(&v.to_le_bytes());
    }
    for (i, v) in f.ymm_hi.iter().enumerate() {
        b[576 + 16 * i..592 + 16 * i].copy_from_slice(&v.to_le_bytes());
    }
    b[512] = 7;
    let mut x = kvm_bindings::kvm_xsave::default();
    for (d, c) in x.region.iter_mut().zip(b.chunks_exact(4)) {
        *d = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    x
}

/// The x87/SSE state of a standard-format XSAVE image: components whose
/// XSTATE_BV bit is clear are in their initial state.
fn from_kvm_xsave(x: &kvm_bindings::kvm_xsave) -> FpuRegs {
    let mut b = [0u8; 1024];
    for (c, w) in b.chunks_exact_mut(4).zip(x.region.iter()) {
        c.copy_from_slice(&w.to_le_bytes());
    }
    let u128_at = |at: usize| {
        let mut v = [0u8; 16];
        v.copy_from_slice(&b[at..at + 16]);
        u128::from_le_bytes(v)
    };
    let bv = b[512];
    let mut f = FpuRegs {
        mxcsr: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        ..FpuRegs::default()
    };
    if bv & 1 != 0 {
        f.fcw = u16::from_le_bytes([b[0], b[1]]);
        f.fsw = u16::from_le_bytes([b[2], b[3]]);
        f.ftw = b[4];
        for (i, s) in f.st.iter_mut().enumerate() {
            *s = u128_at(32 + 16 * i) & ((1u128 << 80) - 1);
        }
    }
    if bv & 2 != 0 {
        for (i, s) in f.xmm.iter_mut().enumerate() {
            *s = u128_at(160 + 16 * i);
        }
    }
    if bv & 4 != 0 {
        for (i, s) in f.ymm_hi.iter_mut().enumerate() {
            *s = u128_at(576 + 16 * i);
        }
    }
    f
}

fn kvm_err(op: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |e| Error::Kvm {
        op,
        errno: e.errno(),
    }
}

/// A flat 4 GiB segment as KVM wants it.
pub fn kvm_seg(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl KvmRunner {
    /// Opens `/dev/kvm`, creates the VM and its vCPU, loads the system
    /// image. Fails with [`Error::KvmUnavailable`] if `/dev/kvm` cannot be
    /// opened.
    pub fn new() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(|e| Error::KvmUnavailable(format!("/dev/kvm: {e}")))?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let mem = GuestMemory::new(MemoryMap::pc(layout::MEM_SIZE)?)?;
        for (slot, region) in mem.host_regions().iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.guest_addr,
                memory_size: region.size,
                userspace_addr: region.host_addr as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which
            // this runner keeps (and drops after the VM fd, declared first).
            unsafe { vm.set_user_memory_region(region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        for Chunk { addr, bytes } in layout::system_image()? {
            mem.write(addr, &bytes)?;
        }
        let xsave_size = kvm.check_extension_int(kvm_ioctls::Cap::Xsave2);
        if xsave_size > 4096 {
            return Err(Error::KvmUnavailable(format!(
                "XSAVE area of {xsave_size} bytes does not fit kvm_xsave"
            )));
        }
        let vcpu = vm.create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let cpuid = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        let mut s = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        s.cs = kvm_seg(layout::USER_CS, true);
        for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
            *seg = kvm_seg(layout::USER_DS, false);
        }
        s.tr = kvm_segment {
            base: layout::TSS,
            limit: layout::TSS_LIMIT,
            selector: layout::TSS_SEL,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        s.ldt = kvm_segment {
            type_: 2,
            present: 1,
            unusable: 1,
            ..Default::default()
        };
        s.gdt.base = layout::GDT;
        s.gdt.limit = layout::GDT_LIMIT;
        s.idt.base = layout::IDT;
        s.idt.limit = layout::IDT_LIMIT;
        s.cr0 = layout::CR0;
        s.cr3 = layout::PML4;
        s.cr4 = layout::CR4;
        s.efer = layout::EFER;
        let mut xcrs = kvm_bindings::kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0] = kvm_bindings::kvm_xcr {
            xcr: 0,
            reserved: 0,
            value: layout::XCR0,
        };
        vcpu.set_sregs(&s).map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_xcrs(&xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
        Ok(KvmRunner {
            _kvm: kvm,
            _vm: vm,
            vcpu,
            mem,
            user_sregs: s,
            sregs_dirty: true,
            watchdog: None,
        })
    }

    /// Loads the user pages of `prog` and `init`.
    fn load(&self, prog: &Program, init: &InitState) -> Result<(), Error> {
        let code = layout::code_image(prog);
        self.mem.write(layout::CODE, &code)?;
        self.mem.write(layout::DATA, &init.data)?;
        self.mem.write(layout::STACK, &init.stack)?;
        Ok(())
    }

    /// Runs `prog` from `init` and returns the final state.
    pub fn run(&mut self, prog: &Program, init: &InitState) -> Result<FinalState, Error> {
        self.load(prog, init)?;
        if self.sregs_dirty {
            self.vcpu
                .set_sregs(&self.user_sregs)
                .map_err(kvm_err("KVM_SET_SREGS"))?;
            self.sregs_dirty = false;
        }
        let g = &init.gpr;
        let regs = kvm_regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: layout::STACK_INIT,
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: layout::CODE,
            rflags: init.rflags | FORCED_FLAGS,
        };
        self.vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
        // SAFETY: `new` checked that KVM's XSAVE area fits in `kvm_xsave`.
        unsafe { self.vcpu.set_xsave(&to_kvm_xsave(&init.fpu)) }
            .map_err(kvm_err("KVM_SET_XSAVE"))?;
        let Some(port) = self.run_to_port()? else {
            self.sregs_dirty = true;
            let mut hung = self.read_back()?;
            hung.ending = Ending::StepLimit;
            hung.note = Some("KVM run timed out".to_string());
            return Ok(hung);
        };
        let r = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let mut gpr = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        let (rip, rflags, ending) = if port == layout::DONE_PORT {
            (prog.end_rip, r.rflags, Ending::Done)
        } else {
            self.sregs_dirty = true;
            let vector = port
                .checked_sub(layout::VECTOR_PORT_BASE)
                .filter(|v| u64::from(*v) < layout::VECTORS)
                .ok_or(Error::UnexpectedExit(format!("out to port {port:#x}")))?
                as u8;
            let mut frame = r.rsp;
            let error_code = if has_error_code(vector) {
                frame += 8;
                Some(self.mem.read_u64(r.rsp)? as u32)
            } else {
                None
            };
            let cr2 = if vector == 14 {
                Some(self.mem.read_u64(layout::CR2_SLOT)?)
            } else {
                None
            };
            gpr[RSP] = self.mem.read_u64(frame + 24)?;
            let rip = self.mem.read_u64(frame)?;
            let rflags = self.mem.read_u64(frame + 16)?;
            let ending = Ending::Exception {
                vector,
                error_code,
                cr2,
            };
            (rip, rflags, ending)
        };
        let mut data = vec![0; layout::DATA_SIZE as usize];
        self.mem.read(layout::DATA, &mut data)?;
        let mut stack = vec![0; layout::STACK_SIZE as usize];
        self.mem.read(layout::STACK, &mut stack)?;
        let fpu = self.read_fpu()?;
        Ok(FinalState {
            gpr,
            rip,
            rflags,
            ending,
            data,
            stack,
            retired: 0,
            note: None,
            fpu,
        })
    }

    /// The registers and pages after a run that did not finish.
    fn read_back(&self) -> Result<FinalState, Error> {
        let r = self.vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        let mut data = vec![0; layout::DATA_SIZE as usize];
        self.mem.read(layout::DATA, &mut data)?;
        let mut stack = vec![0; layout::STACK_SIZE as usize];
        self.mem.read(layout::STACK, &mut stack)?;
        Ok(FinalState {
            gpr: [
                r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
                r.r12, r.r13, r.r14, r.r15,
            ],
            rip: r.rip,
            rflags: r.rflags,
            ending: Ending::StepLimit,
            data,
            stack,
            retired: 0,
            note: None,
            fpu: self.read_fpu()?,
        })
    }

    /// The x87/SSE registers (KVM_GET_XSAVE; KVM_GET_FPU does not report
    /// MXCSR reliably under PVM).
    fn read_fpu(&self) -> Result<FpuRegs, Error> {
        let x = self.vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?;
        Ok(from_kvm_xsave(&x))
    }

    /// `KVM_RUN` until the first port-I/O write; returns its port, or
    /// `None` if the guest ran longer than [`RUN_TIMEOUT`].
    fn run_to_port(&mut self) -> Result<Option<u16>, Error> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if self.watchdog.as_ref().is_none_or(|w| w.thread != tid) {
            self.watchdog = Some(Watchdog::new()?);
        }
        let start = Instant::now();
        if let Some(w) = &self.watchdog {
            w.set(RUN_TIMEOUT / 4);
        }
        let result = loop {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(port, _)) => break Ok(Some(port)),
                Ok(VcpuExit::Intr) => {}
                Ok(other) => {
                    self.sregs_dirty = true;
                    break Err(Error::UnexpectedExit(format!("{other:?}")));
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => break Err(kvm_err("KVM_RUN")(e)),
            }
            if start.elapsed() >= RUN_TIMEOUT {
                break Ok(None);
            }
        };
        if let Some(w) = &self.watchdog {
            w.set(Duration::ZERO);
        }
        result
    }
}
