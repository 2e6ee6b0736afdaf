//! The metadata as the S3 layer sees it: async traits grouped by resource,
//! so that another engine (issue 23's PostgreSQL) can stand in for redb
//! without touching the S3 layer. [`MetaStore`] implements them by running
//! each call on the blocking pool.
//!
//! The rules stay where they are: every method is one S3 rule in one
//! transaction of the implementation, and a method that changes what a
//! user owns takes the caller ([`Writer`]) and checks ownership inside that
//! transaction, not before it.
//!
//! Moved here so far: buckets and their configurations; versions'
//! deletes, tags, retention and legal hold; users. Reads, commits, uploads and
//! listings follow (ARCHITECTURE.md, "The metadata trait").

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{MetaError, Result};
use crate::store::{BucketRecord, CorsRule, Deleted, MetaStore, ObjectSummary, UserRecord, Writer};
use crate::version::{ObjectLock, ObjectVersion, Retention, VersionSelector, Versioning};

/// Buckets and their configurations.
#[async_trait]
pub trait Buckets: Send + Sync + std::fmt::Debug {
    /// Creates a bucket owned by user `owner` (`None`: the configured
    /// user), with Object Lock (and so versioning) when `object_lock`.
    async fn create_bucket(
        &self,
        bucket: &str,
        object_lock: bool,
        owner: Option<&str>,
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

/// Everything the gateway asks of its metadata.
pub trait Metadata: Buckets + Versions + Users {}

impl<T: Buckets + Versions + Users> Metadata for T {}

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
        now_unix_ms: u64,
    ) -> Result<()> {
        let (store, bucket, owner) = (self.clone(), bucket.to_string(), owner.map(str::to_string));
        run(move || store.create_bucket_with(&bucket, object_lock, owner.as_deref(), now_unix_ms))
            .await
    }

    async fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>> {
        let (store, bucket) = (self.clone(), bucket.to_string());
        run(move || store.bucket(&bucket)).await
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
