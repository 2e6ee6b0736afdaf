//! Rebuilds a metadata store from the journal blobs on the backends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use shardgate_backend::Backend;
use shardgate_core::journal::{
    FragmentHeader, HEADER_BYTES, Payload, UnitKind, is_journal_blob, open_unit, parse_blob,
    parse_header,
};
use shardgate_core::{BlobName, Identities};
use shardgate_meta::{MetaStore, RowImage, UnitRecord};

use crate::error::{JournalError, Result};

/// What recovery is doing, for a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Listing backends (done, total: backends).
    Listing,
    /// Reading journal blobs' headers (blobs).
    Headers,
    /// Reading, opening and replaying units (units).
    Replaying,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Backends whose listing failed (down or gone).
    pub unreachable_backends: Vec<String>,
    pub journal_blobs: usize,
    /// Blobs whose header or digest did not check.
    pub damaged_blobs: usize,
    /// The checkpoint replayed (its number), and the journal sequence it
    /// holds rows as of.
    pub checkpoint: Option<u64>,
    pub checkpoint_seq: u64,
    pub checkpoint_rows: u64,
    /// Newer checkpoints that could not be read (fewer than k blobs of a
    /// part), passed over for an older one.
    pub checkpoints_passed_over: usize,
    pub batches: usize,
    pub records: u64,
    /// Journal sequence numbers after the checkpoint that no readable
    /// batch holds: changes lost.
    pub gaps: Vec<(u64, u64)>,
}

/// One unit's blobs as found.
#[derive(Clone, Debug)]
struct Unit {
    header: FragmentHeader,
    blobs: Vec<(Arc<dyn Backend>, BlobName)>,
}

