//! Gateways that share one store (issue 23): who is alive, what each must
//! agree on, which of them does a piece of background work, and what
//! changed that the others keep in memory.
//!
//! - **Members.** Every gateway joins under its own lease,
//!   `gateway/<owner>`, renewed by its heartbeat. A gateway whose lease ran
//!   out is gone: its open intents become garbage ([`MetaStore::sweep_intents`]
//!   asks this), its row is dropped by the next gateway to join. Joining
//!   compares what every gateway must share (backends, policies,
//!   recipients: a digest each, [`MemberRecord::shared`]) with every live
//!   member's, in the same transaction as the claim, so two gateways
//!   starting at once with different configurations cannot both start.
//! - **Job leases** ([`LeaseKeeper`]): a job runs where its lease is held;
//!   a killed gateway's leases run out and another gateway's job takes
//!   over at its next look.
//! - **Changes** ([`MetaStore::changes`]): counters bumped in the same
//!   transaction as a change of what gateways keep in memory (bucket
//!   records for the access check, users for signatures, job controls such
//!   as pauses and drains). A gateway polls them and reloads what moved.
//!
//! Expiry is judged by each gateway's clock: clocks further apart than a
//! lease's term could let a gateway take a live lease. Nothing is lost
//! then: a write whose intent was swept fails at its commit
//! (`IntentGone`); a job's manifest swaps are compare-and-swaps on the
//! row's generation, and its own state (cursors) is written through a
//! store fenced by its lease ([`MetaStore::fenced_by`]): the work is only
//! done twice.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::kv::{self, ALL_KEYS, KvRead, KvReadExt, KvWrite, tables as t, u64_bytes};
use crate::store::{LeaseRecord, decode, encode};
use crate::{MetaError, MetaStore, Result};

/// The lease a gateway is alive under.
pub fn member_lease(owner: &str) -> String {
    format!("gateway/{owner}")
}

/// A gateway sharing the store, as it last said (record format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Its owner id ([`MetaStore::owner`]).
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// The release it runs.
    pub version: String,
    pub started_unix_ms: u64,
    /// Where its S3 endpoint and admin API listen (empty: not said).
    pub s3_endpoint: String,
    pub admin_endpoint: String,
    /// What every gateway on one store must share: an item (`backend
    /// site-1`, `policy default`, `recipients`) and its digest.
    pub shared: BTreeMap<String, String>,
    /// Its jobs as its admin API shows them (JSON), at its last heartbeat.
    pub jobs: Vec<u8>,
    pub heartbeat_unix_ms: u64,
}

/// A member and whether its lease is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub record: MemberRecord,
    /// Its lease is unexpired (by this gateway's clock).
    pub live: bool,
}

impl MemberRecord {
    /// Says who it is, for a message.
    pub fn describe(&self) -> String {
        format!(
            "gateway {} (host {}, pid {}, S3 at {})",
            self.owner,
            self.host,
            self.pid,
            if self.s3_endpoint.is_empty() {
                "?"
            } else {
                &self.s3_endpoint
            }
        )
    }
}

/// The items where `ours` and `theirs` differ, in words.
pub fn differences(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let items: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    items
        .into_iter()
        .filter_map(|item| match (ours.get(item), theirs.get(item)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(_), Some(_)) => Some(format!("{item} differs")),
            (Some(_), None) => Some(format!("{item} is configured here only")),
            (None, _) => Some(format!("{item} is configured there only")),
        })
        .collect()
}

/// Counters of changes that gateways keep in memory ([`MetaStore::changes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Bucket records (owner, policy, ACL, public access block...).
    pub buckets: u64,
    /// Users and their keys.
    pub users: u64,
    /// Job state: pauses, drains, cursors.
    pub jobs: u64,
}

pub(crate) const BUCKET_CHANGES: &str = "changes/buckets";
pub(crate) const USER_CHANGES: &str = "changes/users";
pub(crate) const JOB_CHANGES: &str = "changes/jobs";

/// Counts a change in the transaction that makes it.
pub(crate) fn bump(kv: &mut dyn KvWrite, counter: &str) -> Result<()> {
    let now = kv.get_u64(t::COUNTERS, counter.as_bytes())?.unwrap_or(0);
    kv.put(t::COUNTERS, counter.as_bytes(), &u64_bytes(now + 1))
}

/// Whether `owner`'s member lease is in force at `now`.
pub(crate) fn member_live(kv: &dyn KvRead, owner: &str, now_unix_ms: u64) -> Result<bool> {
    Ok(match kv.get(t::LEASES, member_lease(owner).as_bytes())? {
        Some(v) => {
            let lease: LeaseRecord = decode("lease", &v)?;
            *lease.owner == *owner && lease.until_unix_ms > now_unix_ms
        }
        None => false,
    })
}

