//! Measures the three candidate metadata stores on the gateway's workload,
//! side by side in one run, on the same disk:
//!
//! - durable commits: one object version per transaction, fsync'd (a PUT);
//! - bulk load: 1,000,000 keys in transactions of 10,000;
//! - listing: every key of one bucket in pages of 1,000 in key order, each
//!   page a fresh range scan after the previous page's last key (as a
//!   ListObjectsV2 continuation token does);
//! - point gets: 100,000 random keys;
//! - size on disk.
//!
//! Keys are `bucket/dirNNN/objNNNNNNN`, values 400 incompressible bytes (a
//! small manifest).
//!
//! ```sh
//! cargo run --release --manifest-path scripts/meta-store-bench/Cargo.toml [dir]
//! ```
#![allow(clippy::unwrap_used)]

use std::ops::Bound;

use redb::ReadableDatabase;
use std::path::Path;
use std::time::Instant;

const KEYS: u64 = 1_000_000;
const BATCH: u64 = 10_000;
const PAGE: usize = 1_000;
const DURABLE_COMMITS: u64 = 2_000;
const GETS: u64 = 100_000;

/// 400 incompressible bytes, different per key (manifests are mostly
/// digests and wrapped keys).
fn value(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..50)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn key(i: u64) -> Vec<u8> {
    format!("bucket/dir{:03}/obj{:07}", i % 1000, i).into_bytes()
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

trait Store {
    fn name(&self) -> &'static str;
    fn put_durable(&self, k: &[u8], v: &[u8]);
    fn put_batch(&self, kvs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>);
    /// Up to `limit` keys in (after, end), in order.
    fn page(&self, after: Option<&[u8]>, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>>;
    fn get(&self, k: &[u8]) -> bool;
}

struct Redb(redb::Database);
const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("objects");

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb 4.5"
    }
    fn put_durable(&self, k: &[u8], v: &[u8]) {
        let txn = self.0.begin_write().unwrap();
        txn.open_table(TABLE).unwrap().insert(k, v).unwrap();
        txn.commit().unwrap();
    }
    fn put_batch(&self, kvs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        let txn = self.0.begin_write().unwrap();
        {
            let mut t = txn.open_table(TABLE).unwrap();
            for (k, v) in kvs {
                t.insert(k.as_slice(), v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn page(&self, after: Option<&[u8]>, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let txn = self.0.begin_read().unwrap();
        let t = txn.open_table(TABLE).unwrap();
        let lo = after.map_or(Bound::Included(start), Bound::Excluded);
        t.range::<&[u8]>((lo, Bound::Excluded(end)))
            .unwrap()
            .take(limit)
            .map(|r| r.unwrap().0.value().to_vec())
            .collect()
    }
    fn get(&self, k: &[u8]) -> bool {
        let txn = self.0.begin_read().unwrap();
        txn.open_table(TABLE).unwrap().get(k).unwrap().is_some()
    }
}

struct Fjall(fjall::Database, fjall::Keyspace);

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3.1"
    }
    fn put_durable(&self, k: &[u8], v: &[u8]) {
        let mut b = self.0.batch().durability(Some(fjall::PersistMode::SyncAll));
        b.insert(&self.1, k.to_vec(), v.to_vec());
        b.commit().unwrap();
    }
    fn put_batch(&self, kvs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        let mut b = self.0.batch().durability(Some(fjall::PersistMode::SyncAll));
        for (k, v) in kvs {
            b.insert(&self.1, k, v);
        }
        b.commit().unwrap();
    }
    fn page(&self, after: Option<&[u8]>, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let lo = after.map_or(Bound::Included(start.to_vec()), |a| Bound::Excluded(a.to_vec()));
        self.1
            .range::<Vec<u8>, _>((lo, Bound::Excluded(end.to_vec())))
            .take(limit)
            .map(|g| g.key().unwrap().to_vec())
            .collect()
    }
    fn get(&self, k: &[u8]) -> bool {
        self.1.get(k).unwrap().is_some()
    }
}

struct Sqlite(rusqlite::Connection);

impl Store for Sqlite {
    fn name(&self) -> &'static str {
        "SQLite 3 (rusqlite 0.41, WAL, synchronous=FULL)"
    }
    fn put_durable(&self, k: &[u8], v: &[u8]) {
        self.0.prepare_cached("INSERT OR REPLACE INTO objects VALUES (?1, ?2)").unwrap().execute((k, v)).unwrap();
    }
    fn put_batch(&self, kvs: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) {
        self.0.execute_batch("BEGIN").unwrap();
        {
            let mut st = self.0.prepare_cached("INSERT OR REPLACE INTO objects VALUES (?1, ?2)").unwrap();
            for (k, v) in kvs {
                st.execute((k, v)).unwrap();
            }
        }
        self.0.execute_batch("COMMIT").unwrap();
    }
    fn page(&self, after: Option<&[u8]>, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        let (sql, lo) = match after {
            Some(a) => ("SELECT k FROM objects WHERE k > ?1 AND k < ?2 ORDER BY k LIMIT ?3", a),
            None => ("SELECT k FROM objects WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3", start),
        };
        let mut st = self.0.prepare_cached(sql).unwrap();
        st.query_map((lo, end, limit as i64), |r| r.get::<_, Vec<u8>>(0)).unwrap().map(Result::unwrap).collect()
    }
    fn get(&self, k: &[u8]) -> bool {
        let mut st = self.0.prepare_cached("SELECT 1 FROM objects WHERE k = ?1").unwrap();
        st.exists([k]).unwrap()
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() { dir_size(&e.path()) } else { m.len() }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn run(store: &dyn Store, dir: &Path) {
    let t = Instant::now();
    for i in 0..DURABLE_COMMITS {
        store.put_durable(format!("durable/obj{i:07}").as_bytes(), &value(i));
    }
    let durable = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for b in 0..KEYS / BATCH {
        let mut kvs = (b * BATCH..(b + 1) * BATCH).map(|i| (key(i), value(i)));
        store.put_batch(&mut kvs);
    }
    let load = t.elapsed().as_secs_f64();

    let (start, end) = (b"bucket/".to_vec(), prefix_end(b"bucket/"));
    let t = Instant::now();
    let mut after: Option<Vec<u8>> = None;
    let (mut pages, mut listed) = (0u64, 0u64);
    loop {
        let page = store.page(after.as_deref(), &start, &end, PAGE);
        if page.is_empty() {
            break;
        }
        pages += 1;
        listed += page.len() as u64;
        after = page.last().cloned();
    }
    let list = t.elapsed().as_secs_f64();
    assert_eq!(listed, KEYS);

    let t = Instant::now();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..GETS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert!(store.get(&key(x % KEYS)));
    }
    let gets = t.elapsed().as_secs_f64();

    println!(
        "| {} | {:.0} ({:.2} ms) | {:.1} s ({:.0} k keys/s) | {:.2} ms/page ({:.1} s for {pages} pages) | {:.1} µs | {} MiB |",
        store.name(),
        DURABLE_COMMITS as f64 / durable,
        durable * 1e3 / DURABLE_COMMITS as f64,
        load,
        KEYS as f64 / load / 1e3,
        list * 1e3 / pages as f64,
        list,
        gets * 1e6 / GETS as f64,
        dir_size(dir) >> 20,
    );
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| std::env::temp_dir().display().to_string());
    println!("| store | durable commits/s (latency) | load 1M keys | list in pages of 1000 | point get | size |");
    println!("|---|---|---|---|---|---|");
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let db = redb::Database::create(dir.path().join("meta.redb")).unwrap();
        run(&Redb(db), dir.path());
    }
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db.keyspace("objects", fjall::KeyspaceCreateOptions::default).unwrap();
        run(&Fjall(db, ks), dir.path());
    }
    {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let c = rusqlite::Connection::open(dir.path().join("meta.sqlite")).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE objects (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;",
        )
        .unwrap();
        run(&Sqlite(c), dir.path());
    }
}
