//! RFLAGS with lazily computed arithmetic flags.
//!
//! Most instructions set CF, PF, AF, ZF, SF and OF, and most of those
//! values are never read: the next instruction overwrites them. So an
//! arithmetic instruction only records *what it did* (the operation, the
//! operand size, its inputs and result) and each flag is derived on demand
//! from that record (Bochs and QEMU do the same). Intel SDM Vol. 1 §3.4.3
//! and Appendix A define the flags; the formulas are below.

use iced_x86::ConditionCode;

/// CF, bit 0.
pub const CF: u64 = 1 << 0;
/// PF, bit 2.
pub const PF: u64 = 1 << 2;
/// AF, bit 4.
pub const AF: u64 = 1 << 4;
/// ZF, bit 6.
pub const ZF: u64 = 1 << 6;
/// SF, bit 7.
pub const SF: u64 = 1 << 7;
/// TF, bit 8.
pub const TF: u64 = 1 << 8;
/// IF, bit 9.
pub const IF: u64 = 1 << 9;
/// DF, bit 10.
pub const DF: u64 = 1 << 10;
/// OF, bit 11.
pub const OF: u64 = 1 << 11;
/// IOPL, bits 12-13.
pub const IOPL: u64 = 3 << 12;
/// NT, bit 14.
pub const NT: u64 = 1 << 14;
/// RF, bit 16.
pub const RF: u64 = 1 << 16;
/// VM, bit 17.
pub const VM: u64 = 1 << 17;
/// AC, bit 18.
pub const AC: u64 = 1 << 18;
/// VIF, bit 19.
pub const VIF: u64 = 1 << 19;
/// VIP, bit 20.
pub const VIP: u64 = 1 << 20;
/// ID, bit 21.
pub const ID: u64 = 1 << 21;
/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
/// Bit 1 always reads as 1.
pub const FIXED: u64 = 1 << 1;

/// The operation whose result the arithmetic flags currently describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    /// The flags are materialized in [`Flags`]' bits.
    None,
    /// `dst + src`.
    Add,
    /// `dst + src + carry`.
    Adc,
    /// `dst - src` (also CMP).
    Sub,
    /// `dst - src - borrow`.
    Sbb,
    /// AND/OR/XOR/TEST: CF = OF = 0.
    Logic,
    /// `dst + 1`: CF unchanged.
    Inc,
    /// `dst - 1`: CF unchanged.
    Dec,
    /// `0 - src`.
    Neg,
    /// Left shift by `src` (1..size*8-1 or more; CF is the last bit out).
    Shl,
    /// Logical right shift by `src`.
    Shr,
    /// Arithmetic right shift by `src`.
    Sar,
}

/// RFLAGS, lazily.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags {
    /// All flags; the arithmetic ones are valid only when `op` is
    /// [`FlagOp::None`] (CF also for Inc/Dec, which preserve it).
    bits: u64,
    op: FlagOp,
    size: u8,
    carry_in: bool,
    dst: u64,
    src: u64,
    res: u64,
}

impl Default for Flags {
    fn default() -> Self {
        Flags::from_bits(FIXED)
    }
}

/// All-ones mask for an operand of `size` bytes.
#[inline]
pub fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

/// The sign bit of an operand of `size` bytes.
#[inline]
pub fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

#[inline]
fn parity(byte: u64) -> bool {
    (byte as u8).count_ones().is_multiple_of(2)
}

impl Flags {
    /// Flags with the given RFLAGS value (bit 1 forced on).
    pub fn from_bits(bits: u64) -> Self {
        Flags {
            bits: bits | FIXED,
            op: FlagOp::None,
            size: 8,
            carry_in: false,
            dst: 0,
            src: 0,
            res: 0,
        }
    }

    /// Records an arithmetic result. `dst`, `src`, `res` need not be masked.
    /// For [`FlagOp::Adc`]/[`FlagOp::Sbb`] pass the incoming carry.
    #[inline(always)]
    pub fn set_result(
        &mut self,
        op: FlagOp,
        size: u8,
        dst: u64,
        src: u64,
        res: u64,
        carry_in: bool,
    ) {
        if matches!(op, FlagOp::Inc | FlagOp::Dec) {
            // INC/DEC keep CF: make it concrete before the record changes.
            let cf = self.cf();
            self.bits = (self.bits & !CF) | u64::from(cf);
        }
        let m = mask(size);
        self.op = op;
        self.size = size;
        self.carry_in = carry_in;
        self.dst = dst & m;
        self.src = src & m;
        self.res = res & m;
    }

