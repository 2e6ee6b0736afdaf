//! The one trait every fragment store implements.
//!
//! A backend stores opaque, immutable **blobs** under opaque names. The
//! contract every implementation keeps (checked by the conformance suite in
//! `shardgate-backend-conformance`):
//!
//! - A blob becomes visible (get, stat, list) only when its writer commits,
//!   and then it is durable: a crash after `commit` returns loses nothing.
//! - A writer that is aborted, dropped or fails leaves nothing visible.
//! - Names are never overwritten: committing an existing name fails with
//!   [`BackendError::AlreadyExists`] and keeps the old bytes.
//! - `get` returns exactly the requested range or an error; a range outside
//!   the blob is [`BackendError::InvalidRange`], never a short read.
//! - Every failure is a typed [`BackendError`]; nothing panics on bad input.

pub mod buffers;
pub mod error;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
pub use shardgate_core::{BackendId, BlobName};

pub use crate::error::{BackendError, Result};

/// Static facts about a backend, from configuration: its id, its labels
/// (`region`, `provider`, `site`, and any others) and an optional capacity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// The backend's id.
    pub id: BackendId,
    /// Free-form labels; placement policies read them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The most bytes this backend may hold; `None` means the medium's size.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
}

impl BackendInfo {
    /// An unlabelled backend.
    pub fn new(id: BackendId) -> Self {
        Self {
            id,
            labels: BTreeMap::new(),
            capacity_bytes: None,
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// The value of a label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A blob as listed or statted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// The blob's name.
    pub name: BlobName,
    /// Its size in bytes.
    pub size: u64,
}

/// A live view of a backend's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Bytes that can still be written (the smaller of the medium's free
    /// space and what the configured capacity leaves).
    pub free_bytes: u64,
    /// Bytes held by committed blobs, when the backend knows it.
    pub used_bytes: Option<u64>,
    /// Whether writes are currently accepted.
    pub writable: bool,
}

/// Writes one blob. Nothing is visible until [`BlobWriter::commit`].
#[async_trait]
pub trait BlobWriter: Send {
    /// Appends bytes.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes the blob durable and visible under its name.
    async fn commit(self: Box<Self>) -> Result<BlobMeta>;
    /// Discards everything written. Dropping the writer does the same.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A fragment store.
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// Id, labels and capacity.
    fn info(&self) -> &BackendInfo;

    /// Starts writing blob `name`.
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>>;

    /// Reads `range` of a committed blob: exactly that many bytes or an error.
    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes>;

    /// Size of a committed blob.
    async fn stat(&self, name: &BlobName) -> Result<BlobMeta>;

    /// Deletes a committed blob; [`BackendError::NotFound`] if there is none.
    async fn delete(&self, name: &BlobName) -> Result<()>;

    /// Every committed blob, in no particular order.
    fn list(&self) -> BoxStream<'_, Result<BlobMeta>>;

    /// Free space and writability, measured now.
    async fn health(&self) -> Result<Health>;

    /// The backend's id.
    fn id(&self) -> &BackendId {
        &self.info().id
    }

    /// The fewest bytes one read should ask for to be worth its round trip.
    /// A remote backend (a peer, a cloud) pays a request's latency and
    /// price whatever its size, so a GET reads further ahead over it; a
    /// local disk answers any size at once (0).
    fn preferred_read_bytes(&self) -> u64 {
        0
    }

    /// Proof of storage: the bytes of `ranges` of a blob, as the answer to
    /// a challenge carrying a fresh `nonce`. A backend that can answer in
    /// one round trip and bind its answer to the nonce (a peer) does; the
    /// others read each range. The caller checks the bytes against the
    /// manifest's digests.
    async fn challenge(
        &self,
        name: &BlobName,
        nonce: [u8; 32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        let _ = nonce;
        let mut chunks = Vec::with_capacity(ranges.len());
        for range in ranges {
            chunks.push(self.get(name, range.clone()).await?);
        }
        Ok(chunks)
    }

    /// Writes a whole blob from memory and commits it.
    async fn put(&self, name: &BlobName, data: Bytes) -> Result<BlobMeta> {
        let mut w = self.create(name).await?;
        w.write(data).await?;
        w.commit().await
    }
}

/// Checks a requested range against a blob's size.
pub fn check_range(
    info: &BackendInfo,
    name: &BlobName,
    range: &Range<u64>,
    size: u64,
) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(BackendError::InvalidRange {
            backend: info.id.clone(),
            blob: name.clone(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(())
}
