//! The gateway's metadata on PostgreSQL, for several gateways serving one
//! namespace (issue 23): the connection pool, the schema and its
//! migrations, and serializable transactions retried on conflict.
//!
//! Why PostgreSQL's wire protocol and little more: CockroachDB and
//! YugabyteDB speak it too, so what is written here keeps to what they
//! share: one ordered `bytea`-keyed table, `SERIALIZABLE` writes and
//! `REPEATABLE READ READ ONLY` reads, `statement_timeout`, SQLSTATE 40001
//! and 40P01 retried with backoff. Every S3 rule is one transaction, as it
//! is one redb transaction in `shardgate-meta`. The one PostgreSQL feature
//! used, the session advisory lock that makes writers take turns
//! (`engine.rs`), has a fallback: where the function is undefined the
//! writers go without it, and their conflicts are retried.
//!
//! What would differ on each (only PostgreSQL runs here: Debian packages
//! neither of the others):
//! - **PostgreSQL**: as built and tested (`tests/`, `tests/gateways.rs`).
//! - **CockroachDB**: serializable by default; no `pg_advisory_lock`, so
//!   writers of several gateways conflict on the store-wide sequence rows
//!   and retry (measured on PostgreSQL without the lock: 3 gateways' PUTs
//!   took 0.9-1.8 s instead of 0.13 s), until those rows are split per
//!   gateway; its `REPEATABLE READ` is served as serializable, which
//!   reads need no more than.
//! - **YugabyteDB**: PostgreSQL's own query layer, so the schema and the
//!   statements run as they are; advisory locks only in its recent
//!   releases (else the fallback above); serializable isolation is
//!   distributed there too, each statement a network round trip to the
//!   tablet leaders, so a PUT's dozen statements cost more than here.
//!
//! [`PgEngine`] is the metadata's engine (`shardgate_meta::kv`): every
//! rule of the redb store runs on it unchanged; leases, members and the
//! intents' sweep (`shardgate_meta`'s `members.rs`) let several gateways
//! share it.

pub mod engine;
pub mod error;
pub mod kv;
pub mod schema;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rand::Rng;
use tokio_postgres::{IsolationLevel, NoTls, Transaction};

pub use crate::engine::PgEngine;
pub use crate::error::{PgError, Result};

/// Attempts of one transaction before its conflict is reported.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first retry's delay; each later one doubles it (with jitter).
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// How to reach the database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// `postgres://user@host:port/db` (a password in it is never logged).
    pub url: String,
    /// Connections at most.
    pub pool_size: usize,
    /// The longest one statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// The longest to wait for a connection (opening one, or a free one).
    pub connect_timeout: Duration,
}

impl PgOptions {
    /// `url` with the defaults: 16 connections, 5 s statements, 5 s to
    /// connect.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The metadata database: a pool of connections to a migrated schema.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    /// Connects, applies the migrations this build has and the database
    /// lacks, and refuses a schema newer than this build knows.
    pub async fn connect(options: &PgOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
        config
            .options(format!(
                "-c statement_timeout={}",
                options.statement_timeout.as_millis()
            ))
            .connect_timeout(options.connect_timeout)
            .application_name("shardgate");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        let store = Self { pool };
        schema::migrate(&store).await?;
        Ok(store)
    }

    /// Runs `body` in a `SERIALIZABLE` transaction and commits it; on a
    /// serialization failure or a deadlock (from the body or the commit)
    /// runs it again, up to [`MAX_ATTEMPTS`] times, after a growing,
    /// jittered delay. `body` must therefore do nothing but database work.
    pub async fn serializable<T>(
        &self,
        mut body: impl AsyncFnMut(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut client = self.pool.get().await.map_err(PgError::from_pool)?;
        let client: &mut tokio_postgres::Client = &mut client;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .start()
                .await?;
            let outcome = match body(&tx).await {
                Ok(value) => tx.commit().await.map(|()| value).map_err(PgError::from),
                Err(e) => Err(e), // dropping `tx` rolls it back
            };
            match outcome {
                Err(e) if e.is_conflict() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "metadata transaction conflicted: retrying");
                    let jitter = rand::rng().random_range(0..=backoff.as_micros() as u64);
                    tokio::time::sleep(backoff + Duration::from_micros(jitter)).await;
                    backoff = backoff.saturating_mul(2);
                }
                Err(e) if e.is_conflict() => {
                    return Err(PgError::Contended {
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                other => return other,
            }
        }
    }

    /// A connection from the pool, for reads outside a transaction.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(PgError::from_pool)
    }
}
