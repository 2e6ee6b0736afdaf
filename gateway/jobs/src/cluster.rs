//! Several gateways on one metadata store (issue 23): what keeps them one.
//!
//! - The job leases this gateway holds are renewed every third of their
//!   term ([`LEASE_TERM`]); a gateway killed stops renewing, and each of
//!   its jobs is taken over by another gateway's at its next checkpoint.
//! - This gateway's heartbeat renews its member lease and publishes its
//!   jobs, so that every gateway's admin API shows the jobs of all
//!   ([`Jobs::gateways`]).
//! - A poll of the store's change counters ([`shardgate_meta::Changes`])
//!   brings in what other gateways changed that this one keeps in memory:
//!   bucket records (the access check's cache), users (signature keys),
//!   pauses and drains.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shardgate_core::BackendId;
use shardgate_meta::{Changes, MemberRecord};
use shardgate_node::{GatewayError, blocking, now_ms};
use tracing::Instrument;

use crate::{JobStatus, Jobs, PAUSED, drain, rebalance};

/// How long a lease (a job's, a gateway's membership) lasts unrenewed.
pub const LEASE_TERM: Duration = Duration::from_secs(30);
/// How often leases are renewed and the heartbeat written.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often the change counters are read.
pub const CHANGES_POLL: Duration = Duration::from_secs(1);

/// A gateway sharing the store, as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayJobs {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub s3_endpoint: String,
    pub admin_endpoint: String,
    pub started_unix_ms: u64,
    pub heartbeat_unix_ms: u64,
    /// Its member lease is in force.
    pub live: bool,
    /// This gateway (whose jobs are shown as they are now).
    pub this: bool,
    pub jobs: Vec<JobStatus>,
}

