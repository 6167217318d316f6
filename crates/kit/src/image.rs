//! Building a flat image from code parts and data placed at fixed offsets.
//!
//! `code_asm` cannot use a label as an immediate or, outside 64-bit mode, as
//! a memory operand, and a `CodeAssembler` has a single bitness. So every
//! program is laid out by hand: each code part and the data area start at a
//! fixed image offset, which makes every address known before assembling.
//! [`Image::place`] refuses overlaps, so a part that outgrows its slot is an
//! error instead of silent corruption.

use iced_x86::code_asm::CodeAssembler;

use crate::KitError;

/// What an emitter closure returns.
pub(crate) type Asm = Result<(), KitError>;

/// One assembled stretch of code, recorded so tests can decode it at the
/// bitness it was assembled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CodePart {
    /// Image offset of the first byte.
    pub(crate) offset: usize,
    /// Length in bytes.
    pub(crate) len: usize,
    /// 16, 32 or 64.
    pub(crate) bitness: u32,
}

/// A flat image under construction.
pub(crate) struct Image {
    load: u64,
    bytes: Vec<u8>,
    used: Vec<(usize, usize)>,
    parts: Vec<CodePart>,
}

impl Image {
    /// Starts an empty image that will be loaded at `load`.
    pub(crate) fn new(load: u64) -> Self {
        Self {
            load,
            bytes: Vec::new(),
            used: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// The linear (== physical) address of image offset `offset`.
    pub(crate) fn linear(&self, offset: usize) -> u64 {
        self.load + offset as u64
    }

    /// Assembles `emit`'s instructions at `offset` for `bitness`.
    ///
    /// 32/64-bit code is assembled for its linear address (flat segments).
    /// 16-bit code is assembled for `CS = load >> 4`, so its IP is simply the
    /// image offset. Branches inside a part are IP-relative, so this only
    /// matters to the encoder's range checks.
    pub(crate) fn code(
        &mut self,
        what: &'static str,
        offset: usize,
        bitness: u32,
        emit: impl FnOnce(&mut CodeAssembler) -> Asm,
    ) -> Asm {
        let mut a = CodeAssembler::new(bitness)?;
        emit(&mut a)?;
        let ip = if bitness == 16 {
            offset as u64
        } else {
            self.linear(offset)
        };
        let bytes = a.assemble(ip)?;
        self.place(what, offset, &bytes)?;
        self.parts.push(CodePart {
            offset,
            len: bytes.len(),
            bitness,
        });
        Ok(())
    }

    /// Copies `bytes` to `offset`, zero-padding any gap before it.
    pub(crate) fn place(&mut self, what: &'static str, offset: usize, bytes: &[u8]) -> Asm {
        let end = offset + bytes.len();
        let overlaps = self
            .used
            .iter()
            .any(|&(start, stop)| offset < stop && start < end);
        if overlaps {
            return Err(KitError::Layout {
                what,
                offset,
                len: bytes.len(),
            });
        }
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset..end].copy_from_slice(bytes);
        self.used.push((offset, end));
        Ok(())
    }

    /// The finished image and the code parts inside it.
    pub(crate) fn finish(self) -> (Vec<u8>, Vec<CodePart>) {
        (self.bytes, self.parts)
    }
}

/// A data area (strings, descriptor tables) that grows from a fixed offset.
/// Every `push_*` returns the image offset of what it appended.
pub(crate) struct DataArea {
    offset: usize,
    bytes: Vec<u8>,
}

impl DataArea {
    /// Starts an empty data area at image offset `offset`.
    pub(crate) fn new(offset: usize) -> Self {
        Self {
            offset,
            bytes: Vec::new(),
        }
    }

    /// Pads with zeros until the next byte is `align`-aligned.
    pub(crate) fn align(&mut self, align: usize) {
        let aligned = (self.offset + self.bytes.len()).next_multiple_of(align);
        self.bytes.resize(aligned - self.offset, 0);
    }

    /// Appends raw bytes.
    pub(crate) fn push_bytes(&mut self, bytes: &[u8]) -> usize {
        let at = self.offset + self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        at
    }

    /// Appends `text` with a NUL terminator (what the print routine expects).
    pub(crate) fn push_cstr(&mut self, text: &str) -> usize {
        let at = self.push_bytes(text.as_bytes());
        self.bytes.push(0);
        at
    }

    /// Appends 8-byte aligned little-endian quadwords (e.g. a GDT).
    pub(crate) fn push_qwords(&mut self, words: &[u64]) -> usize {
        self.align(8);
        let at = self.offset + self.bytes.len();
        for word in words {
            self.bytes.extend_from_slice(&word.to_le_bytes());
        }
        at
    }

    /// Writes the area into `image`.
    pub(crate) fn place_into(self, image: &mut Image) -> Asm {
        image.place("data area", self.offset, &self.bytes)
    }
}

/// Converts an address into a 16-bit real-mode offset, or explains why not.
pub(crate) fn offset16(what: &'static str, address: u64) -> Result<u32, KitError> {
    if address <= 0xffff {
        Ok(address as u32)
    } else {
        Err(KitError::Address { what, address })
    }
}

/// Converts an address into a 32-bit immediate/displacement, or explains
/// why not (everything the kit touches lies below 4 GiB).
pub(crate) fn addr32(what: &'static str, address: u64) -> Result<u32, KitError> {
    u32::try_from(address).map_err(|_| KitError::Address { what, address })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_pieces_are_refused() {
        let mut image = Image::new(0x10000);
        assert!(image.place("a", 0, &[1; 16]).is_ok());
        assert!(image.place("b", 8, &[2; 4]).is_err());
        assert!(image.place("c", 16, &[3; 4]).is_ok());
    }

    #[test]
    fn gaps_between_pieces_are_zero_padded() {
        let mut image = Image::new(0x10000);
        assert!(image.place("a", 4, &[7]).is_ok());
        assert_eq!(image.finish().0, vec![0, 0, 0, 0, 7]);
    }

    #[test]
    fn data_area_reports_image_offsets() {
        let mut data = DataArea::new(0x200);
        assert_eq!(data.push_cstr("hi"), 0x200);
        assert_eq!(data.push_qwords(&[1]), 0x208);
    }
}
