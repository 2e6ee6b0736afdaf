//! A directory several gateways share (`FsOptions::shared`): each opens it
//! shared and writes its temp files apart; one that would own it alone is
//! refused while they run (and the other way round); an opener removes
//! the temp files of a sharer that is gone, never a live one's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use shardgate_backend::{Backend, BackendId, BackendInfo, BlobName};
use shardgate_backend_fs::{FsBackend, FsOptions};

async fn open(dir: &Path, shared: bool) -> shardgate_backend::Result<FsBackend> {
    let info = BackendInfo::new(BackendId::new("fs").unwrap());
    let options = FsOptions {
        shared,
        ..FsOptions::default()
    };
    FsBackend::open_with(info, dir, options).await
}

fn temp_folders(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect()
}

#[tokio::test]
async fn sharers_write_and_read_each_others_blobs_and_an_owner_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), true).await.unwrap();
    let b = open(dir.path(), true).await.unwrap();
    assert_eq!(temp_folders(dir.path()).len(), 2);
    let name = BlobName::random();
    a.put(&name, Bytes::from_static(b"written by a"))
        .await
        .unwrap();
    assert_eq!(&b.get(&name, 0..12).await.unwrap()[..], b"written by a");
    // One that would own it alone is refused while sharers run.
    let err = open(dir.path(), false).await.err().unwrap().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop((a, b));
    // And a sharer while an owner runs.
    let owner = open(dir.path(), false).await.unwrap();
    let err = open(dir.path(), true).await.err().unwrap().to_string();
    assert!(err.contains("does not share it"), "{err}");
    // The owner's open removed the sharers' folders (they were gone).
    assert!(temp_folders(dir.path()).is_empty());
    drop(owner);
}

#[tokio::test]
async fn an_opener_removes_a_gone_sharers_temp_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let live = open(dir.path(), true).await.unwrap();
    // A sharer that died (no lock held) a while ago, with a temp file.
    let gone = dir.path().join("tmp").join("00000000deadbeef");
    std::fs::create_dir(&gone).unwrap();
    std::fs::write(gone.join("LOCK"), b"").unwrap();
    std::fs::write(gone.join("blob.0"), b"half").unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&gone)
        .unwrap()
        .set_modified(old)
        .unwrap();
    // The live sharer's folder is old too: its lock keeps it.
    let mine = temp_folders(dir.path())
        .into_iter()
        .find(|p| *p != gone)
        .unwrap();
    std::fs::File::open(&mine)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let next = open(dir.path(), true).await.unwrap();
    let left = temp_folders(dir.path());
    assert!(!left.contains(&gone), "{left:?}");
    assert!(left.contains(&mine), "{left:?}");
    assert_eq!(left.len(), 2, "{left:?}");
    // The live one still writes.
    let name = BlobName::random();
    live.put(&name, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(&next.get(&name, 0..10).await.unwrap()[..], b"still here");
}
