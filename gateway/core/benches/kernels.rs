//! Kernel throughput, each alone, on one core: the parts whose chain bounds
//! the pipeline. Run `cargo bench -p shardgate-core`, then
//! `python3 scripts/bench_report.py` for GB/s and ratios (BENCHMARKS.md).
//!
//! - `aead/*`: sealing 1 MiB of plaintext as 16 age chunks: ring (what we
//!   use), RustCrypto chacha20poly1305 (what the age crate uses) and the age
//!   crate's own serial stream writer (16 MiB per iteration, header cost
//!   amortised).
//! - `rs_encode/*`, `rs_decode/*`: reed-solomon-simd vs reed-solomon-erasure
//!   (simd-accel) at (4,2), (10,4), (200,55) with our default shard sizes;
//!   decode loses min(m, k) data shards. Throughput counts data bytes.
//! - `blake3`, `memcpy`: 1 MiB.
//! - `stripe/*`: our `encode_stripe` / `decode_range` (the whole per-stripe
//!   chain) on one core.
//! - `keys/*`: the per-request costs of keys (issue 26): sealing a fresh
//!   file key to one and to two x25519 recipients (every PUT), unwrapping
//!   it (a GET whose key is not cached), the fingerprint that names a
//!   cached key, and SigV4's signing-key derivation (four HMAC-SHA256)
//!   against the one HMAC a cached signing key would leave.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use shardgate_core::layout::{CHUNK_BYTES, TAG_BYTES};
use shardgate_core::{
    Envelope, ErasureCode, Identities, StripeBuffer, StripeLayout, decode_range, encode_stripe,
};

const MIB: usize = 1 << 20;
const CODES: [(u32, u32); 3] = [(4, 2), (10, 4), (200, 55)];

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn aead(c: &mut Criterion) {
    let ids = Identities::generate();
    let recipients = ids.recipients();
    let (_, key) = Envelope::seal(&recipients).unwrap();
    let plain = data(MIB);
    let mut g = c.benchmark_group("aead");
    g.throughput(Throughput::Bytes(MIB as u64));
    let mut buf = vec![0u8; 16 * (CHUNK_BYTES + TAG_BYTES)];
    g.bench_function("ring", |b| {
        b.iter(|| {
            for (i, chunk) in plain.chunks(CHUNK_BYTES).enumerate() {
                let at = i * (CHUNK_BYTES + TAG_BYTES);
                let slot = &mut buf[at..at + CHUNK_BYTES + TAG_BYTES];
                slot[..CHUNK_BYTES].copy_from_slice(chunk);
                key.seal_chunk(i as u64, false, slot).unwrap();
            }
            black_box(&buf);
        })
    });
    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        g.bench_function("rustcrypto", |b| {
            b.iter(|| {
                for (i, chunk) in plain.chunks(CHUNK_BYTES).enumerate() {
                    let at = i * (CHUNK_BYTES + TAG_BYTES);
                    let slot = &mut buf[at..at + CHUNK_BYTES];
                    slot.copy_from_slice(chunk);
                    let mut nonce = [0u8; 12];
                    nonce[3..11].copy_from_slice(&(i as u64).to_be_bytes());
                    let tag = cipher
                        .encrypt_in_place_detached(&nonce.into(), b"", slot)
                        .unwrap();
                    black_box(tag);
                }
                black_box(&buf);
            })
        });
    }
    let big = data(16 * MIB);
    let r = age::x25519::Identity::generate().to_public();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("age_stream_writer", |b| {
        b.iter(|| {
            let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                .unwrap();
            let mut w = enc.wrap_output(std::io::sink()).unwrap();
            w.write_all(&big).unwrap();
            w.finish().unwrap();
        })
    });
    g.finish();
}

fn hashing_and_copy(c: &mut Criterion) {
    let src = data(MIB);
    let mut g = c.benchmark_group("kernel");
    g.throughput(Throughput::Bytes(MIB as u64));
    g.bench_function("blake3", |b| {
        b.iter(|| black_box(blake3::hash(black_box(&src))))
    });
    let mut dst = vec![0u8; MIB];
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    g.finish();
}

