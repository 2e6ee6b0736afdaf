//! The memory backend passes the shared conformance suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use shardgate_backend::{BackendId, BackendInfo};
use shardgate_backend_memory::MemoryBackend;

shardgate_backend_conformance::conformance_tests!({
    let id = BackendId::new("mem").expect("valid id");
    std::sync::Arc::new(MemoryBackend::new(BackendInfo::new(id)))
});
