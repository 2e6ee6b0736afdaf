//! Segments kept in their manifest: a small object's sealed chunks stored
//! with its metadata instead of as fragments on backends.
//!
//! Writing a 4 KiB object as fragments costs a file per copy on three
//! backends, each with its own fsyncs; the object's manifest is committed
//! (and journaled to the backends, erasure coded, [`crate::journal`])
//! anyway. A segment of at most a policy's `inline_object_bytes` is
//! therefore sealed whole and kept in the manifest (as Garage keeps objects
//! under 3 KiB in its metadata, and MinIO small ones in `xl.meta`). Its
//! bytes are the same age payload a fragment segment's stripes hold:
//! `envelope.age_prefix()` followed by them is a standard age file, so an
//! export, the recovery key and `age -d` work on it unchanged. An object is
//! never less durable for it: a version is readable only while its
//! manifest is, and the inline bytes live and travel exactly where the
//! manifest does.

use std::ops::Range;

use crate::envelope::PayloadKey;
use crate::error::{CoreError, Result};
use crate::layout::{CHUNK_BYTES, SEALED_CHUNK_BYTES, TAG_BYTES};

/// Sealed bytes of a payload of `plaintext_len` bytes (an empty payload
/// is one empty sealed chunk, as in age).
pub fn sealed_len(plaintext_len: u64) -> u64 {
    let chunks = plaintext_len.div_ceil(CHUNK_BYTES as u64).max(1);
    // Saturating: a forged length near u64::MAX must not wrap to a small one.
    plaintext_len.saturating_add(chunks.saturating_mul(TAG_BYTES as u64))
}

/// Seals `plaintext` as a whole age payload: chunk 0 onwards, the last
/// chunk flagged.
pub fn seal_payload(key: &PayloadKey, plaintext: &[u8]) -> Result<Vec<u8>> {
    let chunk_count = plaintext.len().div_ceil(CHUNK_BYTES).max(1);
    let mut out = Vec::with_capacity(plaintext.len() + chunk_count * TAG_BYTES);
    for i in 0..chunk_count {
        let plain = &plaintext
            [(i * CHUNK_BYTES).min(plaintext.len())..((i + 1) * CHUNK_BYTES).min(plaintext.len())];
        let at = out.len();
        out.extend_from_slice(plain);
        out.resize(at + plain.len() + TAG_BYTES, 0);
        key.seal_chunk(i as u64, i + 1 == chunk_count, &mut out[at..])?;
    }
    Ok(out)
}

/// Opens plaintext `range` of a payload sealed by [`seal_payload`] from
/// `plaintext_len` bytes: only the chunks the range touches are opened.
pub fn open_payload_range(
    key: &PayloadKey,
    sealed: &[u8],
    plaintext_len: u64,
    range: Range<u64>,
) -> Result<Vec<u8>> {
    if sealed.len() as u64 != sealed_len(plaintext_len) {
        return Err(CoreError::Manifest(format!(
            "an inline segment of {plaintext_len} bytes holds {} sealed bytes, {} expected",
            sealed.len(),
            sealed_len(plaintext_len)
        )));
    }
    if range.start > range.end || range.end > plaintext_len {
        return Err(CoreError::RangeNotSatisfiable {
            start: range.start,
            end: range.end,
            len: plaintext_len,
        });
    }
    let chunk_count = plaintext_len.div_ceil(CHUNK_BYTES as u64).max(1);
    let chunk = CHUNK_BYTES as u64;
    let first = range.start / chunk;
    let end = range.end.div_ceil(chunk).max(first + 1).min(chunk_count);
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut buf = Vec::with_capacity(SEALED_CHUNK_BYTES);
    for c in first..end {
        let at = (c * SEALED_CHUNK_BYTES as u64) as usize;
        let to = (at + SEALED_CHUNK_BYTES).min(sealed.len());
        buf.clear();
        buf.extend_from_slice(&sealed[at..to]);
        let plain = key.open_chunk(c, c + 1 == chunk_count, &mut buf)?;
        let base = c * chunk;
        let from = range.start.max(base) - base;
        let upto = range.end.min(base + plain.len() as u64) - base;
        if from < upto {
            out.extend_from_slice(&plain[from as usize..upto as usize]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, Identities};

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn every_range_of_every_size_opens_to_its_plaintext() {
        let ids = Identities::generate();
        let (_, key) = Envelope::seal(&ids.recipients()).unwrap();
        for len in [
            0,
            1,
            100,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES + 7,
        ] {
            let plain = pattern(len);
            let sealed = seal_payload(&key, &plain).unwrap();
            assert_eq!(sealed.len() as u64, sealed_len(len as u64));
            let l = len as u64;
            let c = CHUNK_BYTES as u64;
            for range in [
                0..l,
                0..l / 2,
                l / 3..l,
                l.saturating_sub(1)..l,
                c.min(l)..l,
            ] {
                let got = open_payload_range(&key, &sealed, l, range.clone()).unwrap();
                assert_eq!(
                    got,
                    &plain[range.start as usize..range.end as usize],
                    "{len} {range:?}"
                );
            }
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_length_is_refused() {
        let ids = Identities::generate();
        let (_, key) = Envelope::seal(&ids.recipients()).unwrap();
        let mut sealed = seal_payload(&key, &pattern(5000)).unwrap();
        sealed[10] ^= 1;
        assert!(matches!(
            open_payload_range(&key, &sealed, 5000, 0..5000),
            Err(CoreError::ChunkAuthentication { chunk: 0 })
        ));
        sealed[10] ^= 1;
        assert!(open_payload_range(&key, &sealed, 4999, 0..10).is_err());
        assert!(open_payload_range(&key, &sealed[1..], 5000, 0..10).is_err());
        assert!(open_payload_range(&key, &sealed, 5000, 10..5001).is_err());
    }

    #[test]
    fn the_prefix_and_the_payload_are_a_standard_age_file() {
        let ids = Identities::generate();
        let (envelope, key) = Envelope::seal(&ids.recipients()).unwrap();
        let plain = pattern(2 * CHUNK_BYTES + 5);
        let mut file = envelope.age_prefix();
        file.extend(seal_payload(&key, &plain).unwrap());
        // age's own decryptor, not this module's code, reads it back.
        let out = crate::envelope::open_file(&ids, &file).unwrap();
        assert_eq!(out, plain);
    }
}
