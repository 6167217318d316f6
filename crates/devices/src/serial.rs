//! 16550A UART (serial port).
//!
//! Models the National Semiconductor / TI PC16550D: eight registers at a
//! port base (COM1 is 0x3f8, IRQ 4), the divisor latch behind LCR.DLAB,
//! receive FIFO, scratch register, loopback mode (MCR bit 4, which Linux's
//! 8250 driver uses to probe the port) and the interrupt identification
//! priorities of the datasheet's Table 4 (line status > received data >
//! transmitter empty > modem status).
//!
//! Transmission is instantaneous: a byte written to THR goes straight to
//! the [`ConsoleSink`], so LSR always shows THRE and TEMT and the THRE
//! interrupt re-arms after every write. Line errors, break and the
//! character-timeout interrupt are not modelled (nothing can corrupt a
//! byte between host and guest). The IRQ line follows "interrupt pending
//! AND MCR.OUT2", which is how the PC wires the 8250's INTR pin.

use std::collections::VecDeque;
use std::sync::Arc;

use alcazar_core::inspect::Tree;
use alcazar_core::irq::IrqLine;
use alcazar_core::BusDevice;

use crate::sink::ConsoleSink;

/// The input clock divided by 16: the baud rate of divisor 1 (1.8432 MHz
/// crystal, datasheet "Programmable Baud Generator").
const BAUD_BASE: u32 = 115_200;

/// Receive FIFO depth. Larger than the chip's 16 bytes so that host input
/// arriving in bursts is not dropped; the guest cannot tell.
pub const RX_FIFO_DEPTH: usize = 64;

// Register offsets (datasheet Table 2).
const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

// IER bits.
const IER_RDA: u8 = 1 << 0;
const IER_THRE: u8 = 1 << 1;
const IER_MASK: u8 = 0x0f;

// IIR values.
const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_FIFO_ENABLED: u8 = 0xc0;

// LCR, MCR, LSR bits.
const LCR_DLAB: u8 = 1 << 7;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
const LSR_DR: u8 = 1 << 0;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

// FCR bits.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;

/// A 16550A UART.
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    thre_pending: bool,
    msr_delta: u8,
    rx: VecDeque<u8>,
    irq: Arc<dyn IrqLine>,
    irq_level: bool,
    out: ConsoleSink,
}

impl std::fmt::Debug for Uart16550 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart16550")
            .field("ier", &self.ier)
            .field("iir", &self.iir())
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("lsr", &self.lsr())
            .field("rx_queued", &self.rx.len())
            .finish()
    }
}

