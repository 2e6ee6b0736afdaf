//! The repair queue (issue 14): objects whose fragments are not all
//! healthy, ordered by the redundancy they have left, fewest first, as
//! Storj orders its segment queue. Every source of bad news feeds it:
//! a write that reached its quorum with fragments Missing (in the commit's
//! own transaction), a read that met a missing or corrupt fragment, and
//! later scrub and backends gone for good.
//!
//! Every version is repaired, not only the current one: a noncurrent
//! version is as much the user's data (and a locked one is a promise).
//!
//! Tables:
//! - `repair_queue`: `margin(u8) row` -> [`RepairRecord`], where `row` is
//!   the version's row key (`bucket 0x00 key 0x00 !seq`) and the margin is
//!   the fewest healthy fragments any segment has, less k: 0 means one
//!   more loss loses data;
//! - `repair_index`: `row` -> margin, to find a version's entry when it
//!   changes.
//!
//! A version's row never moves, so an entry stays valid until the version
//! is deleted, which drops it in the same transaction. An entry also names
//! the manifest's version id: a report about another is ignored.

use std::collections::BTreeSet;
use std::ops::{Bound, ControlFlow};

use serde::{Deserialize, Serialize};
use shardgate_core::{BackendId, BlobName, FragmentState, Manifest, VersionId};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{self, ALL_KEYS, KvRead, KvWrite, Table};
use crate::store::{MetaStore, decode, decode_manifest, decode_summary, encode};

const QUEUE: Table = kv::tables::REPAIR_QUEUE;
const INDEX: Table = kv::tables::REPAIR_INDEX;
const VERSIONS: Table = kv::tables::VERSIONS;

/// Why an object is in the queue (bits of [`RepairEntry::reasons`]).
pub mod reason {
    /// A write reached its quorum without some fragments.
    pub const WRITE: u8 = 1;
    /// A read found fragments missing or corrupt.
    pub const READ: u8 = 2;
    /// Scrub found fragments missing or corrupt.
    pub const SCRUB: u8 = 4;
    /// A backend holding fragments is gone (down past its grace, or
    /// removed from the configuration).
    pub const BACKEND: u8 = 8;
}

/// A queue entry (record format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RepairRecord {
    version: VersionId,
    reasons: u8,
    first_seen_unix_ms: u64,
    /// Fragments reported bad, as (segment, fragment index).
    suspects: BTreeSet<(u32, u16)>,
}

/// A version waiting for repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairEntry {
    pub bucket: String,
    pub key: String,
    /// The version's row ([`MetaStore::version_at`]).
    pub seq: u64,
    pub version: VersionId,
    /// Healthy fragments left beyond k in the worst segment.
    pub margin: u8,
    pub reasons: u8,
    pub first_seen_unix_ms: u64,
    /// Fragments reported bad, as (segment, fragment index); fragments the
    /// manifest records Missing are not repeated here.
    pub suspects: Vec<(u32, u16)>,
}

/// The fewest healthy fragments of any segment, less k (0 when a segment
/// has k or fewer), counting Stored fragments not reported bad; `None`
/// when every fragment is healthy.
fn margin(m: &Manifest, suspects: &BTreeSet<(u32, u16)>) -> Option<u8> {
    let mut worst: Option<usize> = None;
    let mut damaged = false;
    // An inline segment has no fragment to lose.
    for (s, seg) in m
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_inline())
    {
        let healthy = seg
            .fragments
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                f.state == FragmentState::Stored && !suspects.contains(&(s as u32, *i as u16))
            })
            .count();
        damaged |= healthy < seg.fragments.len();
        let left = healthy.saturating_sub(seg.layout.code.k());
        worst = Some(worst.map_or(left, |w| w.min(left)));
    }
    damaged.then(|| worst.unwrap_or(0).min(u8::MAX as usize) as u8)
}

/// An object row with fragments on backends gone: its key, manifest and
/// those fragments.
type LostOn = (Vec<u8>, Manifest, BTreeSet<(u32, u16)>);

fn queue_key(margin: u8, object: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + 1);
    k.push(margin);
    k.extend_from_slice(object);
    k
}

/// `object`'s entry, if any: its margin and record.
fn entry_of(kv: &(impl KvRead + ?Sized), object: &[u8]) -> Result<Option<(u8, RepairRecord)>> {
    let Some(margin) = kv.get(INDEX, object)? else {
        return Ok(None);
    };
    let margin = margin.first().copied().unwrap_or(0);
    let Some(v) = kv.get(QUEUE, &queue_key(margin, object))? else {
        return Ok(None);
    };
    Ok(Some((margin, decode("repair entry", &v)?)))
}

