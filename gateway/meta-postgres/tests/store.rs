//! The metadata store's rules on PostgreSQL: the suite redb passes
//! (`gateway/meta/tests/suite`), unchanged, each test on a cluster of its
//! own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../meta/tests/suite/mod.rs"]
mod suite;

use std::sync::Arc;

use shardgate_emulators::postgres::Postgres;
use shardgate_meta::MetaStore;
use shardgate_meta_postgres::{PgEngine, PgOptions, PgStore};

/// What a test's store stands on; dropped after the store.
#[derive(Debug)]
pub struct Cluster {
    _runtime: tokio::runtime::Runtime,
    _postgres: Postgres,
}

fn open() -> (Cluster, MetaStore) {
    let postgres = Postgres::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = runtime
        .block_on(PgStore::connect(&PgOptions::new(&postgres.url)))
        .unwrap();
    let engine = Arc::new(PgEngine::new(pg, runtime.handle().clone()));
    // Under a lease, as the gateway opens it: every write of the suite
    // also passes the lease's fence.
    let store = MetaStore::on_engine(engine, false, Some(("sole-gateway", 3_600_000))).unwrap();
    let cluster = Cluster {
        _runtime: runtime,
        _postgres: postgres,
    };
    (cluster, store)
}
