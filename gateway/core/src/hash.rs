//! blake3 digests of shards and of groups of shard digests.
//!
//! Every shard's plain blake3 hash (what `b3sum` prints for its bytes) is
//! written in the trailer of its fragment blob, in stripe order. The
//! manifest keeps, per fragment, one **group digest** for every
//! [`HASH_GROUP_STRIPES`] stripes: a keyed hash of that run of shard digests.
//! A reader fetches the trailer slice of the groups it needs, checks it
//! against the manifest, then checks each shard it uses. The manifest thus
//! grows by 32 bytes per fragment per 256 stripes (256 MiB of plaintext at
//! the default stripe), and a range read verifies exactly what it reads.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bytes of one digest.
pub const DIGEST_BYTES: usize = 32;
/// Stripes covered by one group digest in the manifest.
pub const HASH_GROUP_STRIPES: u64 = 256;

const GROUP_CONTEXT: &str = "shardgate 2026-11 fragment hash group v1";

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl Digest {
    /// The blake3 hash of a shard.
    pub fn of_shard(shard: &[u8]) -> Self {
        Self(*blake3::hash(shard).as_bytes())
    }

    /// The group digest of a run of shard digests.
    pub fn of_group(digests: &[Digest]) -> Self {
        let mut h = blake3::Hasher::new_derive_key(GROUP_CONTEXT);
        for d in digests {
            h.update(&d.0);
        }
        Self(*h.finalize().as_bytes())
    }

    /// Reads a run of digests from trailer bytes; `None` if the length is not
    /// a multiple of 32.
    pub fn parse_list(bytes: &[u8]) -> Option<Vec<Digest>> {
        if !bytes.len().is_multiple_of(DIGEST_BYTES) {
            return None;
        }
        let list = bytes
            .chunks_exact(DIGEST_BYTES)
            .map(|c| {
                let mut d = [0u8; DIGEST_BYTES];
                d.copy_from_slice(c);
                Digest(d)
            })
            .collect();
        Some(list)
    }

    /// Constant-time comparison of a shard against this digest.
    pub fn matches(&self, shard: &[u8]) -> bool {
        blake3::hash(shard) == blake3::Hash::from_bytes(self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The groups that cover `stripes`.
pub fn groups_for(stripes: &std::ops::Range<u64>) -> std::ops::Range<u64> {
    stripes.start / HASH_GROUP_STRIPES..stripes.end.div_ceil(HASH_GROUP_STRIPES)
}

/// The stripes group `group` covers in a segment of `stripe_count` stripes.
pub fn group_stripes(group: u64, stripe_count: u64) -> std::ops::Range<u64> {
    group * HASH_GROUP_STRIPES..((group + 1) * HASH_GROUP_STRIPES).min(stripe_count)
}

/// Folds the shard digests of one fragment into its group digests.
pub fn group_digests(shard_digests: &[Digest]) -> Vec<Digest> {
    shard_digests
        .chunks(HASH_GROUP_STRIPES as usize)
        .map(Digest::of_group)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_digest_is_plain_blake3() {
        assert_eq!(Digest::of_shard(b"abc").0, *blake3::hash(b"abc").as_bytes());
        assert!(Digest::of_shard(b"abc").matches(b"abc"));
        assert!(!Digest::of_shard(b"abc").matches(b"abd"));
    }

    #[test]
    fn groups_cover_stripes() {
        assert_eq!(groups_for(&(0..1)), 0..1);
        assert_eq!(groups_for(&(255..257)), 0..2);
        assert_eq!(group_stripes(1, 300), 256..300);
        let ds: Vec<Digest> = (0..300u32)
            .map(|i| Digest::of_shard(&i.to_le_bytes()))
            .collect();
        let groups = group_digests(&ds);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], Digest::of_group(&ds[256..]));
        assert_ne!(
            Digest::of_group(&ds[..2]),
            Digest::of_group(&[ds[1], ds[0]])
        );
    }

    #[test]
    fn parse_list_rejects_ragged_bytes() {
        assert!(Digest::parse_list(&[0; 33]).is_none());
        assert_eq!(Digest::parse_list(&[7; 64]).map(|l| l.len()), Some(2));
    }
}
