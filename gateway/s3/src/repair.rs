//! Repair (issue 14): objects from the repair queue, least redundant
//! first, get their bad fragments rebuilt from k good ones and placed
//! anew.
//!
//! For each object: the fragments to rebuild are those recorded Missing,
//! those on a backend no longer configured, and the suspects a read or a
//! scrub reported that a fresh check confirms. The policy's placement is
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
    BackendId, BlobName, Digest, FragmentRef, FragmentState, Segment, rebuild_shards,
};
use shardgate_meta::{Condition, IntentKind, MetaError, RepairEntry};
use shardgate_pipeline::verify_fragment;
use shardgate_placement::{Placer, Request, check};

use crate::error::GatewayError;
use crate::gateway::{Gateway, blocking, now_ms};

/// Objects repaired per round.
const BATCH: usize = 8;
/// Queue entries looked at per round (some may be waiting out a backoff).
const LOOK_AHEAD: usize = 256;
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
    /// Fragments rebuilt and the manifest swapped.
    Rebuilt { fragments: usize },
    /// Every suspect checked out healthy: nothing to rebuild.
    Healthy,
    /// The object changed or went away meanwhile.
    Gone,
}

/// A fragment to rebuild: its index, the backend it goes to, its new name.
type Target = (usize, Arc<dyn Backend>, BlobName);

/// Objects whose repair failed, and when to try each again.
#[derive(Debug, Default)]
pub struct Retry(HashMap<(String, String), (Instant, Duration)>);

impl Retry {
    fn due(&self, e: &RepairEntry, now: Instant) -> bool {
        self.0
            .get(&(e.bucket.clone(), e.key.clone()))
            .is_none_or(|(at, _)| *at <= now)
    }

    fn failed(&mut self, e: &RepairEntry, now: Instant) -> Duration {
        let slot = self
            .0
            .entry((e.bucket.clone(), e.key.clone()))
            .or_insert((now, RETRY_FIRST / 2));
        slot.1 = (slot.1 * 2).min(RETRY_MAX);
        slot.0 = now + slot.1;
        slot.1
    }

    fn forget(&mut self, e: &RepairEntry) {
        self.0.remove(&(e.bucket.clone(), e.key.clone()));
    }
}

fn internal(what: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(what.to_string())
}

