//! Drain (issue 14): a backend emptied while reads and writes go on, so
//! it can be removed without ever lowering any object's redundancy.
//!
//! Once a drain starts, placement sees the backend as unhealthy, so new
//! writes and repairs put their fragments elsewhere. The drain walks every
//! manifest (a cursor, kept in the metadata store with the drain itself, so
//! a restart resumes it) and moves each fragment the backend holds: the
//! policy's placer picks the new backend with `current` naming the
//! fragments that stay, the fragment is copied with every shard checked
//! against its digests (rebuilt from the others if the copy fails), and the
//! manifest is swapped with a compare-and-swap on its generation, the old
//! blob handed to the garbage collector in the same transaction. k and m
//! never change, and until the swap the old fragment is the live one.
//!
//! After a pass, the fragments still held are counted; a pass finds those
//! written meanwhile by a placement that insisted on the backend, or parts
//! of uploads completed behind the cursor. The drain is done when the count
//! is zero; the backend stays out of placement until the drain is
//! cancelled (or the backend leaves the configuration).

use std::sync::Arc;
use std::time::Duration;

use shardgate_core::{BackendId, FragmentState};
use shardgate_meta::MetaError;
use shardgate_node::{GatewayError, blocking};

use crate::control::JobHandle;
use crate::repair::{Repaired, Source};
use crate::{ControlError, JobState, Jobs};

/// Job ids and job-state keys of drains: this, then the backend id.
pub(crate) const PREFIX: &str = "drain:";
/// Object rows read at once.
const BATCH: usize = 16;
/// Tries per object (a swap that lost a race with a write or a repair is
/// tried again on the fresh manifest).
const TRIES: usize = 3;
/// Passes that found fragments left before the drain waits between them.
const QUICK_PASSES: u32 = 3;
const WAIT_BETWEEN_PASSES: Duration = Duration::from_secs(30);

/// A drain's saved state: the pass, and the last row moved past.
struct DrainState {
    pass: u32,
    done: bool,
    cursor: Vec<u8>,
}

impl DrainState {
    fn decode(bytes: &[u8]) -> Option<Self> {
        let pass = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let done = *bytes.get(4)? != 0;
        Some(Self {
            pass,
            done,
            cursor: bytes[5..].to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.cursor.len());
        out.extend_from_slice(&self.pass.to_le_bytes());
        out.push(u8::from(self.done));
        out.extend_from_slice(&self.cursor);
        out
    }
}

impl Jobs {
    /// Starts draining `backend`. Refused when the backends left could
    /// not hold the widest policy's fragments on distinct backends.
    pub(crate) async fn start_drain(
        self: &Arc<Self>,
        backend: BackendId,
    ) -> Result<Arc<JobHandle>, ControlError> {
        if self.gw.backend(&backend).is_none() {
            return Err(ControlError::Refused(format!(
                "{backend} is not a configured backend"
            )));
        }
        let id = format!("{PREFIX}{backend}");
        if let Some(h) = self.registry.get(&id)
            && h.status().state != JobState::Cancelled
        {
            return Err(ControlError::Refused(format!(
                "{backend} is being drained already"
            )));
        }
        let widest = self
            .gw
            .policies()
            .map(|p| p.code.width())
            .max()
            .unwrap_or(0);
        let left = self
            .gw
            .backends()
            .filter(|b| b.id() != &backend && !self.gw.is_draining(b.id()))
            .count();
        if left < widest {
            return Err(ControlError::Refused(format!(
                "draining {backend} would leave {left} backends, and a policy spreads {widest} fragments over distinct ones: add a backend first"
            )));
        }
        let state = DrainState {
            pass: 1,
            done: false,
            cursor: Vec::new(),
        };
        let meta = self.gw.meta().clone();
        let (key, bytes) = (id.clone(), state.encode());
        blocking(move || meta.set_job_state(&key, &bytes)).await?;
        Ok(self.run_drain(backend))
    }

