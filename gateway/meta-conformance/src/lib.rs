//! What every metadata [`Engine`] must do, as one suite that each engine's tests
//! run on a fresh, empty store: point reads and writes of every key and
//! value type, range scans both ways against a `BTreeMap` model, early
//! stops, range removal, a failed body that leaves nothing, and a
//! transaction that sees its own writes.
//!
//! It panics on the first difference (it is test code, reached only from
//! tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use shardgate_meta::kv::tables::{self, KeyKind, Table};
use shardgate_meta::kv::{
    ALL_KEYS, Engine, KeyRange, KvReadExt, KvWrite, prefix_end, read, u64_bytes, write,
};
use shardgate_meta::{MetaError, now_unix_ms};

/// A store fenced by a lease on `engine` (empty): claimed by one gateway,
/// refused to a second while it holds it; once it ran out and the second
/// took it, every write of the first fails (`LeaseLost`) and its renewal
/// is refused, while the second writes; released, it goes to the next.
pub fn leases_fence_writes(engine: std::sync::Arc<dyn Engine>) {
    use shardgate_meta::MetaStore;
    let term = |ms| Some(("sole", ms));
    let first = MetaStore::on_engine(engine.clone(), false, term(300)).unwrap();
    first.create_bucket("one", 0).unwrap();
    let refused = MetaStore::on_engine(engine.clone(), false, term(60_000));
    assert!(
        matches!(&refused, Err(MetaError::Leased { owner, .. }) if owner == first.owner()),
        "{refused:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(400));
    let second = MetaStore::on_engine(engine.clone(), false, term(60_000)).unwrap();
    let lost = first.create_bucket("two", 0);
    assert!(matches!(lost, Err(MetaError::LeaseLost { .. })), "{lost:?}");
    let renewed = first.claim_lease("sole", now_unix_ms(), 60_000);
    assert!(
        matches!(renewed, Err(MetaError::Leased { .. })),
        "{renewed:?}"
    );
    second.create_bucket("three", 0).unwrap();
    let names: Vec<String> = second
        .list_buckets()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["one", "three"]);
    first.release_lease("sole").unwrap(); // not its lease: no change
    assert!(MetaStore::on_engine(engine.clone(), false, term(60_000)).is_err());
    second.release_lease("sole").unwrap();
    let third = MetaStore::on_engine(engine, false, term(60_000)).unwrap();
    third.create_bucket("four", 0).unwrap();
}

/// Runs every check on `engine`, whose tables must be empty.
pub fn run(engine: &dyn Engine) {
    point_operations(engine);
    failed_body_changes_nothing(engine);
    sees_its_own_writes(engine);
    ranges_match_a_model(engine, tables::PARTS, random_bytes);
    ranges_match_a_model(engine, tables::JOBS, |rng| random_name(rng).into_bytes());
    ranges_match_a_model(engine, tables::OUTBOX, |rng| {
        u64_bytes(rng.random_range(0..64) << rng.random_range(0..60)).to_vec()
    });
    counters_and_flags(engine);
    snapshot_is_a_fixed_view(engine);
}

/// A held snapshot sees the rows of its start, whatever is written after,
/// across many calls; a new read sees the writes.
fn snapshot_is_a_fixed_view(engine: &dyn Engine) {
    let keys: Vec<Vec<u8>> = (0u16..600).map(|i| i.to_be_bytes().to_vec()).collect();
    write(engine, |kv| {
        for k in &keys {
            kv.put(tables::VERSIONS, k, b"before")?;
        }
        Ok(())
    })
    .unwrap();
    let snapshot = engine.snapshot().unwrap();
    write(engine, |kv| {
        kv.remove(tables::VERSIONS, &keys[0])?;
        kv.put(tables::VERSIONS, &keys[599], b"after")?;
        kv.put(tables::VERSIONS, b"\xff new", b"after")
    })
    .unwrap();
    let seen = snapshot
        .rows(tables::VERSIONS, ALL_KEYS, false, usize::MAX)
        .unwrap();
    let want: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), b"before".to_vec()))
        .collect();
    let differs = seen.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        seen == want,
        "the snapshot saw a later write: {} rows against {}, first difference at {differs:?}",
        seen.len(),
        want.len()
    );
    assert_eq!(snapshot.len(tables::VERSIONS).unwrap(), 600);
    assert_eq!(
        snapshot
            .get(tables::VERSIONS, &keys[599])
            .unwrap()
            .as_deref(),
        Some(&b"before"[..])
    );
    drop(snapshot);
    assert_eq!(read(engine, |kv| kv.len(tables::VERSIONS)).unwrap(), 600);
    assert_eq!(
        read(engine, |kv| kv.get(tables::VERSIONS, &keys[0])).unwrap(),
        None
    );
    write(engine, |kv| kv.remove_range(tables::VERSIONS, ALL_KEYS)).unwrap();
}

