//! Rebalance (issue 14): after backends are added (or fill unevenly),
//! fragments move toward where the policy's placer would put them now,
//! while reads and writes go on; k and m never change.
//!
//! One pass over every manifest (its cursor kept in the metadata store, so
//! a restart resumes it). For each segment the placer is asked afresh
//! where the fragments would go; a fragment on a backend it did not choose
//! moves to a chosen backend holding none of the segment's, but only if
//! the move leaves its source at or above the mean fill and its destination
//! at or below it (fill: bytes held over bytes held plus free, over the
//! backends that are up and not being drained): moves never cross the
//! mean, so a pass cannot undo itself, a second pass only finishes what
//! the first could not, and a placer that draws at random (the built-in
//! rule, by free space) cannot make fragments wander. A segment whose
//! moves would leave any site (or any other label's value) with more of
//! its fragments than before does not move: some fragments the placer
//! would move may stay, and the object must survive no less. Each move is a drain's move: a
//! copy with every shard checked, a compare-and-swap of the manifest, the
//! old blob to the garbage collector.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shardgate_core::{BackendId, FragmentState};
use shardgate_node::{GatewayError, blocking};
use tracing::Instrument;

use crate::control::JobHandle;
use crate::repair::{Repaired, Replace, Source};
use crate::{ControlError, JobState, Jobs};

/// The job's id, and its job-state key (the cursor of a pass running).
pub(crate) const JOB: &str = "rebalance";
const BATCH: usize = 16;

/// Bytes held and room, per backend, as the pass goes, and the mean fill
/// of the backends that take part (bytes held over room, all together).
struct Fill {
    of: BTreeMap<BackendId, (u64, u64)>,
    mean: f64,
}

impl Fill {
    /// `held + len` over `held + free`, as a fraction.
    fn after(&self, b: &BackendId, delta: i64) -> f64 {
        let (held, room) = self.of.get(b).copied().unwrap_or((0, 1 << 40));
        let held = (held as i64 + delta).max(0) as f64;
        held / room.max(1) as f64
    }

    fn moved(&mut self, from: &BackendId, to: &BackendId, len: u64) {
        if let Some(f) = self.of.get_mut(from) {
            f.0 = f.0.saturating_sub(len);
        }
        if let Some(t) = self.of.get_mut(to) {
            t.0 += len;
        }
    }

    /// A move of `len` bytes that leaves its source still at or above the
    /// mean and its destination still at or below it: moves never cross
    /// the mean, so passes converge instead of trading fragments.
    fn worth(&self, from: &BackendId, to: &BackendId, len: u64) -> bool {
        self.after(from, -(len as i64)) >= self.mean && self.after(to, len as i64) <= self.mean
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
        // A pass that stopped (an error, a restart) goes on from its cursor.
        let meta = self.gw.meta().clone();
        let begun = blocking(move || {
            if meta.job_state(JOB)?.is_none() {
                meta.set_job_state(JOB, &[])?;
            }
            Ok(())
        });
        if let Err(e) = begun.await {
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
        tokio::spawn(
            async move {
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
                // After its state went: another gateway may run the next
                // pass, never this one again from its cursor.
                handle.let_go().await;
                jobs.rebalancing.store(false, Ordering::Release);
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "rebalance")),
        );
        h
    }

