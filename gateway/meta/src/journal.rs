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

use std::ops::Bound;

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
pub use shardgate_core::journal::UnitKind;
use shardgate_core::{BackendId, BlobName};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::store::{
    BUCKETS_TABLE, COUNTERS_TABLE, GENERATION_SEQUENCE_KEY, MetaStore, OBJECTS_TABLE, USERS_TABLE,
    decode, decode_summary, encode,
};

/// Row images waiting to be shipped, by journal sequence number.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Journal units on the backends: unit number -> [`UnitRecord`].
const UNITS: TableDefinition<u64, &[u8]> = TableDefinition::new("journal_units");
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
    txn: ReadTransaction,
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
        let mut push = |key: &[u8], value: &[u8]| {
            *bytes += key.len() + value.len() + 8;
            last = Some(key.to_vec());
            out.push(RowImage {
                table,
                key: key.to_vec(),
                value: Some(value.to_vec()),
            });
            *bytes >= max_bytes
        };
        let mut full = false;
        match table {
            JournalTable::Versions => {
                let t = self.txn.open_table(OBJECTS_TABLE)?;
                let range = match &after {
                    Some(a) => {
                        t.range::<&[u8]>((Bound::Excluded(a.as_slice()), Bound::Unbounded))?
                    }
                    None => t.range::<&[u8]>(..)?,
                };
                for r in range {
                    let (k, v) = r?;
                    if push(k.value(), v.value()) {
                        full = true;
                        break;
                    }
                }
            }
            JournalTable::Buckets | JournalTable::Users => {
                let def = match table {
                    JournalTable::Buckets => BUCKETS_TABLE,
                    _ => USERS_TABLE,
                };
                let t = self.txn.open_table(def)?;
                let after = after.map(utf8).transpose()?;
                let range = match &after {
                    Some(a) => t.range::<&str>((Bound::Excluded(a.as_str()), Bound::Unbounded))?,
                    None => t.range::<&str>(..)?,
                };
                for r in range {
                    let (k, v) = r?;
                    if push(k.value().as_bytes(), v.value()) {
                        full = true;
                        break;
                    }
                }
            }
        }
        self.after = last;
        Ok(full)
    }
}

fn utf8(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|_| MetaError::Corrupt {
        what: "journal row",
        reason: "a bucket or user key that is not UTF-8".into(),
    })
}

/// Drops outbox records up to `through`, keeping the number of the last
/// one so that numbering goes on from it when the outbox is empty.
fn truncate(txn: &WriteTransaction, through: u64) -> Result<()> {
    txn.open_table(OUTBOX)?
        .retain_in::<u64, _>(..=through, |_, _| false)?;
    let kept = counter(txn, JOURNAL_SEQUENCE)?;
    set_counter(txn, JOURNAL_SEQUENCE, kept.max(through))
}

/// The last record in the outbox (0: none): a change of this transaction
/// is shipped once this is.
pub(crate) fn last_recorded(txn: &WriteTransaction) -> Result<u64> {
    Ok(txn
        .open_table(OUTBOX)?
        .last()?
        .map_or(0, |(k, _)| k.value()))
}

/// Every record up to this number is on the backends (or in a checkpoint
/// there): the outbox's first less one, everything when it is empty.
pub(crate) fn shipped_through(txn: &ReadTransaction) -> Result<u64> {
    let outbox = txn
        .open_table(OUTBOX)?
        .first()?
        .map_or(u64::MAX, |(k, _)| k.value().saturating_sub(1));
    let stale = txn
        .open_table(COUNTERS_TABLE)?
        .get(STALE)?
        .is_some_and(|v| v.value() != 0);
    // Stale: what waits for the next checkpoint (u64::MAX) waits.
    Ok(match stale {
        true => outbox.min(u64::MAX - 1),
        false => outbox,
    })
}

/// Empties the outbox: a store opened without the journal ships nothing,
/// so its garbage must not wait for it (a checkpoint at the next start
/// with the journal covers the records dropped).
pub(crate) fn drop_outbox(txn: &WriteTransaction) -> Result<()> {
    let last = last_recorded(txn)?;
    if last > 0 {
        truncate(txn, last)?;
    }
    Ok(())
}

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(OUTBOX)?;
    txn.open_table(UNITS)?;
    if counter(txn, JOURNAL_ID)? == 0 {
        set_counter(txn, JOURNAL_ID, rand::random::<u64>().max(1))?;
    }
    Ok(())
}

/// At an open without the journal: a store that never wrote one drops its
/// outbox (nothing will ship it, and no journal exists to recover from);
/// one that has a journal on the backends keeps it and marks it stale, so
/// garbage waits for the next checkpoint.
pub(crate) fn journal_off(txn: &WriteTransaction) -> Result<()> {
    need_checkpoint(txn)?;
    if counter(txn, LAST_CHECKPOINT)? > 0 || !txn.open_table(UNITS)?.is_empty()? {
        set_counter(txn, STALE, 1)
    } else {
        drop_outbox(txn)
    }
}

