//! A short run of every fuzz target in CI: each found crash kept in
//! `corpus/<target>/` (a regression test), then random inputs from a fixed
//! seed: bytes of random lengths, and mutations of each corpus input. The
//! long coverage-guided runs are `scripts/fuzz.sh`'s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardgate_fuzz::TARGETS;

/// Random inputs per target.
const INPUTS: usize = 3_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.unwrap().path();
            (path.display().to_string(), std::fs::read(&path).unwrap())
        })
        .collect();
    inputs.sort();
    inputs.into_iter().map(|(_, bytes)| bytes).collect()
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..4) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out.truncate(i);
            }
            2 => {
                let i = rng.random_range(0..=out.len());
                out.insert(i, rng.random());
            }
            _ => {
                let i = rng.random_range(0..=out.len());
                let b: u8 = rng.random();
                out.splice(i..i, std::iter::repeat_n(b, rng.random_range(1..64)));
            }
        }
    }
    out
}

#[test]
fn every_target_survives_its_corpus_and_random_inputs() {
    for (name, target) in TARGETS {
        let mut seeds = corpus(name);
        for input in &seeds {
            target(input);
        }
        seeds.extend(shardgate_fuzz::seeds(name));
        assert!(!seeds.is_empty(), "{name} has seeds");
        for input in &seeds {
            target(input);
        }
        let mut rng = StdRng::seed_from_u64(0x5ead);
        for i in 0..INPUTS {
            let input = if i % 2 == 0 {
                mutate(&mut rng, &seeds[i / 2 % seeds.len()])
            } else {
                let len = rng.random_range(0..512);
                (0..len).map(|_| rng.random()).collect()
            };
            target(&input);
        }
    }
}