impl Gateway {
    /// Starts the repair task: the queue, least redundant first, forever.
    pub(crate) fn spawn_repair(self: &Arc<Self>) {
        let gw = self.clone();
        tokio::spawn(async move {
            let mut retry = Retry::default();
            loop {
                let done = match gw.repair_round(&mut retry).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "repair round failed; retried");
                        0
                    }
                };
                if done == 0 {
                    tokio::time::sleep(IDLE).await;
                }
            }
        });
    }

    /// One round: up to a batch of queued objects, least redundant first,
    /// skipping those waiting out a failed try. Returns how many were
    /// dealt with (rebuilt, found healthy or gone); an object that could
    /// not be repaired now (too few good fragments, a placement refused)
    /// stays queued and is tried again later.
    pub async fn repair_round(self: &Arc<Self>, retry: &mut Retry) -> Result<usize, GatewayError> {
        let meta = self.meta.clone();
        let entries = blocking(move || meta.repair_queue(LOOK_AHEAD)).await?;
        let mut done = 0;
        let now = Instant::now();
        let due = entries
            .into_iter()
            .filter(|e| retry.due(e, now))
            .take(BATCH);
        for entry in due.collect::<Vec<_>>() {
            let object = format!("{}/{}", entry.bucket, entry.key);
            match self.repair_object(&entry).await {
                Ok(outcome) => {
                    done += 1;
                    retry.forget(&entry);
                    if let Repaired::Rebuilt { fragments } = outcome {
                        self.metrics().repair_fragments.inc_by(fragments as u64);
                    }
                    tracing::info!(%object, ?outcome, margin = entry.margin, "repair");
                }
                Err(e) => {
                    self.metrics().repair_failures.inc();
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
        let meta = self.meta.clone();
        let (b, k) = (entry.bucket.clone(), entry.key.clone());
        let row = blocking(move || meta.object_row(&b, &k)).await;
        let (summary, manifest) = match row {
            Ok(Some(row)) => row,
            Ok(None) | Err(GatewayError::Meta(MetaError::NoSuchBucket)) => {
                return Ok(Repaired::Gone);
            }
            Err(e) => return Err(e),
        };
        if manifest.version_id != entry.version {
            return Ok(Repaired::Gone);
        }
        // The version's blobs stay while the repair reads them.
        let _reading = self.hold_version(manifest.version_id);

        // Which fragments to rebuild, per segment; `unsure`: a suspect on a
        // backend that could not answer now.
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut unsure = false;
        let mut healthy: Vec<(u32, u16)> = Vec::new();
        for (si, segment) in manifest.segments.iter().enumerate() {
            let geometry = segment.geometry();
            let mut bad = Vec::new();
            for (fi, f) in segment.fragments.iter().enumerate() {
                let suspect = entry.suspects.contains(&(si as u32, fi as u16));
                let lost = f.state == FragmentState::Missing || self.backend(&f.backend).is_none();
                let confirmed = match (lost, suspect, self.backend(&f.backend)) {
                    (true, _, _) => true,
                    (false, true, Some(backend)) => {
                        let finding = verify_fragment(&**backend, f, &geometry, CHECK_READ_BYTES)
                            .await
                            .finding;
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
            let meta = self.meta.clone();
            let (b, k, v) = (entry.bucket.clone(), entry.key.clone(), entry.version);
            blocking(move || meta.clear_repair(&b, &k, v, &healthy)).await?;
            return Ok(Repaired::Healthy);
        }

        // Where the rebuilt fragments go, and their new names.
        let mut targets: Vec<(usize, Vec<Target>)> = Vec::new();
        for (si, bad) in &plan {
            let segment = &manifest.segments[*si];
            let current: Vec<Option<BackendId>> = segment
                .fragments
                .iter()
                .enumerate()
                .map(|(i, f)| (!bad.contains(&i)).then(|| f.backend.clone()))
                .collect();
            let chosen = self.place_repair(&entry.bucket, &entry.key, segment, &current)?;
            let mut seg_targets = Vec::new();
            for &fi in bad {
                let id = &chosen[fi];
                let backend = self
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
        let meta = self.meta.clone();
        let intent =
            blocking(move || meta.begin_intent(IntentKind::REPAIR, &blobs, now_ms())).await?;
        // Live: the intent sweep leaves it to this repair.
        self.intents.mark(intent);

        let mut repaired = manifest.clone();
        let mut written = Vec::new();
        let outcome = async {
            for (si, seg_targets) in &targets {
                let segment = &manifest.segments[*si];
                let refs = self.rebuild_segment(segment, seg_targets).await?;
                for (fi, fref) in refs {
                    written.push((fref.backend.clone(), fref.blob.clone()));
                    repaired.segments[*si].fragments[fi] = fref;
                }
            }
            let meta = self.meta.clone();
            let (b, k) = (entry.bucket.clone(), entry.key.clone());
            let generation = summary.generation;
            let swapped = repaired.clone();
            blocking(move || {
                meta.put_object(
                    &b,
                    &k,
                    &swapped,
                    Some(intent),
                    &Condition::IfGeneration(generation),
                    now_ms(),
                )
            })
            .await
        }
        .await;
        let result = match outcome {
            Ok(_) => {
                self.wake_collectors();
                let fragments = targets.iter().map(|(_, t)| t.len()).sum();
                Ok(Repaired::Rebuilt { fragments })
            }
            Err(e) => {
                // Nothing visible changed: the new blobs are garbage.
                let meta = self.meta.clone();
                let _ = blocking(move || meta.abandon_intent(intent, now_ms())).await;
                self.wake_collectors();
                match e {
                    GatewayError::Meta(MetaError::PreconditionFailed(_)) => Ok(Repaired::Gone),
                    e => Err(e),
                }
            }
        };
        self.intents.unmark(intent);
        result
    }

    /// Asks the bucket's policy where fragments `None` in `current` go.
    fn place_repair(
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
        let candidates = self.health_snapshot();
        let chosen = self.placer_for(bucket).place(&request, &candidates)?;
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
            if f.state != FragmentState::Stored {
                continue;
            }
            let Some(backend) = self.backend(&f.backend).cloned() else {
                continue;
            };
            let read = tokio::time::timeout(
                self.fragment_timeout(),
                backend.get(&f.blob, trailer.clone()),
            );
            let Ok(Ok(bytes)) = read.await else {
                continue;
            };
            match Digest::parse_list(&bytes) {
                Some(d)
                    if d.len() as u64 == geometry.stripe_count
                        && group_digests(&d) == f.group_digests =>
                {
                    sources.push((i, backend, d))
                }
                _ => continue,
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
            writers.push(backend.create(name).await?);
        }
        let mut digests: Vec<Vec<Digest>> = vec![Vec::new(); targets.len()];
        let width = segment.fragments.len();
        for stripe in 0..geometry.stripe_count {
            let range = geometry.shard_offset(stripe)
                ..geometry.shard_offset(stripe) + geometry.shard_len(stripe) as u64;
            let mut shards: Vec<Option<Bytes>> = vec![None; width];
            let mut have = 0;
            let mut read_bytes = 0u64;
            for (i, backend, list) in &sources {
                if have == k {
                    break;
                }
                let blob = &segment.fragments[*i].blob;
                let read =
                    tokio::time::timeout(self.fragment_timeout(), backend.get(blob, range.clone()));
                if let Ok(Ok(bytes)) = read.await
                    && list[stripe as usize].matches(&bytes)
                {
                    read_bytes += bytes.len() as u64;
                    shards[*i] = Some(bytes);
                    have += 1;
                }
            }
            // The rate limit: this stripe's share of a second.
            let pause = read_bytes as f64 / self.repair_rate as f64;
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
                w.write(Bytes::from(shard)).await?;
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
            w.write(Bytes::from(trailer)).await?;
            w.commit().await?;
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
