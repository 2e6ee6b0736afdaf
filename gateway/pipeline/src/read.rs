//! The read path: a manifest (and an optional range) in, verified
//! plaintext out, as a stream.
//!
//! Stripes are read in batches of about `batch_bytes` of plaintext,
//! `batches_in_flight` at a time (fetch ahead while earlier ones decode), so
//! memory is bounded by the batch size whatever the object size. For each
//! batch the reader asks only the fragments it needs: the data shards that
//! hold the range when they are healthy (no decoding at all), otherwise any
//! k. The digest lists are checked against the manifest when fetched; each
//! stripe's shards are then checked against their blake3 digests and decoded
//! in one blocking task, while they are in cache. Nothing unverified is used. A fragment that is missing,
//! slower than `fragment_timeout`, unreachable or corrupt is treated as an
//! erasure for the rest of the read, another fragment is asked instead, and
//! the fragment is reported in the [`ReadReport`] for repair. When fewer
//! than k verified shards remain the stream fails with
//! [`PipelineError::NotEnoughFragments`]: never wrong bytes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::Instrument;

use bytes::Bytes;
use futures::future::Either;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use shardgate_backend::{BackendError, buffers};
use shardgate_core::hash::{DIGEST_BYTES, HASH_GROUP_STRIPES, group_stripes, groups_for};
use shardgate_core::layout::SEALED_CHUNK_BYTES;
use shardgate_core::{
    BackendId, BlobName, CoreError, Digest, FragmentState, Geometry, Identities, Manifest,
    PayloadKey, decode_range_into, sealed_stripe,
};

use crate::backend_set::BackendSet;
use crate::error::{PipelineError, Result};
use crate::key_cache::{DEFAULT_KEY_CACHE_ENTRIES, KeyCache};
use crate::write::INLINE_CODEC_BYTES;

/// How reads are done.
#[derive(Clone, Debug)]
pub struct ReadParams {
    /// Keys that open the objects.
    pub identities: Arc<Identities>,
    /// Payload keys already opened.
    pub keys: Arc<KeyCache>,
    /// A fragment request slower than this counts as an erasure.
    pub fragment_timeout: Duration,
    /// Plaintext bytes per batch (at least one stripe).
    pub batch_bytes: usize,
    /// Batches fetched and decoded ahead of the consumer. Memory per read is
    /// about `batch_bytes` x `batches_in_flight` x 2 (fetched + decoded).
    pub batches_in_flight: usize,
}

impl ReadParams {
    /// 2 MiB batches, 3 in flight, 10 s fragment timeout, a key cache of
    /// [`DEFAULT_KEY_CACHE_ENTRIES`].
    pub fn new(identities: Arc<Identities>) -> Self {
        Self {
            identities,
            keys: KeyCache::new(DEFAULT_KEY_CACHE_ENTRIES),
            fragment_timeout: Duration::from_secs(10),
            batch_bytes: 2 << 20,
            batches_in_flight: 3,
        }
    }
}

/// Why a fragment was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The manifest records it as never written.
    NotStored,
    /// Its backend is not configured any more.
    UnknownBackend,
    /// The backend does not have the blob.
    Missing,
    /// A shard (or the digest list) does not match its digest.
    Corrupt { stripe: u64 },
    /// The backend answered with an error.
    Unavailable(String),
    /// The backend did not answer in time.
    Slow,
}

/// A fragment that could not be used, for the repair job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFragment {
    /// Segment index in the manifest.
    pub segment: usize,
    /// Fragment index (0..k+m).
    pub fragment: usize,
    /// Where it should be.
    pub backend: BackendId,
    /// Its blob name.
    pub blob: BlobName,
    /// What was wrong.
    pub problem: Problem,
}

/// The fragments found bad during a read (each listed once).
#[derive(Clone, Debug, Default)]
pub struct ReadReport(Arc<Mutex<Vec<BadFragment>>>);

impl ReadReport {
    fn lock(&self) -> MutexGuard<'_, Vec<BadFragment>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, bad: BadFragment) {
        let mut list = self.lock();
        if list
            .iter()
            .any(|b| b.segment == bad.segment && b.fragment == bad.fragment)
        {
            return;
        }
        tracing::warn!(
            segment = bad.segment,
            fragment = bad.fragment,
            backend = %bad.backend,
            blob = %bad.blob,
            problem = ?bad.problem,
            "fragment not usable; read continues with others"
        );
        list.push(bad);
    }

    /// The bad fragments seen so far.
    pub fn bad_fragments(&self) -> Vec<BadFragment> {
        self.lock().clone()
    }
}

