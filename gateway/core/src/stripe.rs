//! The stripe codec: seal + Reed-Solomon encode + hash on the way in;
//! verify + decode + open on the way out. Pure functions of their inputs, so
//! the pipeline can run any number of stripes on any threads.
//!
//! Reed-Solomon engines keep large work buffers; one engine per thread is
//! cached and reset to the stripe's shape, so steady-state encoding
//! allocates only the stripe's own buffers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;

use reed_solomon_erasure::galois_8;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::envelope::PayloadKey;
use crate::error::{CoreError, Result};
use crate::hash::Digest;
use crate::layout::{CHUNK_BYTES, Codec, Geometry, SEALED_CHUNK_BYTES, StripeLayout, TAG_BYTES};

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
    static GF8: RefCell<HashMap<(usize, usize), galois_8::ReedSolomon>> = RefCell::new(HashMap::new());
}

fn codec_err(e: reed_solomon_simd::Error) -> CoreError {
    CoreError::Codec(e.to_string())
}

fn gf8_err(e: reed_solomon_erasure::Error) -> CoreError {
    CoreError::Codec(format!("{e:?}"))
}

/// Runs `f` with this thread's GF(2^8) code for (k, m) (its matrices are
/// built once per thread and shape).
fn with_gf8<T>(
    k: usize,
    m: usize,
    f: impl FnOnce(&galois_8::ReedSolomon) -> Result<T>,
) -> Result<T> {
    GF8.with(|cell| {
        let mut codes = cell.borrow_mut();
        let code = match codes.entry((k, m)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(galois_8::ReedSolomon::new(k, m).map_err(gf8_err)?)
            }
        };
        f(code)
    })
}

/// One stripe, sealed and encoded: k data shards then m parity shards, all
/// `shard_len` bytes, with their digests.
#[derive(Debug)]
pub struct EncodedStripe {
    /// Stripe index inside the segment.
    pub stripe: u64,
    /// Bytes of every shard of this stripe.
    pub shard_len: usize,
    /// The k data shards, back to back (sealed chunks, then zero padding).
    pub data: Vec<u8>,
    /// The m parity shards, back to back.
    pub parity: Vec<u8>,
    /// Digest of shard i, for i in 0..k+m.
    pub digests: Vec<Digest>,
}

impl EncodedStripe {
    /// Shard `i` (data for i < k, parity after).
    pub fn shard(&self, i: usize) -> &[u8] {
        let k = self.data.len() / self.shard_len;
        let (buf, j) = if i < k {
            (&self.data, i)
        } else {
            (&self.parity, i - k)
        };
        &buf[j * self.shard_len..(j + 1) * self.shard_len]
    }
}

/// A stripe being filled with plaintext, laid out where its sealed chunks
/// will be: chunk i's plaintext at `i * SEALED_CHUNK_BYTES`, leaving room
/// for its tag, so sealing happens in place and the buffer becomes the data
/// shards without another copy. The buffer can be recycled (its old content
/// is overwritten or zeroed before any of it reaches a shard).
#[derive(Debug)]
pub struct StripeBuffer {
    data: Vec<u8>,
    plain_len: usize,
    /// The most plaintext `fill` takes.
    capacity: usize,
    /// Plaintext bytes of a full stripe of the layout.
    full: usize,
}

impl StripeBuffer {
    /// An empty stripe of `layout` in `recycled`'s memory.
    pub fn new(layout: &StripeLayout, recycled: Vec<u8>) -> Self {
        Self::sized(layout, recycled, layout.stripe_plain_bytes())
    }

    /// An empty stripe of `layout` that takes at most `plain_len` bytes of
    /// plaintext, in `recycled`'s memory: only what its data shards will
    /// hold is sized (and zeroed, when fresh), so a small object's one
    /// stripe does not zero a full stripe (4% of a 4 KiB PUT's CPU).
    pub fn sized(layout: &StripeLayout, mut recycled: Vec<u8>, plain_len: usize) -> Self {
        let full = layout.stripe_plain_bytes();
        let capacity = plain_len.min(full);
        let len = layout.code.k() * layout.shard_bytes_for_plain(capacity);
        if recycled.len() > len {
            recycled.truncate(len);
        } else {
            recycled.resize(len, 0);
        }
        Self {
            data: recycled,
            plain_len: 0,
            capacity,
            full,
        }
    }

