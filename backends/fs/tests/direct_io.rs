//! Which path the fs backend's writes take on each filesystem (direct on
//! ext4, XFS and btrfs, and on tmpfs since Linux 6.6; buffered on ramfs,
//! which refuses `O_DIRECT`), and that the direct path really leaves no
//! copy in the page cache; which reads go direct (a large blob's first
//! read of a range) and which through the page cache (a range read again).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bytes::Bytes;
use shardgate_backend::{Backend, BackendId, BackendInfo, BlobName};
use shardgate_backend_fs::{FsBackend, FsOptions, WritePath};

const TMPFS: u64 = 0x0102_1994;
const EXT4: u64 = 0xEF53;
const XFS: u64 = 0x5846_5342;
const BTRFS: u64 = 0x9123_683E;

fn fs_type(path: &Path) -> u64 {
    rustix::fs::statfs(path).unwrap().f_type as u64
}

async fn open(dir: &Path, options: FsOptions) -> FsBackend {
    let info = BackendInfo::new(BackendId::new("d").unwrap());
    FsBackend::open_with(info, dir, options).await.unwrap()
}

#[tokio::test]
async fn each_filesystem_takes_its_write_path() {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kind = fs_type(disk.path());
    let b = open(disk.path(), FsOptions::default()).await;
    match kind {
        EXT4 | XFS | BTRFS => assert_eq!(b.write_path(), WritePath::Direct, "fs type {kind:#x}"),
        TMPFS => assert_eq!(b.write_path(), tmpfs_path()),
        other => println!("fs type {other:#x}: {:?}", b.write_path()),
    }
    drop(b);
    let off = open(
        disk.path(),
        FsOptions {
            direct_writes: false,
            ..FsOptions::default()
        },
    )
    .await;
    assert_eq!(
        off.write_path(),
        WritePath::Buffered,
        "turned off by config"
    );

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    assert_eq!(fs_type(shm.path()), TMPFS, "/dev/shm is tmpfs here");
    let b = open(shm.path(), FsOptions::default()).await;
    assert_eq!(b.write_path(), tmpfs_path(), "tmpfs");
}

/// tmpfs takes `O_DIRECT` since Linux 6.6.
fn tmpfs_path() -> WritePath {
    if kernel_at_least(6, 6) {
        WritePath::Direct
    } else {
        WritePath::Buffered
    }
}

/// Run in a private mount namespace over ramfs by the test below.
#[tokio::test]
#[ignore = "helper, run over ramfs by ramfs_refuses_o_direct_so_writes_are_buffered"]
async fn ramfs_helper() {
    let Some(dir) = std::env::var_os(shardgate_backend_conformance::RAMFS_ENV) else {
        return;
    };
    assert_eq!(fs_type(Path::new(&dir)), RAMFS);
    let b = open(Path::new(&dir), FsOptions::default()).await;
    assert_eq!(b.write_path(), WritePath::Buffered);
    write_blob(&b).await;
    println!("ramfs: buffered");
}

#[test]
fn ramfs_refuses_o_direct_so_writes_are_buffered() {
    let out = shardgate_backend_conformance::run_over_ramfs(&[
        "--ignored",
        "--exact",
        "ramfs_helper",
        "--nocapture",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ramfs: buffered"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RAMFS: u64 = 0x8584_58F6;

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let have = (
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0),
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0),
    );
    have >= (major, minor)
}

/// Whether the first block of `path` is in the page cache: a read that
/// may not wait for the disk (`RWF_NOWAIT`) succeeds only then.
fn first_block_cached(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    let mut buf = [0u8; 4096];
    rustix::io::preadv2(
        &file,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        0,
        rustix::io::ReadWriteFlags::NOWAIT,
    )
    .is_ok_and(|n| n > 0)
}