/// Rebuilds the store at `path` (which must not exist) from the journal
/// blobs on `backends`, opened with any of `identities`. `progress` is
/// called with (phase, done, total).
pub async fn recover(
    backends: &[Arc<dyn Backend>],
    identities: &Identities,
    path: &Path,
    progress: &(dyn Fn(Phase, u64, u64) + Sync),
) -> Result<Report> {
    let mut report = Report::default();
    // Listing: every journal blob of every backend that answers.
    let total = backends.len() as u64;
    let mut found: Vec<(Arc<dyn Backend>, BlobName)> = Vec::new();
    let lists = futures::stream::iter(backends.iter().cloned())
        .map(|b| async move {
            let listed: std::result::Result<Vec<_>, _> = b.list().try_collect().await;
            (b, listed)
        })
        .buffer_unordered(8);
    futures::pin_mut!(lists);
    let mut listed = 0;
    while let Some((b, result)) = lists.next().await {
        listed += 1;
        progress(Phase::Listing, listed, total);
        match result {
            Ok(blobs) => found.extend(
                blobs
                    .into_iter()
                    .filter(|m| is_journal_blob(&m.name))
                    .map(|m| (b.clone(), m.name)),
            ),
            Err(e) => {
                tracing::warn!(backend = %b.id(), error = %e, "recover: listing failed");
                report.unreachable_backends.push(b.id().to_string());
            }
        }
    }
    report.journal_blobs = found.len();
    if found.is_empty() {
        return Err(JournalError::Recover(format!(
            "no journal blob on the {} backends listed ({} could not be)",
            backends.len() - report.unreachable_backends.len(),
            report.unreachable_backends.len()
        )));
    }

    // Headers: group the blobs by unit.
    let total = found.len() as u64;
    let heads = futures::stream::iter(found)
        .map(|(b, name)| async move {
            let head = b.get(&name, 0..HEADER_BYTES as u64).await;
            (b, name, head)
        })
        .buffer_unordered(32);
    futures::pin_mut!(heads);
    let mut units: BTreeMap<u64, Unit> = BTreeMap::new();
    let mut read = 0;
    while let Some((b, name, head)) = heads.next().await {
        read += 1;
        progress(Phase::Headers, read, total);
        let header = match head
            .map_err(|e| e.to_string())
            .and_then(|h| parse_header(&h).map(|(h, _)| h).map_err(|e| e.to_string()))
        {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(backend = %b.id(), blob = %name, error = %e, "recover: a journal blob is unreadable");
                report.damaged_blobs += 1;
                continue;
            }
        };
        units
            .entry(header.info.unit)
            .or_insert_with(|| Unit {
                header,
                blobs: Vec::new(),
            })
            .blobs
            .push((b, name));
    }

    // The checkpoints, newest first: each part's unit, by part.
    let mut checkpoints: BTreeMap<u64, BTreeMap<u32, u64>> = BTreeMap::new();
    let mut parts_of: BTreeMap<u64, u32> = BTreeMap::new();
    for (number, unit) in &units {
        let info = unit.header.info;
        if info.kind == UnitKind::Checkpoint {
            checkpoints
                .entry(info.checkpoint)
                .or_default()
                .insert(info.part, *number);
            if info.parts > 0 {
                parts_of.insert(info.checkpoint, info.parts);
            }
        }
    }
    let mut candidates: Vec<(u64, u64)> = checkpoints
        .iter()
        .filter(|(c, parts)| {
            parts_of
                .get(c)
                .is_some_and(|n| (0..*n).all(|p| parts.contains_key(&p)))
        })
        .filter_map(|(c, parts)| {
            let first = parts.values().next()?;
            Some((units[first].header.info.last_seq, *c))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));

    let max_seq = units
        .values()
        .map(|u| u.header.info.last_seq)
        .max()
        .unwrap_or(0);
    let mut generation = 0;
    let mut store = None;
    for (seq, checkpoint) in &candidates {
        let parts = &checkpoints[checkpoint];
        let total = (parts.len() + batches_after(&units, *seq).len()) as u64;
        let target = fresh_store(path)?;
        let mut rows = 0u64;
        let mut failed = None;
        for (i, unit) in parts.values().enumerate() {
            progress(Phase::Replaying, i as u64, total);
            match read_unit(&units[unit], identities).await {
                Ok(payload) => {
                    generation = generation.max(payload.generation);
                    let images = decode_rows(&payload)?;
                    rows += images.len() as u64;
                    blocking(&target, move |t| t.restore(&images)).await?;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                report.checkpoint = Some(*checkpoint);
                report.checkpoint_seq = *seq;
                report.checkpoint_rows = rows;
                store = Some(target);
                break;
            }
            Some(e) => {
                if wrong_identity(&e) {
                    return Err(no_identity());
                }
                tracing::warn!(checkpoint, error = %e, "recover: a checkpoint is unreadable; trying an older one");
                report.checkpoints_passed_over += 1;
                drop(target);
                std::fs::remove_file(path).map_err(|e| JournalError::Recover(e.to_string()))?;
            }
        }
    }
    let store = match store {
        Some(s) => s,
        // No checkpoint: only batches, from the first record on.
        None => fresh_store(path)?,
    };

    // The batches after the checkpoint, in order; a record replayed once.
    let after = batches_after(&units, report.checkpoint_seq);
    let done_before = report.checkpoint.map_or(0, |c| checkpoints[&c].len()) as u64;
    let total = done_before + after.len() as u64;
    let mut applied = report.checkpoint_seq;
    for (i, number) in after.iter().enumerate() {
        progress(Phase::Replaying, done_before + i as u64, total);
        let unit = &units[number];
        let payload = match read_unit(unit, identities).await {
            Ok(p) => p,
            Err(e) if wrong_identity(&e) => return Err(no_identity()),
            Err(e) => {
                tracing::warn!(unit = number, error = %e, "recover: a batch is unreadable");
                continue;
            }
        };
        generation = generation.max(payload.generation);
        let mut images = Vec::new();
        for (seq, bytes) in &payload.records {
            if *seq <= applied {
                continue;
            }
            if *seq > applied + 1 {
                report.gaps.push((applied + 1, seq - 1));
            }
            images.push(RowImage::decode(bytes)?);
            applied = *seq;
        }
        report.batches += 1;
        report.records += images.len() as u64;
        blocking(&store, move |t| t.restore(&images)).await?;
    }
    if max_seq > applied {
        report.gaps.push((applied + 1, max_seq));
    }
    progress(Phase::Replaying, total, total);

    let found: Vec<(u64, UnitRecord)> = units
        .iter()
        .map(|(n, u)| {
            (
                *n,
                UnitRecord {
                    kind: u.header.info.kind,
                    checkpoint: u.header.info.checkpoint,
                    last_seq: u.header.info.last_seq,
                    blobs: u
                        .blobs
                        .iter()
                        .map(|(b, name)| (b.id().clone(), name.clone()))
                        .collect(),
                },
            )
        })
        .collect();
    blocking(&store, move |t| {
        t.finish_restore(generation, max_seq, &found)
    })
    .await?;
    Ok(report)
}

