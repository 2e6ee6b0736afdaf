//! The manifest journal's unit format (issue 17): how a batch of metadata
//! records becomes k + m blobs on the backends, and back.
//!
//! A unit's payload (row images, opaque here) is sealed whole as a
//! standard age file to the gateway's recipients (its own key and the
//! offline recovery key), then cut into k data shards and m Reed-Solomon
//! parity shards. Each shard is one blob under a random name starting
//! with [`NAME_PREFIX`], so `recover` finds them by listing a backend and
//! decodes any k of a unit's blobs with nothing but the blobs themselves:
//!
//! ```text
//! "SGJ1" kind k m index | unit checkpoint part<<32|parts first_seq
//! last_seq cipher_len shard_len epoch journal (big-endian u64) |
//! blake3(ciphertext) | blake3(all of the above ‖ shard) | shard
//! ```
//!
//! A header says which unit a blob belongs to and where it falls in the
//! journal's order; nothing in it or in a name says which bucket, key or
//! user the records are about, and the shards are ciphertext. The header
//! is not secret and anyone who can write to a backend can forge one, so
//! the payload repeats it ([`Payload::info`]) under the seal: recovery
//! trusts a unit's place only once it has opened it.

use serde::{Deserialize, Serialize};

use crate::envelope::{Identities, Recipients, open_file, seal_file};
use crate::error::{CoreError, Result};
use crate::ids::BlobName;

const MAGIC: &[u8; 4] = b"SGJ1";
/// Every journal blob's name starts with this (fragment names are hex).
pub const NAME_PREFIX: &str = "j";
/// Bytes before the shard.
pub const HEADER_BYTES: usize = 4 + 4 + WORDS * 8 + 32 + 32;
/// The big-endian u64 fields of a header.
const WORDS: usize = 9;
/// The format byte of a unit's payload.
const PAYLOAD_FORMAT: u8 = 1;

/// What a unit holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum UnitKind {
    /// Records `first_seq..=last_seq` of the outbox.
    Batch = 1,
    /// Part `part` of `parts` of a checkpoint: live rows as of `last_seq`.
    Checkpoint = 2,
}

/// Where a unit falls in the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnitInfo {
    /// Which store's journal it is: random, made with the store and kept
    /// by `recover`, so two gateways' journals on shared backends never
    /// mix.
    pub journal: u64,
    /// Which run of the store wrote it: a store rebuilt by `recover`
    /// starts a new epoch, so its numbers never mix with the old ones'.
    pub epoch: u64,
    pub kind: UnitKind,
    /// The unit's number, store-wide and never reused.
    pub unit: u64,
    /// The checkpoint a part belongs to; 0 for a batch.
    pub checkpoint: u64,
    pub part: u32,
    pub parts: u32,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A journal blob's header, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentHeader {
    pub info: UnitInfo,
    pub k: u8,
    pub m: u8,
    pub index: u8,
    pub cipher_len: u64,
    pub unit_digest: [u8; 32],
}

/// A unit's decrypted payload: records in order, and the store's
/// generation sequence when it was cut.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The unit's header fields, sealed: what recovery trusts.
    pub info: UnitInfo,
    pub generation: u64,
    /// (journal sequence number, record): opaque to the codec.
    pub records: Vec<(u64, Vec<u8>)>,
}

impl Payload {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![PAYLOAD_FORMAT];
        postcard::to_io(self, &mut out).map_err(|e| CoreError::Manifest(e.to_string()))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&PAYLOAD_FORMAT, body)) => {
                postcard::from_bytes(body).map_err(|e| CoreError::Manifest(e.to_string()))
            }
            Some((f, _)) => Err(CoreError::Manifest(format!(
                "journal payload format {f} is not known to this version"
            ))),
            None => Err(CoreError::Manifest("empty journal payload".into())),
        }
    }
}

/// A fresh name for a journal blob.
pub fn blob_name() -> BlobName {
    let name = format!("{NAME_PREFIX}{}", BlobName::random());
    BlobName::new(name).unwrap_or_else(|_| BlobName::random())
}

/// Whether a listed blob is a journal blob.
pub fn is_journal_blob(name: &BlobName) -> bool {
    name.as_str().starts_with(NAME_PREFIX)
}

fn codec(e: reed_solomon_simd::Error) -> CoreError {
    CoreError::Codec(e.to_string())
}