impl Jobs {
    /// Renews the held job leases until the runtime stops.
    pub(crate) fn spawn_lease_renewals(self: &Arc<Self>) {
        let keeper = self.keeper.clone();
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let k = keeper.clone();
                    let failed = tokio::task::spawn_blocking(move || k.renew_all())
                        .await
                        .unwrap_or_default();
                    for (lease, e) in failed {
                        tracing::warn!(%lease, error = %e, "job lease not renewed");
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "lease_renewals")),
        );
    }

    /// Renews this gateway's membership (taken by
    /// [`shardgate_meta::MetaStore::join`] before it served) with its
    /// jobs, until the runtime stops or the task is aborted.
    pub fn spawn_heartbeat(self: &Arc<Self>, record: MemberRecord) -> tokio::task::JoinHandle<()> {
        let jobs = self.clone();
        tokio::spawn(
            async move {
                let mut first = true;
                loop {
                    // At once: the record the join wrote lacks the bound
                    // addresses and the jobs.
                    if !std::mem::take(&mut first) {
                        tokio::time::sleep(RENEW_EVERY).await;
                    }
                    let mut record = record.clone();
                    record.jobs = serde_json::to_vec(&jobs.list()).unwrap_or_default();
                    let meta = jobs.gw.meta().clone();
                    let term = LEASE_TERM.as_millis() as u64;
                    if let Err(e) = blocking(move || meta.heartbeat(&record, now_ms(), term)).await {
                        tracing::warn!(error = %e, "gateway heartbeat failed: other gateways take this one for gone if it keeps failing");
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "heartbeat")),
        )
    }

    /// Reads the change counters every [`CHANGES_POLL`] and reloads what
    /// moved, until the runtime stops.
    pub(crate) fn spawn_change_poll(self: &Arc<Self>) {
        let jobs = self.clone();
        tokio::spawn(
            async move {
                let mut seen: Option<Changes> = None;
                loop {
                    tokio::time::sleep(CHANGES_POLL).await;
                    let meta = jobs.gw.meta().clone();
                    let now = match blocking(move || meta.changes()).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(error = %e, "change counters not read");
                            continue;
                        }
                    };
                    jobs.gw.meta().observe_changes(&now);
                    let Some(before) = seen.replace(now) else {
                        continue;
                    };
                    if now.users != before.users
                        && let Err(e) = jobs.gw.refresh_users().await
                    {
                        tracing::warn!(error = %e, "users not reloaded");
                        seen = Some(before);
                    }
                    if now.jobs != before.jobs
                        && let Err(e) = jobs.reload_controls().await
                    {
                        tracing::warn!(error = %e, "job controls not reloaded");
                        seen = Some(before);
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "change_poll")),
        );
    }

    /// Applies the job controls recorded in the store: pauses, drains
    /// (a drain another gateway started keeps new fragments off its
    /// backend here too, and gets a task that takes it over should that
    /// gateway go; one cancelled elsewhere ends here), and a rebalance
    /// pass another gateway started.
    pub async fn reload_controls(self: &Arc<Self>) -> Result<(), GatewayError> {
        // The drains running before the store is read: one started here
        // meanwhile (claimed before its state is written) is not taken
        // for one cancelled elsewhere.
        let running = self.running_drains();
        let meta = self.gw.meta().clone();
        let (paused, drains, rebalancing) = blocking(move || {
            Ok((
                meta.job_state(PAUSED)?,
                meta.job_states_with_prefix(drain::PREFIX)?,
                meta.job_state(rebalance::JOB)?.is_some(),
            ))
        })
        .await?;
        let paused: Vec<String> = paused
            .map(|p| {
                String::from_utf8_lossy(&p)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let recorded: Vec<BackendId> = drains
            .iter()
            .filter_map(|(k, _)| k.strip_prefix(drain::PREFIX))
            .filter_map(|b| BackendId::new(b).ok())
            .filter(|b| self.gw.backend(b).is_some())
            .collect();
        for backend in &recorded {
            if self.claim_drain(backend) {
                tracing::info!(%backend, "drain started by another gateway");
                self.gw.set_draining(backend, true);
                self.spawn_drain(backend.clone());
            }
        }
        for backend in running {
            if !recorded.contains(&backend)
                && let Some(h) = self.registry.get(&format!("{}{backend}", drain::PREFIX))
            {
                tracing::info!(%backend, "drain cancelled by another gateway");
                h.cancel();
            }
        }
        for h in self.registry.all() {
            let want = paused.iter().any(|p| p == h.id());
            if h.is_paused() != want {
                h.pause(want);
            }
        }
        if rebalancing {
            self.resume_rebalance();
        }
        Ok(())
    }

    /// Every gateway sharing the store with its jobs (this one's as they
    /// are now, the others' as of their last heartbeat).
    pub async fn gateways(&self) -> Result<Vec<GatewayJobs>, GatewayError> {
        let meta = self.gw.meta().clone();
        let members = blocking(move || meta.members(now_ms())).await?;
        let me = self.gw.meta().owner().to_string();
        Ok(members
            .into_iter()
            .map(|m| {
                let this = m.record.owner == me;
                let jobs = match this {
                    true => self.list(),
                    false => serde_json::from_slice(&m.record.jobs).unwrap_or_default(),
                };
                GatewayJobs {
                    id: m.record.owner,
                    host: m.record.host,
                    pid: m.record.pid,
                    version: m.record.version,
                    s3_endpoint: m.record.s3_endpoint,
                    admin_endpoint: m.record.admin_endpoint,
                    started_unix_ms: m.record.started_unix_ms,
                    heartbeat_unix_ms: m.record.heartbeat_unix_ms,
                    live: m.live,
                    this,
                    jobs,
                }
            })
            .collect())
    }

    /// Gives up every lease this gateway holds (it stops): the other
    /// gateways take its jobs at once instead of after the term.
    pub async fn let_go_leases(&self) {
        let keeper = self.keeper.clone();
        let _ = tokio::task::spawn_blocking(move || keeper.let_go_all()).await;
    }
}
