//! Rebuilds a metadata store from the journal blobs on the backends.
//!
//! A blob's header is not sealed, so it only tells where to look: blobs
//! are grouped by everything their headers say but the index, a unit is
//! taken from the first group that opens with the identity and whose
//! sealed copy of the header (`Payload::info`) matches, and only opened
//! units decide what is replayed and where the numbering goes on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use shardgate_backend::Backend;
use shardgate_core::journal::{
    FragmentHeader, HEADER_BYTES, Payload, UnitInfo, UnitKind, is_journal_blob, open_unit,
    parse_blob, parse_header,
};
use shardgate_core::{BlobName, CoreError, Identities};
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
    /// Blobs whose header did not parse.
    pub damaged_blobs: usize,
    /// The checkpoint replayed (its epoch and number), and the journal
    /// sequence number it holds rows as of.
    pub checkpoint: Option<(u64, u64)>,
    pub checkpoint_seq: u64,
    pub checkpoint_rows: u64,
    /// Newer checkpoints that could not be read, passed over.
    pub checkpoints_passed_over: usize,
    pub batches: usize,
    pub records: u64,
    /// Batches after the checkpoint that could not be opened.
    pub unreadable_units: usize,
    /// Units this identity does not open (another gateway's, or forged).
    pub foreign_units: usize,
    /// Journal sequence numbers after the checkpoint that no readable
    /// batch holds: changes lost.
    pub gaps: Vec<(u64, u64)>,
    /// The epoch of the checkpoint read while recovering; at the end, the
    /// epoch the recovered store's journal starts.
    pub epoch: u64,
    /// The journal recovered (its id), and the others seen on the
    /// backends (other gateways').
    pub journal: u64,
    pub other_journals: Vec<u64>,
}

impl Report {
    /// Whether anything known to the journal may be missing from the
    /// store: a gap, a checkpoint passed over, a unit unread, a backend
    /// not listed (it may hold the only copies of a unit).
    pub fn losses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.checkpoint.is_none() {
            out.push("no checkpoint could be read".to_string());
        }
        if !self.gaps.is_empty() {
            let lost: u64 = self
                .gaps
                .iter()
                .map(|(a, b)| b.saturating_sub(*a).saturating_add(1))
                .sum();
            out.push(format!("{lost} journaled changes could not be read"));
        }
        if self.checkpoints_passed_over > 0 {
            out.push(format!(
                "{} newer checkpoints could not be read",
                self.checkpoints_passed_over
            ));
        }
        if self.unreadable_units > 0 {
            out.push(format!(
                "{} batches could not be opened",
                self.unreadable_units
            ));
        }
        if self.damaged_blobs > 0 {
            out.push(format!(
                "{} journal blobs had unreadable headers",
                self.damaged_blobs
            ));
        }
        if !self.unreachable_backends.is_empty() {
            out.push(format!(
                "backends not listed: {}",
                self.unreachable_backends.join(", ")
            ));
        }
        out
    }
}

/// Everything a header says but the blob's index.
type GroupKey = (UnitInfo, u8, u8, u64, [u8; 32]);

/// Blobs whose headers agree.
#[derive(Clone, Debug)]
struct Group {
    header: FragmentHeader,
    blobs: Vec<(Arc<dyn Backend>, BlobName, u8)>,
}

impl Group {
    fn indices(&self) -> usize {
        self.blobs
            .iter()
            .map(|(_, _, i)| *i)
            .collect::<BTreeSet<_>>()
            .len()
    }

    fn record(&self) -> UnitRecord {
        UnitRecord {
            kind: self.header.info.kind,
            checkpoint: self.header.info.checkpoint,
            last_seq: self.header.info.last_seq,
            blobs: self
                .blobs
                .iter()
                .map(|(b, name, _)| (b.id().clone(), name.clone()))
                .collect(),
            written: Vec::new(),
            pending: false,
        }
    }
}

/// The groups of one unit (epoch, number), the largest first.
#[derive(Clone, Debug, Default)]
struct Unit {
    groups: Vec<Group>,
}