/// A read in progress.
pub struct ObjectRead {
    /// The plaintext of the range, in order.
    pub stream: BoxStream<'static, Result<Bytes>>,
    /// Bad fragments met so far; complete once the stream ends.
    pub report: ReadReport,
    /// The plaintext range being read.
    pub range: Range<u64>,
}

impl std::fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRead")
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// Reads `range` (the whole object if `None`) of the version `manifest`.
pub fn read_object(
    manifest: Arc<Manifest>,
    range: Option<Range<u64>>,
    backends: BackendSet,
    params: ReadParams,
) -> Result<ObjectRead> {
    let (range, parts) = wanted_parts(&manifest, range)?;
    let report = ReadReport::default();
    // Held as long as the stream: a removal of the version meanwhile keeps
    // the keys of the segments still to come out of the cache.
    let reading = params.keys.reading(manifest.version_id);
    let ctx = (manifest, backends, params, report.clone());
    let stream = stream::iter(parts)
        .map(move |(index, local)| {
            let _reading = &reading;
            let (manifest, backends, params, report) = ctx.clone();
            segment_stream(manifest, index, Some(local), backends, params, report)
        })
        .flatten()
        .boxed();
    Ok(ObjectRead {
        stream,
        report,
        range,
    })
}

/// A segment's index and the range of its plaintext wanted.
type Part = (usize, Range<u64>);

/// The plaintext range wanted (the whole object if `None`), and the part
/// of each segment it covers.
fn wanted_parts(manifest: &Manifest, range: Option<Range<u64>>) -> Result<(Range<u64>, Vec<Part>)> {
    let range = match range {
        None => 0..manifest.size,
        Some(r) if r.start < r.end && r.end <= manifest.size => r,
        Some(r) => {
            return Err(CoreError::RangeNotSatisfiable {
                start: r.start,
                end: r.end,
                len: manifest.size,
            }
            .into());
        }
    };
    let mut parts = Vec::new();
    let mut seg_start = 0u64;
    for (index, seg) in manifest.segments.iter().enumerate() {
        let seg_end = seg_start + seg.plaintext_len;
        let (from, to) = (range.start.max(seg_start), range.end.min(seg_end));
        if from < to {
            parts.push((index, from - seg_start..to - seg_start));
        }
        seg_start = seg_end;
    }
    Ok((range, parts))
}

/// Reads `range` (the whole object if `None`) of a version whose wanted
/// segments are all inline in its manifest: decrypted at once, with no
/// stream, no backend and nothing to report. `None` when one of them is
/// stored in fragments ([`read_object`] reads those); when none is wanted
/// (an empty object), the empty plaintext.
///
/// A small object's GET is mostly this: the stream [`read_object`] builds
/// cost more than the decryption (issue 26).
pub fn read_inline(
    manifest: &Manifest,
    range: Option<Range<u64>>,
    params: &ReadParams,
) -> Result<Option<Bytes>> {
    let (_, parts) = wanted_parts(manifest, range)?;
    if !parts
        .iter()
        .all(|(index, _)| manifest.segments[*index].is_inline())
    {
        return Ok(None);
    }
    // As a stream holds it: a removal of the version meanwhile keeps the
    // keys opened here out of the cache.
    let _reading = params.keys.reading(manifest.version_id);
    let mut plain = Vec::with_capacity(parts.len());
    for (index, local) in parts {
        plain.push(inline_part(manifest, index, Some(local), params)?);
    }
    let plain = match <[Bytes; 1]>::try_from(plain) {
        Ok([one]) => one,
        Err(parts) => Bytes::from(parts.concat()),
    };
    Ok(Some(plain))
}

