//! Rebalance (issue 14): after backends are added (or fill unevenly),
//! fragments move toward where the policy's placer would put them now,
//! while reads and writes go on; k and m never change.
//!
//! One pass over every manifest (its cursor kept in the metadata store, so
//! a restart resumes it). For each segment the placer is asked afresh
//! where the fragments would go; a fragment on a backend it did not choose
//! moves to a chosen backend holding none of the segment's, but only if
//! the move leaves its source at least as full as its destination (bytes
//! held over bytes held plus free): moves only ever go from fuller to
//! emptier, so a pass cannot undo itself, a second pass moves (almost)
//! nothing, and a placer that draws at random (the built-in rule, by free
//! space) cannot make fragments wander. Each move is a drain's move: a
//! copy with every shard checked, a compare-and-swap of the manifest, the
//! old blob to the garbage collector.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shardgate_core::{BackendId, FragmentState};
use shardgate_meta::MetaError;
use shardgate_node::{GatewayError, blocking};

use crate::control::JobHandle;
use crate::repair::{Repaired, Replace, Source};
use crate::{ControlError, JobState, Jobs};

/// The job's id, and its job-state key (the cursor of a pass running).
pub(crate) const JOB: &str = "rebalance";
const BATCH: usize = 16;

/// Bytes held and room, per backend, as the pass goes.
struct Fill(BTreeMap<BackendId, (u64, u64)>);

impl Fill {
    /// `held + len` over `held + free`, as a fraction.
    fn after(&self, b: &BackendId, delta: i64) -> f64 {
        let (held, room) = self.0.get(b).copied().unwrap_or((0, 1 << 40));
        let held = (held as i64 + delta).max(0) as f64;
        held / room.max(1) as f64
    }

    fn moved(&mut self, from: &BackendId, to: &BackendId, len: u64) {
        if let Some(f) = self.0.get_mut(from) {
            f.0 = f.0.saturating_sub(len);
        }
        if let Some(t) = self.0.get_mut(to) {
            t.0 += len;
        }
    }
}

impl Jobs {
    /// Starts a rebalance pass; refused while one runs.
    pub(crate) async fn start_rebalance(self: &Arc<Self>) -> Result<Arc<JobHandle>, ControlError> {
        if self.rebalancing.swap(true, Ordering::AcqRel) {
            return Err(ControlError::Refused(
                "a rebalance is running already".into(),
            ));
        }
        let meta = self.gw.meta().clone();
        if let Err(e) = blocking(move || meta.set_job_state(JOB, &[])).await {
            self.rebalancing.store(false, Ordering::Release);
            return Err(e.into());
        }
        Ok(self.spawn_rebalance())
    }

    /// A pass a previous process left is resumed at its cursor.
    pub(crate) fn resume_rebalance(self: &Arc<Self>) {
        if matches!(self.gw.meta().job_state(JOB), Ok(Some(_)))
            && !self.rebalancing.swap(true, Ordering::AcqRel)
        {
            tracing::info!("rebalance resumed");
            self.spawn_rebalance();
        }
    }

    fn spawn_rebalance(self: &Arc<Self>) -> Arc<JobHandle> {
        let h = self.registry.handle(JOB, "rebalance");
        h.clear_cancel();
        let jobs = self.clone();
        let handle = h.clone();
        tokio::spawn(async move {
            let outcome = jobs.rebalance_pass(&handle).await;
            let meta = jobs.gw.meta().clone();
            match outcome {
                Ok(Some(moved)) => {
                    let _ = blocking(move || meta.delete_job_state(JOB)).await;
                    handle.set(
                        JobState::Done,
                        format!("pass over: {moved} fragments moved"),
                    );
                    tracing::info!(moved, "rebalance pass over");
                }
                Ok(None) => {
                    let _ = blocking(move || meta.delete_job_state(JOB)).await;
                    handle.set(JobState::Cancelled, "cancelled");
                }
                Err(e) => {
                    handle.failed(e.to_string());
                    handle.set(
                        JobState::Idle,
                        format!("stopped: {e}; start it again to go on"),
                    );
                    tracing::warn!(error = %e, "rebalance stopped");
                }
            }
            jobs.rebalancing.store(false, Ordering::Release);
        });
        h
    }

