//! The metadata as the S3 layer sees it: async traits grouped by resource,
//! so that another engine (issue 23's PostgreSQL) can stand in for redb
//! without touching the S3 layer. [`MetaStore`] implements them by running
//! each call on the blocking pool.
//!
//! The rules stay where they are: every method is one S3 rule in one
//! transaction of the implementation, and a method that changes a bucket's
//! configuration or a version takes the caller ([`Writer`], or the writer
//! in a commit's [`VersionState`]) and checks ownership inside that
//! transaction, not before it. Uploads and parts rely on the access check
//! before the call; their completion is a commit and is checked.
//!
//! The S3 layer reaches the metadata only through these traits. The
//! background jobs (scrub, repair, drain, rebalance, the garbage collector)
//! and the journal writer still call [`MetaStore`] itself: they are the
//! gateway's own bookkeeping, and issue 23 moves them with the engine
//! (ARCHITECTURE.md, "The metadata trait").

use std::collections::BTreeMap;

use async_trait::async_trait;

use shardgate_core::{BackendId, BlobName, Manifest, VersionId};

use crate::error::{MetaError, Result};
use crate::list::{ListPage, ListQuery, UploadPage, UploadQuery, VersionPage, VersionQuery};
use crate::store::{
    BucketAccess, BucketRecord, CompleteError, Condition, CorsRule, Deleted, IntentId, IntentKind,
    MetaStore, ObjectSummary, PartRecord, Refusal, UploadRecord, UserRecord, VersionRow,
    VersionState, Writer, Written,
};
use crate::version::{ObjectLock, ObjectVersion, Retention, VersionSelector, Versioning};

/// Buckets and their configurations.
#[async_trait]
pub trait Buckets: Send + Sync + std::fmt::Debug {
    /// Creates a bucket owned by user `owner` (`None`: the configured
    /// user), with Object Lock (and so versioning) when `object_lock`, and
    /// `settings` (its ACL and Object Ownership) applied in the same
    /// transaction.
    async fn create_bucket(
        &self,
        bucket: &str,
        object_lock: bool,
        owner: Option<&str>,
        settings: &[BucketAccess],
        now_unix_ms: u64,
    ) -> Result<()>;
    async fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>>;
    /// Every bucket, by name.
    async fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>>;
    /// Deletes an empty bucket.
    async fn delete_bucket(&self, caller: &Writer, bucket: &str) -> Result<()>;
    async fn set_versioning(
        &self,
        caller: &Writer,
        bucket: &str,
        versioning: Versioning,
    ) -> Result<()>;
    /// Replaces the bucket's tags (none: removes them).
    async fn set_bucket_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<()>;
    /// Replaces the bucket's CORS rules (none: removes them).
    async fn set_bucket_cors(
        &self,
        caller: &Writer,
        bucket: &str,
        rules: &[CorsRule],
    ) -> Result<()>;
    /// A number that changes after every committed change of any bucket
    /// record, so that the access check can keep records in memory: read
    /// it before the record, and read the record again once it differs.
    /// (An engine shared by several gateways must count the others'
    /// changes too.)
    fn bucket_changes(&self) -> u64;
    /// Sets or deletes the bucket's policy or Public Access Block.
    async fn set_bucket_access(
        &self,
        caller: &Writer,
        bucket: &str,
        setting: &BucketAccess,
    ) -> Result<()>;
    /// Sets the Object Lock configuration (versioning must be enabled).
    async fn set_object_lock(&self, caller: &Writer, bucket: &str, lock: &ObjectLock)
    -> Result<()>;
}

