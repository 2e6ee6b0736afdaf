//! A backend on a local directory.
//!
//! Layout under the root:
//!
//! ```text
//! LOCK                  flock'ed by the one process that owns the directory
//!                       (shared by each of several that share it)
//! tmp/<name>.<n>        blobs being written
//! tmp/<id>/<name>.<n>   ... by one of several processes sharing the
//!                       directory, `tmp/<id>/LOCK` flock'ed by it
//! blobs/<ab>/<name>     committed blobs, fanned out by the name's first two characters
//! ```
//!
//! Crash behaviour: a blob reaches `blobs/` only by `commit`, which fsyncs
//! the temp file, hard-links it under its final name (atomic, and refuses
//! to replace an existing blob), removes the temp name and fsyncs the
//! directory. A crash at any point leaves either no blob or the whole
//! durable blob; leftovers in `tmp/` are removed at the next open.
//!
//! Several gateways on one machine over one metadata database may share
//! the directory ([`FsOptions::shared`]): each takes `LOCK` shared, so a
//! process that would own it alone is refused while they run, and the
//! other way round. Each writes its temp files in a folder of its own,
//! locked while it runs; an opener removes the folders whose lock it can
//! take (their process is gone), never a live one's. Blob names are
//! random, so two processes never write one blob. The bytes held are
//! counted per process (a capacity is then approximate).
//!
//! Directories are durable before anything in them counts: `open` creates
//! the root, `blobs/` and `tmp/` and fsyncs each one's parent; a commit
//! into a fan-out directory this process has not yet made durable fsyncs
//! `blobs/` first, whichever commit created the directory (a concurrent
//! commit into a directory another just created does not return before it
//! is durable, and one created just before a crash is made durable by the
//! next commit into it). A full
//! disk or a read-only directory is a typed error ([`BackendError::NoSpace`],
//! [`BackendError::NotWritable`]) and the temp file is removed.
//!
//! Large writes bypass the page cache where the filesystem allows it
//! ([`direct`], [`WritePath`]): the durability steps above are the same on
//! both paths.

mod direct;

use std::collections::HashSet;
use std::fs::File as StdFile;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
pub use direct::WritePath;
use direct::{BufferPool, STAGE_BYTES, Stage};
use futures::stream::{self, BoxStream, StreamExt};
use shardgate_backend::{
    Backend, BackendError, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result, buffers,
    check_range,
};

/// Blob listings buffer at most this many entries ahead of the consumer.
const LIST_BUFFER_ENTRIES: usize = 256;

/// How an fs backend does its I/O. The defaults are the measured choice
/// (BENCHMARKS.md, "Large objects without the page-cache copy").
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Write with `O_DIRECT` where the filesystem accepts it.
    pub direct_writes: bool,
    /// Blobs of at least this many bytes are read with `O_DIRECT` where
    /// the filesystem accepts it, the first time a range of at least
    /// [`DIRECT_READ_MIN_RANGE`] is read; a range read again while
    /// remembered goes through the page cache (see `DirectReads::goes_direct`).
    /// 0, the default, never reads direct. Measured (BENCHMARKS.md, issue
    /// 24, "Direct reads, read twice to be cached"): 1 MiB (the fragments
    /// of objects of about 4 MiB and more at 4 + 2) made a 64 MiB GET's
    /// first read 1.07-1.15 times the buffered one's, for 8% less CPU, and
    /// its second 0.86-0.91 (a cold read where the page cache had it):
    /// for objects mostly read once.
    pub direct_read_min_bytes: u64,
    /// Other processes (gateways sharing one metadata store) use the
    /// directory at the same time (see the module's doc).
    pub shared: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self {
            direct_writes: true,
            direct_read_min_bytes: 0,
            shared: false,
        }
    }
}

#[derive(Debug)]
struct Inner {
    info: BackendInfo,
    root: PathBuf,
    used_bytes: AtomicU64,
    next_tmp: AtomicU64,
    /// Fan-out directories whose entry in `blobs/` is known durable.
    durable_dirs: Mutex<HashSet<String>>,
    /// fsyncs of `blobs/` made by commits (for the tests).
    blobs_syncs: AtomicU64,
    write_path: WritePath,
    /// Direct writers reserve blocks ahead (not where blocks are memory).
    reserve_ahead: bool,
    /// Which reads go direct (`None`: none).
    direct_reads: Option<DirectReads>,
    pool: BufferPool,
    _lock: StdFile,
    /// Where this process writes its temp files.
    tmp: PathBuf,
    /// Held while it runs, when it shares the directory.
    _tmp_lock: Option<StdFile>,
}

/// Direct reads (`[fs] direct_read_min_bytes`): of blobs at least `from`
/// bytes long, the first read of a range.
#[derive(Debug)]
struct DirectReads {
    from: u64,
    /// The last [`READ_LATELY_RANGES`] ranges read direct, by
    /// [`DirectReads::range_key`], oldest first: a range read again while
    /// it is here goes through the page cache. A plain FIFO: a cache with
    /// its own admission policy (quick_cache keeps 97% of its room for
    /// keys read twice) would remember a new range for a few hundred first
    /// reads, not for this many.
    read_lately: Mutex<ReadLately>,
    range_hasher: std::hash::RandomState,
}

#[derive(Debug, Default)]
struct ReadLately {
    order: std::collections::VecDeque<u64>,
    keys: HashSet<u64>,
}

