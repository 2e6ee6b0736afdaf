//! Scrub (issue 14): every fragment of every object checked against the
//! manifest's digests, one pass per `[scrub] interval_secs`, at most
//! `rate_bytes_per_sec`. Local disks are read whole
//! (`shardgate_pipeline::verify_fragment`). Cloud backends (untrusted,
//! egress paid) are audited by sampling (`audit_fragment`): each
//! fragment's size and digest trailer, and `audit_stripes` of its shards
//! at random, so a provider that deleted, truncated or replaced a blob is
//! caught every pass, and one that altered a fraction f of a fragment's
//! shards with probability 1 - (1 - f)^n per pass for n sampled shards
//! (n = 4: 34% for f = 10%, 59% for f = 20%, 94% for f = 50%; over a pass
//! of D such fragments, 1 - (1 - f)^(nD)).
//! Damage (a missing blob, a shard or trailer that does not match) is
//! logged with the fragment's identity and queued for repair.
//!
//! Like Garage's scrub and MinIO's heal tracker, the pass keeps its cursor
//! (the last object row checked) and its start in the metadata store, so a
//! restart resumes the pass instead of starting over. Fragments on a
//! backend that is down are skipped (not damage: the repair queue learns of
//! backends gone for good elsewhere); a version overwritten while being
//! checked reports nothing (`report_damage` ignores old versions).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::seq::index::sample;
use shardgate_core::FragmentState;
use shardgate_meta::repair_reason;
use shardgate_pipeline::{audit_fragment, verify_fragment};
use tracing::Instrument;

use shardgate_node::{blocking, now_ms};

use crate::Jobs;

/// Objects read from the store per step.
const BATCH: usize = 32;
/// Objects checked at once.
const OBJECTS_IN_FLIGHT: usize = 2;
/// Fragments checked at once.
const CHECKS_IN_FLIGHT: usize = 6;
/// Bytes read from a backend at once.
const READ_BYTES: usize = 4 << 20;
/// The job's id, and its job-state key.
pub(crate) const JOB: &str = "scrub";
/// The longest a waiting scrub sleeps before looking again.
const IDLE: Duration = Duration::from_secs(60);

/// A pass's saved state: when it started, when it finished (0: running),
/// and the last row checked (empty: none yet).
struct PassState {
    started_ms: u64,
    finished_ms: u64,
    cursor: Vec<u8>,
}

impl PassState {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let started = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let finished = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Self {
            started_ms: started,
            finished_ms: finished,
            cursor: bytes[16..].to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.cursor.len());
        out.extend_from_slice(&self.started_ms.to_le_bytes());
        out.extend_from_slice(&self.finished_ms.to_le_bytes());
        out.extend_from_slice(&self.cursor);
        out
    }
}

/// `n` distinct stripes of `stripe_count` (all of them if fewer), at
/// random.
fn sample_stripes(stripe_count: u64, n: usize) -> Vec<u64> {
    let count = usize::try_from(stripe_count).unwrap_or(usize::MAX);
    if count <= n {
        return (0..stripe_count).collect();
    }
    sample(&mut rand::rng(), count, n)
        .into_iter()
        .map(|i| i as u64)
        .collect()
}

impl Jobs {
    /// Objects in the store, for a run's total (none if unreadable).
    pub(crate) async fn object_count(&self) -> Option<u64> {
        let meta = self.gw.meta().clone();
        blocking(move || meta.object_count()).await.ok()
    }

    /// Starts the scrub task: passes on schedule (if scrub is on) and
    /// when an operator asks for one.
    pub(crate) fn spawn_scrub(self: &Arc<Self>) {
        let jobs = self.clone();
        let handle = self.registry.handle(JOB, "scrub");
        tokio::spawn(
            async move {
                loop {
                    if !handle.checkpoint().await
                        && let Err(e) = jobs.end_scrub_pass("cancelled").await
                    {
                        tracing::warn!(error = %e, "scrub pass not ended");
                    }
                    let woken = jobs.scrub_now.notified();
                    match jobs.scrub_step(&handle).await {
                        Ok(Some(wait)) => {
                            let _ = tokio::time::timeout(wait, woken).await;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "scrub step failed; retried");
                            tokio::time::sleep(Duration::from_secs(10)).await;
                        }
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "scrub")),
        );
    }