    /// Sets the arithmetic flags in `which` to `values` (others untouched).
    #[inline]
    pub fn set_arith(&mut self, which: u64, values: u64) {
        self.materialize();
        self.bits = (self.bits & !which) | (values & which);
    }

    /// Sets or clears one flag bit.
    #[inline]
    pub fn set_flag(&mut self, bit: u64, on: bool) {
        if bit & ARITH != 0 {
            self.materialize();
        }
        if on {
            self.bits |= bit;
        } else {
            self.bits &= !bit;
        }
    }

    /// Whether a non-arithmetic flag (IF, DF, TF, ...) is set.
    #[inline]
    pub fn test(&self, bit: u64) -> bool {
        debug_assert_eq!(bit & ARITH, 0);
        self.bits & bit != 0
    }

    /// The whole RFLAGS value.
    pub fn get(&self) -> u64 {
        let mut f = *self;
        f.materialize();
        f.bits
    }

    /// Replaces RFLAGS.
    pub fn set(&mut self, value: u64) {
        *self = Flags::from_bits(value);
    }

    fn materialize(&mut self) {
        if self.op == FlagOp::None {
            return;
        }
        let mut v = 0;
        v |= u64::from(self.cf()) * CF;
        v |= u64::from(self.pf()) * PF;
        v |= u64::from(self.af()) * AF;
        v |= u64::from(self.zf()) * ZF;
        v |= u64::from(self.sf()) * SF;
        v |= u64::from(self.of()) * OF;
        self.bits = (self.bits & !ARITH) | v;
        self.op = FlagOp::None;
    }

    /// CF.
    #[inline]
    pub fn cf(&self) -> bool {
        let (d, s, r) = (self.dst, self.src, self.res);
        let bits = self.size as u64 * 8;
        match self.op {
            FlagOp::None | FlagOp::Inc | FlagOp::Dec => self.bits & CF != 0,
            FlagOp::Add => r < d,
            FlagOp::Adc => r < d || (self.carry_in && r == d),
            FlagOp::Sub => d < s,
            FlagOp::Sbb => d < s || (self.carry_in && d == s),
            FlagOp::Logic => false,
            FlagOp::Neg => s != 0,
            FlagOp::Shl => s <= bits && (d >> (bits - s)) & 1 != 0,
            FlagOp::Shr => (d >> (s - 1)) & 1 != 0,
            FlagOp::Sar => {
                let signed = sign_extend(d, self.size);
                (signed >> (s - 1).min(63)) & 1 != 0
            }
        }
    }

