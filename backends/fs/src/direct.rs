//! Direct I/O: fragment bytes between aligned buffers and the disk without
//! the page cache (`O_DIRECT`).
//!
//! Why: a large PUT writes 1.5 times the object's bytes as fragments, and
//! copying them into the page cache on `write` was the largest single cost
//! of a large PUT (27-41% of the gateway's CPU, issue 24), paid again by
//! the kernel's writeback. With `O_DIRECT` the disk reads the bytes from
//! our buffer; the one copy left is ours, from the codec's shards into an
//! aligned buffer reused from a pool.
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length
//! aligned to the device's logical block size; [`ALIGN`] (4 KiB) covers
//! every block size Linux supports under a page. The unaligned tail of a
//! blob is written buffered, on the same descriptor with `O_DIRECT`
//! cleared, and the commit's fsync covers both as before.
//!
//! Whether a directory's filesystem takes `O_DIRECT` at all is probed once
//! when the backend opens ([`probe`]); ramfs, for one, refuses it (tmpfs
//! too before Linux 6.6), and then every write is buffered as before.
//!
//! A direct write allocates its blocks at once, where a buffered one waits
//! for writeback and gets whole extents: 96 concurrent direct writers left
//! 7 extents per 16 MiB fragment against 1.7, and reading them back cost
//! more. So a [`Stage`] reserves the file's blocks ahead with `fallocate`
//! ([`RESERVE_STEP`], then doubling), and gives back what it did not use.
//!
//! Reads of such blobs go direct too ([`read_range`]), the first time a
//! range is read: the backend decides which (`FsBackend::get`).

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aligned_vec::{AVec, ConstAlign};
use bytes::Bytes;
use memmap2::MmapMut;
use rustix::fs::OFlags;
use shardgate_backend::buffers;

/// Alignment of direct buffers, offsets and lengths.
pub const ALIGN: usize = 4096;
/// Bytes a writer gathers before one direct write: one hand-off to the
/// blocking pool, and one wait for the device, per this many bytes of a
/// fragment. Measured (BENCHMARKS.md, issue 24): 256 KiB left sys CPU at
/// 0.40-0.45 of user; 1 MiB cut context switches by 2.4 times but held
/// 12.8 MiB per PUT, past the 8 MiB admission reserves for it; 512 KiB
/// holds 7.8 MiB with sys at 0.29-0.37 of user.
pub const STAGE_BYTES: usize = 512 << 10;
/// Idle staging buffers a backend always keeps for its next writers.
const POOL_KEEP: usize = 4;
/// Idle staging buffers a backend keeps at most (8 MiB): enough for the
/// writers of a busy gateway (16 concurrent large PUTs put 16 writers on
/// every site) to find their stages mapped and faulted in. A fresh mapping
/// costs a page fault per 4 KiB page on its first fill: with 4 kept, 64
/// MiB PUTs took 31,900 page faults per GiB against 19,900 before direct
/// writes. Idle stages are outside what admission counts, hence the cap.
const POOL_MAX: usize = 16;
/// Buffers past [`POOL_KEEP`] idle this long go back to the kernel (at the
/// next take, give or health check): a burst's stages are kept while
/// writers keep coming, not for good.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// Blocks reserved ahead of a direct writer at first; each later
/// reservation doubles what the file holds, so a blob of any size ends in
/// a few extents, and at most half of its reservation goes unused (given
/// back at the commit).
pub const RESERVE_STEP: u64 = 8 << 20;
/// The most one reservation takes: on a nearly full disk a reservation
/// holds space other writers need until its blob commits.
const RESERVE_MAX_STEP: u64 = 64 << 20;

/// A buffer whose start is [`ALIGN`]-aligned.
pub type AlignedBuf = AVec<u8, ConstAlign<ALIGN>>;

