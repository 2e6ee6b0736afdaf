//! Job control: every long-running job (a scrub pass, repair, a drain)
//! has a [`JobHandle`] that it reports progress to and that the admin API
//! pauses, resumes and cancels. A job checks its handle between steps
//! ([`JobHandle::checkpoint`]), so a pause takes effect within one step
//! (one object), never in the middle of a swap.
//!
//! What a job must remember across a restart lives in the metadata store
//! (scrub's cursor, the repair queue, a drain's backend and cursor); so do
//! the paused flags, so a job paused by an operator stays paused.
//!
//! With several gateways on one store (issue 23), a job runs where its
//! lease (`job/<id>`) is held: [`JobHandle::checkpoint`] takes it before
//! each step, and a gateway that does not hold it waits there, showing
//! which gateway runs the job, until the holder stops renewing it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use shardgate_meta::{Hold, LeaseKeeper};
use shardgate_node::{blocking, now_ms};

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Working now.
    Running,
    /// Waiting for work or for its next period.
    Idle,
    /// Held by an operator until resumed.
    Paused,
    /// Finished its work (a drain that emptied its backend).
    Done,
    /// Stopped by an operator before the end.
    Cancelled,
}

/// A job as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub kind: String,
    pub state: JobState,
    /// Objects dealt with in the current run (a scrub pass, a drain).
    pub objects_done: u64,
    /// Objects the run covers, when known.
    pub objects_total: Option<u64>,
    /// Bytes read (scrub) or written (repair, drain) in the current run.
    pub bytes_done: u64,
    /// Bytes per second over the current run, pauses excluded.
    pub rate_bytes_per_sec: u64,
    /// Seconds left at the current pace, when the total is known.
    pub eta_secs: Option<u64>,
    /// When the current run started (unix ms; 0: never).
    pub started_unix_ms: u64,
    /// Runs begun since the process started (a watcher waits for a new
    /// one after asking for it).
    pub runs: u64,
    /// What the job is doing or last did, in a line.
    pub detail: String,
    /// The last thing that failed (a try retried later), if any.
    pub last_failure: Option<String>,
    /// The gateway that runs it now, when another one does (several
    /// gateways on one metadata store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elsewhere: Option<String>,
    /// This gateway holds the job's lease now: the job runs here.
    #[serde(default)]
    pub runs_here: bool,
}

/// The shared state of one job.
#[derive(Debug)]
pub struct JobHandle {
    id: String,
    kind: &'static str,
    paused: AtomicBool,
    cancelled: AtomicBool,
    woken: Notify,
    objects_done: AtomicU64,
    objects_total: AtomicU64,
    bytes_done: AtomicU64,
    started_ms: AtomicU64,
    runs: AtomicU64,
    /// Milliseconds of the current run spent paused.
    paused_ms: AtomicU64,
    state: Mutex<(JobState, String)>,
    last_failure: Mutex<Option<String>>,
    /// The leases that decide where the job runs.
    keeper: Arc<LeaseKeeper>,
    /// The gateway holding the job's lease, when another one does.
    elsewhere: Mutex<Option<String>>,
}