/// Object versions: deletes, and the state kept beside a manifest (tags,
/// retention, legal hold). Each call checks the caller owns the bucket.
#[async_trait]
pub trait Versions: Send + Sync {
    /// S3's DELETE without a version id: the null version goes, and a
    /// versioning bucket gets a delete marker.
    async fn delete_object(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        now_unix_ms: u64,
    ) -> Result<Deleted>;
    /// Deletes the version `selector` names for good; `None` when there
    /// was none.
    async fn delete_version(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Option<(ObjectVersion, ObjectSummary)>>;
    /// Several deletes in one transaction, each answering on its own.
    async fn delete_objects(
        &self,
        caller: &Writer,
        bucket: &str,
        keys: Vec<(String, VersionSelector)>,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Vec<Result<Deleted>>>;
    async fn set_object_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        tags: &BTreeMap<String, String>,
    ) -> Result<ObjectVersion>;
    /// Replaces the version's ACL if the version is still at `generation`
    /// (`Changed` otherwise: read it again, and build the ACL again from
    /// its owner).
    async fn set_object_acl(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        acl: &shardgate_authz::Acl,
        generation: u64,
    ) -> Result<ObjectVersion>;
    #[allow(clippy::too_many_arguments)]
    async fn set_retention(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        retention: Option<Retention>,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<ObjectVersion>;
    async fn set_legal_hold(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        on: bool,
    ) -> Result<ObjectVersion>;
}

/// S3 users besides the configured one, by access key.
#[async_trait]
pub trait Users: Send + Sync {
    /// Adds a user under `access_key`; the key and the name must be new.
    async fn create_user(&self, access_key: &str, user: &UserRecord) -> Result<()>;
    /// Every user: (access key, record), by access key.
    async fn users(&self) -> Result<Vec<(String, UserRecord)>>;
    /// Removes a user named by access key or name, unless it owns buckets.
    async fn delete_user(&self, user: &str) -> Result<UserRecord>;
}

/// Object versions' manifests: the write path's intents and commit, and
/// the reads.
#[async_trait]
pub trait Objects: Send + Sync {
    /// Records, durably, the blobs a write is about to create; call before
    /// its first byte is written.
    async fn begin_intent(
        &self,
        kind: IntentKind,
        blobs: Vec<(BackendId, BlobName)>,
        now_unix_ms: u64,
    ) -> Result<IntentId>;
    /// The write of `intent` will not commit: its blobs become garbage (an
    /// intent closed already is left as is).
    async fn abandon_intent(&self, intent: IntentId, now_unix_ms: u64) -> Result<()>;
    /// Commits a version of `bucket/key` under `condition`, with its first
    /// `state`, and closes `intent`; the version it replaces becomes
    /// garbage. The ownership check is on `state.writer`, in the commit's
    /// transaction. Hands the manifest back with what was written.
    #[allow(clippy::too_many_arguments)]
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        manifest: Manifest,
        state: VersionState,
        intent: Option<IntentId>,
        condition: Condition,
        now_unix_ms: u64,
    ) -> Result<(Manifest, Written)>;
    /// The version of `bucket/key` that `selector` names (a delete marker
    /// has no manifest); `NoSuchBucket` when the bucket does not exist.
    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
    ) -> Result<Option<VersionRow>>;
    /// Queues for repair the fragments a read found bad in `version`, each
    /// named by (segment, index, blob); returns those taken as suspects.
    #[allow(clippy::too_many_arguments)]
    async fn report_damage(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        version: VersionId,
        bad: Vec<(u32, u16, BlobName)>,
        why: u8,
        now_unix_ms: u64,
    ) -> Result<Vec<(u32, u16)>>;
}

/// Builds an upload's object from the parts its completion takes. It runs
/// inside the completion's transaction, so it must not do I/O: every
/// engine can call it there. It may run more than once (an engine of
/// several writers runs a conflicting transaction again): it answers from
/// the parts it is given, each time.
pub type BuildObject = Box<
    dyn FnMut(Vec<(u32, PartRecord)>) -> std::result::Result<(Manifest, VersionState), Refusal>
        + Send,
>;

/// Multipart uploads and their parts.
#[async_trait]
pub trait Uploads: Send + Sync {
    /// Starts an upload; returns its id (time-ordered).
    async fn create_upload(&self, bucket: &str, key: &str, record: &UploadRecord)
    -> Result<String>;
    /// The upload `upload` of `bucket/key`.
    async fn upload(&self, bucket: &str, key: &str, upload: &str) -> Result<UploadRecord>;
    /// Records part `number` and closes `intent`; a part sent again
    /// replaces the earlier one. `NoSuchUpload` (and the part's blobs
    /// become garbage) when the upload is gone.
    #[allow(clippy::too_many_arguments)]
    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        number: u32,
        part: &PartRecord,
        intent: IntentId,
        now_unix_ms: u64,
    ) -> Result<()>;
    /// Parts numbered above `after`, up to `max`, and whether more follow.
    async fn list_parts(
        &self,
        upload: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<(u32, PartRecord)>, bool)>;
    /// Completes an upload with the `chosen` parts (number, ETag), in
    /// ascending order, each but the last at least `min_part_bytes`; the
    /// parts not chosen become garbage.
    #[allow(clippy::too_many_arguments)]
    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        chosen: Vec<(u32, String)>,
        min_part_bytes: u64,
        condition: &Condition,
        now_unix_ms: u64,
        build: BuildObject,
    ) -> std::result::Result<(Manifest, Written), CompleteError>;
    /// Aborts an upload: its parts' fragments become garbage.
    async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        now_unix_ms: u64,
    ) -> Result<()>;
}

