//! Scrub's building block: one fragment checked on its own against the
//! manifest, without the key and without the other fragments.
//!
//! The fragment's trailer (its shards' blake3 digests) must hash to the
//! manifest's group digests, and every shard must match its digest in the
//! trailer. Reads go stripe by stripe in runs of at most `max_read` bytes,
//! so memory stays bounded whatever the fragment's size.

use shardgate_backend::{Backend, BackendError};
use shardgate_core::hash::group_digests;
use shardgate_core::{Digest, FragmentRef, Geometry};

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Every shard matches.
    Healthy,
    /// The backend does not have the blob.
    Missing,
    /// The trailer does not match the manifest (`None`), or shard `stripe`
    /// does not match its digest, or the blob has the wrong size.
    Corrupt { stripe: Option<u64> },
    /// The backend could not answer: not damage, look again later.
    Unavailable(String),
}

impl Finding {
    /// Whether the fragment needs repair.
    pub fn is_damage(&self) -> bool {
        matches!(self, Finding::Missing | Finding::Corrupt { .. })
    }
}

/// A check's finding and the bytes it read (for the rate limit and the
/// metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentCheck {
    pub finding: Finding,
    pub bytes_read: u64,
}

fn unavailable(e: BackendError, bytes_read: u64) -> FragmentCheck {
    let finding = match e {
        BackendError::NotFound { .. } => Finding::Missing,
        e => Finding::Unavailable(e.to_string()),
    };
    FragmentCheck {
        finding,
        bytes_read,
    }
}

/// Reads fragment `fragment` of a segment of `geometry` from `backend` and
/// checks it whole (see the module docs).
pub async fn verify_fragment(
    backend: &dyn Backend,
    fragment: &FragmentRef,
    geometry: &Geometry,
    max_read: usize,
) -> FragmentCheck {
    let mut bytes_read = 0;
    let size = match backend.stat(&fragment.blob).await {
        Ok(meta) => meta.size,
        Err(e) => return unavailable(e, bytes_read),
    };
    if size != geometry.fragment_len() {
        return FragmentCheck {
            finding: Finding::Corrupt { stripe: None },
            bytes_read,
        };
    }
    let trailer = geometry.hash_list_offset()..geometry.fragment_len();
    let list = match backend.get(&fragment.blob, trailer).await {
        Ok(b) => b,
        Err(e) => return unavailable(e, bytes_read),
    };
    bytes_read += list.len() as u64;
    let digests = match Digest::parse_list(&list) {
        Some(d) if d.len() as u64 == geometry.stripe_count => d,
        _ => {
            return FragmentCheck {
                finding: Finding::Corrupt { stripe: None },
                bytes_read,
            };
        }
    };
    if group_digests(&digests) != fragment.group_digests {
        return FragmentCheck {
            finding: Finding::Corrupt { stripe: None },
            bytes_read,
        };
    }
    // Runs of whole stripes, at most `max_read` bytes each (at least one).
    let mut stripe = 0;
    while stripe < geometry.stripe_count {
        let start = geometry.shard_offset(stripe);
        let mut end_stripe = stripe + 1;
        while end_stripe < geometry.stripe_count
            && geometry
                .shard_offset(end_stripe + 1)
                .min(geometry.hash_list_offset())
                - start
                <= max_read as u64
        {
            end_stripe += 1;
        }
        let end = geometry
            .shard_offset(end_stripe)
            .min(geometry.hash_list_offset());
        let bytes = match backend.get(&fragment.blob, start..end).await {
            Ok(b) => b,
            Err(e) => return unavailable(e, bytes_read),
        };
        bytes_read += bytes.len() as u64;
        for s in stripe..end_stripe {
            let at = (geometry.shard_offset(s) - start) as usize;
            let len = geometry.shard_len(s);
            let ok = bytes
                .get(at..at + len)
                .is_some_and(|shard| digests[s as usize].matches(shard));
            if !ok {
                return FragmentCheck {
                    finding: Finding::Corrupt { stripe: Some(s) },
                    bytes_read,
                };
            }
        }
        stripe = end_stripe;
    }
    FragmentCheck {
        finding: Finding::Healthy,
        bytes_read,
    }
}