/// Exports segment `segment` as a standard age file: its header, nonce and
/// sealed chunks, rebuilt from any k fragments and verified, but not
/// decrypted. `age -d -i identity-file` reads the result, so nothing stored
/// by shardgate is locked in.
pub fn export_segment(
    manifest: Arc<Manifest>,
    segment: usize,
    backends: BackendSet,
    params: ReadParams,
) -> Result<ObjectRead> {
    let seg = manifest
        .segments
        .get(segment)
        .ok_or_else(|| PipelineError::Placement(format!("no segment {segment}")))?;
    let prefix = Bytes::from(seg.envelope.age_prefix());
    let sealed: u64 = match &seg.inline {
        Some(payload) => payload.len() as u64,
        None => {
            let g = seg.geometry();
            (0..g.stripe_count)
                .map(|s| g.stripe_sealed_len(s) as u64)
                .sum()
        }
    };
    let range = 0..prefix.len() as u64 + sealed;
    let report = ReadReport::default();
    let body = segment_stream(manifest, segment, None, backends, params, report.clone());
    let stream = stream::once(async move { Ok(prefix) }).chain(body).boxed();
    Ok(ObjectRead {
        stream,
        report,
        range,
    })
}

/// Streams plaintext `range` of a segment, or with `None` its sealed bytes.
fn segment_stream(
    manifest: Arc<Manifest>,
    index: usize,
    range: Option<Range<u64>>,
    backends: BackendSet,
    params: ReadParams,
    report: ReadReport,
) -> BoxStream<'static, Result<Bytes>> {
    if manifest.segments[index].is_inline() {
        return stream::once(async move { inline_part(&manifest, index, range, &params) }).boxed();
    }
    let decrypt = range.is_some();
    let setup = async move {
        let segment = &manifest.segments[index];
        let key = match decrypt {
            true => Some(params.keys.open(
                &manifest.version_id,
                &segment.envelope,
                &params.identities,
            )?),
            false => None,
        };
        Ok::<_, PipelineError>(SegmentRead::new(
            manifest.clone(),
            index,
            key,
            backends,
            params,
            report,
        ))
    };
    stream::once(setup)
        .map(move |state| match state {
            Err(e) => stream::once(async { Err(e) }).boxed(),
            Ok(state) => {
                let state = Arc::new(state);
                let batches = match &range {
                    Some(r) => state.batches(r.clone()),
                    None => state.all_stripes(),
                };
                let in_flight = state.params.batches_in_flight.max(1);
                stream::iter(batches)
                    .map(move |(stripes, sub)| state.clone().read_batch(stripes, sub))
                    .buffered(in_flight)
                    .map_ok(|parts| stream::iter(parts.into_iter().map(Ok)))
                    .try_flatten()
                    .boxed()
            }
        })
        .flatten()
        .boxed()
}

/// Plaintext `range` of an inline segment, or with `None` its sealed bytes:
/// no backend is asked.
fn inline_part(
    manifest: &Manifest,
    index: usize,
    range: Option<Range<u64>>,
    params: &ReadParams,
) -> Result<Bytes> {
    let segment = &manifest.segments[index];
    let payload = segment
        .inline
        .as_deref()
        .ok_or_else(|| PipelineError::Internal("segment is not inline".into()))?;
    let Some(range) = range else {
        return Ok(Bytes::copy_from_slice(payload));
    };
    let key = params
        .keys
        .open(&manifest.version_id, &segment.envelope, &params.identities)?;
    let plain =
        shardgate_core::inline::open_payload_range(&key, payload, segment.plaintext_len, range)?;
    Ok(Bytes::from(plain))
}

/// A fetched shard and the digest it must match, not yet checked.
type Candidate = Option<(Bytes, Digest)>;

/// Whether a stripe's candidates could suffice (if they all verify): the
/// data shards that hold the wanted bytes, or any k.
fn enough(candidates: &[Candidate], want: &Range<usize>, k: usize) -> bool {
    want.clone().all(|i| candidates[i].is_some()) || candidates.iter().flatten().count() >= k
}

fn flag(flags: &Mutex<Vec<bool>>, i: usize) -> bool {
    flags
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(i)
        .copied()
        .unwrap_or(true)
}

/// Verified shard digests by (fragment, hash group).
type DigestCache = HashMap<(usize, u64), Arc<Vec<Digest>>>;

struct SegmentRead {
    manifest: Arc<Manifest>,
    index: usize,
    geometry: Geometry,
    /// `None` exports sealed bytes instead of opening them.
    key: Option<Arc<PayloadKey>>,
    backends: BackendSet,
    params: ReadParams,
    report: ReadReport,
    bad: Mutex<Vec<bool>>,
    /// Fragments to ask last: on a backend marked down, or late once.
    avoid: Mutex<Vec<bool>>,
    groups: Mutex<DigestCache>,
}

