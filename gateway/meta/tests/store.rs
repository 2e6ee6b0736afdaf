//! The metadata store's rules on a real redb file: the engine-agnostic
//! suite (`suite/mod.rs`), and what only a redb store has (its file
//! reopened, locked, damaged behind its back, or written by older
//! releases).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shardgate_core::{BackendId, BlobName, FragmentState, Manifest};
use shardgate_meta::{
    Condition, IntentKind, ListEntry, ListQuery, MetaError, MetaStore, VersionEntry, VersionQuery,
    VersionSelector, Versioning, Writer,
};

use suite::*;

fn open() -> (tempfile::TempDir, MetaStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
    (dir, store)
}

#[test]
fn intents_left_by_a_crash_become_garbage_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let committed = manifest("c", vec![segment(1)]);
    let crashed: Vec<_> = (0..3)
        .map(|i| (BackendId::new(format!("b{i}")).unwrap(), BlobName::random()))
        .collect();
    {
        let store = MetaStore::open(&path).unwrap();
        store.create_bucket("b", 0).unwrap();
        let done: Vec<_> = blobs(&committed).into_iter().collect();
        let intent = store.begin_intent(IntentKind::PUT, &done, 0).unwrap();
        store
            .put_object("b", "k", &committed, Some(intent), &Condition::Always, 0)
            .unwrap();
        store.begin_intent(IntentKind::PUT, &crashed, 0).unwrap();
        assert_eq!(store.pending_counts().unwrap(), (0, 1));
        // Dropped without closing the intent: the process "dies" here.
    }
    let store = MetaStore::open(&path).unwrap();
    assert_eq!(store.pending_counts().unwrap(), (3, 0));
    assert_eq!(
        garbage_blobs(&store, u64::MAX),
        crashed.into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(store.object("b", "k").unwrap().unwrap(), committed);
}

#[test]
fn a_second_process_cannot_open_the_store() {
    let (dir, _store) = open();
    assert!(MetaStore::open(&dir.path().join("meta.redb")).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn listing_pages_equal_the_model(
        keys in proptest::collection::btree_set("[ab/]{0,5}", 0..40),
        prefix in "[ab/]{0,2}",
        slash in any::<bool>(),
        max in 1usize..5,
    ) {
        let (_dir, store) = open();
        store.create_bucket("b", 0).unwrap();
        store.create_bucket("a", 0).unwrap();
        store.create_bucket("b-2", 0).unwrap();
        for k in &keys {
            store.put_object("b", k, &empty(k), None, &Condition::Always, 0).unwrap();
            // Neighbouring buckets never leak into the listing.
            store.put_object("a", k, &empty(k), None, &Condition::Always, 0).unwrap();
            store.put_object("b-2", k, &empty(k), None, &Condition::Always, 0).unwrap();
        }
        let delimiter = slash.then_some("/");
        prop_assert_eq!(
            page_through(&store, &prefix, delimiter, max),
            model(&keys, &prefix, delimiter)
        );
    }
}

#[test]
fn a_million_keys_list_page_by_page() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let m = empty("e");
    let total = 1_000_000usize;
    let key = |i: usize| format!("dir{:03}/obj{i:07}", i % 100);
    for start in (0..total).step_by(50_000) {
        let batch: Vec<_> = (start..start + 50_000)
            .map(|i| (key(i), m.clone()))
            .collect();
        store.put_objects_batch("b", &batch, 0).unwrap();
    }
    // Without a delimiter: all keys, in order, 1000 per page.
    let mut seen = 0usize;
    let mut after: Option<String> = None;
    let mut previous = String::new();
    loop {
        let q = ListQuery {
            prefix: "",
            delimiter: None,
            after: after.as_deref(),
            max: 1000,
        };
        let page = store.list_objects("b", &q).unwrap();
        for e in &page.entries {
            let ListEntry::Object { key, summary } = e else {
                panic!("unexpected {e:?}");
            };
            assert!(*key > previous);
            assert_eq!(summary.etag, "e");
            previous.clone_from(key);
        }
        seen += page.entries.len();
        if !page.truncated {
            break;
        }
        assert_eq!(page.entries.len(), 1000);
        after = page.entries.last().map(|e| e.marker().to_string());
    }
    assert_eq!(seen, total);
    // With a delimiter, the 100 directories come back in one page.
    let q = ListQuery {
        prefix: "",
        delimiter: Some("/"),
        after: None,
        max: 1000,
    };
    let page = store.list_objects("b", &q).unwrap();
    assert_eq!(page.entries.len(), 100);
    assert!(!page.truncated);
    assert_eq!(page.entries[99], ListEntry::Prefix("dir099/".into()));
}

