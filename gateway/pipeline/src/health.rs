//! Backend health as the gateway observes it: every request's outcome and
//! every probe's answer, per backend, in one [`HealthBoard`].
//!
//! Why observed and not only probed: a cloud endpoint that drops requests
//! can still answer a cheap probe now and then, and a probe every few
//! seconds is too slow to spare clients the timeouts. So every backend is
//! wrapped in a [`Monitored`] decorator that reports each call, and:
//!
//! - [`FAILURES_TO_MARK_DOWN`] failures in a row (errors or timeouts, of
//!   requests or probes) mark a backend **down**; a backend never seen
//!   answering is down at its first failure. A down backend is not placed
//!   on (placement plugins see `healthy = false`), reads skip its
//!   fragments, and `/ready` lists it with the last error.
//! - The background probe keeps asking it; the first success (probe or
//!   request) marks it **up** again.
//! - Answers that are about the blob (not found, exists, bad range) or
//!   about space (full, read-only) are answers: they count as successes
//!   for reachability. Writability comes from the probe.
//!
//! Fragment fetch times feed a smoothed round trip and its deviation
//! (Jacobson's estimator, as TCP's retransmission timer), from which
//! [`HealthBoard::hedge_delay`] says how long a read waits on a fragment
//! before it asks another one.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use shardgate_backend::{
    Backend, BackendError, BackendId, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result,
};

/// Consecutive failures that mark a backend down.
pub const FAILURES_TO_MARK_DOWN: u32 = 3;
/// The hedge delay before any fetch time has been seen.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(250);
/// Hedge delays are kept within these bounds: never so eager that every
/// read doubles its requests, never so patient that a hung backend stalls
/// a read for long.
pub const HEDGE_DELAY_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_secs(2));

/// One backend's state, as [`HealthBoard::snapshot`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendState {
    /// Answering requests (reads and writes may go there).
    pub up: bool,
    /// Accepting writes, at the last probe.
    pub writable: bool,
    /// Free bytes at the last probe that told.
    pub free_bytes: Option<u64>,
    /// The probe's smoothed round trip (what placement sees).
    pub probe_latency: Option<Duration>,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// The last failure, when the backend is down or failing.
    pub last_error: Option<String>,
    /// How long it has been in its current up/down state.
    pub for_how_long: Duration,
}

#[derive(Debug)]
struct Entry {
    up: bool,
    ever_answered: bool,
    writable: bool,
    free_bytes: Option<u64>,
    probe_latency: Option<Duration>,
    failures: u32,
    last_error: Option<String>,
    changed: Instant,
    /// Smoothed fetch time and its mean deviation.
    fetch: Option<(Duration, Duration)>,
}

impl Entry {
    fn new() -> Self {
        Self {
            up: true,
            ever_answered: false,
            writable: true,
            free_bytes: None,
            probe_latency: None,
            failures: 0,
            last_error: None,
            changed: Instant::now(),
            fetch: None,
        }
    }
}

/// Every backend's observed health; shared by the read and write paths,
/// the probe and the status endpoints.
#[derive(Debug, Default)]
pub struct HealthBoard {
    entries: BTreeMap<BackendId, Mutex<Entry>>,
    hedges: AtomicU64,
}

fn lock(m: &Mutex<Entry>) -> MutexGuard<'_, Entry> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An exponentially weighted moving average (weight 1/4 for the new
/// sample): one slow probe moves it, only a run of them dominates it.
fn smoothed(previous: Option<Duration>, sample: Duration) -> Duration {
    match previous {
        Some(p) => (p * 3 + sample) / 4,
        None => sample,
    }
}

