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
//! After a pass, the fragments of current objects still held, and the
//! writes in flight that chose the backend, are counted; another pass finds
//! what was written meanwhile (a write placed before the drain began, a
//! placement that insisted on the backend, an upload completed with parts
//! on it). The drain is done when both are zero, and counts again every
//! minute while done. The backend stays out of placement until the drain
//! is cancelled (or the backend leaves the configuration). Parts of
//! uploads in progress are not moved: they leave with their upload
//! (completed, then moved; or aborted or expired).
//!
//! One task per drain: starting one claims the backend first, and a task
//! whose state was forgotten (cancelled) stops instead of saving it again.

use std::sync::Arc;
use std::time::Duration;

use shardgate_core::{BackendId, FragmentState};
use shardgate_node::{GatewayError, blocking};
use tracing::Instrument;

use crate::control::JobHandle;
use crate::repair::{Repaired, Replace, Source};
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

/// What a drain does after a step.
enum Next {
    Now,
    After(Duration),
    /// The drain was cancelled meanwhile: the task ends.
    Stop,
}

impl Jobs {
    /// Claims `backend`'s drain for one task; false if one runs already.
    pub(crate) fn claim_drain(&self, backend: &BackendId) -> bool {
        self.drains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(backend.clone())
    }

    fn release_drain(&self, backend: &BackendId) {
        self.drains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(backend);
    }

    /// The backends whose drain has a task here.
    pub(crate) fn running_drains(&self) -> Vec<BackendId> {
        self.drains
            .lock()
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn is_drain_running(&self, backend: &BackendId) -> bool {
        self.drains
            .lock()
            .map(|d| d.contains(backend))
            .unwrap_or(true)
    }

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
        // Check and claim at once: two requests cannot start two tasks.
        if !self.claim_drain(&backend) {
            return Err(ControlError::Refused(format!(
                "{backend} is being drained already"
            )));
        }
        let state = DrainState {
            pass: 1,
            done: false,
            cursor: Vec::new(),
        };
        let meta = self.gw.meta().clone();
        let (key, bytes) = (format!("{PREFIX}{backend}"), state.encode());
        if let Err(e) = blocking(move || meta.set_job_state(&key, &bytes)).await {
            self.release_drain(&backend);
            return Err(e.into());
        }
        self.gw.set_draining(&backend, true);
        Ok(self.spawn_drain(backend))
    }

    /// Drains recorded in the metadata store (a restart resumes them):
    /// read before the node serves, so no write places a fragment on a
    /// backend being drained in the meantime. Their tasks start with the
    /// other jobs ([`Jobs::spawn_saved_drains`]).
    pub(crate) fn load_drains(&self) -> Vec<BackendId> {
        let saved = match self.gw.meta().job_states_with_prefix(PREFIX) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(error = %e, "drains not read; none resumed");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (key, _) in saved {
            let Some(id) = key
                .strip_prefix(PREFIX)
                .and_then(|b| BackendId::new(b).ok())
            else {
                continue;
            };
            if self.gw.backend(&id).is_none() {
                tracing::warn!(backend = %id, "drain of a backend no longer configured: forgotten");
                let _ = self.gw.meta().delete_job_state(&key);
                continue;
            }
            if self.claim_drain(&id) {
                self.gw.set_draining(&id, true);
                self.registry.handle(&key, "drain");
                out.push(id);
            }
        }
        out
    }

    pub(crate) fn spawn_saved_drains(self: &Arc<Self>, drains: Vec<BackendId>) {
        for id in drains {
            tracing::info!(backend = %id, "drain resumed");
            self.spawn_drain(id);
        }
    }

    /// The drain's task; its claim is held (see [`Jobs::claim_drain`]).
    pub(crate) fn spawn_drain(self: &Arc<Self>, backend: BackendId) -> Arc<JobHandle> {
        let id = format!("{PREFIX}{backend}");
        let handle = self.registry.handle(&id, "drain");
        handle.clear_cancel();
        let jobs = self.clone();
        let h = handle.clone();
        let span = tracing::info_span!(target: "shardgate::task", "drain", %backend);
        tokio::spawn(
            async move {
                loop {
                    if !h.checkpoint().await {
                        jobs.end_drain(&backend, &h).await;
                        return;
                    }
                    match jobs.drain_step(&backend, &h).await {
                        Ok(Next::Now) => {}
                        Ok(Next::After(wait)) => h.rest(wait).await,
                        Ok(Next::Stop) => {
                            // Cancelled (here or on another gateway): the
                            // backend takes new fragments again.
                            jobs.gw.set_draining(&backend, false);
                            jobs.release_drain(&backend);
                            h.let_go().await;
                            return;
                        }
                        Err(e) => {
                            h.failed(e.to_string());
                            tracing::warn!(%backend, error = %e, "drain step failed; retried");
                            h.rest(Duration::from_secs(5)).await;
                        }
                    }
                }
            }
            .instrument(span),
        );
        handle
    }

    /// The operator cancelled: the backend takes new fragments again.
    async fn end_drain(&self, backend: &BackendId, h: &JobHandle) {
        let meta = self.gw.meta().clone();
        let key = format!("{PREFIX}{backend}");
        if let Err(e) = blocking(move || meta.delete_job_state(&key)).await {
            tracing::warn!(%backend, error = %e, "cancelled drain not forgotten: it resumes at the next start");
        }
        self.gw.set_draining(backend, false);
        self.release_drain(backend);
        h.let_go().await;
        h.set(
            JobState::Cancelled,
            "cancelled: the backend takes new fragments again",
        );
        tracing::info!(%backend, "drain cancelled");
    }

