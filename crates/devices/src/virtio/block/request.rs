//! virtio-blk requests, parsed from what the guest offered (virtio 1.2
//! §5.2.6), with no I/O.
//!
//! A request is one descriptor chain laid out as
//!
//! ```text
//! struct virtio_blk_req {
//!     le32 type;          // device-readable: the 16-byte header
//!     le32 reserved;
//!     le64 sector;
//!     u8   data[];        // readable (OUT, DISCARD) or writable (IN, GET_ID)
//!     u8   status;        // device-writable: the last writable byte
//! };
//! ```
//!
//! The driver may split these fields across descriptors any way it likes
//! (§2.7.4, "Message Framing"), so the request is located by byte offsets
//! into the chain's readable and writable parts rather than by
//! descriptor: the header is readable bytes `0..16`, the status is the
//! last writable byte, and the data is what lies between.
//!
//! [`parse`] is pure: it takes the header bytes and the two lengths and
//! returns a typed [`Request`] or the [`RequestError`] that decides the
//! status byte. The device does the I/O; a fuzz target can call `parse`
//! directly.

/// `VIRTIO_BLK_T_IN`: read sectors into the writable data.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`: write the readable data to sectors.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`: commit written data to stable storage.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_T_GET_ID`: the device ID string (20 bytes).
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// `VIRTIO_BLK_T_DISCARD`: the sectors' contents are no longer needed.
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;

/// `VIRTIO_BLK_S_OK`.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// `VIRTIO_BLK_S_IOERR`.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// `VIRTIO_BLK_S_UNSUPP`.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Bytes of the request header.
pub const HEADER_LEN: u64 = 16;
/// Bytes in a sector: the unit of `sector` and `capacity`, whatever
/// `blk_size` says (§5.2.4).
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the GET_ID answer (§5.2.6: `VIRTIO_BLK_ID_BYTES`).
pub const ID_BYTES: usize = 20;
/// Bytes of one `virtio_blk_discard_write_zeroes` range (§5.2.6).
pub const DISCARD_RANGE_LEN: u64 = 16;
/// The `unmap` flag of a discard range.
const DISCARD_FLAG_UNMAP: u32 = 1;

/// What the device accepts, beyond the layout rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The disk size in 512-byte sectors.
    pub capacity: u64,
    /// The device is read-only (`VIRTIO_BLK_F_RO`).
    pub readonly: bool,
    /// The most data bytes of one IN or OUT request.
    pub max_data: u64,
    /// Whether DISCARD was negotiated.
    pub discard: bool,
    /// The most ranges in one DISCARD request (`max_discard_seg`).
    pub max_discard_seg: u32,
    /// The most sectors in one discard range (`max_discard_sectors`).
    pub max_discard_sectors: u32,
}

/// A well-formed request. Data offsets count from the start of the
/// chain's readable (OUT, DISCARD: after the header) or writable (IN,
/// GET_ID: from 0) part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read `len` bytes from `sector` into writable bytes `0..len`.
    Read {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of 512.
        len: u32,
    },
    /// Write readable bytes `16..16 + len` to `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Bytes, a multiple of 512.
        len: u32,
    },
    /// Make every completed write durable.
    Flush,
    /// Write the ID string into writable bytes `0..len`.
    GetId {
        /// Bytes to write (at most [`ID_BYTES`]).
        len: u32,
    },
    /// Discard the ranges in readable bytes `16..16 + len`.
    Discard {
        /// Bytes of range structures, a multiple of 16.
        len: u32,
    },
}

/// Why a request is refused; [`RequestError::status`] is what the guest
/// sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No device-writable byte: nowhere to put the status. The chain is
    /// returned used with nothing written.
    #[error("the request has no status byte")]
    NoStatus,
    /// Fewer than 16 device-readable bytes.
    #[error("the request header is {0} bytes, not 16")]
    ShortHeader(u64),
    /// A request type the device does not implement (or did not offer).
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    /// The data length is not a multiple of 512.
    #[error("{0} data bytes is not a multiple of 512")]
    Unaligned(u64),
    /// More data than the device takes in one request.
    #[error("{0} data bytes is more than one request may carry")]
    TooLarge(u64),
    /// The sectors are not all inside the disk.
    #[error("sectors {sector}+{sectors} are outside the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sector count.
        sectors: u64,
    },
    /// A write or discard to a read-only device.
    #[error("the device is read-only")]
    ReadOnly,
    /// A discard range the device will not perform (unmap flag, reserved
    /// flags, or more sectors or ranges than advertised).
    #[error("discard range not supported")]
    DiscardUnsupported,
}