    /// A stripe holding `plaintext` (at most a full stripe).
    pub fn from_plaintext(layout: &StripeLayout, plaintext: &[u8]) -> Self {
        let mut b = Self::sized(layout, Vec::new(), plaintext.len());
        b.fill(plaintext);
        b
    }

    /// Copies as much of `src` as fits; returns how many bytes were taken.
    pub fn fill(&mut self, src: &[u8]) -> usize {
        let mut taken = 0;
        while taken < src.len() && self.plain_len < self.capacity {
            let within = self.plain_len % CHUNK_BYTES;
            let at = (self.plain_len / CHUNK_BYTES) * SEALED_CHUNK_BYTES + within;
            let n = (CHUNK_BYTES - within)
                .min(src.len() - taken)
                .min(self.capacity - self.plain_len);
            self.data[at..at + n].copy_from_slice(&src[taken..taken + n]);
            taken += n;
            self.plain_len += n;
        }
        taken
    }

    /// Plaintext bytes held.
    pub fn plain_len(&self) -> usize {
        self.plain_len
    }

    /// True when a full stripe of plaintext is held.
    pub fn is_full(&self) -> bool {
        self.plain_len == self.full
    }
}

/// Seals and encodes stripe `stripe` in place.
///
/// `buffer` must be full unless `is_final`; a final stripe holds the rest
/// of the segment (empty only for stripe 0). `parity` is recycled memory for
/// the parity shards (any content).
pub fn encode_stripe(
    layout: &StripeLayout,
    key: &PayloadKey,
    stripe: u64,
    buffer: StripeBuffer,
    is_final: bool,
    mut parity: Vec<u8>,
) -> Result<EncodedStripe> {
    let shape_err = |reason: &str| CoreError::StripeShape {
        stripe,
        reason: reason.into(),
    };
    if !is_final && !buffer.is_full() {
        return Err(shape_err("plaintext is not a whole stripe"));
    }
    if is_final && buffer.plain_len == 0 && stripe != 0 {
        return Err(shape_err("only an empty segment ends on an empty stripe"));
    }
    let StripeBuffer {
        mut data,
        plain_len,
        ..
    } = buffer;
    let chunk_count = plain_len.div_ceil(CHUNK_BYTES).max(1);
    let sealed_len = plain_len + chunk_count * TAG_BYTES;
    let (k, m) = (layout.code.k(), layout.code.m());
    // The same length the buffer was sized by (`StripeBuffer::sized`).
    let shard_len = layout.shard_bytes_for_plain(plain_len);
    let first_chunk = stripe * u64::from(layout.chunks_per_stripe);

    for i in 0..chunk_count {
        let at = i * SEALED_CHUNK_BYTES;
        let plain = (plain_len - i * CHUNK_BYTES).min(CHUNK_BYTES);
        let last = is_final && i + 1 == chunk_count;
        key.seal_chunk(
            first_chunk + i as u64,
            last,
            &mut data[at..at + plain + TAG_BYTES],
        )?;
    }
    // Padding: zero, never left-over bytes of a recycled buffer.
    data.truncate(k * shard_len);
    data[sealed_len..].fill(0);

    parity.resize(m * shard_len, 0);
    parity.truncate(m * shard_len);
    let data_shards: Vec<&[u8]> = data.chunks_exact(shard_len).collect();
    compute_parity(layout, &data_shards, shard_len, &mut parity)?;

    let digests = data
        .chunks_exact(shard_len)
        .chain(parity.chunks_exact(shard_len))
        .map(Digest::of_shard)
        .collect();
    Ok(EncodedStripe {
        stripe,
        shard_len,
        data,
        parity,
        digests,
    })
}

