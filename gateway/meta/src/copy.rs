//! A whole store copied from one engine to another (`shardgate meta
//! copy`): redb to PostgreSQL when a deployment grows to several gateways,
//! and back.
//!
//! Why rows, not records: every engine holds the same tables of bytes
//! ([`crate::kv`]), so a copy moves each row as it is, in key order, and
//! the result is the same store whichever way it goes: sequence counters,
//! intents, garbage, the repair queue, job cursors and the journal's
//! bookkeeping included. Two tables stay behind: the leases and the
//! gateways' rows describe processes running on the source, and none runs
//! on the copy yet.
//!
//! How a copy is trusted:
//! - The source is read in one snapshot, so the copy is one moment of it,
//!   and no gateway may be serving from it ([`hold_source`]; a redb file
//!   is locked by the gateway that has it open).
//! - The destination must be empty. While the copy runs it holds the lease
//!   [`COPY_LEASE`], which no gateway can join past
//!   ([`crate::MetaError::CopyUnfinished`]): a copy that stops half-way is
//!   never served, and the next copy into it starts over.
//! - Each table's rows are counted and hashed (blake3, over every key and
//!   value with their lengths) as they are read from the source, and again
//!   from the destination once written: the copy is finished (the lease
//!   given up) only when both agree.
//!
//! Memory stays bounded whatever the store's size: rows move in batches of
//! at most [`BATCH_ROWS`] rows or [`BATCH_BYTES`] bytes, one write
//! transaction each.

use std::ops::{Bound, ControlFlow};

use crate::error::{MetaError, Result};
use crate::kv::{self, ALL_KEYS, Engine, KvRead, KvReadExt as _, KvWrite, Table, tables as t};
use crate::store::{LeaseRecord, decode, encode};

/// The lease a destination holds while a copy into it runs: no gateway
/// joins a store that holds it, expired or not (the copy is unfinished).
pub const COPY_LEASE: &str = "meta-copy";
/// The lease a source on a shared engine holds while a copy from it runs:
/// no gateway joins it meanwhile (its writes would miss the copy). It
/// lapses by itself if the copy dies.
pub const SOURCE_LEASE: &str = "meta-copy-source";
/// Both leases are renewed by every batch for this long: a second copy
/// may take over an unfinished destination only once it lapsed.
pub const COPY_TERM_MS: u64 = 120_000;

/// At most this many rows per write transaction.
pub const BATCH_ROWS: usize = 1000;
/// At most about this many bytes of keys and values per write transaction.
pub const BATCH_BYTES: usize = 4 << 20;

/// The tables a copy moves: all but the leases and the gateways' rows.
pub fn copied_tables() -> impl Iterator<Item = Table> {
    t::ALL
        .iter()
        .copied()
        .filter(|table| *table != t::LEASES && *table != t::GATEWAYS)
}

/// What was read of a store: rows per table, and one digest of them all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreDigest {
    /// Rows of each copied table, in [`copied_tables`]' order.
    pub tables: Vec<(&'static str, u64)>,
    digest: [u8; 32],
}

impl StoreDigest {
    /// Rows in every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, n)| n).sum()
    }

    /// The digest, as hex.
    pub fn hex(&self) -> String {
        hex::encode(self.digest)
    }

    /// The tables whose counts differ between `self` and `other`, with
    /// both counts.
    pub fn count_differences(&self, other: &StoreDigest) -> Vec<String> {
        self.tables
            .iter()
            .zip(&other.tables)
            .filter(|(a, b)| a != b)
            .map(|((name, a), (_, b))| format!("{name}: {a} rows, {b} in the copy"))
            .collect()
    }
}

/// Counts and hashes rows, table by table.
struct Digester {
    hasher: blake3::Hasher,
    tables: Vec<(&'static str, u64)>,
}

impl Digester {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            tables: Vec::new(),
        }
    }

    fn table(&mut self, table: Table) {
        self.hasher.update(&(table.name.len() as u64).to_le_bytes());
        self.hasher.update(table.name.as_bytes());
        self.tables.push((table.name, 0));
    }

    fn row(&mut self, key: &[u8], value: &[u8]) {
        self.hasher.update(&(key.len() as u64).to_le_bytes());
        self.hasher.update(key);
        self.hasher.update(&(value.len() as u64).to_le_bytes());
        self.hasher.update(value);
        if let Some((_, n)) = self.tables.last_mut() {
            *n += 1;
        }
    }

    fn finish(self) -> StoreDigest {
        StoreDigest {
            tables: self.tables,
            digest: *self.hasher.finalize().as_bytes(),
        }
    }
}