/// Seals `payload` to `recipients` and cuts it into `k + m` blobs
/// (index order).
pub fn seal_unit(
    recipients: &Recipients,
    info: UnitInfo,
    k: usize,
    m: usize,
    payload: &[u8],
) -> Result<Vec<Vec<u8>>> {
    if k == 0 || k + m > 255 {
        return Err(CoreError::InvalidErasureCode {
            k: k as u32,
            m: m as u32,
            reason: "a journal unit needs 1 <= k and k + m <= 255",
        });
    }
    let cipher = seal_file(recipients, payload)?;
    let unit_digest = *blake3::hash(&cipher).as_bytes();
    // Shards of even length (the codec's unit), at least 2 bytes.
    let shard_len = (cipher.len().div_ceil(k).max(1) + 1) & !1;
    let mut data = cipher.clone();
    data.resize(shard_len * k, 0);
    let originals: Vec<&[u8]> = data.chunks(shard_len).collect();
    let parity = match m {
        0 => Vec::new(),
        _ => reed_solomon_simd::encode(k, m, &originals).map_err(codec)?,
    };
    let shards = originals
        .iter()
        .copied()
        .chain(parity.iter().map(Vec::as_slice));
    Ok(shards
        .enumerate()
        .map(|(index, shard)| {
            let header = FragmentHeader {
                info,
                k: k as u8,
                m: m as u8,
                index: index as u8,
                cipher_len: cipher.len() as u64,
                unit_digest,
            };
            let mut blob = Vec::with_capacity(HEADER_BYTES + shard.len());
            write_header(&mut blob, &header, shard.len() as u64);
            let check = blake3::Hasher::new().update(&blob).update(shard).finalize();
            blob.extend_from_slice(check.as_bytes());
            blob.extend_from_slice(shard);
            blob
        })
        .collect())
}

fn write_header(out: &mut Vec<u8>, h: &FragmentHeader, shard_len: u64) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[h.info.kind as u8, h.k, h.m, h.index]);
    for v in [
        h.info.unit,
        h.info.checkpoint,
        (u64::from(h.info.part) << 32) | u64::from(h.info.parts),
        h.info.first_seq,
        h.info.last_seq,
        h.cipher_len,
        shard_len,
        h.info.epoch,
        h.info.journal,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&h.unit_digest);
}

fn bad(reason: &str) -> CoreError {
    CoreError::Manifest(format!("journal blob: {reason}"))
}

/// Reads a journal blob's header (its first [`HEADER_BYTES`]) without
/// the shard: the geometry and the shard's length. [`parse_blob`] checks
/// the rest.
pub fn parse_header(head: &[u8]) -> Result<(FragmentHeader, u64)> {
    if head.len() < HEADER_BYTES || &head[..4] != MAGIC {
        return Err(bad("not a journal blob"));
    }
    let word = |i: usize| {
        let at = 8 + i * 8;
        u64::from_be_bytes(head[at..at + 8].try_into().unwrap_or_default())
    };
    let kind = match head[4] {
        1 => UnitKind::Batch,
        2 => UnitKind::Checkpoint,
        _ => return Err(bad("unknown unit kind")),
    };
    let (k, m, index) = (head[5], head[6], head[7]);
    if k == 0 || usize::from(k) + usize::from(m) > 255 || index >= k.saturating_add(m) {
        return Err(bad("impossible geometry"));
    }
    let mut unit_digest = [0; 32];
    unit_digest.copy_from_slice(&head[CHECK_AT - 32..CHECK_AT]);
    let header = FragmentHeader {
        info: UnitInfo {
            journal: word(8),
            epoch: word(7),
            kind,
            unit: word(0),
            checkpoint: word(1),
            part: (word(2) >> 32) as u32,
            parts: word(2) as u32,
            first_seq: word(3),
            last_seq: word(4),
        },
        k,
        m,
        index,
        cipher_len: word(5),
        unit_digest,
    };
    Ok((header, word(6)))
}

/// Where the header's own digest starts.
const CHECK_AT: usize = 8 + WORDS * 8 + 32;

/// Reads and checks a journal blob: its header, and its shard.
pub fn parse_blob(blob: &[u8]) -> Result<(FragmentHeader, &[u8])> {
    let (header, shard_len) = parse_header(blob)?;
    let (head, shard) = blob.split_at(HEADER_BYTES);
    if shard_len != shard.len() as u64 {
        return Err(bad("truncated"));
    }
    let check = blake3::Hasher::new()
        .update(&head[..CHECK_AT])
        .update(shard)
        .finalize();
    if check.as_bytes()[..] != head[CHECK_AT..] {
        return Err(bad("its digest does not match"));
    }
    Ok((header, shard))
}