/// Removes `object`'s entry, if any; returns its record.
fn take(kv: &mut dyn KvWrite, object: &[u8]) -> Result<Option<RepairRecord>> {
    let Some(margin) = kv.remove(INDEX, object)? else {
        return Ok(None);
    };
    let margin = margin.first().copied().unwrap_or(0);
    kv.remove(QUEUE, &queue_key(margin, object))?
        .map(|v| decode::<RepairRecord>("repair entry", &v))
        .transpose()
}

fn put(kv: &mut dyn KvWrite, object: &[u8], margin: u8, record: &RepairRecord) -> Result<()> {
    kv.put(QUEUE, &queue_key(margin, object), &encode(record)?)?;
    kv.put(INDEX, object, &[margin])
}

/// In the transaction that writes `manifest` into version row `object`
/// (or deletes the version, `None`), `old` being what the row held: the
/// old entry goes; a version with fragments Missing is queued.
///
/// A rewrite of the same version (a repair's swap) keeps the suspects it
/// did not replace: reports that came in while it ran, or fragments it
/// could not check, still count.
pub(crate) fn on_commit(
    kv: &mut dyn KvWrite,
    object: &[u8],
    old: Option<&Manifest>,
    manifest: Option<&Manifest>,
    now_unix_ms: u64,
) -> Result<()> {
    let previous = take(kv, object)?;
    let Some(m) = manifest else {
        return Ok(());
    };
    let same_blob = |(s, i): &(u32, u16)| {
        let blob = |m: &Manifest| {
            m.segments
                .get(*s as usize)
                .and_then(|seg| seg.fragments.get(usize::from(*i)))
                .map(|f| f.blob.clone())
        };
        old.is_some_and(|o| o.version_id == m.version_id && blob(o).is_some() && blob(o) == blob(m))
    };
    let (suspects, reasons, first_seen) = match previous {
        Some(p) if old.is_some_and(|o| o.version_id == m.version_id) => {
            let kept: BTreeSet<(u32, u16)> = p.suspects.into_iter().filter(same_blob).collect();
            (kept, p.reasons, p.first_seen_unix_ms)
        }
        _ => (BTreeSet::new(), reason::WRITE, now_unix_ms),
    };
    if let Some(margin) = margin(m, &suspects) {
        let record = RepairRecord {
            version: m.version_id,
            reasons,
            first_seen_unix_ms: first_seen,
            suspects,
        };
        put(kv, object, margin, &record)?;
    }
    Ok(())
}

fn split_object(object: &[u8]) -> Result<(String, String, u64)> {
    let (bucket, key, seq) = keys::split_version_key(object).ok_or_else(|| MetaError::Corrupt {
        what: "repair entry",
        reason: "not a version's row".into(),
    })?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok((text(bucket), text(key), seq))
}

/// The manifest version row `object` holds; `None` when the version is
/// gone or is a delete marker.
fn manifest_at(kv: &(impl KvRead + ?Sized), object: &[u8]) -> Result<Option<Manifest>> {
    let Some(v) = kv.get(VERSIONS, object)? else {
        return Ok(None);
    };
    if decode_summary(&v)?.delete_marker {
        return Ok(None);
    }
    decode_manifest(&v).map(Some)
}

