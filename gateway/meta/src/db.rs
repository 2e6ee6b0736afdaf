//! The redb database behind the store, opened again after an I/O error.
//!
//! Why: redb latches a failed write. After one `ENOSPC` or `EIO`, every
//! later write transaction fails with "previous I/O error" until the file
//! is closed and opened again, which repairs it from its last commit. A
//! full disk would otherwise leave the gateway refusing every write until
//! a restart, long after the space came back.
//!
//! How:
//! - A write that finds the database latched fails at once, with the
//!   cause, and asks for a reopen. Reads go on from the latched handle
//!   (redb keeps serving them) until the reopen takes it.
//! - Reopens run on a thread of their own, never on the caller's (some
//!   reads run on async workers, and a reopen repairs the file), at most one
//!   per [`RETRY_EVERY`]. A reopen waits for the filesystem to have
//!   [`MIN_FREE_BYTES`] free: the repair commits, and on a disk still full
//!   it would fail and leave no handle at all, reads included.
//! - The reopen waits (at most [`REOPEN_WAIT`]) for the latched handle's
//!   last write to end, then opens the existing file (never creating one:
//!   a vanished volume must not come back as an empty store).
//! - Nothing committed is lost: redb's repair keeps every commit that
//!   returned. [`Db::reopens`] counts the reopens, for caches of records
//!   whose failed commit may have reached the disk after all.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, TryLockError};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageError, TransactionError,
    WriteTransaction,
};

/// The longest a reopen waits for the latched handle's last write.
const REOPEN_WAIT: Duration = Duration::from_secs(2);
/// Reopens are at least this far apart.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Free space a reopen waits for.
const MIN_FREE_BYTES: u64 = 1 << 20;

/// The database, and what reopening it needs.
#[derive(Debug)]
pub(crate) struct Db(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The handle in use: `None` after a reopen that failed.
    current: RwLock<Option<Arc<Database>>>,
    /// Held by the one reopen running.
    reopen: Mutex<Reopen>,
    reopens: AtomicU64,
}

#[derive(Debug, Default)]
struct Reopen {
    last_try: Option<Instant>,
    /// Why the last attempt did not reopen.
    failure: Option<String>,
}

impl Db {
    /// Opens (or creates) the database at `path`.
    pub(crate) fn create(path: &Path) -> Result<Self, DatabaseError> {
        let db = Database::create(path)?;
        Ok(Self(Arc::new(Inner {
            path: path.to_path_buf(),
            current: RwLock::new(Some(Arc::new(db))),
            reopen: Mutex::default(),
            reopens: AtomicU64::new(0),
        })))
    }

    pub(crate) fn begin_write(&self) -> Result<WriteTransaction, TransactionError> {
        let db = self.handle()?;
        match db.begin_write() {
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.0.clone().reopen_soon();
                Err(self.0.unavailable())
            }
            other => other,
        }
    }

    pub(crate) fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        self.handle()?.begin_read()
    }

    /// Reopens so far (each may bring back a commit that had reported a
    /// failure).
    pub(crate) fn reopens(&self) -> u64 {
        self.0.reopens.load(Ordering::Acquire)
    }

    fn handle(&self) -> Result<Arc<Database>, TransactionError> {
        let current = self
            .0
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        current.ok_or_else(|| {
            self.0.clone().reopen_soon();
            self.0.unavailable()
        })
    }
}

impl Inner {
    /// Starts a reopen on a thread of its own, unless one runs or ran less
    /// than [`RETRY_EVERY`] ago.
    fn reopen_soon(self: Arc<Self>) {
        {
            let state = match self.reopen.try_lock() {
                Ok(state) => state,
                // A reopen that panicked left nothing half done that
                // matters: try again.
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            if state.last_try.is_some_and(|at| at.elapsed() < RETRY_EVERY) {
                return;
            }
        }
        let spawned = std::thread::Builder::new()
            .name("meta-reopen".into())
            .spawn(move || self.reopen());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "metadata store: no thread to open it again");
        }
    }

    fn reopen(&self) {
        let mut state = match self.reopen.lock() {
            Ok(state) => state,
            Err(p) => p.into_inner(),
        };
        if state.last_try.is_some_and(|at| at.elapsed() < RETRY_EVERY) {
            return; // another thread just tried
        }
        state.last_try = Some(Instant::now());
        if let Some(short) = self.short_of_space() {
            state.failure = Some(short);
            return;
        }
        let latched = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if latched.is_some() {
            tracing::error!(
                path = %self.path.display(),
                "metadata store: an I/O error latched the database; opening it again"
            );
        }
        drop(latched);
        let deadline = Instant::now() + REOPEN_WAIT;
        let opened = loop {
            match Database::open(&self.path) {
                // The latched handle's last write still holds the file.
                Err(DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other,
            }
        };
        match opened {
            Ok(db) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
                self.reopens.fetch_add(1, Ordering::AcqRel);
                state.failure = None;
                tracing::warn!(path = %self.path.display(), "metadata store: opened again");
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "metadata store: could not open it again");
                state.failure = Some(format!("opening it again failed: {e}"));
            }
        }
    }

    /// Why a reopen should wait: the filesystem has less than
    /// [`MIN_FREE_BYTES`] free (`None`: it has, or cannot tell).
    fn short_of_space(&self) -> Option<String> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty())?;
        let st = rustix::fs::statvfs(dir).ok()?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        (st.f_blocks > 0 && free < MIN_FREE_BYTES)
            .then(|| format!("its filesystem has {free} bytes free"))
    }

    fn unavailable(&self) -> TransactionError {
        let failure = match self.reopen.try_lock() {
            Ok(state) => state.failure.clone(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().failure.clone(),
            Err(TryLockError::WouldBlock) => None,
        };
        let why = match failure {
            Some(cause) => format!(
                "the metadata store is unavailable after an I/O error ({cause}); it is opened again once that clears: retry"
            ),
            None => "the metadata store is being opened again after an I/O error (such as a full disk): retry".to_string(),
        };
        TransactionError::Storage(StorageError::Io(std::io::Error::other(why)))
    }
}
