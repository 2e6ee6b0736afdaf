//! The manifest: everything needed to read one object version back.
//!
//! # Encoding (format versions 1 and 2)
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SGMF"
//! 4       2     format version, u16 little endian (1 or 2)
//! 6       ..    the Manifest struct in postcard 1.x encoding
//! ```
//!
//! Version 2 is version 1's body followed by one `Option` of bytes per
//! segment: the inline payloads ([`crate::inline`]). A manifest without an
//! inline segment is still written as version 1, byte for byte as before,
//! so the releases before version 2 keep reading every manifest that does
//! not need it. A [`Segment`]'s own serde shape leaves `inline` out: it is
//! the shape every other record embedding a segment (an upload's parts)
//! was pinned with, and a part is never inline.
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
/// The newest format version this build writes (and reads).
pub const FORMAT_VERSION: u16 = 2;

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
    /// Fragment i holds shard i of every stripe; always k + m entries,
    /// none for an inline segment.
    pub fragments: Vec<FragmentRef>,
    /// The sealed payload itself, for a segment kept in its manifest
    /// ([`crate::inline`]): then `fragments` is empty and `layout` unused.
    /// Encoded only by [`Manifest::encode`] (format 2).
    #[serde(skip)]
    pub inline: Option<Vec<u8>>,
}

impl Segment {
    /// Offsets and lengths inside this segment.
    pub fn geometry(&self) -> Geometry {
        self.layout.geometry(self.plaintext_len)
    }

    /// Whether the segment's bytes live in the manifest, with no fragment
    /// on any backend (nothing for scrub, repair or a drain to do).
    pub fn is_inline(&self) -> bool {
        self.inline.is_some()
    }
}

/// The body of a manifest in format `version`, checked to its end.
fn decode_body<'a, T: Deserialize<'a>>(version: u16, body: &'a [u8]) -> Result<T> {
    let (m, rest): (T, _) = postcard::take_from_bytes(body)
        .map_err(|e| CoreError::Manifest(format!("format {version}: {e}")))?;
    if !rest.is_empty() {
        return Err(CoreError::Manifest(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(m)
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
    /// Version 1 unless a segment is inline.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let inline_bytes: usize = self
            .segments
            .iter()
            .filter_map(|s| s.inline.as_ref().map(Vec::len))
            .sum();
        let mut out = Vec::with_capacity(256 + inline_bytes);
        out.extend_from_slice(MAGIC);
        let inline = self.segments.iter().any(Segment::is_inline);
        out.extend_from_slice(&(if inline { 2u16 } else { 1 }).to_le_bytes());
        let err = |e: postcard::Error| CoreError::Manifest(e.to_string());
        let mut out = postcard::to_io(self, out).map_err(err)?;
        if inline {
            // As byte strings: the same bytes on the wire as a sequence of
            // u8, written and read in one copy instead of byte by byte.
            let payloads: Vec<Option<&serde_bytes::Bytes>> = self
                .segments
                .iter()
                .map(|s| s.inline.as_deref().map(serde_bytes::Bytes::new))
                .collect();
            out = postcard::to_io(&payloads, out).map_err(err)?;
        }
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
        let m: Manifest = match u16::from_le_bytes(*version) {
            1 => decode_body(1, body)?,
            2 => {
                let (mut m, rest): (Manifest, _) = postcard::take_from_bytes(body)
                    .map_err(|e| CoreError::Manifest(format!("format 2: {e}")))?;
                let payloads: Vec<Option<serde_bytes::ByteBuf>> = decode_body(2, rest)?;
                if payloads.len() != m.segments.len() {
                    return Err(CoreError::Manifest(format!(
                        "format 2: {} inline payloads for {} segments",
                        payloads.len(),
                        m.segments.len()
                    )));
                }
                for (segment, payload) in m.segments.iter_mut().zip(payloads) {
                    segment.inline = payload.map(serde_bytes::ByteBuf::into_vec);
                }
                m
            }
            v => {
                return Err(CoreError::Manifest(format!(
                    "format version {v} is newer than this build reads ({FORMAT_VERSION})"
                )));
            }
        };
        m.validate()?;
        Ok(m)
    }

    /// Checks what the types alone cannot: sizes add up, every segment has
    /// k + m fragments with the right number of group digests.
    pub fn validate(&self) -> Result<()> {
        let total = self
            .segments
            .iter()
            .try_fold(0u64, |sum, s| sum.checked_add(s.plaintext_len))
            .ok_or_else(|| CoreError::Manifest("segment sizes overflow".into()))?;
        if total != self.size {
            return Err(CoreError::Manifest(format!(
                "segments hold {total} bytes, size says {}",
                self.size
            )));
        }
        for (n, s) in self.segments.iter().enumerate() {
            if let Some(sealed) = &s.inline {
                if !s.fragments.is_empty() {
                    return Err(CoreError::Manifest(format!(
                        "inline segment {n} also lists fragments"
                    )));
                }
                let want = crate::inline::sealed_len(s.plaintext_len);
                if s.plaintext_len >= sealed.len() as u64 || sealed.len() as u64 != want {
                    return Err(CoreError::Manifest(format!(
                        "inline segment {n} holds {} sealed bytes, {want} expected",
                        sealed.len()
                    )));
                }
                continue;
            }
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
                inline: None,
            }],
        }
    }

    fn inline_sample() -> Manifest {
        let ids = Identities::new(vec![age::x25519::Identity::generate()]).unwrap();
        let (envelope, key) = Envelope::seal(&ids.recipients()).unwrap();
        let mut m = sample();
        m.segments[0] = Segment {
            plaintext_len: 5,
            envelope,
            layout: StripeLayout::default_for(ErasureCode::new(1, 0).unwrap()),
            fragments: Vec::new(),
            inline: Some(crate::inline::seal_payload(&key, b"hello").unwrap()),
        };
        m
    }

    #[test]
    fn only_a_manifest_with_an_inline_segment_is_written_as_version_2() {
        let m = inline_sample();
        let bytes = m.encode().unwrap();
        assert_eq!(&bytes[..6], b"SGMF\x02\x00");
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        // Without it, the bytes are version 1's, which older builds read.
        let without = sample();
        let plain = without.encode().unwrap();
        assert_eq!(&plain[..6], b"SGMF\x01\x00");
        assert_eq!(Manifest::decode(&plain).unwrap(), without);
        // The payloads as byte strings are what a sequence of u8 would be.
        let payloads = vec![m.segments[0].inline.clone()];
        let as_seq = postcard::to_allocvec(&payloads).unwrap();
        assert!(bytes.ends_with(&as_seq));
        // A segment's own encoding (an upload part's) is version 1's.
        let segment = postcard::to_allocvec(&m.segments[0]).unwrap();
        let back: Segment = postcard::from_bytes(&segment).unwrap();
        assert_eq!(back.inline, None);
    }

    #[test]
    fn an_inline_segment_must_hold_its_sealed_length_and_no_fragments() {
        let mut m = inline_sample();
        m.segments[0].inline.as_mut().unwrap().pop();
        assert!(m.validate().is_err());
        let mut m = inline_sample();
        m.segments[0].fragments = sample().segments[0].fragments.clone();
        assert!(m.validate().is_err());
        let mut m = inline_sample();
        m.size = 6;
        m.segments[0].plaintext_len = 6;
        assert!(m.validate().is_err());
        // A forged length that would wrap the sealed length is refused.
        let mut m = inline_sample();
        m.size = u64::MAX - 5;
        m.segments[0].plaintext_len = u64::MAX - 5;
        assert!(m.validate().is_err());
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
        newer[4] = 3;
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