    /// Saves the drain's state; false if it was forgotten meanwhile
    /// (cancelled), which ends the task.
    async fn save_drain(
        &self,
        backend: &BackendId,
        state: &DrainState,
    ) -> Result<bool, GatewayError> {
        let (key, bytes) = (format!("{PREFIX}{backend}"), state.encode());
        let meta = self.fenced(&key);
        blocking(move || meta.update_job_state(&key, &bytes)).await
    }

    /// Fragments of current objects still on `backend`, and writes in
    /// flight that chose it.
    async fn left_on(&self, backend: &BackendId) -> Result<(u64, usize), GatewayError> {
        let meta = self.gw.meta().clone();
        let id = backend.clone();
        blocking(move || {
            let left = meta
                .usage_by_backend()?
                .get(&id)
                .copied()
                .unwrap_or_default();
            Ok((left.fragments, meta.intents_on(&id)?))
        })
        .await
    }

    /// One step: a batch of objects moved, or the end of a pass.
    async fn drain_step(
        self: &Arc<Self>,
        backend: &BackendId,
        h: &JobHandle,
    ) -> Result<Next, GatewayError> {
        let meta = self.gw.meta().clone();
        let key = format!("{PREFIX}{backend}");
        let saved = blocking(move || meta.job_state(&key)).await?;
        let Some(mut state) = saved.as_deref().and_then(DrainState::decode) else {
            return Ok(Next::Stop);
        };
        if state.done {
            // Done stays true only while the backend stays empty: a write
            // that insisted on it, or an upload completed with parts on
            // it, starts another pass.
            let (left, _) = self.left_on(backend).await?;
            if left == 0 {
                h.set(
                    JobState::Done,
                    format!("{backend} is empty and takes no new fragments"),
                );
                return Ok(Next::After(Duration::from_secs(60)));
            }
            state.done = false;
            state.pass += 1;
            state.cursor.clear();
        }
        if state.cursor.is_empty() {
            let total = self.object_count().await;
            h.begin_run(total, format!("pass {}", state.pass));
        }
        let meta = self.gw.meta().clone();
        let cursor = (!state.cursor.is_empty()).then(|| state.cursor.clone());
        let (batch, unreadable) =
            blocking(move || meta.objects_after(cursor.as_deref(), BATCH)).await?;
        crate::report_unreadable(&unreadable);
        if batch.is_empty() {
            let (left, writing) = self.left_on(backend).await?;
            if left == 0 && writing == 0 {
                state.done = true;
                if !self.save_drain(backend, &state).await? {
                    return Ok(Next::Stop);
                }
                h.set(
                    JobState::Done,
                    format!("{backend} is empty and takes no new fragments"),
                );
                tracing::info!(%backend, passes = state.pass, "drain done");
                return Ok(Next::Now);
            }
            // Writes that chose the backend before the drain began may
            // commit behind the cursor: another pass once they have.
            tracing::info!(%backend, fragments = left, writing, pass = state.pass, "drain pass over; another pass");
            state.pass += 1;
            state.cursor.clear();
            if !self.save_drain(backend, &state).await? {
                return Ok(Next::Stop);
            }
            h.set(
                JobState::Running,
                format!(
                    "{left} fragments left and {writing} writes in flight after pass {}",
                    state.pass - 1
                ),
            );
            let wait = match (writing, state.pass > QUICK_PASSES) {
                (0, false) => Next::Now,
                (0, true) => Next::After(WAIT_BETWEEN_PASSES),
                _ => Next::After(Duration::from_secs(2)),
            };
            return Ok(wait);
        }
        for shardgate_meta::StoredVersion {
            row,
            bucket,
            key,
            seq,
            manifest,
            ..
        } in batch
        {
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
                match self.drain_object(backend, &bucket, &key, seq).await {
                    Ok(b) => bytes = b,
                    Err(e) => {
                        h.failed(format!("{bucket}/{key}: {e}"));
                        tracing::warn!(%bucket, %key, %backend, error = %e, "not moved; the next pass tries again")
                    }
                }
            }
            h.progress(1, bytes);
            state.cursor = row;
        }
        if !self.save_drain(backend, &state).await? {
            return Ok(Next::Stop);
        }
        Ok(Next::Now)
    }

    /// Moves `bucket/key`'s fragments off `backend`; returns the bytes
    /// written. A failure other than a lost race is returned (the step is
    /// retried).
    async fn drain_object(
        self: &Arc<Self>,
        backend: &BackendId,
        bucket: &str,
        key: &str,
        seq: u64,
    ) -> Result<u64, GatewayError> {
        let mut source = Source::Copy;
        let mut last = None;
        for _ in 0..TRIES {
            let Some((summary, manifest)) = self.version_row(bucket, key, seq).await? else {
                return Ok(0);
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
                .replace_fragments(
                    bucket,
                    key,
                    seq,
                    summary.generation,
                    &manifest,
                    Replace {
                        plan: &plan,
                        source,
                        destinations: None,
                    },
                )
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
