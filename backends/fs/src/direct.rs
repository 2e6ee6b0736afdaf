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
//! when the backend opens ([`probe`]); tmpfs, for one, refuses it, and then
//! every write is buffered as before.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use aligned_vec::{AVec, ConstAlign};
use bytes::Bytes;
use rustix::fs::OFlags;

/// Alignment of direct buffers, offsets and lengths.
pub const ALIGN: usize = 4096;
/// Bytes a writer gathers before one direct write: one hand-off to the
/// blocking pool, and one wait for the device, per this many bytes of a
/// fragment. Measured (BENCHMARKS.md, issue 24): 256 KiB left sys CPU at
/// 0.40-0.45 of user; 1 MiB cut context switches by 2.4 times but held
/// 12.8 MiB per PUT, past the 8 MiB admission reserves for it; 512 KiB
/// holds 7.8 MiB with sys at 0.29-0.37 of user.
pub const STAGE_BYTES: usize = 512 << 10;
/// Idle staging buffers a backend keeps for its next writers (more only
/// raise resident memory after a burst).
const POOL_BUFFERS: usize = 4;

/// A buffer whose start is [`ALIGN`]-aligned.
pub type AlignedBuf = AVec<u8, ConstAlign<ALIGN>>;

/// How a backend's blobs reach its disk, decided when it opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePath {
    /// `O_DIRECT` from aligned buffers; the unaligned tail buffered.
    Direct,
    /// Through the page cache: the filesystem refuses `O_DIRECT`, or the
    /// configuration turned it off.
    Buffered,
}

/// Staging buffers reused across writers: no allocation (and no page
/// faults on fresh pages) per blob.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
}

impl BufferPool {
    /// An empty buffer with room for [`STAGE_BYTES`].
    pub fn take(&self) -> AlignedBuf {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| AVec::with_capacity(ALIGN, STAGE_BYTES))
    }

    /// Returns a buffer for the next writer (dropped when the pool is full).
    pub fn give(&self, mut buf: AlignedBuf) {
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_BUFFERS && buf.capacity() >= STAGE_BYTES {
            free.push(buf);
        }
    }
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

/// Creates `path` (which must not exist) for direct writes.
pub fn create_direct(path: &Path) -> io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .custom_flags(OFlags::DIRECT.bits() as i32)
        .open(path)
}

/// Writes `block` (aligned start, length a multiple of [`ALIGN`]) at the
/// file's offset. A short direct write (a nearly full disk can give one)
/// leaves the offset unaligned: the rest goes buffered, so the caller sees
/// the real error (`ENOSPC`) rather than `EINVAL`.
pub fn write_block(file: &mut File, block: &[u8]) -> io::Result<()> {
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
            make_buffered(file)?;
            return file.write_all(rest);
        }
    }
    Ok(())
}

/// Clears `O_DIRECT` on `file`: what follows goes through the page cache.
pub fn make_buffered(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::DIRECT)?;
    Ok(())
}

/// Reads `range` of `file` (of `size` bytes, the range within it) with
/// `O_DIRECT`: the aligned blocks covering the range into an aligned buffer,
/// handed out without a copy. `file` must have been opened with `O_DIRECT`.
pub fn read_range(mut file: &File, range: &Range<u64>, size: u64) -> io::Result<Bytes> {
    let align = ALIGN as u64;
    let start = range.start / align * align;
    // The last block may be partial: the read stops at the end of file.
    let end = range.end.div_ceil(align) * align;
    let want = (end - start) as usize;
    let mut buf = AlignedBuf::with_capacity(ALIGN, want);
    // Zeroed first (reading into uninitialised memory would take unsafe
    // code): a memset of pages the device then overwrites.
    buf.resize(want, 0);
    file.seek(SeekFrom::Start(start))?;
    let mut got = 0;
    let available = (size.min(end) - start) as usize;
    while got < available {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    let from = (range.start - start) as usize;
    let to = (range.end - start) as usize;
    if got < to {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from_owner(Owned(buf)).slice(from..to))
}

/// Opens `path` for direct reads.
pub fn open_for_direct_read(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(OFlags::DIRECT.bits() as i32)
        .open(path)
}

/// An aligned buffer as the owner behind a [`Bytes`].
struct Owned(AlignedBuf);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pooled_buffers_are_aligned_and_reused() {
        let pool = BufferPool::default();
        let mut a = pool.take();
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        a.extend_from_slice(&[7; 100]);
        let addr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert!(b.is_empty(), "a reused buffer starts empty");
        assert_eq!(b.as_ptr(), addr, "the buffer was reused");
        assert!(b.capacity() >= STAGE_BYTES);
    }
}