impl Uart16550 {
    /// A UART in its power-on state (datasheet Table 13: all interrupts
    /// off, 8N1 not yet programmed, divisor 12 = 9600 baud) sending its
    /// output to `out` and raising `irq`.
    pub fn new(out: ConsoleSink, irq: Arc<dyn IrqLine>) -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 12,
            dlm: 0,
            fifo_enabled: false,
            thre_pending: false,
            msr_delta: 0,
            rx: VecDeque::with_capacity(RX_FIFO_DEPTH),
            irq,
            irq_level: false,
            out,
        }
    }

    /// How many more input bytes the receive FIFO takes.
    pub fn rx_space(&self) -> usize {
        RX_FIFO_DEPTH - self.rx.len()
    }

    /// Queues host input for the guest; returns how many bytes fitted.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.rx_space());
        self.rx.extend(&bytes[..n]);
        self.update_irq();
        n
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// The interrupt identification register, highest priority first.
    fn iir(&self) -> u8 {
        let fifo = if self.fifo_enabled {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        let id = if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else {
            IIR_NONE
        };
        fifo | id
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | LSR_THRE | LSR_TEMT
    }

    /// Modem status: in loopback the outputs feed the inputs (CTS=RTS,
    /// DSR=DTR, RI=OUT1, DCD=OUT2); otherwise a connected line (DCD, DSR,
    /// CTS asserted).
    fn msr(&self) -> u8 {
        let lines = if self.loopback() {
            let m = self.mcr;
            (m & 0x02) << 3 | (m & 0x01) << 5 | (m & 0x04) << 4 | (m & 0x08) << 4
        } else {
            0xb0
        };
        lines | self.msr_delta
    }

    fn update_irq(&mut self) {
        let pending = self.iir() & IIR_NONE == 0;
        let level = pending && self.mcr & MCR_OUT2 != 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn transmit(&mut self, byte: u8) {
        // Writing THR clears the THRE interrupt; the byte leaves at once,
        // so THR is empty again and the interrupt re-arms: a fresh edge.
        self.thre_pending = false;
        self.update_irq();
        if self.loopback() {
            if self.rx.len() < RX_FIFO_DEPTH {
                self.rx.push_back(byte);
            }
        } else {
            self.out.write(&[byte]);
        }
        self.thre_pending = true;
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match offset {
            RBR_THR_DLL if self.dlab() => self.dll,
            RBR_THR_DLL => self.rx.pop_front().unwrap_or(0),
            IER_DLM if self.dlab() => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => {
                let iir = self.iir();
                // Reading IIR while it reports THRE acknowledges it.
                if iir & 0x0f == IIR_THRE {
                    self.thre_pending = false;
                }
                iir
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => self.lsr(),
            MSR => {
                let v = self.msr();
                self.msr_delta = 0;
                v
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    fn write_register(&mut self, offset: u64, value: u8) {
        match offset {
            RBR_THR_DLL if self.dlab() => self.dll = value,
            RBR_THR_DLL => self.transmit(value),
            IER_DLM if self.dlab() => self.dlm = value,
            IER_DLM => {
                let enabling_thre = value & IER_THRE != 0 && self.ier & IER_THRE == 0;
                self.ier = value & IER_MASK;
                if enabling_thre {
                    // THR is always empty: enabling ETBEI raises THRE at once.
                    self.thre_pending = true;
                }
            }
            IIR_FCR => {
                self.fifo_enabled = value & FCR_ENABLE != 0;
                if value & FCR_CLEAR_RX != 0 {
                    self.rx.clear();
                }
            }
            LCR => self.lcr = value,
            MCR => {
                let before = self.msr() & 0xf0;
                self.mcr = value & 0x1f;
                let after = self.msr() & 0xf0;
                self.msr_delta |= modem_deltas(before, after);
            }
            SCR => self.scr = value,
            _ => {} // LSR and MSR are read-only.
        }
    }
}

impl Uart16550 {
    /// The inspector's view: every register by its datasheet name, read
    /// without side effects (IIR without acknowledging THRE, MSR without
    /// clearing its deltas, the receive FIFO peeked, not popped).
    fn tree(&self) -> Tree {
        let mut t = Tree::new();
        let lcr = self.lcr;
        let word_length = 5 + (lcr & 3);
        let parity = match (lcr >> 3) & 7 {
            0 | 2 | 4 | 6 => 'N',
            1 => 'O',
            3 => 'E',
            5 => 'M',
            _ => 'S',
        };
        let stop = if lcr & 4 == 0 {
            "1"
        } else if word_length == 5 {
            "1.5"
        } else {
            "2"
        };
        let divisor = u32::from(u16::from_le_bytes([self.dll, self.dlm]));
        t.hex("ier", u64::from(self.ier), 2)
            .hex("iir", u64::from(self.iir()), 2)
            .hex("lcr", u64::from(lcr), 2)
            .hex("mcr", u64::from(self.mcr), 2)
            .hex("lsr", u64::from(self.lsr()), 2)
            .hex("msr", u64::from(self.msr()), 2)
            .hex("scr", u64::from(self.scr), 2)
            .hex("dll", u64::from(self.dll), 2)
            .hex("dlm", u64::from(self.dlm), 2)
            .value("dlab", self.dlab())
            .value("line", format!("{word_length}{parity}{stop}"));
        match BAUD_BASE.checked_div(divisor) {
            Some(baud) => t.value("baud", baud),
            None => t.value("baud", "none (divisor 0)"),
        };
        t.value("fifo_enabled", self.fifo_enabled)
            .value("loopback", self.loopback())
            .value("rx_fifo", self.rx.len())
            .value("rx_fifo_depth", RX_FIFO_DEPTH)
            .value("tx_fifo", 0);
        match self.rx.front() {
            Some(&b) => t.hex("rbr", u64::from(b), 2),
            None => t.value("rbr", "empty"),
        };
        t.value("thre_interrupt_pending", self.thre_pending)
            .value("irq", self.irq_level);
        t
    }
}

/// MSR delta bits for a change of the modem lines from `before` to
/// `after` (bits 7:4): DCTS, DDSR and DDCD on any change, TERI when RI falls.
fn modem_deltas(before: u8, after: u8) -> u8 {
    let changed = (before ^ after) >> 4;
    let ri_fell = (before & !after) >> 4 & 0x04;
    (changed & 0x0b) | ri_fell
}

impl BusDevice for Uart16550 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART is an 8-bit device: a wider access reads one register
        // and the upper bytes float high.
        data.fill(0xff);
        if let Some(first) = data.first_mut() {
            *first = self.read_register(offset);
        }
        self.update_irq();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            self.write_register(offset, value);
        }
        self.update_irq();
    }

    fn inspect(&self) -> Tree {
        self.tree()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Line {
        level: AtomicBool,
        rises: AtomicU32,
    }

    impl IrqLine for Line {
        fn set_level(&self, high: bool) {
            if high && !self.level.swap(true, Ordering::SeqCst) {
                self.rises.fetch_add(1, Ordering::SeqCst);
            }
            self.level.store(high, Ordering::SeqCst);
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Uart16550, Capture, Arc<Line>) {
        let cap = Capture::default();
        let line = Arc::new(Line::default());
        let u = Uart16550::new(ConsoleSink::new(Box::new(cap.clone())), line.clone());
        (u, cap, line)
    }

    fn rd(u: &mut Uart16550, off: u64) -> u8 {
        let mut b = [0];
        u.read(off, &mut b);
        b[0]
    }

    #[test]
    fn thr_writes_reach_the_console() {
        let (mut u, cap, _) = uart();
        for b in b"hi\n" {
            u.write(RBR_THR_DLL, &[*b]);
        }
        assert_eq!(&*cap.0.lock().unwrap(), b"hi\n");
        assert_eq!(rd(&mut u, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn divisor_latch_hides_behind_dlab() {
        let (mut u, cap, _) = uart();
        u.write(LCR, &[LCR_DLAB | 3]);
        u.write(RBR_THR_DLL, &[1]);
        u.write(IER_DLM, &[0]);
        assert_eq!(rd(&mut u, RBR_THR_DLL), 1);
        u.write(LCR, &[3]);
        assert_eq!(rd(&mut u, IER_DLM), 0);
        assert!(cap.0.lock().unwrap().is_empty());
    }

    #[test]
    fn loopback_echoes_and_mirrors_modem_lines() {
        let (mut u, cap, _) = uart();
        u.write(MCR, &[MCR_LOOP | 0x0f]);
        assert_eq!(rd(&mut u, MSR) & 0xf0, 0xf0);
        u.write(RBR_THR_DLL, &[0x5a]);
        assert_eq!(rd(&mut u, LSR) & LSR_DR, LSR_DR);
        assert_eq!(rd(&mut u, RBR_THR_DLL), 0x5a);
        assert!(cap.0.lock().unwrap().is_empty());
    }

    #[test]
    fn received_data_interrupt_needs_ier_and_out2() {
        let (mut u, _, line) = uart();
        u.enqueue_input(b"x");
        assert!(!line.level.load(Ordering::SeqCst));
        u.write(IER_DLM, &[IER_RDA]);
        assert!(!line.level.load(Ordering::SeqCst), "OUT2 gates the line");
        u.write(MCR, &[MCR_OUT2]);
        assert!(line.level.load(Ordering::SeqCst));
        assert_eq!(rd(&mut u, IIR_FCR) & 0x0f, IIR_RDA);
        assert_eq!(rd(&mut u, RBR_THR_DLL), b'x');
        assert!(!line.level.load(Ordering::SeqCst));
    }

    #[test]
    fn thre_interrupt_rearms_with_a_new_edge_after_each_byte() {
        let (mut u, _, line) = uart();
        u.write(MCR, &[MCR_OUT2]);
        u.write(IER_DLM, &[IER_THRE]);
        assert_eq!(line.rises.load(Ordering::SeqCst), 1);
        assert_eq!(rd(&mut u, IIR_FCR) & 0x0f, IIR_THRE);
        assert_eq!(
            rd(&mut u, IIR_FCR) & 0x0f,
            IIR_NONE,
            "reading IIR acks THRE"
        );
        u.write(RBR_THR_DLL, b"a");
        u.write(RBR_THR_DLL, b"b");
        assert_eq!(line.rises.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn fifo_enable_shows_in_iir_and_input_is_bounded() {
        let (mut u, _, _) = uart();
        u.write(IIR_FCR, &[FCR_ENABLE]);
        assert_eq!(rd(&mut u, IIR_FCR) & 0xc0, 0xc0);
        assert_eq!(u.enqueue_input(&[0; 100]), RX_FIFO_DEPTH);
        assert_eq!(u.rx_space(), 0);
    }

    #[test]
    fn wide_accesses_do_not_panic() {
        let (mut u, _, _) = uart();
        let mut b = [0u8; 4];
        u.read(SCR, &mut b);
        u.write(SCR, &[1, 2, 3, 4]);
        u.write(SCR, &[]);
        u.read(99, &mut b);
        assert_eq!(rd(&mut u, SCR), 1);
    }

    fn shown(u: &Uart16550, path: &str) -> String {
        match u.inspect().get(path) {
            Some(alcazar_core::Node::Value(v)) => v,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn inspector_shows_the_registers_as_programmed() {
        let (mut u, _, _) = uart();
        u.write(LCR, &[LCR_DLAB | 0x1b]); // 8 bits, even parity, 1 stop
        u.write(RBR_THR_DLL, &[1]);
        u.write(IER_DLM, &[0]);
        u.write(LCR, &[0x1b]);
        u.write(IER_DLM, &[IER_RDA]);
        u.write(IIR_FCR, &[FCR_ENABLE]);
        u.write(MCR, &[MCR_OUT2 | 0x03]);
        u.write(SCR, &[0x5a]);
        u.enqueue_input(b"ab");
        assert_eq!(shown(&u, "lcr"), "0x1b");
        assert_eq!(shown(&u, "line"), "8E1");
        assert_eq!(shown(&u, "baud"), "115200");
        assert_eq!(shown(&u, "dll"), "0x01");
        assert_eq!(shown(&u, "ier"), "0x01");
        assert_eq!(shown(&u, "iir"), "0xc4");
        assert_eq!(shown(&u, "mcr"), "0x0b");
        assert_eq!(shown(&u, "lsr"), "0x61");
        assert_eq!(shown(&u, "scr"), "0x5a");
        assert_eq!(shown(&u, "rx_fifo"), "2");
        assert_eq!(shown(&u, "rbr"), "0x61");
        assert_eq!(shown(&u, "irq"), "true");
    }

    #[test]
    fn inspecting_pops_acknowledges_and_clears_nothing() {
        let (mut u, _, _) = uart();
        u.write(IER_DLM, &[IER_THRE]);
        u.write(MCR, &[MCR_LOOP]);
        u.write(MCR, &[0]); // loopback lines changed: MSR deltas set
        u.enqueue_input(b"x");
        let before = format!("{u:?}");
        let tree = u.inspect();
        assert_eq!(u.inspect(), tree);
        assert_eq!(format!("{u:?}"), before);
        assert_eq!(shown(&u, "iir"), "0x02", "THRE shown, not acknowledged");
        assert_ne!(
            rd(&mut u, MSR) & 0x0f,
            0,
            "deltas still there for the guest"
        );
        assert_eq!(
            rd(&mut u, RBR_THR_DLL),
            b'x',
            "the byte is still in the FIFO"
        );
    }
}