impl DirectReads {
    fn new(from: u64) -> Self {
        Self {
            from,
            read_lately: Mutex::default(),
            range_hasher: std::hash::RandomState::new(),
        }
    }

    /// Whether `range` of `name` (a blob of `size` bytes) is read direct:
    /// a large range of a large blob, read for the first time lately (it
    /// is remembered). A range's first read goes direct: the one copy is
    /// the disk's, into our buffer, and nothing is cached that the next
    /// reader of a large object is unlikely to want (a read right after
    /// the write, a scrub, a backup). A range read again while remembered
    /// goes through the page cache and stays there for the reads after:
    /// what is read twice earns the cache, as a page does in the kernel's
    /// own lists.
    fn goes_direct(&self, name: &BlobName, range: &Range<u64>, size: u64) -> bool {
        if size < self.from || range.end.saturating_sub(range.start) < DIRECT_READ_MIN_RANGE {
            return false;
        }
        let key = self.range_key(name, range);
        let mut lately = self.read_lately.lock().unwrap_or_else(|e| e.into_inner());
        if !lately.keys.insert(key) {
            return false;
        }
        lately.order.push_back(key);
        if lately.order.len() > READ_LATELY_RANGES
            && let Some(oldest) = lately.order.pop_front()
        {
            lately.keys.remove(&oldest);
        }
        true
    }

    /// A range's key in [`DirectReads::read_lately`]: a collision only
    /// sends a read through the page cache.
    fn range_key(&self, name: &BlobName, range: &Range<u64>) -> u64 {
        use std::hash::BuildHasher;
        self.range_hasher
            .hash_one((name.as_str(), range.start, range.end))
    }
}

/// A backend storing blobs as files under one directory.
#[derive(Clone, Debug)]
pub struct FsBackend(Arc<Inner>);

impl FsBackend {
    /// Opens (creating if needed) the directory `root`, takes its lock,
    /// removes unfinished temp files and counts the bytes held.
    pub async fn open(info: BackendInfo, root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(info, root, FsOptions::default()).await
    }

