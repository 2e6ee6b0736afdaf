//! redb as an [`Engine`]: each [`Table`] is the redb table of its name and
//! types, so a store written before this seam reads the same.
//!
//! A transaction opens a table once, on first use, and keeps it open until
//! it ends (redb refuses to open a table twice in one write transaction).

use std::cell::{OnceCell, RefCell};
use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::tables::{ALL, KeyKind, Table, ValueKind};
use super::{Engine, KeyRange, KvRead, KvSnapshot, KvWrite, Visit, decode_u64};
use crate::db::Db;
use crate::error::{MetaError, Result};

/// The embedded engine: one redb file.
#[derive(Clone, Debug)]
pub struct RedbEngine {
    db: Arc<Db>,
}

impl RedbEngine {
    pub(crate) fn new(db: Arc<Db>) -> Self {
        Self { db }
    }

    /// Opens the redb file at `path`, creating it if there is none.
    pub fn create(path: &std::path::Path) -> Result<Self> {
        Ok(Self::new(Arc::new(Db::create(path)?)))
    }
}

impl Engine for RedbEngine {
    fn read(&self, body: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read()?;
        let kv = RedbRead {
            txn: &txn,
            open: std::array::from_fn(|_| OnceCell::new()),
        };
        body(&kv)
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut kv = RedbWrite {
                txn: &txn,
                open: std::array::from_fn(|_| OnceCell::new()),
            };
            body(&mut kv)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>> {
        Ok(Box::new(RedbSnapshot {
            txn: self.db.begin_read()?,
        }))
    }
}

/// Runs `body` inside a redb write transaction that a rule not yet moved
/// onto [`KvWrite`] holds. The rule must have closed its tables first:
/// redb refuses a table opened twice.
pub(crate) fn within<T>(
    txn: &redb::WriteTransaction,
    body: impl FnOnce(&mut dyn KvWrite) -> Result<T>,
) -> Result<T> {
    let mut kv = RedbWrite {
        txn,
        open: std::array::from_fn(|_| OnceCell::new()),
    };
    body(&mut kv)
}

/// Runs `body` inside a redb read transaction a rule holds.
pub(crate) fn within_read<T>(
    txn: &redb::ReadTransaction,
    body: impl FnOnce(&dyn KvRead) -> Result<T>,
) -> Result<T> {
    let kv = RedbRead {
        txn,
        open: std::array::from_fn(|_| OnceCell::new()),
    };
    body(&kv)
}

/// A redb read transaction owned, for [`Engine::snapshot`]: each call
/// opens the tables it reads.
struct RedbSnapshot {
    txn: redb::ReadTransaction,
}

impl KvRead for RedbSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        within_read(&self.txn, |kv| kv.get(table, key))
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        within_read(&self.txn, |kv| kv.scan(table, range, reverse, visit))
    }

    fn len(&self, table: Table) -> Result<u64> {
        within_read(&self.txn, |kv| kv.len(table))
    }
}

impl KvSnapshot for RedbSnapshot {}

const TABLES: usize = ALL.len();

