//! Scrub (issue 14): every fragment of every object read whole and checked
//! against the manifest's digests (`shardgate_pipeline::verify_fragment`),
//! one pass per `[scrub] interval_secs`, at most `rate_bytes_per_sec`.
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

use shardgate_core::FragmentState;
use shardgate_meta::repair_reason;
use shardgate_pipeline::verify_fragment;

use crate::gateway::{Gateway, blocking, now_ms};

/// Objects read from the store per step.
const BATCH: usize = 32;
/// Bytes read from a backend at once.
const READ_BYTES: usize = 4 << 20;
const JOB: &str = "scrub";
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

impl Gateway {
    /// Starts the scrub task if scrub is on.
    pub(crate) fn spawn_scrub(self: &Arc<Self>) {
        if self.scrub_interval.is_none() {
            return;
        }
        let gw = self.clone();
        tokio::spawn(async move {
            loop {
                match gw.scrub_step().await {
                    Ok(Some(wait)) => tokio::time::sleep(wait).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "scrub step failed; retried");
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                }
            }
        });
    }

    async fn save_scrub(&self, state: &PassState) -> Result<(), crate::GatewayError> {
        let meta = self.meta.clone();
        let bytes = state.encode();
        blocking(move || meta.set_job_state(JOB, &bytes)).await
    }

    /// One step of the pass: a batch of objects, or the start or end of a
    /// pass. Returns how long to wait before the next step, if at all.
    async fn scrub_step(&self) -> Result<Option<Duration>, crate::GatewayError> {
        let Some(interval) = self.scrub_interval else {
            return Ok(Some(IDLE));
        };
        let meta = self.meta.clone();
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
            let next = state
                .started_ms
                .saturating_add(u64::try_from(interval.as_millis()).unwrap_or(u64::MAX));
            if state.started_ms != 0 && now < next {
                return Ok(Some(Duration::from_millis(next - now).min(IDLE)));
            }
            state = PassState {
                started_ms: now,
                finished_ms: 0,
                cursor: Vec::new(),
            };
            self.save_scrub(&state).await?;
            tracing::info!("scrub pass started");
        }
        let meta = self.meta.clone();
        let cursor = (!state.cursor.is_empty()).then(|| state.cursor.clone());
        let batch = blocking(move || meta.objects_after(cursor.as_deref(), BATCH)).await?;
        if batch.is_empty() {
            state.finished_ms = now_ms().max(1);
            self.save_scrub(&state).await?;
            self.metrics().scrub_passes.inc();
            tracing::info!(
                took_ms = state.finished_ms.saturating_sub(state.started_ms),
                "scrub pass complete"
            );
            return Ok(None);
        }
        for (row, bucket, key, manifest) in batch {
            let mut damaged = Vec::new();
            for (si, segment) in manifest.segments.iter().enumerate() {
                let geometry = segment.geometry();
                for (fi, fragment) in segment.fragments.iter().enumerate() {
                    // Never written: queued by its write already.
                    if fragment.state != FragmentState::Stored {
                        continue;
                    }
                    let Some(backend) = self.backend(&fragment.backend).cloned() else {
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
                    let check = verify_fragment(&*backend, fragment, &geometry, READ_BYTES).await;
                    let m = self.metrics();
                    m.scrub_bytes.inc_by(check.bytes_read);
                    m.scrub_fragments.inc();
                    if check.finding.is_damage() {
                        damaged.push((si as u32, fi as u16, fragment.clone(), check.finding));
                    }
                    // The rate limit: this read's share of a second.
                    let pause = check.bytes_read as f64 / self.scrub_rate as f64;
                    tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                }
            }
            if !damaged.is_empty() {
                // Only what the current manifest still uses counts: a
                // repair may have replaced a fragment while it was read.
                let meta = self.meta.clone();
                let (b, k, v) = (bucket.clone(), key.clone(), manifest.version_id);
                let report: Vec<_> = damaged
                    .iter()
                    .map(|(s, i, f, _)| (*s, *i, f.blob.clone()))
                    .collect();
                let taken = blocking(move || {
                    meta.report_damage(&b, &k, v, &report, repair_reason::SCRUB, now_ms())
                })
                .await?;
                for (si, fi, fragment, finding) in damaged {
                    if !taken.contains(&(si, fi)) {
                        continue;
                    }
                    self.metrics().scrub_damaged.inc();
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
            state.cursor = row;
        }
        self.save_scrub(&state).await?;
        Ok(None)
    }
}