    /// [`FsBackend::open`] with I/O options, and a probe of whether the
    /// directory's filesystem takes direct I/O.
    pub async fn open_with(
        info: BackendInfo,
        root: impl Into<PathBuf>,
        options: FsOptions,
    ) -> Result<Self> {
        let root = root.into();
        let id = info.id.clone();
        let shared = options.shared;
        let (lock, used) = tokio::task::spawn_blocking(move || -> Result<_> {
            let id = &id;
            let io = |op| move |e| BackendError::from_io(id, op, e);
            for dir in [root.clone(), root.join("blobs"), root.join("tmp")] {
                create_dir_durable(&dir).map_err(io("create directory"))?;
            }
            // flock works on a read-only descriptor, so a read-only disk
            // still opens and serves reads.
            let lock_path = root.join("LOCK");
            let lock = match StdFile::open(&lock_path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    StdFile::create(&lock_path).map_err(io("create LOCK"))?
                }
                other => other.map_err(io("open LOCK"))?,
            };
            let (how, refused) = match shared {
                false => (
                    rustix::fs::FlockOperation::NonBlockingLockExclusive,
                    "is in use by another process",
                ),
                true => (
                    rustix::fs::FlockOperation::NonBlockingLockShared,
                    "is in use by a process that does not share it (fs.shared)",
                ),
            };
            rustix::fs::flock(&lock, how).map_err(|_| BackendError::Unavailable {
                backend: id.clone(),
                reason: format!("{} {refused}", root.display()),
            })?;
            // Every temp file at the top was an owner's that is gone (it
            // held LOCK alone); a folder, a sharer's, if its lock is free.
            for entry in std::fs::read_dir(root.join("tmp")).map_err(io("read tmp"))? {
                let path = entry.map_err(io("read tmp"))?.path();
                if path.is_dir() {
                    if !shared || sharer_gone(&path) {
                        remove_unfinished(&path, std::fs::remove_dir_all(&path));
                    }
                    continue;
                }
                remove_unfinished(&path, std::fs::remove_file(&path));
            }
            let tmp = match shared {
                false => (root.join("tmp"), None),
                true => {
                    let dir = root
                        .join("tmp")
                        .join(format!("{:016x}", rand::random::<u64>()));
                    create_dir_durable(&dir).map_err(io("create temp folder"))?;
                    let mine = StdFile::create(dir.join("LOCK")).map_err(io("create LOCK"))?;
                    rustix::fs::flock(&mine, rustix::fs::FlockOperation::LockExclusive)
                        .map_err(|e| io("lock temp folder")(e.into()))?;
                    (dir, Some(mine))
                }
            };
            let used = walk_blobs(&root)
                .filter_map(|r| r.ok())
                .map(|(_, size)| size)
                .sum::<u64>();
            // In this process's own temp folder: sharers opening at once
            // would collide on one probe file.
            let direct = direct::probe(&tmp.0);
            Ok(((lock, root, tmp), (used, direct)))
        })
        .await
        .map_err(|e| join_error(&info.id, e))??;
        let ((lock, root, (tmp, tmp_lock)), (used, direct)) = (lock, used);
        let direct_ok = matches!(direct, Ok(WritePath::Direct));
        // tmpfs takes O_DIRECT (Linux 6.6 on), but a reservation there
        // holds memory.
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        let reserve_ahead =
            rustix::fs::statfs(&root).is_ok_and(|st| st.f_type as u64 != TMPFS_MAGIC);
        let write_path = match direct_ok && options.direct_writes {
            true => WritePath::Direct,
            false => WritePath::Buffered,
        };
        let direct_reads_from = (direct_ok && options.direct_read_min_bytes > 0)
            .then_some(options.direct_read_min_bytes);
        let (id, at) = (&info.id, root.display());
        match direct {
            Ok(WritePath::Direct) if options.direct_writes => tracing::info!(
                backend = %id, root = %at, ?write_path, direct_reads_from, "fs backend open"
            ),
            Ok(WritePath::Direct) => tracing::info!(
                backend = %id, root = %at, ?write_path, direct_reads_from,
                "fs backend open; direct writes are turned off ([fs] direct_writes)"
            ),
            Ok(WritePath::Buffered) => tracing::info!(
                backend = %id, root = %at, ?write_path,
                "fs backend open; the filesystem refuses O_DIRECT, so every write is buffered"
            ),
            // A read-only disk, say (its writes fail anyway), or a full one.
            Err(e) => tracing::warn!(
                backend = %id, root = %at, ?write_path, error = %e,
                "fs backend open; cannot probe for O_DIRECT, so every write is buffered"
            ),
        }
        Ok(Self(Arc::new(Inner {
            info,
            root,
            tmp,
            _tmp_lock: tmp_lock,
            used_bytes: AtomicU64::new(used),
            next_tmp: AtomicU64::new(0),
            durable_dirs: Mutex::new(HashSet::new()),
            blobs_syncs: AtomicU64::new(0),
            write_path,
            reserve_ahead,
            direct_reads: direct_reads_from.map(DirectReads::new),
            pool: BufferPool::default(),
            _lock: lock,
        })))
    }

    /// A stage for a direct writer; none (the writer goes buffered) when
    /// no memory can be mapped for it.
    fn stage(&self) -> Option<Stage> {
        match self.0.pool.take() {
            Ok(buf) => Some(Stage::new(buf, self.0.reserve_ahead)),
            Err(e) => {
                tracing::warn!(backend = %self.0.info.id, error = %e, "no staging buffer; writing buffered");
                None
            }
        }
    }

    /// Whether writes bypass the page cache here.
    pub fn write_path(&self) -> WritePath {
        self.0.write_path
    }

    /// The directory this backend owns.
    pub fn root(&self) -> &Path {
        &self.0.root
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, name: &BlobName) -> PathBuf {
        let n = name.as_str();
        self.0.root.join("blobs").join(fan_out(n)).join(n)
    }

    fn io(&self, op: &'static str) -> impl Fn(io::Error) -> BackendError + '_ {
        move |e| BackendError::from_io(&self.0.info.id, op, e)
    }

    /// A blob's absence, said only when the backend can tell: with its
    /// `blobs/` directory gone (an unmounted disk, a renamed directory)
    /// every name is absent, and "not found" would let the garbage
    /// collector drop items whose blobs still exist, or a repair think a
    /// fragment lost. Then the backend is unavailable instead.
    fn not_found(&self, name: &BlobName) -> BackendError {
        if !self.0.root.join("blobs").is_dir() {
            return BackendError::Unavailable {
                backend: self.0.info.id.clone(),
                reason: format!("{} is gone", self.0.root.join("blobs").display()),
            };
        }
        BackendError::NotFound {
            backend: self.0.info.id.clone(),
            blob: name.clone(),
        }
    }

    /// Gives the fsynced temp file `tmp` its final name `final_path`
    /// durably: the fan-out directory made durable first if this process
    /// has not yet, a hard link (which refuses to replace a blob), and an
    /// fsync of the directory.
    fn link_durably(&self, tmp: &Path, final_path: &Path, name: &BlobName) -> Result<()> {
        let dir = final_path.parent().unwrap_or(&self.0.root).to_path_buf();
        let fan = fan_out(name.as_str()).to_string();
        let known = self
            .0
            .durable_dirs
            .lock()
            .map(|d| d.contains(&fan))
            .unwrap_or(false);
        if !known {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(BackendError::from_io(
                        &self.0.info.id,
                        "create directory",
                        e,
                    ));
                }
            }
            // Whoever created it, its entry is durable before any
            // commit into it returns.
            sync_dir(&self.0.root.join("blobs")).map_err(self.io("fsync directory"))?;
            self.0.blobs_syncs.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut d) = self.0.durable_dirs.lock() {
                d.insert(fan);
            }
        }
        std::fs::hard_link(tmp, final_path).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => BackendError::AlreadyExists {
                backend: self.0.info.id.clone(),
                blob: name.clone(),
            },
            _ => BackendError::from_io(&self.0.info.id, "link", e),
        })?;
        sync_dir(&dir).map_err(self.io("fsync directory"))
    }

    fn open_blob(&self, path: &Path, name: &BlobName) -> Result<StdFile> {
        StdFile::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.not_found(name),
            _ => BackendError::from_io(&self.0.info.id, "open", e),
        })
    }

    fn short_read(&self) -> BackendError {
        BackendError::Io {
            backend: self.0.info.id.clone(),
            op: "read",
            source: io::Error::from(io::ErrorKind::UnexpectedEof),
        }
    }

    /// `range` of the blob at `path` if the kernel can answer without
    /// waiting for a disk: the path resolved from the dentry cache alone
    /// (`openat2` with `RESOLVE_CACHED`) and every byte in the page cache
    /// (`preadv2` with `RWF_NOWAIT`). `None` for anything else (not cached,
    /// a filesystem without these flags, a short or missing file): the
    /// blocking path answers, with its own checks and errors.
    fn read_cached(&self, path: &Path, range: &Range<u64>) -> Option<Bytes> {
        use rustix::fs::{Mode, OFlags, ResolveFlags};
        let file = rustix::fs::openat2(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::CACHED,
        )
        .ok()?;
        let mut buf = vec![0u8; usize::try_from(range.end.checked_sub(range.start)?).ok()?];
        let mut done = 0;
        while done < buf.len() {
            match rustix::io::preadv2(
                &file,
                &mut [io::IoSliceMut::new(&mut buf[done..])],
                range.start + done as u64,
                rustix::io::ReadWriteFlags::NOWAIT,
            ) {
                Ok(0) | Err(_) => return None,
                Ok(n) => done += n,
            }
        }
        Some(Bytes::from(buf))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| join_error(&self.0.info.id, e))?
    }
}