fn shard_len(k: u32, m: u32) -> usize {
    StripeLayout::default_for(ErasureCode::new(k, m).unwrap()).full_shard_bytes()
}

fn reed_solomon(c: &mut Criterion) {
    for (k, m) in CODES {
        let (ku, mu) = (k as usize, m as usize);
        let len = shard_len(k, m);
        let shards: Vec<Vec<u8>> = (0..ku)
            .map(|i| data(len).into_iter().map(|b| b ^ i as u8).collect())
            .collect();
        let name = format!("{k}+{m}");

        let mut g = c.benchmark_group("rs_encode");
        g.throughput(Throughput::Bytes((ku * len) as u64));
        let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(ku, mu, len).unwrap();
        g.bench_function(format!("simd/{name}"), |b| {
            b.iter(|| {
                for s in &shards {
                    enc.add_original_shard(s).unwrap();
                }
                black_box(enc.encode().unwrap().recovery(0).map(|r| r[0]));
            })
        });
        let rse = reed_solomon_erasure::galois_8::ReedSolomon::new(ku, mu).unwrap();
        let mut parity = vec![vec![0u8; len]; mu];
        g.bench_function(format!("erasure/{name}"), |b| {
            b.iter(|| {
                rse.encode_sep(&shards, &mut parity).unwrap();
                black_box(&parity);
            })
        });
        g.finish();

        // Decode with min(m, k) data shards lost.
        let lost = mu.min(ku);
        let simd_parity: Vec<Vec<u8>> = {
            for s in &shards {
                enc.add_original_shard(s).unwrap();
            }
            enc.encode()
                .unwrap()
                .recovery_iter()
                .map(<[u8]>::to_vec)
                .collect()
        };
        let mut g = c.benchmark_group("rs_decode");
        g.throughput(Throughput::Bytes((ku * len) as u64));
        let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(ku, mu, len).unwrap();
        g.bench_function(format!("simd/{name}"), |b| {
            b.iter(|| {
                for (i, s) in shards.iter().enumerate().skip(lost) {
                    dec.add_original_shard(i, s).unwrap();
                }
                for (i, p) in simd_parity.iter().enumerate().take(lost) {
                    dec.add_recovery_shard(i, p).unwrap();
                }
                black_box(dec.decode().unwrap().restored_original(0).map(|r| r[0]));
            })
        });
        rse.encode_sep(&shards, &mut parity).unwrap();
        let all: Vec<Option<Vec<u8>>> = shards.iter().chain(&parity).cloned().map(Some).collect();
        g.bench_function(format!("erasure/{name}"), |b| {
            b.iter_batched(
                || {
                    let mut v = all.clone();
                    for s in v.iter_mut().take(lost) {
                        *s = None;
                    }
                    v
                },
                |mut v| {
                    rse.reconstruct_data(&mut v).unwrap();
                    black_box(v)
                },
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

fn stripe_chain(c: &mut Criterion) {
    let ids = Identities::generate();
    let (env, key) = Envelope::seal(&ids.recipients()).unwrap();
    let opened = env.open(&ids).unwrap();
    for (k, m) in [(4u32, 2u32), (10, 4)] {
        let layout = StripeLayout::default_for(ErasureCode::new(k, m).unwrap());
        let plain = data(layout.stripe_plain_bytes());
        let name = format!("{k}+{m}");
        let mut g = c.benchmark_group("stripe");
        g.throughput(Throughput::Bytes(plain.len() as u64));
        // Steady state: fill the stripe from the body, encode, recycle the buffers.
        let encode = |spare: &mut (Vec<u8>, Vec<u8>)| {
            let mut buf = StripeBuffer::new(&layout, std::mem::take(&mut spare.0));
            buf.fill(&plain);
            let e =
                encode_stripe(&layout, &key, 0, buf, false, std::mem::take(&mut spare.1)).unwrap();
            black_box(&e.digests);
            *spare = (e.data, e.parity);
        };
        let mut spare = (Vec::new(), Vec::new());
        g.bench_function(format!("encode/{name}"), |b| b.iter(|| encode(&mut spare)));
        // The same chain on every core at once: what the machine allows.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        g.throughput(Throughput::Bytes((cores * 8 * plain.len()) as u64));
        g.bench_function(format!("encode_parallel/{name}"), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for _ in 0..cores {
                        s.spawn(|| {
                            let mut spare = (Vec::new(), Vec::new());
                            for _ in 0..8 {
                                encode(&mut spare);
                            }
                        });
                    }
                })
            })
        });
        g.throughput(Throughput::Bytes(plain.len() as u64));
        // Decode stripe 0 of a 2-stripe segment from its data shards (the healthy read).
        let enc = encode_stripe(
            &layout,
            &key,
            0,
            StripeBuffer::from_plaintext(&layout, &plain),
            false,
            Vec::new(),
        )
        .unwrap();
        let geometry = layout.geometry(2 * plain.len() as u64);
        let shards: Vec<Option<&[u8]>> = (0..(k + m) as usize)
            .map(|i| (i < k as usize).then(|| enc.shard(i)))
            .collect();
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                black_box(
                    decode_range(&geometry, &opened, 0, &shards, 0..plain.len() as u64).unwrap(),
                )
            })
        });
        g.throughput(Throughput::Bytes((cores * 8 * plain.len()) as u64));
        g.bench_function(format!("decode_parallel/{name}"), |b| {
            b.iter(|| {
                std::thread::scope(|s| {
                    for _ in 0..cores {
                        s.spawn(|| {
                            for _ in 0..8 {
                                black_box(
                                    decode_range(
                                        &geometry,
                                        &opened,
                                        0,
                                        &shards,
                                        0..plain.len() as u64,
                                    )
                                    .unwrap(),
                                );
                            }
                        });
                    }
                })
            })
        });
        g.finish();
    }
}