    /// ZF.
    #[inline]
    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & ZF != 0,
            _ => self.res == 0,
        }
    }

    /// SF.
    #[inline]
    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & SF != 0,
            _ => self.res & sign_bit(self.size) != 0,
        }
    }

    /// PF: even parity of the low byte of the result.
    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & PF != 0,
            _ => parity(self.res),
        }
    }

    /// AF: carry or borrow out of bit 3.
    #[inline]
    pub fn af(&self) -> bool {
        let (d, s, r) = (self.dst, self.src, self.res);
        match self.op {
            FlagOp::None => self.bits & AF != 0,
            FlagOp::Add | FlagOp::Adc | FlagOp::Sub | FlagOp::Sbb | FlagOp::Neg => {
                (d ^ s ^ r) & 0x10 != 0
            }
            FlagOp::Inc => r & 0xf == 0,
            FlagOp::Dec => r & 0xf == 0xf,
            FlagOp::Logic | FlagOp::Shl | FlagOp::Shr | FlagOp::Sar => false,
        }
    }

    /// OF.
    #[inline]
    pub fn of(&self) -> bool {
        let (d, s, r) = (self.dst, self.src, self.res);
        let sign = sign_bit(self.size);
        match self.op {
            FlagOp::None => self.bits & OF != 0,
            FlagOp::Add | FlagOp::Adc => (d ^ r) & (s ^ r) & sign != 0,
            FlagOp::Sub | FlagOp::Sbb => (d ^ s) & (d ^ r) & sign != 0,
            FlagOp::Logic | FlagOp::Sar => false,
            FlagOp::Inc => r == sign,
            FlagOp::Dec => d == sign,
            FlagOp::Neg => s == sign,
            // Defined for 1-bit shifts; real CPUs use the same formula
            // for larger counts (the SDM calls it undefined there).
            FlagOp::Shl => ((r & sign) != 0) != self.cf(),
            FlagOp::Shr => d & sign != 0,
        }
    }

    /// Evaluates a condition code (SDM Vol. 1 Appendix B).
    #[inline]
    pub fn cond(&self, cc: ConditionCode) -> bool {
        use ConditionCode as C;
        match cc {
            C::None => true,
            C::o => self.of(),
            C::no => !self.of(),
            C::b => self.cf(),
            C::ae => !self.cf(),
            C::e => self.zf(),
            C::ne => !self.zf(),
            C::be => self.cf() || self.zf(),
            C::a => !self.cf() && !self.zf(),
            C::s => self.sf(),
            C::ns => !self.sf(),
            C::p => self.pf(),
            C::np => !self.pf(),
            C::l => self.sf() != self.of(),
            C::ge => self.sf() == self.of(),
            C::le => self.zf() || self.sf() != self.of(),
            C::g => !self.zf() && self.sf() == self.of(),
        }
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline]
pub fn sign_extend(v: u64, size: u8) -> u64 {
    match size {
        1 => v as u8 as i8 as i64 as u64,
        2 => v as u16 as i16 as i64 as u64,
        4 => v as u32 as i32 as i64 as u64,
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_after(op: FlagOp, size: u8, dst: u64, src: u64, res: u64) -> u64 {
        let mut f = Flags::default();
        f.set_result(op, size, dst, src, res, false);
        f.get() & ARITH
    }

    #[test]
    fn add_sets_carry_overflow_and_adjust() {
        // 0x7f + 1 = 0x80: OF, SF, AF; no CF.
        assert_eq!(flags_after(FlagOp::Add, 1, 0x7f, 1, 0x80), OF | SF | AF);
        // 0xff + 1 = 0x00: CF, ZF, AF, PF.
        assert_eq!(
            flags_after(FlagOp::Add, 1, 0xff, 1, 0x100),
            CF | ZF | AF | PF
        );
    }

    #[test]
    fn sub_borrow_and_signed_overflow() {
        // 0 - 1 = 0xffffffff: CF, SF, AF, PF.
        assert_eq!(
            flags_after(FlagOp::Sub, 4, 0, 1, u64::MAX),
            CF | SF | AF | PF
        );
        // 0x80 - 1 = 0x7f: OF, AF.
        assert_eq!(flags_after(FlagOp::Sub, 1, 0x80, 1, 0x7f), OF | AF);
    }

    #[test]
    fn inc_and_dec_keep_carry() {
        let mut f = Flags::default();
        f.set_result(FlagOp::Add, 1, 0xff, 1, 0, false); // CF=1
        f.set_result(FlagOp::Inc, 1, 1, 1, 2, false);
        assert!(f.cf());
        f.set_result(FlagOp::Dec, 1, 0x80, 1, 0x7f, false);
        assert!(f.cf() && f.of());
    }

    #[test]
    fn shifts_report_the_last_bit_out() {
        let mut f = Flags::default();
        f.set_result(FlagOp::Shl, 1, 0x81, 1, 0x02, false);
        assert!(f.cf() && f.of());
        f.set_result(FlagOp::Shr, 1, 0x81, 1, 0x40, false);
        assert!(f.cf() && f.of());
        f.set_result(FlagOp::Sar, 1, 0x80, 8, 0xff, false);
        assert!(f.cf() && !f.of());
    }

    #[test]
    fn conditions_follow_the_flags() {
        let mut f = Flags::default();
        f.set_result(FlagOp::Sub, 4, 1, 2, 1u64.wrapping_sub(2), false);
        assert!(f.cond(ConditionCode::b) && f.cond(ConditionCode::l) && f.cond(ConditionCode::ne));
        assert!(!f.cond(ConditionCode::g) && !f.cond(ConditionCode::a));
    }

    #[test]
    fn set_and_get_round_trip_non_arithmetic_bits() {
        let mut f = Flags::default();
        f.set(IF | DF | CF | 0x8000_0000_0000_0000);
        f.set_flag(TF, true);
        assert_eq!(f.get(), IF | DF | CF | TF | FIXED | 0x8000_0000_0000_0000);
    }
}
