//! Ships the outbox to the backends, and cuts checkpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use shardgate_backend::Backend;
use shardgate_core::journal::{Payload, UnitInfo, UnitKind, blob_name, seal_unit};
use shardgate_core::{BackendId, Recipients};
use shardgate_meta::{Hold, JournalState, LeaseKeeper, MetaStore, UnitRecord};
use tokio::sync::{Mutex, Notify};
use tracing::Instrument;

use crate::error::{JournalError, Result};

/// Where a unit's k + m blobs go.
#[derive(Debug)]
pub struct UnitPlacement {
    pub k: usize,
    pub m: usize,
    /// Blobs that must be written for the unit to count.
    pub quorum: usize,
    /// One per blob, in index order (a backend may repeat when there are
    /// fewer than k + m).
    pub backends: Vec<Arc<dyn Backend>>,
}

/// The gateway's side: placement like an object's, and backends by id.
pub trait Placement: Send + Sync {
    /// Backends for a unit of `bytes`.
    fn place_unit(&self, bytes: u64) -> Result<UnitPlacement, String>;
    fn backend(&self, id: &BackendId) -> Option<Arc<dyn Backend>>;
    /// Backends being drained or down: a journal that has blobs there is
    /// rewritten elsewhere by a checkpoint.
    fn unavailable(&self) -> Vec<BackendId> {
        Vec::new()
    }
}

/// How the journal ships (`[journal]`).
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// A batch goes out at least this often while records wait: what a
    /// lost gateway disk can cost at most.
    pub interval: Duration,
    /// The most record bytes in one batch (and in one checkpoint part).
    pub batch_bytes: usize,
    /// A checkpoint is cut once the batches since the last one hold more
    /// than that checkpoint, and at least this much.
    pub min_checkpoint_bytes: u64,
    /// One blob's write gives up after this long.
    pub write_timeout: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            batch_bytes: 4 << 20,
            min_checkpoint_bytes: 64 << 20,
            write_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Progress {
    since_checkpoint: u64,
    last_checkpoint: u64,
    /// When a checkpoint last moved the journal off unavailable backends.
    last_move: Option<std::time::Instant>,
}

/// How long the rest of a unit's blobs may take once its quorum is written.
const QUORUM_GRACE: Duration = Duration::from_secs(2);

/// The longest wait between tries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A journal on a backend that is down or drained moves off it at most
/// this often (a flapping backend costs one checkpoint per period).
const MOVE_PERIOD: Duration = Duration::from_secs(60);

/// Whether the units a recovery would read (the newest checkpoint and the
/// batches after it) have a blob on one of `away`.
fn live_units_touch(state: &JournalState, away: &[BackendId]) -> bool {
    if away.is_empty() || state.last_checkpoint == 0 {
        return false;
    }
    let checkpoint = state.last_checkpoint;
    let seq = state
        .units
        .iter()
        .find(|(_, u)| u.kind == UnitKind::Checkpoint && u.checkpoint == checkpoint)
        .map_or(0, |(_, u)| u.last_seq);
    state
        .units
        .iter()
        .filter(|(_, u)| !u.pending)
        .filter(|(_, u)| match u.kind {
            UnitKind::Checkpoint => u.checkpoint == checkpoint,
            UnitKind::Batch => u.last_seq > seq,
        })
        .any(|(_, u)| u.written_blobs().any(|(b, _)| away.contains(b)))
}

/// One checkpoint part as the snapshot is cut.
struct Part {
    records: Vec<(u64, Vec<u8>)>,
    last: bool,
    seq: u64,
    generation: u64,
    epoch: u64,
    journal: u64,
}

/// The journal's writer: one per gateway.
pub struct Journal {
    meta: MetaStore,
    recipients: Arc<Recipients>,
    placement: Arc<dyn Placement>,
    settings: JournalSettings,
    /// One step at a time (the loop's, or a flush).
    progress: Mutex<Progress>,
    stopping: AtomicBool,
    wake: Notify,
    /// With several gateways on one store, the journal is shipped by the
    /// one holding this lease ([`Journal::shared`]).
    lease: Option<Arc<LeaseKeeper>>,
}

/// The journal's lease.
pub const LEASE: &str = "journal";

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> shardgate_meta::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JournalError::Task(e.to_string()))?
        .map_err(JournalError::from)
}

