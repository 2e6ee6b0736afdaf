//! Garbage: blobs that no version references any more, one work item per
//! (backend, blob).
//!
//! Why items and not entries per change: an entry that names the blobs of a
//! whole version ends only when every delete in it succeeds, so one failed
//! backend held up every entry that touched it, and, read in id order, every
//! entry after those. Here each blob is its own item, kept in its backend's
//! own queue ordered by when it is due: the collector of one backend reads
//! only that backend's range, a failed delete pushes only its own item back
//! (with backoff), and a backend that is down or gone is simply not read.
//!
//! Tables (keys never contain 0x00 but as the separator: backend ids and
//! blob names are `[A-Za-z0-9._-]`):
//! - `garbage_due`: `backend 0x00 due_ms(be64) blob` -> [`ItemRecord`];
//! - `garbage_age`: `backend 0x00 added_ms(be64) blob` -> empty: the oldest
//!   item of a backend is its first key (the metric "oldest age");
//! - `garbage_totals`: `backend` -> [`Totals`]: items and bytes waiting,
//!   kept in the transactions that add and remove items.

use std::ops::{Bound, ControlFlow};

use serde::{Deserialize, Serialize};
use shardgate_core::{BackendId, BlobName, VersionId};

use crate::error::{MetaError, Result};
use crate::journal;
use crate::keys;
use crate::kv::{self, ALL_KEYS, KeyRange, KvRead, KvReadExt, KvWrite, Table};
use crate::store::{
    MetaStore, decode, encode, encode_as, postcard_body, split_format, unknown_format,
};

const DUE: Table = kv::tables::GARBAGE_DUE;
const AGE: Table = kv::tables::GARBAGE_AGE;
const TOTALS: Table = kv::tables::GARBAGE_TOTALS;

/// A stored item (record format 2; format 1 had no `journal_seq`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ItemRecord {
    /// The version the blob belonged to, if it was ever visible: while a
    /// reader streams that version, the blob is kept.
    pub version: Option<VersionId>,
    pub added_unix_ms: u64,
    /// Deletes tried and failed so far.
    pub attempts: u32,
    /// The blob's size when known (0 for blobs of writes that never
    /// committed).
    pub bytes: u64,
    /// The manifest journal's last record when the item was added (0:
    /// none). The blob is kept until the journal has shipped it: until
    /// then a recovery could bring back the manifest that names it.
    pub journal_seq: u64,
}

const ITEM_FORMAT: u8 = 2;

/// Format 1 of [`ItemRecord`].
#[derive(Deserialize)]
struct ItemRecordV1 {
    version: Option<VersionId>,
    added_unix_ms: u64,
    attempts: u32,
    bytes: u64,
}

fn encode_item(record: &ItemRecord) -> Result<Vec<u8>> {
    encode_as(ITEM_FORMAT, record)
}

fn decode_item(bytes: &[u8]) -> Result<ItemRecord> {
    const WHAT: &str = "garbage item";
    match split_format(WHAT, bytes)? {
        (1, body) => {
            let v1: ItemRecordV1 = postcard_body(WHAT, body)?;
            Ok(ItemRecord {
                version: v1.version,
                added_unix_ms: v1.added_unix_ms,
                attempts: v1.attempts,
                bytes: v1.bytes,
                // Written before items knew the journal, by releases that
                // had none: nothing to wait for.
                journal_seq: 0,
            })
        }
        (ITEM_FORMAT, body) => postcard_body(WHAT, body),
        (v, _) => Err(unknown_format(WHAT, v)),
    }
}

/// Items and bytes waiting on one backend (record format 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub items: u64,
    pub bytes: u64,
}

/// One blob to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageItem {
    pub backend: BackendId,
    pub blob: BlobName,
    /// Not to be deleted before this time (ms since the epoch).
    pub due_unix_ms: u64,
    pub version: Option<VersionId>,
    pub added_unix_ms: u64,
    pub attempts: u32,
    pub bytes: u64,
}

/// What the collector did with an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The blob is gone (deleted now, or not found): the item ends.
    Deleted,
    /// The delete failed: try again at this time, one attempt more.
    Failed { retry_unix_ms: u64 },
    /// Not tried (its version is being read): look again at this time.
    Postponed { retry_unix_ms: u64 },
}

/// The garbage waiting on one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GarbageBacklog {
    pub backend: BackendId,
    pub items: u64,
    pub bytes: u64,
    /// When the oldest item was added (ms since the epoch).
    pub oldest_added_unix_ms: Option<u64>,
}

