//! The engine conformance suite on redb, the embedded engine.

use shardgate_meta::kv::RedbEngine;
use shardgate_meta_conformance as conformance;

#[test]
fn redb_passes_the_engine_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RedbEngine::create(&dir.path().join("meta.redb")).unwrap();
    conformance::run(&engine);
}

#[test]
fn a_lease_fences_the_writes_of_a_redb_store() {
    let dir = tempfile::tempdir().unwrap();
    let engine = RedbEngine::create(&dir.path().join("meta.redb")).unwrap();
    conformance::leases_fence_writes(std::sync::Arc::new(engine));
}
