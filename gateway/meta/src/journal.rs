//! The store's side of the manifest journal (issue 17): the outbox, the
//! snapshot a checkpoint is cut from, the record of journal units written,
//! and the restore that `shardgate recover` replays into.
//!
//! Why an outbox: every transaction that changes a bucket, a user or an
//! object version also appends the row's new image (or a tombstone) to
//! the `outbox` table, in that same transaction. A journal record can then
//! not be lost between a commit and a crash: the writer ships the outbox
//! to the backends in batches and truncates it only once a batch holds its
//! write quorum. What is journaled is the store's own rows, byte for byte
//! (formats pinned by the golden tests), so a replay is exact.
//!
//! Not journaled, because recovery rebuilds it or needs it not: uploads in
//! progress (a client retries them; their parts become orphans), intents
//! and garbage (fragments of writes that never committed, or of versions
//! gone), the repair queue (scrub refills it), job state, counters.

use std::ops::{Bound, ControlFlow};

use serde::{Deserialize, Serialize};
pub use shardgate_core::journal::UnitKind;
use shardgate_core::{BackendId, BlobName};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::tables::{BUCKETS, COUNTERS, Table, USERS, VERSIONS};
use crate::kv::{self, ALL_KEYS, KvRead, KvReadExt, KvSnapshot, KvWrite, decode_u64, u64_bytes};
use crate::store::{
    DELETE_MARKERS_KEY, GENERATION_SEQUENCE_KEY, MetaStore, decode, decode_summary, encode,
};

/// Row images waiting to be shipped, by journal sequence number.
const OUTBOX: Table = kv::tables::OUTBOX;
/// Journal units on the backends: unit number -> [`UnitRecord`].
const UNITS: Table = kv::tables::JOURNAL_UNITS;
/// The last journal sequence number shipped (in `counters`): numbering
/// goes on after it when the outbox is empty, after its last otherwise.
const JOURNAL_SEQUENCE: &str = "journal";
/// The last journal unit number given (in `counters`).
const UNIT_SEQUENCE: &str = "journal_unit";
/// Set (1) when rows changed without outbox records (a start with the
/// journal off, an upgrade, a restore): the journal on the backends then
/// misses them until a checkpoint is written.
const CHECKPOINT_NEEDED: &str = "journal_checkpoint_needed";
/// This run's epoch (in `counters`): 0 for a store that was never
/// recovered; one more than the journal it was recovered from otherwise.
const EPOCH: &str = "journal_epoch";
/// The newest complete checkpoint's number (in `counters`).
const LAST_CHECKPOINT: &str = "journal_last_checkpoint";
/// This store's journal id (in `counters`): random, made with the store,
/// kept by a restore. Two gateways' journals on shared backends never mix.
const JOURNAL_ID: &str = "journal_id";
/// Set (1) when a store that has a journal on the backends ran without it:
/// the journal there is stale, so garbage added meanwhile waits for the
/// next complete checkpoint (a recovery from the stale journal could bring
/// back the manifests that name it).
const STALE: &str = "journal_stale";

/// The tables the journal carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum JournalTable {
    Buckets = 1,
    Versions = 2,
    Users = 3,
}

/// One row's new state: its value, or `None` when it was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowImage {
    pub table: JournalTable,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl RowImage {
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode("journal row", bytes)
    }
}

/// Outbox records in sequence order, as the writer ships them.
#[derive(Clone, Debug, Default)]
pub struct OutboxBatch {
    /// (journal sequence number, encoded [`RowImage`]).
    pub records: Vec<(u64, Vec<u8>)>,
    /// The store's generation sequence when read: a restore continues
    /// past it, so no version number is ever given twice.
    pub generation: u64,
    /// The store's journal epoch.
    pub epoch: u64,
    /// The store's journal id.
    pub journal: u64,
}

/// A journal unit the writer put on the backends, kept so that its blobs
/// can be deleted once a newer checkpoint makes it useless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRecord {
    pub kind: UnitKind,
    /// The checkpoint a part belongs to (its first unit's number); 0 for
    /// a batch.
    pub checkpoint: u64,
    pub last_seq: u64,
    /// Every blob the unit was given, written or not (to delete them all).
    pub blobs: Vec<(BackendId, BlobName)>,
    /// Which of `blobs` were written (empty: all of them).
    pub written: Vec<bool>,
    /// Recorded before its blobs are written: a unit still pending at a
    /// start belongs to a run that stopped mid-write; its blobs go.
    pub pending: bool,
}

