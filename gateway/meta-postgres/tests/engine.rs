//! The metadata engine on PostgreSQL: the conformance suite every engine
//! passes (the same one redb passes), and conflicting writers that lose
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use shardgate_emulators::postgres::Postgres;
use shardgate_meta::kv::{self, KvReadExt, tables, u64_bytes};
use shardgate_meta_conformance as conformance;
use shardgate_meta_postgres::{PgEngine, PgOptions, PgStore};

fn engine(pg: &Postgres, runtime: &tokio::runtime::Runtime) -> PgEngine {
    let store = runtime
        .block_on(PgStore::connect(&PgOptions::new(&pg.url)))
        .unwrap();
    PgEngine::new(store, runtime.handle().clone())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_lease_fences_the_writes_of_a_postgres_store() {
    let pg = Postgres::start();
    let runtime = runtime();
    conformance::leases_fence_writes(Arc::new(engine(&pg, &runtime)));
}

#[test]
fn postgres_passes_the_engine_conformance_suite() {
    let pg = Postgres::start();
    let runtime = runtime();
    conformance::run(&engine(&pg, &runtime));
}

/// Three engines (three gateways, each writing one transaction at a time)
/// each add 1 to one counter 50 times, every add a read-modify-write in
/// one transaction: the database's conflicts between them are retried,
/// none is lost. Within one engine, its own writers take turns.
#[test]
fn conflicting_read_modify_writes_are_retried_and_none_is_lost() {
    let pg = Postgres::start();
    let runtime = runtime();
    let add = |engine: Arc<PgEngine>| {
        std::thread::spawn(move || {
            for _ in 0..50 {
                kv::write(&*engine, |kv| {
                    let n = kv.get_u64(tables::COUNTERS, b"c")?.unwrap_or(0);
                    kv.put(tables::COUNTERS, b"c", &u64_bytes(n + 1))
                })
                .unwrap();
            }
        })
    };
    let shared = Arc::new(engine(&pg, &runtime));
    let mut threads: Vec<_> = (0..3)
        .map(|_| add(Arc::new(engine(&pg, &runtime))))
        .collect();
    threads.extend((0..2).map(|_| add(shared.clone())));
    for t in threads {
        t.join().unwrap();
    }
    let n = kv::read(&*shared, |kv| kv.get_u64(tables::COUNTERS, b"c")).unwrap();
    assert_eq!(n, Some(250));
}

/// From inside the runtime's own tasks (a worker thread), the engine hands
/// the worker's other tasks away and answers.
#[test]
fn callable_from_a_multi_threaded_runtimes_tasks() {
    let pg = Postgres::start();
    let runtime = runtime();
    let engine = Arc::new(engine(&pg, &runtime));
    let e = engine.clone();
    let got = runtime.block_on(async move {
        tokio::spawn(async move {
            kv::write(&*e, |kv| kv.put(tables::USERS, b"u", b"v"))?;
            kv::read(&*e, |kv| kv.get(tables::USERS, b"u"))
        })
        .await
        .unwrap()
    });
    assert_eq!(got.unwrap(), Some(b"v".to_vec()));
}
