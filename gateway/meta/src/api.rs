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
//! Moved here so far: buckets and their configurations. Versions, uploads
//! and listings follow (ARCHITECTURE.md, "The metadata trait").

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{MetaError, Result};
use crate::store::{BucketRecord, CorsRule, MetaStore, Writer};
use crate::version::{ObjectLock, Versioning};

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

/// Everything the gateway asks of its metadata.
pub trait Metadata: Buckets {}

impl<T: Buckets> Metadata for T {}

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
        let (store, caller, bucket) = (self.clone(), caller.clone(), bucket.to_string());
        run(move || store.delete_bucket(&caller, &bucket)).await
    }

    async fn set_versioning(
        &self,
        caller: &Writer,
        bucket: &str,
        versioning: Versioning,
    ) -> Result<()> {
        let (store, caller, bucket) = (self.clone(), caller.clone(), bucket.to_string());
        run(move || store.set_versioning(&caller, &bucket, versioning)).await
    }

    async fn set_bucket_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        let (store, caller, bucket, tags) = (
            self.clone(),
            caller.clone(),
            bucket.to_string(),
            tags.clone(),
        );
        run(move || store.set_bucket_tags(&caller, &bucket, &tags)).await
    }

    async fn set_bucket_cors(
        &self,
        caller: &Writer,
        bucket: &str,
        rules: &[CorsRule],
    ) -> Result<()> {
        let (store, caller, bucket, rules) = (
            self.clone(),
            caller.clone(),
            bucket.to_string(),
            rules.to_vec(),
        );
        run(move || store.set_bucket_cors(&caller, &bucket, &rules)).await
    }

    async fn set_object_lock(
        &self,
        caller: &Writer,
        bucket: &str,
        lock: &ObjectLock,
    ) -> Result<()> {
        let (store, caller, bucket, lock) = (
            self.clone(),
            caller.clone(),
            bucket.to_string(),
            lock.clone(),
        );
        run(move || store.set_object_lock(&caller, &bucket, &lock)).await
    }
}
