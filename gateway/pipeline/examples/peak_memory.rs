//! Peak memory of the pipeline for one large object.
//!
//! Streams N GiB (default 1), generated on the fly, through `write_object`
//! onto 6 fs backends (4 + 2) in a temporary directory, reads it all back
//! through `read_object`, checks that a blake3 of what came out equals one
//! of what went in, and prints the process's peak resident set (VmHWM from
//! /proc/self/status). The object is never held in memory, so the peak is
//! the pipeline's own working set.
//!
//! ```sh
//! cargo run --release -p shardgate-pipeline --example peak_memory -- 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, stream};
use shardgate_backend::{Backend, BackendId, BackendInfo};
use shardgate_backend_fs::FsBackend;
use shardgate_core::{ErasureCode, Identities, StripeLayout};
use shardgate_pipeline::{
    BackendSet, ObjectMeta, Placement, ReadParams, WriteParams, read_object, write_object,
};

const PIECE: usize = 1 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn piece(i: u64) -> Bytes {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(PIECE);
    while v.len() < PIECE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

#[tokio::main]
async fn main() {
    let gib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let pieces = gib * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mut placement: Vec<Arc<dyn Backend>> = Vec::new();
    for i in 0..6 {
        let info = BackendInfo::new(BackendId::new(format!("disk{i}")).unwrap());
        placement.push(Arc::new(
            FsBackend::open(info, dir.path().join(format!("disk{i}")))
                .await
                .unwrap(),
        ));
    }
    let ids = Arc::new(Identities::generate());
    let layout = StripeLayout::default_for(ErasureCode::new(4, 2).unwrap());
    let params = WriteParams::new(layout, Arc::new(ids.recipients()));
    let baseline = status_kib("VmRSS:");

    let input_hash = Arc::new(std::sync::Mutex::new(blake3::Hasher::new()));
    let tap = input_hash.clone();
    let body = stream::iter(0..pieces).map(move |i| {
        let p = piece(i);
        tap.lock().unwrap().update(&p);
        Ok::<_, std::io::Error>(p)
    });
    let started = Instant::now();
    let w = write_object(
        Box::pin(body),
        &Placement::new(placement.clone()),
        &params,
        ObjectMeta::default(),
        0,
    )
    .await
    .unwrap();
    let write_s = started.elapsed().as_secs_f64();
    let after_write = status_kib("VmHWM:");

    let started = Instant::now();
    let read = read_object(
        Arc::new(w.manifest),
        None,
        BackendSet::new(placement),
        ReadParams::new(ids),
    )
    .unwrap();
    let mut out = blake3::Hasher::new();
    let mut n = 0u64;
    let mut s = read.stream;
    while let Some(b) = s.next().await {
        let b = b.unwrap();
        n += b.len() as u64;
        out.update(&b);
    }
    let read_s = started.elapsed().as_secs_f64();
    assert_eq!(n, pieces * PIECE as u64);
    assert_eq!(
        out.finalize(),
        input_hash.lock().unwrap().finalize(),
        "read back differs"
    );
    let peak = status_kib("VmHWM:");
    let gb = n as f64 / 1e9;
    println!(
        "object: {gib} GiB, 4+2, fs backends in {}",
        dir.path().display()
    );
    println!(
        "write: {:.2} GB/s (MD5 ETag included), read: {:.2} GB/s, bytes verified",
        gb / write_s,
        gb / read_s
    );
    println!(
        "RSS before: {} MiB, peak after write: {} MiB, peak after read: {} MiB",
        baseline / 1024,
        after_write / 1024,
        peak / 1024
    );
}