impl HealthBoard {
    /// A board for these backends, all up until they fail.
    pub fn new<'a>(ids: impl IntoIterator<Item = &'a BackendId>) -> Self {
        Self {
            entries: ids
                .into_iter()
                .map(|id| (id.clone(), Mutex::new(Entry::new())))
                .collect(),
            hedges: AtomicU64::new(0),
        }
    }

    /// Reads asked `n` more fragments because others were late.
    pub fn record_hedges(&self, n: usize) {
        self.hedges.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Fragment requests sent so far because others were late.
    pub fn hedges(&self) -> u64 {
        self.hedges.load(Ordering::Relaxed)
    }

    fn with<T>(&self, id: &BackendId, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        self.entries.get(id).map(|m| f(&mut lock(m)))
    }

    /// The backend answered (a request or a probe).
    pub fn record_success(&self, id: &BackendId) {
        self.with(id, |e| {
            e.ever_answered = true;
            e.failures = 0;
            if !e.up {
                tracing::info!(backend = %id, down_for = ?e.changed.elapsed(), "backend answers again: marked up");
                e.up = true;
                e.changed = Instant::now();
                e.last_error = None;
            }
        });
    }

    /// The backend failed to answer (an error or a timeout).
    pub fn record_failure(&self, id: &BackendId, reason: &str) {
        self.with(id, |e| {
            e.failures = e.failures.saturating_add(1);
            e.last_error = Some(reason.to_string());
            let threshold = match e.ever_answered {
                true => FAILURES_TO_MARK_DOWN,
                false => 1,
            };
            if e.up && e.failures >= threshold {
                tracing::warn!(backend = %id, failures = e.failures, error = reason, "backend marked down");
                e.up = false;
                e.changed = Instant::now();
            }
        });
    }

    /// What a probe found: writability and free space, or a failure.
    pub fn record_probe(&self, id: &BackendId, outcome: Result<&Health, String>, took: Duration) {
        match outcome {
            Ok(h) => {
                self.with(id, |e| {
                    e.writable = h.writable;
                    e.free_bytes = Some(h.free_bytes);
                    e.probe_latency = Some(smoothed(e.probe_latency, took));
                });
                self.record_success(id);
            }
            Err(reason) => self.record_failure(id, &format!("health probe: {reason}")),
        }
    }

    /// A fragment fetch took this long (feeds the hedge delay).
    pub fn record_fetch_time(&self, id: &BackendId, took: Duration) {
        self.with(id, |e| {
            e.fetch = Some(match e.fetch {
                None => (took, took / 2),
                Some((srtt, var)) => {
                    let diff = srtt.abs_diff(took);
                    ((srtt * 7 + took) / 8, (var * 3 + diff) / 4)
                }
            });
        });
    }

    /// Whether requests should go to the backend (unknown ones: no).
    pub fn is_up(&self, id: &BackendId) -> bool {
        self.with(id, |e| e.up).unwrap_or(false)
    }

    /// How long a read waits on this backend's fragment before asking
    /// another: the smoothed fetch time plus four deviations, bounded.
    pub fn hedge_delay(&self, id: &BackendId) -> Duration {
        let (low, high) = HEDGE_DELAY_BOUNDS;
        self.with(id, |e| match e.fetch {
            Some((srtt, var)) => (srtt + var * 4).clamp(low, high),
            None => DEFAULT_HEDGE_DELAY,
        })
        .unwrap_or(DEFAULT_HEDGE_DELAY)
    }

    /// The state of one backend.
    pub fn state(&self, id: &BackendId) -> Option<BackendState> {
        self.with(id, |e| BackendState {
            up: e.up,
            writable: e.writable,
            free_bytes: e.free_bytes,
            probe_latency: e.probe_latency,
            consecutive_failures: e.failures,
            last_error: e.last_error.clone(),
            for_how_long: e.changed.elapsed(),
        })
    }

    /// Every backend's state, by id.
    pub fn snapshot(&self) -> Vec<(BackendId, BackendState)> {
        self.entries
            .keys()
            .filter_map(|id| Some((id.clone(), self.state(id)?)))
            .collect()
    }
}

/// Whether an outcome says the backend is unreachable or failing (as
/// opposed to an answer about the blob or about space).
fn is_failure(e: &BackendError) -> bool {
    matches!(
        e,
        BackendError::Unavailable { .. } | BackendError::Io { .. }
    )
}

/// A backend whose every call is reported to a [`HealthBoard`].
#[derive(Debug)]
pub struct Monitored {
    inner: Arc<dyn Backend>,
    board: Arc<HealthBoard>,
}

impl Monitored {
    /// Wraps `inner`; its id must be on `board`.
    pub fn new(inner: Arc<dyn Backend>, board: Arc<HealthBoard>) -> Self {
        Self { inner, board }
    }

    fn note<T>(&self, outcome: Result<T>) -> Result<T> {
        note(&self.board, self.inner.id(), outcome)
    }
}

fn note<T>(board: &HealthBoard, id: &BackendId, outcome: Result<T>) -> Result<T> {
    match &outcome {
        Err(e) if is_failure(e) => board.record_failure(id, &e.to_string()),
        _ => board.record_success(id),
    }
    outcome
}

struct MonitoredWriter {
    inner: Box<dyn BlobWriter>,
    board: Arc<HealthBoard>,
    id: BackendId,
}