/// Reads shorter than this go through the page cache whatever the blob: a
/// small range of a large object, or a fragment's digest list. Above
/// [`INLINE_READ_BYTES`], whose page-cache probe starts the kernel's
/// readahead on a miss.
pub const DIRECT_READ_MIN_RANGE: u64 = 128 << 10;
const _: () = assert!(INLINE_READ_BYTES < DIRECT_READ_MIN_RANGE);
/// Ranges of large blobs remembered as read lately, per backend: about 4
/// GiB of fragment reads at 1 MiB batches over 4 + 2 (256 KiB each).
const READ_LATELY_RANGES: usize = 16_384;

/// Reads at most this long try the page cache before the blocking pool.
const INLINE_READ_BYTES: u64 = 64 << 10;
/// Reads at least this long go into a recycled buffer (`buffers`): a
/// fragment's share of a read batch, where fresh allocations cost a page
/// fault per 4 KiB. Smaller ones take a plain allocation, which the
/// allocator serves from memory it already holds.
const RECYCLED_READ_BYTES: u64 = 128 << 10;

fn fan_out(name: &str) -> &str {
    name.get(..2).unwrap_or("_")
}

fn join_error(id: &shardgate_backend::BackendId, e: tokio::task::JoinError) -> BackendError {
    BackendError::Io {
        backend: id.clone(),
        op: "blocking task",
        source: io::Error::other(e),
    }
}

/// Creates the temp file `path` (which must not exist). Opened buffered:
/// a [`Stage`] turns `O_DIRECT` on once a blob outgrows one stage.
/// Whether the process that wrote temp folder `dir` is gone: its lock is
/// free (or it never took one). A folder made in the last minute is left
/// alone: its process may be between making it and locking it.
fn sharer_gone(dir: &Path) -> bool {
    let young = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .is_ok_and(|t| {
            t.elapsed()
                .is_ok_and(|age| age < std::time::Duration::from_secs(60))
        });
    if young {
        return false;
    }
    match StdFile::open(dir.join("LOCK")) {
        Ok(lock) => {
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
        }
        Err(_) => true,
    }
}

fn remove_unfinished(path: &Path, removed: io::Result<()>) {
    match removed {
        Ok(()) => {
            tracing::info!(path = %path.display(), "removed unfinished blob left by a crash")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove unfinished blob")
        }
    }
}

fn create_temp(path: &Path) -> io::Result<StdFile> {
    StdFile::options().write(true).create_new(true).open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    StdFile::open(path)?.sync_all()
}

