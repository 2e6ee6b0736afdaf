//! The stripe codec: seal + Reed-Solomon encode + hash on the way in;
//! verify + decode + open on the way out. Pure functions of their inputs, so
//! the pipeline can run any number of stripes on any threads.
//!
//! Reed-Solomon engines keep large work buffers; one engine per thread is
//! cached and reset to the stripe's shape, so steady-state encoding
//! allocates only the stripe's own buffers.

use std::cell::RefCell;
use std::ops::Range;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

use crate::envelope::PayloadKey;
use crate::error::{CoreError, Result};
use crate::hash::Digest;
use crate::layout::{CHUNK_BYTES, Geometry, SEALED_CHUNK_BYTES, StripeLayout, TAG_BYTES};

thread_local! {
    static ENCODER: RefCell<Option<ReedSolomonEncoder>> = const { RefCell::new(None) };
    static DECODER: RefCell<Option<ReedSolomonDecoder>> = const { RefCell::new(None) };
}

fn codec_err(e: reed_solomon_simd::Error) -> CoreError {
    CoreError::Codec(e.to_string())
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

/// Seals and encodes stripe `stripe` from its plaintext.
///
/// `plaintext` must be a full stripe unless `is_final`; a final stripe holds
/// the rest of the segment (possibly empty only for stripe 0).
pub fn encode_stripe(
    layout: &StripeLayout,
    key: &PayloadKey,
    stripe: u64,
    plaintext: &[u8],
    is_final: bool,
) -> Result<EncodedStripe> {
    let full = layout.stripe_plain_bytes();
    let shape_err = |reason: &str| CoreError::StripeShape {
        stripe,
        reason: reason.into(),
    };
    if plaintext.len() > full || (!is_final && plaintext.len() != full) {
        return Err(shape_err("plaintext is not a whole stripe"));
    }
    if is_final && plaintext.is_empty() && stripe != 0 {
        return Err(shape_err("only an empty segment ends on an empty stripe"));
    }
    let chunk_count = plaintext.len().div_ceil(CHUNK_BYTES).max(1);
    let sealed_len = plaintext.len() + chunk_count * TAG_BYTES;
    let k = layout.code.k();
    let m = layout.code.m();
    let shard_len = layout.shard_bytes_for(sealed_len);
    let first_chunk = stripe * u64::from(layout.chunks_per_stripe);

    let mut data = vec![0u8; k * shard_len];
    for (i, plain) in chunk_slices(plaintext).enumerate() {
        let at = i * SEALED_CHUNK_BYTES;
        let slot = &mut data[at..at + plain.len() + TAG_BYTES];
        slot[..plain.len()].copy_from_slice(plain);
        let last = is_final && i + 1 == chunk_count;
        key.seal_chunk(first_chunk + i as u64, last, slot)?;
    }

    let mut parity = vec![0u8; m * shard_len];
    if m > 0 {
        ENCODER.with(|cell| -> Result<()> {
            let mut slot = cell.borrow_mut();
            let enc = match slot.as_mut() {
                Some(e) => {
                    e.reset(k, m, shard_len).map_err(codec_err)?;
                    e
                }
                None => slot.insert(ReedSolomonEncoder::new(k, m, shard_len).map_err(codec_err)?),
            };
            for shard in data.chunks_exact(shard_len) {
                enc.add_original_shard(shard).map_err(codec_err)?;
            }
            let out = enc.encode().map_err(codec_err)?;
            for (dst, src) in parity.chunks_exact_mut(shard_len).zip(out.recovery_iter()) {
                dst.copy_from_slice(src);
            }
            Ok(())
        })?;
    }

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

fn chunk_slices(plaintext: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty: &[u8] = &[];
    let none = plaintext.is_empty().then_some(empty);
    none.into_iter().chain(plaintext.chunks(CHUNK_BYTES))
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
    let (k, m, shard_len) = check_shards(geometry, stripe, shards)?;
    let span = geometry.sealed_span(stripe, &range)?;
    let first_off = span.bytes.start;
    let chunks = span.chunks.clone();
    let mut sealed = gather(
        k,
        m,
        shard_len,
        stripe,
        shards,
        span.bytes,
        span.data_shards,
    )?;

    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    for chunk in chunks {
        let at = geometry.chunk_offset_in_stripe(chunk) - first_off;
        let len = geometry.chunk_plain_len(chunk) + TAG_BYTES;
        let last = chunk + 1 == geometry.chunk_count;
        let plain = key.open_chunk(chunk, last, &mut sealed[at..at + len])?;
        let chunk_start = chunk * CHUNK_BYTES as u64;
        let from = range.start.saturating_sub(chunk_start) as usize;
        let to = (range.end - chunk_start).min(plain.len() as u64) as usize;
        out.extend_from_slice(&plain[from.min(to)..to]);
    }
    Ok(out)
}

/// The sealed bytes of stripe `stripe` (its age chunks, padding removed),
/// rebuilt from verified shards without decrypting: what an export writes.
pub fn sealed_stripe(
    geometry: &Geometry,
    stripe: u64,
    shards: &[Option<&[u8]>],
) -> Result<Vec<u8>> {
    let (k, m, shard_len) = check_shards(geometry, stripe, shards)?;
    let len = geometry.stripe_sealed_len(stripe);
    gather(
        k,
        m,
        shard_len,
        stripe,
        shards,
        0..len,
        0..len.div_ceil(shard_len),
    )
}

/// Checks that `shards` has k + m entries of the stripe's shard length;
/// returns (k, m, shard length).
fn check_shards(
    geometry: &Geometry,
    stripe: u64,
    shards: &[Option<&[u8]>],
) -> Result<(usize, usize, usize)> {
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
    Ok((k, m, shard_len))
}

/// Copies sealed bytes `bytes` of a stripe out of its shards, decoding
/// first if one of `data_shards` (the ones holding those bytes) is missing.
fn gather(
    k: usize,
    m: usize,
    shard_len: usize,
    stripe: u64,
    shards: &[Option<&[u8]>],
    bytes: Range<usize>,
    data_shards: Range<usize>,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; bytes.end - bytes.start];
    if data_shards.clone().all(|i| shards[i].is_some()) {
        copy_span(&mut out, bytes.start, shard_len, |i| shards[i])?;
    } else {
        let restored = restore_originals(k, m, shard_len, stripe, shards)?;
        copy_span(&mut out, bytes.start, shard_len, |i| {
            shards[i].or_else(|| restored.get(&i).map(Vec::as_slice))
        })?;
    }
    Ok(out)
}

fn copy_span<'a>(
    out: &mut [u8],
    start: usize,
    shard_len: usize,
    shard: impl Fn(usize) -> Option<&'a [u8]>,
) -> Result<()> {
    let mut pos = start;
    let end = start + out.len();
    while pos < end {
        let i = pos / shard_len;
        let within = pos % shard_len;
        let take = (shard_len - within).min(end - pos);
        let src =
            shard(i).ok_or_else(|| CoreError::Codec(format!("data shard {i} was not restored")))?;
        out[pos - start..pos - start + take].copy_from_slice(&src[within..within + take]);
        pos += take;
    }
    Ok(())
}

fn restore_originals(
    k: usize,
    m: usize,
    shard_len: usize,
    stripe: u64,
    shards: &[Option<&[u8]>],
) -> Result<std::collections::HashMap<usize, Vec<u8>>> {
    let available = shards.iter().filter(|s| s.is_some()).count();
    if available < k || m == 0 {
        return Err(CoreError::NotEnoughFragments {
            stripe,
            available,
            needed: k,
        });
    }
    DECODER.with(|cell| {
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
        let out = dec.decode().map_err(codec_err)?;
        Ok(out
            .restored_original_iter()
            .map(|(i, s)| (i, s.to_vec()))
            .collect())
    })
}