fn point_operations(engine: &dyn Engine) {
    let cases: [(Table, &[u8], &[u8]); 3] = [
        (tables::VERSIONS, b"b\0k\0\xff\x00", b"manifest"),
        (tables::USERS, "ü-user".as_bytes(), b"record"),
        (tables::INTENTS, &u64_bytes(7), b"intent"),
    ];
    for (table, key, value) in cases {
        assert_eq!(read(engine, |kv| kv.get(table, key)).unwrap(), None);
        write(engine, |kv| kv.put(table, key, value)).unwrap();
        assert_eq!(
            read(engine, |kv| kv.get(table, key)).unwrap().as_deref(),
            Some(value),
            "{}",
            table.name
        );
        write(engine, |kv| kv.put(table, key, b"replaced")).unwrap();
        let old = write(engine, |kv| kv.remove(table, key)).unwrap();
        assert_eq!(old.as_deref(), Some(&b"replaced"[..]), "{}", table.name);
        assert_eq!(write(engine, |kv| kv.remove(table, key)).unwrap(), None);
        assert_eq!(
            read(engine, |kv| kv.len(table)).unwrap(),
            0,
            "{}",
            table.name
        );
    }
}

fn failed_body_changes_nothing(engine: &dyn Engine) {
    let outcome: Result<(), MetaError> = write(engine, |kv| {
        kv.put(tables::BUCKETS, b"kept-out", b"x")?;
        Err(MetaError::NoSuchBucket)
    });
    assert!(matches!(outcome, Err(MetaError::NoSuchBucket)));
    assert_eq!(
        read(engine, |kv| kv.get(tables::BUCKETS, b"kept-out")).unwrap(),
        None
    );
}

fn sees_its_own_writes(engine: &dyn Engine) {
    let seen = write(engine, |kv| {
        kv.put(tables::UPLOADS, b"u1", b"one")?;
        kv.put(tables::UPLOADS, b"u2", b"two")?;
        kv.remove(tables::UPLOADS, b"u1")?;
        let rows = kv.rows(tables::UPLOADS, ALL_KEYS, false, 10)?;
        let len = kv.len(tables::UPLOADS)?;
        kv.remove(tables::UPLOADS, b"u2")?;
        Ok((rows, len))
    })
    .unwrap();
    assert_eq!(seen, (vec![(b"u2".to_vec(), b"two".to_vec())], 1));
    assert_eq!(read(engine, |kv| kv.len(tables::UPLOADS)).unwrap(), 0);
}

