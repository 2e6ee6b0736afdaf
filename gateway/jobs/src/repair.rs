//! Repair (issue 14): objects from the repair queue, least redundant
//! first, get their bad fragments rebuilt from k good ones and placed
//! anew.
//!
//! For each object: the fragments to rebuild are those recorded Missing,
//! those on a backend gone (no longer configured, or down past its grace:
//! `lost.rs`), and the suspects a read or a scrub reported that a fresh
//! check confirms. The policy's placement is
//! asked where they go, with `current` naming the fragments that stay.
//! Their blobs are recorded as an intent (kind repair) before a byte is
//! written. Each stripe is rebuilt from k shards verified against their
//! fragments' trailers (`shardgate_core::rebuild_shards`: Reed-Solomon on
//! the ciphertext, no key); since the result is bit-identical to what was
//! lost, each new fragment's digests must equal the manifest's, which is
//! checked before its commit. The manifest is swapped with a
//! compare-and-swap on the row's generation, in the transaction that
//! closes the intent and hands the replaced blobs (only those) to the
//! garbage collector: an object overwritten meanwhile keeps the
//! overwrite, and the repair's blobs become garbage. A crash at any point
//! leaves the old manifest (still readable) and an intent swept at start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardgate_backend::{Backend, BlobWriter};
use shardgate_core::hash::group_digests;
use shardgate_core::{
    BackendId, BlobName, Digest, FragmentRef, FragmentState, Segment, VersionId, rebuild_shards,
};
use shardgate_meta::{IntentKind, MetaError, RepairEntry};
use shardgate_pipeline::{checked_trailer, stripe_runs, verify_fragment};
use shardgate_placement::{Placer, Request, check};
use tracing::Instrument;

use shardgate_node::GatewayError;
use shardgate_node::{blocking, now_ms};

use crate::Jobs;

/// The job's id.
pub(crate) const JOB: &str = "repair";
/// Objects repaired per round.
const BATCH: usize = 8;
/// Queue entries read at once (some may be waiting out a backoff).
const LOOK_AHEAD: usize = 256;
/// Pages of the queue a round looks through at most for due entries.
const MAX_PAGES: usize = 64;
/// An object whose repair failed is tried again after this, doubling to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// A round that found nothing to do waits this long.
const IDLE: Duration = Duration::from_secs(2);
/// Bytes read at once when checking a suspect fragment.
const CHECK_READ_BYTES: usize = 4 << 20;

/// What became of one queued object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repaired {
    /// Fragments rebuilt (and their bytes written), the manifest swapped.
    Rebuilt { fragments: usize, bytes: u64 },
    /// Every suspect checked out healthy: nothing to rebuild.
    Healthy,
    /// The object changed or went away meanwhile.
    Gone,
}

/// A fragment to rebuild: its index, the backend it goes to, its new name.
type Target = (usize, Arc<dyn Backend>, BlobName);

/// Which fragments to write anew (per segment, the indices), from where,
/// and (a rebalance) to where; without destinations the placer chooses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Replace<'a> {
    pub plan: &'a [(usize, Vec<usize>)],
    pub source: Source,
    pub destinations: Option<&'a std::collections::BTreeMap<(usize, usize), BackendId>>,
}

/// Where the bytes of replaced fragments come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Rebuilt from k other fragments (the fragment is lost or damaged).
    Rebuild,
    /// Copied from the fragment itself, every shard checked (a move:
    /// drain). A copy that fails fails the replacement; the caller may
    /// try again with a rebuild.
    Copy,
}

/// Objects whose repair failed, and when to try each again.
///
/// It also keeps where the last round stopped looking when the queue's
/// head was all waiting: the next round goes on from there, so entries
/// behind any number of failing ones are reached.
#[derive(Debug, Default)]
pub struct Retry {
    waits: HashMap<(String, String, u64, VersionId), (Instant, Duration)>,
    resume_after: Option<RepairEntry>,
}