fn lease_value(owner: &str, until_unix_ms: u64) -> Result<Vec<u8>> {
    encode(&LeaseRecord {
        owner: owner.to_string(),
        until_unix_ms,
    })
}

impl MetaStore {
    /// Joins the gateways sharing this store: drops the rows of members
    /// whose lease ran out, refuses (`Mismatch`) when a live member shares
    /// other backends, policies or recipients, then takes this gateway's
    /// member lease until `now + term_ms` and writes its row; all in one
    /// transaction.
    pub fn join(&self, record: &MemberRecord, now_unix_ms: u64, term_ms: u64) -> Result<()> {
        let (owner, record, value, lease) = self.stamped(record, now_unix_ms, term_ms)?;
        kv::write_apart(self.lease_engine(), |kv| {
            check_against_live(kv, &record, now_unix_ms)?;
            kv.put(t::LEASES, member_lease(&owner).as_bytes(), &lease)?;
            kv.put(t::GATEWAYS, owner.as_bytes(), &value)
        })
    }

    /// Renews this gateway's member lease and row (`jobs`: its jobs now).
    /// A row dropped meanwhile (this gateway was taken for gone) is written
    /// again, as a join is: refused (`Mismatch`) if a gateway configured
    /// otherwise joined meanwhile. Its swept writes failed at their
    /// commit; nothing else is lost.
    pub fn heartbeat(&self, record: &MemberRecord, now_unix_ms: u64, term_ms: u64) -> Result<()> {
        let (owner, record, value, lease) = self.stamped(record, now_unix_ms, term_ms)?;
        kv::write_apart(self.lease_engine(), |kv| {
            if kv.get(t::GATEWAYS, owner.as_bytes())?.is_none() {
                check_against_live(kv, &record, now_unix_ms)?;
            }
            kv.put(t::LEASES, member_lease(&owner).as_bytes(), &lease)?;
            kv.put(t::GATEWAYS, owner.as_bytes(), &value)
        })
    }

    /// `record` as this gateway's at `now`, encoded, with its member
    /// lease until `now + term_ms`.
    fn stamped(
        &self,
        record: &MemberRecord,
        now_unix_ms: u64,
        term_ms: u64,
    ) -> Result<(String, MemberRecord, Vec<u8>, Vec<u8>)> {
        let owner = self.owner().to_string();
        let mut record = record.clone();
        record.owner = owner.clone();
        record.heartbeat_unix_ms = now_unix_ms;
        let value = encode(&record)?;
        let lease = lease_value(&owner, now_unix_ms.saturating_add(term_ms))?;
        Ok((owner, record, value, lease))
    }

    /// Leaves: this gateway's row and member lease go.
    pub fn leave(&self) -> Result<()> {
        let owner = self.owner().to_string();
        kv::write_apart(self.lease_engine(), |kv| {
            kv.remove(t::GATEWAYS, owner.as_bytes())?;
            kv.remove(t::LEASES, member_lease(&owner).as_bytes())?;
            Ok(())
        })
    }

    /// Every gateway that joined and did not leave, by owner, and whether
    /// it is alive at `now`.
    pub fn members(&self, now_unix_ms: u64) -> Result<Vec<Member>> {
        kv::read(self.lease_engine(), |kv| {
            members_in(kv)?
                .into_iter()
                .map(|record| {
                    let live = member_live(kv, &record.owner, now_unix_ms)?;
                    Ok(Member { record, live })
                })
                .collect()
        })
    }

    /// Who holds lease `name`, and for how long more, if anyone does at
    /// `now`.
    pub fn lease_holder(&self, name: &str, now_unix_ms: u64) -> Result<Option<(String, u64)>> {
        kv::read(self.lease_engine(), |kv| {
            Ok(match kv.get(t::LEASES, name.as_bytes())? {
                Some(v) => {
                    let l: LeaseRecord = decode("lease", &v)?;
                    (l.until_unix_ms > now_unix_ms)
                        .then(|| (l.owner, l.until_unix_ms - now_unix_ms))
                }
                None => None,
            })
        })
    }

    /// The change counters ([`Changes`]).
    pub fn changes(&self) -> Result<Changes> {
        kv::read(self.engine(), |kv| {
            let get = |name: &str| -> Result<u64> {
                Ok(kv.get_u64(t::COUNTERS, name.as_bytes())?.unwrap_or(0))
            };
            Ok(Changes {
                buckets: get(BUCKET_CHANGES)?,
                users: get(USER_CHANGES)?,
                jobs: get(JOB_CHANGES)?,
            })
        })
    }
}