/// Rows as they are read: key and value.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Calls `batch` with the rows of `table` in key order, at most
/// [`BATCH_ROWS`] rows or about [`BATCH_BYTES`] bytes at a time.
fn batches(kv: &dyn KvRead, table: Table, batch: &mut dyn FnMut(Rows) -> Result<()>) -> Result<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let lower = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Unbounded,
        };
        let mut rows = Vec::new();
        let mut bytes = 0;
        kv.scan(table, (lower, Bound::Unbounded), false, &mut |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            bytes += k.len() + v.len();
            Ok(match rows.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            })
        })?;
        let Some((last, _)) = rows.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        let full = rows.len() >= BATCH_ROWS || bytes >= BATCH_BYTES;
        batch(rows)?;
        if !full {
            return Ok(());
        }
    }
}

fn live_in(kv: &dyn KvRead, now_unix_ms: u64) -> Result<Vec<String>> {
    let mut owners = Vec::new();
    kv.scan(t::GATEWAYS, ALL_KEYS, false, &mut |k, _| {
        owners.push(String::from_utf8_lossy(k).into_owned());
        Ok(ControlFlow::Continue(()))
    })?;
    let mut live = Vec::new();
    for owner in owners {
        if crate::members::member_live(kv, &owner, now_unix_ms)? {
            live.push(owner);
        }
    }
    Ok(live)
}

/// Whether a copy into this store started and did not finish, or one
/// from it runs now: no gateway may join it.
pub fn refuses_gateways(kv: &dyn KvRead, now_unix_ms: u64) -> Result<bool> {
    if unfinished(kv)? {
        return Ok(true);
    }
    Ok(match kv.get(t::LEASES, SOURCE_LEASE.as_bytes())? {
        Some(v) => decode::<LeaseRecord>("lease", &v)?.until_unix_ms > now_unix_ms,
        None => false,
    })
}

/// Whether a copy into this store started and did not finish.
pub fn unfinished(kv: &dyn KvRead) -> Result<bool> {
    Ok(kv.get(t::LEASES, COPY_LEASE.as_bytes())?.is_some())
}

/// Renews `lease` for the copy `token` until `now + COPY_TERM_MS`, inside
/// a write transaction; `CopyRefused` when another copy holds it.
fn renew(kv: &mut dyn KvWrite, lease: &str, token: &str, now_unix_ms: u64) -> Result<()> {
    let held = match kv.get(t::LEASES, lease.as_bytes())? {
        Some(v) => Some(decode::<LeaseRecord>("lease", &v)?).filter(|l| l.owner == token),
        None => None,
    };
    let Some(held) = held else {
        return Err(MetaError::CopyRefused(
            "another copy took this store over meanwhile".into(),
        ));
    };
    // A source's lease that lapsed let gateways join it: what they wrote
    // since may be missing from the copy.
    if lease == SOURCE_LEASE && held.until_unix_ms <= now_unix_ms {
        return Err(MetaError::CopyRefused(
            "the copy's hold on the source lapsed (gateways may have written to it since): copy again"
                .into(),
        ));
    }
    put_lease(kv, lease, token, now_unix_ms)
}

/// Renews `lease` on `engine` for the copy `token` (a background renewal
/// between batches, and a check: `CopyRefused` when the lease was taken
/// over, or a source's lapsed).
pub fn keep(engine: &dyn Engine, lease: &str, token: &str) -> Result<()> {
    kv::write(engine, |kv| renew(kv, lease, token, crate::now_unix_ms()))
}

/// How long after a gateway's last heartbeat it still counts as possibly
/// running when a copy is to read its store: three member terms.
pub const RECENT_MS: u64 = 90_000;

fn put_lease(kv: &mut dyn KvWrite, lease: &str, token: &str, now_unix_ms: u64) -> Result<()> {
    let value = encode(&LeaseRecord {
        owner: token.to_string(),
        until_unix_ms: now_unix_ms.saturating_add(COPY_TERM_MS),
    })?;
    kv.put(t::LEASES, lease.as_bytes(), &value)
}

/// A new copy's token.
pub fn new_token() -> String {
    format!("copy-{:016x}", rand::random::<u64>())
}