/// The m parity shards of `data` (k shards of `shard_len`) into `parity`
/// (m × `shard_len` bytes), with the layout's codec.
fn compute_parity(
    layout: &StripeLayout,
    data: &[&[u8]],
    shard_len: usize,
    parity: &mut [u8],
) -> Result<()> {
    let (k, m) = (layout.code.k(), layout.code.m());
    match layout.codec {
        _ if m == 0 => Ok(()),
        Codec::ReedSolomonGf8 => with_gf8(k, m, |rs| {
            let mut parity_shards: Vec<&mut [u8]> = parity.chunks_exact_mut(shard_len).collect();
            rs.encode_sep(data, &mut parity_shards).map_err(gf8_err)
        }),
        Codec::ReedSolomonLeopard16 => ENCODER.with(|cell| -> Result<()> {
            let mut slot = cell.borrow_mut();
            let enc = match slot.as_mut() {
                Some(e) => {
                    e.reset(k, m, shard_len).map_err(codec_err)?;
                    e
                }
                None => slot.insert(ReedSolomonEncoder::new(k, m, shard_len).map_err(codec_err)?),
            };
            for shard in data {
                enc.add_original_shard(shard).map_err(codec_err)?;
            }
            let out = enc.encode().map_err(codec_err)?;
            for (dst, src) in parity.chunks_exact_mut(shard_len).zip(out.recovery_iter()) {
                dst.copy_from_slice(src);
            }
            Ok(())
        }),
    }
}

/// Rebuilds shards `wanted` of stripe `stripe` from the shards present,
/// for repair: no key, no plaintext. The age ciphertext is not touched and
/// Reed-Solomon is deterministic, so a rebuilt shard is bit-identical to
/// the lost one and still matches the manifest's digests.
///
/// `shards[i]` is shard i if fetched **and verified**, `None` if missing;
/// at least k must be present. Returns the wanted shards in `wanted`'s
/// order.
pub fn rebuild_shards(
    geometry: &Geometry,
    stripe: u64,
    shards: &[Option<&[u8]>],
    wanted: &[usize],
) -> Result<Vec<Vec<u8>>> {
    let (k, m) = (geometry.layout.code.k(), geometry.layout.code.m());
    let width = k + m;
    if shards.len() != width {
        return Err(CoreError::StripeShape {
            stripe,
            reason: format!("{} shards given for k + m = {width}", shards.len()),
        });
    }
    if let Some(w) = wanted.iter().find(|w| **w >= width) {
        return Err(CoreError::StripeShape {
            stripe,
            reason: format!("shard {w} wanted of {width}"),
        });
    }
    let shard_len = geometry.shard_len(stripe);
    if let Some(i) = shards
        .iter()
        .position(|s| s.is_some_and(|s| s.len() != shard_len))
    {
        return Err(CoreError::StripeShape {
            stripe,
            reason: format!("shard {i} is not {shard_len} bytes"),
        });
    }
    with_data_shards(geometry, stripe, shards, 0..k, |data| {
        let data: Vec<&[u8]> = (0..k)
            .map(|i| {
                data(i).ok_or_else(|| CoreError::Codec(format!("data shard {i} was not restored")))
            })
            .collect::<Result<_>>()?;
        let mut parity = Vec::new();
        if wanted.iter().any(|w| *w >= k) {
            parity = vec![0; m * shard_len];
            compute_parity(&geometry.layout, &data, shard_len, &mut parity)?;
        }
        Ok(wanted
            .iter()
            .map(|&w| match w < k {
                true => data[w].to_vec(),
                false => parity[(w - k) * shard_len..(w - k + 1) * shard_len].to_vec(),
            })
            .collect())
    })
}

/// Rebuilds and opens the plaintext of `range` (absolute plaintext offsets,
/// inside stripe `stripe`) from the stripe's shards.
///
/// `shards[i]` is shard i if it was fetched **and verified** against its
/// digest, `None` if missing. The data shards that cover the range suffice;
/// otherwise any k shards are decoded.
pub fn decode_range(
    geometry: &Geometry,
    key: &PayloadKey,
    stripe: u64,
    shards: &[Option<&[u8]>],
    range: Range<u64>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    decode_range_into(geometry, key, stripe, shards, range, &mut out)?;
    Ok(out)
}