/// A stage's memory: an anonymous mapping of [`STAGE_BYTES`] (page
/// aligned), given back to the kernel when dropped. Heap buffers of this
/// size and alignment were kept by the allocator after use, and the
/// gateway's resident memory crept up round after round (BENCHMARKS.md).
#[derive(Debug)]
pub struct StageBuf {
    map: MmapMut,
    len: usize,
}

impl StageBuf {
    fn new() -> io::Result<Self> {
        Ok(Self {
            map: MmapMut::map_anon(STAGE_BYTES)?,
            len: 0,
        })
    }

    fn filled(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// Appends what fits of `data`; returns how much did.
    fn push(&mut self, data: &[u8]) -> usize {
        let n = (STAGE_BYTES - self.len).min(data.len());
        self.map[self.len..self.len + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn clear(&mut self) {
        self.len = 0;
    }
}

/// How a backend's blobs reach its disk, decided when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// `O_DIRECT` from aligned buffers; the unaligned tail buffered.
    Direct,
    /// Through the page cache: the filesystem refuses `O_DIRECT`, or the
    /// configuration turned it off.
    Buffered,
}

/// Staging buffers reused across writers: fewer mappings (and page faults
/// on fresh pages) per blob. The pool holds what the last burst of writers
/// gave back, up to [`POOL_MAX`], and trims what stays idle past
/// [`POOL_IDLE`] down to [`POOL_KEEP`].
#[derive(Debug, Default)]
pub struct BufferPool {
    /// Idle buffers with when each came back, oldest first.
    free: Mutex<Vec<(StageBuf, Instant)>>,
}

impl BufferPool {
    /// An empty buffer with room for [`STAGE_BYTES`]: the one given back
    /// last (its pages are the likeliest to be in the CPU's caches), else a
    /// fresh mapping.
    pub fn take(&self) -> io::Result<StageBuf> {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let reused = free.pop();
            trim(&mut free, Instant::now());
            reused
        };
        reused.map_or_else(StageBuf::new, |(buf, _)| Ok(buf))
    }

    /// Returns a buffer for the next writer (unmapped when the pool is full).
    pub fn give(&self, mut buf: StageBuf) {
        buf.clear();
        let now = Instant::now();
        let (unmapped, kept) = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let unmapped = trim(&mut free, now);
            let kept = free.len() < POOL_MAX;
            if kept {
                free.push((buf, now));
                (unmapped, None)
            } else {
                (unmapped, Some(buf))
            }
        };
        // Unmapped outside the lock.
        drop((unmapped, kept));
    }

    /// Unmaps the buffers past [`POOL_KEEP`] idle longer than
    /// [`POOL_IDLE`]; the backend's health check calls it, so a backend
    /// that stops taking writes gives its stages back.
    pub fn trim_idle(&self) {
        let stale = trim(
            &mut self.free.lock().unwrap_or_else(|e| e.into_inner()),
            Instant::now(),
        );
        drop(stale);
    }

    /// Idle buffers held now.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Takes out of `free` the buffers past [`POOL_KEEP`] idle longer than
/// [`POOL_IDLE`] at `now`, for the caller to drop after the lock.
fn trim(free: &mut Vec<(StageBuf, Instant)>, now: Instant) -> Vec<(StageBuf, Instant)> {
    let stale = free
        .iter()
        .take(free.len().saturating_sub(POOL_KEEP))
        .take_while(|(_, since)| now.duration_since(*since) > POOL_IDLE)
        .count();
    free.drain(..stale).collect()
}

/// Whether files created in `dir` accept direct writes: creates, writes
/// and removes one aligned block. `EINVAL` (at the open or at the write) is
/// the kernel's "not here"; any other error is returned.
pub fn probe(dir: &Path) -> io::Result<WritePath> {
    let path = dir.join(".direct-probe");
    let outcome = (|| {
        let mut file = match create_direct(&path) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                return Ok(WritePath::Buffered);
            }
            other => other?,
        };
        let mut block = AlignedBuf::with_capacity(ALIGN, ALIGN);
        block.resize(ALIGN, 0);
        match file.write(&block) {
            Ok(n) if n == ALIGN => Ok(WritePath::Direct),
            Ok(_) => Ok(WritePath::Buffered),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                Ok(WritePath::Buffered)
            }
            Err(e) => Err(e),
        }
    })();
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound && outcome.is_ok() => Err(e),
        _ => outcome,
    }
}