impl SegmentRead {
    fn new(
        manifest: Arc<Manifest>,
        index: usize,
        key: Option<PayloadKey>,
        backends: BackendSet,
        params: ReadParams,
        report: ReadReport,
    ) -> Self {
        let segment = &manifest.segments[index];
        let geometry = segment.geometry();
        let width = segment.fragments.len();
        let avoid = segment
            .fragments
            .iter()
            .map(|f| !backends.board().is_up(&f.backend))
            .collect();
        let this = Self {
            geometry,
            key: key.map(Arc::new),
            bad: Mutex::new(vec![false; width]),
            avoid: Mutex::new(avoid),
            groups: Mutex::default(),
            manifest: manifest.clone(),
            index,
            backends,
            params,
            report,
        };
        for (i, f) in segment.fragments.iter().enumerate() {
            if f.state == FragmentState::Missing {
                this.mark_bad(i, Problem::NotStored);
            } else if this.backends.get(&f.backend).is_none() {
                this.mark_bad(i, Problem::UnknownBackend);
            }
        }
        this
    }

    fn mark_bad(&self, fragment: usize, problem: Problem) {
        if let Some(flag) = self
            .bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(fragment)
        {
            *flag = true;
        }
        let f = &self.manifest.segments[self.index].fragments[fragment];
        self.report.add(BadFragment {
            segment: self.index,
            fragment,
            backend: f.backend.clone(),
            blob: f.blob.clone(),
            problem,
        });
    }

    fn is_bad(&self, fragment: usize) -> bool {
        flag(&self.bad, fragment)
    }

    fn is_avoided(&self, fragment: usize) -> bool {
        flag(&self.avoid, fragment)
    }

    fn set_avoided(&self, fragment: usize) {
        if let Some(f) = self
            .avoid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(fragment)
        {
            *f = true;
        }
    }

    /// The usable fragments among `from`, those not avoided first.
    fn preferred(&self, from: impl Iterator<Item = usize>) -> Vec<usize> {
        let mut usable: Vec<usize> = from.filter(|&i| !self.is_bad(i)).collect();
        usable.sort_by_key(|&i| self.is_avoided(i));
        usable
    }

    /// How long to wait on these fragments before asking others.
    fn hedge_delay(&self, fragments: &[usize]) -> Duration {
        let board = self.backends.board();
        let segment = &self.manifest.segments[self.index];
        fragments
            .iter()
            .map(|&i| board.hedge_delay(&segment.fragments[i].backend))
            .max()
            .unwrap_or(crate::health::DEFAULT_HEDGE_DELAY)
    }

    /// Splits the segment-local `range` into batches of whole stripes, each
    /// with the plaintext sub-range it yields.
    fn batches(&self, range: Range<u64>) -> Vec<(Range<u64>, Range<u64>)> {
        let Ok(stripes) = self.geometry.stripes_for(&range) else {
            return Vec::new();
        };
        let stripe_bytes = self.geometry.layout.stripe_plain_bytes() as u64;
        let per_batch = (self.params.batch_bytes as u64 / stripe_bytes).max(1);
        let mut out = Vec::new();
        let mut s = stripes.start;
        while s < stripes.end {
            let e = (s + per_batch).min(stripes.end);
            let sub = range.start.max(s * stripe_bytes)..range.end.min(e * stripe_bytes);
            out.push((s..e, sub));
            s = e;
        }
        out
    }

    /// Every stripe, in batches (for export).
    fn all_stripes(&self) -> Vec<(Range<u64>, Range<u64>)> {
        let stripe_bytes = self.geometry.layout.stripe_plain_bytes() as u64;
        let per_batch = (self.params.batch_bytes as u64 / stripe_bytes).max(1);
        let count = self.geometry.stripe_count;
        (0..count.div_ceil(per_batch))
            .map(|b| {
                let stripes = b * per_batch..((b + 1) * per_batch).min(count);
                let len = self.geometry.plaintext_len;
                (
                    stripes.clone(),
                    (stripes.start * stripe_bytes).min(len)..(stripes.end * stripe_bytes).min(len),
                )
            })
            .collect()
    }

    /// The data shards needed from stripe `s` for plaintext `sub`, or for
    /// all its sealed bytes when exporting.
    fn wanted_shards(&self, s: u64, sub: &Range<u64>) -> Result<Range<usize>> {
        if self.key.is_some() {
            return Ok(self
                .geometry
                .sealed_span(s, &self.stripe_range(s, sub))?
                .data_shards);
        }
        Ok(0..self
            .geometry
            .stripe_sealed_len(s)
            .div_ceil(self.geometry.shard_len(s)))
    }