impl Unit {
    /// What the largest group claims.
    fn claim(&self) -> Option<UnitInfo> {
        self.groups.first().map(|g| g.header.info)
    }
}

/// A unit's place: (journal id, epoch, number).
type UnitId = (u64, u64, u64);

/// Rebuilds the store at `path` (which must not exist) from the journal
/// blobs on `backends`, opened with any of `identities`: the journal
/// `journal` names, or the one whose newest checkpoint opens. `progress`
/// is called with (phase, done, total).
pub async fn recover(
    backends: &[Arc<dyn Backend>],
    identities: &Identities,
    journal: Option<u64>,
    path: &Path,
    progress: &(dyn Fn(Phase, u64, u64) + Sync),
) -> Result<Report> {
    let mut report = Report::default();
    let found = list(backends, &mut report, progress).await;
    report.journal_blobs = found.len();
    if found.is_empty() {
        return Err(JournalError::Recover(format!(
            "no journal blob on the {} backends listed ({} could not be)",
            backends.len() - report.unreachable_backends.len(),
            report.unreachable_backends.len()
        )));
    }
    let mut units = group(found, &mut report, progress).await;
    if let Some(j) = journal {
        units.retain(|(id, _, _), _| *id == j);
    }

    // Complete checkpoints (as claimed), the newest first: keyed (journal,
    // epoch, checkpoint).
    let mut parts: BTreeMap<UnitId, BTreeMap<u32, UnitId>> = BTreeMap::new();
    let mut parts_of: BTreeMap<UnitId, u32> = BTreeMap::new();
    for (id, unit) in &units {
        let Some(info) = unit.claim() else { continue };
        if info.kind == UnitKind::Checkpoint {
            let at = (info.journal, info.epoch, info.checkpoint);
            parts.entry(at).or_default().insert(info.part, *id);
            if info.parts > 0 {
                parts_of.insert(at, info.parts);
            }
        }
    }
    let mut candidates: Vec<((u64, u64), UnitId)> = parts
        .iter()
        .filter(|(c, p)| {
            parts_of
                .get(c)
                .is_some_and(|n| (0..*n).all(|i| p.contains_key(&i)))
        })
        .filter_map(|(c, p)| {
            let seq = units[p.values().next()?].claim()?.last_seq;
            Some(((c.1, seq), *c))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));

    let mut generation = 0;
    let mut opened: BTreeMap<UnitId, UnitRecord> = BTreeMap::new();
    let mut store = None;
    for ((epoch, seq), checkpoint) in &candidates {
        let wanted: Vec<UnitId> = parts[checkpoint]
            .range(..parts_of[checkpoint])
            .map(|(_, id)| *id)
            .collect();
        let total = wanted.len() as u64;
        let target = fresh_store(path)?;
        let mut rows = 0u64;
        let mut failed = None;
        let mut read = Vec::new();
        for (i, id) in wanted.iter().enumerate() {
            progress(Phase::Replaying, i as u64, total);
            match read_unit(&units[id], identities).await {
                Ok((payload, group)) => {
                    generation = generation.max(payload.generation);
                    let images = decode_rows(&payload)?;
                    rows += images.len() as u64;
                    blocking(&target, move |t| t.restore(&images)).await?;
                    read.push((*id, group.record()));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => {
                report.checkpoint = Some((checkpoint.1, checkpoint.2));
                report.checkpoint_seq = *seq;
                report.checkpoint_rows = rows;
                report.epoch = *epoch;
                report.journal = checkpoint.0;
                opened.extend(read);
                store = Some(target);
                break;
            }
            Some(e) => {
                // Another gateway's (or a forged one): not a loss.
                match is_foreign(&e) {
                    true => report.foreign_units += 1,
                    false => report.checkpoints_passed_over += 1,
                }
                tracing::warn!(?checkpoint, error = %e, "recover: a checkpoint is unreadable; trying an older one");
                drop(target);
                std::fs::remove_file(path).map_err(|e| JournalError::Recover(e.to_string()))?;
            }
        }
    }
    let store = match store {
        Some(s) => s,
        // No checkpoint: the batches of the journal with the most units
        // (or the one named), newest epoch, from the first.
        None => {
            let mut count: BTreeMap<u64, usize> = BTreeMap::new();
            for (j, _, _) in units.keys() {
                *count.entry(*j).or_default() += 1;
            }
            report.journal = count.iter().max_by_key(|(_, n)| **n).map_or(0, |(j, _)| *j);
            report.epoch = units
                .keys()
                .filter(|(j, _, _)| *j == report.journal)
                .map(|(_, e, _)| *e)
                .max()
                .unwrap_or(0);
            fresh_store(path)?
        }
    };
    let ours = report.journal;
    report.other_journals = units
        .keys()
        .map(|(j, _, _)| *j)
        .filter(|j| *j != ours)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    // The checkpoint's epoch's batches after it, in order; a record once.
    let (epoch, after_seq) = (report.epoch, report.checkpoint_seq);
    let mut batches: Vec<(u64, UnitId)> = units
        .iter()
        .filter_map(|(id, u)| Some((*id, u.claim()?)))
        .filter(|(_, info)| {
            info.journal == ours
                && info.kind == UnitKind::Batch
                && info.epoch == epoch
                && info.last_seq > after_seq
        })
        .map(|(id, info)| (info.first_seq, id))
        .collect();
    batches.sort_unstable();
    let done_before = report
        .checkpoint
        .map_or(0, |(e, c)| parts_of[&(ours, e, c)]) as u64;
    let total = done_before + batches.len() as u64;
    let mut applied = after_seq;
    for (i, (_, id)) in batches.iter().enumerate() {
        progress(Phase::Replaying, done_before + i as u64, total);
        let (payload, group) = match read_unit(&units[id], identities).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(unit = ?id, error = %e, "recover: a batch is unreadable");
                match is_foreign(&e) {
                    true => report.foreign_units += 1,
                    false => report.unreadable_units += 1,
                }
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
        opened.insert(*id, group.record());
    }
    // A lost tail shows as batches that could not be opened (or as a
    // backend not listed): headers are not trusted for where it ends.
    progress(Phase::Replaying, total, total);
    if opened.is_empty() && report.foreign_units > 0 {
        drop(store);
        let _ = std::fs::remove_file(path);
        return Err(JournalError::Recover(
            "this identity opens none of the journal: give the gateway's identity or the recovery key"
                .into(),
        ));
    }

    // Units to delete once the new store's first checkpoint is written:
    // those replayed, and those it supersedes. A unit after the
    // checkpoint that could not be read stays where it is.
    let checkpoint = report.checkpoint.map_or(0, |c| c.1);
    let mut records: Vec<(u64, UnitRecord)> = opened
        .iter()
        .map(|((_, _, n), r)| (*n, r.clone()))
        .collect();
    for ((j, e, n), unit) in &units {
        let (Some(info), Some(group)) = (unit.claim(), unit.groups.first()) else {
            continue;
        };
        if *j != ours {
            continue;
        }
        let superseded = report.checkpoint.is_some()
            && (*e < epoch
                || (*e == epoch
                    && match info.kind {
                        UnitKind::Batch => info.last_seq <= after_seq,
                        UnitKind::Checkpoint => info.checkpoint < checkpoint,
                    }));
        if superseded && !opened.contains_key(&(*j, *e, *n)) {
            records.push((*n, group.record()));
        }
    }
    // Past every epoch and unit number this journal's headers name, read
    // or not: a later run never reuses them.
    let mine = || units.keys().filter(|(j, _, _)| *j == ours);
    let next_epoch = mine()
        .map(|(_, e, _)| *e)
        .max()
        .unwrap_or(epoch)
        .saturating_add(1);
    let last_unit = mine().map(|(_, _, n)| *n).max().unwrap_or(0);
    report.epoch = next_epoch;
    let seq = applied.max(after_seq);
    blocking(&store, move |t| {
        t.finish_restore(generation, ours, next_epoch, seq, last_unit, &records)
    })
    .await?;
    Ok(report)
}

/// Every journal blob of every backend that answers.
async fn list(
    backends: &[Arc<dyn Backend>],
    report: &mut Report,
    progress: &(dyn Fn(Phase, u64, u64) + Sync),
) -> Vec<(Arc<dyn Backend>, BlobName)> {
    let total = backends.len() as u64;
    let mut found = Vec::new();
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
    found
}

/// Reads every blob's header and groups the blobs by unit.
async fn group(
    found: Vec<(Arc<dyn Backend>, BlobName)>,
    report: &mut Report,
    progress: &(dyn Fn(Phase, u64, u64) + Sync),
) -> BTreeMap<UnitId, Unit> {
    let total = found.len() as u64;
    let heads = futures::stream::iter(found)
        .map(|(b, name)| async move {
            let head = b.get(&name, 0..HEADER_BYTES as u64).await;
            (b, name, head)
        })
        .buffer_unordered(32);
    futures::pin_mut!(heads);
    let mut groups: HashMap<GroupKey, Group> = HashMap::new();
    let mut read = 0;
    while let Some((b, name, head)) = heads.next().await {
        read += 1;
        progress(Phase::Headers, read, total);
        let parsed = head
            .map_err(|e| e.to_string())
            .and_then(|h| parse_header(&h).map(|(h, _)| h).map_err(|e| e.to_string()));
        let header = match parsed {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(backend = %b.id(), blob = %name, error = %e, "recover: a journal blob is unreadable");
                report.damaged_blobs += 1;
                continue;
            }
        };
        let key = (
            header.info,
            header.k,
            header.m,
            header.cipher_len,
            header.unit_digest,
        );
        groups
            .entry(key)
            .or_insert_with(|| Group {
                header,
                blobs: Vec::new(),
            })
            .blobs
            .push((b, name, header.index));
    }
    let mut units: BTreeMap<UnitId, Unit> = BTreeMap::new();
    for group in groups.into_values() {
        let info = group.header.info;
        units
            .entry((info.journal, info.epoch, info.unit))
            .or_default()
            .groups
            .push(group);
    }
    for unit in units.values_mut() {
        unit.groups.sort_by_key(|g| std::cmp::Reverse(g.indices()));
    }
    units
}

fn is_foreign(e: &JournalError) -> bool {
    matches!(e, JournalError::Core(CoreError::NoMatchingIdentity))
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

/// Opens a unit from the first of its groups that opens and whose sealed
/// header matches the blobs'.
async fn read_unit<'a>(unit: &'a Unit, identities: &Identities) -> Result<(Payload, &'a Group)> {
    let mut last = JournalError::Recover("no group of blobs".into());
    // Only groups that make the unit's claim: another group of the same
    // place (a forgery) is never read in its stead.
    let claim = unit.claim();
    for group in unit.groups.iter().filter(|g| Some(g.header.info) == claim) {
        if group.indices() < usize::from(group.header.k) {
            last = JournalError::Recover(format!(
                "unit {}: {} of the {} blobs needed are readable",
                group.header.info.unit,
                group.indices(),
                group.header.k
            ));
            continue;
        }
        match read_group(group, identities).await {
            Ok(payload) if payload.info == group.header.info => return Ok((payload, group)),
            Ok(_) => {
                last = JournalError::Recover(format!(
                    "unit {}: its sealed header is not the blobs'",
                    group.header.info.unit
                ));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reads a group's blobs, checks them, and opens the payload from any k.
async fn read_group(group: &Group, identities: &Identities) -> Result<Payload> {
    let reads = group.blobs.iter().map(|(b, name, _)| async move {
        let size = b.stat(name).await.ok()?.size;
        // A journal blob is a shard of at most a few MiB: a larger one
        // is not ours.
        if size > (1 << 30) {
            return None;
        }
        b.get(name, 0..size).await.ok()
    });
    let blobs: Vec<_> = futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    let identities = identities.clone();
    let plain = tokio::task::spawn_blocking(move || {
        let shards: Vec<_> = blobs.iter().filter_map(|b| parse_blob(b).ok()).collect();
        open_unit(&identities, &shards)
    })
    .await
    .map_err(|e| JournalError::Task(e.to_string()))??;
    Ok(Payload::decode(&plain)?)
}
