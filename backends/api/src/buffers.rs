//! Recycled buffers for stripes, read batches and the blobs backends read.
//!
//! A stripe needs about 1.5 MiB (data + parity shards), a read batch a few
//! MiB, and a backend's read of one fragment a few hundred KiB. Fresh
//! allocations of that size are mmapped, so every 4 KiB page costs a fault
//! and a kernel zeroing; measured at about a fifth of the write path's time
//! (BENCHMARKS.md). Buffers are therefore recycled: one handed to backends
//! or to the client as `Bytes` comes back here when its last reference is
//! dropped. It lives beside the `Backend` trait so that the pipeline and the
//! backends below it share one pool.
//!
//! The pool keeps at most [`POOL_MAX_BYTES`], so it never grows with load:
//! a buffer returned to a full pool takes the place of those idle longest.
//! What stays idle past
//! [`POOL_IDLE`] is freed down to [`POOL_KEEP_BYTES`]: a burst's buffers are
//! kept while requests keep coming, not for good.
//!
//! A recycled buffer holds old bytes, possibly another object's plaintext:
//! every user overwrites or zeroes what it exposes (see `StripeBuffer`).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The most memory the pool keeps for reuse. With 16 MiB, three in four of
/// a 64 MiB GET's page faults were on fresh decode buffers (16 concurrent
/// GETs hold about 66 MiB of batches and fragment reads). 64 MiB and 32
/// MiB measured alike within the noise, and 32 MiB left the gateway's peak
/// RSS 40 MiB lower: what stays idle here is outside what admission
/// counts (BENCHMARKS.md, issue 24).
pub const POOL_MAX_BYTES: usize = 32 << 20;
/// What the pool keeps however long it stays idle.
pub const POOL_KEEP_BYTES: usize = 16 << 20;
/// Buffers idle this long are freed while the pool holds more than
/// [`POOL_KEEP_BYTES`].
pub const POOL_IDLE: Duration = Duration::from_secs(10);

/// Buffers smaller than this are not kept: the allocator serves them from
/// memory it holds, with no page fault to save, and thousands of them would
/// make the pool's list long to search.
pub const MIN_RECYCLED_BYTES: usize = 64 << 10;

/// How often `take` and `give` look for idle buffers to free; the health
/// checks call [`trim_idle`] too, so a quiet gateway gives them back.
const TRIM_EVERY: Duration = Duration::from_secs(1);

struct Pool {
    /// Idle buffers, with when each came back.
    free: Vec<(Vec<u8>, Instant)>,
    bytes: usize,
    last_trim: Option<Instant>,
}

impl Pool {
    const fn new() -> Self {
        Self {
            free: Vec::new(),
            bytes: 0,
            last_trim: None,
        }
    }

    /// The smallest idle buffer of at least `min_capacity` and at most
    /// twice that: a small read never pins a stripe's buffer.
    fn take(&mut self, min_capacity: usize) -> Option<Vec<u8>> {
        let most = min_capacity.saturating_mul(2);
        let pos = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, (v, _))| (min_capacity..=most).contains(&v.capacity()))
            .min_by_key(|(_, (v, _))| v.capacity())
            .map(|(pos, _)| pos)?;
        let (v, _) = self.free.swap_remove(pos);
        self.bytes -= v.capacity();
        Some(v)
    }

    /// Keeps `v` (returned at `now`), making room by freeing the buffers
    /// idle longest: what the workload uses now stays, whatever its size (a
    /// pool full of one size of buffer would otherwise turn every other
    /// size away). Returns what is to be freed, for after the lock.
    fn give(&mut self, v: Vec<u8>, now: Instant) -> Vec<Vec<u8>> {
        let cap = v.capacity();
        if cap == 0 || cap > POOL_MAX_BYTES {
            return vec![v];
        }
        let mut evicted = Vec::new();
        while self.bytes + cap > POOL_MAX_BYTES {
            let Some(oldest) = (0..self.free.len()).min_by_key(|&i| self.free[i].1) else {
                break;
            };
            let (old, _) = self.free.swap_remove(oldest);
            self.bytes -= old.capacity();
            evicted.push(old);
        }
        self.bytes += cap;
        self.free.push((v, now));
        evicted
    }

    /// Takes out the buffers idle past [`POOL_IDLE`] at `now` while more
    /// than [`POOL_KEEP_BYTES`] are held, for the caller to free after the
    /// lock.
    fn trim(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.last_trim = Some(now);
        let mut stale = Vec::new();
        let mut i = 0;
        while self.bytes > POOL_KEEP_BYTES && i < self.free.len() {
            if now.duration_since(self.free[i].1) > POOL_IDLE {
                let (v, _) = self.free.swap_remove(i);
                self.bytes -= v.capacity();
                stale.push(v);
            } else {
                i += 1;
            }
        }
        stale
    }

    /// [`Pool::trim`], at most once per [`TRIM_EVERY`].
    fn trim_now_and_then(&mut self, now: Instant) -> Vec<Vec<u8>> {
        match self.last_trim {
            Some(last) if now.duration_since(last) < TRIM_EVERY => Vec::new(),
            _ => self.trim(now),
        }
    }
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

fn lock() -> MutexGuard<'static, Pool> {
    // The pool is only a cache: after a panic elsewhere its content is
    // still a list of valid buffers.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A buffer with at least `min_capacity` bytes of capacity (old content
/// and length kept, so a caller that sizes it again writes no zeroes).
pub fn take(min_capacity: usize) -> Vec<u8> {
    if min_capacity < MIN_RECYCLED_BYTES {
        return Vec::with_capacity(min_capacity);
    }
    let (reused, stale) = {
        let mut pool = lock();
        let reused = pool.take(min_capacity);
        (reused, pool.trim_now_and_then(Instant::now()))
    };
    // Freed outside the lock.
    drop(stale);
    reused.unwrap_or_else(|| Vec::with_capacity(min_capacity))
}

