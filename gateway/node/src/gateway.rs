//! The gateway's state and the two paths every operation is built from:
//! write a body as a new version (placement, intent, pipeline, commit) and
//! read a version (manifest, reader guard, pipeline).
//!
//! The order on the write path is what makes a crash safe at any instant:
//! the intent naming every blob is durable before the first byte reaches a
//! backend, the manifest commits only after the fragments are durable, and
//! the commit closes the intent. A crash before the commit leaves an intent,
//! which the next start turns into garbage; a crash after it leaves a
//! complete object. Nothing in between is ever visible.
//!
//! A request dropped anywhere on that path (the client reset the
//! connection, a timeout) drops its [`IntentGuard`], which waits for the
//! fragment writers to finish (a writer may be committing its blob) and
//! only then abandons the intent. The commit itself closes the intent in
//! its transaction and fails if the intent is gone, so of "committed" and
//! "abandoned" exactly one happens, whichever comes first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use shardgate_backend::Backend;
use shardgate_core::{
    BackendId, ErasureCode, Identities, Manifest, Recipients, StripeLayout, VersionId,
};
use shardgate_meta::{
    Condition, IntentId, IntentKind, MetaError, MetaStore, Metadata, ObjectSummary, ObjectVersion,
    VersionRow, VersionSelector, VersionState, Written,
};
use shardgate_pipeline::{
    BackendSet, BackendState, KeyCache, ObjectMeta, ObjectRead, ObjectWrite, Placement, ReadParams,
    WriteParams, read_object, write_inline_object, write_object,
};
use shardgate_placement::{Candidate, Placer, Request, check};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::users::{User, Users};

/// A placement policy, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub code: ErasureCode,
    /// Fragments that must be durable (k..=k+m).
    pub write_quorum: usize,
    /// age chunks per stripe; `None` for the default.
    pub stripe_chunks: Option<u32>,
    /// Bodies of at most this many bytes (when the size is known up front)
    /// are stored as 1 + m whole encrypted copies instead of k + m
    /// fragments: fewer writes, the same m losses survived.
    pub small_object_bytes: u64,
    /// Bodies of at most this many bytes (size known up front, a whole
    /// PUT, not a part) are kept in their manifest, no backend written
    /// (`shardgate_core::inline`). Only the default policy may set it: the
    /// manifest journal that carries those bytes to the backends is placed
    /// by the default policy, so another policy's placement rules would
    /// not hold for them.
    pub inline_object_bytes: u64,
    /// This policy's placement (a plugin); `None`: the gateway's default.
    pub placer: Option<Arc<dyn Placer>>,
}

impl Policy {
    /// The code and layout for a body of `size` bytes (if known), and the
    /// write quorum that goes with it.
    pub fn layout_for(&self, size: Option<u64>) -> Result<(StripeLayout, usize), GatewayError> {
        let small = size.is_some_and(|s| s <= self.small_object_bytes) && self.code.k() > 1;
        if small {
            let code = ErasureCode::new(1, self.code.m() as u32)?;
            // The same number of losses tolerated: quorum minus the k - 1
            // data fragments a whole copy does not need.
            let quorum = self.write_quorum.saturating_sub(self.code.k() - 1).max(1);
            return Ok((StripeLayout::default_for(code), quorum));
        }
        let layout = match self.stripe_chunks {
            Some(chunks) => StripeLayout::new(self.code, chunks)?,
            None => StripeLayout::default_for(self.code),
        };
        Ok((layout, self.write_quorum))
    }
}

/// Read-ahead per GET (see `Gateway::new`).
pub const READ_BATCH_BYTES: usize = 1 << 20;
/// The most a batch grows to when its fragments live on backends that
/// prefer larger reads (`Backend::preferred_read_bytes`): with 2 in flight,
/// fetched and decoded, a GET holds at most about 4 x this.
pub const MAX_READ_BATCH_BYTES: usize = 8 << 20;
pub const READ_BATCHES_IN_FLIGHT: usize = 2;
/// Stripes encoded ahead per PUT: concurrency across requests keeps the
/// cores busy, so two per request suffice.
pub const WRITE_STRIPES_IN_FLIGHT: usize = 2;

