//! Erasure code parameters and stripe geometry.
//!
//! A segment's plaintext is encrypted as one age STREAM: chunks of
//! [`CHUNK_BYTES`] plaintext, each sealed to [`SEALED_CHUNK_BYTES`]. A
//! **stripe** is `chunks_per_stripe` consecutive sealed chunks laid out
//! contiguously and cut into k equal **shards** (zero padded to a multiple
//! of [`SHARD_ALIGN`]); Reed-Solomon adds m parity shards. Because a stripe
//! holds whole chunks, one stripe decrypts on its own: a range read
//! touches only the stripes that hold the range.
//!
//! **Fragment** i of a segment is shard i of every stripe, concatenated, then
//! a trailer with the blake3 hash of each of those shards
//! (see [`crate::hash`]). Every stripe but the last has the same shard
//! length, so every offset is computable from the layout and the plaintext
//! length alone; nothing else is stored per stripe.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::hash::DIGEST_BYTES;

/// Plaintext bytes per age STREAM chunk (fixed by the age format).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Poly1305 tag bytes per chunk.
pub const TAG_BYTES: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SEALED_CHUNK_BYTES: usize = CHUNK_BYTES + TAG_BYTES;
/// Shards are padded to a multiple of this (reed-solomon-simd needs an even
/// size; 64 keeps its SIMD paths aligned).
pub const SHARD_ALIGN: usize = 64;
/// The widest code: k + m fragments at most.
pub const MAX_FRAGMENTS: usize = 255;
/// The most chunks one stripe may hold (64 MiB of plaintext).
pub const MAX_CHUNKS_PER_STRIPE: u32 = 1024;

/// A Reed-Solomon code: k data shards, m parity shards, any k of the k + m
/// rebuild the stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "(u8, u8)", into = "(u8, u8)")]
pub struct ErasureCode {
    k: u8,
    m: u8,
}

impl ErasureCode {
    /// Checks `1 <= k` and `k + m <= 255`.
    pub fn new(k: u32, m: u32) -> Result<Self> {
        let err = |reason| CoreError::InvalidErasureCode { k, m, reason };
        if k == 0 {
            return Err(err("k must be at least 1"));
        }
        if k as usize + m as usize > MAX_FRAGMENTS {
            return Err(err("k + m must be at most 255"));
        }
        Ok(Self {
            k: k as u8,
            m: m as u8,
        })
    }

    /// Data shards per stripe.
    pub fn k(self) -> usize {
        self.k as usize
    }

    /// Parity shards per stripe.
    pub fn m(self) -> usize {
        self.m as usize
    }

    /// Fragments per segment: k + m.
    pub fn width(self) -> usize {
        self.k() + self.m()
    }
}

impl TryFrom<(u8, u8)> for ErasureCode {
    type Error = CoreError;
    fn try_from((k, m): (u8, u8)) -> Result<Self> {
        Self::new(k.into(), m.into())
    }
}

impl From<ErasureCode> for (u8, u8) {
    fn from(c: ErasureCode) -> (u8, u8) {
        (c.k, c.m)
    }
}

/// Which erasure codec produced the parity. Codecs are not interchangeable,
/// so the manifest records it.
///
/// Chosen per code width by measurement (BENCHMARKS.md): for narrow codes
/// the GF(2^8) Vandermonde code of `reed-solomon-erasure` (SIMD C kernels)
/// encodes in place from borrowed shards and decodes 5 to 9 times faster;
/// for wide codes its O(k·m) cost collapses and Leopard-RS wins by 5x.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Codec {
    /// Leopard-RS over GF(2^16) as implemented by `reed-solomon-simd` 3.x.
    ReedSolomonLeopard16,
    /// Vandermonde Reed-Solomon over GF(2^8) as implemented by
    /// `reed-solomon-erasure` 6.x (`galois_8`, simd-accel).
    ReedSolomonGf8,
}

/// Widest code (k + m) for which [`Codec::ReedSolomonGf8`] is chosen.
pub const GF8_MAX_WIDTH: usize = 32;

impl Codec {
    /// The faster codec for `code`.
    pub fn for_code(code: ErasureCode) -> Self {
        if code.width() <= GF8_MAX_WIDTH {
            Self::ReedSolomonGf8
        } else {
            Self::ReedSolomonLeopard16
        }
    }
}

