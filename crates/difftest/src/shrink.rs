//! Minimizes a mismatching case: drop instructions one at a time, then
//! simplify the initial state (zero memory, zero or one in registers,
//! clear flags) and immediates, keeping each change only while the same
//! kind of mismatch persists.

use crate::gen::{Case, Item};
use crate::harness::{field_kind, Checked, Harness, Subject, Verdict};
use crate::state::{Ending, InitState, RSP};
use crate::Error;

/// Whether `cand` shows the same kind of mismatch as `orig`.
fn same_failure(case: &Case, orig: &Checked, cand: &Checked) -> bool {
    let (Verdict::Mismatch(od), Verdict::Mismatch(cd)) = (&orig.verdict, &cand.verdict) else {
        return false;
    };
    let emu_broke = orig.emu.ending != orig.kvm.ending
        || matches!(orig.emu.ending, Ending::Panic | Ending::StepLimit);
    if emu_broke {
        return cand.signature(case.class) == orig.signature(case.class);
    }
    if cand.kvm.ending != orig.kvm.ending || cand.emu.ending != orig.emu.ending {
        return false;
    }
    cd.iter().all(|c| {
        od.iter()
            .any(|o| field_kind(o.field) == field_kind(c.field))
    })
}

/// `items` without item `i`, branch targets adjusted.
fn without(items: &[Item], i: usize) -> Vec<Item> {
    items
        .iter()
        .enumerate()
        .filter(|(n, _)| *n != i)
        .map(|(_, it)| {
            let mut it = *it;
            if let Some(t) = it.target {
                it.target = Some(if t > i { t - 1 } else { t });
            }
            it
        })
        .collect()
}

struct Shrinker<'a, S: Subject> {
    h: &'a mut Harness<S>,
    orig: &'a Checked,
    case: Case,
    budget: usize,
}

impl<S: Subject> Shrinker<'_, S> {
    /// Tries a candidate; keeps it if it still fails the same way.
    fn attempt(&mut self, items: Vec<Item>, init: InitState) -> Result<bool, Error> {
        if self.budget == 0 || items.is_empty() {
            return Ok(false);
        }
        self.budget -= 1;
        let cand = match self.h.check(&items, &init) {
            Ok(c) => c,
            Err(Error::Asm(_)) | Err(Error::Layout(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if same_failure(&self.case, self.orig, &cand) {
            self.case.items = items;
            self.case.init = init;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn drop_items(&mut self) -> Result<(), Error> {
        loop {
            let mut changed = false;
            let mut i = self.case.items.len();
            while i > 0 {
                i -= 1;
                if i >= self.case.items.len() {
                    continue;
                }
                let items = without(&self.case.items, i);
                let init = self.case.init.clone();
                changed |= self.attempt(items, init)?;
            }
            if !changed || self.budget == 0 {
                return Ok(());
            }
        }
    }

    fn simplify_memory(&mut self) -> Result<(), Error> {
        for stack in [false, true] {
            let len = if stack {
                self.case.init.stack.len()
            } else {
                self.case.init.data.len()
            };
            for chunk in [len, 1024, 128] {
                for start in (0..len).step_by(chunk) {
                    let mut init = self.case.init.clone();
                    let buf = if stack {
                        &mut init.stack
                    } else {
                        &mut init.data
                    };
                    let part = &mut buf[start..start + chunk];
                    if part.iter().all(|&b| b == 0) {
                        continue;
                    }
                    part.fill(0);
                    let items = self.case.items.clone();
                    self.attempt(items, init)?;
                }
            }
        }
        Ok(())
    }

    fn simplify_registers(&mut self) -> Result<(), Error> {
        for r in 0..16 {
            if r == RSP {
                continue;
            }
            for v in [0u64, 1] {
                if self.case.init.gpr[r] == v {
                    break;
                }
                let mut init = self.case.init.clone();
                init.gpr[r] = v;
                let items = self.case.items.clone();
                if self.attempt(items, init)? {
                    break;
                }
            }
        }
        let mut init = self.case.init.clone();
        init.rflags = 0;
        let items = self.case.items.clone();
        if !self.attempt(items, init)? {
            for bit in 0..22 {
                if self.case.init.rflags & (1 << bit) != 0 {
                    let mut init = self.case.init.clone();
                    init.rflags &= !(1 << bit);
                    let items = self.case.items.clone();
                    self.attempt(items, init)?;
                }
            }
        }
        Ok(())
    }

    fn simplify_immediates(&mut self) -> Result<(), Error> {
        for i in 0..self.case.items.len() {
            let insn = self.case.items[i].insn;
            for op in 0..insn.op_count() {
                let is_imm = matches!(
                    insn.op_kind(op),
                    iced_x86::OpKind::Immediate8
                        | iced_x86::OpKind::Immediate16
                        | iced_x86::OpKind::Immediate32
                        | iced_x86::OpKind::Immediate64
                        | iced_x86::OpKind::Immediate8to16
                        | iced_x86::OpKind::Immediate8to32
                        | iced_x86::OpKind::Immediate8to64
                        | iced_x86::OpKind::Immediate32to64
                );
                if !is_imm {
                    continue;
                }
                for v in [0u64, 1] {
                    if insn.immediate(op) == v {
                        break;
                    }
                    let mut items = self.case.items.clone();
                    if items[i].insn.try_set_immediate_u64(op, v).is_err() {
                        break;
                    }
                    let init = self.case.init.clone();
                    if self.attempt(items, init)? {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Shrinks `case` (whose run was `orig`) within `budget` candidate runs.
pub fn shrink<S: Subject>(
    h: &mut Harness<S>,
    case: &Case,
    orig: &Checked,
    budget: usize,
) -> Result<Case, Error> {
    let mut s = Shrinker {
        h,
        orig,
        case: case.clone(),
        budget,
    };
    s.drop_items()?;
    s.simplify_memory()?;
    s.simplify_registers()?;
    s.simplify_immediates()?;
    s.drop_items()?;
    Ok(s.case)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Instruction, Register};

    #[test]
    fn dropping_an_item_retargets_later_branches() {
        let nop = Item {
            insn: Instruction::with(Code::Nopd),
            target: None,
        };
        let jmp = Item {
            insn: Instruction::with_branch(Code::Jmp_rel8_64, 0).unwrap(),
            target: Some(3),
        };
        let mov = Item {
            insn: Instruction::with2(Code::Mov_r32_imm32, Register::EAX, 1u32).unwrap(),
            target: None,
        };
        let items = vec![jmp, nop, mov, nop];
        let w = without(&items, 1);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].target, Some(2));
        let w = without(&items, 3);
        assert_eq!(w[0].target, Some(3), "past the end means the final out");
    }
}