/// Refuses `record` (`Mismatch`) when a live member shares other items;
/// drops the rows of members that are gone.
fn check_against_live(kv: &mut dyn KvWrite, record: &MemberRecord, now_unix_ms: u64) -> Result<()> {
    if crate::copy::refuses_gateways(&*kv, now_unix_ms)? {
        return Err(MetaError::CopyUnfinished);
    }
    for other in members_in(&*kv)? {
        if other.owner == record.owner {
            continue;
        }
        if !member_live(&*kv, &other.owner, now_unix_ms)? {
            kv.remove(t::GATEWAYS, other.owner.as_bytes())?;
            continue;
        }
        let found = differences(&record.shared, &other.shared);
        if !found.is_empty() {
            return Err(MetaError::Mismatch {
                member: other.describe(),
                differences: found,
            });
        }
    }
    Ok(())
}

pub(crate) fn members_in(kv: &dyn KvRead) -> Result<Vec<MemberRecord>> {
    let mut out = Vec::new();
    kv.scan(t::GATEWAYS, ALL_KEYS, false, &mut |_, v| {
        out.push(decode::<MemberRecord>("gateway", v)?);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// The job leases this gateway holds: taken when a job starts work,
/// renewed in the background ([`LeaseKeeper::renew_all`], every third of
/// the term) while held, given up when the job stops or the gateway
/// does.
pub struct LeaseKeeper {
    meta: MetaStore,
    term_ms: u64,
    /// Held leases and until when (this gateway's clock).
    held: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("term_ms", &self.term_ms)
            .finish_non_exhaustive()
    }
}

/// Whether a lease was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// This gateway holds it.
    Held,
    /// Another live gateway does, for this long more.
    Elsewhere { owner: String, left_ms: u64 },
}

impl LeaseKeeper {
    pub fn new(meta: MetaStore, term_ms: u64) -> Self {
        Self {
            meta,
            term_ms,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// How long a lease lasts without a renewal.
    pub fn term_ms(&self) -> u64 {
        self.term_ms
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes lease `name`, or keeps it: a lease held with more than two
    /// thirds of its term left is not written again (the renewals keep
    /// it), so a job may ask before every step.
    pub fn hold(&self, name: &str) -> Result<Hold> {
        let now = crate::now_unix_ms();
        if self
            .held()
            .get(name)
            .is_some_and(|until| *until > now + self.term_ms * 2 / 3)
        {
            return Ok(Hold::Held);
        }
        match self.meta.claim_lease(name, now, self.term_ms) {
            Ok(()) => {
                self.held().insert(name.to_string(), now + self.term_ms);
                Ok(Hold::Held)
            }
            Err(MetaError::Leased { owner, left_ms, .. }) => {
                self.held().remove(name);
                Ok(Hold::Elsewhere { owner, left_ms })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this gateway holds `name`, unexpired by its clock.
    pub fn holds(&self, name: &str) -> bool {
        let now = crate::now_unix_ms();
        self.held().get(name).is_some_and(|until| *until > now)
    }

    /// Renews every held lease; those another gateway took are dropped.
    /// Returns the ones that failed, and why.
    pub fn renew_all(&self) -> Vec<(String, MetaError)> {
        let names: Vec<String> = self.held().keys().cloned().collect();
        let mut failed = Vec::new();
        for name in names {
            let now = crate::now_unix_ms();
            match self.meta.claim_lease(&name, now, self.term_ms) {
                Ok(()) => {
                    if let Some(until) = self.held().get_mut(&name) {
                        *until = now + self.term_ms;
                    }
                }
                Err(e) => {
                    if matches!(e, MetaError::Leased { .. }) {
                        self.held().remove(&name);
                    }
                    failed.push((name, e));
                }
            }
        }
        failed
    }

    /// Gives `name` up (another gateway may take it at once).
    pub fn let_go(&self, name: &str) -> Result<()> {
        if self.held().remove(name).is_some() {
            self.meta.release_lease(name)?;
        }
        Ok(())
    }

    /// Gives every held lease up (the gateway stops).
    pub fn let_go_all(&self) {
        let names: Vec<String> = std::mem::take(&mut *self.held()).into_keys().collect();
        for name in names {
            if let Err(e) = self.meta.release_lease(&name) {
                tracing::warn!(lease = %name, error = %e, "lease not given up: it runs out by itself");
            }
        }
    }
}
