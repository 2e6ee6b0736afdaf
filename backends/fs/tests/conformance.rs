//! The fs backend passes the shared conformance suite, each check in a
//! fresh temporary directory: on the target directory's filesystem (direct
//! writes where it takes them), with every read direct too, on tmpfs
//! (which takes `O_DIRECT` since Linux 6.6), shared by several processes,
//! and on the buffered path:
//! turned off by configuration, and on ramfs, which refuses `O_DIRECT`
//! (mounted in a private mount namespace, see
//! `conformance_on_ramfs_takes_the_buffered_path`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use shardgate_backend::{BackendId, BackendInfo};
use shardgate_backend_fs::{FsBackend, FsOptions};

async fn open_in(parent: &Path, options: FsOptions) -> std::sync::Arc<FsBackend> {
    let dir = tempfile::tempdir_in(parent).expect("tempdir").keep();
    let info = BackendInfo::new(BackendId::new("fs").expect("valid id"));
    std::sync::Arc::new(
        FsBackend::open_with(info, dir, options)
            .await
            .expect("open"),
    )
}

mod defaults {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        open_in(Path::new(env!("CARGO_TARGET_TMPDIR")), FsOptions::default()).await
    });
}

mod direct_reads {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        let options = FsOptions {
            direct_read_min_bytes: 1,
            ..FsOptions::default()
        };
        open_in(Path::new(env!("CARGO_TARGET_TMPDIR")), options).await
    });
}

/// A directory several processes share (`FsOptions::shared`).
mod shared {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        let options = FsOptions {
            shared: true,
            ..FsOptions::default()
        };
        open_in(Path::new(env!("CARGO_TARGET_TMPDIR")), options).await
    });
}

mod tmpfs {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        open_in(&tmpfs_parent(), FsOptions::default()).await
    });
}

/// The buffered path. With `SHARDGATE_TEST_RAMFS` (a ramfs mount, set by
/// `conformance_on_ramfs_takes_the_buffered_path`) the filesystem refuses
/// `O_DIRECT`; without it, the configuration turns direct writes off.
mod buffered {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        let b = match std::env::var_os(shardgate_backend_conformance::RAMFS_ENV) {
            Some(ramfs) => open_in(Path::new(&ramfs), FsOptions::default()).await,
            None => {
                let options = FsOptions {
                    direct_writes: false,
                    ..FsOptions::default()
                };
                open_in(Path::new(env!("CARGO_TARGET_TMPDIR")), options).await
            }
        };
        assert_eq!(b.write_path(), shardgate_backend_fs::WritePath::Buffered);
        b
    });
}

/// Runs this binary's `buffered::` checks again in a private mount
/// namespace (`unshare`, as any user) over a fresh ramfs.
#[test]
fn conformance_on_ramfs_takes_the_buffered_path() {
    let out = shardgate_backend_conformance::run_over_ramfs(&["buffered::", "--test-threads", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 12 passed"),
        "the checks on ramfs: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This process's directory on tmpfs, after removing those of test
/// processes that are gone (kept directories would hold memory).
fn tmpfs_parent() -> std::path::PathBuf {
    let base = Path::new("/dev/shm/shardgate-fs-conformance");
    std::fs::create_dir_all(base).expect("/dev/shm is writable");
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let mine = base.join(std::process::id().to_string());
    std::fs::create_dir_all(&mine).expect("/dev/shm is writable");
    mine
}
