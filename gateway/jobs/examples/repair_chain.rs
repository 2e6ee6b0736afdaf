//! The chain repair cannot beat, for `scripts/repair_bench.sh`: on a
//! stopped gateway's data dir (embedded default: fs sites under
//! `<data>/backends/<id>`), every fragment whose blob file is missing is
//! rebuilt the shortest way there is: read k of its segment's other
//! fragment files whole, Reed-Solomon per stripe (`rebuild_shards`, what
//! repair runs), write the rebuilt fragment (shards, then its digest
//! trailer) to `OUT/`, fsync. No placement, no intent, no verification of
//! the sources, no commit: repair does all of that on top.
//!
//!     repair_chain DATA_DIR OUT_DIR
//!
//! Prints `chain: N fragments, B bytes written in S s = R MiB/s`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use shardgate_core::{Digest, FragmentState, rebuild_shards};
use shardgate_meta::MetaStore;

fn blob_file(data: &Path, backend: &str, name: &str) -> PathBuf {
    data.join("backends")
        .join(backend)
        .join("blobs")
        .join(name.get(..2).unwrap_or("_"))
        .join(name)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (data, out) = match args.as_slice() {
        [_, data, out] => (PathBuf::from(data), PathBuf::from(out)),
        _ => return Err("usage: repair_chain DATA_DIR OUT_DIR".into()),
    };
    std::fs::create_dir_all(&out)?;
    let meta = MetaStore::open(&data.join("meta.redb"))?;
    let started = Instant::now();
    let (mut fragments, mut bytes) = (0u64, 0u64);
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let (batch, _) = meta.objects_after(cursor.as_deref(), 64)?;
        let Some(last) = batch.last() else { break };
        cursor = Some(last.row.clone());
        for shardgate_meta::StoredVersion { manifest, .. } in batch {
            for segment in &manifest.segments {
                let geometry = segment.geometry();
                let file = |i: usize| {
                    let f = &segment.fragments[i];
                    blob_file(&data, f.backend.as_str(), f.blob.as_str())
                };
                let wanted: Vec<usize> = (0..segment.fragments.len())
                    .filter(|&i| {
                        segment.fragments[i].state == FragmentState::Stored && !file(i).exists()
                    })
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                let k = segment.layout.code.k();
                let mut sources: Vec<(usize, Vec<u8>)> = Vec::new();
                for i in (0..segment.fragments.len()).filter(|i| !wanted.contains(i)) {
                    if sources.len() == k {
                        break;
                    }
                    sources.push((i, std::fs::read(file(i))?));
                }
                let mut rebuilt: Vec<Vec<u8>> = vec![Vec::new(); wanted.len()];
                let mut digests: Vec<Vec<u8>> = vec![Vec::new(); wanted.len()];
                for stripe in 0..geometry.stripe_count {
                    let at = geometry.shard_offset(stripe) as usize;
                    let len = geometry.shard_len(stripe);
                    let mut shards: Vec<Option<&[u8]>> = vec![None; segment.fragments.len()];
                    for (i, bytes) in &sources {
                        shards[*i] = Some(&bytes[at..at + len]);
                    }
                    for (j, shard) in rebuild_shards(&geometry, stripe, &shards, &wanted)?
                        .into_iter()
                        .enumerate()
                    {
                        digests[j].extend_from_slice(&Digest::of_shard(&shard).0);
                        rebuilt[j].extend_from_slice(&shard);
                    }
                }
                for (j, &i) in wanted.iter().enumerate() {
                    let mut f =
                        std::fs::File::create(out.join(segment.fragments[i].blob.as_str()))?;
                    f.write_all(&rebuilt[j])?;
                    f.write_all(&digests[j])?;
                    f.sync_all()?;
                    fragments += 1;
                    bytes += (rebuilt[j].len() + digests[j].len()) as u64;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "chain: {fragments} fragments, {bytes} bytes written in {secs:.2} s = {:.1} MiB/s",
        bytes as f64 / secs / 1048576.0
    );
    Ok(())
}
