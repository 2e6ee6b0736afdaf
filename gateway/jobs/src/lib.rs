//! The node's background jobs: what keeps stored data healthy while the
//! S3 endpoint serves it.
//!
//! - the garbage collectors, one per backend (`collector.rs`);
//! - the sweeps of intents nobody will close and of abandoned uploads, and
//!   the backend health probe (`sweeps.rs`);
//! - scrub, which reads every fragment back against its digests
//!   (`scrub.rs`);
//! - repair, which rebuilds what the repair queue names (`repair.rs`).
//!
//! Every job works through [`shardgate_node::Gateway`] and keeps its
//! durable state (cursors, queues) in the metadata store, so a restart
//! resumes it. The S3 crate does not know this one: the binary starts
//! both.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shardgate_core::BackendId;
use shardgate_meta::{Hold, LeaseKeeper};
use shardgate_node::{Gateway, GatewayError, blocking};
use tokio::sync::Notify;

mod cluster;
mod collector;
mod control;
mod drain;
mod lost;
mod rebalance;
mod repair;
mod scrub;
mod sweeps;

pub use cluster::{CHANGES_POLL, GatewayJobs, LEASE_TERM};
pub use collector::Round;
pub use control::{JobHandle, JobState, JobStatus};
pub use repair::{Repaired, Retry};
pub use sweeps::{HEALTH_PERIOD, INTENT_SWEEP_AGE};

/// How the jobs run (from `[scrub]`, `[repair]` and `upload_expiry_secs`).
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// Uploads not completed after this long are aborted.
    pub upload_expiry: Duration,
    /// A scrub pass starts this long after the previous one (None: never).
    pub scrub_interval: Option<Duration>,
    /// Bytes scrub reads per second at most.
    pub scrub_rate_bytes_per_sec: u64,
    /// Bytes repair reads per second at most.
    pub repair_rate_bytes_per_sec: u64,
    /// A backend down this long is gone: its fragments are rebuilt
    /// elsewhere.
    pub backend_grace: Duration,
    /// Backends scrub audits by sampling (cloud ones) rather than reading
    /// whole, and how many shards of each fragment it samples (0: none is
    /// sampled, all are read whole).
    pub sampled: BTreeSet<BackendId>,
    pub audit_stripes: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            upload_expiry: Duration::from_secs(7 * 24 * 3600),
            scrub_interval: Some(Duration::from_secs(7 * 24 * 3600)),
            scrub_rate_bytes_per_sec: 64 << 20,
            repair_rate_bytes_per_sec: 64 << 20,
            backend_grace: Duration::from_secs(30 * 60),
            sampled: BTreeSet::new(),
            audit_stripes: 4,
        }
    }
}

/// Logs the object rows a walk passed over because their manifest does
/// not decode (a damaged row, or one a newer version wrote): they are
/// neither checked nor moved until fixed.
pub(crate) fn report_unreadable(rows: &[(String, String, String)]) {
    for (bucket, key, why) in rows {
        tracing::error!(%bucket, %key, %why, "object row unreadable: skipped by scrub, drain and rebalance");
    }
}

/// The job-state key of the ids of the jobs an operator paused.
pub(crate) const PAUSED: &str = "paused";

/// Why a job could not be started, paused, resumed or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no job {0:?}")]
    NoSuchJob(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Node(#[from] GatewayError),
}

/// A job an operator can start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRequest {
    /// A scrub pass now, whatever the period.
    Scrub,
    /// Empty a backend (its fragments moved to others) and keep new ones
    /// off it.
    Drain { backend: BackendId },
    /// One pass moving fragments toward where the placer puts them now,
    /// from fuller backends to emptier ones.
    Rebalance,
}

/// The jobs of one node.
#[derive(Debug)]
pub struct Jobs {
    gw: Arc<Gateway>,
    /// The leases deciding which gateway runs which job.
    keeper: Arc<LeaseKeeper>,
    settings: JobSettings,
    registry: control::Registry,
    /// Wakes scrub for a pass an operator asked for.
    scrub_now: Notify,
    scrub_requested: std::sync::atomic::AtomicBool,
    /// Backends whose drain has a task (one each).
    drains: std::sync::Mutex<BTreeSet<BackendId>>,
    /// Drains a previous process left, resumed by `spawn_background`.
    saved_drains: std::sync::Mutex<Vec<BackendId>>,
    /// A rebalance pass has a task.
    rebalancing: std::sync::atomic::AtomicBool,
}