/// Fills `table` with random keys, then compares random scans (bounds of
/// every kind, both ways, with early stops) and range removals against a
/// `BTreeMap` holding the same rows.
fn ranges_match_a_model(
    engine: &dyn Engine,
    table: Table,
    mut key: impl FnMut(&mut StdRng) -> Vec<u8>,
) {
    let seed = table
        .name
        .bytes()
        .fold(0x5eed_u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = BTreeMap::new();
    for _ in 0..300 {
        model.insert(key(&mut rng), random_bytes(&mut rng));
    }
    write(engine, |kv| {
        for (k, v) in &model {
            kv.put(table, k, v)?;
        }
        Ok(())
    })
    .unwrap();
    for round in 0..200 {
        let (lo, hi) = (key(&mut rng), key(&mut rng));
        let range: KeyRange<'_> = (bound(&mut rng, &lo), bound(&mut rng, &hi));
        let reverse = rng.random_bool(0.5);
        let limit = rng.random_range(0..40);
        let want = expected(&model, range, reverse, limit);
        let got = read(engine, |kv| kv.rows(table, range, reverse, limit)).unwrap();
        assert_eq!(
            got, want,
            "{} round {round}: {range:?} reverse {reverse}",
            table.name
        );
    }
    // A prefix's end that is not UTF-8 still bounds a string table's scan.
    let prefixes: &[&[u8]] = if table.key == KeyKind::U64 {
        &[]
    } else {
        &[b"a", b"\x7f", "é".as_bytes(), &[0xC3]]
    };
    for &prefix in prefixes {
        let end = prefix_end(prefix);
        let range: KeyRange<'_> = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        for reverse in [false, true] {
            let want = expected(&model, range, reverse, usize::MAX);
            let got = read(engine, |kv| kv.rows(table, range, reverse, usize::MAX)).unwrap();
            assert_eq!(got, want, "{} prefix {prefix:?}", table.name);
        }
    }
    for _ in 0..20 {
        let (lo, hi) = (key(&mut rng), key(&mut rng));
        let range: KeyRange<'_> = (bound(&mut rng, &lo), bound(&mut rng, &hi));
        let gone = expected(&model, range, false, usize::MAX);
        let removed = write(engine, |kv: &mut dyn KvWrite| kv.remove_range(table, range)).unwrap();
        assert_eq!(removed, gone.len() as u64, "{}: {range:?}", table.name);
        for (k, _) in gone {
            model.remove(&k);
        }
        assert_eq!(
            read(engine, |kv| kv.len(table)).unwrap(),
            model.len() as u64
        );
    }
    let left = read(engine, |kv| kv.rows(table, ALL_KEYS, false, usize::MAX)).unwrap();
    assert_eq!(
        left,
        model.into_iter().collect::<Vec<_>>(),
        "{}",
        table.name
    );
    write(engine, |kv| kv.remove_range(table, ALL_KEYS)).unwrap();
}

fn counters_and_flags(engine: &dyn Engine) {
    write(engine, |kv| {
        kv.put(tables::COUNTERS, b"generation", &u64_bytes(u64::MAX - 1))?;
        kv.put(tables::REPAIR_INDEX, b"row", &[3])
    })
    .unwrap();
    let (counter, flag) = read(engine, |kv| {
        Ok((
            kv.get_u64(tables::COUNTERS, b"generation")?,
            kv.get(tables::REPAIR_INDEX, b"row")?,
        ))
    })
    .unwrap();
    assert_eq!(counter, Some(u64::MAX - 1));
    assert_eq!(flag, Some(vec![3]));
    let bad = write(engine, |kv| kv.put(tables::COUNTERS, b"short", b"1234"));
    assert!(bad.is_err(), "a counter of 4 bytes was stored");
    let mut stopped = 0;
    read(engine, |kv| {
        kv.scan(tables::COUNTERS, ALL_KEYS, false, &mut |_, _| {
            stopped += 1;
            Ok(ControlFlow::Break(()))
        })
    })
    .unwrap();
    assert_eq!(stopped, 1, "a scan went on after its visitor stopped it");
    write(engine, |kv| {
        kv.remove(tables::COUNTERS, b"generation")?;
        kv.remove(tables::REPAIR_INDEX, b"row")
    })
    .unwrap();
}

fn expected(
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
    range: KeyRange<'_>,
    reverse: bool,
    limit: usize,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let inside = |k: &[u8]| {
        (match range.0 {
            Bound::Included(b) => k >= b,
            Bound::Excluded(b) => k > b,
            Bound::Unbounded => true,
        }) && (match range.1 {
            Bound::Included(b) => k <= b,
            Bound::Excluded(b) => k < b,
            Bound::Unbounded => true,
        })
    };
    let rows = model.iter().filter(|(k, _)| inside(k));
    let rows: Vec<_> = if reverse {
        rows.rev().take(limit).collect()
    } else {
        rows.take(limit).collect()
    };
    rows.into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn bound<'a>(rng: &mut StdRng, key: &'a [u8]) -> Bound<&'a [u8]> {
    match rng.random_range(0..5) {
        0 => Bound::Unbounded,
        1 | 2 => Bound::Included(key),
        _ => Bound::Excluded(key),
    }
}

/// Short keys over few byte values, so that prefixes, equal keys and the
/// extremes 0x00 and 0xFF come up often.
fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..6);
    (0..len)
        .map(|_| [0x00, 0x01, b'a', b'b', 0x7F, 0xC3, 0xFF][rng.random_range(0..7)])
        .collect()
}

/// Names with ASCII and multibyte characters.
fn random_name(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..6);
    (0..len)
        .map(|_| ['\0', 'a', 'b', '/', 'é', 'ü', '\u{10FFFF}'][rng.random_range(0..7)])
        .collect()
}