/// A table of each key and value type the tables use, opened read-only
/// (`ReadOnlyTable<K, V>`) or for writing (`redb::Table<'t, K, V>`).
macro_rules! typed_tables {
    ($name:ident, $($lt:lifetime)?, $table:ident) => {
        enum $name$(<$lt>)? {
            Bytes($table<$($lt,)? &'static [u8], &'static [u8]>),
            Str($table<$($lt,)? &'static str, &'static [u8]>),
            U64($table<$($lt,)? u64, &'static [u8]>),
            StrU64($table<$($lt,)? &'static str, u64>),
            BytesU8($table<$($lt,)? &'static [u8], u8>),
        }
    };
}
typed_tables!(ReadTable, , ReadOnlyTable);
typed_tables!(WriteTable, 't, WTable);
type WTable<'t, K, V> = redb::Table<'t, K, V>;

/// Opens `$table` of `$txn` as the variant of `$enum` its types name.
macro_rules! open_typed {
    ($enum:ident, $txn:expr, $table:expr) => {{
        let t: Table = $table;
        let def = t.name;
        Ok(match (t.key, t.value) {
            (KeyKind::Bytes, ValueKind::Bytes) => {
                $enum::Bytes($txn.open_table(TableDefinition::new(def))?)
            }
            (KeyKind::Str, ValueKind::Bytes) => {
                $enum::Str($txn.open_table(TableDefinition::new(def))?)
            }
            (KeyKind::U64, ValueKind::Bytes) => {
                $enum::U64($txn.open_table(TableDefinition::new(def))?)
            }
            (KeyKind::Str, ValueKind::U64) => {
                $enum::StrU64($txn.open_table(TableDefinition::new(def))?)
            }
            (KeyKind::Bytes, ValueKind::U8) => {
                $enum::BytesU8($txn.open_table(TableDefinition::new(def))?)
            }
            _ => return Err(unsupported(t)),
        })
    }};
}

fn unsupported(table: Table) -> MetaError {
    MetaError::Corrupt {
        what: "table",
        reason: format!(
            "{}: no redb table has {:?} keys and {:?} values",
            table.name, table.key, table.value
        ),
    }
}

/// Visits the rows of a typed table's range, one way or the other,
/// skipping those outside `$filter` (a string table's widened bounds).
macro_rules! scan_rows {
    ($t:expr, $kr:ty, $range:expr, $reverse:expr, $filter:expr, $visit:expr,
     |$k:ident, $v:ident| ($kb:expr, $vb:expr)) => {{
        let mut rows = $t.range::<$kr>($range)?;
        loop {
            let row = if $reverse {
                rows.next_back()
            } else {
                rows.next()
            };
            let Some(row) = row else { break };
            let ($k, $v) = row?;
            let key = $kb;
            let key: &[u8] = key.as_ref();
            if let Some(filter) = $filter {
                match outside(filter, key, $reverse) {
                    Some(ControlFlow::Break(())) => break,
                    Some(ControlFlow::Continue(())) => continue,
                    None => {}
                }
            }
            let value = $vb;
            if $visit(key, value.as_ref())?.is_break() {
                break;
            }
        }
    }};
}

/// The operations both kinds of opened table answer.
macro_rules! readable_ops {
    ($enum:ident, $any:expr, $op:ident, $($args:expr),*) => {
        match $any {
            $enum::Bytes(t) => $op!(t, bytes, $($args),*),
            $enum::Str(t) => $op!(t, str, $($args),*),
            $enum::U64(t) => $op!(t, u64, $($args),*),
            $enum::StrU64(t) => $op!(t, str_u64, $($args),*),
            $enum::BytesU8(t) => $op!(t, bytes_u8, $($args),*),
        }
    };
}

macro_rules! get_op {
    ($t:ident, bytes, $key:expr) => {
        $t.get($key)?.map(|g| g.value().to_vec())
    };
    ($t:ident, str, $key:expr) => {
        $t.get(str_key($key)?)?.map(|g| g.value().to_vec())
    };
    ($t:ident, u64, $key:expr) => {
        $t.get(u64_key($key)?)?.map(|g| g.value().to_vec())
    };
    ($t:ident, str_u64, $key:expr) => {
        $t.get(str_key($key)?)?
            .map(|g| g.value().to_be_bytes().to_vec())
    };
    ($t:ident, bytes_u8, $key:expr) => {
        $t.get($key)?.map(|g| vec![g.value()])
    };
}

macro_rules! scan_op {
    ($t:ident, bytes, $range:expr, $reverse:expr, $visit:expr) => {
        scan_rows!(
            $t,
            &[u8],
            $range,
            $reverse,
            None::<&KeyRange<'_>>,
            $visit,
            |k, v| (k.value(), v.value())
        )
    };
    ($t:ident, str, $range:expr, $reverse:expr, $visit:expr) => {{
        let (lo, hi, widened) = str_bounds($range);
        let filter = widened.then_some(&$range);
        scan_rows!($t, &str, (lo, hi), $reverse, filter, $visit, |k, v| (
            k.value().as_bytes(),
            v.value()
        ))
    }};
    ($t:ident, u64, $range:expr, $reverse:expr, $visit:expr) => {
        scan_rows!(
            $t,
            u64,
            u64_bounds($range)?,
            $reverse,
            None::<&KeyRange<'_>>,
            $visit,
            |k, v| (k.value().to_be_bytes(), v.value())
        )
    };
    ($t:ident, str_u64, $range:expr, $reverse:expr, $visit:expr) => {{
        let (lo, hi, widened) = str_bounds($range);
        let filter = widened.then_some(&$range);
        scan_rows!($t, &str, (lo, hi), $reverse, filter, $visit, |k, v| (
            k.value().as_bytes(),
            v.value().to_be_bytes()
        ))
    }};
    ($t:ident, bytes_u8, $range:expr, $reverse:expr, $visit:expr) => {
        scan_rows!(
            $t,
            &[u8],
            $range,
            $reverse,
            None::<&KeyRange<'_>>,
            $visit,
            |k, v| (k.value(), [v.value()])
        )
    };
}

macro_rules! len_op {
    ($t:ident, $kind:ident,) => {
        $t.len()?
    };
}

struct RedbRead<'t> {
    txn: &'t redb::ReadTransaction,
    open: [OnceCell<Option<ReadTable>>; TABLES],
}

impl RedbRead<'_> {
    /// The table, opened on first use; `None` when the store has never had
    /// it (a write creates it).
    fn table(&self, table: Table) -> Result<Option<&ReadTable>> {
        let cell = &self.open[table.index];
        if let Some(open) = cell.get() {
            return Ok(open.as_ref());
        }
        let opened = (|| -> Result<ReadTable> { open_typed!(ReadTable, self.txn, table) })();
        let opened = match opened {
            Ok(t) => Some(t),
            Err(MetaError::Store(e)) if matches!(*e, redb::Error::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(cell.get_or_init(|| opened).as_ref())
    }
}

impl KvRead for RedbRead<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self.table(table)? {
            Some(t) => readable_ops!(ReadTable, t, get_op, key),
            None => None,
        })
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        if let Some(t) = self.table(table)? {
            readable_ops!(ReadTable, t, scan_op, range, reverse, visit);
        }
        Ok(())
    }

    fn len(&self, table: Table) -> Result<u64> {
        Ok(match self.table(table)? {
            Some(t) => readable_ops!(ReadTable, t, len_op,),
            None => 0,
        })
    }
}

struct RedbWrite<'t> {
    txn: &'t redb::WriteTransaction,
    open: [OnceCell<RefCell<WriteTable<'t>>>; TABLES],
}

impl<'t> RedbWrite<'t> {
    fn table(&self, table: Table) -> Result<&RefCell<WriteTable<'t>>> {
        let cell = &self.open[table.index];
        if let Some(open) = cell.get() {
            return Ok(open);
        }
        let opened = (|| -> Result<WriteTable<'t>> { open_typed!(WriteTable, self.txn, table) })()?;
        Ok(cell.get_or_init(|| RefCell::new(opened)))
    }

    fn read_table(&self, table: Table) -> Result<std::cell::Ref<'_, WriteTable<'t>>> {
        self.table(table)?
            .try_borrow()
            .map_err(|_| MetaError::Task(format!("table {} read while written", table.name)))
    }

    fn write_table(&mut self, table: Table) -> Result<std::cell::RefMut<'_, WriteTable<'t>>> {
        self.table(table)?
            .try_borrow_mut()
            .map_err(|_| MetaError::Task(format!("table {} written while read", table.name)))
    }
}

impl KvRead for RedbWrite<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let t = self.read_table(table)?;
        Ok(readable_ops!(WriteTable, &*t, get_op, key))
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<()> {
        let t = self.read_table(table)?;
        readable_ops!(WriteTable, &*t, scan_op, range, reverse, visit);
        Ok(())
    }

    fn len(&self, table: Table) -> Result<u64> {
        let t = self.read_table(table)?;
        Ok(readable_ops!(WriteTable, &*t, len_op,))
    }
}