/// A row whose manifest does not decode (damaged, or written by a newer
/// version) is passed over by the walk scrub, drain and rebalance use,
/// and named beside it, so no walk stops at it: with every row of a batch
/// unreadable, the walk still reaches the rows after them.
#[test]
fn a_walk_passes_over_rows_that_do_not_decode_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    {
        let store = MetaStore::open(&path).unwrap();
        store.create_bucket("b", 1).unwrap();
        for key in ["a1", "a2", "a3", "z1"] {
            store
                .put_object("b", key, &empty(key), None, &Condition::Always, 2)
                .unwrap();
        }
    }
    {
        // Three rows damaged behind the store's back.
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut objects = txn
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("versions"))
                .unwrap();
            let rows: Vec<Vec<u8>> = redb::ReadableTable::iter(&objects)
                .unwrap()
                .map(|r| r.unwrap().0.value().to_vec())
                .filter(|k| k.starts_with(b"b\0a"))
                .collect();
            assert_eq!(rows.len(), 3);
            for row in rows {
                objects
                    .insert(row.as_slice(), b"\xffnot a row".as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = MetaStore::open(&path).unwrap();
    let (rows, unreadable) = store.objects_after(None, 2).unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["z1"]);
    let named: Vec<&str> = unreadable.iter().map(|u| u.1.as_str()).collect();
    assert_eq!(named, ["a1", "a2", "a3"]);
    let (rest, more) = store.objects_after(Some(&rows[0].row), 2).unwrap();
    assert!(rest.is_empty() && more.is_empty());
}

/// 100,000 versions of one key and a few other keys: ListObjectVersions
/// pages through them in order with bounded pages, and ListObjects steps
/// over the old versions with a seek (a page does not walk them).
#[test]
fn a_hundred_thousand_versions_page_in_order() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
        .unwrap();
    const MANY: usize = 100_000;
    let batch: Vec<(String, Manifest)> =
        (0..MANY).map(|_| ("hot".to_string(), empty("e"))).collect();
    store.put_objects_batch("b", &batch, 0).unwrap();
    for key in ["a", "z"] {
        store
            .put_object("b", key, &empty(key), None, &Condition::Always, 0)
            .unwrap();
    }
    assert_eq!(listed_keys(&store), ["a", "hot", "z"]);

    let (mut key_after, mut version_after): (Option<String>, Option<VersionSelector>) =
        (None, None);
    let (mut seen, mut pages, mut last_seq) = (0usize, 0usize, u64::MAX);
    let mut order = Vec::new();
    loop {
        pages += 1;
        assert!(pages <= MANY / 1000 + 5, "the listing does not end");
        let page = store
            .list_versions(
                "b",
                &VersionQuery {
                    key_after: key_after.as_deref(),
                    version_after,
                    max: 1000,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(page.entries.len() <= 1000);
        for e in &page.entries {
            let VersionEntry::Version {
                key,
                version,
                latest,
                ..
            } = e
            else {
                panic!("no delimiter, no prefix");
            };
            if key == "hot" {
                // Newest first, the first one only is current.
                assert!(version.seq < last_seq);
                assert_eq!(*latest, last_seq == u64::MAX);
                last_seq = version.seq;
                seen += 1;
            }
            if order.last() != Some(key) {
                order.push(key.clone());
            }
        }
        match page.entries.last() {
            Some(VersionEntry::Version { key, version, .. }) if page.truncated => {
                key_after = Some(key.clone());
                version_after = Some(VersionSelector::parse(Some(&version.id())).unwrap());
            }
            _ => break,
        }
    }
    assert_eq!(seen, MANY);
    assert_eq!(order, ["a", "hot", "z"]);
}

/// A store written before versioning (one `bucket 0x00 key` row per key
/// in the `objects` table) is moved into version rows when opened; its
/// repair queue entries follow their rows.
#[test]
fn a_store_from_before_versions_is_moved_into_version_rows() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let mut short = manifest("s", vec![segment(1)]);
    short.segments[0].fragments[2].state = FragmentState::Missing;
    {
        let store = MetaStore::open(&path).unwrap();
        store.create_bucket("b", 0).unwrap();
        store
            .put_object("b", "short", &short, None, &Condition::Always, 0)
            .unwrap();
        store
            .put_object("b", "whole", &empty("w"), None, &Condition::Always, 0)
            .unwrap();
    }
    // Back to the old layout by hand: bare keys in `objects`, the repair
    // entry keyed by the bare key.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let bare = |row: &[u8]| row[..row.len() - 9].to_vec();
        {
            let mut versions = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("versions"))
                .unwrap();
            let mut legacy = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("objects"))
                .unwrap();
            while let Some((k, v)) = versions.pop_first().unwrap() {
                legacy
                    .insert(bare(k.value()).as_slice(), v.value())
                    .unwrap();
            }
            let mut index = txn
                .open_table(TableDefinition::<&[u8], u8>::new("repair_index"))
                .unwrap();
            let mut queue = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("repair_queue"))
                .unwrap();
            let (row, margin) = {
                let (k, v) = index.first().unwrap().unwrap();
                (k.value().to_vec(), v.value())
            };
            index.remove(row.as_slice()).unwrap();
            index.insert(bare(&row).as_slice(), margin).unwrap();
            let entry = [&[margin], row.as_slice()].concat();
            let record = queue
                .remove(entry.as_slice())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            queue
                .insert(
                    [&[margin], bare(&row).as_slice()].concat().as_slice(),
                    record.as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
        let txn = db.begin_read().unwrap();
        let legacy = txn
            .open_table(TableDefinition::<&[u8], &[u8]>::new("objects"))
            .unwrap();
        assert!(legacy.get(b"b\0short".as_slice()).unwrap().is_some());
    }
    let store = MetaStore::open(&path).unwrap();
    assert_eq!(store.object("b", "short").unwrap().unwrap(), short);
    assert_eq!(listed_keys(&store), ["short", "whole"]);
    let v = versions(&store);
    assert!(
        v.iter()
            .all(|(_, id, marker, latest)| id == "null" && !marker && *latest)
    );
    let queued = store.repair_queue(10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].key, "short");
    assert_eq!(queued[0].seq, seq_of(&store, "short"));
    assert!(
        store
            .repair_entry("b", "short", queued[0].seq)
            .unwrap()
            .is_some()
    );
    // Opened again: nothing left to move, nothing moved twice.
    drop(store);
    let store = MetaStore::open(&path).unwrap();
    assert_eq!(store.object_count().unwrap(), 2);
}