/// Everything a gateway is made of.
#[derive(Debug)]
pub struct GatewayConfig {
    pub backends: Vec<Arc<dyn Backend>>,
    pub policies: BTreeMap<String, Policy>,
    /// Bucket -> policy name, for buckets that do not use the default.
    pub bucket_policies: BTreeMap<String, String>,
    pub default_policy: String,
    /// Every object is encrypted to these (the gateway's key and any
    /// offline recovery key).
    pub recipients: Recipients,
    /// The keys that open objects.
    pub identities: Identities,
    pub placer: Arc<dyn Placer>,
    /// A fragment read slower than this counts as an erasure.
    pub fragment_timeout: Duration,
    /// Opened payload keys kept in memory (0: every read unwraps).
    pub key_cache_entries: usize,
}

/// The running gateway: shared by every request.
pub struct Gateway {
    meta: MetaStore,
    /// The same store behind the traits the S3 layer uses.
    metadata: Arc<dyn Metadata>,
    backends: BTreeMap<BackendId, Arc<dyn Backend>>,
    /// The same backends, each monitored, with their health board.
    set: BackendSet,
    policies: BTreeMap<String, Policy>,
    bucket_policies: BTreeMap<String, String>,
    default_policy: Policy,
    recipients: Arc<Recipients>,
    read_params: ReadParams,
    placer: Arc<dyn Placer>,
    /// Versions being streamed to clients: their garbage waits.
    readers: Mutex<HashMap<VersionId, usize>>,
    /// Intents whose request is still running.
    intents: Arc<LiveIntents>,
    /// Backends being drained: placement sees them unhealthy, so new
    /// fragments go elsewhere.
    draining: Mutex<BTreeSet<BackendId>>,
    /// S3 users besides the configured one, secrets open.
    users: Arc<Users>,
    metrics: Metrics,
    /// What the S3 listener holds, read at scrape time (set when it starts).
    server_load: LoadSource,
}

type LoadSource = Mutex<Option<Box<dyn Fn() -> crate::metrics::ServerLoad + Send + Sync>>>;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .field("default_policy", &self.default_policy.name)
            .finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs a metadata call on the blocking pool (redb is synchronous).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MetaError> + Send + 'static,
) -> Result<T, GatewayError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| GatewayError::Internal(format!("metadata task failed: {e}")))?
        .map_err(GatewayError::Meta)
}

/// The keys a write put in the cache before its commit: forgotten when
/// dropped, unless the commit went through (a failed commit, or a request
/// dropped during it).
struct Unwritten<'a> {
    keys: &'a KeyCache,
    envelopes: Vec<shardgate_core::Envelope>,
    committed: bool,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.keys.forget_unwritten(&self.envelopes);
        }
    }
}

/// A version being read: while it lives, the version's garbage is kept.
#[derive(Debug)]
pub struct ReadGuard {
    gateway: Arc<Gateway>,
    version: VersionId,
    /// The version's row (bucket, key, seq): where damage is reported.
    object: Option<(String, String, u64)>,
}

impl ReadGuard {
    /// Names the row of the version read, so that damage found is queued
    /// for repair against it.
    pub fn of_object(mut self, bucket: &str, key: &str, seq: u64) -> Self {
        self.object = Some((bucket.to_string(), key.to_string(), seq));
        self
    }

    /// Queues the version for repair if a read found fragments missing or
    /// corrupt (the guard must name its row: [`ReadGuard::of_object`]).
    /// Slow or unavailable backends are not damage; fragments never stored
    /// were queued by their write.
    pub fn report_damage(&self, bad: &[shardgate_pipeline::BadFragment]) {
        use shardgate_pipeline::Problem;
        let damaged: Vec<(u32, u16, shardgate_core::BlobName)> = bad
            .iter()
            .filter(|b| {
                matches!(
                    b.problem,
                    Problem::Missing | Problem::Corrupt { .. } | Problem::UnknownBackend
                )
            })
            .map(|b| (b.segment as u32, b.fragment as u16, b.blob.clone()))
            .collect();
        if damaged.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let Some((bucket, key, seq)) = self.object.clone() else {
            return;
        };
        let meta = self.gateway.metadata.clone();
        let version = self.version;
        tokio::spawn(async move {
            let why = shardgate_meta::repair_reason::READ;
            let queued = meta
                .report_damage(&bucket, &key, seq, version, damaged, why, now_ms())
                .await;
            if let Err(e) = queued {
                tracing::warn!(error = %e, "damage found by a read not queued for repair");
            }
        });
    }
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        if let Ok(mut readers) = self.gateway.readers.lock()
            && let Some(n) = readers.get_mut(&self.version)
        {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.version);
            }
        }
    }
}