fn wrong_identity(e: &JournalError) -> bool {
    matches!(
        e,
        JournalError::Core(shardgate_core::CoreError::NoMatchingIdentity)
    )
}

fn no_identity() -> JournalError {
    JournalError::Recover(
        "this identity opens none of the journal: give the gateway's identity or the recovery key"
            .into(),
    )
}

/// Batches holding records after `seq`, by their first record.
fn batches_after(units: &BTreeMap<u64, Unit>, seq: u64) -> Vec<u64> {
    let mut batches: Vec<(u64, u64)> = units
        .iter()
        .filter(|(_, u)| u.header.info.kind == UnitKind::Batch && u.header.info.last_seq > seq)
        .map(|(n, u)| (u.header.info.first_seq, *n))
        .collect();
    batches.sort_unstable();
    batches.into_iter().map(|(_, n)| n).collect()
}

fn fresh_store(path: &Path) -> Result<MetaStore> {
    let store = MetaStore::open(path)?;
    if !store.is_empty()? {
        return Err(JournalError::Recover(format!(
            "{} already holds metadata",
            path.display()
        )));
    }
    Ok(store)
}

async fn blocking<T: Send + 'static>(
    store: &MetaStore,
    f: impl FnOnce(&MetaStore) -> shardgate_meta::Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| JournalError::Task(e.to_string()))?
        .map_err(JournalError::from)
}

fn decode_rows(payload: &Payload) -> Result<Vec<RowImage>> {
    Ok(payload
        .records
        .iter()
        .map(|(_, bytes)| RowImage::decode(bytes))
        .collect::<shardgate_meta::Result<_>>()?)
}

/// Reads a unit's blobs, checks them, and opens the payload from any k.
async fn read_unit(unit: &Unit, identities: &Identities) -> Result<Payload> {
    let reads = unit.blobs.iter().map(|(b, name)| async move {
        let size = b.stat(name).await.ok()?.size;
        b.get(name, 0..size).await.ok()
    });
    let blobs: Vec<_> = futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    let shards: Vec<_> = blobs.iter().filter_map(|b| parse_blob(b).ok()).collect();
    let distinct: BTreeSet<u8> = shards.iter().map(|(h, _)| h.index).collect();
    if distinct.len() < usize::from(unit.header.k) {
        return Err(JournalError::Recover(format!(
            "unit {}: {} of the {} blobs needed are readable",
            unit.header.info.unit,
            distinct.len(),
            unit.header.k
        )));
    }
    let identities = identities.clone();
    let plain = tokio::task::spawn_blocking(move || {
        let shards: Vec<_> = blobs.iter().filter_map(|b| parse_blob(b).ok()).collect();
        open_unit(&identities, &shards)
    })
    .await
    .map_err(|e| JournalError::Task(e.to_string()))??;
    Ok(Payload::decode(&plain)?)
}
