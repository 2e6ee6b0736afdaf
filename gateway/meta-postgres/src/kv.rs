//! Ordered key-value access inside a transaction: what the redb store's
//! tables offer (point reads, writes, deletes, ranges in key order, either
//! way), over the `kv` table.
//!
//! Keys compare bytewise, as `[u8]` does in Rust and in redb (`bytea`
//! comparison is `memcmp`, then length), so a range scan here returns what
//! the same scan returns there. Integers that redb keys natively are
//! written big-endian ([`u64_key`]) to keep their order.

use std::ops::Bound;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Transaction};

use crate::Result;

/// `n` as a key that sorts as the number does.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The key-value table through one transaction (or a connection whose
/// transaction was begun by hand: a held snapshot).
pub struct Kv<'a, C = Transaction<'a>> {
    tx: &'a C,
}

impl<C> Clone for Kv<'_, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C> Copy for Kv<'_, C> {}

impl<C> std::fmt::Debug for Kv<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

impl<'a, C: GenericClient + Sync> Kv<'a, C> {
    pub fn new(tx: &'a C) -> Self {
        Self { tx }
    }

    /// The value under `key` in `table`.
    pub async fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = self
            .tx
            .query_opt(
                "SELECT value FROM kv WHERE tbl = $1 AND key = $2",
                &[&table, &key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Sets `key` to `value` (inserted, or replacing what was there).
    pub async fn put(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO kv (tbl, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (tbl, key) DO UPDATE SET value = EXCLUDED.value",
                &[&table, &key, &value],
            )
            .await?;
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub async fn delete(&self, table: &str, key: &[u8]) -> Result<bool> {
        let n = self
            .tx
            .execute(
                "DELETE FROM kv WHERE tbl = $1 AND key = $2",
                &[&table, &key],
            )
            .await?;
        Ok(n > 0)
    }

    /// Removes `key`; what it held.
    pub async fn take(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = self
            .tx
            .query_opt(
                "DELETE FROM kv WHERE tbl = $1 AND key = $2 RETURNING value",
                &[&table, &key],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// How many entries `table` holds (a count: for statistics).
    pub async fn count(&self, table: &str) -> Result<u64> {
        let row = self
            .tx
            .query_one("SELECT count(*) FROM kv WHERE tbl = $1", &[&table])
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// At most `limit` entries of `table` between `start` and `end`, in key
    /// order, or from the end when `reverse`.
    pub async fn range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = i64::from(limit);
        let bounds = [start, end];
        let (mut sql, mut params) = where_in("SELECT key, value FROM kv", &table, &bounds);
        sql.push_str(&format!(
            " ORDER BY key {} LIMIT ${}",
            if reverse { "DESC" } else { "ASC" },
            params.len() + 1
        ));
        params.push(&limit);
        let rows = self.tx.query(&sql, &params).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Removes the entries of `table` between `start` and `end`; how many.
    pub async fn delete_range(
        &self,
        table: &str,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<u64> {
        let bounds = [start, end];
        let (sql, params) = where_in("DELETE FROM kv", &table, &bounds);
        Ok(self.tx.execute(&sql, &params).await?)
    }
}

/// `head` restricted to `table`'s keys within `bounds` (lower, upper),
/// and its parameters.
fn where_in<'p>(
    head: &str,
    table: &'p &str,
    bounds: &'p [Bound<&'p [u8]>; 2],
) -> (String, Vec<&'p (dyn ToSql + Sync)>) {
    let mut sql = format!("{head} WHERE tbl = $1");
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![table];
    for (bound, included, excluded) in [(&bounds[0], ">=", ">"), (&bounds[1], "<=", "<")] {
        let (key, op) = match bound {
            Bound::Included(key) => (key, included),
            Bound::Excluded(key) => (key, excluded),
            Bound::Unbounded => continue,
        };
        params.push(key);
        sql.push_str(&format!(" AND key {op} ${}", params.len()));
    }
    (sql, params)
}