/// [`decode_range`], appending to `out`: each sealed chunk is copied once,
/// from its shards to its place in `out`, and opened there.
pub fn decode_range_into(
    geometry: &Geometry,
    key: &PayloadKey,
    stripe: u64,
    shards: &[Option<&[u8]>],
    range: Range<u64>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let shard_len = check_shards(geometry, stripe, shards)?;
    let span = geometry.sealed_span(stripe, &range)?;
    let base = out.len();
    with_data_shards(geometry, stripe, shards, span.data_shards, |shard| {
        for chunk in span.chunks.clone() {
            let at = geometry.chunk_offset_in_stripe(chunk);
            let len = geometry.chunk_plain_len(chunk) + TAG_BYTES;
            let pos = out.len();
            append_span(out, at..at + len, shard_len, shard)?;
            let last = chunk + 1 == geometry.chunk_count;
            let plain = key.open_chunk(chunk, last, &mut out[pos..])?.len();
            // The next chunk overwrites this one's tag.
            out.truncate(pos + plain);
        }
        Ok(())
    })?;
    // Trim to the range: the first chunk may start before it, the last end after.
    let first = span.chunks.start * CHUNK_BYTES as u64;
    let skip = (range.start - first) as usize;
    out.truncate(base + skip + (range.end - range.start) as usize);
    if skip > 0 {
        out.drain(base..base + skip);
    }
    Ok(())
}

/// The sealed bytes of stripe `stripe` (its age chunks, padding removed),
/// rebuilt from verified shards without decrypting: what an export writes.
pub fn sealed_stripe(
    geometry: &Geometry,
    stripe: u64,
    shards: &[Option<&[u8]>],
) -> Result<Vec<u8>> {
    let shard_len = check_shards(geometry, stripe, shards)?;
    let len = geometry.stripe_sealed_len(stripe);
    let mut out = Vec::with_capacity(len);
    with_data_shards(
        geometry,
        stripe,
        shards,
        0..len.div_ceil(shard_len),
        |shard| append_span(&mut out, 0..len, shard_len, shard),
    )?;
    Ok(out)
}

/// Checks that `shards` has k + m entries of the stripe's shard length;
/// returns the shard length.
fn check_shards(geometry: &Geometry, stripe: u64, shards: &[Option<&[u8]>]) -> Result<usize> {
    let (k, m) = (geometry.layout.code.k(), geometry.layout.code.m());
    let shard_len = geometry.shard_len(stripe);
    let shape_err = |reason: String| CoreError::StripeShape { stripe, reason };
    if shards.len() != k + m {
        return Err(shape_err(format!(
            "{} shards given, {} expected",
            shards.len(),
            k + m
        )));
    }
    if let Some(bad) = shards.iter().flatten().find(|s| s.len() != shard_len) {
        return Err(shape_err(format!(
            "shard of {} bytes, {shard_len} expected",
            bad.len()
        )));
    }
    Ok(shard_len)
}

/// Runs `f` with access to every data shard in `needed`: straight from
/// `shards` when they are all there, otherwise after a Reed-Solomon decode
/// (the restored shards live in the thread's decoder while `f` runs).
fn with_data_shards<T>(
    geometry: &Geometry,
    stripe: u64,
    shards: &[Option<&[u8]>],
    needed: Range<usize>,
    f: impl for<'s> FnOnce(&'s dyn Fn(usize) -> Option<&'s [u8]>) -> Result<T>,
) -> Result<T> {
    if needed.clone().all(|i| shards[i].is_some()) {
        return f(&|i| shards[i]);
    }
    let (k, m) = (geometry.layout.code.k(), geometry.layout.code.m());
    let shard_len = geometry.shard_len(stripe);
    let available = shards.iter().filter(|s| s.is_some()).count();
    if available < k || m == 0 {
        return Err(CoreError::NotEnoughFragments {
            stripe,
            available,
            needed: k,
        });
    }
    match geometry.layout.codec {
        Codec::ReedSolomonGf8 => {
            let mut owned: Vec<Option<Vec<u8>>> =
                shards.iter().map(|s| s.map(<[u8]>::to_vec)).collect();
            with_gf8(k, m, |rs| rs.reconstruct_data(&mut owned).map_err(gf8_err))?;
            f(&|i| shards[i].or_else(|| owned.get(i).and_then(|o| o.as_deref())))
        }
        Codec::ReedSolomonLeopard16 => DECODER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let dec = match slot.as_mut() {
                Some(d) => {
                    d.reset(k, m, shard_len).map_err(codec_err)?;
                    d
                }
                None => slot.insert(ReedSolomonDecoder::new(k, m, shard_len).map_err(codec_err)?),
            };
            for (i, s) in shards.iter().enumerate() {
                if let Some(s) = s {
                    if i < k {
                        dec.add_original_shard(i, s).map_err(codec_err)?;
                    } else {
                        dec.add_recovery_shard(i - k, s).map_err(codec_err)?;
                    }
                }
            }
            let restored = dec.decode().map_err(codec_err)?;
            f(&|i| shards[i].or_else(|| restored.restored_original(i)))
        }),
    }
}