/// The journal position a garbage item added now waits for: the
/// transaction's records so far are the outbox's last, and one more may
/// follow the removal that made the garbage (the version that replaced
/// it, or a delete marker), so one past it. While the journal is stale,
/// the next checkpoint's.
pub(crate) fn hold_for_garbage(txn: &WriteTransaction) -> Result<u64> {
    if counter(txn, STALE)? != 0 {
        return Ok(u64::MAX);
    }
    Ok(match last_recorded(txn)? {
        0 => 0,
        last => last + 1,
    })
}

fn counter(txn: &WriteTransaction, name: &str) -> Result<u64> {
    Ok(txn
        .open_table(COUNTERS_TABLE)?
        .get(name)?
        .map_or(0, |v| v.value()))
}

fn set_counter(txn: &WriteTransaction, name: &str, value: u64) -> Result<()> {
    txn.open_table(COUNTERS_TABLE)?.insert(name, value)?;
    Ok(())
}

/// Marks the journal as missing changes: the writer's next step is a
/// checkpoint.
pub(crate) fn need_checkpoint(txn: &WriteTransaction) -> Result<()> {
    set_counter(txn, CHECKPOINT_NEEDED, 1)
}

/// Appends a row's new image to the outbox, in the transaction that
/// changes the row.
pub(crate) fn record(
    txn: &WriteTransaction,
    table: JournalTable,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let mut outbox = txn.open_table(OUTBOX)?;
    // The next number after the outbox's last; when it is empty, after
    // the last one shipped (kept by the truncation).
    let seq = match outbox.last()? {
        Some((last, _)) => last.value() + 1,
        None => counter(txn, JOURNAL_SEQUENCE)? + 1,
    };
    let image = RowImageRef { table, key, value };
    outbox.insert(seq, encode(&image)?.as_slice())?;
    Ok(())
}

/// [`RowImage`] borrowed: the same encoding, without copying the row.
#[derive(Serialize)]
struct RowImageRef<'a> {
    table: JournalTable,
    key: &'a [u8],
    value: Option<&'a [u8]>,
}