/// How a segment is cut into stripes and shards.
///
/// Decoding checks the stripe size as [`StripeLayout::new`] does (a stored
/// layout with 0 chunks per stripe would divide by zero later); the
/// encoding is the three fields in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "LayoutFields")]
pub struct StripeLayout {
    /// The codec that computed the parity.
    pub codec: Codec,
    /// k data + m parity.
    pub code: ErasureCode,
    /// Sealed age chunks per stripe.
    pub chunks_per_stripe: u32,
}

/// [`StripeLayout`] as stored, before its check.
#[derive(Deserialize)]
struct LayoutFields {
    codec: Codec,
    code: ErasureCode,
    chunks_per_stripe: u32,
}

impl TryFrom<LayoutFields> for StripeLayout {
    type Error = CoreError;
    fn try_from(f: LayoutFields) -> Result<Self> {
        Ok(Self::new(f.code, f.chunks_per_stripe)?.with_codec(f.codec))
    }
}

impl StripeLayout {
    /// A layout with an explicit stripe size.
    pub fn new(code: ErasureCode, chunks_per_stripe: u32) -> Result<Self> {
        if chunks_per_stripe == 0 || chunks_per_stripe > MAX_CHUNKS_PER_STRIPE {
            return Err(CoreError::InvalidLayout(
                "chunks_per_stripe must be in 1..=1024",
            ));
        }
        Ok(Self {
            codec: Codec::for_code(code),
            code,
            chunks_per_stripe,
        })
    }

    /// The same layout with another codec (tests and benchmarks).
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The default stripe: 1 MiB of plaintext (16 chunks), widened so that
    /// shards stay at least about 64 KiB for wide codes (k > 16), where tiny
    /// shards would make every stripe cost k + m small I/Os.
    pub fn default_for(code: ErasureCode) -> Self {
        let chunks = (code.k() as u32).clamp(16, MAX_CHUNKS_PER_STRIPE);
        Self {
            codec: Codec::for_code(code),
            code,
            chunks_per_stripe: chunks,
        }
    }

    /// Plaintext bytes of a full stripe.
    pub fn stripe_plain_bytes(&self) -> usize {
        self.chunks_per_stripe as usize * CHUNK_BYTES
    }

    /// Shard length of a stripe whose sealed chunks take `sealed` bytes.
    pub fn shard_bytes_for(&self, sealed: usize) -> usize {
        let per = sealed.div_ceil(self.code.k());
        per.div_ceil(SHARD_ALIGN).max(1) * SHARD_ALIGN
    }

    /// Shard length of a stripe holding `plain` bytes of plaintext (each
    /// chunk sealed with its tag; an empty stripe is one empty chunk).
    pub fn shard_bytes_for_plain(&self, plain: usize) -> usize {
        let chunks = plain.div_ceil(CHUNK_BYTES).max(1);
        self.shard_bytes_for(plain + chunks * TAG_BYTES)
    }

    /// Shard length of every full stripe.
    pub fn full_shard_bytes(&self) -> usize {
        self.shard_bytes_for(self.chunks_per_stripe as usize * SEALED_CHUNK_BYTES)
    }

    /// The geometry of a segment of `plaintext_len` bytes.
    pub fn geometry(&self, plaintext_len: u64) -> Geometry {
        let chunk_count = plaintext_len.div_ceil(CHUNK_BYTES as u64).max(1);
        let stripe_count = chunk_count.div_ceil(u64::from(self.chunks_per_stripe));
        Geometry {
            layout: *self,
            plaintext_len,
            chunk_count,
            stripe_count,
        }
    }
}

/// Offsets and lengths of everything in one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The layout this geometry follows.
    pub layout: StripeLayout,
    /// Plaintext bytes in the segment.
    pub plaintext_len: u64,
    /// age chunks (at least 1: an empty payload has one empty final chunk).
    pub chunk_count: u64,
    /// Stripes (at least 1).
    pub stripe_count: u64,
}

impl Geometry {
    /// The chunks stripe `stripe` holds.
    pub fn stripe_chunks(&self, stripe: u64) -> Range<u64> {
        let per = u64::from(self.layout.chunks_per_stripe);
        let start = stripe * per;
        start..((stripe + 1) * per).min(self.chunk_count)
    }

    /// Plaintext length of chunk `chunk`.
    pub fn chunk_plain_len(&self, chunk: u64) -> usize {
        if chunk + 1 < self.chunk_count {
            CHUNK_BYTES
        } else {
            (self.plaintext_len - chunk * CHUNK_BYTES as u64) as usize
        }
    }