    /// Drains recorded in the metadata store (a restart resumes them).
    pub(crate) async fn resume_drains(self: &Arc<Self>) {
        let meta = self.gw.meta().clone();
        let saved = match blocking(move || meta.job_states_with_prefix(PREFIX)).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(error = %e, "drains not read; none resumed");
                return;
            }
        };
        for (key, _) in saved {
            let Some(id) = key
                .strip_prefix(PREFIX)
                .and_then(|b| BackendId::new(b).ok())
            else {
                continue;
            };
            if self.gw.backend(&id).is_none() {
                tracing::warn!(backend = %id, "drain of a backend no longer configured: forgotten");
                let meta = self.gw.meta().clone();
                let _ = blocking(move || meta.delete_job_state(&key)).await;
                continue;
            }
            tracing::info!(backend = %id, "drain resumed");
            self.run_drain(id);
        }
    }

    fn run_drain(self: &Arc<Self>, backend: BackendId) -> Arc<JobHandle> {
        let id = format!("{PREFIX}{backend}");
        let handle = self.registry.handle(&id, "drain");
        self.gw.set_draining(&backend, true);
        let jobs = self.clone();
        let h = handle.clone();
        tokio::spawn(async move {
            loop {
                if !h.checkpoint().await {
                    jobs.end_drain(&backend, &h).await;
                    return;
                }
                match jobs.drain_step(&backend, &h).await {
                    Ok(Some(wait)) => h.rest(wait).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%backend, error = %e, "drain step failed; retried");
                        h.rest(Duration::from_secs(5)).await;
                    }
                }
            }
        });
        handle
    }

    /// The operator cancelled: the backend takes new fragments again.
    async fn end_drain(&self, backend: &BackendId, h: &JobHandle) {
        self.gw.set_draining(backend, false);
        let meta = self.gw.meta().clone();
        let key = format!("{PREFIX}{backend}");
        if let Err(e) = blocking(move || meta.delete_job_state(&key)).await {
            tracing::warn!(%backend, error = %e, "cancelled drain not forgotten: it resumes at the next start");
        }
        h.set(
            JobState::Cancelled,
            "cancelled: the backend takes new fragments again",
        );
        tracing::info!(%backend, "drain cancelled");
    }

    async fn save_drain(
        &self,
        backend: &BackendId,
        state: &DrainState,
    ) -> Result<(), GatewayError> {
        let meta = self.gw.meta().clone();
        let (key, bytes) = (format!("{PREFIX}{backend}"), state.encode());
        blocking(move || meta.set_job_state(&key, &bytes)).await
    }

    /// One step: a batch of objects moved, or the end of a pass. Returns
    /// how long to wait before the next.
    async fn drain_step(
        self: &Arc<Self>,
        backend: &BackendId,
        h: &JobHandle,
    ) -> Result<Option<Duration>, GatewayError> {
        let meta = self.gw.meta().clone();
        let key = format!("{PREFIX}{backend}");
        let saved = blocking(move || meta.job_state(&key)).await?;
        let Some(mut state) = saved.as_deref().and_then(DrainState::decode) else {
            // Forgotten meanwhile (cancelled): nothing to do.
            return Ok(Some(Duration::from_secs(3600)));
        };
        if state.done {
            h.set(
                JobState::Done,
                format!("{backend} is empty and takes no new fragments"),
            );
            return Ok(Some(Duration::from_secs(60)));
        }
        if h.status().runs == 0
            || (state.cursor.is_empty() && h.status().state != JobState::Running)
        {
            let total = self.object_count().await;
            h.begin_run(total, format!("pass {}", state.pass));
        }
        let meta = self.gw.meta().clone();
        let cursor = (!state.cursor.is_empty()).then(|| state.cursor.clone());
        let batch = blocking(move || meta.objects_after(cursor.as_deref(), BATCH)).await?;
        if batch.is_empty() {
            let meta = self.gw.meta().clone();
            let left = blocking(move || meta.usage_by_backend())
                .await?
                .get(backend)
                .copied()
                .unwrap_or_default();
            if left.0 == 0 {
                state.done = true;
                self.save_drain(backend, &state).await?;
                h.set(
                    JobState::Done,
                    format!("{backend} is empty and takes no new fragments"),
                );
                tracing::info!(%backend, passes = state.pass, "drain done");
                return Ok(None);
            }
            tracing::info!(%backend, fragments = left.0, pass = state.pass, "drain pass over; fragments left, another pass");
            state.pass += 1;
            state.cursor.clear();
            self.save_drain(backend, &state).await?;
            h.set(
                JobState::Running,
                format!("{} fragments left after pass {}", left.0, state.pass - 1),
            );
            let wait = (state.pass > QUICK_PASSES).then_some(WAIT_BETWEEN_PASSES);
            return Ok(wait);
        }
        for (row, bucket, key, manifest) in batch {
            let held = manifest.segments.iter().any(|s| {
                s.fragments
                    .iter()
                    .any(|f| &f.backend == backend && f.state == FragmentState::Stored)
            });
            let mut bytes = 0;
            if held {
                // An object that cannot be moved now (too few good
                // fragments, a placement refused) is left for the next
                // pass, which the count of fragments left starts.
                match self.drain_object(backend, &bucket, &key).await {
                    Ok(b) => bytes = b,
                    Err(e) => {
                        tracing::warn!(%bucket, %key, %backend, error = %e, "not moved; the next pass tries again")
                    }
                }
            }
            h.progress(1, bytes);
            state.cursor = row;
        }
        self.save_drain(backend, &state).await?;
        Ok(None)
    }

    /// Moves `bucket/key`'s fragments off `backend`; returns the bytes
    /// written. A failure other than a lost race is returned (the step is
    /// retried).
    async fn drain_object(
        self: &Arc<Self>,
        backend: &BackendId,
        bucket: &str,
        key: &str,
    ) -> Result<u64, GatewayError> {
        let mut source = Source::Copy;
        let mut last = None;
        for _ in 0..TRIES {
            let meta = self.gw.meta().clone();
            let (b, k) = (bucket.to_string(), key.to_string());
            let (summary, manifest) = match blocking(move || meta.object_row(&b, &k)).await {
                Ok(Some(row)) => row,
                Ok(None) | Err(GatewayError::Meta(MetaError::NoSuchBucket)) => return Ok(0),
                Err(e) => return Err(e),
            };
            let plan: Vec<(usize, Vec<usize>)> = manifest
                .segments
                .iter()
                .enumerate()
                .filter_map(|(si, s)| {
                    let on: Vec<usize> = s
                        .fragments
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| &f.backend == backend && f.state == FragmentState::Stored)
                        .map(|(fi, _)| fi)
                        .collect();
                    (!on.is_empty()).then_some((si, on))
                })
                .collect();
            if plan.is_empty() {
                return Ok(0);
            }
            match self
                .replace_fragments(bucket, key, summary.generation, &manifest, &plan, source)
                .await
            {
                Ok(Repaired::Rebuilt { bytes, .. }) => {
                    self.gw
                        .metrics()
                        .drain_fragments
                        .inc_by(plan.iter().map(|(_, f)| f.len() as u64).sum());
                    tracing::debug!(bucket, key, %backend, "fragments moved");
                    return Ok(bytes);
                }
                // The object changed meanwhile: look again.
                Ok(_) => continue,
                Err(e) => {
                    tracing::info!(bucket, key, %backend, error = %e, "move failed; rebuilding from the other fragments instead");
                    source = Source::Rebuild;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            GatewayError::Internal(format!(
                "{bucket}/{key}: changed {TRIES} times while being moved"
            ))
        }))
    }
}
