//! An in-memory backend for unit tests, with fault injection.
//!
//! It keeps the whole backend contract (invisible until commit, no
//! overwrite, exact ranges) so tests of the layers above exercise real
//! semantics, and it can be told to fail, stall or corrupt on demand
//! ([`Faults`]) to test how those layers cope. Never use it for data.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use shardgate_backend::{
    Backend, BackendError, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result, check_range,
};

/// Faults to inject; all off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `create` and every write fail as unavailable.
    pub fail_writes: bool,
    /// Writes fail once a writer has received more than this many bytes.
    pub fail_writes_after_bytes: Option<u64>,
    /// `get` and `stat` fail as unavailable.
    pub fail_reads: bool,
    /// Every `get` sleeps this long first.
    pub read_delay: Option<Duration>,
    /// `get` flips one bit in the middle of what it returns.
    pub corrupt_reads: bool,
    /// The backend holds at most this many bytes; writes beyond get NoSpace.
    pub capacity_bytes: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    blobs: HashMap<BlobName, Bytes>,
    faults: Faults,
}

/// An in-memory backend. Cloning shares the same store.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    info: Arc<BackendInfo>,
    state: Arc<Mutex<State>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new(info: BackendInfo) -> Self {
        Self {
            info: Arc::new(info),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every update is one insert or remove), so a poisoned lock is safe
        // to reuse.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Changes the injected faults in place.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut self.lock().faults);
    }

    /// Names of the committed blobs.
    pub fn blob_names(&self) -> Vec<BlobName> {
        self.lock().blobs.keys().cloned().collect()
    }

    /// Drops a blob behind the backend's back (simulated loss).
    pub fn lose(&self, name: &BlobName) -> bool {
        self.lock().blobs.remove(name).is_some()
    }

    /// Flips one byte of a stored blob at `offset` (simulated bit rot).
    pub fn rot(&self, name: &BlobName, offset: usize) -> bool {
        let mut st = self.lock();
        let Some(blob) = st.blobs.get(name) else {
            return false;
        };
        if offset >= blob.len() {
            return false;
        }
        let mut copy = blob.to_vec();
        copy[offset] ^= 0x55;
        st.blobs.insert(name.clone(), copy.into());
        true
    }

    fn used(st: &State) -> u64 {
        st.blobs.values().map(|b| b.len() as u64).sum()
    }

    fn unavailable(&self, reason: &str) -> BackendError {
        BackendError::Unavailable {
            backend: self.info.id.clone(),
            reason: reason.into(),
        }
    }

    fn not_found(&self, name: &BlobName) -> BackendError {
        BackendError::NotFound {
            backend: self.info.id.clone(),
            blob: name.clone(),
        }
    }
}

struct MemoryWriter {
    backend: MemoryBackend,
    name: BlobName,
    buf: BytesMut,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let faults = self.backend.lock().faults.clone();
        if faults.fail_writes {
            return Err(self.backend.unavailable("injected write failure"));
        }
        let total = self.buf.len() as u64 + data.len() as u64;
        if faults
            .fail_writes_after_bytes
            .is_some_and(|limit| total > limit)
        {
            return Err(self.backend.unavailable("injected failure mid-write"));
        }
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<BlobMeta> {
        let mut st = self.backend.lock();
        if st.faults.fail_writes {
            return Err(self.backend.unavailable("injected write failure"));
        }
        if st.blobs.contains_key(&self.name) {
            return Err(BackendError::AlreadyExists {
                backend: self.backend.info.id.clone(),
                blob: self.name.clone(),
            });
        }
        let cap = st
            .faults
            .capacity_bytes
            .or(self.backend.info.capacity_bytes);
        if cap.is_some_and(|cap| MemoryBackend::used(&st) + self.buf.len() as u64 > cap) {
            return Err(BackendError::NoSpace {
                backend: self.backend.info.id.clone(),
            });
        }
        let size = self.buf.len() as u64;
        st.blobs.insert(self.name.clone(), self.buf.freeze());
        Ok(BlobMeta {
            name: self.name,
            size,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        if self.lock().faults.fail_writes {
            return Err(self.unavailable("injected write failure"));
        }
        Ok(Box::new(MemoryWriter {
            backend: self.clone(),
            name: name.clone(),
            buf: BytesMut::new(),
        }))
    }

    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        let faults = self.lock().faults.clone();
        if let Some(d) = faults.read_delay {
            tokio::time::sleep(d).await;
        }
        if faults.fail_reads {
            return Err(self.unavailable("injected read failure"));
        }
        let blob = self
            .lock()
            .blobs
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name))?;
        check_range(&self.info, name, &range, blob.len() as u64)?;
        let out = blob.slice(range.start as usize..range.end as usize);
        if faults.corrupt_reads && !out.is_empty() {
            let mut bad = out.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x01;
            return Ok(bad.into());
        }
        Ok(out)
    }

    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        let st = self.lock();
        if st.faults.fail_reads {
            return Err(self.unavailable("injected read failure"));
        }
        let blob = st.blobs.get(name).ok_or_else(|| self.not_found(name))?;
        Ok(BlobMeta {
            name: name.clone(),
            size: blob.len() as u64,
        })
    }

    async fn delete(&self, name: &BlobName) -> Result<()> {
        self.lock()
            .blobs
            .remove(name)
            .map(drop)
            .ok_or_else(|| self.not_found(name))
    }

    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        let metas: Vec<_> = self
            .lock()
            .blobs
            .iter()
            .map(|(name, b)| {
                Ok(BlobMeta {
                    name: name.clone(),
                    size: b.len() as u64,
                })
            })
            .collect();
        stream::iter(metas).boxed()
    }

    async fn health(&self) -> Result<Health> {
        let st = self.lock();
        let used = Self::used(&st);
        let cap = st
            .faults
            .capacity_bytes
            .or(self.info.capacity_bytes)
            .unwrap_or(u64::MAX);
        Ok(Health {
            free_bytes: cap.saturating_sub(used),
            used_bytes: Some(used),
            writable: !st.faults.fail_writes,
        })
    }
}