    /// The pass; returns the fragments moved, or `None` if cancelled.
    async fn rebalance_pass(self: &Arc<Self>, h: &JobHandle) -> Result<Option<u64>, GatewayError> {
        let meta = self.gw.meta().clone();
        let (usage, saved) =
            blocking(move || Ok((meta.usage_by_backend()?, meta.job_state(JOB)?))).await?;
        let mut cursor = saved.unwrap_or_default();
        let board = self.gw.backend_set().board();
        let mut fill = Fill(
            self.gw
                .backends()
                .map(|b| {
                    let held = usage.get(b.id()).map_or(0, |u| u.bytes + u.part_bytes);
                    let free = board
                        .state(b.id())
                        .and_then(|s| s.free_bytes)
                        .or(b.info().capacity_bytes.map(|c| c.saturating_sub(held)))
                        .unwrap_or(1 << 40);
                    (b.id().clone(), (held, held + free))
                })
                .collect(),
        );
        let total = self.object_count().await;
        h.begin_run(total, "pass started");
        let mut moved_total = 0;
        loop {
            if !h.checkpoint().await {
                return Ok(None);
            }
            let meta = self.gw.meta().clone();
            let after = (!cursor.is_empty()).then(|| cursor.clone());
            let batch = blocking(move || meta.objects_after(after.as_deref(), BATCH)).await?;
            if batch.is_empty() {
                return Ok(Some(moved_total));
            }
            for (row, bucket, key, _) in batch {
                let (moved, bytes) = match self.rebalance_object(&bucket, &key, &mut fill).await {
                    Ok(m) => m,
                    Err(e) => {
                        h.failed(format!("{bucket}/{key}: {e}"));
                        tracing::warn!(%bucket, %key, error = %e, "not rebalanced");
                        (0, 0)
                    }
                };
                moved_total += moved;
                h.progress(1, bytes);
                cursor = row;
            }
            h.set(JobState::Running, format!("{moved_total} fragments moved"));
            let meta = self.gw.meta().clone();
            let saved = cursor.clone();
            blocking(move || meta.update_job_state(JOB, &saved)).await?;
            tokio::time::sleep(Duration::ZERO).await;
        }
    }

    /// Moves what should move of one object; returns (fragments, bytes).
    async fn rebalance_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        fill: &mut Fill,
    ) -> Result<(u64, u64), GatewayError> {
        let meta = self.gw.meta().clone();
        let (b, k) = (bucket.to_string(), key.to_string());
        let (summary, manifest) = match blocking(move || meta.object_row(&b, &k)).await {
            Ok(Some(row)) => row,
            Ok(None) | Err(GatewayError::Meta(MetaError::NoSuchBucket)) => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut destinations = BTreeMap::new();
        let mut planned: Vec<(BackendId, BackendId, u64)> = Vec::new();
        for (si, segment) in manifest.segments.iter().enumerate() {
            // Only whole, healthy segments move: the rest is repair's.
            let healthy = segment.fragments.iter().all(|f| {
                f.state == FragmentState::Stored
                    && self.gw.backend(&f.backend).is_some()
                    && !self.backend_gone(&f.backend)
            });
            if !healthy {
                continue;
            }
            let width = segment.fragments.len();
            let Ok(fresh) = self.place_repair(bucket, key, segment, &vec![None; width]) else {
                continue;
            };
            let chosen: BTreeSet<&BackendId> = fresh.iter().collect();
            let holding: BTreeSet<&BackendId> =
                segment.fragments.iter().map(|f| &f.backend).collect();
            let mut free_targets: Vec<&BackendId> = fresh
                .iter()
                .filter(|b| !holding.contains(b) && !self.gw.is_draining(b))
                .collect();
            let len = segment.geometry().fragment_len();
            let mut moves = Vec::new();
            for (fi, f) in segment.fragments.iter().enumerate() {
                if chosen.contains(&f.backend) {
                    continue;
                }
                // The emptiest chosen target the move leaves no fuller than
                // its source.
                free_targets.sort_by(|a, b| fill.after(a, 0).total_cmp(&fill.after(b, 0)));
                let Some(pos) = free_targets.iter().position(|t| {
                    fill.after(&f.backend, -(len as i64)) >= fill.after(t, len as i64)
                }) else {
                    continue;
                };
                let to = free_targets.remove(pos).clone();
                fill.moved(&f.backend, &to, len);
                planned.push((f.backend.clone(), to.clone(), len));
                destinations.insert((si, fi), to);
                moves.push(fi);
            }
            if !moves.is_empty() {
                plan.push((si, moves));
            }
        }
        if plan.is_empty() {
            return Ok((0, 0));
        }
        let outcome = self
            .replace_fragments(
                bucket,
                key,
                summary.generation,
                &manifest,
                Replace {
                    plan: &plan,
                    source: Source::Copy,
                    destinations: Some(&destinations),
                },
            )
            .await;
        match outcome {
            Ok(Repaired::Rebuilt { fragments, bytes }) => {
                self.gw
                    .metrics()
                    .rebalance_fragments
                    .inc_by(fragments as u64);
                Ok((fragments as u64, bytes))
            }
            other => {
                // Not moved after all: the tally goes back.
                for (from, to, len) in planned {
                    fill.moved(&to, &from, len);
                }
                other.map(|_| (0, 0))
            }
        }
    }
}
