//! A running VM's life: running, paused, suspended, stopped — and how its
//! vCPU threads get there.
//!
//! ```text
//!              Vm::create         Vm::start          pause
//!   (config) ------------> Created ---------> Running <------> Paused
//!                                             |  ^  |   resume    |
//!                           guest enters S3   |  |  | stop, or the| stop
//!                                             v  |  v guest ends it
//!                                    Suspended --'  Stopped <-----'
//!                                       |   wake event   ^
//!                                       '----------------' stop
//! ```
//!
//! Pausing is cooperative. [`Lifecycle::pause`] raises the pause request
//! on the VM's [`VmControl`] and kicks every vCPU; each vCPU thread leaves
//! [`Vcpu::run`] at its next instruction boundary (emu) or out of
//! `KVM_RUN` (kvm), publishes what the inspector shows of it, and *parks*
//! in [`Lifecycle::park`]. When the last one has parked, the guest clock
//! freezes and the VM is `Paused`. [`Lifecycle::resume`] thaws the clock
//! and lets the threads go back into `run`, which continues exactly where
//! it stopped.
//!
//! While parked, a vCPU thread also serves register writes from the
//! inspector ([`Lifecycle::set_register`]): the register file belongs to
//! the thread, so the write is handed to it rather than done from outside.
//!
//! *Suspended* is the guest's doing (ACPI S3, suspend to RAM): the PM
//! block raises [`VmControl::request_suspend`], each vCPU thread leaves
//! `run`, resets its vCPU in place (the processor context is lost in S3)
//! and waits in [`Lifecycle::suspend`] while the guest clock runs on. A
//! wake event latched by [`VmControl::request_wake`] is acted on once
//! every vCPU is asleep, so no vCPU runs before all have reset: the
//! threads return, vCPU 0 to be started at the FACS waking vector, the
//! others waiting for INIT/SIPI. A stop ends a suspended VM like any
//! other; a pause is refused (the VM is not running).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use alcazar_core::engine::Vcpu;
use alcazar_core::timer::Timers;
use alcazar_core::{GuestClock, Tree, VmControl};

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Built, no vCPU has run yet.
    Created,
    /// The vCPUs run the guest.
    Running,
    /// Every vCPU has halted with interrupts off (or waits for a STARTUP
    /// IPI nobody will send): nothing but an NMI or INIT would wake the
    /// guest (`halt -f`). Reported by engines that can tell (emu).
    Halted,
    /// Every vCPU is parked and the guest clock stands still.
    Paused,
    /// The guest put the machine to sleep (ACPI S3): no vCPU runs, the
    /// guest clock and the devices go on, and a wake event (the RTC
    /// alarm, the power button) restarts it at the OS's waking vector.
    Suspended,
    /// The VM has ended (the stop reason says why).
    Stopped,
}

