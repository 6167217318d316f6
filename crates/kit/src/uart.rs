//! Shared emitters: UART output, debug-exit, ACPI power-off and parking.
//!
//! Everything here works at any bitness: the routines only use `AL`, `AH`,
//! `DX` and the string pointer `SI`/`ESI`/`RSI`, whose width `lodsb` picks
//! from the code's address size.

use iced_x86::code_asm::*;

use crate::image::Asm;
use crate::{COM1, DEBUG_EXIT_PORT, PM1A_CNT_PORT};

/// UART transmit holding register (write, DLAB=0).
const THR: u16 = COM1;
/// Interrupt enable register (DLAB=0).
const IER: u16 = COM1 + 1;
/// Line control register: word length, parity, stop bits, DLAB.
const LCR: u16 = COM1 + 3;
/// Line status register.
const LSR: u16 = COM1 + 5;
/// LSR bit 5, THRE: the transmit holding register can take a byte.
const LSR_THRE: i32 = 1 << 5;
/// LCR value 8N1 with DLAB clear, so THR/IER are visible at +0/+1.
const LCR_8N1: u32 = 0x03;
/// PM1a_CNT value that powers off: SLP_EN (bit 13) | SLP_TYP = 5 (bits
/// 12:10), the S5 "soft off" sleep type (ACPI spec, 4.8.3.2.1).
const PM1_SLEEP_S5: u32 = (1 << 13) | (5 << 10);

/// The print routines of one code part. Create it before emitting calls,
/// and call [`Uart::emit_routines`] once, after the part's last instruction
/// (the routines are only reached through `call`).
pub(crate) struct Uart {
    puts: CodeLabel,
    putc: CodeLabel,
}

impl Uart {
    /// Reserves the labels of the print routines in `a`.
    pub(crate) fn new(a: &mut CodeAssembler) -> Self {
        Self {
            puts: a.create_label(),
            putc: a.create_label(),
        }
    }

    /// Programs the line format and disables UART interrupts. The baud
    /// divisor is left alone: a virtual UART ignores it.
    pub(crate) fn init(a: &mut CodeAssembler) -> Asm {
        out_byte(a, LCR, LCR_8N1)?;
        out_byte(a, IER, 0)
    }

    /// Prints the NUL-terminated string at `address` (an offset from DS in
    /// real mode, a linear address otherwise). Clobbers AX, DX and (E/R)SI.
    pub(crate) fn print(&self, a: &mut CodeAssembler, address: u32) -> Asm {
        if a.bitness() == 16 {
            a.mov(si, address)?;
        } else {
            // In 64-bit mode writing ESI zero-extends into RSI.
            a.mov(esi, address)?;
        }
        a.call(self.puts)?;
        Ok(())
    }

    /// Prints the NUL-terminated string (E/R)SI already points at. Clobbers
    /// AX, DX and (E/R)SI.
    pub(crate) fn print_si(&self, a: &mut CodeAssembler) -> Asm {
        a.call(self.puts)?;
        Ok(())
    }

    /// Prints the character in AL. Clobbers AH and DX.
    pub(crate) fn putc(&self, a: &mut CodeAssembler) -> Asm {
        a.call(self.putc)?;
        Ok(())
    }

    /// Emits `puts` and `putc`. Requires DF=0 (`cld`) so `lodsb` walks
    /// forward, and a usable stack for `call`/`ret`.
    pub(crate) fn emit_routines(&mut self, a: &mut CodeAssembler) -> Asm {
        // puts: load the next byte, stop at NUL, else print it and loop.
        let mut done = a.create_label();
        a.set_label(&mut self.puts)?;
        a.lodsb()?;
        a.test(al, al)?;
        a.jz(done)?;
        a.call(self.putc)?;
        a.jmp(self.puts)?;
        a.set_label(&mut done)?;
        a.ret()?;

        // putc: poll LSR until THRE says the transmitter has room, then
        // write the byte to THR. AH keeps the character meanwhile because
        // `in` needs AL.
        let mut wait = a.create_label();
        a.set_label(&mut self.putc)?;
        a.mov(ah, al)?;
        a.mov(dx, u32::from(LSR))?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, LSR_THRE)?;
        a.jz(wait)?;
        a.mov(al, ah)?;
        a.mov(dx, u32::from(THR))?;
        a.out(dx, al)?;
        a.ret()?;
        Ok(())
    }
}

/// `out port, value` through DX/AL (ports above 0xff need DX anyway).
pub(crate) fn out_byte(a: &mut CodeAssembler, port: u16, value: u32) -> Asm {
    a.mov(dx, u32::from(port))?;
    a.mov(al, value)?;
    a.out(dx, al)?;
    Ok(())
}

/// Ends the VM through debug-exit with status `(value << 1) | 1`, then
/// parks in case the write did not stop the vCPU.
pub(crate) fn exit(a: &mut CodeAssembler, value: u8) -> Asm {
    a.mov(al, u32::from(value))?;
    a.out(u32::from(DEBUG_EXIT_PORT), al)?;
    park(a)
}

/// Powers the machine off through ACPI PM1a_CNT (a 16-bit register, hence
/// `out dx, ax`), then parks while the VMM acts on it.
pub(crate) fn power_off(a: &mut CodeAssembler) -> Asm {
    a.mov(dx, u32::from(PM1A_CNT_PORT))?;
    a.mov(ax, PM1_SLEEP_S5)?;
    a.out(dx, ax)?;
    park(a)
}

/// `cli; hlt` forever. With IF=0 only an NMI/INIT/SMI could wake the vCPU,
/// and the `jmp` puts it straight back to sleep. (The loop label sits on
/// `hlt` so callers may put their own label on the `cli`.)
pub(crate) fn park(a: &mut CodeAssembler) -> Asm {
    let mut again = a.create_label();
    a.cli()?;
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)?;
    Ok(())
}

/// For single-CPU programs: every vCPU except the bootstrap one (EDI = 0)
/// parks here, so extra vCPUs cannot interleave output or race on tables.
/// Works in 16-bit code too (`test edi, edi` gets an operand-size prefix).
pub(crate) fn bsp_only(a: &mut CodeAssembler) -> Asm {
    let mut bsp = a.create_label();
    a.test(edi, edi)?;
    a.jz(bsp)?;
    park(a)?;
    a.set_label(&mut bsp)?;
    Ok(())
}