    /// Plaintext bytes of stripe `stripe`.
    pub fn stripe_plain_len(&self, stripe: u64) -> usize {
        let chunks = self.stripe_chunks(stripe);
        let first = chunks.start * CHUNK_BYTES as u64;
        let end = (chunks.end * CHUNK_BYTES as u64).min(self.plaintext_len);
        (end - first) as usize
    }

    /// Sealed (ciphertext) bytes of stripe `stripe`, before padding.
    pub fn stripe_sealed_len(&self, stripe: u64) -> usize {
        let chunks = self.stripe_chunks(stripe);
        self.stripe_plain_len(stripe) + (chunks.end - chunks.start) as usize * TAG_BYTES
    }

    /// Shard length of stripe `stripe`.
    pub fn shard_len(&self, stripe: u64) -> usize {
        if stripe + 1 < self.stripe_count {
            self.layout.full_shard_bytes()
        } else {
            self.layout.shard_bytes_for(self.stripe_sealed_len(stripe))
        }
    }

    /// Where shard `stripe` starts inside every fragment blob.
    pub fn shard_offset(&self, stripe: u64) -> u64 {
        stripe * self.layout.full_shard_bytes() as u64
    }

    /// Where the trailer of shard hashes starts inside every fragment blob.
    pub fn hash_list_offset(&self) -> u64 {
        self.shard_offset(self.stripe_count - 1) + self.shard_len(self.stripe_count - 1) as u64
    }

    /// Total bytes of one fragment blob, trailer included.
    pub fn fragment_len(&self) -> u64 {
        self.hash_list_offset() + self.stripe_count * DIGEST_BYTES as u64
    }

    /// Offset of chunk `chunk` inside its stripe's sealed bytes.
    pub fn chunk_offset_in_stripe(&self, chunk: u64) -> usize {
        let first = chunk - chunk % u64::from(self.layout.chunks_per_stripe);
        (chunk - first) as usize * SEALED_CHUNK_BYTES
    }

    /// The stripes that hold plaintext bytes `range` (non-empty, inside the
    /// segment).
    pub fn stripes_for(&self, range: &Range<u64>) -> Result<Range<u64>> {
        self.check_range(range)?;
        let per = self.layout.stripe_plain_bytes() as u64;
        Ok(range.start / per..(range.end - 1) / per + 1)
    }

    /// The chunks that hold plaintext bytes `range` (non-empty, inside).
    pub fn chunks_for(&self, range: &Range<u64>) -> Result<Range<u64>> {
        self.check_range(range)?;
        let per = CHUNK_BYTES as u64;
        Ok(range.start / per..(range.end - 1) / per + 1)
    }

    /// For plaintext `range` inside stripe `stripe`: the chunks to open, the
    /// span of sealed bytes (relative to the stripe) that holds them, and the
    /// data shards that cover that span. An empty range selects the stripe's
    /// first chunk (an empty segment still authenticates its one chunk).
    pub fn sealed_span(&self, stripe: u64, range: &Range<u64>) -> Result<SealedSpan> {
        let stripe_chunks = self.stripe_chunks(stripe);
        let stripe_start = stripe_chunks.start * CHUNK_BYTES as u64;
        let stripe_end = stripe_start + self.stripe_plain_len(stripe) as u64;
        if range.start < stripe_start || range.end > stripe_end || range.start > range.end {
            return Err(CoreError::StripeShape {
                stripe,
                reason: format!("range {range:?} is outside the stripe"),
            });
        }
        let chunks = if range.is_empty() {
            stripe_chunks.start..stripe_chunks.start + 1
        } else {
            self.chunks_for(range)?
        };
        let last = chunks.end - 1;
        let start = self.chunk_offset_in_stripe(chunks.start);
        let end = self.chunk_offset_in_stripe(last) + self.chunk_plain_len(last) + TAG_BYTES;
        let shard_len = self.shard_len(stripe);
        let data_shards = start / shard_len..end.div_ceil(shard_len);
        Ok(SealedSpan {
            chunks,
            bytes: start..end,
            data_shards,
        })
    }

    fn check_range(&self, range: &Range<u64>) -> Result<()> {
        if range.start >= range.end || range.end > self.plaintext_len {
            return Err(CoreError::RangeNotSatisfiable {
                start: range.start,
                end: range.end,
                len: self.plaintext_len,
            });
        }
        Ok(())
    }
}