/// Keeps gateways off `from`, a store on an engine several gateways share,
/// for the copy `token`: refused (`CopyRefused`) when a gateway serves from
/// it, or when it is itself an unfinished copy (it would copy a part);
/// else [`SOURCE_LEASE`] is taken, in the same transaction, and kept by
/// [`copy`]. [`release_source`] gives it up.
pub fn hold_source(from: &dyn Engine, token: &str, now_unix_ms: u64) -> Result<()> {
    kv::write(from, |kv| {
        check_source(&*kv, now_unix_ms)?;
        // A gateway cut off from the database for longer than its term
        // may still be running: refused while its last heartbeat is
        // recent; older rows go, so it must join again (and is refused
        // while the copy holds the source).
        for member in crate::members::members_in(&*kv)? {
            let age = now_unix_ms.saturating_sub(member.heartbeat_unix_ms);
            if age < RECENT_MS {
                return Err(MetaError::CopyRefused(format!(
                    "{} beat {} s ago: stop every gateway first, or wait until {} s have passed",
                    member.describe(),
                    age / 1000,
                    RECENT_MS / 1000
                )));
            }
            kv.remove(t::GATEWAYS, member.owner.as_bytes())?;
        }
        if let Some(v) = kv.get(t::LEASES, SOURCE_LEASE.as_bytes())? {
            let other: LeaseRecord = decode("lease", &v)?;
            if other.until_unix_ms > now_unix_ms {
                return Err(MetaError::CopyRefused(format!(
                    "another copy ({}) is reading the source",
                    other.owner
                )));
            }
        }
        put_lease(kv, SOURCE_LEASE, token, now_unix_ms)
    })
}

/// Checks, in the snapshot a copy reads, that the copy `token` still holds
/// the source and no gateway serves from it: what the snapshot holds is
/// then all there is.
pub fn check_snapshot(kv: &dyn KvRead, token: &str, now_unix_ms: u64) -> Result<()> {
    let held = match kv.get(t::LEASES, SOURCE_LEASE.as_bytes())? {
        Some(v) => {
            let l: LeaseRecord = decode("lease", &v)?;
            l.owner == token && l.until_unix_ms > now_unix_ms
        }
        None => false,
    };
    if !held {
        return Err(MetaError::CopyRefused(
            "the copy's hold on the source lapsed before it was read: copy again".into(),
        ));
    }
    check_source(kv, now_unix_ms)
}

/// What refuses a store as a source: gateways serving from it, or an
/// unfinished copy into it.
pub fn check_source(kv: &dyn KvRead, now_unix_ms: u64) -> Result<()> {
    check_source_unfinished(kv)?;
    let live = live_in(kv, now_unix_ms)?;
    if !live.is_empty() {
        return Err(MetaError::CopyRefused(format!(
            "gateways {} are serving from the source: stop every gateway first (a copy would miss their writes)",
            live.join(", ")
        )));
    }
    Ok(())
}

/// Refuses (`CopyRefused`) a source that is itself an unfinished copy
/// (a redb file: its lock keeps gateways out).
pub fn check_source_unfinished(kv: &dyn KvRead) -> Result<()> {
    match unfinished(kv)? {
        true => Err(MetaError::CopyRefused(
            "the source is itself a copy that did not finish: copy into it again first".into(),
        )),
        false => Ok(()),
    }
}

/// Gives [`SOURCE_LEASE`] up, if the copy `token` still holds it.
pub fn release_source(from: &dyn Engine, token: &str) -> Result<()> {
    kv::write(from, |kv| {
        if let Some(v) = kv.get(t::LEASES, SOURCE_LEASE.as_bytes())?
            && decode::<LeaseRecord>("lease", &v)?.owner == token
        {
            kv.remove(t::LEASES, SOURCE_LEASE.as_bytes())?;
        }
        Ok(())
    })
}

/// Makes `to` ready to receive the copy `token`, in one transaction:
/// refused (`CopyRefused`) when a gateway serves from it, when another
/// copy into it runs (its lease has not lapsed; not asked when
/// `exclusive`: the caller has the destination to itself, as a redb
/// file's lock gives it), or when it holds rows
/// that are not those of an unfinished copy; else [`COPY_LEASE`] is taken,
/// so no gateway joins it until [`finish`]. An unfinished copy's rows are
/// then removed.
pub fn prepare_destination(
    to: &dyn Engine,
    token: &str,
    exclusive: bool,
    now_unix_ms: u64,
) -> Result<()> {
    let restart = kv::write(to, |kv| {
        let live = live_in(&*kv, now_unix_ms)?;
        if let Some(owner) = live.first() {
            return Err(MetaError::CopyRefused(format!(
                "gateway {owner} is serving from the destination"
            )));
        }
        let restart = match kv.get(t::LEASES, COPY_LEASE.as_bytes())? {
            Some(v) => {
                let other: LeaseRecord = decode("lease", &v)?;
                if !exclusive && other.owner != token && other.until_unix_ms > now_unix_ms {
                    return Err(MetaError::CopyRefused(format!(
                        "another copy ({}) is writing the destination; its hold lapses in {} s if it died",
                        other.owner,
                        (other.until_unix_ms - now_unix_ms).div_ceil(1000)
                    )));
                }
                true
            }
            None => false,
        };
        if !restart {
            let mut filled = Vec::new();
            for table in copied_tables() {
                let rows = kv.len(table)?;
                if rows > 0 {
                    filled.push(format!("{}: {rows} rows", table.name));
                }
            }
            if !filled.is_empty() {
                return Err(MetaError::CopyRefused(format!(
                    "the destination is not empty ({}): a copy goes into a new store",
                    filled.join(", ")
                )));
            }
        }
        put_lease(kv, COPY_LEASE, token, now_unix_ms)?;
        Ok(restart)
    })?;
    if restart {
        for table in copied_tables() {
            clear(to, table, token)?;
        }
    }
    Ok(())
}