/// A writer's staging buffer, and what it has put in its file.
///
/// The file is opened buffered. Only when a first stage fills does the
/// descriptor turn to `O_DIRECT`: a blob that fits in one stage (a small
/// object's fragment) is written through the page cache as before, where
/// the copy costs little and a GET soon after finds it; a larger one skips
/// the page cache from its first byte on.
#[derive(Debug)]
pub struct Stage {
    buf: StageBuf,
    /// The descriptor has `O_DIRECT` on.
    direct: bool,
    /// Bytes written to the file; a multiple of [`ALIGN`] until the tail.
    flushed: u64,
    /// The file's length as reserved by `fallocate` (0: nothing reserved).
    reserved: u64,
    /// No reserving: the filesystem keeps blocks in memory (tmpfs), or
    /// `fallocate` failed once (not supported here, or no room for a whole
    /// step): the writes alone decide from then on.
    no_reserve: bool,
    /// A reservation was tried: the file's length may differ from
    /// `flushed` (a failed `fallocate` can leave part of its extension).
    reserve_tried: bool,
}

impl Stage {
    /// A stage over an empty buffer; `reserve`: whether to reserve
    /// blocks ahead (not on a filesystem in memory).
    pub fn new(buf: StageBuf, reserve: bool) -> Self {
        Self {
            buf,
            direct: false,
            flushed: 0,
            reserved: 0,
            no_reserve: !reserve,
            reserve_tried: false,
        }
    }

    /// The buffer, for the pool.
    pub fn into_buf(self) -> StageBuf {
        self.buf
    }

    /// Copies as much of `data` as fits; returns how much did.
    pub fn fill(&mut self, data: &[u8]) -> usize {
        self.buf.push(data)
    }

    pub fn is_full(&self) -> bool {
        self.buf.len == STAGE_BYTES
    }

    /// Reserves the file's first `len` bytes at once (a blob whose size is
    /// known, larger than a stage: it will go direct).
    pub fn reserve_exact(&mut self, file: &File, len: u64) {
        self.reserve_to(file, len);
    }

    /// Writes the full buffer direct (turning `O_DIRECT` on at the first,
    /// and reserving ahead), and empties it.
    pub fn flush_full(&mut self, file: &mut File) -> io::Result<()> {
        if !self.direct && self.flushed.is_multiple_of(ALIGN as u64) {
            // Refused (it was not, at the probe): written buffered.
            self.direct = set_direct(file, true).is_ok();
        }
        let end = self.flushed + self.buf.len as u64;
        if self.direct && end > self.reserved {
            let step = RESERVE_STEP
                .max(self.reserved.min(RESERVE_MAX_STEP))
                .max(end - self.flushed);
            self.reserve_to(file, self.flushed + step);
        }
        if self.direct {
            write_block(file, self.buf.filled(), &mut self.direct)?;
        } else {
            file.write_all(self.buf.filled())?;
        }
        self.flushed = end;
        self.buf.clear();
        Ok(())
    }

    /// Writes what the buffer still holds (direct: its aligned part direct
    /// and its tail buffered, `O_DIRECT` cleared on the descriptor) and
    /// gives back the reservation past the end: the file is then exactly
    /// as long as what was written.
    pub fn finish(&mut self, file: &mut File) -> io::Result<()> {
        let data = self.buf.filled();
        let aligned = if self.direct {
            data.len() / ALIGN * ALIGN
        } else {
            0
        };
        if aligned > 0 {
            write_block(file, &data[..aligned], &mut self.direct)?;
        }
        if aligned < data.len() {
            if self.direct {
                set_direct(file, false)?;
                self.direct = false;
            }
            file.write_all(&data[aligned..])?;
        }
        self.flushed += data.len() as u64;
        self.buf.clear();
        if self.reserve_tried && file.metadata()?.len() != self.flushed {
            file.set_len(self.flushed)?;
        }
        Ok(())
    }