#[async_trait]
impl BlobWriter for MonitoredWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let outcome = self.inner.write(data).await;
        note(&self.board, &self.id, outcome)
    }

    async fn commit(self: Box<Self>) -> Result<BlobMeta> {
        let outcome = self.inner.commit().await;
        note(&self.board, &self.id, outcome)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl Backend for Monitored {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }

    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        let inner = self.note(self.inner.create(name).await)?;
        Ok(Box::new(MonitoredWriter {
            inner,
            board: self.board.clone(),
            id: self.inner.id().clone(),
        }))
    }

    async fn put(&self, name: &BlobName, data: Bytes) -> Result<BlobMeta> {
        self.note(self.inner.put(name, data).await)
    }

    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        self.note(self.inner.get(name, range).await)
    }

    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        self.note(self.inner.stat(name).await)
    }

    async fn delete(&self, name: &BlobName) -> Result<()> {
        self.note(self.inner.delete(name).await)
    }

    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        self.inner
            .list()
            .map(|item| note(&self.board, self.inner.id(), item))
            .boxed()
    }

    async fn challenge(
        &self,
        name: &BlobName,
        nonce: [u8; 32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        self.note(self.inner.challenge(name, nonce, ranges).await)
    }

    fn preferred_read_bytes(&self) -> u64 {
        self.inner.preferred_read_bytes()
    }

    /// The probe: its outcome and round trip go to the board.
    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let outcome = self.inner.health().await;
        let id = self.inner.id();
        match &outcome {
            Ok(h) => self.board.record_probe(id, Ok(h), started.elapsed()),
            Err(e) => self
                .board
                .record_probe(id, Err(e.to_string()), started.elapsed()),
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> BackendId {
        BackendId::new(s).expect("valid id")
    }

    /// A backend that answers challenges itself, as a peer does.
    #[derive(Debug)]
    struct Prover(shardgate_backend_memory::MemoryBackend);

    #[async_trait]
    impl Backend for Prover {
        fn info(&self) -> &BackendInfo {
            self.0.info()
        }
        async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
            self.0.create(name).await
        }
        async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
            self.0.get(name, range).await
        }
        async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
            self.0.stat(name).await
        }
        async fn delete(&self, name: &BlobName) -> Result<()> {
            self.0.delete(name).await
        }
        fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
            self.0.list()
        }
        async fn health(&self) -> Result<Health> {
            self.0.health().await
        }
        async fn challenge(
            &self,
            _name: &BlobName,
            nonce: [u8; 32],
            ranges: &[Range<u64>],
        ) -> Result<Vec<Bytes>> {
            Ok(ranges
                .iter()
                .map(|_| Bytes::copy_from_slice(&nonce))
                .collect())
        }
        fn preferred_read_bytes(&self) -> u64 {
            123
        }
    }

    #[test]
    fn the_monitor_passes_challenges_and_read_sizes_to_the_backend() {
        let a = id("a");
        let board = Arc::new(HealthBoard::new([&a]));
        let inner = Prover(shardgate_backend_memory::MemoryBackend::new(
            BackendInfo::new(a.clone()),
        ));
        let monitored = Monitored::new(Arc::new(inner), board);
        let name = BlobName::new("blob").expect("valid name");
        // The default would read the ranges, and the blob does not exist.
        let answer =
            futures::executor::block_on(monitored.challenge(&name, [9; 32], &[0..1, 5..9]))
                .expect("the backend's own answer");
        assert_eq!(answer, vec![Bytes::from_static(&[9; 32]); 2]);
        assert_eq!(monitored.preferred_read_bytes(), 123);
    }

    #[test]
    fn repeated_failures_mark_down_and_one_success_marks_up() {
        let a = id("a");
        let board = HealthBoard::new([&a]);
        board.record_success(&a);
        for n in 1..FAILURES_TO_MARK_DOWN {
            board.record_failure(&a, "refused");
            assert!(board.is_up(&a), "up after {n} failures");
        }
        board.record_failure(&a, "refused");
        let s = board.state(&a).expect("known");
        assert!(!s.up);
        assert_eq!(s.consecutive_failures, FAILURES_TO_MARK_DOWN);
        assert_eq!(s.last_error.as_deref(), Some("refused"));
        board.record_success(&a);
        assert!(board.is_up(&a));
        assert_eq!(board.state(&a).expect("known").last_error, None);
    }

    #[test]
    fn a_backend_never_seen_answering_is_down_at_its_first_failure() {
        let a = id("a");
        let board = HealthBoard::new([&a]);
        board.record_probe(&a, Err("connection refused".into()), Duration::ZERO);
        assert!(!board.is_up(&a));
        assert!(!board.is_up(&id("unknown")));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let a = id("a");
        let board = HealthBoard::new([&a]);
        board.record_success(&a);
        for _ in 0..10 {
            board.record_failure(&a, "flaky");
            board.record_failure(&a, "flaky");
            board.record_success(&a);
        }
        assert!(board.is_up(&a));
    }

    #[test]
    fn the_hedge_delay_follows_fetch_times_within_bounds() {
        let a = id("a");
        let board = HealthBoard::new([&a]);
        assert_eq!(board.hedge_delay(&a), DEFAULT_HEDGE_DELAY);
        for _ in 0..50 {
            board.record_fetch_time(&a, Duration::from_millis(40));
        }
        let steady = board.hedge_delay(&a);
        assert!(
            steady >= Duration::from_millis(40) && steady < Duration::from_millis(60),
            "{steady:?}"
        );
        for _ in 0..50 {
            board.record_fetch_time(&a, Duration::from_micros(100));
        }
        assert_eq!(board.hedge_delay(&a), HEDGE_DELAY_BOUNDS.0);
        for _ in 0..50 {
            board.record_fetch_time(&a, Duration::from_secs(30));
        }
        assert_eq!(board.hedge_delay(&a), HEDGE_DELAY_BOUNDS.1);
    }
}
