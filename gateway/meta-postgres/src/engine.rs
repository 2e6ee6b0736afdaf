//! PostgreSQL as an [`Engine`] of `shardgate-meta`: the metadata's rules,
//! unchanged, over the `kv` table.
//!
//! The rules are synchronous (redb's transactions are), so each statement
//! here is run to completion on the calling thread: a thread of the
//! blocking pool (where `MetaStore`'s async traits run writes), or a
//! worker of the multi-threaded runtime (reads the S3 layer makes in
//! place), which [`tokio::task::block_in_place`] hands its other tasks
//! away from first. A current-thread runtime's async code must not call
//! it.
//!
//! A write transaction is `SERIALIZABLE`; a read is `REPEATABLE READ READ
//! ONLY` (a snapshot: what redb's read transactions see). When a statement
//! or the commit fails with a serialization conflict or a deadlock, the
//! whole body runs again, as [`PgStore::serializable`] does, after a
//! jittered backoff.
//!
//! Write transactions of every gateway on the database take turns
//! ([`WRITER_LOCK`]): the rules' hot rows (the store-wide sequences, the
//! outbox's last record) make concurrent writers conflict, and measured
//! with three gateways a conflict storm cost 0.9 s per PUT (a rollback, a
//! backoff and a rerun, each time) where taking turns costs one
//! transaction's time. The lock is a session advisory lock, taken before
//! `BEGIN`, so the transaction's snapshot is taken after the previous
//! writer committed. A database without advisory locks (CockroachDB
//! answers them as no-ops) falls back on the retries alone.

use std::cell::Cell;
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use shardgate_meta::MetaError;
use shardgate_meta::kv::tables::{KeyKind, Table, ValueKind};
use shardgate_meta::kv::{Engine, KeyRange, KvRead, KvSnapshot, KvWrite, Visit};
use tokio::runtime::Handle;
use tokio_postgres::IsolationLevel;

use crate::kv::Kv;
use crate::{FIRST_BACKOFF, MAX_ATTEMPTS, PgError, PgStore};

/// Rows fetched by a scan's first statement, and by its later ones at
/// most.
const FIRST_PAGE: u32 = 16;
const SCAN_PAGE: u32 = 256;

/// The metadata's tables in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgEngine {
    store: PgStore,
    runtime: Handle,
    /// One write transaction at a time from this process, as redb has:
    /// the rules' hot rows (the store-wide sequences, the outbox's last
    /// record) make concurrent writers of one gateway conflict, and a
    /// conflict costs a rollback, a backoff and a rerun, where waiting for
    /// a lock costs one transaction's time. (Several gateways still
    /// conflict in the database and retry.)
    writer: Arc<Mutex<()>>,
    /// Whether writers take [`WRITER_LOCK`] (false once the database
    /// said it has no advisory locks).
    lock_writers: Arc<std::sync::atomic::AtomicBool>,
}

/// The advisory lock key write transactions take turns on ("shardgat").
pub const WRITER_LOCK: i64 = 0x7368_6172_6467_6174;

/// A pooled connection holding [`WRITER_LOCK`]: closed when dropped still
/// holding it.
struct Locked(Option<deadpool_postgres::Object>);

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

fn unreachable_client() -> Result<(), MetaError> {
    Err(MetaError::Database {
        message: "the locked connection went missing".into(),
        transient: true,
    })
}

impl PgEngine {
    /// The engine over `store`, whose statements run on `runtime` (a
    /// multi-threaded runtime: see the module's documentation).
    pub fn new(store: PgStore, runtime: Handle) -> Self {
        Self {
            store,
            runtime,
            writer: Arc::default(),
            lock_writers: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.runtime.block_on(f))
    }