impl RequestError {
    /// The status byte the guest gets, or `None` if there is no status
    /// byte to write.
    pub fn status(self) -> Option<u8> {
        match self {
            RequestError::NoStatus => None,
            RequestError::Unsupported(_) | RequestError::DiscardUnsupported => {
                Some(VIRTIO_BLK_S_UNSUPP)
            }
            _ => Some(VIRTIO_BLK_S_IOERR),
        }
    }
}

/// Checks that `sectors` sectors from `sector` lie inside `capacity`,
/// without overflow.
pub fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange { sector, sectors }),
    }
}

/// Parses a request from its first 16 readable bytes (`header`, shorter
/// if the chain has fewer) and the chain's total readable and writable
/// byte counts.
pub fn parse(
    header: &[u8],
    readable_len: u64,
    writable_len: u64,
    limits: &Limits,
) -> Result<Request, RequestError> {
    if writable_len == 0 {
        return Err(RequestError::NoStatus);
    }
    if readable_len < HEADER_LEN || header.len() < HEADER_LEN as usize {
        return Err(RequestError::ShortHeader(
            readable_len.min(header.len() as u64),
        ));
    }
    let le32 = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let kind = le32(0);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    // Everything writable but the status byte.
    let writable_data = writable_len - 1;
    let readable_data = readable_len - HEADER_LEN;
    match kind {
        VIRTIO_BLK_T_IN => {
            let len = data_len(writable_data, limits)?;
            check_range(sector, u64::from(len) / SECTOR_SIZE, limits.capacity)?;
            Ok(Request::Read { sector, len })
        }
        VIRTIO_BLK_T_OUT => {
            if limits.readonly {
                return Err(RequestError::ReadOnly);
            }
            let len = data_len(readable_data, limits)?;
            check_range(sector, u64::from(len) / SECTOR_SIZE, limits.capacity)?;
            Ok(Request::Write { sector, len })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Request::Flush),
        VIRTIO_BLK_T_GET_ID => Ok(Request::GetId {
            len: writable_data.min(ID_BYTES as u64) as u32,
        }),
        VIRTIO_BLK_T_DISCARD if limits.discard => {
            if limits.readonly {
                return Err(RequestError::ReadOnly);
            }
            if !readable_data.is_multiple_of(DISCARD_RANGE_LEN) {
                return Err(RequestError::Unaligned(readable_data));
            }
            if readable_data / DISCARD_RANGE_LEN > u64::from(limits.max_discard_seg) {
                return Err(RequestError::DiscardUnsupported);
            }
            Ok(Request::Discard {
                len: readable_data as u32,
            })
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

/// The data length of an IN or OUT request, checked.
fn data_len(len: u64, limits: &Limits) -> Result<u32, RequestError> {
    if len > limits.max_data || len > u64::from(u32::MAX) {
        return Err(RequestError::TooLarge(len));
    }
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::Unaligned(len));
    }
    Ok(len as u32)
}

/// One range of a DISCARD request, checked: byte offset and length in
/// the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscardRange {
    /// First byte.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// Parses the `virtio_blk_discard_write_zeroes` structures of a DISCARD
/// request (`le64 sector; le32 num_sectors; le32 flags`, §5.2.6).
pub fn parse_discard(bytes: &[u8], limits: &Limits) -> Result<Vec<DiscardRange>, RequestError> {
    if !(bytes.len() as u64).is_multiple_of(DISCARD_RANGE_LEN) {
        return Err(RequestError::Unaligned(bytes.len() as u64));
    }
    bytes
        .chunks_exact(DISCARD_RANGE_LEN as usize)
        .map(|r| {
            let mut s = [0u8; 8];
            s.copy_from_slice(&r[0..8]);
            let sector = u64::from_le_bytes(s);
            let sectors = u32::from_le_bytes([r[8], r[9], r[10], r[11]]);
            let flags = u32::from_le_bytes([r[12], r[13], r[14], r[15]]);
            // §5.2.6.2: UNSUPP if the unmap flag is set for a discard;
            // the other flag bits are reserved.
            if flags & DISCARD_FLAG_UNMAP != 0 || flags & !DISCARD_FLAG_UNMAP != 0 {
                return Err(RequestError::DiscardUnsupported);
            }
            if sectors > limits.max_discard_sectors {
                return Err(RequestError::DiscardUnsupported);
            }
            check_range(sector, u64::from(sectors), limits.capacity)?;
            Ok(DiscardRange {
                offset: sector * SECTOR_SIZE,
                len: u64::from(sectors) * SECTOR_SIZE,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        capacity: 2048,
        readonly: false,
        max_data: 1 << 20,
        discard: true,
        max_discard_seg: 4,
        max_discard_sectors: 1024,
    };

    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    #[test]
    fn reads_and_writes_parse_with_their_data_lengths() {
        let h = header(VIRTIO_BLK_T_IN, 8);
        assert_eq!(
            parse(&h, 16, 4096 + 1, &LIMITS),
            Ok(Request::Read {
                sector: 8,
                len: 4096
            })
        );
        let h = header(VIRTIO_BLK_T_OUT, 2047);
        assert_eq!(
            parse(&h, 16 + 512, 1, &LIMITS),
            Ok(Request::Write {
                sector: 2047,
                len: 512
            })
        );
    }

    #[test]
    fn a_short_header_is_an_io_error() {
        let h = header(VIRTIO_BLK_T_IN, 0);
        let e = parse(&h[..8], 8, 513, &LIMITS).unwrap_err();
        assert_eq!(e, RequestError::ShortHeader(8));
        assert_eq!(e.status(), Some(VIRTIO_BLK_S_IOERR));
        // The readable part is short even if the caller passed 16 bytes.
        assert_eq!(
            parse(&h, 15, 513, &LIMITS),
            Err(RequestError::ShortHeader(15))
        );
    }

    #[test]
    fn no_writable_byte_means_no_status() {
        let h = header(VIRTIO_BLK_T_OUT, 0);
        let e = parse(&h, 16 + 512, 0, &LIMITS).unwrap_err();
        assert_eq!(e, RequestError::NoStatus);
        assert_eq!(e.status(), None);
    }

    #[test]
    fn sector_ranges_past_the_end_or_overflowing_are_refused() {
        let h = header(VIRTIO_BLK_T_IN, 2047);
        assert_eq!(
            parse(&h, 16, 1024 + 1, &LIMITS),
            Err(RequestError::OutOfRange {
                sector: 2047,
                sectors: 2
            })
        );
        let h = header(VIRTIO_BLK_T_OUT, u64::MAX);
        assert_eq!(
            parse(&h, 16 + 512, 1, &LIMITS),
            Err(RequestError::OutOfRange {
                sector: u64::MAX,
                sectors: 1
            })
        );
        // sector * 512 would overflow too: still just out of range.
        let h = header(VIRTIO_BLK_T_IN, u64::MAX / 512 + 1);
        assert!(matches!(
            parse(&h, 16, 513, &LIMITS),
            Err(RequestError::OutOfRange { .. })
        ));
        assert_eq!(
            check_range(u64::MAX, 0, 10),
            Err(RequestError::OutOfRange {
                sector: u64::MAX,
                sectors: 0
            })
        );
    }

    #[test]
    fn zero_length_data_is_a_no_op_inside_the_disk() {
        let h = header(VIRTIO_BLK_T_IN, 2048);
        assert_eq!(
            parse(&h, 16, 1, &LIMITS),
            Ok(Request::Read {
                sector: 2048,
                len: 0
            })
        );
        let h = header(VIRTIO_BLK_T_IN, 2049);
        assert!(parse(&h, 16, 1, &LIMITS).is_err());
    }

    #[test]
    fn data_must_be_whole_sectors_and_bounded() {
        let h = header(VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            parse(&h, 16 + 100, 1, &LIMITS),
            Err(RequestError::Unaligned(100))
        );
        assert_eq!(
            parse(&h, 16 + (2 << 20), 1, &LIMITS),
            Err(RequestError::TooLarge(2 << 20))
        );
        let huge = u64::MAX;
        assert_eq!(
            parse(&header(VIRTIO_BLK_T_IN, 0), 16, huge, &LIMITS),
            Err(RequestError::TooLarge(huge - 1))
        );
    }

    #[test]
    fn a_read_only_device_refuses_writes_and_discards_but_reads() {
        let ro = Limits {
            readonly: true,
            ..LIMITS
        };
        assert_eq!(
            parse(&header(VIRTIO_BLK_T_OUT, 0), 16 + 512, 1, &ro),
            Err(RequestError::ReadOnly)
        );
        assert_eq!(
            parse(&header(VIRTIO_BLK_T_DISCARD, 0), 32, 1, &ro),
            Err(RequestError::ReadOnly)
        );
        assert_eq!(RequestError::ReadOnly.status(), Some(VIRTIO_BLK_S_IOERR));
        assert!(parse(&header(VIRTIO_BLK_T_IN, 0), 16, 513, &ro).is_ok());
        assert_eq!(
            parse(&header(VIRTIO_BLK_T_FLUSH, 0), 16, 1, &ro),
            Ok(Request::Flush)
        );
    }

    #[test]
    fn unknown_types_are_unsupported() {
        for kind in [2, 5, 13, 14, 0x8000_0000, u32::MAX] {
            let e = parse(&header(kind, 0), 16, 1, &LIMITS).unwrap_err();
            assert_eq!(e, RequestError::Unsupported(kind));
            assert_eq!(e.status(), Some(VIRTIO_BLK_S_UNSUPP));
        }
        // Discard only when negotiated.
        let no_discard = Limits {
            discard: false,
            ..LIMITS
        };
        assert_eq!(
            parse(&header(VIRTIO_BLK_T_DISCARD, 0), 32, 1, &no_discard),
            Err(RequestError::Unsupported(VIRTIO_BLK_T_DISCARD))
        );
    }

    #[test]
    fn get_id_writes_at_most_twenty_bytes() {
        let h = header(VIRTIO_BLK_T_GET_ID, 0);
        assert_eq!(parse(&h, 16, 21, &LIMITS), Ok(Request::GetId { len: 20 }));
        assert_eq!(parse(&h, 16, 4097, &LIMITS), Ok(Request::GetId { len: 20 }));
        assert_eq!(parse(&h, 16, 5, &LIMITS), Ok(Request::GetId { len: 4 }));
    }

    fn range(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
        let mut r = sector.to_le_bytes().to_vec();
        r.extend_from_slice(&sectors.to_le_bytes());
        r.extend_from_slice(&flags.to_le_bytes());
        r
    }

    #[test]
    fn discard_ranges_are_checked() {
        let h = header(VIRTIO_BLK_T_DISCARD, 0);
        assert_eq!(
            parse(&h, 16 + 32, 1, &LIMITS),
            Ok(Request::Discard { len: 32 })
        );
        assert_eq!(
            parse(&h, 16 + 20, 1, &LIMITS),
            Err(RequestError::Unaligned(20))
        );
        assert_eq!(
            parse(&h, 16 + 5 * 16, 1, &LIMITS),
            Err(RequestError::DiscardUnsupported)
        );
        let mut two = range(8, 16, 0);
        two.extend(range(100, 1, 0));
        assert_eq!(
            parse_discard(&two, &LIMITS),
            Ok(vec![
                DiscardRange {
                    offset: 4096,
                    len: 8192
                },
                DiscardRange {
                    offset: 51200,
                    len: 512
                }
            ])
        );
        assert_eq!(
            parse_discard(&range(0, 1, 1), &LIMITS),
            Err(RequestError::DiscardUnsupported)
        );
        assert_eq!(
            parse_discard(&range(0, 1, 4), &LIMITS),
            Err(RequestError::DiscardUnsupported)
        );
        assert_eq!(
            parse_discard(&range(0, 1025, 0), &LIMITS),
            Err(RequestError::DiscardUnsupported)
        );
        assert!(matches!(
            parse_discard(&range(u64::MAX, 2, 0), &LIMITS),
            Err(RequestError::OutOfRange { .. })
        ));
        assert!(matches!(
            parse_discard(&range(2040, 9, 0), &LIMITS),
            Err(RequestError::OutOfRange { .. })
        ));
    }
}
