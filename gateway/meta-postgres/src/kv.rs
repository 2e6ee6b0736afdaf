//! Ordered key-value access inside a transaction: what the redb store's
//! tables offer (point reads, writes, deletes, ranges in key order, either
//! way), over the `kv` table.
//!
//! Keys compare bytewise, as `[u8]` does in Rust and in redb (`bytea`
//! comparison is `memcmp`, then length), so a range scan here returns what
//! the same scan returns there. Integers that redb keys natively are
//! written big-endian ([`u64_key`]) to keep their order.

use std::ops::Bound;

use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::Result;

/// `n` as a key that sorts as the number does.
pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// The key-value table through one transaction.
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    tx: &'a Transaction<'a>,
}

impl std::fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

impl<'a> Kv<'a> {
    pub fn new(tx: &'a Transaction<'a>) -> Self {
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
        let mut sql = String::from("SELECT key, value FROM kv WHERE tbl = $1");
        let limit = i64::from(limit);
        let mut keys: Vec<&[u8]> = Vec::with_capacity(2);
        for (bound, included, excluded) in [(start, ">=", ">"), (end, "<=", "<")] {
            let (key, op) = match bound {
                Bound::Included(key) => (key, included),
                Bound::Excluded(key) => (key, excluded),
                Bound::Unbounded => continue,
            };
            keys.push(key);
            sql.push_str(&format!(" AND key {op} ${}", keys.len() + 1));
        }
        sql.push_str(&format!(
            " ORDER BY key {} LIMIT ${}",
            if reverse { "DESC" } else { "ASC" },
            keys.len() + 2
        ));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&table];
        params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
        params.push(&limit);
        let rows = self.tx.query(&sql, &params).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
