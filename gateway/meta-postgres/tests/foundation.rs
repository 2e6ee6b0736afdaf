//! The store's foundation against Debian's PostgreSQL, started by each
//! test (`shardgate_emulators::postgres`): migrations, a newer schema
//! refused, conflicts retried without a lost update, statement timeouts
//! and an unreachable server as errors that come back in bounded time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shardgate_emulators::free_port;
use shardgate_emulators::postgres::Postgres;
use shardgate_meta_postgres::kv::{Kv, u64_key};
use shardgate_meta_postgres::schema::VERSION;
use shardgate_meta_postgres::{PgError, PgOptions, PgStore};

/// Bounds every call a test awaits.
const BOUND: Duration = Duration::from_secs(30);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("within the bound")
}

fn counter(value: Option<Vec<u8>>) -> u64 {
    u64::from_be_bytes(value.expect("the counter").try_into().expect("8 bytes"))
}

async fn schema_versions(store: &PgStore) -> Vec<i32> {
    let client = store.client().await.unwrap();
    let rows = client
        .query("SELECT version FROM shardgate_schema ORDER BY version", &[])
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_starting_together_migrate_once_and_a_later_start_finds_it_done() {
    let pg = Postgres::start();
    let options = PgOptions::new(&pg.url);
    let starts = (0..4).map(|_| PgStore::connect(&options));
    let stores = bounded(futures::future::join_all(starts)).await;
    for store in &stores {
        assert!(store.is_ok(), "{:?}", store.as_ref().err());
    }
    let store = bounded(PgStore::connect(&options)).await.unwrap();
    let all: Vec<i32> = (1..=VERSION).collect();
    assert_eq!(schema_versions(&store).await, all, "each version once");
    // The table of the last version is there.
    let client = store.client().await.unwrap();
    client.query("SELECT count(*) FROM kv", &[]).await.unwrap();
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused_and_named() {
    let pg = Postgres::start();
    let options = PgOptions::new(&pg.url);
    let store = bounded(PgStore::connect(&options)).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO shardgate_schema (version, applied_unix_ms) VALUES (999, 0)",
            &[],
        )
        .await
        .unwrap();
    let refused = bounded(PgStore::connect(&options)).await.unwrap_err();
    assert!(
        matches!(refused, PgError::NewerSchema { found: 999, known } if known == VERSION),
        "{refused}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("999") && text.contains(&VERSION.to_string()),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_transactions_are_run_again_and_no_update_is_lost() {
    let pg = Postgres::start();
    let store = bounded(PgStore::connect(&PgOptions::new(&pg.url)))
        .await
        .unwrap();
    store
        .serializable(async |tx| Kv::new(tx).put("counters", b"c", &u64_key(0)).await)
        .await
        .unwrap();
    // Two increments whose first attempts both read before either
    // writes: one of them must conflict, run again and read the other's.
    let runs = Arc::new(AtomicU32::new(0));
    let both_read = Arc::new(tokio::sync::Barrier::new(2));
    let increment = || {
        let (store, runs, both_read) = (store.clone(), runs.clone(), both_read.clone());
        async move {
            store
                .serializable(async |tx| {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let kv = Kv::new(tx);
                    let value = counter(kv.get("counters", b"c").await?);
                    if run < 2 {
                        both_read.wait().await;
                    }
                    kv.put("counters", b"c", &u64_key(value + 1)).await
                })
                .await
        }
    };
    let (a, b) = bounded(async { tokio::join!(increment(), increment()) }).await;
    a.unwrap();
    b.unwrap();
    let value = store
        .serializable(async |tx| Kv::new(tx).get("counters", b"c").await)
        .await
        .unwrap();
    assert_eq!(counter(value), 2, "no increment lost");
    assert!(runs.load(Ordering::SeqCst) >= 3, "one of the two ran again");
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_cancelled_with_a_clear_error() {
    let pg = Postgres::start();
    let mut options = PgOptions::new(&pg.url);
    options.statement_timeout = Duration::from_millis(200);
    let store = bounded(PgStore::connect(&options)).await.unwrap();
    let started = std::time::Instant::now();
    let client = store.client().await.unwrap();
    let e: PgError = bounded(client.query("SELECT pg_sleep(20)", &[]))
        .await
        .unwrap_err()
        .into();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(e.to_string().contains("statement timeout"), "{e}");
}

#[tokio::test]
async fn a_database_nobody_answers_for_is_an_error_in_bounded_time() {
    let mut options = PgOptions::new(format!(
        "postgres://shardgate@127.0.0.1:{}/postgres",
        free_port()
    ));
    options.connect_timeout = Duration::from_secs(1);
    let e = bounded(PgStore::connect(&options)).await.unwrap_err();
    assert!(matches!(e, PgError::Db(_) | PgError::Pool(_)), "{e}");
    assert!(e.to_string().contains("PostgreSQL"), "{e}");
}

/// Ranges over random keys (with `0x00`, `0xFF` and prefixes of each other)
/// come back as a `BTreeMap` of the same keys returns them: bytewise, as in
/// redb.
#[tokio::test]
async fn keys_are_ordered_bytewise_as_in_redb_both_ways_and_within_bounds() {
    use std::collections::BTreeMap;
    use std::ops::Bound;

    use rand::{Rng, SeedableRng};

    let pg = Postgres::start();
    let store = bounded(PgStore::connect(&PgOptions::new(&pg.url)))
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let mut model = BTreeMap::new();
    for i in 0..300u32 {
        let len = rng.random_range(0..6);
        let key: Vec<u8> = (0..len)
            .map(|_| [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff][rng.random_range(0..6)])
            .collect();
        model.insert(key, i.to_be_bytes().to_vec());
    }
    let entries: Vec<_> = model.clone().into_iter().collect();
    store
        .serializable(async |tx| {
            let kv = Kv::new(tx);
            for (key, value) in &entries {
                kv.put("t", key, value).await?;
            }
            // Another table's keys never show.
            kv.put("u", b"", b"x").await
        })
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = model.keys().cloned().collect();
    for round in 0..40 {
        let a = &keys[rng.random_range(0..keys.len())];
        let b = &keys[rng.random_range(0..keys.len())];
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let start = match round % 3 {
            0 => Bound::Included(lo.as_slice()),
            1 => Bound::Excluded(lo.as_slice()),
            _ => Bound::Unbounded,
        };
        let end = match round % 4 {
            0 => Bound::Excluded(hi.as_slice()),
            1 => Bound::Included(hi.as_slice()),
            _ => Bound::Unbounded,
        };
        let reverse = round % 2 == 1;
        let limit = rng.random_range(1..50u32);
        let mut want: Vec<(Vec<u8>, Vec<u8>)> = model
            .range::<[u8], _>((start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            want.reverse();
        }
        want.truncate(limit as usize);
        let got = store
            .serializable(async |tx| Kv::new(tx).range("t", start, end, limit, reverse).await)
            .await
            .unwrap();
        assert_eq!(
            got, want,
            "round {round}: {start:?}..{end:?} reverse {reverse}"
        );
    }
    // Point reads and deletes.
    let (key, value) = &entries[7];
    let kv_get = store
        .serializable(async |tx| Kv::new(tx).get("t", key).await)
        .await
        .unwrap();
    assert_eq!(kv_get.as_ref(), Some(value));
    let deleted = store
        .serializable(async |tx| {
            let kv = Kv::new(tx);
            Ok((kv.delete("t", key).await?, kv.delete("t", key).await?))
        })
        .await
        .unwrap();
    assert_eq!(deleted, (true, false));
}