/// Writes `data` as a new blob in 100,000-byte pieces (unaligned pieces
/// and tail).
async fn put(b: &FsBackend, data: &[u8]) -> BlobName {
    let name = BlobName::random();
    let mut w = b.create(&name).await.unwrap();
    for piece in data.chunks(100_000) {
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    w.commit().await.unwrap();
    name
}

/// Writes a blob of 1 MiB + 123 bytes in 100,000-byte pieces (unaligned
/// pieces and tail) and returns its path after checking it reads back.
async fn write_blob(b: &FsBackend) -> std::path::PathBuf {
    let data: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let name = put(b, &data).await;
    let path = b.blob_path(&name);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    path
}

/// A temporary directory on the target's disk, if its filesystem is one
/// known to take `O_DIRECT` (else there is nothing to show).
fn direct_disk() -> Option<tempfile::TempDir> {
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let known = matches!(fs_type(disk.path()), EXT4 | XFS | BTRFS);
    if !known {
        println!("not a filesystem known to take O_DIRECT: nothing to show");
    }
    known.then_some(disk)
}

#[tokio::test]
async fn a_direct_write_leaves_no_copy_in_the_page_cache() {
    let Some(disk) = direct_disk() else { return };
    let direct = open(&disk.path().join("direct"), FsOptions::default()).await;
    assert_eq!(direct.write_path(), WritePath::Direct);
    // Checked before the read-back in write_blob caches it: look first.
    let name = BlobName::random();
    let mut w = direct.create(&name).await.unwrap();
    w.write(Bytes::from(vec![5u8; (1 << 20) + 123]))
        .await
        .unwrap();
    w.commit().await.unwrap();
    assert!(
        !first_block_cached(&direct.blob_path(&name)),
        "a direct write left its bytes in the page cache"
    );
    write_blob(&direct).await;

    let buffered = open(
        &disk.path().join("buffered"),
        FsOptions {
            direct_writes: false,
            ..FsOptions::default()
        },
    )
    .await;
    let name = BlobName::random();
    let mut w = buffered.create(&name).await.unwrap();
    w.write(Bytes::from(vec![5u8; (1 << 20) + 123]))
        .await
        .unwrap();
    w.commit().await.unwrap();
    assert!(
        first_block_cached(&buffered.blob_path(&name)),
        "a buffered write is in the page cache (the contrast that makes the check above mean something)"
    );
}

/// Bytes of `path` in the page cache, as `fincore` (util-linux) counts
/// them: no read that could start the kernel's readahead.
fn cached_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--raw", "--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux)");
    assert!(
        out.status.success(),
        "fincore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_large_blob_is_read_direct_first_and_through_the_page_cache_when_read_again() {
    let Some(disk) = direct_disk() else { return };
    let b = open(
        &disk.path().join("d"),
        FsOptions {
            direct_read_min_bytes: 1 << 20,
            ..FsOptions::default()
        },
    )
    .await;
    let data: Vec<u8> = (0..(4 << 20) + 123).map(|i| (i % 251) as u8).collect();
    let name = put(&b, &data).await;
    let path = b.blob_path(&name);
    // Written direct but for its unaligned tail, which went buffered.
    let tail = cached_bytes(&path);
    assert!(tail <= 8192, "{tail} bytes cached after a direct write");

    // First reads, aligned or not, to the end of the file (whose last
    // block is partial): the right bytes, and nothing more cached. Each
    // may take a recycled buffer full of other bytes: none of them shows.
    let end = data.len() as u64;
    for range in [0..1 << 20, 1000..(2 << 20) + 7, end - 140_000..end] {
        for stale in [3 << 19, 3 << 20, 200_000] {
            shardgate_backend::buffers::give(vec![0xAA; stale]);
        }
        let got = b.get(&name, range.clone()).await.unwrap();
        assert_eq!(
            &got[..],
            &data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert_eq!(
        cached_bytes(&path),
        tail,
        "a first read went through the page cache"
    );

    // The same range again: through the page cache, which keeps it.
    let again = b.get(&name, 0..1 << 20).await.unwrap();
    assert_eq!(&again[..], &data[..1 << 20]);
    let cached = cached_bytes(&path);
    assert!(
        cached >= 1 << 20,
        "a range read again was not cached ({cached} bytes)"
    );

    // A range under 128 KiB of a large blob, and a blob under the
    // threshold (a small object's fragment), go through the page cache.
    let other = put(&b, &data).await;
    let other_path = b.blob_path(&other);
    let before = cached_bytes(&other_path);
    let got = b.get(&other, 3 << 20..(3 << 20) + 100_000).await.unwrap();
    assert_eq!(&got[..], &data[3 << 20..(3 << 20) + 100_000]);
    let after = cached_bytes(&other_path);
    assert!(
        after >= before + 100_000,
        "a small range of a large blob was read direct ({before} bytes cached, then {after})"
    );
    let small = put(&b, &data[..300_000]).await;
    let small_path = b.blob_path(&small);
    let file = std::fs::File::open(&small_path).unwrap();
    rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert_eq!(cached_bytes(&small_path), 0, "dropped from the page cache");
    let got = b.get(&small, 0..300_000).await.unwrap();
    assert_eq!(&got[..], &data[..300_000]);
    assert!(
        cached_bytes(&small_path) >= 300_000,
        "a blob under the threshold was read direct"
    );

    // Off (the default): a first read caches what it reads.
    let off = open(&disk.path().join("off"), FsOptions::default()).await;
    let name = put(&off, &data).await;
    let got = off.get(&name, 0..1 << 20).await.unwrap();
    assert_eq!(&got[..], &data[..1 << 20]);
    assert!(cached_bytes(&off.blob_path(&name)) >= 1 << 20);
}