/// The three listings, one page at a time.
#[async_trait]
pub trait Listings: Send + Sync {
    async fn list_objects(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage>;
    async fn list_versions(&self, bucket: &str, query: &VersionQuery<'_>) -> Result<VersionPage>;
    async fn list_uploads(&self, bucket: &str, query: &UploadQuery<'_>) -> Result<UploadPage>;
}

/// Everything the gateway asks of its metadata.
pub trait Metadata: Buckets + Versions + Users + Objects + Uploads + Listings {}

impl<T: Buckets + Versions + Users + Objects + Uploads + Listings> Metadata for T {}

/// Runs a point read of the store where it is called. redb reads are
/// lock-free against writers and answer from its page cache in
/// microseconds, less than a hand-off to the blocking pool and back, which
/// was most of a small GET's cost in context switches (BENCHMARKS.md,
/// "Small objects: the per-request cost"). A page not cached costs the
/// calling worker one read of the disk, and a version's manifest is
/// decoded there too (a 10,000-part object's takes milliseconds, beside
/// the gigabytes its GET streams). Scans (listings, the walk to a null
/// version) and every write still go to the blocking pool.
fn read_here<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    f()
}

/// Runs a store call on the blocking pool.
async fn run<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| MetaError::Task(e.to_string()))?
}

#[async_trait]
impl Buckets for MetaStore {
    async fn create_bucket(
        &self,
        bucket: &str,
        object_lock: bool,
        owner: Option<&str>,
        settings: &[BucketAccess],
        now_unix_ms: u64,
    ) -> Result<()> {
        let (store, bucket, owner) = (self.clone(), bucket.to_string(), owner.map(str::to_string));
        let settings = settings.to_vec();
        run(move || {
            store.create_bucket_set(
                &bucket,
                object_lock,
                owner.as_deref(),
                &settings,
                now_unix_ms,
            )
        })
        .await
    }

    async fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>> {
        read_here(|| MetaStore::bucket(self, bucket))
    }

    async fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>> {
        let store = self.clone();
        run(move || store.list_buckets()).await
    }

    async fn delete_bucket(&self, caller: &Writer, bucket: &str) -> Result<()> {
        self.as_caller(caller, bucket, |s, c, b| s.delete_bucket(c, b))
            .await
    }

    async fn set_versioning(
        &self,
        caller: &Writer,
        bucket: &str,
        versioning: Versioning,
    ) -> Result<()> {
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_versioning(c, b, versioning)
        })
        .await
    }

    async fn set_bucket_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        let tags = tags.clone();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_bucket_tags(c, b, &tags)
        })
        .await
    }

    async fn set_bucket_cors(
        &self,
        caller: &Writer,
        bucket: &str,
        rules: &[CorsRule],
    ) -> Result<()> {
        let rules = rules.to_vec();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_bucket_cors(c, b, &rules)
        })
        .await
    }

    fn bucket_changes(&self) -> u64 {
        MetaStore::bucket_changes(self)
    }

    async fn set_bucket_access(
        &self,
        caller: &Writer,
        bucket: &str,
        setting: &BucketAccess,
    ) -> Result<()> {
        let setting = setting.clone();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_bucket_access(c, b, &setting)
        })
        .await
    }

    async fn set_object_lock(
        &self,
        caller: &Writer,
        bucket: &str,
        lock: &ObjectLock,
    ) -> Result<()> {
        let lock = lock.clone();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_object_lock(c, b, &lock)
        })
        .await
    }
}

impl MetaStore {
    /// Runs `f` with owned copies of the caller and the bucket's name.
    async fn as_caller<T: Send + 'static>(
        &self,
        caller: &Writer,
        bucket: &str,
        f: impl FnOnce(&MetaStore, &Writer, &str) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (store, caller, bucket) = (self.clone(), caller.clone(), bucket.to_string());
        run(move || f(&store, &caller, &bucket)).await
    }
}

