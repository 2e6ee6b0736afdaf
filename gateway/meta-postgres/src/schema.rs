//! The schema, as numbered migrations applied at startup.
//!
//! `shardgate_schema` records each version applied. A gateway applies the
//! ones it has and the database lacks, each in the transaction that
//! records it, and refuses a database at a version it does not know (a
//! newer release migrated it: running on would misread its rows).
//! Gateways starting together race to migrate: the loser's transaction
//! conflicts (or finds the version taken) and runs again, then finds the
//! work done.
//!
//! The data is one ordered key-value table (`kv`: a table name, a `bytea`
//! key, a `bytea` value), the shape of the redb store's tables: the same
//! encoded records under the same keys, compared bytewise in both. So the
//! S3 rules, written once over keys and values, run on either engine
//! (`kv.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::error::SqlState;

use crate::{PgError, PgStore, Result};

/// The migrations, version 1 first. A released migration never changes:
/// a change is a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the key-value table every record lives in.
    "CREATE TABLE kv (
         tbl TEXT NOT NULL,
         key BYTEA NOT NULL,
         value BYTEA NOT NULL,
         PRIMARY KEY (tbl, key));",
];

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Times a migration is started again after losing a race to another
/// gateway's (beyond the conflicts `serializable` retries itself).
const RACES: u32 = 5;

/// Brings the database to [`VERSION`], or refuses a newer one.
pub(crate) async fn migrate(store: &PgStore) -> Result<()> {
    let mut races = 0;
    loop {
        match migrate_once(store).await {
            // Two gateways created the version table, or recorded the same
            // version, at once: the other one's work is there now. (`IF NOT
            // EXISTS` does not guard two creations at the same instant: the
            // loser fails with a duplicate table, a duplicate type or a
            // unique violation in the catalog.)
            Err(e) if races < RACES && lost_a_race(&e) => {
                races += 1;
            }
            other => return other,
        }
    }
}

fn lost_a_race(e: &PgError) -> bool {
    e.sqlstate().is_some_and(|c| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
        ]
        .contains(c)
    })
}

async fn migrate_once(store: &PgStore) -> Result<()> {
    store
        .client()
        .await?
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS shardgate_schema (
                 version INT PRIMARY KEY,
                 applied_unix_ms BIGINT NOT NULL)",
        )
        .await?;
    store
        .serializable(async |tx| {
            let found: Option<i32> = tx
                .query_one("SELECT max(version) FROM shardgate_schema", &[])
                .await?
                .get(0);
            let found = found.unwrap_or(0);
            if found > VERSION {
                return Err(PgError::NewerSchema {
                    found,
                    known: VERSION,
                });
            }
            for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                let version = index as i32 + 1;
                tx.execute(
                    "INSERT INTO shardgate_schema (version, applied_unix_ms) VALUES ($1, $2)",
                    &[&version, &now_unix_ms()],
                )
                .await?;
                tx.batch_execute(sql).await?;
                tracing::info!(version, "metadata schema migrated");
            }
            Ok(())
        })
        .await
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