/// Rebuilds and opens a unit from any k of its checked blobs' shards.
pub fn open_unit(identities: &Identities, shards: &[(FragmentHeader, &[u8])]) -> Result<Vec<u8>> {
    let Some((first, _)) = shards.first() else {
        return Err(bad("no blob of the unit"));
    };
    let (k, m) = (usize::from(first.k), usize::from(first.m));
    let mut seen = std::collections::BTreeMap::new();
    for (h, shard) in shards {
        let same = h.info == first.info
            && (h.k, h.m, h.cipher_len, h.unit_digest)
                == (first.k, first.m, first.cipher_len, first.unit_digest)
            && shard.len() == shards[0].1.len();
        if same {
            seen.insert(usize::from(h.index), *shard);
        }
    }
    if seen.len() < k {
        return Err(bad(&format!(
            "{} of the {k} blobs a unit needs",
            seen.len()
        )));
    }
    let mut data: Vec<Vec<u8>> = Vec::with_capacity(k);
    if (0..k).all(|i| seen.contains_key(&i)) {
        data.extend((0..k).map(|i| seen[&i].to_vec()));
    } else {
        let originals = seen.iter().filter(|(i, _)| **i < k).map(|(i, s)| (*i, *s));
        let recovery = seen
            .iter()
            .filter(|(i, _)| **i >= k)
            .map(|(i, s)| (*i - k, *s));
        let restored = reed_solomon_simd::decode(k, m, originals, recovery).map_err(codec)?;
        for i in 0..k {
            match seen.get(&i) {
                Some(s) => data.push(s.to_vec()),
                None => data.push(
                    restored
                        .get(&i)
                        .cloned()
                        .ok_or_else(|| bad("the codec did not restore a data shard"))?,
                ),
            }
        }
    }
    let mut cipher = data.concat();
    let len = usize::try_from(first.cipher_len).map_err(|_| bad("too large"))?;
    if len > cipher.len() {
        return Err(bad("shorter than its header says"));
    }
    cipher.truncate(len);
    if blake3::hash(&cipher).as_bytes() != &first.unit_digest {
        return Err(bad("the unit's digest does not match"));
    }
    open_file(identities, &cipher)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info() -> UnitInfo {
        UnitInfo {
            journal: 77,
            epoch: 3,
            kind: UnitKind::Batch,
            unit: 7,
            checkpoint: 0,
            part: 0,
            parts: 1,
            first_seq: 10,
            last_seq: 19,
        }
    }

    #[test]
    fn any_k_blobs_open_a_unit_and_a_changed_byte_is_caught() {
        let ids = Identities::generate();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let blobs = seal_unit(&ids.recipients(), info(), 4, 2, &payload).unwrap();
        assert_eq!(blobs.len(), 6);
        let parsed: Vec<_> = blobs.iter().map(|b| parse_blob(b).unwrap()).collect();
        assert_eq!(parsed[3].0.info, info());
        for skip in [[0, 1], [2, 5], [4, 5], [0, 3]] {
            let some: Vec<_> = parsed
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(open_unit(&ids, &some).unwrap(), payload);
        }
        let short = open_unit(&ids, &parsed[..3]).unwrap_err().to_string();
        assert!(short.contains("3 of the 4 blobs"), "{short}");
        let mut bent = blobs[0].clone();
        let last = bent.len() - 1;
        bent[last] ^= 1;
        assert!(parse_blob(&bent).is_err());
        let other = Identities::generate();
        assert!(open_unit(&other, &parsed).is_err());
    }

    #[test]
    fn a_unit_without_parity_and_a_tiny_one_round_trip() {
        let ids = Identities::generate();
        for (k, m, len) in [(1, 0, 0), (3, 0, 5), (1, 2, 1), (10, 4, 33)] {
            let payload = vec![7u8; len];
            let blobs = seal_unit(&ids.recipients(), info(), k, m, &payload).unwrap();
            let parsed: Vec<_> = blobs.iter().map(|b| parse_blob(b).unwrap()).collect();
            assert_eq!(open_unit(&ids, &parsed[m..]).unwrap(), payload);
        }
    }

    #[test]
    fn a_blob_holds_no_plaintext() {
        let ids = Identities::generate();
        let payload = b"bucket-name/secret-key plaintext".repeat(100);
        for blob in seal_unit(&ids.recipients(), info(), 2, 1, &payload).unwrap() {
            assert!(!blob.windows(11).any(|w| w == b"bucket-name"));
        }
    }
}
