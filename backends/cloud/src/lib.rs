//! Cloud buckets (S3, Google Cloud Storage, Azure Blob) as fragment stores.
//!
//! One implementation over `object_store`'s [`ObjectStore`], so the three
//! providers keep the same contract as the `fs` backend and pass the same
//! conformance suite. Layout under the configured prefix:
//!
//! ```text
//! <prefix>/blobs/<name>      committed blobs
//! ```
//!
//! How the contract maps onto object storage:
//!
//! - **Visible only on commit.** A blob up to one part ([`CloudBackend::part_size`])
//!   is buffered and sent by one PUT at commit; a larger one streams as a
//!   multipart upload, which the providers keep invisible until it is
//!   completed at commit. Memory per writer stays at most one part being
//!   filled plus [`PARTS_IN_FLIGHT`] parts being sent, whatever the size.
//! - **Nothing left behind.** `abort`, a failed write and a dropped writer
//!   abort the multipart upload, so no orphaned parts stay billed.
//! - **Never overwritten.** Single PUTs use a create-only precondition
//!   (`If-None-Match: *`); a multipart upload is checked with a HEAD just
//!   before it completes. Blob names are 128-bit random, so the window
//!   between that HEAD and the completion only matters to a caller that
//!   reuses a name on purpose.
//! - **Exact ranges.** A read that comes back short, or fails, is classified
//!   with a HEAD: a range outside the blob is `InvalidRange`, never a short
//!   read.
//! - **Bounded time.** Every request has the client's timeout and bounded
//!   retries (set by the caller's builder): a dead endpoint is an
//!   `Unavailable` error, never a hang.

mod azure;
mod gcs;
mod s3;

pub use azure::{AzureSettings, EMULATOR_ACCOUNT, EMULATOR_ENDPOINT};
pub use gcs::GcsSettings;
pub use s3::{S3Settings, Timeouts};

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UploadPart,
};
use shardgate_backend::{
    Backend, BackendError, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result, check_range,
};

/// Parts of one multipart upload sent at the same time.
pub const PARTS_IN_FLIGHT: usize = 2;

/// The smallest part S3 accepts (all but the last part).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// The default part size: memory per writer is about three parts.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;

/// A fragment store in a cloud bucket.
#[derive(Clone)]
pub struct CloudBackend(Arc<Inner>);

struct Inner {
    info: BackendInfo,
    store: Arc<dyn ObjectStore>,
    blobs: Path,
    part_size: usize,
}

impl fmt::Debug for CloudBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store's Display names the provider and bucket, never a secret.
        f.debug_struct("CloudBackend")
            .field("id", &self.0.info.id)
            .field("store", &self.0.store.to_string())
            .field("blobs", &self.0.blobs.as_ref())
            .finish()
    }
}

impl CloudBackend {
    /// A backend keeping its blobs under `prefix` (may be empty) of `store`.
    /// Parts of large blobs are `part_size` bytes, at least [`MIN_PART_SIZE`].
    pub fn new(
        info: BackendInfo,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        part_size: usize,
    ) -> Self {
        let prefix = Path::from(prefix);
        let blobs = prefix.clone().join("blobs");
        Self(Arc::new(Inner {
            info,
            store,
            blobs,
            part_size: part_size.max(MIN_PART_SIZE),
        }))
    }

    /// The size of a multipart upload's parts (and the largest blob sent by one PUT).
    pub fn part_size(&self) -> usize {
        self.0.part_size
    }

    fn path(&self, name: &BlobName) -> Path {
        self.0.blobs.clone().join(name.as_str())
    }

    fn error(
        &self,
        name: Option<&BlobName>,
        op: &'static str,
        e: object_store::Error,
    ) -> BackendError {
        classify(&self.0.info, name, op, e)
    }
}

fn classify(
    info: &BackendInfo,
    name: Option<&BlobName>,
    op: &'static str,
    e: object_store::Error,
) -> BackendError {
    let backend = info.id.clone();
    match (e, name) {
        (object_store::Error::NotFound { .. }, Some(blob)) => BackendError::NotFound {
            backend,
            blob: blob.clone(),
        },
        (
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
            Some(blob),
        ) => BackendError::AlreadyExists {
            backend,
            blob: blob.clone(),
        },
        (e, _) => BackendError::Unavailable {
            backend,
            reason: format!("{op}: {e}"),
        },
    }
}

#[async_trait]
impl Backend for CloudBackend {
    fn info(&self) -> &BackendInfo {
        &self.0.info
    }