/// The longest a job waits before asking for its lease again.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl JobHandle {
    fn new(id: String, kind: &'static str, keeper: Arc<LeaseKeeper>) -> Self {
        Self {
            keeper,
            elsewhere: Mutex::new(None),
            id,
            kind,
            paused: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            woken: Notify::new(),
            objects_done: AtomicU64::new(0),
            objects_total: AtomicU64::new(u64::MAX),
            bytes_done: AtomicU64::new(0),
            started_ms: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            paused_ms: AtomicU64::new(0),
            state: Mutex::new((JobState::Idle, String::new())),
            last_failure: Mutex::new(None),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new run begins: progress starts over.
    pub(crate) fn begin_run(&self, objects_total: Option<u64>, detail: impl Into<String>) {
        self.objects_done.store(0, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
        self.paused_ms.store(0, Ordering::Relaxed);
        self.objects_total
            .store(objects_total.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.started_ms.store(now_ms(), Ordering::Relaxed);
        // Running first, then the count: whoever sees the new run counted
        // (`status` reads the count first) sees it running, or over.
        self.set(JobState::Running, detail);
        self.runs.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn set_total(&self, objects_total: Option<u64>) {
        self.objects_total
            .store(objects_total.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn set(&self, state: JobState, detail: impl Into<String>) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state, detail.into());
        }
    }

    /// A try failed (it is retried later): shown until the next failure.
    pub(crate) fn failed(&self, what: impl Into<String>) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = Some(what.into());
        }
    }

    pub(crate) fn progress(&self, objects: u64, bytes: u64) {
        self.objects_done.fetch_add(objects, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The job's lease.
    pub(crate) fn lease(&self) -> String {
        format!("job/{}", self.id)
    }

    /// Gives the job's lease up (its work is over: another gateway may
    /// take the next run).
    pub(crate) async fn let_go(&self) {
        let (keeper, lease) = (self.keeper.clone(), self.lease());
        if let Err(e) = blocking(move || keeper.let_go(&lease)).await {
            tracing::debug!(job = %self.id, error = %e, "job lease not given up; it runs out");
        }
    }

    /// Waits until this gateway holds the job's lease; false if the job
    /// was cancelled meanwhile.
    async fn hold_lease(&self) -> bool {
        loop {
            if self.cancelled.load(Ordering::Acquire) {
                return false;
            }
            let (keeper, lease) = (self.keeper.clone(), self.lease());
            let wait = match blocking(move || keeper.hold(&lease)).await {
                Ok(Hold::Held) => {
                    if let Ok(mut e) = self.elsewhere.lock()
                        && e.take().is_some()
                    {
                        tracing::info!(job = %self.id, "job taken over from another gateway");
                    }
                    return true;
                }
                Ok(Hold::Elsewhere { owner, left_ms }) => {
                    if let Ok(mut e) = self.elsewhere.lock() {
                        *e = Some(owner);
                    }
                    std::time::Duration::from_millis(left_ms.saturating_add(100)).min(LEASE_RETRY)
                }
                Err(e) => {
                    self.failed(format!("taking the job's lease: {e}"));
                    LEASE_RETRY
                }
            };
            let _ = tokio::time::timeout(wait, self.woken.notified()).await;
        }
    }

    /// Between two steps: waits while paused, then until this gateway
    /// holds the job's lease. Returns false when the job was cancelled
    /// (the flag is taken: the job ends its run).
    pub(crate) async fn checkpoint(&self) -> bool {
        if !self.hold_lease().await {
            return !self.cancelled.swap(false, Ordering::AcqRel);
        }
        if self.paused.load(Ordering::Acquire) {
            let before = self.state();
            self.set(JobState::Paused, before.1.clone());
            let since = now_ms();
            while self.paused.load(Ordering::Acquire) && !self.cancelled.load(Ordering::Acquire) {
                let woken = self.woken.notified();
                if !self.paused.load(Ordering::Acquire) || self.cancelled.load(Ordering::Acquire) {
                    break;
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), woken).await;
            }
            self.paused_ms
                .fetch_add(now_ms().saturating_sub(since), Ordering::Relaxed);
            self.set(before.0, before.1);
        }
        !self.cancelled.swap(false, Ordering::AcqRel)
    }

    /// Sleeps `d`, or less if an operator pauses, resumes or cancels.
    pub(crate) async fn rest(&self, d: std::time::Duration) {
        let _ = tokio::time::timeout(d, self.woken.notified()).await;
    }

    /// Whether an operator paused it.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
        self.wake();
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.wake();
    }

    /// A new run of a job that was cancelled before: the old request is
    /// spent.
    pub(crate) fn clear_cancel(&self) {
        self.cancelled.store(false, Ordering::Release);
    }

    /// Wakes the job's rest or pause now, or (a permit) at its next one,
    /// so a request made during a step is not missed.
    fn wake(&self) {
        self.woken.notify_waiters();
        self.woken.notify_one();
    }

    fn state(&self) -> (JobState, String) {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or((JobState::Idle, String::new()))
    }

    /// What the admin API shows.
    pub fn status(&self) -> JobStatus {
        let runs = self.runs.load(Ordering::Acquire);
        let (mut state, detail) = self.state();
        if self.is_paused() && matches!(state, JobState::Running | JobState::Idle) {
            state = JobState::Paused;
        }
        let objects_done = self.objects_done.load(Ordering::Relaxed);
        let total = self.objects_total.load(Ordering::Relaxed);
        let objects_total = (total != u64::MAX).then_some(total);
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let started = self.started_ms.load(Ordering::Relaxed);
        let active_ms = now_ms()
            .saturating_sub(started)
            .saturating_sub(self.paused_ms.load(Ordering::Relaxed))
            .max(1);
        let running = started != 0 && state == JobState::Running;
        let rate = if running {
            bytes_done.saturating_mul(1000) / active_ms
        } else {
            0
        };
        let eta_secs = match (running, objects_total) {
            (true, Some(total)) if objects_done > 0 => {
                let left = total.saturating_sub(objects_done);
                Some(left.saturating_mul(active_ms) / objects_done / 1000)
            }
            _ => None,
        };
        JobStatus {
            id: self.id.clone(),
            kind: self.kind.to_string(),
            state,
            objects_done,
            objects_total,
            bytes_done,
            rate_bytes_per_sec: rate,
            eta_secs,
            started_unix_ms: started,
            runs,
            detail,
            last_failure: self.last_failure.lock().ok().and_then(|f| f.clone()),
            elsewhere: self.elsewhere.lock().ok().and_then(|e| e.clone()),
            runs_here: self.keeper.holds(&self.lease()),
        }
    }
}

/// Every job of the node, by id.
#[derive(Debug)]
pub(crate) struct Registry {
    jobs: Mutex<BTreeMap<String, Arc<JobHandle>>>,
    keeper: Arc<LeaseKeeper>,
}

impl Registry {
    pub(crate) fn new(keeper: Arc<LeaseKeeper>) -> Self {
        Self {
            jobs: Mutex::default(),
            keeper,
        }
    }

    /// The handle of job `id`, made if new.
    pub(crate) fn handle(&self, id: &str, kind: &'static str) -> Arc<JobHandle> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.entry(id.to_string())
            .or_insert_with(|| Arc::new(JobHandle::new(id.to_string(), kind, self.keeper.clone())))
            .clone()
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<JobHandle>> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<JobHandle>> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values().cloned().collect()
    }
}
