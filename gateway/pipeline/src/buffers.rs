//! Recycled buffers for stripes and read batches.
//!
//! A stripe needs about 1.5 MiB (data + parity shards) and a read batch a
//! few MiB. Fresh allocations of that size are mmapped, so every 4 KiB page
//! costs a fault and a kernel zeroing; measured at about a fifth of the
//! write path's time (BENCHMARKS.md). Buffers are therefore recycled: one
//! handed to backends or to the client as `Bytes` comes back here when its
//! last reference is dropped. The pool keeps at most [`POOL_MAX_BYTES`];
//! beyond that, returned buffers are freed, so it never grows with load.
//!
//! A recycled buffer holds old bytes, possibly another object's plaintext:
//! every user overwrites or zeroes what it exposes (see `StripeBuffer`).

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

/// The most memory the pool keeps for reuse.
pub const POOL_MAX_BYTES: usize = 16 << 20;

struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn lock() -> MutexGuard<'static, Pool> {
    // The pool is only a cache: after a panic elsewhere its content is
    // still a list of valid buffers.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A buffer with at least `min_capacity` bytes of capacity (old content
/// and length kept, so a caller that sizes it again writes no zeroes).
pub fn take(min_capacity: usize) -> Vec<u8> {
    let mut pool = lock();
    if let Some(pos) = pool.free.iter().position(|v| v.capacity() >= min_capacity) {
        let v = pool.free.swap_remove(pos);
        pool.bytes -= v.capacity();
        return v;
    }
    drop(pool);
    Vec::with_capacity(min_capacity)
}

/// Returns a buffer for reuse (or frees it when the pool is full).
pub fn give(v: Vec<u8>) {
    let cap = v.capacity();
    if cap == 0 {
        return;
    }
    let mut pool = lock();
    if pool.bytes + cap <= POOL_MAX_BYTES {
        pool.bytes += cap;
        pool.free.push(v);
    }
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
    use super::*;

    // One test: the pool is process-wide, parallel tests would race on it.
    #[test]
    fn buffers_come_back_when_the_last_bytes_drop_and_the_pool_is_bounded() {
        let v = vec![7u8; 3 << 20];
        let ptr = v.as_ptr();
        let b = into_bytes(v);
        let half = b.slice(..10);
        drop(b);
        assert_eq!(&half[..], &[7u8; 10]);
        assert!(
            !lock().free.iter().any(|v| v.as_ptr() == ptr),
            "returned while still shared"
        );
        drop(half);
        assert!(
            lock().free.iter().any(|v| v.as_ptr() == ptr),
            "buffer was not recycled"
        );

        for _ in 0..(POOL_MAX_BYTES / (4 << 20)) + 4 {
            give(vec![0u8; 4 << 20]);
        }
        let pool = lock();
        assert!(pool.bytes <= POOL_MAX_BYTES);
        assert_eq!(
            pool.bytes,
            pool.free.iter().map(Vec::capacity).sum::<usize>()
        );
    }
}
