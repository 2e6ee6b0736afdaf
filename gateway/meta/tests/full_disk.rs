//! The metadata store on a real tiny tmpfs that fills up: writes fail with
//! the store's error while it is full, nothing committed is lost, and the
//! store works again once space comes back, without a restart.
//!
//! Mounting needs root (CI runs as root). Elsewhere set
//! `SHARDGATE_TEST_SKIP_MOUNT=1` to skip this test explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use shardgate_meta::{MetaError, MetaStore};

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        if std::env::var_os("SHARDGATE_TEST_SKIP_MOUNT").is_some() {
            eprintln!("SHARDGATE_TEST_SKIP_MOUNT is set: skipping a mount test");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(
            mounted,
            "mount failed: run as root or set SHARDGATE_TEST_SKIP_MOUNT=1"
        );
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Writes zeroes into `path` until the filesystem is full.
fn fill(path: &std::path::Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected: {e}");
            break;
        }
    }
}

#[test]
fn a_full_disk_fails_writes_loses_nothing_and_the_store_recovers_when_space_returns() {
    let Some(mnt) = Tmpfs::mount("4m") else {
        return;
    };
    let store = MetaStore::open(&mnt.0.path().join("meta.redb")).unwrap();
    store
        .create_bucket("kept-before-the-disk-filled", 1)
        .unwrap();
    let filler = mnt.0.path().join("filler");
    fill(&filler);

    // Buckets until a commit finds no room (bounded: the store's file must
    // grow long before this many).
    let mut committed = Vec::new();
    let mut failed = Vec::new();
    for i in 0..200_000u32 {
        let name = format!("bucket-{i:07}-{}", "x".repeat(40));
        match store.create_bucket(&name, 2) {
            Ok(()) => committed.push(name),
            Err(e) => {
                assert!(matches!(e, MetaError::Store(_)), "{e}");
                assert!(e.to_string().contains("No space left"), "{e}");
                failed.push(name);
                break;
            }
        }
    }
    assert_eq!(failed.len(), 1, "the full disk never failed a commit");

    // Still full: writes fail at once, saying why; reads go on.
    for i in 0..5 {
        let name = format!("while-still-full-{i}");
        let e = store.create_bucket(&name, 3).unwrap_err();
        assert!(
            e.to_string().contains("opened again"),
            "the store's own cause: {e}"
        );
        failed.push(name);
        assert!(
            store
                .bucket("kept-before-the-disk-filled")
                .unwrap()
                .is_some()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Space comes back: within a few retries the same store works again.
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if store.create_bucket("after-the-space-came-back", 4).is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(recovered, "the store did not recover once space came back");

    // Nothing that was committed is lost, and nothing that failed appears.
    let names: Vec<String> = store
        .list_buckets()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(names.contains(&"kept-before-the-disk-filled".to_string()));
    assert!(names.contains(&"after-the-space-came-back".to_string()));
    for name in &failed {
        assert!(!names.contains(name), "failed bucket {name} appeared");
    }

    // And the file the recovered store wrote opens as it is.
    drop(store);
    let reopened = MetaStore::open(&mnt.0.path().join("meta.redb")).unwrap();
    assert!(
        reopened
            .bucket("after-the-space-came-back")
            .unwrap()
            .is_some()
    );
    assert_eq!(reopened.list_buckets().unwrap().len(), names.len());
    for name in &committed {
        assert!(names.contains(name), "committed bucket {name} lost");
    }
}