/// `backend 0x00 at_ms`: every key of `backend` at `at_ms` starts with it.
fn bound(backend: &BackendId, at_ms: u64) -> Vec<u8> {
    let mut k = keys::bucket_base(backend.as_str());
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

fn key(backend: &BackendId, at_ms: u64, blob: &BlobName) -> Vec<u8> {
    let mut k = bound(backend, at_ms);
    k.extend_from_slice(blob.as_str().as_bytes());
    k
}

fn split_key(k: &[u8]) -> Result<(BackendId, u64, BlobName)> {
    let corrupt = |reason: &str| MetaError::Corrupt {
        what: "garbage key",
        reason: reason.into(),
    };
    let sep = k
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("no separator"))?;
    let (backend, rest) = (&k[..sep], &k[sep + 1..]);
    let (at, blob) = rest
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("truncated"))?;
    let text = |b: &[u8]| std::str::from_utf8(b).map(str::to_string);
    let backend = text(backend)
        .ok()
        .and_then(|s| BackendId::new(s).ok())
        .ok_or_else(|| corrupt("bad backend id"))?;
    let blob = text(blob)
        .ok()
        .and_then(|s| BlobName::new(s).ok())
        .ok_or_else(|| corrupt("bad blob name"))?;
    Ok((backend, u64::from_be_bytes(*at), blob))
}

/// Every key of `backend`'s queue: `backend 0x00` and what follows.
fn backend_keys(prefix: &[u8]) -> (Bound<&[u8]>, Vec<u8>) {
    let end = keys::successor(prefix).unwrap_or_default();
    (Bound::Included(prefix), end)
}

fn add_to_totals(kv: &mut dyn KvWrite, backend: &BackendId, items: i64, bytes: i64) -> Result<()> {
    let mut t: Totals = match kv.get(TOTALS, backend.as_str().as_bytes())? {
        Some(v) => decode("garbage totals", &v)?,
        None => Totals::default(),
    };
    t.items = t.items.saturating_add_signed(items);
    t.bytes = t.bytes.saturating_add_signed(bytes);
    if t.items == 0 {
        kv.remove(TOTALS, backend.as_str().as_bytes())?;
    } else {
        kv.put(TOTALS, backend.as_str().as_bytes(), &encode(&t)?)?;
    }
    Ok(())
}

/// Adds one item per blob, due at `due_unix_ms`, in `kv`'s transaction.
pub(crate) fn add(
    kv: &mut dyn KvWrite,
    version: Option<VersionId>,
    blobs: impl IntoIterator<Item = (BackendId, BlobName, u64)>,
    due_unix_ms: u64,
    now_unix_ms: u64,
) -> Result<()> {
    let mut per_backend: std::collections::BTreeMap<BackendId, (i64, i64)> = Default::default();
    let journal_seq = journal::hold_for_garbage(kv)?;
    for (backend, blob, bytes) in blobs {
        let record = ItemRecord {
            version,
            added_unix_ms: now_unix_ms,
            attempts: 0,
            bytes,
            journal_seq,
        };
        let due_key = key(&backend, due_unix_ms, &blob);
        // The same blob, due at the same instant, already waiting: one
        // item, counted once.
        let replaced = kv.get(DUE, &due_key)?.is_some();
        kv.put(DUE, &due_key, &encode_item(&record)?)?;
        if replaced {
            continue;
        }
        kv.put(AGE, &key(&backend, now_unix_ms, &blob), &[])?;
        let t = per_backend.entry(backend).or_default();
        t.0 += 1;
        t.1 += i64::try_from(bytes).unwrap_or(i64::MAX);
    }
    for (backend, (items, bytes)) in per_backend {
        add_to_totals(kv, &backend, items, bytes)?;
    }
    Ok(())
}

