//! The conformance suite: one set of checks that every backend passes (fs,
//! memory, and the cloud backend against moto's S3 server, Azurite and
//! object_store's in-memory store; its read half against fake-gcs-server),
//! so the
//! pipeline can rely on the contract in `shardgate-backend` whatever stores
//! the bytes.
//!
//! Each check takes a fresh, empty backend and panics with a message on a
//! violation. [`conformance_tests!`] turns them into one named test each:
//!
//! ```ignore
//! shardgate_backend_conformance::conformance_tests!({ make_backend().await });
//! ```
//!
//! The block is evaluated inside an `async fn` returning
//! `Arc<dyn Backend>`; the test crate needs `tokio` (macros, rt).
//!
//! For a store that no available server lets us write through (GCS: see
//! the cloud backend's README), [`reads`] is the read half of the same
//! checks, on blobs stored around the backend by a [`Seed`]:
//!
//! ```ignore
//! shardgate_backend_conformance::conformance_tests!(reads: { backend_and_seed().await });
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test suite: a panic is the report

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use shardgate_backend::{Backend, BackendError, BlobName};

pub use shardgate_backend;

/// Generates one `#[tokio::test]` per check, each on a fresh backend.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            async fn make() -> std::sync::Arc<dyn $crate::shardgate_backend::Backend> {
                $make
            }

            $crate::conformance_tests!(@each
                round_trip, empty_blob, ranged_gets, invisible_until_commit,
                abort_and_drop_leave_nothing, never_overwrites, delete, list_and_stat,
                missing_blob, health, concurrent_writers, large_streamed_blob);
        }
    };
    (reads: $make:expr) => {
        mod read_conformance {
            #[allow(unused_imports)]
            use super::*;

            /// A fresh backend and the seed that stores into it.
            async fn make() -> (
                std::sync::Arc<dyn $crate::shardgate_backend::Backend>,
                $crate::Seed,
            ) {
                $make
            }

            $crate::conformance_tests!(@reads
                round_trip, empty_blob, ranged_gets, list_and_stat, large_blob, delete,
                missing_blob, health);
        }
    };
    (@reads $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (b, seed) = make().await;
                $crate::reads::$check(b, seed).await;
            }
        )*
    };
    (@each $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::$check(make().await).await;
            }
        )*
    };
}

/// Where [`run_over_ramfs`] mounted the ramfs, for the helper it runs.
pub const RAMFS_ENV: &str = "SHARDGATE_TEST_RAMFS";

/// Runs this test binary again with `args` (a helper test and its
/// filters) in a private mount namespace over a fresh ramfs, whose path
/// the helper finds in [`RAMFS_ENV`]. ramfs refuses `O_DIRECT`, so an fs
/// backend there takes its buffered path. `unshare --map-root-user` needs
/// no privilege, and the mount goes away with the namespace.
pub fn run_over_ramfs(args: &[&str]) -> std::process::Output {
    let mount = tempfile::tempdir().expect("tempdir");
    std::process::Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t ramfs ramfs "$0" && exec "$@""#)
        .arg(mount.path())
        .arg(std::env::current_exe().expect("own path"))
        .args(args)
        .env(RAMFS_ENV, mount.path())
        .output()
        .expect("unshare (util-linux) runs")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(b: &dyn Backend, name: &BlobName, data: &[u8]) {
    b.put(name, Bytes::copy_from_slice(data))
        .await
        .expect("put");
}

/// Bytes written in several pieces come back whole.
pub async fn round_trip(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    let data = pattern(300_001, 1);
    let mut w = b.create(&name).await.unwrap();
    for piece in data.chunks(65_537) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let meta = w.commit().await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.name, name);
    check_whole(&*b, &name, &data).await;
}

async fn check_whole(b: &dyn Backend, name: &BlobName, data: &[u8]) {
    assert_eq!(b.stat(name).await.unwrap().size, data.len() as u64);
    let back = b.get(name, 0..data.len() as u64).await.unwrap();
    assert_eq!(&back[..], data);
}

/// A zero-byte blob is a blob.
pub async fn empty_blob(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    put(&*b, &name, &[]).await;
    check_empty(&*b, &name).await;
}

async fn check_empty(b: &dyn Backend, name: &BlobName) {
    assert_eq!(b.stat(name).await.unwrap().size, 0);
    assert!(b.get(name, 0..0).await.unwrap().is_empty());
    assert!(matches!(
        b.get(name, 0..1).await,
        Err(BackendError::InvalidRange { .. })
    ));
}

/// Ranges return exactly their bytes; ranges outside the blob are refused.
pub async fn ranged_gets(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    let data = pattern(10_000, 2);
    put(&*b, &name, &data).await;
    check_ranges(&*b, &name, &data).await;
}