/// Appends sealed bytes `span` of a stripe to `out`, reading them from the
/// shards that hold them (no zero-fill, one copy).
fn append_span<'a>(
    out: &mut Vec<u8>,
    span: Range<usize>,
    shard_len: usize,
    shard: &dyn Fn(usize) -> Option<&'a [u8]>,
) -> Result<()> {
    let mut pos = span.start;
    while pos < span.end {
        let i = pos / shard_len;
        let within = pos % shard_len;
        let take = (shard_len - within).min(span.end - pos);
        let src =
            shard(i).ok_or_else(|| CoreError::Codec(format!("data shard {i} was not restored")))?;
        out.extend_from_slice(&src[within..within + take]);
        pos += take;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, Identities};
    use crate::layout::ErasureCode;

    #[test]
    fn a_recycled_buffer_leaks_nothing_into_padding() {
        let ids = Identities::generate();
        let (env, key) = Envelope::seal(&ids.recipients()).unwrap();
        let layout = StripeLayout::new(ErasureCode::new(3, 2).unwrap(), 2).unwrap();
        let junk = vec![0xAA; 3 * layout.full_shard_bytes() + 100];
        let mut buf = StripeBuffer::new(&layout, junk);
        assert_eq!(buf.fill(b"tiny"), 4);
        let e = encode_stripe(&layout, &key, 0, buf, true, vec![0xBB; 7]).unwrap();
        let sealed = 4 + TAG_BYTES;
        assert!(
            e.data[sealed..].iter().all(|&b| b == 0),
            "padding not zeroed"
        );
        assert_eq!(e.data.len(), 3 * e.shard_len);
        assert_eq!(e.parity.len(), 2 * e.shard_len);
        let geometry = layout.geometry(4);
        let shards: Vec<Option<&[u8]>> = (0..5).map(|i| Some(e.shard(i))).collect();
        let opened = env.open(&ids).unwrap();
        assert_eq!(
            decode_range(&geometry, &opened, 0, &shards, 1..3).unwrap(),
            b"in"
        );
        // Decode from parity only where possible: lose data shard 0.
        let mut lossy = shards.clone();
        lossy[0] = None;
        assert_eq!(
            decode_range(&geometry, &opened, 0, &lossy, 0..4).unwrap(),
            b"tiny"
        );
    }

    /// A stripe sized to its plaintext encodes the same shards as a
    /// full-sized one, and holds no more than its data shards.
    #[test]
    fn a_stripe_sized_to_its_plaintext_encodes_the_same_shards() {
        let ids = Identities::generate();
        let (_, key) = Envelope::seal(&ids.recipients()).unwrap();
        let layout = StripeLayout::new(ErasureCode::new(3, 2).unwrap(), 4).unwrap();
        let full = layout.stripe_plain_bytes();
        for len in [0, 1, 4096, CHUNK_BYTES, CHUNK_BYTES + 1, full - 1, full] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut whole = StripeBuffer::new(&layout, Vec::new());
            assert_eq!(whole.fill(&plain), len);
            let mut sized = StripeBuffer::sized(&layout, vec![0xAA; 17], len);
            assert_eq!(sized.fill(&plain), len);
            assert_eq!(sized.fill(b"more"), 0, "a sized stripe takes no more");
            // One fill across the capacity stops at it.
            let mut crossing = StripeBuffer::sized(&layout, Vec::new(), len);
            assert_eq!(crossing.fill(&vec![7; len + CHUNK_BYTES + 3]), len);
            assert_eq!(crossing.plain_len(), len);
            assert_eq!(sized.is_full(), len == full);
            assert_eq!(
                sized.data.len(),
                3 * layout.shard_bytes_for_plain(len),
                "{len}"
            );
            let a = encode_stripe(&layout, &key, 0, whole, true, Vec::new()).unwrap();
            let b = encode_stripe(&layout, &key, 0, sized, true, vec![0xBB; 3]).unwrap();
            assert_eq!(
                (a.shard_len, &a.data, &a.parity),
                (b.shard_len, &b.data, &b.parity)
            );
            assert_eq!(a.digests, b.digests);
        }
    }

    #[test]
    fn fill_stops_at_a_full_stripe_and_shape_is_checked() {
        let ids = Identities::generate();
        let (_, key) = Envelope::seal(&ids.recipients()).unwrap();
        let layout = StripeLayout::new(ErasureCode::new(2, 1).unwrap(), 1).unwrap();
        let mut buf = StripeBuffer::new(&layout, Vec::new());
        assert_eq!(buf.fill(&vec![1; CHUNK_BYTES + 10]), CHUNK_BYTES);
        assert!(buf.is_full());
        let half = StripeBuffer::from_plaintext(&layout, &[1; 10]);
        assert!(encode_stripe(&layout, &key, 0, half, false, Vec::new()).is_err());
        let empty = StripeBuffer::new(&layout, Vec::new());
        assert!(encode_stripe(&layout, &key, 3, empty, true, Vec::new()).is_err());
    }

    use proptest::prelude::*;

    /// Encodes `len` bytes as one stripe of `layout`, returns its shards.
    fn shards_of(layout: &StripeLayout, len: usize, seed: u8) -> (Geometry, EncodedStripe) {
        let ids = Identities::generate();
        let (_, key) = Envelope::seal(&ids.recipients()).unwrap();
        let plain: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        let buf = StripeBuffer::from_plaintext(layout, &plain);
        let e = encode_stripe(layout, &key, 0, buf, true, Vec::new()).unwrap();
        (layout.geometry(len as u64), e)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any m shards lost, data or parity, come back bit for bit from
        /// the others without the key, under both codecs, and still match
        /// their digests; fewer than k present is an error.
        #[test]
        fn lost_shards_are_rebuilt_bit_for_bit_without_the_key(
            (k, m) in prop_oneof![Just((4u32, 2u32)), Just((3, 2)), Just((10, 4)), Just((20, 20)), (1u32..=6, 1u32..=4)],
            leopard in any::<bool>(),
            len in 0usize..(3 * CHUNK_BYTES),
            lose_from in 0usize..64,
            seed in any::<u8>(),
        ) {
            let code = ErasureCode::new(k, m).unwrap();
            let mut layout = StripeLayout::new(code, 4).unwrap();
            if leopard {
                layout = layout.with_codec(Codec::ReedSolomonLeopard16);
            }
            let (geometry, e) = shards_of(&layout, len, seed);
            let width = (k + m) as usize;
            // Exactly m distinct shards, in an order the seed shuffles.
            let mut order: Vec<usize> = (0..width).collect();
            order.sort_by_key(|i| (i.wrapping_mul(2_654_435_761)) ^ lose_from.wrapping_mul(40_503));
            let mut lost: Vec<usize> = order[..m as usize].to_vec();
            lost.sort_unstable();
            let shards: Vec<Option<&[u8]>> = (0..width)
                .map(|i| (!lost.contains(&i)).then(|| e.shard(i)))
                .collect();
            let rebuilt = rebuild_shards(&geometry, 0, &shards, &lost).unwrap();
            for (i, bytes) in lost.iter().zip(&rebuilt) {
                prop_assert_eq!(bytes.as_slice(), e.shard(*i));
                prop_assert_eq!(Digest::of_shard(bytes), e.digests[*i]);
            }
            // One more lost than m: fewer than k present, not enough.
            let mut fewer = shards.clone();
            if let Some(extra) = (0..width).find(|i| fewer[*i].is_some()) {
                fewer[extra] = None;
                prop_assert!(rebuild_shards(&geometry, 0, &fewer, &lost).is_err());
            }
        }
    }

    #[test]
    fn rebuild_refuses_wrong_shapes() {
        let layout = StripeLayout::new(ErasureCode::new(2, 1).unwrap(), 1).unwrap();
        let (geometry, e) = shards_of(&layout, 100, 1);
        let all: Vec<Option<&[u8]>> = (0..3).map(|i| Some(e.shard(i))).collect();
        assert!(rebuild_shards(&geometry, 0, &all[..2], &[0]).is_err());
        assert!(rebuild_shards(&geometry, 0, &all, &[3]).is_err());
        let short = &e.shard(1)[1..];
        assert!(rebuild_shards(&geometry, 0, &[None, Some(short), all[2]], &[0]).is_err());
        assert_eq!(
            rebuild_shards(&geometry, 0, &all, &[]).unwrap(),
            Vec::<Vec<u8>>::new()
        );
    }
}