/// Removes every row of `table`, a batch per transaction, for the copy
/// `token`.
fn clear(engine: &dyn Engine, table: Table, token: &str) -> Result<()> {
    loop {
        let removed = kv::write(engine, |kv| {
            renew(kv, COPY_LEASE, token, crate::now_unix_ms())?;
            let keys: Vec<Vec<u8>> = kv
                .rows(table, ALL_KEYS, false, BATCH_ROWS)?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            for key in &keys {
                kv.remove(table, key)?;
            }
            Ok(keys.len())
        })?;
        if removed < BATCH_ROWS {
            return Ok(());
        }
    }
}

/// Copies every row of `from` (read in one transaction: pass a snapshot)
/// into `to`, prepared by [`prepare_destination`] for the copy `token`;
/// the digest of what was read. Each batch renews the copy's lease on
/// `to` (refused if another copy took it over) and, with `source`, the
/// [`SOURCE_LEASE`] there. `progress` hears of each batch: the table, and
/// rows copied and in all so far.
pub fn copy(
    from: &dyn KvRead,
    source: Option<&dyn Engine>,
    to: &dyn Engine,
    token: &str,
    progress: &mut dyn FnMut(&'static str, u64, u64),
) -> Result<StoreDigest> {
    let mut counts = Vec::new();
    for table in copied_tables() {
        counts.push(from.len(table)?);
    }
    let total = counts.iter().sum();
    let mut digester = Digester::new();
    let mut done = 0;
    for (table, count) in copied_tables().zip(counts) {
        digester.table(table);
        progress(table.name, done, total);
        let before = done;
        batches(from, table, &mut |rows| {
            for (k, v) in &rows {
                digester.row(k, v);
            }
            if let Some(source) = source {
                kv::write(source, |kv| {
                    renew(kv, SOURCE_LEASE, token, crate::now_unix_ms())
                })?;
            }
            kv::write(to, |kv: &mut dyn KvWrite| {
                renew(kv, COPY_LEASE, token, crate::now_unix_ms())?;
                for (k, v) in &rows {
                    kv.put(table, k, v)?;
                }
                Ok(())
            })?;
            done += rows.len() as u64;
            progress(table.name, done, total.max(done));
            Ok(())
        })?;
        // The rows walked are the rows the snapshot counts: a walk that
        // skipped some would otherwise verify, the destination being
        // hashed by the same walk.
        if done - before != count {
            return Err(MetaError::CopyRefused(format!(
                "table {} holds {count} rows in the source, {} were read",
                table.name,
                done - before
            )));
        }
    }
    Ok(digester.finish())
}

/// Counts and hashes every copied table of `kv`, as [`copy`] does what it
/// reads.
pub fn digest(kv: &dyn KvRead) -> Result<StoreDigest> {
    let mut digester = Digester::new();
    for table in copied_tables() {
        digester.table(table);
        batches(kv, table, &mut |rows| {
            for (k, v) in &rows {
                digester.row(k, v);
            }
            Ok(())
        })?;
    }
    Ok(digester.finish())
}

/// Ends the copy `token` into `to` that `expected` describes: checks that
/// `to` holds exactly the rows copied (`CopyRefused` naming the
/// differences when not), then gives [`COPY_LEASE`] up, so gateways may
/// join it.
pub fn finish(to: &dyn Engine, token: &str, expected: &StoreDigest) -> Result<StoreDigest> {
    let snapshot = to.snapshot()?;
    let found = digest(&*snapshot)?;
    drop(snapshot);
    if found != *expected {
        let mut differences = expected.count_differences(&found);
        if differences.is_empty() {
            differences.push(format!(
                "the same counts, but digest {} of the source against {} of the copy",
                expected.hex(),
                found.hex()
            ));
        }
        return Err(MetaError::CopyRefused(format!(
            "the copy does not match its source: {}",
            differences.join("; ")
        )));
    }
    kv::write(to, |kv| {
        renew(kv, COPY_LEASE, token, crate::now_unix_ms())?;
        kv.remove(t::LEASES, COPY_LEASE.as_bytes())?;
        Ok(())
    })?;
    Ok(found)
}
