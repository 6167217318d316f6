//! AVX2 gathers (SDM Vol. 2 "VPGATHERDD/VPGATHERQD", "VPGATHERDQ/
//! VPGATHERQQ", "VGATHERDPS/VGATHERQPS", "VGATHERDPD/VGATHERQPD"): loads
//! of elements from `base + index[i] * scale + disp`, where the index
//! register is a vector (VSIB addressing, Vol. 2A §2.3.12).
//!
//! Element `i` is loaded only when the sign bit of mask element `i` is
//! set; each load that completes clears that mask element, so a fault
//! (delivered with the elements before it already in the destination and
//! their mask bits clear) can be resumed by re-executing the instruction.
//! When all are done the whole mask register is zero. Elements beyond the
//! gathered ones (the upper half of an XMM destination of a QD/QPS form)
//! are zeroed, as are bits 255:128 of both registers in VEX.128 forms.
//! #UD if the destination, index and mask registers are not all
//! different.

use iced_x86::{Instruction, Mnemonic, Register};

use super::check_avx;
use super::operands::{element as get, set_element as set, vec_index, write_vec, ymm};
use crate::exec::operand::{address_size, read_reg, seg_index};
use crate::exec::HandlerEntry;
use crate::exec::LinkEffect::KeepsLinks;
use crate::fault::Fault;
use crate::fpu::lanes::sx;
use crate::Cpu;

/// The handler for `insn`, if it is a gather.
pub fn lookup(insn: &Instruction) -> Option<HandlerEntry> {
    use Mnemonic as M;
    match insn.mnemonic() {
        M::Vpgatherdd
        | M::Vpgatherqd
        | M::Vpgatherdq
        | M::Vpgatherqq
        | M::Vgatherdps
        | M::Vgatherqps
        | M::Vgatherdpd
        | M::Vgatherqpd => Some((gather, KeepsLinks)),
        _ => None,
    }
}

/// Every gather.
fn gather(cpu: &mut Cpu, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_avx(cpu)?;
    let m = insn.mnemonic();
    let index_bits = if matches!(
        m,
        M::Vpgatherdd | M::Vpgatherdq | M::Vgatherdps | M::Vgatherdpd
    ) {
        32
    } else {
        64
    };
    let data_bits = if matches!(
        m,
        M::Vpgatherdd | M::Vpgatherqd | M::Vgatherdps | M::Vgatherqps
    ) {
        32
    } else {
        64
    };
    let (dst_reg, idx_reg, mask_reg) = (
        insn.op0_register(),
        insn.memory_index(),
        insn.op2_register(),
    );
    let (d, x, k) = (vec_index(dst_reg), vec_index(idx_reg), vec_index(mask_reg));
    if d == x || d == k || x == k {
        return Err(Fault::InvalidOpcode);
    }
    let width = |r: Register| if r.is_ymm() { 256 } else { 128 };
    // Elements: as many as both the index and the data registers hold.
    let count = (width(idx_reg) / index_bits).min(width(dst_reg) / data_bits);
    let index = ymm(cpu, x);
    let mut dst = ymm(cpu, d);
    let mut mask = ymm(cpu, k);
    let base = match insn.memory_base() {
        Register::None => 0,
        r if r == Register::RIP || r == Register::EIP => 0,
        r => read_reg(cpu, r),
    };
    let disp = insn.memory_displacement64();
    let scale = u64::from(insn.memory_index_scale());
    let seg = seg_index(insn.memory_segment());
    let addr_mask = match address_size(insn) {
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let mut fault = None;
    for i in 0..count {
        if get(&mask, data_bits, i) >> (data_bits - 1) == 0 {
            continue;
        }
        let ix = sx(get(&index, index_bits, i), index_bits) as u64;
        let off = base.wrapping_add(disp).wrapping_add(ix.wrapping_mul(scale)) & addr_mask;
        match cpu.read(seg, off, (data_bits / 8) as u8) {
            Ok(v) => {
                set(&mut dst, data_bits, i, v);
                set(&mut mask, data_bits, i, 0);
            }
            Err(e) => {
                fault = Some(e);
                break;
            }
        }
    }
    if fault.is_none() {
        mask = [0; 2];
    }
    // Elements past `count` in the destination are zeroed.
    let total = width(dst_reg) / data_bits;
    for i in count..total {
        set(&mut dst, data_bits, i, 0);
    }
    write_vec(cpu, dst_reg, dst);
    write_vec(cpu, mask_reg, mask);
    match fault {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