impl VmState {
    /// The lower-case name the API and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Halted => "halted",
            VmState::Paused => "paused",
            VmState::Suspended => "suspended",
            VmState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a lifecycle request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LifecycleError {
    /// The request does not apply in the VM's current state (resume of a
    /// running VM, pause of a stopped one).
    #[error("the VM is {state}: cannot {action} it")]
    WrongState {
        /// The state it is in.
        state: VmState,
        /// What was asked.
        action: &'static str,
    },
    /// Some vCPU did not reach a stopping point in time (it is inside a
    /// long device access); the pause was withdrawn.
    #[error("vCPUs did not pause within {0:?}; the VM keeps running")]
    PauseTimedOut(Duration),
    /// A register write named no register, or a vCPU that does not exist.
    #[error("{0}")]
    BadRegister(String),
}

/// One register write handed to a parked vCPU thread.
#[derive(Debug)]
struct RegisterWrite {
    vcpu: u32,
    name: String,
    value: u64,
    /// Filled in by the vCPU thread.
    result: Option<Result<(), String>>,
}

struct State {
    state: VmState,
    /// vCPU threads that may still park (a thread whose vCPU halted for
    /// good, or that ended, no longer counts).
    live: u32,
    parked: u32,
    /// vCPU threads asleep in [`Lifecycle::suspend`] (ACPI S3).
    asleep: u32,
    /// Bumped by every wake from S3: the sleeping threads' signal to go.
    wakes: u64,
    /// What each vCPU looked like when it last parked.
    snapshots: Vec<Option<Tree>>,
    writes: Vec<RegisterWrite>,
    started: Option<Instant>,
    /// Readers holding the vCPUs parked for a moment ([`Lifecycle::hold`]).
    holds: u32,
}

impl State {
    /// Whether the vCPUs must stay parked: the user paused the VM, or a
    /// reader holds it.
    fn wants_parked(&self) -> bool {
        self.state == VmState::Paused || self.holds > 0
    }
}

/// The state machine of one VM, shared by its vCPU threads and whoever
/// controls it (the embedder, the API server).
pub struct Lifecycle {
    control: Arc<VmControl>,
    clock: Arc<GuestClock>,
    timers: Timers,
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// How long [`Lifecycle::pause`] waits for every vCPU to park.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a vCPU thread asleep in S3 looks for a wake or a stop.
pub const SLEEP_POLL: Duration = Duration::from_millis(10);

impl Lifecycle {
    /// The lifecycle of a created VM with `vcpus` vCPUs.
    pub fn new(
        control: Arc<VmControl>,
        clock: Arc<GuestClock>,
        timers: Timers,
        vcpus: u32,
    ) -> Self {
        Lifecycle {
            control,
            clock,
            timers,
            state: Mutex::new(State {
                state: VmState::Created,
                live: vcpus,
                parked: 0,
                asleep: 0,
                wakes: 0,
                snapshots: vec![None; vcpus as usize],
                writes: Vec::new(),
                started: None,
                holds: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// The current state (a VM whose vCPUs a reader holds parked is
    /// still `Running`).
    pub fn state(&self) -> VmState {
        let st = self.lock();
        self.effective(&st)
    }

    /// How long the VM has existed since it started (wall time, pauses
    /// included); zero before the start.
    pub fn uptime(&self) -> Duration {
        self.lock().started.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Marks the VM running (its threads are about to start).
    pub(crate) fn started(&self) {
        let mut st = self.lock();
        st.state = VmState::Running;
        st.started = Some(Instant::now());
    }

    /// Marks the VM stopped and releases anyone waiting on it.
    pub(crate) fn stopped(&self) {
        let mut st = self.lock();
        st.state = VmState::Stopped;
        self.clock.thaw();
        self.changed.notify_all();
    }

    /// Pauses the VM: returns once every vCPU has parked and the guest
    /// clock is frozen. A VM that is already paused is refused, as is one
    /// that is not running.
    pub fn pause(&self) -> Result<(), LifecycleError> {
        let mut st = self.lock();
        let state = self.effective(&st);
        if state != VmState::Running {
            return Err(LifecycleError::WrongState {
                state,
                action: "pause",
            });
        }
        st.state = VmState::Paused;
        match self.settle(st) {
            Ok(_) => {
                tracing::info!("VM paused");
                Ok(())
            }
            Err((mut st, e)) => {
                if st.state == VmState::Paused {
                    st.state = VmState::Running;
                }
                drop(self.settle(st));
                Err(e)
            }
        }
    }

    /// Resumes a paused VM: the guest clock goes on from where it stopped
    /// and every vCPU continues at the instruction it stopped before.
    pub fn resume(&self) -> Result<(), LifecycleError> {
        let mut st = self.lock();
        let state = self.effective(&st);
        if state != VmState::Paused {
            return Err(LifecycleError::WrongState {
                state,
                action: "resume",
            });
        }
        st.state = VmState::Running;
        drop(self.settle(st));
        tracing::info!("VM resumed");
        Ok(())
    }

    /// Parks the vCPUs for a reader (the inspector) without pausing the
    /// VM in the user's eyes: its state stays what it was, and the vCPUs
    /// run again when the last [`Hold`] is dropped (unless the user paused
    /// the VM meanwhile). Several readers may hold at once.
    pub fn hold(&self) -> Result<Hold<'_>, LifecycleError> {
        let mut st = self.lock();
        let state = self.effective(&st);
        if state == VmState::Created {
            return Err(LifecycleError::WrongState {
                state,
                action: "inspect the vCPUs of",
            });
        }
        if state == VmState::Stopped {
            // Nothing runs: the last snapshots are as current as it gets.
            return Ok(Hold(None));
        }
        st.holds += 1;
        match self.settle(st) {
            Ok(_) => Ok(Hold(Some(self))),
            Err((mut st, e)) => {
                st.holds -= 1;
                drop(self.settle(st));
                Err(e)
            }
        }
    }

    /// Brings the vCPUs to what the state asks for: parked with the clock
    /// frozen, or running. Waits for the vCPUs to park (all callers that
    /// want them parked wait for the same thing).
    #[allow(clippy::type_complexity)]
    fn settle<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> Result<MutexGuard<'a, State>, (MutexGuard<'a, State>, LifecycleError)> {
        if !st.wants_parked() {
            if self.control.pause_requested() {
                self.clock.thaw();
                self.timers.poke();
                self.control.clear_pause();
                self.changed.notify_all();
            }
            return Ok(st);
        }
        if !self.control.pause_requested() {
            self.control.request_pause();
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        // A vCPU asleep in S3 runs nothing either: it counts as parked.
        while st.parked + st.asleep < st.live && !self.control.should_stop() {
            let now = Instant::now();
            if now >= deadline {
                return Err((st, LifecycleError::PauseTimedOut(PAUSE_TIMEOUT)));
            }
            st = self.wait(st, deadline - now);
        }
        if self.control.should_stop() {
            return Err((
                st,
                LifecycleError::WrongState {
                    state: VmState::Stopped,
                    action: "pause",
                },
            ));
        }
        self.clock.freeze();
        Ok(st)
    }

    fn effective(&self, st: &State) -> VmState {
        if self.control.should_stop() {
            VmState::Stopped
        } else {
            st.state
        }
    }

    /// What each vCPU looked like when it last parked (`None` for a vCPU
    /// that never did). Current while the VM is paused.
    pub fn snapshots(&self) -> Vec<Option<Tree>> {
        self.lock().snapshots.clone()
    }

    /// Writes general register `name` (`rax`..`r15`, `rip`, `rflags`) of
    /// paused vCPU `vcpu`, through its parked thread.
    pub fn set_register(&self, vcpu: u32, name: &str, value: u64) -> Result<(), LifecycleError> {
        let mut st = self.lock();
        let state = self.effective(&st);
        if state != VmState::Paused {
            return Err(LifecycleError::WrongState {
                state,
                action: "write a register of",
            });
        }
        if vcpu as usize >= st.snapshots.len() {
            return Err(LifecycleError::BadRegister(format!(
                "there is no vCPU {vcpu}"
            )));
        }
        if !REGISTER_NAMES.contains(&name) {
            return Err(LifecycleError::BadRegister(format!(
                "{name} is not a writable register; writable: {}",
                REGISTER_NAMES.join(", ")
            )));
        }
        st.writes.push(RegisterWrite {
            vcpu,
            name: name.to_string(),
            value,
            result: None,
        });
        self.changed.notify_all();
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        loop {
            let done = st
                .writes
                .iter()
                .position(|w| w.vcpu == vcpu && w.name == name && w.result.is_some());
            if let Some(i) = done {
                let w = st.writes.remove(i);
                return w
                    .result
                    .unwrap_or(Ok(()))
                    .map_err(LifecycleError::BadRegister);
            }
            let now = Instant::now();
            if now >= deadline || self.control.should_stop() {
                st.writes.retain(|w| !(w.vcpu == vcpu && w.name == name));
                return Err(LifecycleError::BadRegister(format!(
                    "vCPU {vcpu} did not take the write"
                )));
            }
            st = self.wait(st, deadline - now);
        }
    }

    /// Called by a vCPU thread whose `run` returned because of a pause
    /// request: publishes the vCPU's inspector view, then waits (serving
    /// register writes) until the VM resumes or stops.
    pub fn park(&self, vcpu: &mut dyn Vcpu) {
        let id = vcpu.id();
        vcpu.freeze_clock();
        let snapshot = vcpu.inspect();
        let mut st = self.lock();
        if let Some(slot) = st.snapshots.get_mut(id as usize) {
            *slot = Some(snapshot);
        }
        st.parked += 1;
        self.changed.notify_all();
        while self.control.pause_requested() && !self.control.should_stop() {
            if let Some(w) = st
                .writes
                .iter_mut()
                .find(|w| w.vcpu == id && w.result.is_none())
            {
                w.result = Some(write_register(vcpu, &w.name, w.value));
                let snapshot = vcpu.inspect();
                if let Some(slot) = st.snapshots.get_mut(id as usize) {
                    *slot = Some(snapshot);
                }
                self.changed.notify_all();
                continue;
            }
            st = self.wait(st, Duration::from_secs(1));
        }
        st.parked -= 1;
        drop(st);
        vcpu.thaw_clock();
    }

    /// Called by a vCPU thread whose `run` returned because the guest put
    /// the machine to sleep (ACPI S3, [`VmControl::suspend_requested`]):
    /// resets the vCPU in place ([`Vcpu::reset`]; an application
    /// processor then waits for INIT/SIPI), publishes its inspector view
    /// and waits until a wake event has been latched and every vCPU is
    /// asleep. Returns `Ok(true)` once the machine wakes (vCPU 0's caller
    /// then points it at the waking vector), `Ok(false)` if the VM
    /// stopped, and the engine's error if the vCPU cannot be reset.
    ///
    /// The sleeping threads poll every [`SLEEP_POLL`] instead of being
    /// signalled: wake and stop requests come from device and API
    /// threads that may hold locks this one must not wait behind.
    pub fn suspend(&self, vcpu: &mut dyn Vcpu) -> Result<bool, alcazar_core::EngineError> {
        let id = vcpu.id();
        vcpu.reset()?;
        if id != 0 {
            vcpu.set_wait_for_sipi()?;
        }
        let snapshot = vcpu.inspect();
        let mut st = self.lock();
        if let Some(slot) = st.snapshots.get_mut(id as usize) {
            *slot = Some(snapshot);
        }
        st.asleep += 1;
        if st.state == VmState::Running {
            st.state = VmState::Suspended;
            tracing::info!("VM suspended (ACPI S3)");
        }
        let epoch = st.wakes;
        self.changed.notify_all();
        let woken = loop {
            if self.control.should_stop() {
                break false;
            }
            if st.wakes != epoch {
                break true;
            }
            if self.control.wake_requested() && st.asleep >= st.live {
                st.wakes += 1;
                self.control.finish_wake();
                if st.state == VmState::Suspended {
                    st.state = VmState::Running;
                }
                tracing::info!("VM woke from ACPI S3");
                self.changed.notify_all();
                break true;
            }
            st = self.wait(st, SLEEP_POLL);
        };
        st.asleep -= 1;
        Ok(woken)
    }

    /// Called by a vCPU thread that will never run or park again (its
    /// vCPU halted for good, or its loop ended): a pause no longer waits
    /// for it.
    pub fn retire(&self) {
        let mut st = self.lock();
        st.live = st.live.saturating_sub(1);
        self.changed.notify_all();
    }
}

/// vCPUs held parked for a reader; dropping it lets them run again
/// (see [`Lifecycle::hold`]).
#[must_use = "the vCPUs run again when the hold is dropped"]
pub struct Hold<'a>(Option<&'a Lifecycle>);

impl std::fmt::Debug for Hold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(lifecycle) = self.0 {
            let mut st = lifecycle.lock();
            st.holds = st.holds.saturating_sub(1);
            drop(lifecycle.settle(st));
        }
    }
}

/// The registers [`Lifecycle::set_register`] writes.
pub const REGISTER_NAMES: [&str; 18] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags",
];

fn write_register(vcpu: &mut dyn Vcpu, name: &str, value: u64) -> Result<(), String> {
    let mut r = vcpu.regs().map_err(|e| e.to_string())?;
    let slot = match name {
        "rax" => &mut r.rax,
        "rbx" => &mut r.rbx,
        "rcx" => &mut r.rcx,
        "rdx" => &mut r.rdx,
        "rsi" => &mut r.rsi,
        "rdi" => &mut r.rdi,
        "rsp" => &mut r.rsp,
        "rbp" => &mut r.rbp,
        "r8" => &mut r.r8,
        "r9" => &mut r.r9,
        "r10" => &mut r.r10,
        "r11" => &mut r.r11,
        "r12" => &mut r.r12,
        "r13" => &mut r.r13,
        "r14" => &mut r.r14,
        "r15" => &mut r.r15,
        "rip" => &mut r.rip,
        "rflags" => &mut r.rflags,
        other => return Err(format!("{other} is not a writable register")),
    };
    *slot = value;
    // RFLAGS bit 1 is fixed to 1; the engines keep it so.
    r.rflags |= alcazar_core::regs::RFLAGS_FIXED;
    vcpu.set_regs(&r).map_err(|e| e.to_string())
}