/// The rows queued for repair (the store's upgrade re-keys them).
pub(crate) fn queued_objects(
    kv: &(impl KvRead + ?Sized),
) -> Result<std::collections::HashSet<Vec<u8>>> {
    let mut out = std::collections::HashSet::new();
    kv.scan(INDEX, ALL_KEYS, false, &mut |k, _| {
        out.insert(k.to_vec());
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Moves the entries of rows that were renamed (`old` -> `new`), and
/// drops any entry left that names no version row (its object was not
/// moved): the queue must hold version rows only, or every page of it
/// would fail to read.
pub(crate) fn rekey(
    kv: &mut dyn KvWrite,
    renamed: &std::collections::HashMap<Vec<u8>, Vec<u8>>,
) -> Result<()> {
    for (old, new) in renamed {
        let margin = kv.get(INDEX, old)?.and_then(|m| m.first().copied());
        if let (Some(margin), Some(record)) = (margin, take(kv, old)?) {
            put(kv, new, margin, &record)?;
        }
    }
    let stale: Vec<Vec<u8>> = queued_objects(kv)?
        .into_iter()
        .filter(|o| keys::split_version_key(o).is_none())
        .collect();
    for object in stale {
        take(kv, &object)?;
    }
    Ok(())
}

impl MetaStore {
    /// Records fragments found bad in `version` of `bucket/key` (by a read
    /// or a scrub), each named by (segment, index, blob). A report about a
    /// version that is no longer current, or about a blob the manifest no
    /// longer uses (repair replaced it meanwhile), is ignored. Returns the
    /// fragments taken as suspects.
    #[allow(clippy::too_many_arguments)]
    pub fn report_damage(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        version: VersionId,
        bad: &[(u32, u16, BlobName)],
        why: u8,
        now_unix_ms: u64,
    ) -> Result<Vec<(u32, u16)>> {
        // Most reports repeat what is queued already (every GET of a
        // damaged object reports it): a read answers those without a
        // durable write.
        let object = keys::version_key(bucket, key, seq);
        let known: Vec<(u32, u16)> = bad.iter().map(|(s, i, _)| (*s, *i)).collect();
        let queued = kv::read(self.engine(), |kv| entry_of(kv, &object))?;
        if let Some((_, record)) = queued
            && record.version == version
            && record.reasons & why == why
            && known.iter().all(|k| record.suspects.contains(k))
        {
            return Ok(known);
        }
        kv::write(self.engine(), |kv| {
            let Some(manifest) = manifest_at(kv, &object)? else {
                return Ok(Vec::new());
            };
            if manifest.version_id != version {
                return Ok(Vec::new());
            }
            let bad: Vec<(u32, u16)> = bad
                .iter()
                .filter(|(s, i, blob)| {
                    manifest
                        .segments
                        .get(*s as usize)
                        .and_then(|seg| seg.fragments.get(usize::from(*i)))
                        .is_some_and(|f| f.blob == *blob && f.state == FragmentState::Stored)
                })
                .map(|(s, i, _)| (*s, *i))
                .collect();
            if bad.is_empty() {
                return Ok(bad);
            }
            let mut record = take(kv, &object)?.unwrap_or(RepairRecord {
                version,
                reasons: 0,
                first_seen_unix_ms: now_unix_ms,
                suspects: BTreeSet::new(),
            });
            record.reasons |= why;
            record.suspects.extend(bad.iter().copied());
            if let Some(margin) = margin(&manifest, &record.suspects) {
                put(kv, &object, margin, &record)?;
            }
            Ok(bad)
        })
    }

    /// Repair checked `checked` of `version` of `bucket/key` and found
    /// them healthy: they are no longer suspects; the entry goes if no
    /// other (reported meanwhile) remains.
    pub fn clear_repair(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        version: VersionId,
        checked: &[(u32, u16)],
    ) -> Result<()> {
        let object = keys::version_key(bucket, key, seq);
        kv::write(self.engine(), |kv| {
            if let Some(mut record) = take(kv, &object)? {
                if record.version == version {
                    record.suspects.retain(|s| !checked.contains(s));
                }
                if let Some(m) = manifest_at(kv, &object)?
                    && let Some(margin) = margin(&m, &record.suspects)
                {
                    put(kv, &object, margin, &record)?;
                }
            }
            Ok(())
        })
    }

    /// Walks up to `limit` object rows after `cursor` (from the start when
    /// `None`) and queues, with reason [`reason::BACKEND`], every object
    /// with a stored fragment on a backend `gone` names (down past its
    /// grace, or no longer configured), those fragments as suspects. One
    /// transaction per call. Returns the last row walked (`None`: the walk
    /// reached the end) and how many objects were newly queued or had
    /// suspects added.
    pub fn queue_lost_fragments(
        &self,
        gone: &dyn Fn(&BackendId) -> bool,
        cursor: Option<&[u8]>,
        limit: usize,
        now_unix_ms: u64,
    ) -> Result<(Option<Vec<u8>>, usize)> {
        let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        kv::write(self.engine(), |kv| {
            let mut found: Vec<LostOn> = Vec::new();
            let mut last = None;
            let mut walked = 0;
            if limit > 0 {
                kv.scan(VERSIONS, (lower, Bound::Unbounded), false, &mut |k, v| {
                    walked += 1;
                    last = Some(k.to_vec());
                    // A row that does not decode is left to scrub, which
                    // reports it; the walk goes on.
                    if let Some((manifest, lost)) = lost_fragments(v, gone) {
                        found.push((k.to_vec(), manifest, lost));
                    }
                    Ok(match walked >= limit {
                        true => ControlFlow::Break(()),
                        false => ControlFlow::Continue(()),
                    })
                })?;
            }
            let mut queued = 0;
            for (object, manifest, lost) in found {
                let mut record = match take(kv, &object)? {
                    Some(r) if r.version == manifest.version_id => r,
                    _ => RepairRecord {
                        version: manifest.version_id,
                        reasons: 0,
                        first_seen_unix_ms: now_unix_ms,
                        suspects: BTreeSet::new(),
                    },
                };
                let before = (record.reasons, record.suspects.len());
                record.reasons |= reason::BACKEND;
                record.suspects.extend(lost);
                if (record.reasons, record.suspects.len()) != before {
                    queued += 1;
                }
                if let Some(margin) = margin(&manifest, &record.suspects) {
                    put(kv, &object, margin, &record)?;
                }
            }
            Ok((if walked < limit { None } else { last }, queued))
        })
    }

    /// The queue entry of version `seq` of `bucket/key`, if it is queued.
    pub fn repair_entry(&self, bucket: &str, key: &str, seq: u64) -> Result<Option<RepairEntry>> {
        let object = keys::version_key(bucket, key, seq);
        let Some((margin, record)) = kv::read(self.engine(), |kv| entry_of(kv, &object))? else {
            return Ok(None);
        };
        Ok(Some(RepairEntry {
            bucket: bucket.to_string(),
            key: key.to_string(),
            seq,
            version: record.version,
            margin,
            reasons: record.reasons,
            first_seen_unix_ms: record.first_seen_unix_ms,
            suspects: record.suspects.into_iter().collect(),
        }))
    }

    /// Up to `limit` queued objects, the least redundant first.
    pub fn repair_queue(&self, limit: usize) -> Result<Vec<RepairEntry>> {
        self.repair_queue_after(None, limit)
    }

    /// Up to `limit` queued objects after `after` (an entry of an earlier
    /// page), the least redundant first.
    pub fn repair_queue_after(
        &self,
        after: Option<&RepairEntry>,
        limit: usize,
    ) -> Result<Vec<RepairEntry>> {
        let from = after.map(|e| queue_key(e.margin, &keys::version_key(&e.bucket, &e.key, e.seq)));
        let lower = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            kv.scan(QUEUE, (lower, Bound::Unbounded), false, &mut |k, v| {
                let (margin, object) = k.split_first().ok_or_else(|| MetaError::Corrupt {
                    what: "repair entry",
                    reason: "empty key".into(),
                })?;
                let (bucket, key, seq) = split_object(object)?;
                let record: RepairRecord = decode("repair entry", v)?;
                out.push(RepairEntry {
                    bucket,
                    key,
                    seq,
                    version: record.version,
                    margin: *margin,
                    reasons: record.reasons,
                    first_seen_unix_ms: record.first_seen_unix_ms,
                    suspects: record.suspects.into_iter().collect(),
                });
                Ok(match out.len() >= limit {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                })
            })?;
            Ok(out)
        })
    }

    /// Objects queued for repair, and how many at each margin (index =
    /// margin), for `/metrics`.
    pub fn repair_queue_counts(&self) -> Result<(u64, Vec<u64>)> {
        kv::read(self.engine(), |kv| {
            let mut by_margin = Vec::new();
            let mut total = 0;
            kv.scan(INDEX, ALL_KEYS, false, &mut |_, v| {
                let m = usize::from(v.first().copied().unwrap_or(0));
                if by_margin.len() <= m {
                    by_margin.resize(m + 1, 0);
                }
                by_margin[m] += 1;
                total += 1;
                Ok(ControlFlow::Continue(()))
            })?;
            Ok((total, by_margin))
        })
    }
}

/// A version row's manifest and its stored fragments on backends `gone`
/// names; `None` for a delete marker, a row that does not decode, or one
/// with nothing lost.
fn lost_fragments(
    row: &[u8],
    gone: &dyn Fn(&BackendId) -> bool,
) -> Option<(Manifest, BTreeSet<(u32, u16)>)> {
    if decode_summary(row).is_ok_and(|s| s.delete_marker) {
        return None;
    }
    let manifest = decode_manifest(row).ok()?;
    let lost: BTreeSet<(u32, u16)> = manifest
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| {
            seg.fragments.iter().enumerate().filter_map(move |(i, f)| {
                (f.state == FragmentState::Stored && gone(&f.backend))
                    .then_some((s as u32, i as u16))
            })
        })
        .collect();
    (!lost.is_empty()).then_some((manifest, lost))
}