    /// A cloud bills and delays every request whatever its size: reads of
    /// at least 1 MiB keep a GET's request count (and bill) low.
    fn preferred_read_bytes(&self) -> u64 {
        1 << 20
    }

    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        Ok(Box::new(CloudWriter {
            backend: self.clone(),
            name: name.clone(),
            path: self.path(name),
            buffer: BytesMut::new(),
            size: 0,
            upload: None,
            in_flight: VecDeque::new(),
        }))
    }

    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(name);
        if range.start >= range.end {
            let meta = self.stat(name).await?;
            check_range(&self.0.info, name, &range, meta.size)?;
            return Ok(Bytes::new());
        }
        let want = range.end - range.start;
        match self.0.store.get_range(&path, range.clone()).await {
            Ok(bytes) if bytes.len() as u64 == want => Ok(bytes),
            Ok(_) => {
                let meta = self.stat(name).await?;
                check_range(&self.0.info, name, &range, meta.size)?;
                Err(BackendError::Unavailable {
                    backend: self.0.info.id.clone(),
                    reason: format!("get {name}: short read of {}..{}", range.start, range.end),
                })
            }
            Err(object_store::Error::NotFound { .. }) => Err(BackendError::NotFound {
                backend: self.0.info.id.clone(),
                blob: name.clone(),
            }),
            Err(e) => {
                // A range past the end is a provider error (416); say which.
                if let Ok(meta) = self.stat(name).await {
                    check_range(&self.0.info, name, &range, meta.size)?;
                }
                Err(self.error(Some(name), "get", e))
            }
        }
    }

    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        let meta = self
            .0
            .store
            .head(&self.path(name))
            .await
            .map_err(|e| self.error(Some(name), "head", e))?;
        Ok(BlobMeta {
            name: name.clone(),
            size: meta.size,
        })
    }

    async fn delete(&self, name: &BlobName) -> Result<()> {
        // Object stores delete idempotently; the contract says NotFound.
        self.stat(name).await?;
        self.0
            .store
            .delete(&self.path(name))
            .await
            .map_err(|e| self.error(Some(name), "delete", e))
    }

    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        let info = &self.0.info;
        self.0
            .store
            .list(Some(&self.0.blobs))
            .filter_map(move |item| async move {
                match item {
                    Ok(meta) => {
                        let name = meta.location.filename()?;
                        // Anything not named like a blob is not ours.
                        let name = BlobName::new(name).ok()?;
                        Some(Ok(BlobMeta {
                            name,
                            size: meta.size,
                        }))
                    }
                    Err(e) => Some(Err(classify(info, None, "list", e))),
                }
            })
            .boxed()
    }

    async fn health(&self) -> Result<Health> {
        // One cheap request that needs the bucket and the credentials: a
        // listing of at most one page under the blobs prefix.
        let mut probe = self.0.store.list(Some(&self.0.blobs));
        if let Some(Err(e)) = probe.next().await {
            return Err(classify(&self.0.info, None, "health probe", e));
        }
        Ok(Health {
            // A bucket's size is not something a provider reports cheaply:
            // the configured capacity bounds placement, or nothing does.
            free_bytes: self.0.info.capacity_bytes.unwrap_or(u64::MAX),
            used_bytes: None,
            writable: true,
        })
    }
}

/// A blob being written: buffered up to one part, then a multipart upload.
struct CloudWriter {
    backend: CloudBackend,
    name: BlobName,
    path: Path,
    buffer: BytesMut,
    size: u64,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<UploadPart>,
}

impl CloudWriter {
    fn error(&self, op: &'static str, e: object_store::Error) -> BackendError {
        self.backend.error(Some(&self.name), op, e)
    }

    /// Sends the buffer as the next part, waiting while too many are in flight.
    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let upload = self
                .backend
                .0
                .store
                .put_multipart(&self.path)
                .await
                .map_err(|e| self.error("start multipart upload", e))?;
            self.upload = Some(upload);
        }
        let part = PutPayload::from(self.buffer.split().freeze());
        if let Some(upload) = self.upload.as_mut() {
            self.in_flight.push_back(upload.put_part(part));
        }
        while self.in_flight.len() > PARTS_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<()> {
        if let Some(part) = self.in_flight.pop_front() {
            part.await.map_err(|e| self.error("upload part", e))?;
        }
        Ok(())
    }

    async fn abort_upload(&mut self) -> Result<()> {
        self.in_flight.clear();
        match self.upload.take() {
            Some(mut upload) => upload
                .abort()
                .await
                .map_err(|e| self.error("abort multipart upload", e)),
            None => Ok(()),
        }
    }

    async fn finish(&mut self) -> Result<BlobMeta> {
        let meta = BlobMeta {
            name: self.name.clone(),
            size: self.size,
        };
        if self.upload.is_none() {
            let payload = PutPayload::from(self.buffer.split().freeze());
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.backend
                .0
                .store
                .put_opts(&self.path, payload, opts)
                .await
                .map_err(|e| self.error("put", e))?;
            return Ok(meta);
        }
        if !self.buffer.is_empty() {
            self.send_part().await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        match self.backend.0.store.head(&self.path).await {
            Ok(_) => {
                return Err(BackendError::AlreadyExists {
                    backend: self.backend.0.info.id.clone(),
                    blob: self.name.clone(),
                });
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error("head before completing", e)),
        }
        if let Some(upload) = self.upload.as_mut() {
            upload.complete().await.map_err(|e| {
                self.backend
                    .error(Some(&self.name), "complete multipart upload", e)
            })?;
        }
        self.upload = None;
        Ok(meta)
    }
}

#[async_trait]
impl BlobWriter for CloudWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.size += data.len() as u64;
        let mut data = data;
        let part_size = self.backend.0.part_size;
        while !data.is_empty() {
            let room = part_size - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data.split_to(take));
            // A full part goes out once more bytes follow (or an upload is
            // already under way), so a blob of exactly one part is still a
            // single PUT.
            let full = self.buffer.len() == part_size;
            if full
                && (!data.is_empty() || self.upload.is_some())
                && let Err(e) = self.send_part().await
            {
                let _ = self.abort_upload().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<BlobMeta> {
        match self.finish().await {
            Ok(meta) => Ok(meta),
            Err(e) => {
                if let Err(abort) = self.abort_upload().await {
                    tracing::warn!(blob = %self.name, error = %abort, "cannot abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_upload().await
    }
}

impl Drop for CloudWriter {
    fn drop(&mut self) {
        // A writer dropped mid-upload (a client that went away) still
        // aborts its upload, in the background when a runtime is there.
        if let Some(mut upload) = self.upload.take() {
            self.in_flight.clear();
            let name = self.name.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = upload.abort().await {
                        tracing::warn!(blob = %name, error = %e, "cannot abort a dropped multipart upload");
                    }
                });
            } else {
                tracing::warn!(blob = %name, "multipart upload dropped outside a runtime: left to the bucket's lifecycle rule");
            }
        }
    }
}