#[async_trait]
impl Versions for MetaStore {
    async fn delete_object(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        now_unix_ms: u64,
    ) -> Result<Deleted> {
        let key = key.to_string();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.delete_object(c, b, &key, now_unix_ms)
        })
        .await
    }

    async fn delete_version(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Option<(ObjectVersion, ObjectSummary)>> {
        let key = key.to_string();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.delete_version(c, b, &key, &selector, bypass_governance, now_unix_ms)
        })
        .await
    }

    async fn delete_objects(
        &self,
        caller: &Writer,
        bucket: &str,
        keys: Vec<(String, VersionSelector)>,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Vec<Result<Deleted>>> {
        self.as_caller(caller, bucket, move |s, c, b| {
            s.delete_objects(c, b, &keys, bypass_governance, now_unix_ms)
        })
        .await
    }

    async fn set_object_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        tags: &BTreeMap<String, String>,
    ) -> Result<ObjectVersion> {
        let (key, tags) = (key.to_string(), tags.clone());
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_object_tags(c, b, &key, &selector, &tags)
        })
        .await
    }

    async fn set_object_acl(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        acl: &shardgate_authz::Acl,
        generation: u64,
    ) -> Result<ObjectVersion> {
        let (key, acl) = (key.to_string(), acl.clone());
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_object_acl(c, b, &key, &selector, &acl, generation)
        })
        .await
    }

    async fn set_retention(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        retention: Option<Retention>,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<ObjectVersion> {
        let key = key.to_string();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_retention(
                c,
                b,
                &key,
                &selector,
                retention,
                bypass_governance,
                now_unix_ms,
            )
        })
        .await
    }

    async fn set_legal_hold(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
        on: bool,
    ) -> Result<ObjectVersion> {
        let key = key.to_string();
        self.as_caller(caller, bucket, move |s, c, b| {
            s.set_legal_hold(c, b, &key, &selector, on)
        })
        .await
    }
}

#[async_trait]
impl Users for MetaStore {
    async fn create_user(&self, access_key: &str, user: &UserRecord) -> Result<()> {
        let (store, key, user) = (self.clone(), access_key.to_string(), user.clone());
        run(move || store.create_user(&key, &user)).await
    }

    async fn users(&self) -> Result<Vec<(String, UserRecord)>> {
        let store = self.clone();
        run(move || store.users()).await
    }

    async fn delete_user(&self, user: &str) -> Result<UserRecord> {
        let (store, user) = (self.clone(), user.to_string());
        run(move || store.delete_user(&user)).await
    }
}

#[async_trait]
impl Objects for MetaStore {
    async fn begin_intent(
        &self,
        kind: IntentKind,
        blobs: Vec<(BackendId, BlobName)>,
        now_unix_ms: u64,
    ) -> Result<IntentId> {
        let store = self.clone();
        run(move || store.begin_intent(kind, &blobs, now_unix_ms)).await
    }

    async fn abandon_intent(&self, intent: IntentId, now_unix_ms: u64) -> Result<()> {
        let store = self.clone();
        run(move || store.abandon_intent(intent, now_unix_ms)).await
    }

    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        manifest: Manifest,
        state: VersionState,
        intent: Option<IntentId>,
        condition: Condition,
        now_unix_ms: u64,
    ) -> Result<(Manifest, Written)> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        run(move || {
            let written = store.put_object_with(
                &bucket,
                &key,
                &manifest,
                &state,
                intent,
                &condition,
                now_unix_ms,
            )?;
            Ok((manifest, written))
        })
        .await
    }

    async fn object_version(
        &self,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
    ) -> Result<Option<VersionRow>> {
        match selector {
            // The null version may be any row of the key: a walk, which
            // the blocking pool takes.
            VersionSelector::Null => {
                let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
                run(move || store.object_version(&bucket, &key, &selector)).await
            }
            _ => read_here(|| MetaStore::object_version(self, bucket, key, &selector)),
        }
    }

    async fn report_damage(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        version: VersionId,
        bad: Vec<(u32, u16, BlobName)>,
        why: u8,
        now_unix_ms: u64,
    ) -> Result<Vec<(u32, u16)>> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        run(move || store.report_damage(&bucket, &key, seq, version, &bad, why, now_unix_ms)).await
    }
}