#[test]
fn keys_with_nul_are_refused_and_never_taken_for_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let m = manifest("a", vec![segment(1)]);
    {
        let store = MetaStore::open(&path).unwrap();
        store.create_bucket("b", 0).unwrap();
        store
            .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
            .unwrap();
        store
            .put_object("b", "a", &m, None, &Condition::Always, 0)
            .unwrap();
        assert!(matches!(
            store.put_object("b", "a\0x", &m, None, &Condition::Always, 0),
            Err(MetaError::InvalidKey(_))
        ));
        assert!(matches!(
            store.delete_object(&Writer::Admin, "b", "a\0x", 0),
            Err(MetaError::InvalidKey(_))
        ));
    }
    // A row of key "a\0x" planted behind the store's back (as a release
    // that took such keys left them) sorts inside "a"'s range.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut versions = txn
                .open_table(redb::TableDefinition::<&[u8], &[u8]>::new("versions"))
                .unwrap();
            let (row, value) = {
                let (k, v) = redb::ReadableTable::first(&versions).unwrap().unwrap();
                (k.value().to_vec(), v.value().to_vec())
            };
            let mut planted = b"b\0a\0x\0".to_vec();
            planted.extend_from_slice(&row[row.len() - 8..]);
            versions
                .insert(planted.as_slice(), value.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = MetaStore::open(&path).unwrap();
    let seq = seq_of(&store, "a");
    let v = store
        .object_version("b", "a", &VersionSelector::Latest)
        .unwrap()
        .unwrap();
    assert_eq!(v.version.seq, seq);
    // Deleting "a" for good removes exactly "a"'s row.
    let id = VersionSelector::parse(Some(&v.version.id())).unwrap();
    store
        .delete_version(&Writer::Admin, "b", "a", &id, false, 1)
        .unwrap()
        .unwrap();
    assert_eq!(store.object("b", "a").unwrap(), None);
    assert_eq!(
        store.object_count().unwrap(),
        1,
        "the planted row is still there"
    );
}