/// A new version written to the backends, not yet committed.
#[derive(Debug)]
pub struct Pending {
    pub write: ObjectWrite,
    /// `None` for a version kept in its manifest: no blob to account for.
    pub intent: Option<IntentGuard>,
}

impl Pending {
    /// Gives up the write: its blobs, if any, become garbage.
    pub async fn abandon(self) {
        if let Some(intent) = self.intent {
            intent.abandon().await;
        }
    }
}

/// The intents of this process's running requests, and the collector's
/// wake-up.
#[derive(Debug)]
pub struct LiveIntents {
    meta: Arc<dyn Metadata>,
    live: Mutex<HashSet<IntentId>>,
    /// Wakes the garbage collectors when there is new garbage.
    pub garbage_added: Notify,
}

impl LiveIntents {
    pub fn is_live(&self, id: IntentId) -> bool {
        self.live.lock().map(|l| l.contains(&id)).unwrap_or(true)
    }

    pub fn mark(&self, id: IntentId) {
        if let Ok(mut l) = self.live.lock() {
            l.insert(id);
        }
    }

    pub fn unmark(&self, id: IntentId) {
        if let Ok(mut l) = self.live.lock() {
            l.remove(&id);
        }
    }

    /// Waits for the write's fragment writers, then turns the intent's
    /// blobs into garbage (nothing, if the commit closed it first).
    async fn abandon(self: Arc<Self>, id: IntentId, writers: TaskTracker) {
        writers.close();
        writers.wait().await;
        match self.meta.abandon_intent(id, now_ms()).await {
            Ok(()) => self.garbage_added.notify_waiters(),
            // Left open, it is swept later (`sweep_intents`) or at the next start.
            Err(e) => tracing::error!(error = %e, "could not record an abandoned write as garbage"),
        }
        self.unmark(id);
    }
}

/// Ends an open intent: [`IntentGuard::closed`] after its commit, else
/// abandoned, explicitly or when dropped (then in a task of its own, as
/// `Drop` cannot wait).
#[derive(Debug)]
pub struct IntentGuard {
    id: IntentId,
    writers: TaskTracker,
    owner: Option<Arc<LiveIntents>>,
}

impl IntentGuard {
    pub fn id(&self) -> IntentId {
        self.id
    }

    /// The commit closed the intent.
    pub fn closed(mut self) {
        if let Some(owner) = self.owner.take() {
            owner.unmark(self.id);
        }
    }

    /// The write will not commit: waits for its writers, then its blobs
    /// become garbage. In a task of its own, awaited: a caller dropped
    /// meanwhile does not cut it short.
    pub async fn abandon(mut self) {
        if let Some(owner) = self.owner.take() {
            let done = tokio::spawn(owner.abandon(self.id, self.writers.clone()));
            let _ = done.await;
        }
    }
}

impl Drop for IntentGuard {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        // Without a runtime (the process is stopping), the intent stays
        // open and the next start sweeps it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracing::info!(
                intent = self.id.0,
                "request dropped before its commit: its write is abandoned"
            );
            runtime.spawn(owner.abandon(self.id, self.writers.clone()));
        }
    }
}