/// Checks ranges of a blob holding `data` (10 000 bytes).
async fn check_ranges(b: &dyn Backend, name: &BlobName, data: &[u8]) {
    for (s, e) in [
        (0, 1),
        (0, 10_000),
        (9_999, 10_000),
        (4_096, 8_193),
        (10_000, 10_000),
        (17, 17),
    ] {
        let got = b.get(name, s..e).await.unwrap();
        assert_eq!(&got[..], &data[s as usize..e as usize], "range {s}..{e}");
    }
    for (s, e) in [(0, 10_001), (9_999, 10_001), (10_001, 10_002)] {
        let r = b.get(name, s..e).await;
        assert!(
            matches!(r, Err(BackendError::InvalidRange { .. })),
            "range {s}..{e}: {r:?}"
        );
    }
}

/// Nothing is visible before commit.
pub async fn invisible_until_commit(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    let mut w = b.create(&name).await.unwrap();
    w.write(Bytes::from_static(b"pending")).await.unwrap();
    assert!(b.stat(&name).await.unwrap_err().is_not_found());
    assert!(b.get(&name, 0..1).await.unwrap_err().is_not_found());
    assert_eq!(b.list().try_collect::<Vec<_>>().await.unwrap(), vec![]);
    w.commit().await.unwrap();
    assert_eq!(b.stat(&name).await.unwrap().size, 7);
}

/// Abort, or dropping an uncommitted writer, leaves no blob.
pub async fn abort_and_drop_leave_nothing(b: Arc<dyn Backend>) {
    let aborted = BlobName::random();
    let mut w = b.create(&aborted).await.unwrap();
    w.write(Bytes::from(pattern(70_000, 3))).await.unwrap();
    w.abort().await.unwrap();
    let dropped = BlobName::random();
    let mut w = b.create(&dropped).await.unwrap();
    w.write(Bytes::from(pattern(70_000, 4))).await.unwrap();
    drop(w);
    for name in [&aborted, &dropped] {
        assert!(b.stat(name).await.unwrap_err().is_not_found());
    }
    assert_eq!(b.list().try_collect::<Vec<_>>().await.unwrap(), vec![]);
    // The names stay usable.
    put(&*b, &aborted, b"again").await;
    assert_eq!(&b.get(&aborted, 0..5).await.unwrap()[..], b"again");
}

/// Committing an existing name fails and keeps the first bytes.
pub async fn never_overwrites(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    put(&*b, &name, b"first").await;
    let r = b.put(&name, Bytes::from_static(b"second!")).await;
    assert!(
        matches!(r, Err(BackendError::AlreadyExists { .. })),
        "{r:?}"
    );
    assert_eq!(&b.get(&name, 0..5).await.unwrap()[..], b"first");
    assert_eq!(b.stat(&name).await.unwrap().size, 5);
}

/// Delete removes; deleting again is NotFound.
pub async fn delete(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    put(&*b, &name, b"bye").await;
    check_delete(&*b, &name).await;
}

async fn check_delete(b: &dyn Backend, name: &BlobName) {
    b.delete(name).await.unwrap();
    assert!(b.stat(name).await.unwrap_err().is_not_found());
    assert!(b.get(name, 0..1).await.unwrap_err().is_not_found());
    assert!(b.delete(name).await.unwrap_err().is_not_found());
}

/// list shows every committed blob with its size.
pub async fn list_and_stat(b: Arc<dyn Backend>) {
    let mut want = Vec::new();
    for i in 0..20u8 {
        let name = BlobName::random();
        put(&*b, &name, &pattern(i as usize * 10, i)).await;
        want.push((name, i as u64 * 10));
    }
    check_listing(&*b, want).await;
}

async fn check_listing(b: &dyn Backend, mut want: Vec<(BlobName, u64)>) {
    let mut got: Vec<_> = b
        .list()
        .map_ok(|m| (m.name, m.size))
        .try_collect()
        .await
        .unwrap();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for (name, size) in &want {
        assert_eq!(b.stat(name).await.unwrap().size, *size);
    }
}

/// Reads of a name never written are NotFound.
pub async fn missing_blob(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    assert!(b.get(&name, 0..0).await.unwrap_err().is_not_found());
    assert!(b.stat(&name).await.unwrap_err().is_not_found());
}

/// Health reports a writable backend with free space and counts what it holds.
pub async fn health(b: Arc<dyn Backend>) {
    let h = health_probe(&*b).await;
    put(&*b, &BlobName::random(), &pattern(4096, 5)).await;
    let after = b.health().await.unwrap();
    if let (Some(before), Some(now)) = (h.used_bytes, after.used_bytes) {
        assert!(now >= before + 4096, "used {before} -> {now}");
    }
}