/// Returns a buffer for reuse (or frees it when the pool is full).
pub fn give(v: Vec<u8>) {
    if v.capacity() < MIN_RECYCLED_BYTES {
        return;
    }
    let now = Instant::now();
    let freed = {
        let mut pool = lock();
        let evicted = pool.give(v, now);
        (evicted, pool.trim_now_and_then(now))
    };
    drop(freed);
}

/// Frees the buffers idle past [`POOL_IDLE`], down to
/// [`POOL_KEEP_BYTES`]; called periodically (the health checks), so that
/// memory goes back even when no request comes.
pub fn trim_idle() {
    let stale = lock().trim(Instant::now());
    drop(stale);
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Shares `v` as `Bytes`; it returns to the pool when the last clone drops.
pub fn into_bytes(v: Vec<u8>) -> Bytes {
    Bytes::from_owner(Recycled(v))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // One test on the process-wide pool (parallel tests would race on
    // it); the others use a pool of their own.
    #[test]
    fn buffers_come_back_when_the_last_bytes_drop_and_the_pool_is_bounded() {
        let v = vec![7u8; 3 << 20];
        let ptr = v.as_ptr();
        let b = into_bytes(v);
        let half = b.slice(..10);
        drop(b);
        assert_eq!(&half[..], &[7u8; 10]);
        assert!(
            !lock().free.iter().any(|(v, _)| v.as_ptr() == ptr),
            "returned while still shared"
        );
        drop(half);
        assert!(
            lock().free.iter().any(|(v, _)| v.as_ptr() == ptr),
            "buffer was not recycled"
        );

        for _ in 0..(POOL_MAX_BYTES / (4 << 20)) + 4 {
            give(vec![0u8; 4 << 20]);
        }
        let pool = lock();
        assert!(pool.bytes <= POOL_MAX_BYTES);
        assert_eq!(
            pool.bytes,
            pool.free.iter().map(|(v, _)| v.capacity()).sum::<usize>()
        );
    }

    #[test]
    fn buffers_idle_too_long_are_freed_down_to_what_is_always_kept() {
        let now = Instant::now();
        let old = now.checked_sub(POOL_IDLE * 2).unwrap();
        let mut pool = Pool::new();
        let chunk = 4 << 20;
        for i in 0..POOL_MAX_BYTES / chunk {
            // The first half came back long ago, the rest just now.
            let since = if i < POOL_MAX_BYTES / chunk / 2 {
                old
            } else {
                now
            };
            assert!(pool.give(Vec::with_capacity(chunk), since).is_empty());
        }
        let stale = pool.trim(now);
        assert_eq!(pool.bytes, POOL_MAX_BYTES / 2, "only the old half goes");
        assert_eq!(stale.len(), POOL_MAX_BYTES / chunk / 2);
        let later = now + POOL_IDLE * 2;
        assert!(
            pool.trim_now_and_then(later - POOL_IDLE * 2 + TRIM_EVERY / 2)
                .is_empty(),
            "no second look within a second"
        );
        pool.trim(later);
        assert_eq!(pool.bytes, POOL_KEEP_BYTES, "what is always kept stays");
        assert!(pool.trim(later + POOL_IDLE * 2).is_empty());
    }

    #[test]
    fn a_buffer_is_reused_only_when_it_fits_and_is_at_most_twice_the_size() {
        let now = Instant::now();
        let mut pool = Pool::new();
        for cap in [100 << 10, 300 << 10, 1 << 20] {
            assert!(pool.give(Vec::with_capacity(cap), now).is_empty());
        }
        let took = pool.take(256 << 10).unwrap();
        assert_eq!(took.capacity(), 300 << 10, "the smallest that fits");
        assert!(pool.take(40 << 10).is_none(), "none within twice 40 KiB");
        assert_eq!(pool.take(600 << 10).unwrap().capacity(), 1 << 20);
        assert_eq!(pool.bytes, 100 << 10);
    }

    #[test]
    fn a_full_pool_makes_room_by_freeing_what_was_idle_longest() {
        let start = Instant::now();
        let mut pool = Pool::new();
        let small = 256 << 10;
        let count = POOL_MAX_BYTES / small;
        for i in 0..count {
            let at = start + Duration::from_millis(i as u64);
            assert!(pool.give(Vec::with_capacity(small), at).is_empty());
        }
        assert_eq!(pool.bytes, POOL_MAX_BYTES, "full of one size");
        // A stripe's buffer still finds room: the oldest small ones go.
        let stripe = 3 << 19;
        let later = start + Duration::from_secs(1);
        let evicted = pool.give(Vec::with_capacity(stripe), later);
        assert_eq!(evicted.len(), stripe.div_ceil(small));
        assert!(pool.bytes <= POOL_MAX_BYTES);
        assert_eq!(pool.take(stripe).map(|v| v.capacity()), Some(stripe));
        // The ones left are the newest.
        let oldest_left = pool.free.iter().map(|(_, at)| *at).min().unwrap();
        assert_eq!(
            oldest_left,
            start + Duration::from_millis(stripe.div_ceil(small) as u64)
        );
        // Bigger than the whole pool: not kept, nothing evicted for it.
        let before = pool.bytes;
        let huge = pool.give(Vec::with_capacity(POOL_MAX_BYTES + 1), later);
        assert_eq!(huge.len(), 1);
        assert_eq!(pool.bytes, before);
    }
}
