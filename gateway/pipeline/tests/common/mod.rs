//! Helpers shared by the pipeline tests: memory backends, keys, writes and
//! reads collected into vectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use shardgate_backend::{Backend, BackendId, BackendInfo};
use shardgate_backend_memory::MemoryBackend;
use shardgate_core::{ErasureCode, Identities, Manifest, StripeLayout};
use shardgate_pipeline::{
    BackendSet, ObjectMeta, ObjectWrite, PipelineError, Placement, ReadParams, ReadReport,
    WriteParams, read_object, write_object,
};

pub struct Cluster {
    pub mem: Vec<MemoryBackend>,
    pub set: BackendSet,
    pub identities: Arc<Identities>,
}

impl Cluster {
    pub fn new(n: usize) -> Self {
        let mem: Vec<MemoryBackend> = (0..n)
            .map(|i| MemoryBackend::new(BackendInfo::new(BackendId::new(format!("m{i}")).unwrap())))
            .collect();
        let set = BackendSet::new(mem.iter().map(|m| Arc::new(m.clone()) as Arc<dyn Backend>));
        let identities = Arc::new(Identities::generate());
        Self {
            mem,
            set,
            identities,
        }
    }

    pub fn placement(&self) -> Placement {
        Placement::new(
            self.mem
                .iter()
                .map(|m| Arc::new(m.clone()) as Arc<dyn Backend>)
                .collect(),
        )
    }

    pub fn params(&self, k: u32, m: u32, chunks_per_stripe: u32) -> WriteParams {
        let layout = StripeLayout::new(ErasureCode::new(k, m).unwrap(), chunks_per_stripe).unwrap();
        WriteParams::new(layout, Arc::new(self.identities.recipients()))
    }

    pub fn read_params(&self) -> ReadParams {
        let mut p = ReadParams::new(self.identities.clone());
        p.fragment_timeout = Duration::from_secs(5);
        p
    }

    pub async fn write(
        &self,
        data: &[u8],
        params: &WriteParams,
    ) -> Result<ObjectWrite, PipelineError> {
        write_object(
            body(data, 100_003),
            &self.placement(),
            params,
            ObjectMeta::default(),
            1_700_000_000_000,
        )
        .await
    }

    pub async fn read(
        &self,
        manifest: &Manifest,
        range: Option<std::ops::Range<u64>>,
    ) -> (Result<Vec<u8>, PipelineError>, ReadReport) {
        self.read_with(manifest, range, self.read_params()).await
    }

    pub async fn read_with(
        &self,
        manifest: &Manifest,
        range: Option<std::ops::Range<u64>>,
        params: ReadParams,
    ) -> (Result<Vec<u8>, PipelineError>, ReadReport) {
        match read_object(Arc::new(manifest.clone()), range, self.set.clone(), params) {
            Err(e) => (Err(e), ReadReport::default()),
            Ok(r) => {
                let report = r.report.clone();
                let out = r.stream.try_fold(Vec::new(), |mut acc, b| async move {
                    acc.extend_from_slice(&b);
                    Ok(acc)
                });
                (out.await, report)
            }
        }
    }

    /// The memory backend holding fragment `i` of segment 0.
    pub fn holder(
        &self,
        manifest: &Manifest,
        i: usize,
    ) -> (&MemoryBackend, shardgate_core::BlobName) {
        let f = &manifest.segments[0].fragments[i];
        let b = self.mem.iter().find(|m| m.info().id == f.backend).unwrap();
        (b, f.blob.clone())
    }

    pub fn total_blobs(&self) -> usize {
        self.mem.iter().map(|m| m.blob_names().len()).sum()
    }
}

/// A body stream cut into pieces of `piece` bytes.
pub fn body(
    data: &[u8],
    piece: usize,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static {
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(piece.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(pieces).boxed()
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A deterministic shuffle of 0..n.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}