/// Writers of different names do not interfere.
pub async fn concurrent_writers(b: Arc<dyn Backend>) {
    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let name = BlobName::random();
                let data = pattern(50_000 + i as usize, i);
                let mut w = b.create(&name).await.unwrap();
                for piece in data.chunks(4096) {
                    w.write(Bytes::copy_from_slice(piece)).await.unwrap();
                }
                w.commit().await.unwrap();
                (name, data)
            })
        })
        .collect();
    for t in tasks {
        let (name, data) = t.await.unwrap();
        assert_eq!(
            &b.get(&name, 0..data.len() as u64).await.unwrap()[..],
            &data[..]
        );
    }
}

/// A 16 MiB blob written in 256 KiB pieces reads back at any offset.
pub async fn large_streamed_blob(b: Arc<dyn Backend>) {
    let name = BlobName::random();
    let piece = pattern(256 * 1024, 9);
    let mut w = b.create(&name).await.unwrap();
    for _ in 0..64 {
        w.write(Bytes::copy_from_slice(&piece)).await.unwrap();
    }
    assert_eq!(w.commit().await.unwrap().size, 16 << 20);
    check_large(&*b, &name, &piece).await;
}

/// Checks a 16 MiB blob made of `piece` repeated.
async fn check_large(b: &dyn Backend, name: &BlobName, piece: &[u8]) {
    assert_eq!(b.stat(name).await.unwrap().size, 16 << 20);
    for off in [0, 5 << 20, (16u64 << 20) - 300_000, (16u64 << 20) - 1000] {
        let got = b.get(name, off..off + 1000).await.unwrap();
        let at = (off % piece.len() as u64) as usize;
        assert_eq!(&got[..], &piece[at..at + 1000], "offset {off}");
    }
}

async fn health_probe(b: &dyn Backend) -> shardgate_backend::Health {
    let h = b.health().await.unwrap();
    assert!(h.writable);
    assert!(h.free_bytes > 0);
    h
}

/// Stores a blob through the server's own API, around the backend: for a
/// store whose write path no emulator accepts, so that its read path is
/// still checked against a real server.
pub type Seed = Arc<dyn Fn(&BlobName, &[u8]) + Send + Sync>;

/// The read half of the suite, on blobs stored by a [`Seed`]: the same
/// checks as the full suite's, minus writing through the backend.
pub mod reads {
    use super::*;

    /// A seeded blob reads back whole, with its size.
    pub async fn round_trip(b: Arc<dyn Backend>, seed: Seed) {
        let name = BlobName::random();
        let data = pattern(300_001, 1);
        seed(&name, &data);
        check_whole(&*b, &name, &data).await;
    }

    /// A seeded zero-byte blob is a blob.
    pub async fn empty_blob(b: Arc<dyn Backend>, seed: Seed) {
        let name = BlobName::random();
        seed(&name, &[]);
        check_empty(&*b, &name).await;
    }

    /// Ranges return exactly their bytes; ranges outside are refused.
    pub async fn ranged_gets(b: Arc<dyn Backend>, seed: Seed) {
        let name = BlobName::random();
        let data = pattern(10_000, 2);
        seed(&name, &data);
        check_ranges(&*b, &name, &data).await;
    }

    /// list shows every seeded blob with its size.
    pub async fn list_and_stat(b: Arc<dyn Backend>, seed: Seed) {
        let mut want = Vec::new();
        for i in 0..20u8 {
            let name = BlobName::random();
            seed(&name, &pattern(i as usize * 10, i));
            want.push((name, i as u64 * 10));
        }
        check_listing(&*b, want).await;
    }

    /// A 16 MiB seeded blob reads back at any offset.
    pub async fn large_blob(b: Arc<dyn Backend>, seed: Seed) {
        let name = BlobName::random();
        let piece = pattern(256 * 1024, 9);
        seed(&name, &piece.repeat(64));
        check_large(&*b, &name, &piece).await;
    }

    /// Delete removes a seeded blob; deleting again is NotFound.
    pub async fn delete(b: Arc<dyn Backend>, seed: Seed) {
        let name = BlobName::random();
        seed(&name, b"bye");
        check_delete(&*b, &name).await;
    }

    /// Reads of a name never written are NotFound.
    pub async fn missing_blob(b: Arc<dyn Backend>, _seed: Seed) {
        super::missing_blob(b).await;
    }

    /// The health probe answers.
    pub async fn health(b: Arc<dyn Backend>, _seed: Seed) {
        health_probe(&*b).await;
    }
}