/// A rollback: an older release wrote the old table after the upgrade.
/// Its rows are newer than every version, and a key holding NUL is kept
/// aside rather than taken for another key.
#[test]
fn rows_an_older_release_wrote_after_the_upgrade_come_first() {
    use redb::TableDefinition;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let old = manifest("old", vec![segment(1)]);
    let newer = manifest("newer", vec![segment(1)]);
    {
        let store = MetaStore::open(&path).unwrap();
        store.create_bucket("b", 0).unwrap();
        store
            .put_object("b", "k", &old, None, &Condition::Always, 0)
            .unwrap();
        store
            .put_object("b", "n", &newer, None, &Condition::Always, 0)
            .unwrap();
    }
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let versions = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("versions"))
                .unwrap();
            let row = |key: &[u8]| {
                redb::ReadableTable::iter(&versions)
                    .unwrap()
                    .map(|r| r.unwrap())
                    .find(|(k, _)| k.value().starts_with(key))
                    .map(|(_, v)| v.value().to_vec())
                    .unwrap()
            };
            let (newer_row, old_row) = (row(b"b\0n\0"), row(b"b\0k\0"));
            drop(versions);
            let mut legacy = txn
                .open_table(TableDefinition::<&[u8], &[u8]>::new("objects"))
                .unwrap();
            legacy
                .insert(b"b\0k".as_slice(), newer_row.as_slice())
                .unwrap();
            legacy
                .insert(b"b\0bad\0key".as_slice(), old_row.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = MetaStore::open(&path).unwrap();
    assert_eq!(
        store.object("b", "k").unwrap().unwrap(),
        newer,
        "the later write is current"
    );
    assert_eq!(versions(&store).iter().filter(|v| v.0 == "k").count(), 2);
    assert_eq!(store.object("b", "bad").unwrap(), None);
    assert_eq!(listed_keys(&store), ["k", "n"]);
}

/// Every journaled row of a store, in checkpoint order, cut `max_bytes`
/// at a time.
fn all_rows(store: &MetaStore, max_bytes: usize) -> Vec<shardgate_meta::RowImage> {
    let mut snapshot = store.snapshot().unwrap();
    let mut rows = Vec::new();
    for _ in 0..100_000 {
        let chunk = snapshot.next_chunk(max_bytes).unwrap();
        if chunk.is_empty() {
            return rows;
        }
        rows.extend(chunk);
    }
    panic!("the snapshot did not end");
}

#[test]
fn the_outbox_replays_every_change_into_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open_with(&dir.path().join("a.redb"), true).unwrap();
    assert!(store.journal_state().unwrap().checkpoint_needed);
    store.create_user("KEY1", &user("alice")).unwrap();
    store.create_user("KEY2", &user("bob")).unwrap();
    store.delete_user("bob").unwrap();
    store
        .create_bucket_with("b", false, Some("alice"), 0)
        .unwrap();
    store.create_bucket("v", 0).unwrap();
    store
        .set_versioning(&Writer::Admin, "v", Versioning::Enabled)
        .unwrap();
    store.create_bucket("gone", 0).unwrap();
    store.delete_bucket(&Writer::Admin, "gone").unwrap();
    for i in 0..20 {
        let key = format!("k{i}");
        store
            .put_object(
                "b",
                &key,
                &manifest("e", vec![segment(10)]),
                None,
                &Condition::Always,
                0,
            )
            .unwrap();
        store
            .put_object(
                "v",
                &key,
                &manifest("e", vec![segment(10)]),
                None,
                &Condition::Always,
                0,
            )
            .unwrap();
    }
    for i in 0..5 {
        let key = format!("k{i}");
        store
            .put_object(
                "b",
                &key,
                &manifest("f", vec![segment(20)]),
                None,
                &Condition::Always,
                0,
            )
            .unwrap();
        store
            .delete_object(&Writer::Admin, "b", &format!("k{}", i + 5), 0)
            .unwrap();
        store.delete_object(&Writer::Admin, "v", &key, 0).unwrap();
    }
    let tags = BTreeMap::from([("t".to_string(), "1".to_string())]);
    store
        .set_object_tags(&Writer::Admin, "b", "k0", &VersionSelector::Latest, &tags)
        .unwrap();

    let outbox = store.outbox(usize::MAX).unwrap();
    let seqs: Vec<u64> = outbox.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "numbered without gaps"
    );
    let replayed = MetaStore::open_with(&dir.path().join("b.redb"), true).unwrap();
    assert!(replayed.is_empty().unwrap());
    let images: Vec<_> = outbox
        .records
        .iter()
        .map(|(_, bytes)| shardgate_meta::RowImage::decode(bytes).unwrap())
        .collect();
    replayed.restore(&images).unwrap();
    replayed
        .finish_restore(outbox.generation, 9, 1, *seqs.last().unwrap(), 0, &[])
        .unwrap();

    let expected = all_rows(&store, usize::MAX);
    assert_eq!(
        all_rows(&replayed, usize::MAX),
        expected,
        "the same rows, byte for byte"
    );
    assert_eq!(
        all_rows(&store, 300),
        expected,
        "chunks cut anywhere hold the same rows"
    );
    assert_eq!(
        replayed.object_count().unwrap(),
        store.object_count().unwrap()
    );
    assert_eq!(replayed.object_count().unwrap(), 15 + 20);
    assert!(replayed.bucket("gone").unwrap().is_none());
    assert_eq!(replayed.users().unwrap().len(), 1);
    // Sequences continue past the journal's: no version number again.
    let before = seq_of(&store, "k0");
    replayed
        .put_object("b", "k0", &empty("g"), None, &Condition::Always, 0)
        .unwrap();
    assert!(seq_of(&replayed, "k0") > before);
    assert!(replayed.journal_state().unwrap().checkpoint_needed);

    // Shipped records leave the outbox; a store without the journal
    // writes none.
    store.truncate_outbox(*seqs.last().unwrap()).unwrap();
    assert!(store.outbox(usize::MAX).unwrap().records.is_empty());
    let plain = MetaStore::open(&dir.path().join("c.redb")).unwrap();
    plain.create_bucket("b", 0).unwrap();
    assert!(plain.outbox(usize::MAX).unwrap().records.is_empty());
}