impl UnitRecord {
    /// The blobs known to be on their backends.
    pub fn written_blobs(&self) -> impl Iterator<Item = &(BackendId, BlobName)> {
        self.blobs
            .iter()
            .enumerate()
            .filter(|(i, _)| self.written.get(*i).copied().unwrap_or(true))
            .map(|(_, b)| b)
    }
}

/// Where the journal stands, for the writer.
#[derive(Clone, Debug, Default)]
pub struct JournalState {
    /// No complete checkpoint covers every row yet.
    pub checkpoint_needed: bool,
    /// Units on the backends, by number.
    pub units: Vec<(u64, UnitRecord)>,
    /// Records waiting in the outbox.
    pub outbox_len: u64,
    /// The newest complete checkpoint (0: none).
    pub last_checkpoint: u64,
    pub epoch: u64,
    pub journal: u64,
}

/// A consistent view of every journaled row, cut into checkpoint parts.
pub struct Snapshot {
    kv: Box<dyn KvSnapshot>,
    /// The last journal sequence number the view includes.
    pub seq: u64,
    /// The generation sequence in the view.
    pub generation: u64,
    pub epoch: u64,
    pub journal: u64,
    table: usize,
    after: Option<Vec<u8>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("seq", &self.seq)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The order a checkpoint holds the tables in: buckets before the
/// versions in them.
const ORDER: [JournalTable; 3] = [
    JournalTable::Buckets,
    JournalTable::Users,
    JournalTable::Versions,
];

impl Snapshot {
    /// The next rows, about `max_bytes` of them; empty at the end.
    pub fn next_chunk(&mut self, max_bytes: usize) -> Result<Vec<RowImage>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while self.table < ORDER.len() && bytes < max_bytes {
            let more = self.read(ORDER[self.table], &mut out, &mut bytes, max_bytes)?;
            if !more {
                self.table += 1;
                self.after = None;
            }
        }
        Ok(out)
    }

    /// Reads rows of `table` after the cursor until `max_bytes`; true when
    /// it stopped at the limit.
    fn read(
        &mut self,
        table: JournalTable,
        out: &mut Vec<RowImage>,
        bytes: &mut usize,
        max_bytes: usize,
    ) -> Result<bool> {
        let after = self.after.take();
        let mut last = None;
        let mut full = false;
        let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.kv.scan(
            table.table(),
            (lower, Bound::Unbounded),
            false,
            &mut |key, value| {
                *bytes += key.len() + value.len() + 8;
                last = Some(key.to_vec());
                out.push(RowImage {
                    table,
                    key: key.to_vec(),
                    value: Some(value.to_vec()),
                });
                full = *bytes >= max_bytes;
                Ok(match full {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                })
            },
        )?;
        self.after = last;
        Ok(full)
    }
}

fn utf8(key: &[u8]) -> Result<&str> {
    std::str::from_utf8(key).map_err(|_| MetaError::Corrupt {
        what: "journal row",
        reason: "a bucket or user key that is not UTF-8".into(),
    })
}

impl JournalTable {
    fn table(self) -> Table {
        match self {
            Self::Buckets => BUCKETS,
            Self::Versions => VERSIONS,
            Self::Users => USERS,
        }
    }
}

/// Drops outbox records up to `through`, keeping the number of the last
/// one so that numbering goes on from it when the outbox is empty.
fn truncate(kv: &mut dyn KvWrite, through: u64) -> Result<()> {
    let through_key = u64_bytes(through);
    kv.remove_range(OUTBOX, (Bound::Unbounded, Bound::Included(&through_key)))?;
    let kept = counter(kv, JOURNAL_SEQUENCE)?;
    set_counter(kv, JOURNAL_SEQUENCE, kept.max(through))
}