impl Gateway {
    /// Builds the gateway over an opened metadata store. Fails if a policy
    /// needs more backends than there are.
    pub fn new(config: GatewayConfig, meta: MetaStore) -> Result<Arc<Self>, GatewayError> {
        let Some(default_policy) = config.policies.get(&config.default_policy).cloned() else {
            return Err(GatewayError::Config(format!(
                "default policy {:?} is not defined",
                config.default_policy
            )));
        };
        for p in config.policies.values() {
            if p.code.width() > config.backends.len() {
                return Err(GatewayError::Config(format!(
                    "policy {:?} needs {} backends, {} are configured",
                    p.name,
                    p.code.width(),
                    config.backends.len()
                )));
            }
        }
        // Every call to a backend goes through its monitor, so reads,
        // writes, the collector and the probe all feed the health board.
        let set = BackendSet::monitored(config.backends.iter().cloned());
        let users = Arc::new(Users::load(&meta, &config.identities)?);
        let mut read_params = ReadParams::new(Arc::new(config.identities));
        read_params.fragment_timeout = config.fragment_timeout;
        read_params.keys = KeyCache::new(config.key_cache_entries);
        // A version's opened keys leave memory with its row.
        let keys = read_params.keys.clone();
        meta.on_version_removed(Arc::new(move |manifest| keys.forget(manifest)));
        // Many requests run at once on a gateway, so each one needs less
        // read-ahead than a lone stream: 1 MiB batches, 2 in flight keep a
        // GET at about 4 MiB (BENCHMARKS.md, "Load").
        read_params.batch_bytes = READ_BATCH_BYTES;
        read_params.batches_in_flight = READ_BATCHES_IN_FLIGHT;
        let metadata: Arc<dyn Metadata> = Arc::new(meta.clone());
        Ok(Arc::new(Self {
            metadata: metadata.clone(),
            meta,
            backends: set.iter().map(|b| (b.id().clone(), b.clone())).collect(),
            set,
            policies: config.policies,
            bucket_policies: config.bucket_policies,
            default_policy,
            recipients: Arc::new(config.recipients),
            read_params,
            placer: config.placer,
            readers: Mutex::new(HashMap::new()),
            intents: Arc::new(LiveIntents {
                meta: metadata,
                live: Mutex::new(HashSet::new()),
                garbage_added: Notify::new(),
            }),
            metrics: Metrics::default(),
            server_load: Mutex::new(None),
            draining: Mutex::new(BTreeSet::new()),
            users,
        }))
    }

    /// The user whose access key this is (not the configured one).
    pub fn user(&self, access_key: &str) -> Option<User> {
        self.users.get(access_key)
    }

    /// The user named `name`.
    pub fn user_named(&self, name: &str) -> Option<User> {
        self.users.list().into_iter().find(|u| u.name == name)
    }

    /// The user whose canonical id this is.
    pub fn user_by_canonical_id(&self, id: &str) -> Option<User> {
        self.users
            .list()
            .into_iter()
            .find(|u| u.canonical_id() == id)
    }