    /// Ends the running pass now (an operator cancelled it).
    async fn end_scrub_pass(&self, why: &str) -> Result<(), shardgate_node::GatewayError> {
        let meta = self.gw.meta().clone();
        let saved = blocking(move || meta.job_state(JOB)).await?;
        if let Some(mut state) = saved.as_deref().and_then(PassState::decode)
            && state.finished_ms == 0
        {
            state.finished_ms = now_ms().max(1);
            self.save_scrub(&state).await?;
            tracing::info!(why, "scrub pass ended early");
        }
        if let Some(h) = self.registry.get(JOB) {
            h.set(crate::JobState::Cancelled, format!("pass {why}"));
        }
        Ok(())
    }

    async fn save_scrub(&self, state: &PassState) -> Result<(), shardgate_node::GatewayError> {
        let meta = self.fenced(JOB);
        let bytes = state.encode();
        blocking(move || meta.set_job_state(JOB, &bytes)).await
    }

    /// One step of the pass: a batch of objects, or the start or end of a
    /// pass. Returns how long to wait before the next step, if at all.
    async fn scrub_step(
        &self,
        handle: &crate::JobHandle,
    ) -> Result<Option<Duration>, shardgate_node::GatewayError> {
        let meta = self.gw.meta().clone();
        let saved = blocking(move || meta.job_state(JOB)).await?;
        let mut state = saved
            .as_deref()
            .and_then(PassState::decode)
            .unwrap_or(PassState {
                started_ms: 0,
                finished_ms: 1,
                cursor: Vec::new(),
            });
        let now = now_ms();
        if state.finished_ms != 0 {
            let asked = self
                .scrub_requested
                .swap(false, std::sync::atomic::Ordering::AcqRel);
            let next = match self.settings.scrub_interval {
                Some(interval) => state
                    .started_ms
                    .saturating_add(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX)),
                None => u64::MAX,
            };
            let first = state.started_ms == 0 && self.settings.scrub_interval.is_some();
            if !asked && !first && now < next {
                return Ok(Some(Duration::from_millis(next - now).min(IDLE)));
            }
            state = PassState {
                started_ms: now,
                finished_ms: 0,
                cursor: Vec::new(),
            };
            self.save_scrub(&state).await?;
            tracing::info!(asked, "scrub pass started");
            handle.begin_run(self.object_count().await, "pass started");
        } else if handle.status().started_unix_ms == 0 {
            // A pass a previous process began: resumed at its cursor.
            handle.begin_run(self.object_count().await, "pass resumed");
        }
        let meta = self.gw.meta().clone();
        let cursor = (!state.cursor.is_empty()).then(|| state.cursor.clone());
        let (batch, unreadable) =
            blocking(move || meta.objects_after(cursor.as_deref(), BATCH)).await?;
        crate::report_unreadable(&unreadable);
        if batch.is_empty() {
            state.finished_ms = now_ms().max(1);
            self.save_scrub(&state).await?;
            self.gw.metrics().scrub_passes.inc();
            let took_ms = state.finished_ms.saturating_sub(state.started_ms);
            tracing::info!(took_ms, "scrub pass complete");
            let done = handle.status();
            handle.set(
                crate::JobState::Idle,
                format!(
                    "last pass: {} objects, {} bytes read in {:.2} s",
                    done.objects_done,
                    done.bytes_done,
                    took_ms as f64 / 1000.0
                ),
            );
            return Ok(None);
        }
        // Two objects at a time (their fragments side by side within
        // each), finished in order so the cursor only moves past objects
        // checked whole.
        let mut checked = futures::stream::iter(batch)
            .map(|v| async move {
                let read = self
                    .scrub_object(&v.bucket, &v.key, v.seq, &v.manifest)
                    .await;
                (v.row, read)
            })
            .buffered(OBJECTS_IN_FLIGHT);
        while let Some((row, read)) = checked.next().await {
            handle.progress(1, read?);
            state.cursor = row;
        }
        self.save_scrub(&state).await?;
        Ok(None)
    }
    /// Checks every fragment of one object and queues the damage found;
    /// returns the bytes read.
    async fn scrub_object(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        manifest: &shardgate_core::Manifest,
    ) -> Result<u64, shardgate_node::GatewayError> {
        let mut damaged = Vec::new();
        let mut read = 0;
        let mut checks = Vec::new();
        for (si, segment) in manifest.segments.iter().enumerate() {
            for (fi, fragment) in segment.fragments.iter().enumerate() {
                // Never written: queued by its write already.
                if fragment.state != FragmentState::Stored {
                    continue;
                }
                let Some(backend) = self.gw.backend(&fragment.backend).cloned() else {
                    // Its backend left the configuration: as good as lost.
                    damaged.push((
                        si as u32,
                        fi as u16,
                        fragment.clone(),
                        shardgate_pipeline::Finding::Missing,
                    ));
                    continue;
                };
                if !self.backend_is_up(&fragment.backend) {
                    continue;
                }
                checks.push((si, fi, segment.geometry(), fragment.clone(), backend));
            }
        }
        // The fragments of an object live on different backends: they
        // are checked side by side, so a pass reads the disks (and
        // hashes) in parallel rather than one file at a time.
        // A segment at a time, its fragments side by side, and the
        // rate limit's pause after each segment: a large object is not
        // read in one burst.
        let mut results = Vec::with_capacity(checks.len());
        let mut by_segment = checks.into_iter().peekable();
        while let Some(first) = by_segment.next() {
            let mut group = vec![first];
            while let Some(next) = by_segment.next_if(|c| c.0 == group[0].0) {
                group.push(next);
            }
            let mut pending = Vec::with_capacity(group.len());
            for (si, fi, geometry, fragment, backend) in group {
                let sampled = self.settings.audit_stripes > 0
                    && self.settings.sampled.contains(&fragment.backend);
                let stripes = sampled
                    .then(|| sample_stripes(geometry.stripe_count, self.settings.audit_stripes));
                pending.push(async move {
                    let check = match stripes {
                        Some(stripes) => {
                            audit_fragment(&*backend, &fragment, &geometry, &stripes).await
                        }
                        None => verify_fragment(&*backend, &fragment, &geometry, READ_BYTES).await,
                    };
                    (si, fi, fragment, sampled, check)
                });
            }
            let done: Vec<_> = futures::stream::iter(pending)
                .buffer_unordered(CHECKS_IN_FLIGHT)
                .collect()
                .await;
            let bytes: u64 = done.iter().map(|d| d.4.bytes_read).sum();
            results.extend(done);
            let pause = bytes as f64 / self.settings.scrub_rate_bytes_per_sec as f64;
            tokio::time::sleep(Duration::from_secs_f64(pause)).await;
        }
        for (si, fi, fragment, sampled, check) in results {
            read += check.bytes_read;
            let m = self.gw.metrics();
            m.scrub_bytes.inc_by(check.bytes_read);
            m.scrub_fragments.inc();
            let at = vec![
                ("backend", fragment.backend.to_string()),
                ("mode", if sampled { "audit" } else { "full" }.to_string()),
            ];
            m.scrub_backend_bytes
                .get_or_create(&at)
                .inc_by(check.bytes_read);
            if check.finding.is_damage() {
                m.scrub_backend_damaged.get_or_create(&at).inc();
                damaged.push((si as u32, fi as u16, fragment, check.finding));
            }
        }
        if !damaged.is_empty() {
            // Only what the current manifest still uses counts: a
            // repair may have replaced a fragment while it was read.
            let meta = self.gw.meta().clone();
            let (b, k, v) = (bucket.to_string(), key.to_string(), manifest.version_id);
            let report: Vec<_> = damaged
                .iter()
                .map(|(s, i, f, _)| (*s, *i, f.blob.clone()))
                .collect();
            let taken = blocking(move || {
                meta.report_damage(&b, &k, seq, v, &report, repair_reason::SCRUB, now_ms())
            })
            .await?;
            for (si, fi, fragment, finding) in damaged {
                if !taken.contains(&(si, fi)) {
                    continue;
                }
                self.gw.metrics().scrub_damaged.inc();
                tracing::warn!(
                    object = %format!("{bucket}/{key}"),
                    segment = si,
                    fragment = fi,
                    backend = %fragment.backend,
                    blob = %fragment.blob,
                    ?finding,
                    "scrub: fragment damaged; queued for repair"
                );
            }
        }
        Ok(read)
    }
}