/// The last record in the outbox (0: none): a change of this transaction
/// is shipped once this is.
pub(crate) fn last_recorded(kv: &(impl KvRead + ?Sized)) -> Result<u64> {
    match kv.first_key(OUTBOX, ALL_KEYS, true)? {
        Some(k) => decode_u64(&k),
        None => Ok(0),
    }
}

/// Every record up to this number is on the backends (or in a checkpoint
/// there): the outbox's first less one, everything when it is empty.
pub(crate) fn shipped_through(kv: &(impl KvRead + ?Sized)) -> Result<u64> {
    let outbox = match kv.first_key(OUTBOX, ALL_KEYS, false)? {
        Some(k) => decode_u64(&k)?.saturating_sub(1),
        None => u64::MAX,
    };
    let stale = counter(kv, STALE)? != 0;
    // Stale: what waits for the next checkpoint (u64::MAX) waits.
    Ok(match stale {
        true => outbox.min(u64::MAX - 1),
        false => outbox,
    })
}

/// Empties the outbox: a store opened without the journal ships nothing,
/// so its garbage must not wait for it (a checkpoint at the next start
/// with the journal covers the records dropped).
pub(crate) fn drop_outbox(kv: &mut dyn KvWrite) -> Result<()> {
    let last = last_recorded(kv)?;
    if last > 0 {
        truncate(kv, last)?;
    }
    Ok(())
}

/// Gives a new store its journal id.
pub(crate) fn create_tables(kv: &mut dyn KvWrite) -> Result<()> {
    if counter(kv, JOURNAL_ID)? == 0 {
        set_counter(kv, JOURNAL_ID, rand::random::<u64>().max(1))?;
    }
    Ok(())
}

/// At an open without the journal: a store that never wrote one drops its
/// outbox (nothing will ship it, and no journal exists to recover from);
/// one that has a journal on the backends keeps it and marks it stale, so
/// garbage waits for the next checkpoint.
pub(crate) fn journal_off(kv: &mut dyn KvWrite) -> Result<()> {
    need_checkpoint(kv)?;
    if counter(kv, LAST_CHECKPOINT)? > 0 || kv.first_key(UNITS, ALL_KEYS, false)?.is_some() {
        set_counter(kv, STALE, 1)
    } else {
        drop_outbox(kv)
    }
}

/// The journal position a garbage item added now waits for: the
/// transaction's records so far are the outbox's last, and one more may
/// follow the removal that made the garbage (the version that replaced
/// it, or a delete marker), so one past it. While the journal is stale,
/// the next checkpoint's.
pub(crate) fn hold_for_garbage(kv: &(impl KvRead + ?Sized)) -> Result<u64> {
    if counter(kv, STALE)? != 0 {
        return Ok(u64::MAX);
    }
    Ok(match last_recorded(kv)? {
        0 => 0,
        last => last + 1,
    })
}

fn counter(kv: &(impl KvRead + ?Sized), name: &str) -> Result<u64> {
    Ok(kv.get_u64(COUNTERS, name.as_bytes())?.unwrap_or(0))
}

fn set_counter(kv: &mut dyn KvWrite, name: &str, value: u64) -> Result<()> {
    kv.put(COUNTERS, name.as_bytes(), &u64_bytes(value))
}

/// Marks the journal as missing changes: the writer's next step is a
/// checkpoint.
pub(crate) fn need_checkpoint(kv: &mut dyn KvWrite) -> Result<()> {
    set_counter(kv, CHECKPOINT_NEEDED, 1)
}

/// Appends a row's new image to the outbox, in the transaction that
/// changes the row.
pub(crate) fn record(
    kv: &mut dyn KvWrite,
    table: JournalTable,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    // The next number after the outbox's last; when it is empty, after
    // the last one shipped (kept by the truncation).
    let seq = match last_recorded(kv)? {
        0 => counter(kv, JOURNAL_SEQUENCE)? + 1,
        last => last + 1,
    };
    let image = RowImageRef { table, key, value };
    kv.put(OUTBOX, &u64_bytes(seq), &encode(&image)?)
}

/// [`RowImage`] borrowed: the same encoding, without copying the row.
#[derive(Serialize)]
struct RowImageRef<'a> {
    table: JournalTable,
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