    /// Reads the users again from the store (another gateway sharing it
    /// changed them).
    pub async fn refresh_users(self: &Arc<Self>) -> Result<(), GatewayError> {
        let gw = self.clone();
        tokio::task::spawn_blocking(move || gw.users.refresh(&gw.meta, &gw.read_params.identities))
            .await
            .map_err(|e| GatewayError::Internal(format!("users task failed: {e}")))?
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<User> {
        self.users.list()
    }

    /// Creates a user `name` with a fresh access key.
    pub async fn create_user(&self, name: &str) -> Result<User, GatewayError> {
        self.users
            .create(self.metadata(), &self.recipients, name, now_ms())
            .await
    }

    /// Deletes the user with this name or access key (not while it owns
    /// buckets); returns its name.
    pub async fn delete_user(&self, user: &str) -> Result<String, GatewayError> {
        self.users.delete(self.metadata(), user).await
    }

    /// The metadata behind its traits: all the S3 layer calls (issue 17:
    /// another engine can stand in for redb there).
    pub fn metadata(&self) -> &dyn Metadata {
        self.metadata.as_ref()
    }

    /// The metadata store itself, for the journal writer, the jobs and the
    /// admin API's reports (issue 23 moves them onto the traits).
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// The intents of running requests (and repairs), and the garbage
    /// collectors' wake-up.
    pub fn intents(&self) -> &Arc<LiveIntents> {
        &self.intents
    }

    /// The backend configured as `id`.
    pub fn backend(&self, id: &BackendId) -> Option<&Arc<dyn Backend>> {
        self.backends.get(id)
    }

    /// A fragment read slower than this counts as failed.
    pub fn fragment_timeout(&self) -> Duration {
        self.read_params.fragment_timeout
    }

    pub fn backend_set(&self) -> &BackendSet {
        &self.set
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.backends.values()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// Everything is sealed to these (the journal too).
    pub fn recipients(&self) -> Arc<Recipients> {
        self.recipients.clone()
    }

    /// Where [`Gateway::server_load`] reads the listener's load from.
    pub fn set_server_load(
        &self,
        source: impl Fn() -> crate::metrics::ServerLoad + Send + Sync + 'static,
    ) {
        *self.server_load.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(source));
    }

    /// The S3 listener's load now (zeros before it starts).
    pub fn server_load(&self) -> crate::metrics::ServerLoad {
        self.server_load
            .lock()
            .map(|s| s.as_ref().map(|f| f()).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The placer of `bucket`'s policy.
    pub fn placer_for(&self, bucket: &str) -> &Arc<dyn Placer> {
        self.policy(bucket).placer.as_ref().unwrap_or(&self.placer)
    }

    /// Keeps `version`'s blobs from the garbage collector while the guard
    /// lives (a reader that is not a GET: repair, scrub).
    pub fn hold_version(self: &Arc<Self>, version: VersionId) -> ReadGuard {
        if let Ok(mut readers) = self.readers.lock() {
            *readers.entry(version).or_insert(0) += 1;
        }
        ReadGuard {
            gateway: self.clone(),
            version,
            object: None,
        }
    }

    /// The policy of buckets not mapped to another; it places the manifest
    /// journal, and with it the objects kept inline.
    pub fn default_policy(&self) -> &Policy {
        &self.default_policy
    }

    fn policy(&self, bucket: &str) -> &Policy {
        self.bucket_policies
            .get(bucket)
            .and_then(|name| self.policies.get(name))
            .unwrap_or(&self.default_policy)
    }

    /// Ready when enough backends are healthy for the default policy's
    /// write quorum. Either way, a line per backend says how it is.
    pub fn ready(&self) -> (bool, String) {
        let policy = self.policy("");
        let candidates = self.health_snapshot();
        let healthy = candidates.iter().filter(|c| c.healthy).count();
        let mut text = match healthy >= policy.write_quorum {
            true => "ready\n".to_string(),
            false => format!(
                "not ready: {healthy} backends healthy, policy {:?} needs {} to accept writes\n",
                policy.name, policy.write_quorum
            ),
        };
        for (id, state) in self.set.board().snapshot() {
            let how = match (state.up, state.writable) {
                (true, true) => "up".to_string(),
                (true, false) => "up, read-only".to_string(),
                (false, _) => format!(
                    "DOWN for {:.0?} after {} failures: {}",
                    state.for_how_long,
                    state.consecutive_failures,
                    state.last_error.as_deref().unwrap_or("no answer")
                ),
            };
            text.push_str(&format!("backend {id}: {how}\n"));
        }
        (healthy >= policy.write_quorum, text)
    }

    /// Every backend as placement sees it: labels and capacity from
    /// configuration; health, free space and latency as observed.
    pub fn health_snapshot(&self) -> Vec<Candidate> {
        let board = self.set.board();
        self.backends
            .values()
            .map(|b| {
                let state = board.state(b.id());
                Candidate {
                    id: b.id().clone(),
                    labels: b.info().labels.clone(),
                    capacity_bytes: b.info().capacity_bytes,
                    free_bytes: state.as_ref().and_then(|s| s.free_bytes),
                    healthy: self.takes_writes(b.id(), state.as_ref()),
                    latency: state.and_then(|s| s.probe_latency),
                }
            })
            .collect()
    }

    /// Whether placement may put new fragments on `backend` now: up,
    /// writable and not being drained.
    fn takes_writes(&self, backend: &BackendId, state: Option<&BackendState>) -> bool {
        !self.is_draining(backend) && state.is_some_and(|s| s.up && s.writable)
    }

    /// Marks `backend` as being drained (or no longer): placement then
    /// sees it unhealthy, and puts new fragments elsewhere.
    pub fn set_draining(&self, backend: &BackendId, draining: bool) {
        let mut set = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        if draining {
            set.insert(backend.clone());
        } else {
            set.remove(backend);
        }
    }

    pub fn is_draining(&self, backend: &BackendId) -> bool {
        self.draining
            .lock()
            .map(|s| s.contains(backend))
            .unwrap_or(false)
    }

    /// Read requests sent because other fragments were late.
    pub fn hedged_fragment_reads(&self) -> u64 {
        self.set.board().hedges()
    }

    /// Payload keys held opened in memory.
    pub fn opened_keys(&self) -> usize {
        self.read_params.keys.len()
    }

    pub fn is_being_read(&self, version: &VersionId) -> bool {
        self.readers
            .lock()
            .map(|r| r.contains_key(version))
            .unwrap_or(true)
    }

    /// Writes `body` as a new version of `bucket/key` (not yet visible).
    /// `size` is the declared length: a body of another length fails.
    pub async fn write(
        &self,
        kind: IntentKind,
        bucket: &str,
        key: &str,
        body: impl Stream<Item = io::Result<Bytes>> + Send + Unpin,
        size: Option<u64>,
        meta: ObjectMeta,
    ) -> Result<Pending, GatewayError> {
        let policy = self.policy(bucket);
        // 0 is off: not even an empty body is kept inline then (a store
        // that older releases must read has no format 2 manifest). Only
        // the default policy's objects: the journal it places carries them.
        let inline_limit = match policy.name == self.default_policy.name {
            true => policy.inline_object_bytes,
            false => 0,
        };
        if kind == IntentKind::PUT
            && inline_limit > 0
            && let Some(size) = size.filter(|&s| s <= inline_limit)
            && self.can_ship_inline()
        {
            let body = ExactLength::new(body, Some(size));
            let limit = usize::try_from(size).unwrap_or(usize::MAX);
            let write = write_inline_object(body, &self.recipients, limit, meta, now_ms())
                .instrument(tracing::debug_span!("inline write", size))
                .await?;
            return Ok(Pending {
                write,
                intent: None,
            });
        }
        let (layout, quorum) = policy.layout_for(size)?;
        let request = Request {
            bucket,
            key,
            size_hint: size,
            content_type: meta.content_type.as_deref(),
            k: layout.code.k(),
            m: layout.code.m(),
            current: &[],
        };
        let candidates = self.health_snapshot();
        // A plugin call is bounded (100 ms deadline) and usually takes
        // tens of microseconds, so it runs inline.
        let placer = policy.placer.as_ref().unwrap_or(&self.placer);
        let chosen = tracing::info_span!("placement", k = request.k, m = request.m)
            .in_scope(|| placer.place(&request, &candidates))?;
        check(&request, &candidates, &chosen)?;
        let placement = Placement::new(self.backends_of(&chosen).map_err(GatewayError::Internal)?);
        let blobs: Vec<_> = chosen
            .iter()
            .cloned()
            .zip(placement.names().iter().cloned())
            .collect();
        let id = self.metadata.begin_intent(kind, blobs, now_ms()).await?;
        // From here on, a dropped request abandons the intent.
        self.intents.mark(id);
        let intent = IntentGuard {
            id,
            writers: placement.writers().clone(),
            owner: Some(self.intents.clone()),
        };

        let mut params =
            WriteParams::new(layout, self.recipients.clone()).with_write_quorum(quorum)?;
        params.stripes_in_flight = WRITE_STRIPES_IN_FLIGHT;
        let body = ExactLength::new(body, size);
        let result = write_object(body, &placement, &params, meta, now_ms()).await;
        match result {
            Ok(write) => {
                if !write.lost_fragments.is_empty() {
                    tracing::warn!(
                        bucket,
                        key,
                        lost = ?write.lost_fragments,
                        "write reached its quorum with fragments missing"
                    );
                }
                Ok(Pending {
                    write,
                    intent: Some(intent),
                })
            }
            Err(e) => {
                intent.abandon().await;
                Err(e.into())
            }
        }
    }

    /// Whether enough backends are healthy for the default policy's write
    /// quorum, as the manifest journal needs to carry an inline object off
    /// this disk. Otherwise a small PUT takes the fragment path, and fails
    /// there (503) as any PUT would, instead of being acknowledged with
    /// its bytes on this disk alone until the backends come back.
    fn can_ship_inline(&self) -> bool {
        let board = self.set.board();
        let writable = self
            .backends
            .keys()
            .filter(|id| self.takes_writes(id, board.state(id).as_ref()))
            .count();
        writable >= self.default_policy.write_quorum
    }

    /// The backends a placement chose, in its order.
    fn backends_of(&self, chosen: &[BackendId]) -> Result<Vec<Arc<dyn Backend>>, String> {
        chosen
            .iter()
            .map(|id| {
                self.backends
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("placed on unknown {id}"))
            })
            .collect()
    }

    /// Wakes the garbage collectors: there is new garbage.
    pub fn wake_collectors(&self) {
        self.intents.garbage_added.notify_waiters();
    }

    /// Commits a written version as `bucket/key` under `condition`, with
    /// its first `state` (tags).
    pub async fn commit(
        &self,
        bucket: &str,
        key: &str,
        pending: Pending,
        state: VersionState,
        condition: Condition,
    ) -> Result<(Manifest, Written), GatewayError> {
        let Pending { write, intent } = pending;
        // Kept before the commit: a DELETE right after it finds the key to
        // forget. A commit that fails, or is dropped, forgets it again.
        let envelopes: Vec<_> = write
            .manifest
            .segments
            .iter()
            .map(|s| s.envelope.clone())
            .collect();
        let keys = &self.read_params.keys;
        if let [envelope] = envelopes.as_slice() {
            keys.insert(&write.manifest.version_id, envelope, &write.key);
        }
        let mut unwritten = Unwritten {
            keys,
            envelopes,
            committed: false,
        };
        let result = self
            .metadata
            .put_object(
                bucket,
                key,
                write.manifest,
                state,
                intent.as_ref().map(IntentGuard::id),
                condition,
                now_ms(),
            )
            .instrument(tracing::info_span!("commit"))
            .await
            .map_err(GatewayError::from);
        match result {
            Ok(done) => {
                unwritten.committed = true;
                if let Some(intent) = intent {
                    intent.closed();
                }
                if done.1.replaced.is_some() {
                    self.wake_collectors();
                }
                Ok(done)
            }
            Err(e) => {
                drop(unwritten);
                if let Some(intent) = intent {
                    intent.abandon().await;
                }
                Err(e)
            }
        }
    }

    /// The version of `bucket/key` that `selector` names: `NoSuchKey` when
    /// there is no current version (or it is a delete marker, returned as
    /// `DeleteMarker` when asked for by id), `NoSuchVersion` when the id
    /// names none.
    pub async fn version(
        &self,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
    ) -> Result<(ObjectVersion, ObjectSummary, Manifest), GatewayError> {
        let row = self.metadata.object_version(bucket, key, selector).await?;
        match (row, selector) {
            (
                Some(VersionRow {
                    version,
                    summary,
                    manifest: Some(manifest),
                }),
                _,
            ) => Ok((version, summary, manifest)),
            (Some(marker), selector) => Err(GatewayError::DeleteMarker {
                version_id: marker.version.id(),
                latest: selector == VersionSelector::Latest,
            }),
            (None, VersionSelector::Latest) => Err(GatewayError::NoSuchKey),
            (None, _) => Err(GatewayError::Meta(MetaError::NoSuchVersion)),
        }
    }

    /// `range` of a version whose wanted segments are all inline in its
    /// manifest, decrypted at once; `None` for one stored in fragments
    /// ([`Gateway::read`] streams those). Nothing is fetched, so there is
    /// no garbage to keep and no damage to report: no guard.
    pub fn read_inline(
        &self,
        manifest: &Manifest,
        range: Option<Range<u64>>,
    ) -> Result<Option<Bytes>, GatewayError> {
        Ok(shardgate_pipeline::read_inline(
            manifest,
            range,
            &self.read_params,
        )?)
    }

    /// Streams `range` of a version. The returned guard keeps the version's
    /// fragments from the garbage collector; hold it until the stream ends.
    pub fn read(
        self: &Arc<Self>,
        manifest: Arc<Manifest>,
        range: Option<Range<u64>>,
    ) -> Result<(ObjectRead, ReadGuard), GatewayError> {
        let version = manifest.version_id;
        if let Ok(mut readers) = self.readers.lock() {
            *readers.entry(version).or_insert(0) += 1;
        }
        let guard = ReadGuard {
            gateway: self.clone(),
            version,
            object: None,
        };
        let mut params = self.read_params.clone();
        params.batch_bytes = self.batch_bytes_for(&manifest);
        let read = read_object(manifest, range, self.set.clone(), params)?;
        Ok((read, guard))
    }

    /// Plaintext per read batch for this version: enough that each of its
    /// k fragment reads is as large as its backend prefers (a remote one
    /// pays a round trip per request), between `READ_BATCH_BYTES` and
    /// `MAX_READ_BATCH_BYTES`.
    fn batch_bytes_for(&self, manifest: &Manifest) -> usize {
        batch_bytes(manifest.segments.iter().map(|segment| {
            let preferred = segment
                .fragments
                .iter()
                .filter_map(|f| self.backends.get(&f.backend))
                .map(|b| b.preferred_read_bytes())
                .max()
                .unwrap_or(0);
            (segment.layout.code.k(), preferred)
        }))
    }
}

/// The read batch for segments of (k, the largest read their backends
/// prefer): k such reads per batch, within the bounds.
fn batch_bytes(segments: impl Iterator<Item = (usize, u64)>) -> usize {
    let wanted = segments
        .map(|(k, preferred)| preferred.saturating_mul(k as u64))
        .max()
        .unwrap_or(0);
    usize::try_from(wanted)
        .unwrap_or(usize::MAX)
        .clamp(READ_BATCH_BYTES, MAX_READ_BATCH_BYTES)
}

/// Fails a body whose length differs from the declared one, so a cut
/// connection never becomes a short object.
struct ExactLength<S> {
    inner: S,
    expected: Option<u64>,
    seen: u64,
    done: bool,
}

impl<S> ExactLength<S> {
    fn new(inner: S, expected: Option<u64>) -> Self {
        Self {
            inner,
            expected,
            seen: 0,
            done: false,
        }
    }
}

impl<S> Stream for ExactLength<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.seen += b.len() as u64;
                if self.expected.is_some_and(|e| self.seen > e) {
                    self.done = true;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the body is longer than its declared length",
                    ))));
                }
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(None) => {
                self.done = true;
                match self.expected {
                    Some(e) if e != self.seen => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the body ended after {} of {e} bytes", self.seen),
                    )))),
                    _ => Poll::Ready(None),
                }
            }
            other => other,
        }
    }
}