impl Retry {
    fn slot(e: &RepairEntry) -> (String, String, u64, VersionId) {
        (e.bucket.clone(), e.key.clone(), e.seq, e.version)
    }

    fn due(&self, e: &RepairEntry, now: Instant) -> bool {
        self.waits
            .get(&Self::slot(e))
            .is_none_or(|(at, _)| *at <= now)
    }

    fn failed(&mut self, e: &RepairEntry, now: Instant) -> Duration {
        let slot = self
            .waits
            .entry(Self::slot(e))
            .or_insert((now, RETRY_FIRST / 2));
        slot.1 = (slot.1 * 2).min(RETRY_MAX);
        slot.0 = now + slot.1;
        slot.1
    }

    fn forget(&mut self, e: &RepairEntry) {
        self.waits.remove(&Self::slot(e));
    }

    /// Drops waits long past: their entry was due and not seen again (the
    /// object was overwritten or deleted), so nothing will forget them.
    fn prune(&mut self, now: Instant) {
        self.waits
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < RETRY_MAX * 2);
    }
}

fn internal(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(what.to_string())
}

/// A write to a backend slower than this fails the repair (tried again
/// later), so a hung target cannot stall the job.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(
    op: impl std::future::Future<Output = Result<T, shardgate_backend::BackendError>>,
) -> Result<T, GatewayError> {
    match tokio::time::timeout(WRITE_TIMEOUT, op).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(internal(format!(
            "a backend took longer than {WRITE_TIMEOUT:?} to take a write"
        ))),
    }
}