    /// Runs `body` in a transaction of `isolation`, again on conflict.
    fn transact(
        &self,
        isolation: IsolationLevel,
        read_only: bool,
        take_turn: bool,
        body: &mut dyn FnMut(&mut PgTxn<'_>) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let mut client = self
            .block_on(self.store.client())
            .map_err(|e| to_meta(&e))?;
        if take_turn && self.lock_writers.load(std::sync::atomic::Ordering::Relaxed) {
            // From the lock statement on, this connection may hold every
            // writer back: a lock statement that failed (a statement
            // timeout may fire as the lock is granted, which then stays
            // held), an unlock that failed or found nothing to release, or
            // a panic in the body, and the guard closes the connection
            // (which releases the lock) instead of returning it to the pool.
            let mut locked = Locked(Some(client));
            let Some(c) = locked.0.as_deref_mut() else {
                return unreachable_client();
            };
            match self.block_on(c.execute("SELECT pg_advisory_lock($1)", &[&WRITER_LOCK])) {
                Ok(_) => {}
                Err(e)
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) =>
                {
                    tracing::warn!(
                        "metadata database: no advisory locks here; concurrent writers rely on retries alone"
                    );
                    self.lock_writers
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    return self.attempts(c, isolation, read_only, body);
                }
                Err(e) => return Err(to_meta(&e.into())),
            }
            let outcome = self.attempts(c, isolation, read_only, body);
            let unlocked =
                self.block_on(c.query_one("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK]));
            match unlocked.map(|row| row.try_get::<_, bool>(0)) {
                Ok(Ok(true)) => drop(locked.0.take()),
                Ok(_) => tracing::warn!(
                    "metadata database: the writer lock was not held at its release; the connection is closed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "metadata database: the writer lock was not released; its connection is closed")
                }
            }
            return outcome;
        }
        self.attempts(&mut client, isolation, read_only, body)
    }

    /// The tries of one transaction on `client`.
    fn attempts(
        &self,
        client: &mut tokio_postgres::Client,
        isolation: IsolationLevel,
        read_only: bool,
        body: &mut dyn FnMut(&mut PgTxn<'_>) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let trouble = Trouble::default();
            let outcome = (|| {
                let tx = self
                    .block_on(
                        client
                            .build_transaction()
                            .isolation_level(isolation)
                            .read_only(read_only)
                            .start(),
                    )
                    .map_err(|e| trouble.note(e.into()))?;
                let mut txn = PgTxn {
                    engine: self,
                    kv: Kv::new(&tx),
                    trouble: &trouble,
                };
                body(&mut txn)?;
                if trouble.failed.get() {
                    // A statement failed and the rule went on: the database
                    // has aborted the transaction, and its COMMIT would roll
                    // it back without an error. Nothing may be reported as
                    // written.
                    return Err(MetaError::Database {
                        message: "a statement failed inside the transaction, which was rolled back"
                            .into(),
                        transient: false,
                    });
                }
                self.block_on(tx.commit())
                    .map_err(|e| trouble.note(e.into()))
            })();
            match (outcome, trouble.conflict.take()) {
                (Ok(()), _) => return Ok(()),
                (Err(_), Some(e)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "metadata transaction conflicted: retrying");
                    let jitter = rand::rng().random_range(0..=backoff.as_micros() as u64);
                    std::thread::sleep(backoff + Duration::from_micros(jitter));
                    backoff = backoff.saturating_mul(2);
                }
                (Err(_), Some(e)) => {
                    return Err(to_meta(&PgError::Contended {
                        attempts: attempt,
                        last: Box::new(e),
                    }));
                }
                (Err(e), None) => return Err(e),
            }
        }
    }
}

impl Engine for PgEngine {
    fn read(
        &self,
        body: &mut dyn FnMut(&dyn KvRead) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        self.transact(IsolationLevel::RepeatableRead, true, false, &mut |txn| {
            body(txn)
        })
    }

    fn write(
        &self,
        body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.transact(IsolationLevel::Serializable, false, true, &mut |txn| {
            body(txn)
        })
    }

    fn write_apart(
        &self,
        body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<(), MetaError>,
    ) -> Result<(), MetaError> {
        self.transact(IsolationLevel::Serializable, false, false, &mut |txn| {
            body(txn)
        })
    }

    fn snapshot(&self) -> Result<Box<dyn KvSnapshot>, MetaError> {
        // A connection of its own, taken out of the pool: the transaction
        // stays open across calls, and closing the connection ends it.
        let pooled = self
            .block_on(self.store.client())
            .map_err(|e| to_meta(&e))?;
        let client = deadpool_postgres::Object::take(pooled);
        // The snapshot is taken by the transaction's first statement, not
        // by BEGIN: the SELECT fixes it now.
        self.block_on(
            client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1"),
        )
        .map_err(|e| to_meta(&e.into()))?;
        Ok(Box::new(PgSnapshot {
            engine: self.clone(),
            client,
        }))
    }
}

/// A read transaction held on a connection of its own.
struct PgSnapshot {
    engine: PgEngine,
    client: deadpool_postgres::ClientWrapper,
}

impl PgSnapshot {
    fn run<T>(&self, f: impl Future<Output = crate::Result<T>>) -> Result<T, MetaError> {
        self.engine.block_on(f).map_err(|e| to_meta(&e))
    }

    fn kv(&self) -> Kv<'_, tokio_postgres::Client> {
        Kv::new(&self.client)
    }
}

impl KvRead for PgSnapshot {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        check_key(table, key)?;
        self.run(self.kv().get(table.name, key))
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), MetaError> {
        scan_pages(range, reverse, visit, |lower, upper, size| {
            self.run(self.kv().range(table.name, lower, upper, size, reverse))
        })
    }

    fn len(&self, table: Table) -> Result<u64, MetaError> {
        self.run(self.kv().count(table.name))
    }
}

impl KvSnapshot for PgSnapshot {}