/// The name placement plugins see for the manifest journal's units (no S3
/// bucket can have it: S3 names do not start with a dot).
pub const JOURNAL_BUCKET: &str = ".journal";

/// The journal's units are placed like objects of the default policy: its
/// k + m, its write quorum, its placement.
impl shardgate_journal::Placement for Gateway {
    fn place_unit(&self, bytes: u64) -> Result<shardgate_journal::UnitPlacement, String> {
        let policy = &self.default_policy;
        let request = Request {
            bucket: JOURNAL_BUCKET,
            key: "",
            size_hint: Some(bytes),
            content_type: None,
            k: policy.code.k(),
            m: policy.code.m(),
            current: &[],
        };
        let candidates = self.health_snapshot();
        let placer = policy.placer.as_ref().unwrap_or(&self.placer);
        let chosen = placer
            .place(&request, &candidates)
            .map_err(|e| e.to_string())?;
        check(&request, &candidates, &chosen).map_err(|e| e.to_string())?;
        let backends = self.backends_of(&chosen)?;
        Ok(shardgate_journal::UnitPlacement {
            k: request.k,
            m: request.m,
            quorum: policy.write_quorum,
            backends,
        })
    }

    fn backend(&self, id: &BackendId) -> Option<Arc<dyn Backend>> {
        self.backends.get(id).cloned()
    }

