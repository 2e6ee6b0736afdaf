//! The fs backend passes the shared conformance suite, each check in a
//! fresh temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shardgate_backend::{BackendId, BackendInfo};
use shardgate_backend_fs::FsBackend;

shardgate_backend_conformance::conformance_tests!({
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
        .keep();
    let info = BackendInfo::new(BackendId::new("fs").expect("valid id"));
    std::sync::Arc::new(FsBackend::open(info, dir).await.expect("open"))
});