impl Jobs {
    /// The jobs over `gw`, run where `keeper` holds their leases; those an
    /// operator paused (recorded in the metadata store) stay paused.
    pub fn new(gw: Arc<Gateway>, mut settings: JobSettings, keeper: Arc<LeaseKeeper>) -> Arc<Self> {
        settings.scrub_rate_bytes_per_sec = settings.scrub_rate_bytes_per_sec.max(1);
        settings.repair_rate_bytes_per_sec = settings.repair_rate_bytes_per_sec.max(1);
        let registry = control::Registry::new(keeper.clone());
        registry.handle(scrub::JOB, "scrub");
        registry.handle(repair::JOB, "repair");
        registry.handle(rebalance::JOB, "rebalance");
        let jobs = Arc::new(Self {
            gw,
            keeper,
            settings,
            registry,
            scrub_now: Notify::new(),
            scrub_requested: std::sync::atomic::AtomicBool::new(false),
            drains: std::sync::Mutex::new(BTreeSet::new()),
            saved_drains: std::sync::Mutex::new(Vec::new()),
            rebalancing: std::sync::atomic::AtomicBool::new(false),
        });
        // Before the node serves: backends being drained take no write.
        let saved = jobs.load_drains();
        if let Ok(mut s) = jobs.saved_drains.lock() {
            *s = saved;
        }
        match jobs.gw.meta().job_state(PAUSED) {
            Ok(Some(ids)) => {
                for id in String::from_utf8_lossy(&ids).lines() {
                    if let Some(h) = jobs.registry.get(id) {
                        h.pause(true);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "paused jobs not read; none paused"),
        }
        jobs
    }

    /// The node the jobs work on.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gw
    }

    /// How the jobs run.
    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// The leases deciding which gateway runs which job.
    pub fn keeper(&self) -> &Arc<LeaseKeeper> {
        &self.keeper
    }

    /// Takes (or keeps) the lease of a piece of work that is not a job
    /// with a handle (a backend's garbage, upload expiry); false while
    /// another gateway holds it.
    pub(crate) async fn hold(&self, lease: &str) -> bool {
        let (keeper, name) = (self.keeper.clone(), lease.to_string());
        match blocking(move || keeper.hold(&name)).await {
            Ok(Hold::Held) => true,
            Ok(Hold::Elsewhere { .. }) => false,
            Err(e) => {
                tracing::debug!(lease, error = %e, "lease not taken");
                false
            }
        }
    }

    /// Gives up a lease taken with [`Jobs::hold`].
    pub(crate) async fn let_go(&self, lease: &str) {
        let (keeper, name) = (self.keeper.clone(), lease.to_string());
        if let Err(e) = blocking(move || keeper.let_go(&name)).await {
            tracing::debug!(lease, error = %e, "lease not given up; it runs out");
        }
    }

    /// The store for job `id`'s own state: its writes fail (`LeaseLost`)
    /// once this gateway no longer holds the job's lease, so a gateway
    /// that stalled past the term cannot move a cursor its successor
    /// moved on.
    pub(crate) fn fenced(&self, id: &str) -> shardgate_meta::MetaStore {
        self.gw.meta().fenced_by(&format!("job/{id}"))
    }

    /// Refuses to steer a job another gateway runs now, naming it.
    fn run_here(&self, h: &JobHandle) -> Result<(), ControlError> {
        match h.status().elsewhere {
            Some(owner) => Err(ControlError::Refused(format!(
                "{} runs on gateway {owner}: ask its admin API (GET /v1/gateways lists them)",
                h.id()
            ))),
            None => Ok(()),
        }
    }

    /// Every job, by id.
    pub fn list(&self) -> Vec<JobStatus> {
        self.registry.all().iter().map(|h| h.status()).collect()
    }

    /// One job.
    pub fn status(&self, id: &str) -> Result<JobStatus, ControlError> {
        Ok(self.handle(id)?.status())
    }

    fn handle(&self, id: &str) -> Result<Arc<JobHandle>, ControlError> {
        self.registry
            .get(id)
            .ok_or_else(|| ControlError::NoSuchJob(id.to_string()))
    }

    /// Starts a job (see [`JobRequest`]).
    pub async fn start(self: &Arc<Self>, request: JobRequest) -> Result<JobStatus, ControlError> {
        match request {
            JobRequest::Scrub => {
                let h = self.handle(scrub::JOB)?;
                match h.status().state {
                    JobState::Running => {
                        return Err(ControlError::Refused(
                            "a scrub pass is running already".into(),
                        ));
                    }
                    JobState::Paused => {
                        return Err(ControlError::Refused(
                            "scrub is paused: resume it first".into(),
                        ));
                    }
                    _ => {}
                }
                self.run_here(&h)?;
                self.scrub_requested
                    .store(true, std::sync::atomic::Ordering::Release);
                self.scrub_now.notify_waiters();
                Ok(h.status())
            }
            JobRequest::Drain { backend } => Ok(self.start_drain(backend).await?.status()),
            JobRequest::Rebalance => Ok(self.start_rebalance().await?.status()),
        }
    }

    /// Holds a job after its current step, until resumed (also across
    /// restarts).
    pub async fn pause(&self, id: &str) -> Result<JobStatus, ControlError> {
        let h = self.handle(id)?;
        h.pause(true);
        self.save_paused().await?;
        Ok(h.status())
    }

    pub async fn resume(&self, id: &str) -> Result<JobStatus, ControlError> {
        let h = self.handle(id)?;
        h.pause(false);
        self.save_paused().await?;
        Ok(h.status())
    }

    /// Ends a job's current run: a scrub pass stops where it is (the next
    /// starts on schedule). Repair cannot be cancelled: it runs for as
    /// long as objects are damaged; pause it instead.
    pub async fn cancel(&self, id: &str) -> Result<JobStatus, ControlError> {
        let h = self.handle(id)?;
        if id == repair::JOB {
            return Err(ControlError::Refused(
                "repair runs for as long as objects are damaged: pause it instead".into(),
            ));
        }
        if !id.starts_with(drain::PREFIX) {
            self.run_here(&h)?;
        }
        if let Some(backend) = id.strip_prefix(drain::PREFIX) {
            let running = BackendId::new(backend).is_ok_and(|b| self.is_drain_running(&b));
            if !running {
                return Err(ControlError::Refused(format!("{id} is not running")));
            }
        }
        h.cancel();
        // A drain answers once it has stopped (its backend takes new
        // fragments again), within a step.
        if id.starts_with(drain::PREFIX) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while h.status().state != JobState::Cancelled && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(h.status())
    }

    async fn save_paused(&self) -> Result<(), GatewayError> {
        let ids: String = self
            .registry
            .all()
            .iter()
            .filter(|h| h.is_paused())
            .map(|h| format!("{}\n", h.id()))
            .collect();
        let meta = self.gw.meta().clone();
        blocking(move || meta.set_job_state(PAUSED, ids.as_bytes())).await
    }
}
