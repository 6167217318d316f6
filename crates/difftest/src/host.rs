//! What this host's oracle does where the answer depends on the host, not
//! on the architecture: measured at start-up by running small probes under
//! KVM, never assumed.
//!
//! Three facts matter to the comparison:
//!
//! * **Alignment checking.** Under PVM, guest user code runs with the
//!   host's CR0, so whether RFLAGS.AC = 1 makes a misaligned access raise
//!   #AC is the host's CR0.AM, whatever the guest's CR0 says. The emu
//!   runner is given the CR0.AM the oracle showed.
//! * **Re-emulated #GP.** PVM hands a user-mode #GP to KVM's instruction
//!   emulator, which executes the instruction again with its own operand
//!   order and its own checks. So where the CPU raised #GP the oracle may
//!   report #UD (an instruction the emulator cannot run), a #PF or an #AC
//!   (an operand the emulator reads before the one the CPU faulted on,
//!   and whose checks depend on the host kernel's version).
//!
//! The third, which operand of a two-operand instruction faults first, is
//! not a host fact but an open choice of the architecture:
//! [`crate::compare::Quirk::OperandFaultOrder`] accepts the oracle's
//! answer when that operand really raises it.

use crate::kvm_runner::KvmRunner;
use crate::state::{Ending, InitState, Program};
use crate::Error;

/// A non-canonical address (bits 63:47 disagree).
const NON_CANONICAL: u64 = 0x3766_90d8_9c30_31f1;
/// RFLAGS.AC.
const AC: u64 = 1 << 18;

/// The host-dependent behaviour of the oracle (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// A misaligned user access with RFLAGS.AC = 1 raises #AC.
    pub alignment_checks: bool,
    /// A user-mode #GP is re-executed by KVM's instruction emulator.
    pub gp_reemulated: bool,
}

impl HostFacts {
    /// What this project's hosts (AMD EPYC, PVM) showed; used by unit
    /// tests that have no KVM.
    pub const MEASURED_ON_AMD_PVM: HostFacts = HostFacts {
        alignment_checks: true,
        gp_reemulated: true,
    };

    /// Runs the probes on `kvm`.
    pub fn probe(kvm: &mut KvmRunner) -> Result<HostFacts, Error> {
        let data = crate::layout::DATA;
        // mov eax, [rsi] at DATA + 1 with AC set.
        let misaligned_load = run(kvm, &[0x8b, 0x06], data + 1, 0, AC)?;
        // popcnt eax, [rsi] at a non-canonical address: the CPU raises
        // #GP; KVM's emulator cannot run POPCNT and says #UD.
        let popcnt = run(kvm, &[0xf3, 0x0f, 0xb8, 0x06], NON_CANONICAL, 0, 0)?;
        Ok(HostFacts {
            alignment_checks: vector(misaligned_load) == Some(17),
            gp_reemulated: vector(popcnt) != Some(13),
        })
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "host: user #AC {}, user #GP {}",
            if self.alignment_checks {
                "raised"
            } else {
                "never raised"
            },
            if self.gp_reemulated {
                "re-executed by KVM's emulator"
            } else {
                "delivered as is"
            },
        )
    }
}

/// Runs `code` (then the final `out`) with RSI, RDI and extra RFLAGS bits.
fn run(kvm: &mut KvmRunner, code: &[u8], rsi: u64, rdi: u64, flags: u64) -> Result<Ending, Error> {
    let mut bytes = code.to_vec();
    bytes.extend_from_slice(&[0xe6, crate::layout::DONE_PORT as u8]);
    let prog = Program::from_code(bytes);
    let mut init = InitState::zeroed();
    init.gpr[crate::gen::regs::RSI] = rsi;
    init.gpr[crate::gen::regs::RDI] = rdi;
    init.rflags = 2 | flags;
    Ok(kvm.run(&prog, &init)?.ending)
}

fn vector(e: Ending) -> Option<u8> {
    match e {
        Ending::Exception { vector, .. } => Some(vector),
        _ => None,
    }
}