    /// `fallocate` up to `end` (growing the file's length to it). Advice
    /// in effect: a failure stops the reserving, and the writes report
    /// whatever is really wrong.
    fn reserve_to(&mut self, file: &File, end: u64) {
        if self.no_reserve || end <= self.reserved {
            return;
        }
        let from = self.reserved.max(self.flushed);
        self.reserve_tried = true;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), from, end - from) {
            Ok(()) => self.reserved = end,
            Err(e) => {
                tracing::debug!(error = %e, "fallocate refused; writing without reserving");
                self.no_reserve = true;
                // A failure part-way (ext4 out of space) keeps what it
                // allocated, and the length with it: give it back now.
                let _ = file.set_len(from);
            }
        }
    }
}

/// Creates `path` (which must not exist) for direct writes.
pub fn create_direct(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .custom_flags(OFlags::DIRECT.bits() as i32)
        .open(path)
}

/// Writes `block` (aligned start, length a multiple of [`ALIGN`]) at the
/// file's offset, direct. A short direct write (a nearly full disk can
/// give one) leaves the offset unaligned: the rest goes buffered (and
/// `direct` turns false), so the caller sees the real error (`ENOSPC`)
/// rather than `EINVAL`.
fn write_block(file: &mut File, block: &[u8], direct: &mut bool) -> io::Result<()> {
    debug_assert!(block.len().is_multiple_of(ALIGN));
    let mut rest = block;
    while !rest.is_empty() {
        let n = match file.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        rest = &rest[n..];
        if !n.is_multiple_of(ALIGN) && !rest.is_empty() {
            set_direct(file, false)?;
            *direct = false;
            return file.write_all(rest);
        }
    }
    Ok(())
}

/// Sets or clears `O_DIRECT` on `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(file, flags)?;
    Ok(())
}

/// Reads `range` of `file` (of `size` bytes, the range within it) with
/// `O_DIRECT`: the aligned blocks covering the range straight into a
/// recycled buffer, with no page cache filled on the way and no copy out
/// of one. `file` is opened buffered; `O_DIRECT` is set on it here.
///
/// Why: a fragment written direct is in no page cache, so a buffered read
/// of it fills one (a page allocated, zeroed and copied out per 4 KiB)
/// that a large object's next reader is unlikely to want before it is
/// evicted. Trying the page cache first (`preadv2` with `RWF_NOWAIT`) is no
/// cheap probe: a miss starts the kernel's readahead of the range, and the
/// next read then copies from the page cache after all (measured,
/// BENCHMARKS.md).
pub fn read_range(file: &File, range: &Range<u64>, size: u64) -> io::Result<Bytes> {
    let align = ALIGN as u64;
    let start = range.start / align * align;
    // The last block may be partial: the read stops at the end of file.
    let end = range.end.div_ceil(align) * align;
    let want = (end - start) as usize;
    // A recycled buffer keeps its length, so sizing it writes no zeroes
    // once it has served a read this large; the aligned window inside it
    // starts within its first ALIGN bytes.
    let mut buf = buffers::take(want + ALIGN);
    buf.resize(want + ALIGN, 0);
    let at = buf.as_ptr().align_offset(ALIGN);
    let from = (range.start - start) as usize;
    let to = (range.end - start) as usize;
    let read = match at < ALIGN {
        true => read_direct(
            file,
            start,
            &mut buf[at..at + want],
            size.min(end) - start,
            to,
        ),
        false => Err(io::Error::other("no aligned window in the read buffer")),
    };
    match read {
        Ok(()) => Ok(buffers::into_bytes(buf).slice(at + from..at + to)),
        Err(e) => {
            buffers::give(buf);
            Err(e)
        }
    }
}

