//! What the fs backend promises about crashes and ownership: unfinished
//! blobs left by a crash are removed at the next open and never listed, a
//! committed blob survives a reopen, and a second process cannot open a
//! directory that another one owns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use futures::TryStreamExt;
use shardgate_backend::{Backend, BackendError, BackendId, BackendInfo, BlobName};
use shardgate_backend_fs::FsBackend;

fn info() -> BackendInfo {
    BackendInfo::new(BackendId::new("disk").unwrap())
}

/// Run as a child process by the test below: commits one blob, starts
/// another, then dies without unwinding (as `kill -9` would leave it).
#[tokio::test]
#[ignore = "helper, run as a child process by a_crash_mid_write_leaves_nothing_visible"]
async fn crash_helper() {
    let Some(dir) = std::env::var_os("SHARDGATE_TEST_CRASH_DIR") else {
        return;
    };
    let b = FsBackend::open(info(), &dir).await.unwrap();
    b.put(
        &BlobName::new("kept").unwrap(),
        Bytes::from_static(b"durable"),
    )
    .await
    .unwrap();
    let mut w = b.create(&BlobName::random()).await.unwrap();
    w.write(Bytes::from(vec![1u8; 100_000])).await.unwrap();
    std::process::abort();
}

#[tokio::test]
async fn a_crash_mid_write_leaves_nothing_visible() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_helper", "--nocapture"])
        .env("SHARDGATE_TEST_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the helper was meant to abort");
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        1,
        "the crash should leave the unfinished blob's temp file"
    );

    // The dead process's lock is gone; opening cleans up.
    let b = FsBackend::open(info(), dir.path()).await.unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let kept = BlobName::new("kept").unwrap();
    let listed: Vec<_> = b.list().map_ok(|m| m.name).try_collect().await.unwrap();
    assert_eq!(listed, vec![kept.clone()]);
    assert_eq!(&b.get(&kept, 0..7).await.unwrap()[..], b"durable");
    assert_eq!(b.health().await.unwrap().used_bytes, Some(7));
}

#[tokio::test]
async fn one_directory_has_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let first = FsBackend::open(info(), dir.path()).await.unwrap();
    let second = FsBackend::open(info(), dir.path()).await;
    assert!(
        matches!(second, Err(BackendError::Unavailable { .. })),
        "second owner: {second:?}"
    );
    drop(first);
    assert!(
        FsBackend::open(info(), dir.path()).await.is_ok(),
        "the lock is released on drop"
    );
}

#[tokio::test]
async fn foreign_files_are_not_listed_as_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let b = FsBackend::open(info(), dir.path()).await.unwrap();
    let name = BlobName::random();
    b.put(&name, Bytes::from_static(b"x")).await.unwrap();
    let fan = dir.path().join("blobs").join(&name.as_str()[..2]);
    std::fs::write(fan.join("not a blob name!"), b"junk").unwrap();
    let listed: Vec<_> = b.list().map_ok(|m| m.name).try_collect().await.unwrap();
    assert_eq!(listed, vec![name]);
}