/// Every journal unit, by number.
fn units(kv: &(impl KvRead + ?Sized)) -> Result<Vec<(u64, UnitRecord)>> {
    let mut units = Vec::new();
    kv.scan(UNITS, ALL_KEYS, false, &mut |k, v| {
        units.push((decode_u64(k)?, decode("journal unit", v)?));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(units)
}

impl MetaStore {
    /// Outbox records in sequence order, about `max_bytes` of them at most
    /// (at least one when any is waiting).
    pub fn outbox(&self, max_bytes: usize) -> Result<OutboxBatch> {
        kv::read(self.engine(), |kv| {
            let mut batch = OutboxBatch {
                records: Vec::new(),
                generation: counter(kv, GENERATION_SEQUENCE_KEY)?,
                epoch: counter(kv, EPOCH)?,
                journal: counter(kv, JOURNAL_ID)?,
            };
            let mut bytes = 0;
            kv.scan(OUTBOX, ALL_KEYS, false, &mut |k, v| {
                bytes += v.len() + 8;
                batch.records.push((decode_u64(k)?, v.to_vec()));
                Ok(match bytes >= max_bytes {
                    true => ControlFlow::Break(()),
                    false => ControlFlow::Continue(()),
                })
            })?;
            Ok(batch)
        })
    }

    /// Drops outbox records up to `through`, once they are on the backends.
    pub fn truncate_outbox(&self, through: u64) -> Result<()> {
        kv::write(self.engine(), |kv| truncate(kv, through))
    }

    /// Where the journal stands.
    pub fn journal_state(&self) -> Result<JournalState> {
        kv::read(self.engine(), |kv| {
            Ok(JournalState {
                // Absent: a store from before the journal, or a new one.
                checkpoint_needed: kv
                    .get_u64(COUNTERS, CHECKPOINT_NEEDED.as_bytes())?
                    .is_none_or(|v| v != 0),
                units: units(kv)?,
                outbox_len: kv.len(OUTBOX)?,
                last_checkpoint: counter(kv, LAST_CHECKPOINT)?,
                epoch: counter(kv, EPOCH)?,
                journal: counter(kv, JOURNAL_ID)?,
            })
        })
    }

    /// A number for a new journal unit, never given before.
    pub fn next_journal_unit(&self) -> Result<u64> {
        kv::write(self.engine(), |kv| {
            let unit = counter(kv, UNIT_SEQUENCE)? + 1;
            set_counter(kv, UNIT_SEQUENCE, unit)?;
            Ok(unit)
        })
    }

    /// Records a unit written to the backends (`truncate_through`: and
    /// drops the outbox records it holds, in the same transaction).
    pub fn record_unit(
        &self,
        unit: u64,
        record: &UnitRecord,
        truncate_through: Option<u64>,
    ) -> Result<()> {
        let value = encode(record)?;
        kv::write(self.engine(), |kv| {
            kv.put(UNITS, &u64_bytes(unit), &value)?;
            match truncate_through {
                Some(through) => truncate(kv, through),
                None => Ok(()),
            }
        })
    }

    /// Records that checkpoint `checkpoint` is complete: the journal has
    /// every row again. Returns the units it makes useless (older
    /// checkpoints' parts, batches it covers), for their blobs' deletion.
    pub fn complete_checkpoint(&self, checkpoint: u64, seq: u64) -> Result<Vec<(u64, UnitRecord)>> {
        kv::write(self.engine(), |kv| {
            set_counter(kv, CHECKPOINT_NEEDED, 0)?;
            set_counter(kv, LAST_CHECKPOINT, checkpoint)?;
            set_counter(kv, STALE, 0)?;
            // The checkpoint holds every row as of `seq`: records up to it
            // need no batch.
            truncate(kv, seq)?;
            Ok(units(kv)?
                .into_iter()
                .filter(|(_, u)| match u.kind {
                    UnitKind::Checkpoint => u.checkpoint < checkpoint,
                    UnitKind::Batch => u.last_seq <= seq,
                } && !u.pending)
                .collect())
        })
    }

    /// Forgets units whose blobs are deleted.
    pub fn forget_units(&self, units: &[u64]) -> Result<()> {
        kv::write(self.engine(), |kv| {
            for unit in units {
                kv.remove(UNITS, &u64_bytes(*unit))?;
            }
            Ok(())
        })
    }

    /// Every journaled row as of now, to cut a checkpoint from.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let kv = self.engine().snapshot()?;
        let seq = counter(&*kv, JOURNAL_SEQUENCE)?.max(last_recorded(&*kv)?);
        Ok(Snapshot {
            seq,
            generation: counter(&*kv, GENERATION_SEQUENCE_KEY)?,
            epoch: counter(&*kv, EPOCH)?,
            journal: counter(&*kv, JOURNAL_ID)?,
            kv,
            table: 0,
            after: None,
        })
    }

    /// Whether the store holds no bucket, user or version (a restore's
    /// target must).
    pub fn is_empty(&self) -> Result<bool> {
        kv::read(self.engine(), |kv| {
            for table in [BUCKETS, USERS, VERSIONS] {
                if kv.first_key(table, ALL_KEYS, false)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
    }

    /// Applies row images as they are, in one transaction (recovery).
    pub fn restore(&self, rows: &[RowImage]) -> Result<()> {
        kv::write(self.engine(), |kv| {
            for row in rows {
                match row.table {
                    JournalTable::Versions if keys::split_version_key(&row.key).is_none() => {
                        return Err(MetaError::Corrupt {
                            what: "journal row",
                            reason: "a version key of the wrong shape".into(),
                        });
                    }
                    JournalTable::Versions => {}
                    JournalTable::Buckets | JournalTable::Users => {
                        utf8(&row.key)?;
                    }
                }
                match &row.value {
                    Some(v) => kv.put(row.table.table(), &row.key, v)?,
                    None => drop(kv.remove(row.table.table(), &row.key)?),
                }
            }
            Ok(())
        })
    }

    /// Ends a restore: the sequences continue past everything the journal
    /// held (`generation`, `journal_seq`, `journal_unit`), the store's
    /// journal starts `epoch` (one more than the journal read), the delete
    /// markers are counted, the units given are recorded (so their blobs go
    /// once a checkpoint covers them), and a checkpoint is due.
    pub fn finish_restore(
        &self,
        generation: u64,
        journal: u64,
        epoch: u64,
        journal_seq: u64,
        last_unit: u64,
        found_units: &[(u64, UnitRecord)],
    ) -> Result<()> {
        let found: Vec<(u64, Vec<u8>)> = found_units
            .iter()
            .map(|(unit, record)| Ok((*unit, encode(record)?)))
            .collect::<Result<_>>()?;
        kv::write(self.engine(), |kv| {
            let mut max_version = 0u64;
            let mut markers = 0u64;
            kv.scan(VERSIONS, ALL_KEYS, false, &mut |k, v| {
                let summary = decode_summary(v)?;
                let seq = keys::split_version_key(k).map_or(0, |(_, _, s)| s);
                max_version = max_version.max(seq).max(summary.generation);
                markers += u64::from(summary.delete_marker);
                Ok(ControlFlow::Continue(()))
            })?;
            let raise = |kv: &mut dyn KvWrite, name: &str, to: u64| -> Result<()> {
                let now = counter(kv, name)?;
                set_counter(kv, name, now.max(to))
            };
            raise(kv, GENERATION_SEQUENCE_KEY, generation.max(max_version))?;
            set_counter(kv, DELETE_MARKERS_KEY, markers)?;
            raise(kv, JOURNAL_SEQUENCE, journal_seq)?;
            raise(kv, EPOCH, epoch)?;
            set_counter(kv, JOURNAL_ID, journal)?;
            let max_unit = found.iter().map(|(u, _)| *u).max().unwrap_or(0);
            raise(kv, UNIT_SEQUENCE, max_unit.max(last_unit))?;
            for (unit, record) in &found {
                // Two epochs' units of one number: the first is kept (the
                // other's blobs stay; nothing reads them).
                if kv.get(UNITS, &u64_bytes(*unit))?.is_none() {
                    kv.put(UNITS, &u64_bytes(*unit), record)?;
                }
            }
            need_checkpoint(kv)
        })
    }
}
