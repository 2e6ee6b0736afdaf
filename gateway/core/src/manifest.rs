//! The manifest: everything needed to read one object version back.
//!
//! # Encoding (format version 1)
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SGMF"
//! 4       2     format version, u16 little endian (1)
//! 6       ..    the Manifest struct in postcard 1.x encoding
//! ```
//!
//! postcard is a stable, documented wire format (varint integers, length-
//! prefixed sequences and strings, enums as varint discriminants, struct
//! fields in declaration order, no field names). A new field or variant
//! means a new format version: decoders keep reading every older version,
//! and refuse a newer one with [`CoreError::Manifest`] instead of guessing.
//! Field order below is therefore part of the format; never reorder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::error::{CoreError, Result};
use crate::hash::Digest;
use crate::ids::{BackendId, BlobName, VersionId};
use crate::layout::{Geometry, StripeLayout};

/// The four bytes every encoded manifest starts with.
pub const MAGIC: &[u8; 4] = b"SGMF";
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 1;

/// One object version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version's id (time-ordered).
    pub version_id: VersionId,
    /// Plaintext size of the whole object.
    pub size: u64,
    /// The S3 ETag, quotes excluded.
    pub etag: String,
    /// `Content-Type`, as given by the writer.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` pairs (names lower-cased, without the prefix) and the
    /// other stored standard headers.
    pub user_metadata: BTreeMap<String, String>,
    /// When the version was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The object's bytes, in order: one segment for a single PUT, one per
    /// part for a multipart upload.
    pub segments: Vec<Segment>,
}

/// A run of the object's bytes, encrypted as one age file and striped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Plaintext bytes in this segment.
    pub plaintext_len: u64,
    /// The age header and nonce; `envelope.age_prefix()` followed by the
    /// sealed chunks is a standard age file.
    pub envelope: Envelope,
    /// Codec, k + m and stripe size.
    pub layout: StripeLayout,
    /// Fragment i holds shard i of every stripe; always k + m entries.
    pub fragments: Vec<FragmentRef>,
}

impl Segment {
    /// Offsets and lengths inside this segment.
    pub fn geometry(&self) -> Geometry {
        self.layout.geometry(self.plaintext_len)
    }
}

/// Where fragment i lives and how to verify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentRef {
    /// The backend holding the blob.
    pub backend: BackendId,
    /// The blob's opaque name on that backend.
    pub blob: BlobName,
    /// One digest per group of 256 stripes over the shard digests stored in
    /// the blob's trailer (see [`crate::hash`]).
    pub group_digests: Vec<Digest>,
    /// Whether the blob was durably written.
    pub state: FragmentState,
}

/// Whether a fragment can be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FragmentState {
    /// Written and durable when the version was committed.
    Stored,
    /// Not written (the write reached its quorum without it); a repair job
    /// recreates it. Readers never ask for it.
    Missing,
}

impl Manifest {
    /// Encodes with magic and format version.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        postcard::to_io(self, &mut out).map_err(|e| CoreError::Manifest(e.to_string()))?;
        Ok(out)
    }

    /// Decodes any supported format version and checks internal consistency.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| CoreError::Manifest("not a shardgate manifest (bad magic)".into()))?;
        let (version, body) = body
            .split_first_chunk::<2>()
            .ok_or_else(|| CoreError::Manifest("truncated before the format version".into()))?;
        match u16::from_le_bytes(*version) {
            1 => {
                let (m, rest): (Manifest, _) = postcard::take_from_bytes(body)
                    .map_err(|e| CoreError::Manifest(format!("format 1: {e}")))?;
                if !rest.is_empty() {
                    return Err(CoreError::Manifest(format!(
                        "{} trailing bytes",
                        rest.len()
                    )));
                }
                m.validate()?;
                Ok(m)
            }
            v => Err(CoreError::Manifest(format!(
                "format version {v} is newer than this build reads ({FORMAT_VERSION})"
            ))),
        }
    }

    /// Checks what the types alone cannot: sizes add up, every segment has
    /// k + m fragments with the right number of group digests.
    pub fn validate(&self) -> Result<()> {
        let total: u64 = self.segments.iter().map(|s| s.plaintext_len).sum();
        if total != self.size {
            return Err(CoreError::Manifest(format!(
                "segments hold {total} bytes, size says {}",
                self.size
            )));
        }
        for (n, s) in self.segments.iter().enumerate() {
            let want = s.layout.code.width();
            if s.fragments.len() != want {
                return Err(CoreError::Manifest(format!(
                    "segment {n} lists {} fragments, k + m = {want}",
                    s.fragments.len()
                )));
            }
            let groups = crate::hash::groups_for(&(0..s.geometry().stripe_count)).end as usize;
            if let Some(f) = s.fragments.iter().find(|f| f.group_digests.len() != groups) {
                return Err(CoreError::Manifest(format!(
                    "segment {n} fragment {} has {} group digests, {groups} expected",
                    f.blob,
                    f.group_digests.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, Identities};
    use crate::layout::ErasureCode;

    pub(crate) fn sample() -> Manifest {
        let ids = Identities::new(vec![age::x25519::Identity::generate()]).unwrap();
        let (envelope, _) = Envelope::seal(&ids.recipients()).unwrap();
        let layout = StripeLayout::default_for(ErasureCode::new(2, 1).unwrap());
        let fragments = (0..3)
            .map(|i| FragmentRef {
                backend: BackendId::new(format!("disk{i}")).unwrap(),
                blob: BlobName::random(),
                group_digests: vec![Digest::of_shard(&[i])],
                state: if i == 2 {
                    FragmentState::Missing
                } else {
                    FragmentState::Stored
                },
            })
            .collect();
        Manifest {
            version_id: VersionId::new(1_700_000_000_000),
            size: 5,
            etag: "5d41402abc4b2a76b9719d911017c592".into(),
            content_type: Some("text/plain".into()),
            user_metadata: [("color".to_string(), "blue".to_string())].into(),
            created_unix_ms: 1_700_000_000_000,
            segments: vec![Segment {
                plaintext_len: 5,
                envelope,
                layout,
                fragments,
            }],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(&bytes[..6], b"SGMF\x01\x00");
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn refuses_garbage_truncation_and_newer_versions() {
        let bytes = sample().encode().unwrap();
        assert!(Manifest::decode(b"nope").is_err());
        assert!(Manifest::decode(&bytes[..5]).is_err());
        for cut in [6, bytes.len() / 2, bytes.len() - 1] {
            assert!(Manifest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[4] = 2;
        let err = Manifest::decode(&newer).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
        let mut longer = bytes;
        longer.push(0);
        assert!(Manifest::decode(&longer).is_err());
    }

    #[test]
    fn validate_catches_inconsistent_manifests() {
        let mut m = sample();
        m.size = 6;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.segments[0].fragments.pop();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.segments[0].fragments[0].group_digests.clear();
        assert!(m.validate().is_err());
    }
}