    /// Backends drained or down, when enough others are healthy to put a
    /// unit's k + m blobs elsewhere (otherwise moving achieves nothing).
    fn unavailable(&self) -> Vec<BackendId> {
        let (healthy, away): (Vec<_>, Vec<_>) =
            self.health_snapshot().into_iter().partition(|c| c.healthy);
        match healthy.len() >= self.default_policy.code.width() {
            true => away.into_iter().map(|c| c.id).collect(),
            false => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_backends_get_reads_of_the_size_they_prefer_within_bounds() {
        // Local disks: the default batch.
        assert_eq!(batch_bytes([(4, 0)].into_iter()), READ_BATCH_BYTES);
        // 4 + 2 over peers that prefer 1 MiB reads: four of them per batch.
        assert_eq!(batch_bytes([(4, 1 << 20)].into_iter()), 4 << 20);
        // The largest segment's need wins; a wide code is capped.
        assert_eq!(
            batch_bytes([(1, 1 << 20), (4, 1 << 20)].into_iter()),
            4 << 20
        );
        assert_eq!(
            batch_bytes([(16, 1 << 20)].into_iter()),
            MAX_READ_BATCH_BYTES
        );
        assert_eq!(
            batch_bytes([(4, u64::MAX)].into_iter()),
            MAX_READ_BATCH_BYTES
        );
        assert_eq!(batch_bytes(std::iter::empty()), READ_BATCH_BYTES);
    }
}