/// Feeds `visit` the rows of `range`, fetched a page at a time by `page`
/// (given the bounds left), until it stops or the rows run out.
fn scan_pages(
    range: KeyRange<'_>,
    reverse: bool,
    visit: &mut Visit<'_>,
    mut page: impl FnMut(Bound<&[u8]>, Bound<&[u8]>, u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>, MetaError>,
) -> Result<(), MetaError> {
    let (mut lower, mut upper) = (owned(range.0), owned(range.1));
    // Small first: most scans stop at their first rows (a key's newest
    // version, the outbox's last record).
    let mut size = FIRST_PAGE;
    loop {
        let rows = page(borrowed(&lower), borrowed(&upper), size)?;
        let full = rows.len() == size as usize;
        size = (size * 4).min(SCAN_PAGE);
        let mut last = None;
        for (k, v) in rows {
            if visit(&k, &v)?.is_break() {
                return Ok(());
            }
            last = Some(k);
        }
        match last {
            Some(k) if full => match reverse {
                false => lower = Bound::Excluded(k),
                true => upper = Bound::Excluded(k),
            },
            _ => return Ok(()),
        }
    }
}

/// What went wrong in one attempt of a transaction.
#[derive(Default)]
struct Trouble {
    /// A serialization conflict or deadlock: the attempt runs again.
    conflict: Cell<Option<PgError>>,
    /// Any statement failed (the database then aborts the transaction).
    failed: Cell<bool>,
}

impl Trouble {
    /// Records `e` for the retry loop, and turns it into the metadata's
    /// error.
    fn note(&self, e: PgError) -> MetaError {
        self.failed.set(true);
        let meta = to_meta(&e);
        if e.is_conflict() {
            self.conflict.set(Some(e));
        }
        meta
    }
}

/// The metadata's error for a database error: transient when the database
/// could not be reached or kept conflicting (S3 answers 503 SlowDown).
pub fn to_meta(e: &PgError) -> MetaError {
    let transient = match e {
        PgError::Pool(_) | PgError::Contended { .. } => true,
        PgError::Db(db) => {
            db.is_closed()
                || db.as_db_error().is_none()
                || e.is_conflict()
                || e.sqlstate().is_some_and(|c| {
                    // Connection exceptions; a statement timeout; the server
                    // shutting down or starting; too many connections.
                    c.code().starts_with("08")
                        || ["57014", "57P01", "57P02", "57P03", "53300"].contains(&c.code())
                })
        }
        PgError::Url(_) | PgError::NewerSchema { .. } => false,
    };
    MetaError::Database {
        message: e.to_string(),
        transient,
    }
}

/// One transaction, seen as the rules see an engine's.
struct PgTxn<'t> {
    engine: &'t PgEngine,
    kv: Kv<'t>,
    trouble: &'t Trouble,
}

impl PgTxn<'_> {
    fn run<T>(&self, f: impl Future<Output = crate::Result<T>>) -> Result<T, MetaError> {
        self.engine.block_on(f).map_err(|e| self.trouble.note(e))
    }
}

impl KvRead for PgTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        check_key(table, key)?;
        self.run(self.kv.get(table.name, key))
    }

    fn scan(
        &self,
        table: Table,
        range: KeyRange<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), MetaError> {
        scan_pages(range, reverse, visit, |lower, upper, size| {
            self.run(self.kv.range(table.name, lower, upper, size, reverse))
        })
    }

    fn len(&self, table: Table) -> Result<u64, MetaError> {
        self.run(self.kv.count(table.name))
    }
}

impl KvWrite for PgTxn<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), MetaError> {
        check_key(table, key)?;
        check_value(table, value)?;
        self.run(self.kv.put(table.name, key, value))
    }

    fn remove(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
        check_key(table, key)?;
        self.run(self.kv.take(table.name, key))
    }

    fn remove_range(&mut self, table: Table, range: KeyRange<'_>) -> Result<u64, MetaError> {
        self.run(self.kv.delete_range(table.name, range.0, range.1))
    }
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    b.map(<[u8]>::to_vec)
}

fn borrowed(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

/// Refuses what redb's typed tables refuse, so that both engines hold the
/// same rows.
fn check_key(table: Table, key: &[u8]) -> Result<(), MetaError> {
    match table.key {
        KeyKind::Bytes => Ok(()),
        KeyKind::Str if std::str::from_utf8(key).is_ok() => Ok(()),
        KeyKind::Str => Err(MetaError::InvalidKey("a name that is not UTF-8")),
        KeyKind::U64 if key.len() == 8 => Ok(()),
        KeyKind::U64 => Err(MetaError::InvalidKey("a number key that is not 8 bytes")),
    }
}

fn check_value(table: Table, value: &[u8]) -> Result<(), MetaError> {
    let want = match table.value {
        ValueKind::Bytes => return Ok(()),
        ValueKind::U64 => 8,
        ValueKind::U8 => 1,
    };
    if value.len() == want {
        return Ok(());
    }
    Err(MetaError::Corrupt {
        what: "fixed-size value",
        reason: format!("{}: {} bytes, not {want}", table.name, value.len()),
    })
}