/// Creates `dir` and any missing ancestor, each made durable in its
/// parent (fsync of the parent after the `mkdir`), and fsyncs the parent
/// of `dir` even when nothing was missing: a directory that a crash
/// interrupted between its creation and its parent's fsync becomes
/// durable now.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match parent_of(at) {
            Some(p) => at = p,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        sync_dir(parent_of(d).unwrap_or(Path::new(".")))?;
    }
    if missing.is_empty() {
        sync_dir(parent_of(dir).unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// The parent of a path, or `None` for a root or a lone relative name
/// (whose parent is the working directory, `""` to `Path::parent`).
fn parent_of(p: &Path) -> Option<&Path> {
    p.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Every committed blob under `root`, as (name, size).
fn walk_blobs(root: &Path) -> impl Iterator<Item = io::Result<(BlobName, u64)>> {
    let dirs = std::fs::read_dir(root.join("blobs"));
    let dirs: Box<dyn Iterator<Item = io::Result<std::fs::DirEntry>>> = match dirs {
        Ok(d) => Box::new(d),
        Err(e) => Box::new(std::iter::once(Err(e))),
    };
    dirs.flat_map(
        |d| -> Box<dyn Iterator<Item = io::Result<(BlobName, u64)>>> {
            let files = d.and_then(|d| std::fs::read_dir(d.path()));
            match files {
                Err(e) => Box::new(std::iter::once(Err(e))),
                Ok(files) => Box::new(files.filter_map(|f| {
                    let f = match f {
                        Ok(f) => f,
                        Err(e) => return Some(Err(e)),
                    };
                    // Foreign files (not a valid blob name) are not ours to list.
                    let name = BlobName::new(f.file_name().to_str()?.to_string()).ok()?;
                    Some(f.metadata().map(|m| (name, m.len())))
                })),
            }
        },
    )
}

/// An unfinished blob: a temp file removed on drop unless committed.
///
/// Buffered, writes go to a plain `std::fs::File` on the blocking pool,
/// moving the caller's `Bytes` there: no copy into an intermediate buffer.
/// Direct, they are copied into an aligned staging buffer here and written
/// from the blocking pool each time it fills ([`STAGE_BYTES`]); the commit
/// writes the rest (its unaligned tail buffered), fsyncs and links in one
/// trip. Either way nothing is held in memory beyond one stage.
struct FsWriter {
    backend: FsBackend,
    name: BlobName,
    tmp: PathBuf,
    file: Option<StdFile>,
    /// The staging buffer, when writing direct.
    staged: Option<Stage>,
    written: u64,
    committed: bool,
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if let Some(stage) = self.staged.take() {
            self.backend.0.pool.give(stage.into_buf());
        }
        if !self.committed {
            // Not committed: discard. A failure here only leaves a temp file
            // that the next open removes.
            if let Err(e) = std::fs::remove_file(&self.tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove temp file");
            }
        }
    }
}

impl FsWriter {
    fn finished(&self, op: &'static str) -> BackendError {
        BackendError::Io {
            backend: self.backend.0.info.id.clone(),
            op,
            source: io::Error::other("writer already finished or failed"),
        }
    }

    /// Runs `f` on the file (and the stage) on the blocking pool and takes
    /// both back. A failure finishes the writer: what the file holds is
    /// then unknown, so nothing more may be written or committed.
    async fn with_file(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut StdFile, &mut Option<Stage>) -> io::Result<()> + Send + 'static,
    ) -> Result<()> {
        let mut file = self.file.take().ok_or_else(|| self.finished(op))?;
        let mut staged = self.staged.take();
        let (file, staged, outcome) = tokio::task::spawn_blocking(move || {
            let r = f(&mut file, &mut staged);
            (file, staged, r)
        })
        .await
        .map_err(|e| join_error(&self.backend.0.info.id, e))?;
        match outcome {
            Ok(()) => {
                self.file = Some(file);
                self.staged = staged;
                Ok(())
            }
            Err(e) => {
                if let Some(stage) = staged {
                    self.backend.0.pool.give(stage.into_buf());
                }
                Err(self.backend.io(op)(e))
            }
        }
    }

    /// Copies `data` into the stage, writing each full one.
    async fn write_staged(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let Some(stage) = self.staged.as_mut() else {
                return Err(self.finished("write"));
            };
            data = &data[stage.fill(data)..];
            if stage.is_full() {
                self.with_file("write", |file, staged| match staged {
                    Some(stage) => stage.flush_full(file),
                    None => Err(io::Error::other("no staging buffer")),
                })
                .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for FsWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let cap = self.backend.0.info.capacity_bytes;
        let used = self.backend.0.used_bytes.load(Ordering::Relaxed);
        if cap.is_some_and(|cap| used + self.written + data.len() as u64 > cap) {
            return Err(BackendError::NoSpace {
                backend: self.backend.0.info.id.clone(),
            });
        }
        let len = data.len() as u64;
        if self.staged.is_some() {
            self.write_staged(&data).await?;
        } else {
            self.with_file("write", move |f, _| f.write_all(&data))
                .await?;
        }
        self.written += len;
        Ok(())
    }

    /// The rest of the stage, the fsync, the link and the temp name's
    /// removal in one trip to the blocking pool.
    async fn commit(mut self: Box<Self>) -> Result<BlobMeta> {
        let mut file = self.file.take().ok_or_else(|| self.finished("fsync"))?;
        let mut staged = self.staged.take();
        let tmp = self.tmp.clone();
        let final_path = self.backend.blob_path(&self.name);
        let name = self.name.clone();
        let b = self.backend.clone();
        let written = self.written;
        let (staged, committed) = tokio::task::spawn_blocking(move || {
            let committed = (|| {
                if let Some(stage) = staged.as_mut() {
                    stage.finish(&mut file).map_err(b.io("write"))?;
                }
                file.sync_all().map_err(b.io("fsync"))?;
                drop(file);
                b.link_durably(&tmp, &final_path, &name)?;
                // Counted here, with the link: a commit whose caller went
                // away meanwhile still holds its bytes.
                b.0.used_bytes.fetch_add(written, Ordering::Relaxed);
                // Committed: the temp name is only a second link now.
                if let Err(e) = std::fs::remove_file(&tmp) {
                    tracing::warn!(path = %tmp.display(), error = %e, "could not remove temp link");
                }
                Ok(())
            })();
            (staged, committed)
        })
        .await
        .map_err(|e| join_error(&self.backend.0.info.id, e))?;
        self.staged = staged;
        committed?;
        self.committed = true;
        Ok(BlobMeta {
            name: self.name.clone(),
            size: self.written,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        drop(self);
        Ok(())
    }
}

#[async_trait]
impl Backend for FsBackend {
    fn info(&self) -> &BackendInfo {
        &self.0.info
    }

    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        let n = self.0.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.0.tmp.join(format!("{name}.{n}"));
        let path = tmp.clone();
        let direct = self.0.write_path == WritePath::Direct;
        let file = self
            .blocking(move |b| create_temp(&path).map_err(b.io("create temp file")))
            .await?;
        Ok(Box::new(FsWriter {
            backend: self.clone(),
            name: name.clone(),
            tmp,
            file: Some(file),
            staged: direct.then(|| self.stage()).flatten(),
            written: 0,
            committed: false,
        }))
    }

    /// The writer's create, write, fsync and link in one trip to the
    /// blocking pool instead of five: what a small object's fragments are
    /// written with.
    async fn put(&self, name: &BlobName, data: Bytes) -> Result<BlobMeta> {
        let size = data.len() as u64;
        let cap = self.0.info.capacity_bytes;
        if cap.is_some_and(|cap| self.0.used_bytes.load(Ordering::Relaxed) + size > cap) {
            return Err(BackendError::NoSpace {
                backend: self.0.info.id.clone(),
            });
        }
        let n = self.0.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.0.tmp.join(format!("{name}.{n}"));
        let final_path = self.blob_path(name);
        let name = name.clone();
        // A blob within one stage is written buffered either way.
        let direct = self.0.write_path == WritePath::Direct && data.len() > STAGE_BYTES;
        self.blocking(move |b| {
            let committed = (|| {
                let mut file = create_temp(&tmp).map_err(b.io("create temp file"))?;
                if let Some(mut stage) = direct.then(|| b.stage()).flatten() {
                    stage.reserve_exact(&file, size);
                    let written = (|| {
                        for piece in data.chunks(STAGE_BYTES) {
                            stage.fill(piece);
                            if stage.is_full() {
                                stage.flush_full(&mut file)?;
                            }
                        }
                        stage.finish(&mut file)
                    })();
                    b.0.pool.give(stage.into_buf());
                    written.map_err(b.io("write"))?;
                } else {
                    file.write_all(&data).map_err(b.io("write"))?;
                }
                file.sync_all().map_err(b.io("fsync"))?;
                drop(file);
                b.link_durably(&tmp, &final_path, &name)
            })();
            // Committed or not, the temp name goes (after a commit it is
            // only a second link); one left behind is removed at the next
            // open.
            if let Err(e) = std::fs::remove_file(&tmp)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %tmp.display(), error = %e, "could not remove temp file");
            }
            committed?;
            b.0.used_bytes.fetch_add(size, Ordering::Relaxed);
            Ok(BlobMeta { name, size })
        })
        .await
    }

    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        let path = self.blob_path(name);
        // A small read the kernel can answer from its caches is answered
        // here: a few microseconds, less than the hand-off to the blocking
        // pool and back. Anything else takes the blocking pool.
        if range.end.saturating_sub(range.start) <= INLINE_READ_BYTES
            && let Some(bytes) = self.read_cached(&path, &range)
        {
            return Ok(bytes);
        }
        let name = name.clone();
        self.blocking(move |b| {
            let file = b.open_blob(&path, &name)?;
            let size = file.metadata().map_err(b.io("stat"))?.len();
            check_range(&b.0.info, &name, &range, size)?;
            if b.0
                .direct_reads
                .as_ref()
                .is_some_and(|d| d.goes_direct(&name, &range, size))
            {
                return direct::read_range(&file, &range, size).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        b.short_read()
                    } else {
                        BackendError::from_io(&b.0.info.id, "read", e)
                    }
                });
            }
            // Read into spare capacity: no zero-fill first. A large read
            // takes a recycled buffer, whose pages are already faulted in.
            let len = range.end - range.start;
            let recycled = len >= RECYCLED_READ_BYTES;
            let mut buf = match recycled {
                true => buffers::take(len as usize),
                false => Vec::with_capacity(len as usize),
            };
            buf.clear();
            let mut file = file;
            let read = file
                .seek(SeekFrom::Start(range.start))
                .map_err(b.io("seek"))
                .and_then(|_| {
                    (&mut file)
                        .take(len)
                        .read_to_end(&mut buf)
                        .map_err(b.io("read"))
                })
                // The file shrank under us: never return a short read.
                .and_then(|got| match got as u64 == len {
                    true => Ok(()),
                    false => Err(b.short_read()),
                });
            match (read, recycled) {
                (Ok(()), true) => Ok(buffers::into_bytes(buf)),
                (Ok(()), false) => Ok(Bytes::from(buf)),
                (Err(e), recycled) => {
                    if recycled {
                        buffers::give(buf);
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        match tokio::fs::metadata(self.blob_path(name)).await {
            Ok(m) => Ok(BlobMeta {
                name: name.clone(),
                size: m.len(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(name)),
            Err(e) => Err(BackendError::from_io(&self.0.info.id, "stat", e)),
        }
    }

    async fn delete(&self, name: &BlobName) -> Result<()> {
        let path = self.blob_path(name);
        let name = name.clone();
        self.blocking(move |b| {
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(b.not_found(&name)),
                Err(e) => return Err(BackendError::from_io(&b.0.info.id, "stat", e)),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(b.not_found(&name)),
                Err(e) => return Err(BackendError::from_io(&b.0.info.id, "delete", e)),
            }
            b.0.used_bytes.fetch_sub(
                size.min(b.0.used_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            if let Some(dir) = path.parent() {
                sync_dir(dir).map_err(b.io("fsync directory"))?;
            }
            Ok(())
        })
        .await
    }

    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        let (tx, rx) = tokio::sync::mpsc::channel(LIST_BUFFER_ENTRIES);
        let root = self.0.root.clone();
        let id = self.0.info.id.clone();
        tokio::task::spawn_blocking(move || {
            for item in walk_blobs(&root) {
                let item = item
                    .map(|(name, size)| BlobMeta { name, size })
                    .map_err(|e| BackendError::from_io(&id, "list", e));
                if tx.blocking_send(item).is_err() {
                    break; // the consumer went away
                }
            }
        });
        stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
    }

    async fn health(&self) -> Result<Health> {
        let root = self.0.root.clone();
        let probe = self
            .blocking(move |b| {
                b.0.pool.trim_idle();
                let st = rustix::fs::statvfs(&root)
                    .map_err(|e| BackendError::from_io(&b.0.info.id, "statvfs", e.into()))?;
                let read_only = st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY);
                // A filesystem without size accounting (ramfs) reports no
                // blocks at all, not a full disk: only a configured
                // capacity bounds it.
                let free = match st.f_blocks {
                    0 => u64::MAX,
                    _ => st.f_bavail.saturating_mul(st.f_frsize),
                };
                Ok((free, read_only))
            })
            .await?;
        let (medium_free, read_only) = probe;
        let used = self.0.used_bytes.load(Ordering::Relaxed);
        let cap_free = self
            .0
            .info
            .capacity_bytes
            .map_or(u64::MAX, |c| c.saturating_sub(used));
        Ok(Health {
            free_bytes: medium_free.min(cap_free),
            used_bytes: Some(used),
            writable: !read_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_reads_remember_the_last_ranges_read_and_forget_the_oldest() {
        let d = DirectReads::new(1 << 20);
        let name = BlobName::random();
        let range = |i: u64| i << 20..(i + 1) << 20;
        assert!(!d.goes_direct(&name, &range(0), 1 << 19), "a small blob");
        assert!(
            !d.goes_direct(&name, &(0..64 << 10), 8 << 20),
            "a small range"
        );
        assert!(d.goes_direct(&name, &range(0), u64::MAX), "a first read");
        assert!(!d.goes_direct(&name, &range(0), u64::MAX), "read again");
        for i in 1..READ_LATELY_RANGES as u64 {
            assert!(d.goes_direct(&name, &range(i), u64::MAX));
        }
        // Full: the next first read pushes out the oldest, and no other.
        assert!(d.goes_direct(&name, &range(READ_LATELY_RANGES as u64), u64::MAX));
        assert!(
            !d.goes_direct(&name, &range(1), u64::MAX),
            "still remembered"
        );
        assert!(d.goes_direct(&name, &range(0), u64::MAX), "forgotten");
        let lately = d.read_lately.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(lately.order.len(), READ_LATELY_RANGES);
        assert_eq!(lately.keys.len(), READ_LATELY_RANGES);
    }

    /// A backend named `d` on `root`.
    async fn open_at(root: &Path) -> FsBackend {
        FsBackend::open(
            BackendInfo::new(shardgate_backend::BackendId::new("d").expect("id")),
            root,
        )
        .await
        .expect("open")
    }

    async fn put(b: &FsBackend, name: &str) -> Result<BlobMeta> {
        let mut w = b.create(&BlobName::new(name).expect("name")).await?;
        w.write(Bytes::from_static(b"x")).await?;
        w.commit().await
    }

    /// A large read goes into a recycled buffer, which may hold another
    /// blob's bytes: the answer is exactly the range asked for, however
    /// long and dirty the buffer was.
    #[tokio::test]
    async fn a_read_into_a_recycled_buffer_returns_only_the_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open_at(dir.path()).await;
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let name = BlobName::new("recycled").expect("name");
        let mut w = b.create(&name).await.expect("create");
        w.write(Bytes::from(data.clone())).await.expect("write");
        w.commit().await.expect("commit");
        let len = RECYCLED_READ_BYTES as usize + 1000;
        for _ in 0..8 {
            buffers::give(vec![0xAA; len + 7]);
        }
        let range = 4096 + 3..4096 + 3 + len as u64;
        for _ in 0..3 {
            let got = b.get(&name, range.clone()).await.expect("get");
            assert_eq!(got.len(), len);
            assert_eq!(&got[..], &data[range.start as usize..range.end as usize]);
        }
        // A range that reaches past the end is refused, not cut short.
        let past = data.len() as u64 - 10..data.len() as u64 + len as u64;
        assert!(b.get(&name, past).await.is_err());
    }

    /// Every commit into a fan-out directory not yet known durable fsyncs
    /// `blobs/` before it returns: the first into a new directory, each of
    /// several concurrent ones into it (none returns before the fsync),
    /// and the first into a directory a crash left (created, not fsynced).
    #[tokio::test]
    async fn every_directory_of_a_committed_blob_is_durable_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        // Left by a crash between mkdir and the fsync of blobs/.
        std::fs::create_dir_all(root.join("blobs").join("cd")).expect("mkdir");
        let b = open_at(&root).await;
        let syncs = || b.0.blobs_syncs.load(Ordering::Relaxed);
        put(&b, "ab01").await.expect("commit");
        assert_eq!(syncs(), 1, "a new directory");
        put(&b, "ab02").await.expect("commit");
        assert_eq!(syncs(), 1, "a directory known durable costs nothing");
        put(&b, "cd01").await.expect("commit");
        assert_eq!(syncs(), 2, "a directory a crash left is made durable");
        let together = futures::future::join_all((0..8).map(|i| {
            let b = b.clone();
            async move { put(&b, &format!("ef{i:02}")).await }
        }))
        .await;
        assert!(together.iter().all(Result::is_ok));
        let after = syncs();
        assert!(
            (3..=10).contains(&after),
            "concurrent commits into a new directory: {after} fsyncs of blobs/"
        );
        // Every commit that returned saw the directory durable: the set
        // only learns a directory after its fsync.
        assert!(b.0.durable_dirs.lock().expect("lock").contains("ef"));
    }

    /// A whole-blob put makes its directory durable like a writer's commit,
    /// leaves nothing in `tmp/`, committed or refused, and counts its bytes.
    #[tokio::test]
    async fn a_put_is_a_commit_in_one_step() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let b = open_at(&root).await;
        let name = BlobName::new("ab01").expect("name");
        let meta = b
            .put(&name, Bytes::from_static(b"whole"))
            .await
            .expect("put");
        assert_eq!(meta.size, 5);
        assert_eq!(b.0.blobs_syncs.load(Ordering::Relaxed), 1);
        assert_eq!(b.0.used_bytes.load(Ordering::Relaxed), 5);
        let again = b.put(&name, Bytes::from_static(b"other")).await;
        assert!(
            matches!(again, Err(BackendError::AlreadyExists { .. })),
            "{again:?}"
        );
        assert_eq!(b.0.used_bytes.load(Ordering::Relaxed), 5);
        assert_eq!(std::fs::read_dir(root.join("tmp")).expect("tmp").count(), 0);
        assert_eq!(&b.get(&name, 1..4).await.expect("get")[..], b"hol");
    }

    /// A small read whose bytes the page cache does not hold is not
    /// answered inline: it goes to the blocking pool, which reads them from
    /// the disk (and leaves them cached, so the next read is inline).
    #[tokio::test]
    async fn a_small_read_off_the_page_cache_takes_the_blocking_path() {
        const EXT4_SUPER_MAGIC: u64 = 0xEF53;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let b = open_at(&root).await;
        let name = BlobName::new("ab01").expect("name");
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        b.put(&name, Bytes::from(data.clone())).await.expect("put");
        let path = b.blob_path(&name);
        let range = 100..30_100;
        assert_eq!(
            b.read_cached(&path, &range).as_deref(),
            Some(&data[100..30_100]),
            "just written: in the page cache"
        );
        // The pages are clean (fsynced): DONTNEED drops them.
        let file = StdFile::open(&path).expect("open blob");
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
        let on_ext4 =
            rustix::fs::fstatfs(&file).expect("fstatfs").f_type as u64 == EXT4_SUPER_MAGIC;
        if on_ext4 {
            assert_eq!(b.read_cached(&path, &range), None, "not cached: not inline");
        }
        assert_eq!(
            &b.get(&name, range.clone()).await.expect("get")[..],
            &data[100..30_100]
        );
        assert_eq!(
            b.read_cached(&path, &range).as_deref(),
            Some(&data[100..30_100])
        );
        // Past the end: never a short answer from either path.
        assert_eq!(b.read_cached(&path, &(39_000..41_000)), None);
        let past = b.get(&name, 39_000..41_000).await;
        assert!(
            matches!(past, Err(BackendError::InvalidRange { .. })),
            "{past:?}"
        );
    }

    /// With `blobs/` gone, no blob is "not found": the garbage collector
    /// would drop items whose blobs still exist elsewhere (a disk
    /// unmounted, a directory renamed).
    #[tokio::test]
    async fn a_missing_blobs_directory_is_unavailable_not_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let b = open_at(&root).await;
        put(&b, "ab01").await.expect("commit");
        let name = BlobName::new("ab01").expect("name");
        let absent = BlobName::new("ab02").expect("name");
        assert!(b.delete(&absent).await.expect_err("absent").is_not_found());
        std::fs::rename(root.join("blobs"), dir.path().join("away")).expect("rename");
        for e in [
            b.delete(&name).await.expect_err("gone"),
            b.stat(&name).await.expect_err("gone"),
            b.get(&name, 0..1).await.expect_err("gone"),
        ] {
            assert!(matches!(e, BackendError::Unavailable { .. }), "{e:?}");
        }
        std::fs::rename(dir.path().join("away"), root.join("blobs")).expect("rename back");
        assert_eq!(b.stat(&name).await.expect("back").size, 1);
    }

    #[test]
    fn a_relative_root_and_its_missing_parents_are_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = std::env::current_dir().expect("cwd");
        // Relative to the working directory, as a configured path may be.
        let rel = dir
            .path()
            .strip_prefix("/")
            .expect("absolute")
            .join("a/b/store");
        let rel = Path::new("/").join(&rel);
        std::env::set_current_dir(dir.path()).expect("cd");
        let lone = create_dir_durable(Path::new("lone"));
        std::env::set_current_dir(&here).expect("cd back");
        lone.expect("a lone relative name");
        assert!(dir.path().join("lone").is_dir());
        create_dir_durable(&rel).expect("missing parents");
        assert!(rel.is_dir());
        create_dir_durable(&rel).expect("again: exists");
    }
}
