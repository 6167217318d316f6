//! Lanes of a packed MMX/XMM value, as the packed-integer and SSE3/SSSE3/
//! SSE4 units read and build them: lane `i` of `bits` bits is bits
//! `bits * i ..` of the value (little-endian lane order, SDM Vol. 1
//! §4.6.1 "Packed SIMD Data Types").

/// All ones in the low `bits` bits.
#[inline]
pub fn ones(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Sign-extends the low `bits` bits of `v`.
#[inline]
pub fn sx(v: u64, bits: u32) -> i64 {
    ((v << (64 - bits)) as i64) >> (64 - bits)
}

/// Lane `i` of `bits` bits of `v`, zero-extended.
#[inline]
pub fn lane(v: u128, bits: u32, i: u32) -> u64 {
    (v >> (bits * i)) as u64 & ones(bits)
}

/// Lane `i` of `bits` bits of `v`, sign-extended.
#[inline]
pub fn slane(v: u128, bits: u32, i: u32) -> i64 {
    sx(lane(v, bits, i), bits)
}

/// Lane `i` of `bits` bits of `v` as a `u128` (for lanes that are put
/// back into a packed value).
#[inline]
pub fn part(v: u128, bits: u32, i: u32) -> u128 {
    u128::from(lane(v, bits, i))
}

/// `lanes` lanes of `bits` bits, lane `i` being `f(i)` truncated.
pub fn build(bits: u32, lanes: u32, f: impl Fn(u32) -> i64) -> u128 {
    (0..lanes).fold(0u128, |r, i| {
        r | u128::from(f(i) as u64 & ones(bits)) << (bits * i)
    })
}

/// A whole XMM register of `bits`-bit lanes, lane `i` being `f(i)`.
pub fn xmm_lanes(bits: u32, f: impl Fn(u32) -> i64) -> u128 {
    build(bits, 128 / bits, f)
}

/// Four singles as an XMM value, lane 0 first (for tests).
#[cfg(test)]
pub fn singles(v: [f32; 4]) -> u128 {
    v.iter()
        .enumerate()
        .fold(0, |r, (i, x)| r | u128::from(x.to_bits()) << (32 * i))
}
