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
    // A fragment not much larger than one read is read whole, front to
    // back, in one request: the trailer first would cost a second request
    // and, on a disk, a seek that defeats read-ahead.
    let len = geometry.fragment_len();
    if len <= max_read as u64 + max_read as u64 / 4 {
        let size = match backend.stat(&fragment.blob).await {
            Ok(meta) => meta.size,
            Err(e) => return unavailable(e, bytes_read),
        };
        let corrupt = |stripe, bytes_read| FragmentCheck {
            finding: Finding::Corrupt { stripe },
            bytes_read,
        };
        if size != len {
            return corrupt(None, bytes_read);
        }
        let bytes = match backend.get(&fragment.blob, 0..len).await {
            Ok(b) => b,
            Err(e) => return unavailable(e, bytes_read),
        };
        bytes_read += bytes.len() as u64;
        let tail = bytes
            .get(geometry.hash_list_offset() as usize..)
            .unwrap_or_default();
        let Some(digests) = checked_trailer(tail, fragment, geometry) else {
            return corrupt(None, bytes_read);
        };
        return match bad_shard(&bytes, 0, 0..geometry.stripe_count, &digests, geometry) {
            Some(s) => corrupt(Some(s), bytes_read),
            None => FragmentCheck {
                finding: Finding::Healthy,
                bytes_read,
            },
        };
    }
    let digests = match size_and_trailer(backend, fragment, geometry, &mut bytes_read).await {
        Ok(d) => d,
        Err(check) => return check,
    };
    for (first, end, range) in stripe_runs(geometry, max_read) {
        let start = range.start;
        let bytes = match backend.get(&fragment.blob, range).await {
            Ok(b) => b,
            Err(e) => return unavailable(e, bytes_read),
        };
        bytes_read += bytes.len() as u64;
        if let Some(s) = bad_shard(&bytes, start, first..end, &digests, geometry) {
            return FragmentCheck {
                finding: Finding::Corrupt { stripe: Some(s) },
                bytes_read,
            };
        }
    }
    FragmentCheck {
        finding: Finding::Healthy,
        bytes_read,
    }
}

/// The first of `stripes` whose shard in `bytes` (read from fragment
/// offset `start`) does not match its digest, if any.
fn bad_shard(
    bytes: &[u8],
    start: u64,
    stripes: std::ops::Range<u64>,
    digests: &[Digest],
    geometry: &Geometry,
) -> Option<u64> {
    stripes.into_iter().find(|&s| {
        let at = (geometry.shard_offset(s) - start) as usize;
        let len = geometry.shard_len(s);
        !bytes
            .get(at..at + len)
            .is_some_and(|shard| digests[s as usize].matches(shard))
    })
}

/// Audits fragment `fragment` by sampling: its size, its whole trailer
/// (checked against the manifest) and only the shards of `stripes` (each
/// checked against its digest), so a backend that lost or altered data is
/// caught without reading all of it. A blob deleted, truncated or with an
/// altered trailer is always caught; one with a fraction f of its shards
/// altered is caught with probability 1 - (1 - f)^n for n sampled stripes
/// (without replacement: a little more).
pub async fn audit_fragment(
    backend: &dyn Backend,
    fragment: &FragmentRef,
    geometry: &Geometry,
    stripes: &[u64],
) -> FragmentCheck {
    let mut bytes_read = 0;
    let digests = match size_and_trailer(backend, fragment, geometry, &mut bytes_read).await {
        Ok(d) => d,
        Err(check) => return check,
    };
    let stripes: Vec<u64> = stripes
        .iter()
        .copied()
        .filter(|&s| s < geometry.stripe_count)
        .collect();
    if stripes.is_empty() {
        return FragmentCheck {
            finding: Finding::Healthy,
            bytes_read,
        };
    }
    let ranges: Vec<_> = stripes
        .iter()
        .map(|&s| {
            let start = geometry.shard_offset(s);
            start..start + geometry.shard_len(s) as u64
        })
        .collect();
    // One challenge for every sampled shard, with a fresh nonce: a peer
    // answers in one round trip, bound to this challenge; other backends
    // read each range.
    let nonce: [u8; 32] = rand::random();
    let shards = match backend.challenge(&fragment.blob, nonce, &ranges).await {
        Ok(shards) if shards.len() == stripes.len() => shards,
        Ok(shards) => {
            return FragmentCheck {
                finding: Finding::Unavailable(format!(
                    "a challenge of {} ranges was answered with {}",
                    stripes.len(),
                    shards.len()
                )),
                bytes_read,
            };
        }
        Err(e) => return unavailable(e, bytes_read),
    };
    for (&s, shard) in stripes.iter().zip(&shards) {
        bytes_read += shard.len() as u64;
        if !digests[s as usize].matches(shard) {
            return FragmentCheck {
                finding: Finding::Corrupt { stripe: Some(s) },
                bytes_read,
            };
        }
    }
    FragmentCheck {
        finding: Finding::Healthy,
        bytes_read,
    }
}

/// The stripes of a fragment in runs of whole stripes of at most
/// `max_read` bytes each (at least one stripe): (first stripe, end
/// stripe, byte range), so a fragment is read in bounded pieces.
pub fn stripe_runs(geometry: &Geometry, max_read: usize) -> Vec<(u64, u64, std::ops::Range<u64>)> {
    let mut runs = Vec::new();
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
        runs.push((stripe, end_stripe, start..end));
        stripe = end_stripe;
    }
    runs
}

/// Parses a fragment's digest trailer and checks it against the
/// manifest's group digests; `None` when it does not match.
pub fn checked_trailer(
    list: &[u8],
    fragment: &FragmentRef,
    geometry: &Geometry,
) -> Option<Vec<Digest>> {
    Digest::parse_list(list)
        .filter(|d| d.len() as u64 == geometry.stripe_count)
        .filter(|d| group_digests(d) == fragment.group_digests)
}

/// Stats the blob (its size must be the fragment's) and reads its trailer,
/// checked against the manifest: the digests, or the finding that ends
/// the check.
async fn size_and_trailer(
    backend: &dyn Backend,
    fragment: &FragmentRef,
    geometry: &Geometry,
    bytes_read: &mut u64,
) -> Result<Vec<Digest>, FragmentCheck> {
    let corrupt = |bytes_read| FragmentCheck {
        finding: Finding::Corrupt { stripe: None },
        bytes_read,
    };
    let size = backend
        .stat(&fragment.blob)
        .await
        .map_err(|e| unavailable(e, *bytes_read))?
        .size;
    if size != geometry.fragment_len() {
        return Err(corrupt(*bytes_read));
    }
    let trailer = geometry.hash_list_offset()..geometry.fragment_len();
    let list = backend
        .get(&fragment.blob, trailer)
        .await
        .map_err(|e| unavailable(e, *bytes_read))?;
    *bytes_read += list.len() as u64;
    checked_trailer(&list, fragment, geometry).ok_or_else(|| corrupt(*bytes_read))
}