    /// The pass; returns the fragments moved, or `None` if cancelled.
    async fn rebalance_pass(self: &Arc<Self>, h: &JobHandle) -> Result<Option<u64>, GatewayError> {
        let meta = self.gw.meta().clone();
        let usage = blocking(move || meta.usage_by_backend()).await?;
        let board = self.gw.backend_set().board();
        let of: BTreeMap<BackendId, (u64, u64)> = self
            .gw
            .backends()
            .filter(|b| self.backend_is_up(b.id()) && !self.gw.is_draining(b.id()))
            .map(|b| {
                let held = usage.get(b.id()).map_or(0, |u| u.bytes + u.part_bytes);
                let free = board
                    .state(b.id())
                    .and_then(|s| s.free_bytes)
                    .or(b.info().capacity_bytes.map(|c| c.saturating_sub(held)))
                    .unwrap_or(1 << 40);
                (b.id().clone(), (held, held + free))
            })
            .collect();
        let (held, room) = of
            .values()
            .fold((0u64, 0u64), |(h, r), (held, room)| (h + held, r + room));
        let mut fill = Fill {
            of,
            mean: held as f64 / room.max(1) as f64,
        };
        let total = self.object_count().await;
        h.begin_run(total, "pass started");
        let mut moved_total = 0;
        loop {
            if !h.checkpoint().await {
                return Ok(None);
            }
            // From the saved cursor: another gateway may have run the pass
            // on while this one waited for its lease (and ended it).
            let meta = self.gw.meta().clone();
            let mut cursor = match blocking(move || meta.job_state(JOB)).await? {
                Some(saved) => saved,
                None => return Ok(Some(moved_total)),
            };
            let meta = self.gw.meta().clone();
            let after = (!cursor.is_empty()).then(|| cursor.clone());
            let (batch, unreadable) =
                blocking(move || meta.objects_after(after.as_deref(), BATCH)).await?;
            crate::report_unreadable(&unreadable);
            if batch.is_empty() {
                return Ok(Some(moved_total));
            }
            for shardgate_meta::StoredVersion {
                row,
                bucket,
                key,
                seq,
                ..
            } in batch
            {
                let (moved, bytes) =
                    match self.rebalance_object(&bucket, &key, seq, &mut fill).await {
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
            let meta = self.fenced(JOB);
            let saved = cursor.clone();
            blocking(move || meta.update_job_state(JOB, &saved)).await?;
            tokio::time::sleep(Duration::ZERO).await;
        }
    }

    /// Whether backends `after` spread a segment's fragments no less than
    /// where they are: for every label, the most fragments sharing one
    /// value does not grow.
    fn no_worse_spread(&self, segment: &shardgate_core::Segment, after: &[BackendId]) -> bool {
        let most = |on: &mut dyn Iterator<Item = &BackendId>, label: &str| -> usize {
            let mut count: BTreeMap<String, usize> = BTreeMap::new();
            for b in on {
                let value = self
                    .gw
                    .backend(b)
                    .and_then(|b| b.info().label(label).map(str::to_string))
                    .unwrap_or_else(|| b.to_string());
                *count.entry(value).or_default() += 1;
            }
            count.into_values().max().unwrap_or(0)
        };
        let labels: BTreeSet<String> = self
            .gw
            .backends()
            .flat_map(|b| b.info().labels.keys().cloned())
            .collect();
        labels.iter().all(|label| {
            most(&mut after.iter(), label)
                <= most(&mut segment.fragments.iter().map(|f| &f.backend), label)
        })
    }

    /// Moves what should move of one object; returns (fragments, bytes).
    async fn rebalance_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        seq: u64,
        fill: &mut Fill,
    ) -> Result<(u64, u64), GatewayError> {
        let Some((summary, manifest)) = self.version_row(bucket, key, seq).await? else {
            return Ok((0, 0));
        };
        let mut plan: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut destinations = BTreeMap::new();
        let mut planned: Vec<(BackendId, BackendId, u64)> = Vec::new();
        // An inline segment has nothing on a backend to move.
        for (si, segment) in manifest
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_inline())
        {
            // Only whole segments on backends that answer move: the rest
            // is repair's.
            let healthy = segment.fragments.iter().all(|f| {
                f.state == FragmentState::Stored
                    && self.gw.backend(&f.backend).is_some()
                    && self.backend_is_up(&f.backend)
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
            // Targets: chosen, holding none of the segment, taking part
            // (up, not being drained).
            let mut free_targets: Vec<&BackendId> = fresh
                .iter()
                .filter(|b| !holding.contains(b) && fill.of.contains_key(*b))
                .collect();
            let mut after: Vec<BackendId> = segment
                .fragments
                .iter()
                .map(|f| f.backend.clone())
                .collect();
            let mut segment_moves = Vec::new();
            let len = segment.geometry().fragment_len();
            let mut moves = Vec::new();
            for (fi, f) in segment.fragments.iter().enumerate() {
                if chosen.contains(&f.backend) {
                    continue;
                }
                // The emptiest chosen target worth moving to.
                free_targets.sort_by(|a, b| fill.after(a, 0).total_cmp(&fill.after(b, 0)));
                let Some(pos) = free_targets
                    .iter()
                    .position(|t| fill.worth(&f.backend, t, len))
                else {
                    continue;
                };
                let to = free_targets.remove(pos).clone();
                after[fi] = to.clone();
                segment_moves.push((fi, f.backend.clone(), to));
            }
            // The moves must not make the segment survive less: no site
            // (or provider, region, any label) may end with more of its
            // fragments than before, since some fragments the placer would
            // move stay where they are.
            if segment_moves.is_empty() || !self.no_worse_spread(segment, &after) {
                continue;
            }
            for (fi, from, to) in segment_moves {
                fill.moved(&from, &to, len);
                planned.push((from, to.clone(), len));
                destinations.insert((si, fi), to);
                moves.push(fi);
            }
            plan.push((si, moves));
        }
        if plan.is_empty() {
            return Ok((0, 0));
        }
        let outcome = self
            .replace_fragments(
                bucket,
                key,
                seq,
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