#[async_trait]
impl Uploads for MetaStore {
    async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        record: &UploadRecord,
    ) -> Result<String> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let record = record.clone();
        run(move || store.create_upload(&bucket, &key, &record)).await
    }

    async fn upload(&self, bucket: &str, key: &str, upload: &str) -> Result<UploadRecord> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let upload = upload.to_string();
        run(move || store.upload(&bucket, &key, &upload)).await
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        number: u32,
        part: &PartRecord,
        intent: IntentId,
        now_unix_ms: u64,
    ) -> Result<()> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let (upload, part) = (upload.to_string(), part.clone());
        run(move || store.put_part(&bucket, &key, &upload, number, &part, intent, now_unix_ms))
            .await
    }

    async fn list_parts(
        &self,
        upload: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<(u32, PartRecord)>, bool)> {
        let (store, upload) = (self.clone(), upload.to_string());
        run(move || store.list_parts(&upload, after, max)).await
    }

    async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        chosen: Vec<(u32, String)>,
        min_part_bytes: u64,
        condition: &Condition,
        now_unix_ms: u64,
        build: BuildObject,
    ) -> std::result::Result<(Manifest, Written), CompleteError> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let (upload, condition) = (upload.to_string(), condition.clone());
        tokio::task::spawn_blocking(move || {
            store.complete_upload(
                &bucket,
                &key,
                &upload,
                &chosen,
                min_part_bytes,
                &condition,
                now_unix_ms,
                build,
            )
        })
        .await
        .map_err(|e| CompleteError::from(MetaError::Task(e.to_string())))?
    }

    async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        now_unix_ms: u64,
    ) -> Result<()> {
        let (store, bucket, key) = (self.clone(), bucket.to_string(), key.to_string());
        let upload = upload.to_string();
        run(move || store.abort_upload(&bucket, &key, &upload, now_unix_ms)).await
    }
}

/// A listing's query with its strings owned, to cross to the blocking pool.
struct Owned {
    prefix: String,
    delimiter: Option<String>,
    after: Option<String>,
    marker: Option<String>,
}

impl Owned {
    fn new(
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&str>,
        marker: Option<&str>,
    ) -> Self {
        Owned {
            prefix: prefix.to_string(),
            delimiter: delimiter.map(str::to_string),
            after: after.map(str::to_string),
            marker: marker.map(str::to_string),
        }
    }
}

#[async_trait]
impl Listings for MetaStore {
    async fn list_objects(&self, bucket: &str, query: &ListQuery<'_>) -> Result<ListPage> {
        let (store, bucket, max) = (self.clone(), bucket.to_string(), query.max);
        let q = Owned::new(query.prefix, query.delimiter, query.after, None);
        run(move || {
            let query = ListQuery {
                prefix: &q.prefix,
                delimiter: q.delimiter.as_deref(),
                after: q.after.as_deref(),
                max,
            };
            store.list_objects(&bucket, &query)
        })
        .await
    }

    async fn list_versions(&self, bucket: &str, query: &VersionQuery<'_>) -> Result<VersionPage> {
        let (store, bucket) = (self.clone(), bucket.to_string());
        let (version_after, max) = (query.version_after, query.max);
        let q = Owned::new(query.prefix, query.delimiter, query.key_after, None);
        run(move || {
            let query = VersionQuery {
                prefix: &q.prefix,
                delimiter: q.delimiter.as_deref(),
                key_after: q.after.as_deref(),
                version_after,
                max,
            };
            store.list_versions(&bucket, &query)
        })
        .await
    }

    async fn list_uploads(&self, bucket: &str, query: &UploadQuery<'_>) -> Result<UploadPage> {
        let (store, bucket, max) = (self.clone(), bucket.to_string(), query.max);
        let q = Owned::new(
            query.prefix,
            query.delimiter,
            query.key_after,
            query.upload_after,
        );
        run(move || {
            let query = UploadQuery {
                prefix: &q.prefix,
                delimiter: q.delimiter.as_deref(),
                key_after: q.after.as_deref(),
                upload_after: q.marker.as_deref(),
                max,
            };
            store.list_uploads(&bucket, &query)
        })
        .await
    }
}