impl Journal {
    pub fn new(
        meta: MetaStore,
        recipients: Arc<Recipients>,
        placement: Arc<dyn Placement>,
        settings: JournalSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            meta,
            recipients,
            placement,
            settings,
            progress: Mutex::new(Progress::default()),
            stopping: AtomicBool::new(false),
            wake: Notify::new(),
            lease: None,
        })
    }

    /// The journal of a store several gateways share: shipped by the one
    /// holding [`LEASE`] (taken through `keeper`, which renews it), whose
    /// every change to the journal's bookkeeping is fenced by it. So a
    /// gateway that stalled past the lease's term, and was taken over,
    /// cannot record a unit or delete the one its successor writes.
    pub fn shared(
        meta: MetaStore,
        recipients: Arc<Recipients>,
        placement: Arc<dyn Placement>,
        settings: JournalSettings,
        keeper: Arc<LeaseKeeper>,
    ) -> Arc<Self> {
        let mut journal = Self::new(meta.fenced_by(LEASE), recipients, placement, settings);
        if let Some(j) = Arc::get_mut(&mut journal) {
            j.lease = Some(keeper);
        }
        journal
    }

    /// Whether this gateway ships the journal now (always, alone on its
    /// store).
    async fn ships(&self) -> Result<bool> {
        let Some(keeper) = self.lease.clone() else {
            return Ok(true);
        };
        Ok(blocking(move || keeper.hold(LEASE)).await? == Hold::Held)
    }

    /// Ships every `interval` until [`Journal::stop`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let journal = self.clone();
        tokio::spawn(
            async move {
                // After a failure (a quorum out of reach), the next try
                // waits twice as long, up to MAX_BACKOFF.
                let mut failures = 0u32;
                while !journal.stopping.load(Ordering::Acquire) {
                    let wait = match journal.step().await {
                        Ok(()) => {
                            failures = 0;
                            journal.settings.interval
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            let wait = journal
                                .settings
                                .interval
                                .saturating_mul(1 << failures.min(16))
                                .min(MAX_BACKOFF);
                            tracing::warn!(error = %e, retry_in = ?wait, "journal: shipping failed; changes wait in the outbox");
                            wait
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = journal.wake.notified() => {}
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "journal")),
        )
    }

    /// Stops the loop, then ships what is left.
    pub async fn stop(&self, handle: tokio::task::JoinHandle<()>) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        self.wake.notify_one();
        let _ = handle.await;
        self.flush().await
    }

    /// Ships everything waiting now: the checkpoint that is due, then the
    /// outbox until it is empty.
    pub async fn flush(&self) -> Result<()> {
        if !self.ships().await? {
            // Another gateway ships it, and this one's changes with it.
            return Ok(());
        }
        // Bounded: 64 batches a step, 1024 steps (256 GiB at 4 MiB).
        for _ in 0..1024 {
            self.step().await?;
            let meta = self.meta.clone();
            if blocking(move || meta.journal_state()).await?.outbox_len == 0 {
                return Ok(());
            }
        }
        Err(JournalError::Recover(
            "the outbox kept filling while it was flushed".into(),
        ))
    }

    async fn step(&self) -> Result<()> {
        let mut progress = self.progress.lock().await;
        if !self.ships().await? {
            return Ok(());
        }
        let meta = self.meta.clone();
        let state = blocking(move || meta.journal_state()).await?;
        // Units left pending by a run that stopped mid-write: their
        // records are still in the outbox, their blobs go.
        let pending: Vec<_> = state
            .units
            .iter()
            .filter(|(_, u)| u.pending)
            .cloned()
            .collect();
        if !pending.is_empty() {
            self.delete_units(pending).await?;
        }
        let moving = progress
            .last_move
            .is_none_or(|t| t.elapsed() >= MOVE_PERIOD)
            && live_units_touch(&state, &self.placement.unavailable());
        if state.checkpoint_needed || moving {
            if moving {
                tracing::info!(
                    "journal: blobs on a backend drained or down; writing a checkpoint elsewhere"
                );
                progress.last_move = Some(std::time::Instant::now());
            }
            self.checkpoint(&mut progress).await?;
        }
        // Bounded: a busy store refills the outbox; the next tick goes on.
        for _ in 0..64 {
            if !self.ship_batch(&mut progress).await? {
                break;
            }
        }
        if progress.since_checkpoint
            >= progress
                .last_checkpoint
                .max(self.settings.min_checkpoint_bytes)
        {
            self.checkpoint(&mut progress).await?;
        }
        Ok(())
    }

    /// Ships one batch of the outbox; false when it was empty.
    async fn ship_batch(&self, progress: &mut Progress) -> Result<bool> {
        let meta = self.meta.clone();
        let max = self.settings.batch_bytes;
        let batch = blocking(move || meta.outbox(max)).await?;
        let (Some(first), Some(last)) = (batch.records.first(), batch.records.last()) else {
            return Ok(false);
        };
        let (first_seq, last_seq) = (first.0, last.0);
        let count = batch.records.len();
        let meta = self.meta.clone();
        let unit = blocking(move || meta.next_journal_unit()).await?;
        let info = UnitInfo {
            journal: batch.journal,
            epoch: batch.epoch,
            kind: UnitKind::Batch,
            unit,
            checkpoint: 0,
            part: 0,
            parts: 1,
            first_seq,
            last_seq,
        };
        let payload = Payload {
            info,
            generation: batch.generation,
            records: batch.records,
        }
        .encode()?;
        let bytes = payload.len() as u64;
        let record = self.write_unit(info, payload).await?;
        let meta = self.meta.clone();
        blocking(move || meta.record_unit(unit, &record, Some(last_seq))).await?;
        progress.since_checkpoint += bytes;
        tracing::debug!(unit, first_seq, last_seq, count, "journal batch shipped");
        Ok(true)
    }

    /// Writes every live row as a new checkpoint, then deletes what it
    /// makes useless. Parts are cut as the snapshot is read; the last one
    /// says how many there are (`parts`; 0 on the others).
    async fn checkpoint(&self, progress: &mut Progress) -> Result<()> {
        let meta = self.meta.clone();
        let part_bytes = self.settings.batch_bytes;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Part>>(1);
        let reader = tokio::task::spawn_blocking(move || {
            let cut = || -> Result<()> {
                let mut snapshot = meta.snapshot()?;
                let (seq, generation, epoch, journal) = (
                    snapshot.seq,
                    snapshot.generation,
                    snapshot.epoch,
                    snapshot.journal,
                );
                let part = |rows: Vec<shardgate_meta::RowImage>, last| -> Result<Part> {
                    let records = rows
                        .iter()
                        .map(|r| Ok((seq, r.encode()?)))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Part {
                        records,
                        last,
                        seq,
                        generation,
                        epoch,
                        journal,
                    })
                };
                let mut pending = snapshot.next_chunk(part_bytes)?;
                loop {
                    let next = snapshot.next_chunk(part_bytes)?;
                    let last = next.is_empty();
                    if tx.blocking_send(Ok(part(pending, last)?)).is_err() {
                        return Ok(());
                    }
                    if last {
                        return Ok(());
                    }
                    pending = next;
                }
            };
            if let Err(e) = cut() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut checkpoint = 0;
        let mut saw_last = false;
        let mut part = 0u32;
        let mut total = 0u64;
        let mut seq = 0;
        while let Some(item) = rx.recv().await {
            let Part {
                records,
                last,
                seq: at,
                generation,
                epoch,
                journal,
            } = item?;
            seq = at;
            let meta = self.meta.clone();
            let unit = blocking(move || meta.next_journal_unit()).await?;
            if part == 0 {
                checkpoint = unit;
            }
            let info = UnitInfo {
                journal,
                epoch,
                kind: UnitKind::Checkpoint,
                unit,
                checkpoint,
                part,
                parts: if last { part + 1 } else { 0 },
                first_seq: 0,
                last_seq: at,
            };
            let payload = Payload {
                info,
                generation,
                records,
            }
            .encode()?;
            total += payload.len() as u64;
            let record = self.write_unit(info, payload).await?;
            let meta = self.meta.clone();
            blocking(move || meta.record_unit(unit, &record, None)).await?;
            part += 1;
            if last {
                saw_last = true;
                break;
            }
        }
        reader
            .await
            .map_err(|e| JournalError::Task(format!("the checkpoint's snapshot: {e}")))?;
        // Only a checkpoint whose last part is written may replace the
        // older ones (a recovery cannot use one without it).
        if !saw_last {
            return Err(JournalError::Task(
                "the checkpoint's snapshot ended before its last part".into(),
            ));
        }
        let meta = self.meta.clone();
        let stale = blocking(move || meta.complete_checkpoint(checkpoint, seq)).await?;
        tracing::info!(
            checkpoint,
            parts = part,
            bytes = total,
            seq,
            "journal checkpoint written"
        );
        progress.since_checkpoint = 0;
        progress.last_checkpoint = total;
        self.delete_units(stale).await
    }

    /// Deletes the blobs of units a checkpoint made useless; a unit whose
    /// blobs could not all be deleted stays recorded (tried again after
    /// the next checkpoint).
    async fn delete_units(&self, units: Vec<(u64, UnitRecord)>) -> Result<()> {
        let mut gone = Vec::new();
        for (unit, record) in units {
            let mut all = true;
            for (backend, blob) in &record.blobs {
                let Some(b) = self.placement.backend(backend) else {
                    continue;
                };
                match b.delete(blob).await {
                    Ok(()) | Err(shardgate_backend::BackendError::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::debug!(%backend, %blob, error = %e, "journal blob not deleted yet");
                        all = false;
                    }
                }
            }
            if all {
                gone.push(unit);
            }
        }
        let meta = self.meta.clone();
        blocking(move || meta.forget_units(&gone)).await
    }

    /// Seals, encodes and writes one unit; its record once the quorum
    /// holds.
    async fn write_unit(&self, info: UnitInfo, payload: Vec<u8>) -> Result<UnitRecord> {
        let place = self
            .placement
            .place_unit(payload.len() as u64)
            .map_err(JournalError::Placement)?;
        let recipients = self.recipients.clone();
        let (k, m) = (place.k, place.m);
        let blobs =
            tokio::task::spawn_blocking(move || seal_unit(&recipients, info, k, m, &payload))
                .await
                .map_err(|e| JournalError::Task(e.to_string()))??;
        let names: Vec<_> = blobs.iter().map(|_| blob_name()).collect();
        let width = names.len();
        let mut record = UnitRecord {
            kind: info.kind,
            checkpoint: info.checkpoint,
            last_seq: info.last_seq,
            blobs: place
                .backends
                .iter()
                .map(|b| b.id().clone())
                .zip(names.iter().cloned())
                .collect(),
            written: vec![false; width],
            pending: true,
        };
        // Recorded before a byte is written: blobs of a write that a stop
        // or a failure interrupts are known, and deleted (`step`).
        let (meta, pending) = (self.meta.clone(), record.clone());
        blocking(move || meta.record_unit(info.unit, &pending, None)).await?;
        let timeout = self.settings.write_timeout;
        let mut writes: futures::stream::FuturesUnordered<_> = place
            .backends
            .iter()
            .zip(&names)
            .zip(blobs)
            .enumerate()
            .map(|(i, ((b, name), blob))| {
                let b = b.clone();
                async move {
                    let ok = match tokio::time::timeout(timeout, b.put(name, Bytes::from(blob))).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => {
                            tracing::debug!(backend = %b.id(), error = %e, "journal blob not written");
                            false
                        }
                        Err(_) => false,
                    };
                    (i, ok)
                }
            })
            .collect();
        // Once the quorum holds, the others get QUORUM_GRACE more: a
        // backend that hangs must not hold the journal up.
        let mut written = 0;
        let mut grace: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace {
                Some(until) => match tokio::time::timeout_at(until, writes.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => writes.next().await,
            };
            let Some((i, ok)) = next else { break };
            if ok {
                record.written[i] = true;
                written += 1;
                if written >= place.quorum && grace.is_none() {
                    grace = Some(tokio::time::Instant::now() + QUORUM_GRACE);
                }
            }
        }
        drop(writes);
        if written < place.quorum {
            // The unit stays pending: the next step deletes its blobs.
            return Err(JournalError::Quorum {
                written,
                needed: place.quorum,
            });
        }
        record.pending = false;
        Ok(record)
    }
}
