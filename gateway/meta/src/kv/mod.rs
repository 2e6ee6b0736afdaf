//! The metadata's rules see an engine as ordered byte tables read and
//! written in one transaction: [`KvRead`] and [`KvWrite`], opened by an
//! [`Engine`]. Two engines implement them: redb's tables ([`RedbEngine`],
//! the embedded default) and a table of PostgreSQL's wire protocol
//! (`shardgate-meta-postgres`, for several gateways over one database).
//!
//! Why one set of rules over keys and values, not one per engine: every
//! rule (Object Lock, conditional writes, multipart completion, the
//! journal's outbox) written twice would be two rules that drift. redb's
//! tables are byte, string or `u64` keyed; here a string is its UTF-8 and
//! a `u64` its 8 big-endian bytes, both of which sort as the typed key
//! does, so a range scan returns the same rows on every engine and redb
//! stores keep their format.
//!
//! A write transaction's body may run more than once: an engine of several
//! writers (PostgreSQL) runs it again when the database reports a
//! serialization conflict. A body must therefore change nothing but the
//! engine (and what it computes from it); whatever it does outside must be
//! safe to repeat.

pub(crate) mod redb;
pub mod tables;

use std::ops::{Bound, ControlFlow};

use crate::error::{MetaError, Result};

pub use self::redb::RedbEngine;
pub use self::tables::Table;

/// A range of keys: the lower and the upper bound.
pub type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Every key.
pub const ALL_KEYS: KeyRange<'static> = (Bound::Unbounded, Bound::Unbounded);

/// What [`KvRead::scan`] calls with each row: go on, or stop there.
pub type Visit<'v> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'v;

/// Reads inside one transaction: a consistent view of every table.
pub trait KvRead {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Calls `visit` with the rows whose keys are in `range`, in key order
    /// (descending when `reverse`), until it returns
    /// [`ControlFlow::Break`] or the rows run out.
    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<()>;

    /// How many rows the table holds. (Cheap on redb; a count on others:
    /// for statistics, not for requests.)
    fn len(&self, table: Table) -> Result<u64>;
}

/// Writes inside one transaction, which sees its own writes.
pub trait KvWrite: KvRead {
    /// Sets `key` to `value`, inserted or replacing what was there.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;

    /// Removes `key`; what it held.
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Removes every row in `range`; how many there were.
    fn remove_range(&mut self, table: Table, range: KeyRange<'_>) -> Result<u64>;
}

/// A read transaction that outlives the call that opened it.
pub trait KvSnapshot: KvRead + Send {}

/// An engine: transactions over the metadata's tables.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// Runs `body` in a read transaction.
    fn read(&self, body: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()>;

    /// Runs `body` in a write transaction and commits what it wrote when it
    /// returns `Ok`; an `Err` leaves the tables as they were. The engine may
    /// run `body` again (see the module's documentation).
    fn write(&self, body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<()>) -> Result<()>;

    /// [`Engine::write`] of a transaction that touches only rows few
    /// others write (leases, gateways' rows): where writers take turns, it
    /// need not wait its turn, so a stalled writer cannot hold back the
    /// renewals that keep gateways alive.
    fn write_apart(&self, body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<()>) -> Result<()> {
        self.write(body)
    }

    /// A read transaction held across calls (a checkpoint reads one in
    /// parts, over minutes): every read of it sees the same state.
    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>>;
}

/// Runs `body` in a read transaction of `engine`; its result.
pub fn read<T>(engine: &dyn Engine, mut body: impl FnMut(&dyn KvRead) -> Result<T>) -> Result<T> {
    let mut out = None;
    engine.read(&mut |kv| {
        out = Some(body(kv)?);
        Ok(())
    })?;
    out.ok_or_else(no_answer)
}

/// Runs `body` in a write transaction of `engine` and commits it; its
/// result. `body` may run more than once.
pub fn write<T>(
    engine: &dyn Engine,
    mut body: impl FnMut(&mut dyn KvWrite) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    engine.write(&mut |kv| {
        out = Some(body(kv)?);
        Ok(())
    })?;
    out.ok_or_else(no_answer)
}

/// [`write`] through [`Engine::write_apart`].
pub fn write_apart<T>(
    engine: &dyn Engine,
    mut body: impl FnMut(&mut dyn KvWrite) -> Result<T>,
) -> Result<T> {
    let mut out = None;
    engine.write_apart(&mut |kv| {
        out = Some(body(kv)?);
        Ok(())
    })?;
    out.ok_or_else(no_answer)
}

/// [`write`] of a body whose errors are its own type: an error it returns
/// rolls the transaction back and comes back as it was.
pub fn write_or<T, E: From<MetaError>>(
    engine: &dyn Engine,
    mut body: impl FnMut(&mut dyn KvWrite) -> Result<T, E>,
) -> Result<T, E> {
    let mut out = None;
    let mut refused = None;
    let outcome = engine.write(&mut |kv| {
        refused = None;
        match body(kv) {
            Ok(v) => {
                out = Some(v);
                Ok(())
            }
            Err(e) => {
                refused = Some(e);
                Err(MetaError::Task("the transaction's rule refused it".into()))
            }
        }
    });
    match (outcome, refused) {
        (Ok(()), _) => out.ok_or_else(|| no_answer().into()),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e.into()),
    }
}

fn no_answer() -> MetaError {
    MetaError::Task("the metadata engine returned without running the transaction".into())
}

/// Reads every engine offers, built on [`KvRead`].
pub trait KvReadExt: KvRead {
    /// At most `limit` rows of `range`, in key order (descending when
    /// `reverse`).
    fn rows(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.scan(table, range, reverse, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(if out.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(out)
    }

    /// The first row of `range` (the last when `reverse`).
    fn first_in(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self.rows(table, range, reverse, 1)?.pop())
    }

    /// The first key of `range` (the last when `reverse`), without its
    /// value.
    fn first_key(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
    ) -> Result<Option<Vec<u8>>> {
        let mut key = None;
        self.scan(table, range, reverse, &mut |k, _| {
            key = Some(k.to_vec());
            Ok(ControlFlow::Break(()))
        })?;
        Ok(key)
    }

    /// The `u64` under `key` (a counter: [`tables::ValueKind::U64`]).
    fn get_u64(&self, table: Table, key: &[u8]) -> Result<Option<u64>> {
        self.get(table, key)?.map(|v| decode_u64(&v)).transpose()
    }
}

impl<T: KvRead + ?Sized> KvReadExt for T {}

/// `n` as a key (or a counter's value) that sorts as the number does.
pub fn u64_bytes(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The number [`u64_bytes`] wrote.
pub fn decode_u64(bytes: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| MetaError::Corrupt {
            what: "integer",
            reason: format!("{} bytes, not 8", bytes.len()),
        })
}

/// The smallest key greater than every key starting with `prefix` (none:
/// every key from `prefix` on starts with it).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    crate::keys::successor(prefix)
}