fn keys(c: &mut Criterion) {
    use hmac::{Hmac, Mac};
    let id = age::x25519::Identity::generate();
    let recovery = age::x25519::Identity::generate().to_public();
    let ids = Identities::new(vec![id.clone()]).unwrap();
    let one = shardgate_core::Recipients::new(vec![id.to_public()]).unwrap();
    let two = shardgate_core::Recipients::new(vec![id.to_public(), recovery]).unwrap();
    let (env, _) = Envelope::seal(&one).unwrap();
    let mut g = c.benchmark_group("keys");
    g.bench_function("seal_1_recipient", |b| {
        b.iter(|| black_box(Envelope::seal(&one).unwrap()))
    });
    g.bench_function("seal_2_recipients", |b| {
        b.iter(|| black_box(Envelope::seal(&two).unwrap()))
    });
    g.bench_function("open_x25519", |b| {
        b.iter(|| black_box(env.open(&ids).unwrap()))
    });
    g.bench_function("fingerprint", |b| b.iter(|| black_box(env.fingerprint())));
    let hmac = |key: &[u8], data: &[u8]| -> [u8; 32] {
        let mut m = <Hmac<sha2::Sha256>>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().into()
    };
    let secret = b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let string_to_sign = "AWS4-HMAC-SHA256\n20261206T174250Z\n20261206/us-east-1/s3/aws4_request\n\
                          98be860d072f05bffeb152151610a98c12910f75ab1e31bcf8c85ddc368ee626";
    g.bench_function("sigv4_signing_key", |b| {
        b.iter(|| {
            let k = hmac(secret, b"20261206");
            let k = hmac(&k, b"us-east-1");
            let k = hmac(&k, b"s3");
            black_box(hmac(&k, b"aws4_request"))
        })
    });
    let signing_key = hmac(secret, b"20261206");
    g.bench_function("sigv4_signature_with_key", |b| {
        b.iter(|| black_box(hmac(&signing_key, string_to_sign.as_bytes())))
    });
    g.finish();
}

criterion_group! { name = benches; config = config(); targets = aead, hashing_and_copy, reed_solomon, stripe_chain, keys }
criterion_main!(benches);