impl Jobs {
    /// Starts the repair task: the queue, least redundant first, forever.
    pub(crate) fn spawn_repair(self: &Arc<Self>) {
        let jobs = self.clone();
        let handle = self.registry.handle(JOB, "repair");
        handle.begin_run(None, "started");
        tokio::spawn(
            async move {
                let mut retry = Retry::default();
                loop {
                    // Cancelling is refused (`Jobs::cancel`): only a pause holds it.
                    handle.checkpoint().await;
                    let done = match jobs.repair_round(&mut retry).await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "repair round failed; retried");
                            0
                        }
                    };
                    let meta = jobs.gw.meta().clone();
                    let queued = blocking(move || meta.repair_queue_counts())
                        .await
                        .map_or(0, |(n, _)| n);
                    let progress = handle.status();
                    handle.set_total(Some(progress.objects_done + queued));
                    let state = if queued == 0 {
                        crate::JobState::Idle
                    } else {
                        crate::JobState::Running
                    };
                    handle.set(state, format!("{queued} objects queued"));
                    if done == 0 {
                        tokio::time::sleep(IDLE).await;
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "repair")),
        );
    }

    /// One round: up to a batch of queued objects, least redundant first,
    /// skipping those waiting out a failed try. Returns how many were
    /// dealt with (rebuilt, found healthy or gone); an object that could
    /// not be repaired now (too few good fragments, a placement refused)
    /// stays queued and is tried again later.
    pub async fn repair_round(self: &Arc<Self>, retry: &mut Retry) -> Result<usize, GatewayError> {
        // Entries waiting out a failed try are skipped, a page at a time,
        // so however many cannot be repaired now, those behind them are.
        let now = Instant::now();
        retry.prune(now);
        let mut due: Vec<RepairEntry> = Vec::new();
        // The head first (the least redundant), then on from where the
        // last round stopped looking.
        let mut after: Option<RepairEntry> = None;
        let mut resumed = false;
        for _ in 0..MAX_PAGES {
            let meta = self.gw.meta().clone();
            let from = after.take();
            let page = blocking(move || meta.repair_queue_after(from.as_ref(), LOOK_AHEAD)).await?;
            let full = page.len() == LOOK_AHEAD;
            after = page.last().cloned();
            due.extend(page.into_iter().filter(|e| retry.due(e, now)));
            if due.len() >= BATCH {
                break;
            }
            if !full {
                after = None;
                break;
            }
            if !resumed && retry.resume_after.is_some() {
                after = retry.resume_after.take();
                resumed = true;
            }
        }
        // Where the next round goes on, if this one did not reach the end.
        if due.len() < BATCH {
            retry.resume_after = after;
        }
        due.truncate(BATCH);
        let mut done = 0;
        for entry in due {
            let object = format!("{}/{}", entry.bucket, entry.key);
            match self.repair_object(&entry).await {
                Ok(outcome) => {
                    done += 1;
                    retry.forget(&entry);
                    let mut written = 0;
                    if let Repaired::Rebuilt { fragments, bytes } = outcome {
                        self.gw.metrics().repair_fragments.inc_by(fragments as u64);
                        self.gw.metrics().repair_bytes.inc_by(bytes);
                        written = bytes;
                    }
                    if let Some(h) = self.registry.get(JOB) {
                        h.progress(1, written);
                    }
                    tracing::info!(%object, ?outcome, margin = entry.margin, "repair");
                }
                Err(e) => {
                    self.gw.metrics().repair_failures.inc();
                    if let Some(h) = self.registry.get(JOB) {
                        h.failed(format!("{object}: {e}"));
                    }
                    let wait = retry.failed(&entry, now);
                    tracing::warn!(%object, error = %e, retry_in = ?wait, "repair failed; the object stays queued");
                }
            }
        }
        Ok(done)
    }

    /// Repairs one queued object (see the module docs).
    pub async fn repair_object(
        self: &Arc<Self>,
        entry: &RepairEntry,
    ) -> Result<Repaired, GatewayError> {
        let Some((summary, manifest)) = self
            .version_row(&entry.bucket, &entry.key, entry.seq)
            .await?
        else {
            return Ok(Repaired::Gone);
        };
        if manifest.version_id != entry.version {
            return Ok(Repaired::Gone);
        }
        // The version's blobs stay while the repair reads them.
        let _reading = self.gw.hold_version(manifest.version_id);

        // Which fragments to rebuild, per segment; `unsure`: a suspect on a
        // backend that could not answer now.
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut unsure = false;
        let mut healthy: Vec<(u32, u16)> = Vec::new();
        // An inline segment lives in the manifest: nothing to rebuild.
        for (si, segment) in manifest
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_inline())
        {
            let geometry = segment.geometry();
            let mut bad = Vec::new();
            for (fi, f) in segment.fragments.iter().enumerate() {
                let suspect = entry.suspects.contains(&(si as u32, fi as u16));
                // Never written, or on a backend gone (left the
                // configuration, or down past its grace): not asked.
                let lost = f.state == FragmentState::Missing || self.backend_gone(&f.backend);
                let confirmed = match (lost, suspect, self.gw.backend(&f.backend)) {
                    (true, _, _) => true,
                    (false, true, Some(backend)) => {
                        let check =
                            verify_fragment(&**backend, f, &geometry, CHECK_READ_BYTES).await;
                        // Checks count against the rate limit: a backend
                        // back from a long outage has every fragment
                        // queued as a suspect.
                        let pause = check.bytes_read as f64
                            / self.settings.repair_rate_bytes_per_sec as f64;
                        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                        let finding = check.finding;
                        unsure |= matches!(finding, shardgate_pipeline::Finding::Unavailable(_));
                        if finding == shardgate_pipeline::Finding::Healthy {
                            healthy.push((si as u32, fi as u16));
                        }
                        finding.is_damage()
                    }
                    _ => false,
                };
                if confirmed {
                    bad.push(fi);
                }
            }
            if !bad.is_empty() {
                plan.push((si, bad));
            }
        }
        if plan.is_empty() && unsure {
            // Keep the report: look again once the backend answers.
            return Err(internal("a suspect fragment's backend did not answer"));
        }
        if plan.is_empty() {
            // Nothing to rebuild: the entry goes (a commit of the same
            // manifest would do it, at the cost of a new generation).
            let meta = self.gw.meta().clone();
            let (b, k, seq, v) = (
                entry.bucket.clone(),
                entry.key.clone(),
                entry.seq,
                entry.version,
            );
            blocking(move || meta.clear_repair(&b, &k, seq, v, &healthy)).await?;
            return Ok(Repaired::Healthy);
        }

        self.replace_fragments(
            &entry.bucket,
            &entry.key,
            entry.seq,
            summary.generation,
            &manifest,
            Replace {
                plan: &plan,
                source: Source::Rebuild,
                destinations: None,
            },
        )
        .await
    }

    /// Writes fragments `plan` (per segment, the indices) of `manifest`
    /// anew where the bucket's placer puts them, and swaps the manifest
    /// if its row (version `seq` of `bucket/key`) is still at
    /// `generation`. The bytes come from `source`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn replace_fragments(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        seq: u64,
        generation: u64,
        manifest: &shardgate_core::Manifest,
        replace: Replace<'_>,
    ) -> Result<Repaired, GatewayError> {
        let Replace {
            plan,
            source,
            destinations,
        } = replace;
        let _reading = self.gw.hold_version(manifest.version_id);
        // Where the rebuilt fragments go, and their new names.
        let mut targets: Vec<(usize, Vec<Target>)> = Vec::new();
        for (si, bad) in plan {
            let segment = &manifest.segments[*si];
            let current: Vec<Option<BackendId>> = segment
                .fragments
                .iter()
                .enumerate()
                .map(|(i, f)| (!bad.contains(&i)).then(|| f.backend.clone()))
                .collect();
            // Destinations chosen already (a rebalance) skip the placer.
            let fixed: Option<Vec<BackendId>> = destinations.and_then(|d| {
                bad.iter()
                    .map(|fi| d.get(&(*si, *fi)).cloned())
                    .collect::<Option<Vec<_>>>()
            });
            let chosen = match fixed {
                Some(to) => {
                    let mut all = current.clone();
                    for (fi, id) in bad.iter().zip(to) {
                        all[*fi] = Some(id);
                    }
                    let all: Vec<BackendId> = all.into_iter().flatten().collect();
                    let distinct: std::collections::BTreeSet<&BackendId> = all.iter().collect();
                    if distinct.len() != all.len() {
                        return Err(internal(
                            "destinations would put two fragments on one backend",
                        ));
                    }
                    all
                }
                None => self.place_repair(bucket, key, segment, &current)?,
            };
            let mut seg_targets = Vec::new();
            for &fi in bad {
                let id = &chosen[fi];
                let backend = self
                    .gw
                    .backend(id)
                    .cloned()
                    .ok_or_else(|| internal(format!("placed on unknown {id}")))?;
                seg_targets.push((fi, backend, BlobName::random()));
            }
            targets.push((*si, seg_targets));
        }
        let blobs: Vec<(BackendId, BlobName)> = targets
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(_, b, n)| (b.id().clone(), n.clone())))
            .collect();
        let meta = self.gw.meta().clone();
        let intent =
            blocking(move || meta.begin_intent(IntentKind::REPAIR, &blobs, now_ms())).await?;
        // Live: the intent sweep leaves it to this repair.
        self.gw.intents().mark(intent);

        let mut repaired = manifest.clone();
        let mut written = Vec::new();
        let outcome = async {
            for (si, seg_targets) in &targets {
                let segment = &manifest.segments[*si];
                let refs = match source {
                    Source::Copy => self.copy_segment(segment, seg_targets).await?,
                    Source::Rebuild => self.rebuild_segment(segment, seg_targets).await?,
                };
                for (fi, fref) in refs {
                    written.push((fref.backend.clone(), fref.blob.clone()));
                    repaired.segments[*si].fragments[fi] = fref;
                }
            }
            let meta = self.gw.meta().clone();
            let (b, k) = (bucket.to_string(), key.to_string());
            let swapped = repaired.clone();
            blocking(move || {
                meta.replace_version(&b, &k, seq, generation, &swapped, Some(intent), now_ms())
            })
            .await
        }
        .await;
        let result = match outcome {
            Ok(_) => {
                self.gw.wake_collectors();
                let fragments = targets.iter().map(|(_, t)| t.len()).sum();
                let bytes = targets
                    .iter()
                    .map(|(si, t)| {
                        t.len() as u64 * manifest.segments[*si].geometry().fragment_len()
                    })
                    .sum();
                Ok(Repaired::Rebuilt { fragments, bytes })
            }
            Err(e) => {
                // Nothing visible changed: the new blobs are garbage.
                let meta = self.gw.meta().clone();
                let _ = blocking(move || meta.abandon_intent(intent, now_ms())).await;
                self.gw.wake_collectors();
                match e {
                    GatewayError::Meta(MetaError::PreconditionFailed(_)) => Ok(Repaired::Gone),
                    e => Err(e),
                }
            }
        };
        self.gw.intents().unmark(intent);
        result
    }

    /// Version `seq` of `bucket/key`, current or not; `None` when it (or
    /// its bucket) is gone, or is a delete marker: repair, drain and
    /// rebalance all skip it then.
    pub(crate) async fn version_row(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
    ) -> Result<Option<(shardgate_meta::ObjectSummary, shardgate_core::Manifest)>, GatewayError>
    {
        let meta = self.gw.meta().clone();
        let (b, k) = (bucket.to_string(), key.to_string());
        match blocking(move || meta.version_at(&b, &k, seq)).await {
            Ok(row) => Ok(row.and_then(|r| Some((r.summary, r.manifest?)))),
            Err(GatewayError::Meta(MetaError::NoSuchBucket)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Asks the bucket's policy where fragments `None` in `current` go.
    pub(crate) fn place_repair(
        &self,
        bucket: &str,
        key: &str,
        segment: &Segment,
        current: &[Option<BackendId>],
    ) -> Result<Vec<BackendId>, GatewayError> {
        let request = Request {
            bucket,
            key,
            size_hint: Some(segment.plaintext_len),
            content_type: None,
            k: segment.layout.code.k(),
            m: segment.layout.code.m(),
            current,
        };
        // A backend being drained takes no new fragment (it keeps those
        // that stay).
        let candidates: Vec<_> = self
            .gw
            .health_snapshot()
            .into_iter()
            .filter(|c| !self.gw.is_draining(&c.id) || current.contains(&Some(c.id.clone())))
            .collect();
        let chosen = self.gw.placer_for(bucket).place(&request, &candidates)?;
        check(&request, &candidates, &chosen)?;
        // The fragments that stay must stay where they are: a placer that
        // moved them (one written before `current` existed) would put a
        // rebuilt fragment beside one of them. Then the built-in rule,
        // which keeps them, places it.
        let keeps = current
            .iter()
            .zip(&chosen)
            .all(|(now, to)| now.as_ref().is_none_or(|n| n == to));
        if keeps {
            return Ok(chosen);
        }
        tracing::debug!(
            bucket,
            key,
            "the policy's placer moved staying fragments; the built-in rule places the repair"
        );
        let chosen = shardgate_placement::Spread.place(&request, &candidates)?;
        check(&request, &candidates, &chosen)?;
        Ok(chosen)
    }

    /// Copies fragments `targets` (index, backend, new name) of `segment`
    /// from where they are now, in runs of whole stripes: the trailer is
    /// checked against the manifest and every shard against the trailer
    /// before it is written, so a copy is bit-identical or fails.
    async fn copy_segment(
        &self,
        segment: &Segment,
        targets: &[Target],
    ) -> Result<Vec<(usize, FragmentRef)>, GatewayError> {
        let geometry = segment.geometry();
        let timeout = self.gw.fragment_timeout();
        let mut out = Vec::with_capacity(targets.len());
        for (fi, to, name) in targets {
            let f = &segment.fragments[*fi];
            let from = self.gw.backend(&f.backend).cloned().ok_or_else(|| {
                internal(format!("fragment {fi}: {} is not configured", f.backend))
            })?;
            let trailer = geometry.hash_list_offset()..geometry.fragment_len();
            let list = tokio::time::timeout(timeout, from.get(&f.blob, trailer))
                .await
                .map_err(|_| internal(format!("fragment {fi}: no answer from {}", f.backend)))??;
            let digests = checked_trailer(&list, f, &geometry)
                .ok_or_else(|| internal(format!("fragment {fi}: its trailer does not match")))?;
            let mut w = bounded(to.create(name)).await?;
            let copied = async {
                for (first, end, range) in stripe_runs(&geometry, CHECK_READ_BYTES) {
                    let start = range.start;
                    let bytes = tokio::time::timeout(timeout, from.get(&f.blob, range))
                        .await
                        .map_err(|_| {
                            internal(format!("fragment {fi}: no answer from {}", f.backend))
                        })??;
                    for st in first..end {
                        let at = (geometry.shard_offset(st) - start) as usize;
                        let ok = bytes
                            .get(at..at + geometry.shard_len(st))
                            .is_some_and(|shard| digests[st as usize].matches(shard));
                        if !ok {
                            return Err(internal(format!(
                                "fragment {fi}: shard {st} does not match its digest"
                            )));
                        }
                    }
                    let pause = bytes.len() as f64 / self.settings.repair_rate_bytes_per_sec as f64;
                    bounded(w.write(bytes)).await?;
                    tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                }
                bounded(w.write(list)).await?;
                Ok::<(), GatewayError>(())
            }
            .await;
            if let Err(e) = copied {
                let _ = w.abort().await;
                return Err(e);
            }
            bounded(w.commit()).await?;
            out.push((
                *fi,
                FragmentRef {
                    backend: to.id().clone(),
                    blob: name.clone(),
                    group_digests: f.group_digests.clone(),
                    state: FragmentState::Stored,
                },
            ));
        }
        Ok(out)
    }

    /// Rebuilds fragments `targets` (index, backend, new name) of
    /// `segment` from k good ones, stripe by stripe; returns their new
    /// references, each checked against the manifest's digests.
    async fn rebuild_segment(
        &self,
        segment: &Segment,
        targets: &[Target],
    ) -> Result<Vec<(usize, FragmentRef)>, GatewayError> {
        let geometry = segment.geometry();
        let wanted: Vec<usize> = targets.iter().map(|(i, _, _)| *i).collect();
        // Sources: every stored fragment whose trailer checks out, even one
        // being rebuilt (a shard of it that still matches its digest is
        // as good as any); each shard is checked before use.
        let mut sources: Vec<(usize, Arc<dyn Backend>, Vec<Digest>)> = Vec::new();
        let trailer = geometry.hash_list_offset()..geometry.fragment_len();
        for (i, f) in segment.fragments.iter().enumerate() {
            if f.state != FragmentState::Stored || self.backend_gone(&f.backend) {
                continue;
            }
            let Some(backend) = self.gw.backend(&f.backend).cloned() else {
                continue;
            };
            let read = tokio::time::timeout(
                self.gw.fragment_timeout(),
                backend.get(&f.blob, trailer.clone()),
            );
            let Ok(Ok(bytes)) = read.await else {
                continue;
            };
            if let Some(d) = checked_trailer(&bytes, f, &geometry) {
                sources.push((i, backend, d));
            }
        }
        // Fragments not being rebuilt first: they are the likelier good.
        sources.sort_by_key(|(i, _, _)| wanted.contains(i));
        let k = segment.layout.code.k();
        if sources.len() < k {
            return Err(internal(format!(
                "{} good fragments of {} needed to rebuild",
                sources.len(),
                k
            )));
        }
        let mut writers: Vec<Box<dyn BlobWriter>> = Vec::with_capacity(targets.len());
        for (_, backend, name) in targets {
            writers.push(bounded(backend.create(name)).await?);
        }
        let mut digests: Vec<Vec<Digest>> = vec![Vec::new(); targets.len()];
        let width = segment.fragments.len();
        let mut failing: std::collections::HashSet<usize> = std::collections::HashSet::new();
        for stripe in 0..geometry.stripe_count {
            let range = geometry.shard_offset(stripe)
                ..geometry.shard_offset(stripe) + geometry.shard_len(stripe) as u64;
            let mut shards: Vec<Option<Bytes>> = vec![None; width];
            let mut have = 0;
            let mut read_bytes = 0u64;
            // k shards at once from the likeliest sources; one more for
            // each that fails or does not match, until k or none left.
            let mut next = 0;
            // Sources that failed a read go last from then on, so one that
            // hangs costs one timeout, not one per stripe.
            sources.sort_by_key(|(i, _, _)| failing.contains(i));
            while have < k && next < sources.len() {
                let wave = &sources[next..(next + k - have).min(sources.len())];
                next += wave.len();
                let asked: Vec<usize> = wave.iter().map(|(i, _, _)| *i).collect();
                let reads = wave.iter().map(|(i, backend, list)| {
                    let blob = &segment.fragments[*i].blob;
                    let range = range.clone();
                    async move {
                        let read = tokio::time::timeout(
                            self.gw.fragment_timeout(),
                            backend.get(blob, range),
                        );
                        match read.await {
                            Ok(Ok(bytes)) if list[stripe as usize].matches(&bytes) => {
                                Some((*i, bytes))
                            }
                            _ => None,
                        }
                    }
                });
                let got: Vec<(usize, Bytes)> = futures::future::join_all(reads)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                for i in asked {
                    if !got.iter().any(|(g, _)| *g == i) {
                        failing.insert(i);
                    }
                }
                for (i, bytes) in got {
                    read_bytes += bytes.len() as u64;
                    shards[i] = Some(bytes);
                    have += 1;
                }
            }
            // The rate limit: this stripe's share of a second.
            let pause = read_bytes as f64 / self.settings.repair_rate_bytes_per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
            if have < k {
                return Err(internal(format!(
                    "stripe {stripe}: {have} verified shards of {k} needed to rebuild"
                )));
            }
            let refs: Vec<Option<&[u8]>> = shards.iter().map(|s| s.as_deref()).collect();
            let rebuilt = rebuild_shards(&geometry, stripe, &refs, &wanted)?;
            for ((w, shard), list) in writers.iter_mut().zip(rebuilt).zip(&mut digests) {
                list.push(Digest::of_shard(&shard));
                bounded(w.write(Bytes::from(shard))).await?;
            }
        }
        let mut out = Vec::with_capacity(targets.len());
        for (((fi, backend, name), mut w), list) in targets.iter().zip(writers).zip(digests) {
            let expected = &segment.fragments[*fi].group_digests;
            if group_digests(&list) != *expected {
                let _ = w.abort().await;
                return Err(internal(format!(
                    "rebuilt fragment {fi} does not match the manifest's digests"
                )));
            }
            let trailer: Vec<u8> = list.iter().flat_map(|d| d.0).collect();
            bounded(w.write(Bytes::from(trailer))).await?;
            bounded(w.commit()).await?;
            out.push((
                *fi,
                FragmentRef {
                    backend: backend.id().clone(),
                    blob: name.clone(),
                    group_digests: expected.clone(),
                    state: FragmentState::Stored,
                },
            ));
        }
        Ok(out)
    }
}
