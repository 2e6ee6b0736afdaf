//! The whole pipeline on 1 GiB, on the machine's cores (2 here), side by
//! side with the kernels of `shardgate-core`'s bench in one `cargo bench`
//! run; `python3 scripts/bench_report.py` prints the ratios.
//!
//! - `pipeline/write/{k}+{m}`: `write_segment` into discarding backends (the
//!   pipeline's own cost: seal, encode, hash, fan-out, queues).
//! - `pipeline/write_md5/4+2`: `write_object`, which adds the MD5 ETag on its
//!   own thread.
//! - `pipeline/read/{k}+{m}`: `read_object` from memory backends, healthy.
//! - `pipeline/read_degraded/4+2`: the same with data fragments 0 and 1
//!   lost (Reed-Solomon decoding on every stripe).
//!
//! `SHARDGATE_BENCH_STRIPES_IN_FLIGHT=n` overrides `WriteParams::stripes_in_flight`
//! (default cores + 1; 3 and 6 measured the same within noise here);
//! `SHARDGATE_BENCH_READ_BATCH_BYTES` and `SHARDGATE_BENCH_READ_BATCHES_IN_FLIGHT`
//! override the read batching (`ReadParams`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::stream::{self, BoxStream, StreamExt};
use shardgate_backend::{
    Backend, BackendError, BackendId, BackendInfo, BlobMeta, BlobName, BlobWriter, Health,
};
use shardgate_backend_memory::MemoryBackend;
use shardgate_core::{ErasureCode, Identities, StripeLayout};
use shardgate_pipeline::{
    BackendSet, ObjectMeta, Placement, ReadParams, WriteParams, read_object, write_object,
    write_segment,
};

const GIB: usize = 1 << 30;
const PIECE: usize = 1 << 20;

/// Accepts and discards every blob.
#[derive(Debug)]
struct NullBackend(BackendInfo);

struct NullWriter(BlobName, u64);

#[async_trait]
impl BlobWriter for NullWriter {
    async fn write(&mut self, data: Bytes) -> shardgate_backend::Result<()> {
        self.1 += data.len() as u64;
        Ok(())
    }
    async fn commit(self: Box<Self>) -> shardgate_backend::Result<BlobMeta> {
        Ok(BlobMeta {
            name: self.0,
            size: self.1,
        })
    }
    async fn abort(self: Box<Self>) -> shardgate_backend::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl Backend for NullBackend {
    fn info(&self) -> &BackendInfo {
        &self.0
    }
    async fn create(&self, name: &BlobName) -> shardgate_backend::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(NullWriter(name.clone(), 0)))
    }
    async fn get(&self, name: &BlobName, _: Range<u64>) -> shardgate_backend::Result<Bytes> {
        Err(BackendError::NotFound {
            backend: self.0.id.clone(),
            blob: name.clone(),
        })
    }
    async fn stat(&self, name: &BlobName) -> shardgate_backend::Result<BlobMeta> {
        Err(BackendError::NotFound {
            backend: self.0.id.clone(),
            blob: name.clone(),
        })
    }
    async fn delete(&self, _: &BlobName) -> shardgate_backend::Result<()> {
        Ok(())
    }
    fn list(&self) -> BoxStream<'_, shardgate_backend::Result<BlobMeta>> {
        stream::empty().boxed()
    }
    async fn health(&self) -> shardgate_backend::Result<Health> {
        Ok(Health {
            free_bytes: u64::MAX,
            used_bytes: None,
            writable: true,
        })
    }
}

fn id(i: usize) -> BackendId {
    BackendId::new(format!("b{i}")).unwrap()
}

/// 1 GiB as 1 MiB pieces of pseudo-random bytes (one piece, shared).
fn gib_body() -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Unpin {
    let piece: Bytes = (0..PIECE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect::<Vec<u8>>()
        .into();
    stream::iter(std::iter::repeat_n(piece, GIB / PIECE).map(Ok))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = Arc::new(Identities::generate());
    let recipients = Arc::new(ids.recipients());
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Bytes(GIB as u64));

    for (k, m) in [(4u32, 2u32), (10, 4)] {
        let code = ErasureCode::new(k, m).unwrap();
        let mut params = WriteParams::new(StripeLayout::default_for(code), recipients.clone());
        params.stripes_in_flight = std::env::var("SHARDGATE_BENCH_STRIPES_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(params.stripes_in_flight);
        let width = code.width();
        let name = format!("{k}+{m}");

        let null: Vec<Arc<dyn Backend>> = (0..width)
            .map(|i| Arc::new(NullBackend(BackendInfo::new(id(i)))) as Arc<dyn Backend>)
            .collect();
        g.bench_function(format!("write/{name}"), |b| {
            b.to_async(&rt).iter(|| async {
                write_segment(gib_body(), &Placement::new(null.clone()), &params)
                    .await
                    .unwrap()
            })
        });
        if k == 4 {
            g.bench_function(format!("write_md5/{name}"), |b| {
                b.to_async(&rt).iter(|| async {
                    write_object(
                        gib_body(),
                        &Placement::new(null.clone()),
                        &params,
                        ObjectMeta::default(),
                        0,
                    )
                    .await
                    .unwrap()
                })
            });
        }

        // Reads need a stored object: written on first use only, so that a
        // filtered run (or a profile) of the writes does not include it.
        let mem: Vec<MemoryBackend> = (0..width)
            .map(|i| MemoryBackend::new(BackendInfo::new(id(i))))
            .collect();
        let placement: Vec<Arc<dyn Backend>> = mem
            .iter()
            .map(|b| Arc::new(b.clone()) as Arc<dyn Backend>)
            .collect();
        let stored = std::sync::OnceLock::new();
        let manifest = || {
            stored
                .get_or_init(|| {
                    let to = Placement::new(placement.clone());
                    let w = write_object(gib_body(), &to, &params, ObjectMeta::default(), 0);
                    Arc::new(rt.block_on(w).unwrap().manifest)
                })
                .clone()
        };
        let set = BackendSet::new(placement.clone());
        let mut read = ReadParams::new(ids.clone());
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        read.batch_bytes = env("SHARDGATE_BENCH_READ_BATCH_BYTES").unwrap_or(read.batch_bytes);
        read.batches_in_flight =
            env("SHARDGATE_BENCH_READ_BATCHES_IN_FLIGHT").unwrap_or(read.batches_in_flight);
        let read_all = |manifest: Arc<shardgate_core::Manifest>| {
            let (set, read) = (set.clone(), read.clone());
            async move {
                let r = read_object(manifest, None, set, read).unwrap();
                let n = r
                    .stream
                    .fold(0usize, |n, b| async move { n + b.unwrap().len() })
                    .await;
                assert_eq!(n, GIB);
            }
        };
        g.bench_function(format!("read/{name}"), |b| {
            let m = manifest();
            b.to_async(&rt).iter(|| read_all(m.clone()))
        });
        if k == 4 {
            g.bench_function(format!("read_degraded/{name}"), |b| {
                let m = manifest();
                for i in [0, 1] {
                    mem[i].lose(&m.segments[0].fragments[i].blob);
                }
                b.to_async(&rt).iter(|| read_all(m.clone()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