/// What one stripe read needs; see [`Geometry::sealed_span`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSpan {
    /// The age chunks to open.
    pub chunks: Range<u64>,
    /// Their sealed bytes, as offsets inside the stripe.
    pub bytes: Range<usize>,
    /// The data shards holding those bytes.
    pub data_shards: Range<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(k: u32, m: u32, c: u32) -> StripeLayout {
        StripeLayout::new(ErasureCode::new(k, m).unwrap(), c).unwrap()
    }

    #[test]
    fn the_codec_follows_the_width() {
        let narrow = ErasureCode::new(10, 4).unwrap();
        let wide = ErasureCode::new(200, 55).unwrap();
        assert_eq!(
            StripeLayout::default_for(narrow).codec,
            Codec::ReedSolomonGf8
        );
        assert_eq!(
            StripeLayout::default_for(wide).codec,
            Codec::ReedSolomonLeopard16
        );
        assert_eq!(layout(24, 8, 2).codec, Codec::ReedSolomonGf8);
        assert_eq!(layout(24, 9, 2).codec, Codec::ReedSolomonLeopard16);
    }

    #[test]
    fn erasure_code_bounds() {
        assert!(ErasureCode::new(0, 2).is_err());
        assert!(ErasureCode::new(200, 56).is_err());
        assert!(ErasureCode::new(200, 55).is_ok());
        assert!(ErasureCode::new(1, 0).is_ok());
        assert!(ErasureCode::new(255, 0).is_ok());
    }

    #[test]
    fn empty_segment_has_one_stripe_with_one_empty_chunk() {
        let g = layout(4, 2, 16).geometry(0);
        assert_eq!((g.chunk_count, g.stripe_count), (1, 1));
        assert_eq!(g.chunk_plain_len(0), 0);
        assert_eq!(g.stripe_sealed_len(0), TAG_BYTES);
        assert_eq!(g.shard_len(0), SHARD_ALIGN);
        assert_eq!(g.fragment_len(), 64 + 32);
    }

    #[test]
    fn full_stripes_share_one_shard_length() {
        let l = layout(4, 2, 16);
        let g = l.geometry(3 * 16 * CHUNK_BYTES as u64 + 1);
        assert_eq!(g.stripe_count, 4);
        assert_eq!(g.shard_len(0), l.full_shard_bytes());
        assert_eq!(g.shard_len(2), l.full_shard_bytes());
        assert_eq!(g.stripe_plain_len(3), 1);
        assert_eq!(g.shard_len(3), 64);
        assert!(l.full_shard_bytes() * 4 >= 16 * SEALED_CHUNK_BYTES);
        assert_eq!(g.hash_list_offset(), 3 * l.full_shard_bytes() as u64 + 64);
    }

    #[test]
    fn exact_multiple_of_a_stripe_ends_on_a_full_final_stripe() {
        let g = layout(3, 1, 2).geometry(4 * CHUNK_BYTES as u64);
        assert_eq!((g.chunk_count, g.stripe_count), (4, 2));
        assert_eq!(g.chunk_plain_len(3), CHUNK_BYTES);
        assert_eq!(g.shard_len(1), g.shard_len(0));
    }

    #[test]
    fn ranges_map_to_stripes_and_chunks() {
        let g = layout(4, 2, 2).geometry(10 * CHUNK_BYTES as u64);
        let c = CHUNK_BYTES as u64;
        assert_eq!(g.stripes_for(&(0..1)).unwrap(), 0..1);
        assert_eq!(g.stripes_for(&(2 * c - 1..2 * c + 1)).unwrap(), 0..2);
        assert_eq!(g.chunks_for(&(c..2 * c)).unwrap(), 1..2);
        assert!(g.stripes_for(&(5..5)).is_err());
        assert!(g.stripes_for(&(0..10 * c + 1)).is_err());
    }

    #[test]
    fn a_stored_layout_is_checked_when_decoded() {
        let good = layout(4, 2, 2);
        let bytes = postcard::to_allocvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<StripeLayout>(&bytes).unwrap(), good);
        // The last field is chunks_per_stripe (a one-byte varint here).
        let mut zero = bytes.clone();
        *zero.last_mut().unwrap() = 0;
        assert!(postcard::from_bytes::<StripeLayout>(&zero).is_err());
    }
}
