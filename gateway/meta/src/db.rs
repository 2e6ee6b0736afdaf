//! The redb database behind the store, opened again after an I/O error.
//!
//! Why: redb latches a failed write. After one `ENOSPC` or `EIO`, every
//! later transaction fails with "previous I/O error" until the file is
//! closed and opened again, which repairs it from its last commit. A full
//! disk would otherwise leave the gateway answering 500 to every request
//! until a restart, long after the space came back.
//!
//! So a transaction that finds the database latched drops this handle to
//! it, waits (at most [`REOPEN_WAIT`]) for the transactions still running on
//! it to end, and opens the file again. Meanwhile, and while the reopen
//! fails, calls fail fast with the cause. Reopens are at most one per
//! [`RETRY_EVERY`]: on a disk still full, the next commit latches the
//! database again, and each reopen repairs the file. Nothing committed is
//! lost: redb's repair keeps every commit that returned.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageError, TransactionError,
    WriteTransaction,
};

/// The longest a reopen waits for the latched database's last transactions.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// Reopens are at least this far apart.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The database file and the handle in use (`None` while it is reopened,
/// or when reopening failed).
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    current: RwLock<Option<Arc<Database>>>,
    /// When a reopen was last tried, and why the last one failed. Held by
    /// the one thread reopening.
    reopen: Mutex<Reopen>,
}

#[derive(Debug, Default)]
struct Reopen {
    last_try: Option<Instant>,
    failure: Option<String>,
}

impl Db {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn create(path: &Path) -> Result<Self, DatabaseError> {
        let db = Database::create(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            current: RwLock::new(Some(Arc::new(db))),
            reopen: Mutex::default(),
        })
    }

    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        self.begin(|db| db.begin_write())
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.begin(|db| db.begin_read())
    }

    fn begin<T>(
        &self,
        start: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, TransactionError> {
        let db = match self.handle() {
            Some(db) => db,
            None => {
                self.reopen(None)?;
                self.handle().ok_or_else(|| self.unavailable())?
            }
        };
        match start(&db) {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.reopen(Some(db))?;
                let db = self.handle().ok_or_else(|| self.unavailable())?;
                start(&db)
            }
            other => other,
        }
    }

    fn handle(&self) -> Option<Arc<Database>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the file again in place of `latched` (or of nothing); Ok when
    /// a usable handle is in place, whoever put it there.
    fn reopen(&self, latched: Option<Arc<Database>>) -> Result<(), TransactionError> {
        // One thread reopens; the others fail fast meanwhile.
        let Ok(mut state) = self.reopen.try_lock() else {
            return Err(self.unavailable());
        };
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let replaced = match (&*current, &latched) {
            (Some(now), Some(old)) => !Arc::ptr_eq(now, old),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if replaced {
            return Ok(());
        }
        // A disk still full latches a reopened database again at its next
        // commit: each reopen repairs the file, so at most one a second.
        if state.last_try.is_some_and(|at| at.elapsed() < RETRY_EVERY) {
            drop(current);
            return Err(unavailable_because(state.failure.as_deref()));
        }
        state.last_try = Some(Instant::now());
        let was_open = current.take().is_some();
        drop(current);
        drop(latched);
        if was_open {
            tracing::error!(
                path = %self.path.display(),
                "metadata store: an I/O error latched the database; opening it again"
            );
        }
        let deadline = Instant::now() + REOPEN_WAIT;
        let opened = loop {
            match Database::create(&self.path) {
                // The latched handle's last transactions still hold it.
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other,
            }
        };
        match opened {
            Ok(db) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                state.failure = None;
                tracing::warn!(path = %self.path.display(), "metadata store: opened again");
                Ok(())
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "metadata store: could not open it again");
                state.failure = Some(e.to_string());
                Err(unavailable_because(state.failure.as_deref()))
            }
        }
    }

    fn unavailable(&self) -> TransactionError {
        let state = self.reopen.try_lock();
        unavailable_because(state.as_ref().ok().and_then(|s| s.failure.as_deref()))
    }
}

fn unavailable_because(failure: Option<&str>) -> TransactionError {
    let why = match failure {
        Some(cause) => format!(
            "the metadata store is unavailable after an I/O error (opening it again failed: {cause}); it is retried every second"
        ),
        None => "the metadata store is being opened again after an I/O error (such as a full disk); retry".to_string(),
    };
    TransactionError::Storage(StorageError::Io(std::io::Error::other(why)))
}