impl MetaStore {
    /// Outbox records in sequence order, about `max_bytes` of them at most
    /// (at least one when any is waiting).
    pub fn outbox(&self, max_bytes: usize) -> Result<OutboxBatch> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS_TABLE)?;
        let get = |name| -> Result<u64> { Ok(counters.get(name)?.map_or(0, |v| v.value())) };
        let mut batch = OutboxBatch {
            records: Vec::new(),
            generation: get(GENERATION_SEQUENCE_KEY)?,
            epoch: get(EPOCH)?,
            journal: get(JOURNAL_ID)?,
        };
        let mut bytes = 0;
        for r in txn.open_table(OUTBOX)?.iter()? {
            let (k, v) = r?;
            bytes += v.value().len() + 8;
            batch.records.push((k.value(), v.value().to_vec()));
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(batch)
    }

    /// Drops outbox records up to `through`, once they are on the backends.
    pub fn truncate_outbox(&self, through: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        truncate(&txn, through)?;
        txn.commit()?;
        Ok(())
    }

    /// Where the journal stands.
    pub fn journal_state(&self) -> Result<JournalState> {
        let txn = self.db.begin_read()?;
        let counters = txn.open_table(COUNTERS_TABLE)?;
        // Absent: a store from before the journal, or a new one.
        let checkpoint_needed = counters
            .get(CHECKPOINT_NEEDED)?
            .is_none_or(|v| v.value() != 0);
        let units = txn
            .open_table(UNITS)?
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value(), decode("journal unit", v.value())?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(JournalState {
            checkpoint_needed,
            units,
            outbox_len: txn.open_table(OUTBOX)?.len()?,
            last_checkpoint: counters.get(LAST_CHECKPOINT)?.map_or(0, |v| v.value()),
            epoch: counters.get(EPOCH)?.map_or(0, |v| v.value()),
            journal: counters.get(JOURNAL_ID)?.map_or(0, |v| v.value()),
        })
    }

    /// A number for a new journal unit, never given before.
    pub fn next_journal_unit(&self) -> Result<u64> {
        let txn = self.db.begin_write()?;
        let unit = counter(&txn, UNIT_SEQUENCE)? + 1;
        set_counter(&txn, UNIT_SEQUENCE, unit)?;
        txn.commit()?;
        Ok(unit)
    }

    /// Records a unit written to the backends (`truncate_through`: and
    /// drops the outbox records it holds, in the same transaction).
    pub fn record_unit(
        &self,
        unit: u64,
        record: &UnitRecord,
        truncate_through: Option<u64>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(UNITS)?
            .insert(unit, encode(record)?.as_slice())?;
        if let Some(through) = truncate_through {
            truncate(&txn, through)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records that checkpoint `checkpoint` is complete: the journal has
    /// every row again. Returns the units it makes useless (older
    /// checkpoints' parts, batches it covers), for their blobs' deletion.
    pub fn complete_checkpoint(&self, checkpoint: u64, seq: u64) -> Result<Vec<(u64, UnitRecord)>> {
        let txn = self.db.begin_write()?;
        set_counter(&txn, CHECKPOINT_NEEDED, 0)?;
        set_counter(&txn, LAST_CHECKPOINT, checkpoint)?;
        set_counter(&txn, STALE, 0)?;
        // The checkpoint holds every row as of `seq`: records up to it
        // need no batch.
        truncate(&txn, seq)?;
        let stale = txn
            .open_table(UNITS)?
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value(), decode::<UnitRecord>("journal unit", v.value())?))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|(_, u)| match u.kind {
                UnitKind::Checkpoint => u.checkpoint < checkpoint,
                UnitKind::Batch => u.last_seq <= seq,
            } && !u.pending)
            .collect();
        txn.commit()?;
        Ok(stale)
    }

    /// Forgets units whose blobs are deleted.
    pub fn forget_units(&self, units: &[u64]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(UNITS)?;
            for unit in units {
                table.remove(unit)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every journaled row as of now, to cut a checkpoint from.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let txn = self.db.begin_read()?;
        let (seq, generation, epoch, journal) = {
            let counters = txn.open_table(COUNTERS_TABLE)?;
            let get = |name| -> Result<u64> { Ok(counters.get(name)?.map_or(0, |v| v.value())) };
            let last = txn
                .open_table(OUTBOX)?
                .last()?
                .map_or(0, |(k, _)| k.value());
            (
                get(JOURNAL_SEQUENCE)?.max(last),
                get(GENERATION_SEQUENCE_KEY)?,
                get(EPOCH)?,
                get(JOURNAL_ID)?,
            )
        };
        Ok(Snapshot {
            txn,
            seq,
            generation,
            epoch,
            journal,
            table: 0,
            after: None,
        })
    }

    /// Whether the store holds no bucket, user or version (a restore's
    /// target must).
    pub fn is_empty(&self) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(BUCKETS_TABLE)?.is_empty()?
            && txn.open_table(USERS_TABLE)?.is_empty()?
            && txn.open_table(OBJECTS_TABLE)?.is_empty()?)
    }

    /// Applies row images as they are, in one transaction (recovery).
    pub fn restore(&self, rows: &[RowImage]) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut buckets = txn.open_table(BUCKETS_TABLE)?;
            let mut users = txn.open_table(USERS_TABLE)?;
            let mut versions = txn.open_table(OBJECTS_TABLE)?;
            for row in rows {
                match row.table {
                    JournalTable::Versions => {
                        if keys::split_version_key(&row.key).is_none() {
                            return Err(MetaError::Corrupt {
                                what: "journal row",
                                reason: "a version key of the wrong shape".into(),
                            });
                        }
                        match &row.value {
                            Some(v) => versions.insert(row.key.as_slice(), v.as_slice())?,
                            None => versions.remove(row.key.as_slice())?,
                        };
                    }
                    JournalTable::Buckets | JournalTable::Users => {
                        let table = match row.table {
                            JournalTable::Buckets => &mut buckets,
                            _ => &mut users,
                        };
                        let key = utf8(row.key.clone())?;
                        match &row.value {
                            Some(v) => table.insert(key.as_str(), v.as_slice())?,
                            None => table.remove(key.as_str())?,
                        };
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
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
        let txn = self.db.begin_write()?;
        let (max_version, markers) = {
            let mut max_version = 0u64;
            let mut markers = 0u64;
            for r in txn.open_table(OBJECTS_TABLE)?.iter()? {
                let (k, v) = r?;
                let summary = decode_summary(v.value())?;
                let seq = keys::split_version_key(k.value()).map_or(0, |(_, _, s)| s);
                max_version = max_version.max(seq).max(summary.generation);
                markers += u64::from(summary.delete_marker);
            }
            (max_version, markers)
        };
        set_counter(
            &txn,
            GENERATION_SEQUENCE_KEY,
            counter(&txn, GENERATION_SEQUENCE_KEY)?
                .max(generation)
                .max(max_version),
        )?;
        crate::store::set_delete_markers(&txn, markers)?;
        set_counter(
            &txn,
            JOURNAL_SEQUENCE,
            counter(&txn, JOURNAL_SEQUENCE)?.max(journal_seq),
        )?;
        set_counter(&txn, EPOCH, counter(&txn, EPOCH)?.max(epoch))?;
        set_counter(&txn, JOURNAL_ID, journal)?;
        let max_unit = found_units
            .iter()
            .map(|(u, _)| *u)
            .max()
            .unwrap_or(0)
            .max(last_unit);
        set_counter(
            &txn,
            UNIT_SEQUENCE,
            counter(&txn, UNIT_SEQUENCE)?.max(max_unit),
        )?;
        {
            let mut units = txn.open_table(UNITS)?;
            for (unit, record) in found_units {
                // Two epochs' units of one number: the first is kept (the
                // other's blobs stay; nothing reads them).
                if units.get(unit)?.is_none() {
                    units.insert(unit, encode(record)?.as_slice())?;
                }
            }
        }
        need_checkpoint(&txn)?;
        txn.commit()?;
        Ok(())
    }
}