/// Reads the aligned `buf` from the aligned `offset` with `O_DIRECT`:
/// `available` bytes are there (the file may end inside the last block),
/// and at least `needed` must come.
fn read_direct(
    file: &File,
    offset: u64,
    buf: &mut [u8],
    available: u64,
    needed: usize,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    set_direct(file, true)?;
    let available = usize::try_from(available).map_err(io::Error::other)?;
    let mut got = 0;
    while got < available {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if got < needed {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Writes `len` patterned bytes through a stage into a new file in a
    /// directory that takes `O_DIRECT`; returns them, the file, and the
    /// file's length after the first full stage (None: no stage filled).
    fn staged_write(dir: &Path, len: usize) -> (Vec<u8>, std::path::PathBuf, Option<u64>) {
        let path = dir.join("blob");
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut stage = Stage::new(BufferPool::default().take().unwrap(), true);
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let mut rest = &data[..];
        let mut after_first = None;
        while !rest.is_empty() {
            rest = &rest[stage.fill(rest)..];
            if stage.is_full() {
                stage.flush_full(&mut file).unwrap();
                after_first.get_or_insert(file.metadata().unwrap().len());
            }
        }
        stage.finish(&mut file).unwrap();
        (data, path, after_first)
    }

    #[test]
    fn a_stage_reserves_ahead_and_gives_back_what_it_did_not_use() {
        let dir = tempfile::tempdir().unwrap();
        if probe(dir.path()).unwrap() != WritePath::Direct {
            println!("no O_DIRECT here: nothing to show");
            return;
        }
        let (data, path, after_first) = staged_write(dir.path(), 3 * STAGE_BYTES + 1234);
        assert_eq!(
            after_first,
            Some(RESERVE_STEP),
            "reserved ahead, not grown per write"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "exactly the bytes written"
        );
    }

    #[test]
    fn a_blob_within_one_stage_is_written_buffered_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (data, path, after_first) = staged_write(dir.path(), STAGE_BYTES - 1);
        assert_eq!(after_first, None);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn pooled_buffers_are_aligned_and_reused() {
        let pool = BufferPool::default();
        let mut a = pool.take().unwrap();
        assert_eq!(a.map.as_ptr() as usize % ALIGN, 0);
        a.push(&[7; 100]);
        let addr = a.map.as_ptr();
        pool.give(a);
        let b = pool.take().unwrap();
        assert!(b.filled().is_empty(), "a reused buffer starts empty");
        assert_eq!(b.map.as_ptr(), addr, "the buffer was reused");
    }

    #[test]
    fn the_pool_keeps_a_burst_up_to_its_cap() {
        let pool = BufferPool::default();
        let burst: Vec<_> = (0..POOL_MAX + 3).map(|_| pool.take().unwrap()).collect();
        for buf in burst {
            pool.give(buf);
        }
        assert_eq!(pool.idle(), POOL_MAX);
    }

    #[test]
    fn idle_buffers_past_the_kept_few_are_trimmed() {
        let now = Instant::now();
        let old = now.checked_sub(POOL_IDLE * 2).unwrap();
        let idle = |stale: usize, fresh: usize| -> Vec<_> {
            (0..stale + fresh)
                .map(|i| (StageBuf::new().unwrap(), if i < stale { old } else { now }))
                .collect()
        };
        // All stale: every one past the kept few goes.
        let mut free = idle(POOL_KEEP + 3, 0);
        assert_eq!(trim(&mut free, now).len(), 3);
        assert_eq!(free.len(), POOL_KEEP);
        assert_eq!(trim(&mut free, now).len(), 0, "the kept few stay");
        // Two stale among many fresh: only those two go.
        let mut free = idle(2, POOL_KEEP + 4);
        assert_eq!(trim(&mut free, now).len(), 2);
        assert_eq!(free.len(), POOL_KEEP + 4);
    }
}