/// A store with the journal, bucket `b`, and one version of `b/k`, whose
/// manifest it returns.
fn journaled_with_one_version(path: &std::path::Path) -> (MetaStore, Manifest) {
    let store = MetaStore::open_with(path, true).unwrap();
    store.create_bucket("b", 0).unwrap();
    let first = manifest("a", vec![segment(10)]);
    store
        .put_object("b", "k", &first, None, &Condition::Always, 0)
        .unwrap();
    (store, first)
}

/// Puts a new version over `b/k`, tagged `etag`.
fn overwrite(store: &MetaStore, etag: &str) {
    store
        .put_object(
            "b",
            "k",
            &manifest(etag, vec![segment(10)]),
            None,
            &Condition::Always,
            0,
        )
        .unwrap();
}

/// Garbage waits for the journal: a recovery from the backends could bring
/// back the manifest that still names the blobs until the change that made
/// them garbage is shipped.
#[test]
fn garbage_waits_until_the_journal_has_shipped_its_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let (store, first) = journaled_with_one_version(&path);
    overwrite(&store, "b");
    let later = 1 << 40;
    assert!(garbage_blobs(&store, later).is_empty(), "held: not shipped");
    let last = store.outbox(usize::MAX).unwrap().records.last().unwrap().0;
    store.truncate_outbox(last - 1).unwrap();
    assert!(
        garbage_blobs(&store, later).is_empty(),
        "held: its own record waits"
    );
    store.truncate_outbox(last).unwrap();
    assert_eq!(garbage_blobs(&store, later), blobs(&first));

    // A store opened without the journal ships nothing: its garbage does
    // not wait, and the outbox left is dropped (a checkpoint covers it).
    overwrite(&store, "c");
    drop(store);
    let store = MetaStore::open(&path).unwrap();
    assert!(store.outbox(usize::MAX).unwrap().records.is_empty());
    assert_eq!(garbage_blobs(&store, later).len(), 6);
    assert!(store.journal_state().unwrap().checkpoint_needed);
}

/// A store with a journal on the backends that runs without it: that
/// journal is stale, so garbage made meanwhile waits for the next complete
/// checkpoint (a recovery from the stale journal would name its blobs).
#[test]
fn garbage_of_a_run_without_the_journal_waits_for_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let (store, first) = journaled_with_one_version(&path);
    let seq = store.outbox(usize::MAX).unwrap().records.last().unwrap().0;
    store.complete_checkpoint(1, seq).unwrap();
    drop(store);

    let store = MetaStore::open(&path).unwrap();
    overwrite(&store, "b");
    let later = 1 << 40;
    assert!(
        garbage_blobs(&store, later).is_empty(),
        "held: the journal is stale"
    );
    drop(store);

    let store = MetaStore::open_with(&path, true).unwrap();
    assert!(store.journal_state().unwrap().checkpoint_needed);
    assert!(garbage_blobs(&store, later).is_empty());
    store.complete_checkpoint(2, seq).unwrap();
    assert_eq!(garbage_blobs(&store, later), blobs(&first));
}