    fn stripe_range(&self, stripe: u64, sub: &Range<u64>) -> Range<u64> {
        let stripe_bytes = self.geometry.layout.stripe_plain_bytes() as u64;
        sub.start.max(stripe * stripe_bytes)..sub.end.min((stripe + 1) * stripe_bytes)
    }

    async fn read_batch(
        self: Arc<Self>,
        stripes: Range<u64>,
        sub: Range<u64>,
    ) -> Result<Vec<Bytes>> {
        let code = self.geometry.layout.code;
        let (k, width) = (code.k(), code.width());
        let count = (stripes.end - stripes.start) as usize;
        // Which data shards hold the wanted bytes, per stripe.
        let mut wanted: Vec<Range<usize>> = Vec::with_capacity(count);
        for s in stripes.clone() {
            wanted.push(self.wanted_shards(s, &sub)?);
        }
        let mut candidates: Vec<Vec<Candidate>> = vec![vec![None; width]; count];
        let mut done: Vec<Option<Bytes>> = vec![None; count];
        let mut tried = vec![false; width];

        let first: Vec<usize> = wanted
            .iter()
            .flat_map(|w| w.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut plan: Vec<usize> = if first
            .iter()
            .all(|&i| !self.is_bad(i) && !self.is_avoided(i))
        {
            first
        } else {
            self.preferred(0..width).into_iter().take(k).collect()
        };
        let fetch = |i: usize| {
            let (this, stripes) = (&self, stripes.clone());
            async move { (i, this.fetch(i, stripes).await) }
        };
        loop {
            // Ask the plan's fragments. Whenever some are still out after
            // the hedge delay, ask as many others; stop waiting once every
            // stripe may have enough, leaving the late ones to be dropped
            // (and asked last from then on).
            let mut inflight = futures::stream::FuturesUnordered::new();
            let mut waiting = std::collections::BTreeSet::new();
            for &i in &plan {
                tried[i] = true;
                waiting.insert(i);
                inflight.push(fetch(i));
            }
            let mut hedge_at = tokio::time::Instant::now() + self.hedge_delay(&plan);
            while !inflight.is_empty() {
                tokio::select! {
                    next = inflight.next() => {
                        let Some((i, per_stripe)) = next else { break };
                        waiting.remove(&i);
                        for (slot, shard) in candidates.iter_mut().zip(per_stripe) {
                            slot[i] = shard;
                        }
                        let covered = (0..count)
                            .all(|p| done[p].is_some() || enough(&candidates[p], &wanted[p], k));
                        if covered && !waiting.is_empty() {
                            for &late in &waiting {
                                tried[late] = false;
                                self.set_avoided(late);
                            }
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(hedge_at) => {
                        let extra: Vec<usize> = self
                            .preferred((0..width).filter(|&i| !tried[i]))
                            .into_iter()
                            .take(waiting.len())
                            .collect();
                        for &late in &waiting {
                            self.set_avoided(late);
                        }
                        tracing::debug!(late = ?waiting, asking = ?extra, "fragments late: hedging");
                        self.backends.board().record_hedges(extra.len());
                        hedge_at = tokio::time::Instant::now()
                            + match extra.is_empty() {
                                true => self.params.fragment_timeout,
                                false => self.hedge_delay(&extra),
                            };
                        for i in extra {
                            tried[i] = true;
                            waiting.insert(i);
                            inflight.push(fetch(i));
                        }
                    }
                }
            }
            drop(inflight);
            // Verify and decode every pending stripe that may have enough,
            // one blocking task per stripe: the shards are hashed and then
            // opened while they are still in cache, on every core.
            let attempts: Vec<_> = (0..count)
                .filter(|&p| done[p].is_none() && enough(&candidates[p], &wanted[p], k))
                .map(|p| {
                    let s = stripes.start + p as u64;
                    let (this, shards) = (self.clone(), candidates[p].clone());
                    let (range, want) = (self.stripe_range(s, &sub), wanted[p].clone());
                    let bytes: usize = shards.iter().flatten().map(|(b, _)| b.len()).sum();
                    let decode = move || this.verify_and_decode(s, &shards, range, want);
                    // A small segment's one stripe is checked and opened
                    // here: less work than the hand-off to another thread
                    // and back.
                    let alone = self.geometry.stripe_count == 1;
                    let task = match alone && bytes <= INLINE_CODEC_BYTES {
                        true => Either::Left(std::future::ready(Ok(decode()))),
                        false => Either::Right(tokio::task::spawn_blocking(decode)),
                    };
                    (p, task)
                })
                .collect();
            for (p, task) in attempts {
                let s = stripes.start + p as u64;
                let (plain, corrupt) = task.await??;
                for i in corrupt {
                    self.mark_bad(i, Problem::Corrupt { stripe: s });
                    candidates[p][i] = None;
                }
                done[p] = plain;
            }
            let pending: Vec<usize> = (0..count).filter(|&p| done[p].is_none()).collect();
            let Some(&worst) = pending
                .iter()
                .min_by_key(|&&p| candidates[p].iter().flatten().count())
            else {
                break;
            };
            let have = candidates[worst].iter().flatten().count();
            plan = self
                .preferred((0..width).filter(|&i| !tried[i]))
                .into_iter()
                .take(k.saturating_sub(have).max(1))
                .collect();
            if plan.is_empty() {
                return Err(PipelineError::NotEnoughFragments {
                    segment: self.index,
                    stripe: stripes.start + worst as u64,
                    available: have,
                    needed: k,
                });
            }
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// Checks the candidate shards of stripe `s` against their digests and,
    /// when enough are intact, decodes plaintext `range` (or the sealed
    /// stripe when exporting). Returns the output, if any, and the indices
    /// of corrupt shards.
    fn verify_and_decode(
        &self,
        s: u64,
        shards: &[Candidate],
        range: Range<u64>,
        want: Range<usize>,
    ) -> Result<(Option<Bytes>, Vec<usize>)> {
        let mut corrupt = Vec::new();
        let mut refs: Vec<Option<&[u8]>> = Vec::with_capacity(shards.len());
        for (i, c) in shards.iter().enumerate() {
            refs.push(match c {
                Some((shard, digest)) if digest.matches(shard) => Some(&shard[..]),
                Some(_) => {
                    corrupt.push(i);
                    None
                }
                None => None,
            });
        }
        let k = self.geometry.layout.code.k();
        let intact = refs.iter().flatten().count();
        if !want.clone().all(|i| refs[i].is_some()) && intact < k {
            return Ok((None, corrupt));
        }
        let out = match &self.key {
            Some(key) => {
                let mut out =
                    buffers::take((range.end - range.start) as usize + SEALED_CHUNK_BYTES);
                out.clear();
                decode_range_into(&self.geometry, key, s, &refs, range, &mut out)?;
                out
            }
            None => sealed_stripe(&self.geometry, s, &refs)?,
        };
        Ok((Some(buffers::into_bytes(out)), corrupt))
    }

    /// Fetches fragment `i`'s shards for `stripes` with the digests they
    /// must match (checked by the decoding task). A fragment that cannot be
    /// had (missing, slow, unreachable, bad digest list) is marked bad and
    /// gives no candidate.
    async fn fetch(&self, i: usize, stripes: Range<u64>) -> Vec<Candidate> {
        let count = (stripes.end - stripes.start) as usize;
        let g = &self.geometry;
        let start = g.shard_offset(stripes.start);
        let last = stripes.end - 1;
        let end = g.shard_offset(last) + g.shard_len(last) as u64;
        let started = std::time::Instant::now();
        let (digests, data) = match self.trailer_follows(i, &stripes, end) {
            // The shards run up to the digest list, not yet had: one read
            // for both (a small object's whole fragment).
            Some(list_end) => match self.get(i, start..list_end).await {
                Ok(all) => {
                    let data = all.slice(..(end - start) as usize);
                    let list = all.slice((end - start) as usize..);
                    let wanted = stripes.start as usize..stripes.end as usize;
                    let digests = self.accept_group(i, 0, &list).and_then(|list| {
                        list.get(wanted)
                            .map(<[Digest]>::to_vec)
                            .ok_or(Problem::Corrupt {
                                stripe: stripes.start,
                            })
                    });
                    (digests, Ok(data))
                }
                Err(p) => (Err(p.clone()), Err(p)),
            },
            None => futures::join!(self.digests(i, stripes.clone()), self.get(i, start..end)),
        };
        match (digests, data) {
            (Ok(digests), Ok(data)) => {
                let backend = &self.manifest.segments[self.index].fragments[i].backend;
                self.backends
                    .board()
                    .record_fetch_time(backend, started.elapsed());
                stripes
                    .zip(digests)
                    .map(|(s, digest)| {
                        let from = (g.shard_offset(s) - start) as usize;
                        Some((data.slice(from..from + g.shard_len(s)), digest))
                    })
                    .collect()
            }
            (Err(p), _) | (_, Err(p)) => {
                self.mark_bad(i, p);
                vec![None; count]
            }
        }
    }

    async fn get(&self, i: usize, range: Range<u64>) -> Result<Bytes, Problem> {
        let frag = &self.manifest.segments[self.index].fragments[i];
        let backend = self
            .backends
            .get(&frag.backend)
            .ok_or(Problem::UnknownBackend)?;
        let span = tracing::debug_span!("fragment read", backend = %frag.backend, index = i);
        let fetch = backend.get(&frag.blob, range).instrument(span);
        match tokio::time::timeout(self.params.fragment_timeout, fetch).await {
            Err(_) => {
                self.backends.board().record_failure(
                    &frag.backend,
                    &format!("no answer within {:?}", self.params.fragment_timeout),
                );
                Err(Problem::Slow)
            }
            Ok(Ok(b)) => Ok(b),
            Ok(Err(BackendError::NotFound { .. })) => Err(Problem::Missing),
            Ok(Err(BackendError::InvalidRange { .. })) => Err(Problem::Corrupt { stripe: 0 }),
            Ok(Err(e)) => Err(Problem::Unavailable(e.to_string())),
        }
    }

    /// The verified shard digests of fragment `i` for `stripes`.
    async fn digests(&self, i: usize, stripes: Range<u64>) -> Result<Vec<Digest>, Problem> {
        let mut out = Vec::with_capacity((stripes.end - stripes.start) as usize);
        for group in groups_for(&stripes) {
            let list = self.group(i, group).await?;
            let first = group * HASH_GROUP_STRIPES;
            let from = stripes.start.max(first) - first;
            let to = stripes.end.min(first + list.len() as u64) - first;
            out.extend_from_slice(&list[from as usize..to as usize]);
        }
        Ok(out)
    }

    async fn group(&self, i: usize, group: u64) -> Result<Arc<Vec<Digest>>, Problem> {
        if let Some(hit) = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(i, group))
        {
            return Ok(hit.clone());
        }
        let covered = group_stripes(group, self.geometry.stripe_count);
        let start = self.geometry.hash_list_offset() + covered.start * DIGEST_BYTES as u64;
        let end = start + (covered.end - covered.start) * DIGEST_BYTES as u64;
        let bytes = self.get(i, start..end).await?;
        self.accept_group(i, group, &bytes)
    }

    /// Where the digest list of fragment `i` ends, when a read of
    /// `stripes` (whose shards end at `end`) can take it in the same
    /// request: the shards run up to the list, the list is one hash group
    /// (at most 256 stripes), and it is not cached yet.
    fn trailer_follows(&self, i: usize, stripes: &Range<u64>, end: u64) -> Option<u64> {
        let g = &self.geometry;
        let one_group = groups_for(stripes) == (0..1);
        let cached = || {
            self.groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&(i, 0))
        };
        (end == g.hash_list_offset() && one_group && !cached()).then(|| {
            let covered = group_stripes(0, g.stripe_count);
            end + (covered.end - covered.start) * DIGEST_BYTES as u64
        })
    }

    /// Checks the digest list `bytes` of hash group `group` of fragment
    /// `i` against the manifest and caches it.
    fn accept_group(
        &self,
        i: usize,
        group: u64,
        bytes: &[u8],
    ) -> Result<Arc<Vec<Digest>>, Problem> {
        let frag = &self.manifest.segments[self.index].fragments[i];
        let covered = group_stripes(group, self.geometry.stripe_count);
        let corrupt = Problem::Corrupt {
            stripe: covered.start,
        };
        let list = Digest::parse_list(bytes).ok_or(corrupt.clone())?;
        if frag.group_digests.get(group as usize) != Some(&Digest::of_group(&list)) {
            return Err(corrupt);
        }
        let list = Arc::new(list);
        let mut cache = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|&(f, g), _| f != i || g + 1 >= group);
        cache.insert((i, group), list.clone());
        Ok(list)
    }
}