/// Garbage items waiting, over every backend.
pub(crate) fn items(kv: &(impl KvRead + ?Sized)) -> Result<u64> {
    let mut n = 0;
    kv.scan(TOTALS, ALL_KEYS, false, &mut |_, v| {
        let t: Totals = decode("garbage totals", v)?;
        n += t.items;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(n)
}

impl MetaStore {
    /// Up to `limit` items of `backend` due at `now`, the earliest first;
    /// not those whose change the manifest journal has yet to ship.
    pub fn garbage_due(
        &self,
        backend: &BackendId,
        now_unix_ms: u64,
        limit: usize,
    ) -> Result<Vec<GarbageItem>> {
        let start = bound(backend, 0);
        let end = bound(backend, now_unix_ms.saturating_add(1));
        let range: KeyRange<'_> = (Bound::Included(&start), Bound::Excluded(&end));
        kv::read(self.engine(), |kv| {
            let shipped = journal::shipped_through(kv)?;
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            kv.scan(DUE, range, false, &mut |k, v| {
                let (backend, due_unix_ms, blob) = split_key(k)?;
                let record = decode_item(v)?;
                if record.journal_seq <= shipped {
                    out.push(GarbageItem {
                        backend,
                        blob,
                        due_unix_ms,
                        version: record.version,
                        added_unix_ms: record.added_unix_ms,
                        attempts: record.attempts,
                        bytes: record.bytes,
                    });
                }
                Ok(match out.len() >= limit {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                })
            })?;
            Ok(out)
        })
    }

    /// Records what the collector did with `items`, in one transaction.
    /// An item removed meanwhile (forgotten by an operator) is left alone.
    pub fn settle_garbage(&self, outcomes: &[(GarbageItem, Outcome)]) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        kv::write(self.engine(), |kv| {
            let mut removed: std::collections::BTreeMap<BackendId, (i64, i64)> = Default::default();
            for (item, outcome) in outcomes {
                let old = key(&item.backend, item.due_unix_ms, &item.blob);
                let mut record = match kv.remove(DUE, &old)? {
                    Some(v) => decode_item(&v)?,
                    None => continue,
                };
                match *outcome {
                    Outcome::Deleted => {
                        kv.remove(AGE, &key(&item.backend, record.added_unix_ms, &item.blob))?;
                        let t = removed.entry(item.backend.clone()).or_default();
                        t.0 -= 1;
                        t.1 -= i64::try_from(record.bytes).unwrap_or(i64::MAX);
                    }
                    Outcome::Failed { retry_unix_ms } | Outcome::Postponed { retry_unix_ms } => {
                        if matches!(outcome, Outcome::Failed { .. }) {
                            record.attempts = record.attempts.saturating_add(1);
                        }
                        kv.put(
                            DUE,
                            &key(&item.backend, retry_unix_ms, &item.blob),
                            &encode_item(&record)?,
                        )?;
                    }
                }
            }
            for (backend, (items, bytes)) in removed {
                add_to_totals(kv, &backend, items, bytes)?;
            }
            Ok(())
        })
    }

    /// Garbage waiting per backend, configured or not, in id order.
    pub fn garbage_backlog(&self) -> Result<Vec<GarbageBacklog>> {
        kv::read(self.engine(), |kv| {
            let mut totals = Vec::new();
            kv.scan(TOTALS, ALL_KEYS, false, &mut |k, v| {
                let backend = std::str::from_utf8(k)
                    .ok()
                    .and_then(|k| BackendId::new(k).ok())
                    .ok_or_else(|| MetaError::Corrupt {
                        what: "garbage totals",
                        reason: "a key that is not a backend id".into(),
                    })?;
                let t: Totals = decode("garbage totals", v)?;
                totals.push((backend, t));
                Ok(ControlFlow::Continue(()))
            })?;
            let mut out = Vec::with_capacity(totals.len());
            for (backend, t) in totals {
                let prefix = keys::bucket_base(backend.as_str());
                let (start, end) = backend_keys(&prefix);
                let oldest = match kv.first_key(AGE, (start, Bound::Excluded(&end)), false)? {
                    Some(k) => Some(split_key(&k)?.1),
                    None => None,
                };
                out.push(GarbageBacklog {
                    backend,
                    items: t.items,
                    bytes: t.bytes,
                    oldest_added_unix_ms: oldest,
                });
            }
            Ok(out)
        })
    }

    /// Drops every garbage item of `backend` without deleting anything:
    /// for a backend that left the configuration for good (its blobs are
    /// lost with it). Returns how many items were dropped.
    pub fn forget_garbage(&self, backend: &BackendId) -> Result<u64> {
        let prefix = keys::bucket_base(backend.as_str());
        let (start, end) = backend_keys(&prefix);
        let range: KeyRange<'_> = (start, Bound::Excluded(&end));
        kv::write(self.engine(), |kv| {
            let n = kv.remove_range(DUE, range)?;
            kv.remove_range(AGE, range)?;
            kv.remove(TOTALS, backend.as_str().as_bytes())?;
            Ok(n)
        })
    }
}