impl KvWrite for RedbWrite<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let mut t = self.write_table(table)?;
        match &mut *t {
            WriteTable::Bytes(t) => drop(t.insert(key, value)?),
            WriteTable::Str(t) => drop(t.insert(str_key(key)?, value)?),
            WriteTable::U64(t) => drop(t.insert(u64_key(key)?, value)?),
            WriteTable::StrU64(t) => drop(t.insert(str_key(key)?, decode_u64(value)?)?),
            WriteTable::BytesU8(t) => drop(t.insert(key, u8_value(value)?)?),
        }
        Ok(())
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut t = self.write_table(table)?;
        Ok(match &mut *t {
            WriteTable::Bytes(t) => t.remove(key)?.map(|g| g.value().to_vec()),
            WriteTable::Str(t) => t.remove(str_key(key)?)?.map(|g| g.value().to_vec()),
            WriteTable::U64(t) => t.remove(u64_key(key)?)?.map(|g| g.value().to_vec()),
            WriteTable::StrU64(t) => t
                .remove(str_key(key)?)?
                .map(|g| g.value().to_be_bytes().to_vec()),
            WriteTable::BytesU8(t) => t.remove(key)?.map(|g| vec![g.value()]),
        })
    }

    fn remove_range(&mut self, table: Table, range: KeyRange<'_>) -> Result<u64> {
        // The keys first, then their removal: redb's `retain_in` cannot
        // count, and a string table's bounds may have been widened.
        let mut keys = Vec::new();
        self.scan(table, range, false, &mut |k, _| {
            keys.push(k.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        for key in &keys {
            self.remove(table, key)?;
        }
        Ok(keys.len() as u64)
    }
}

// Keys and values between the rules' bytes and redb's types.

fn str_key(key: &[u8]) -> Result<&str> {
    std::str::from_utf8(key).map_err(|_| MetaError::InvalidKey("a name that is not UTF-8"))
}

fn u64_key(key: &[u8]) -> Result<u64> {
    decode_u64(key).map_err(|_| MetaError::InvalidKey("a number key that is not 8 bytes"))
}

fn u8_value(value: &[u8]) -> Result<u8> {
    match value {
        [b] => Ok(*b),
        _ => Err(MetaError::Corrupt {
            what: "one-byte value",
            reason: format!("{} bytes, not 1", value.len()),
        }),
    }
}

/// A `u64` table's bounds as numbers. A bound shorter or longer than 8
/// bytes is refused: every `u64` key the rules build is 8.
fn u64_bounds(range: KeyRange<'_>) -> Result<(Bound<u64>, Bound<u64>)> {
    let conv = |b: Bound<&[u8]>| -> Result<Bound<u64>> {
        Ok(match b {
            Bound::Included(b) => Bound::Included(u64_key(b)?),
            Bound::Excluded(b) => Bound::Excluded(u64_key(b)?),
            Bound::Unbounded => Bound::Unbounded,
        })
    };
    Ok((conv(range.0)?, conv(range.1)?))
}

/// A string table's bounds: the bounds themselves when they are UTF-8;
/// otherwise wider ones (the longest UTF-8 start of the lower bound, no
/// upper bound, and whether they were widened), so that the scan skips
/// the rows outside the range asked for.
fn str_bounds(range: KeyRange<'_>) -> (Bound<&str>, Bound<&str>, bool) {
    fn exact(b: Bound<&[u8]>) -> Option<Bound<&str>> {
        Some(match b {
            Bound::Included(b) => Bound::Included(std::str::from_utf8(b).ok()?),
            Bound::Excluded(b) => Bound::Excluded(std::str::from_utf8(b).ok()?),
            Bound::Unbounded => Bound::Unbounded,
        })
    }
    if let (Some(lo), Some(hi)) = (exact(range.0), exact(range.1)) {
        return (lo, hi, false);
    }
    let lower = match range.0 {
        Bound::Included(b) | Bound::Excluded(b) => {
            let valid = match std::str::from_utf8(b) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or_default(),
            };
            Bound::Included(valid)
        }
        Bound::Unbounded => Bound::Unbounded,
    };
    (lower, Bound::Unbounded, true)
}

/// For a row of a widened scan: `None` when `key` is in `range`; skip it
/// (`Continue`) or stop (`Break`: past the range's end, going forward).
fn outside(range: &KeyRange<'_>, key: &[u8], reverse: bool) -> Option<ControlFlow<()>> {
    let above = match range.0 {
        Bound::Included(b) => key >= b,
        Bound::Excluded(b) => key > b,
        Bound::Unbounded => true,
    };
    let below = match range.1 {
        Bound::Included(b) => key <= b,
        Bound::Excluded(b) => key < b,
        Bound::Unbounded => true,
    };
    match (above, below) {
        (true, true) => None,
        (true, false) if !reverse => Some(ControlFlow::Break(())),
        (false, true) if reverse => Some(ControlFlow::Break(())),
        _ => Some(ControlFlow::Continue(())),
    }
}
