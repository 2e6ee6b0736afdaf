//! Writes each target's seeds into `DIR/<target>/` (the libFuzzer corpus
//! folders `scripts/fuzz.sh` runs from), with the kept crashes of
//! `corpus/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("a directory"));
    let kept = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, _) in shardgate_fuzz::TARGETS {
        let out = dir.join(name);
        std::fs::create_dir_all(&out).unwrap();
        for (i, seed) in shardgate_fuzz::seeds(name).into_iter().enumerate() {
            std::fs::write(out.join(format!("seed-{i}")), seed).unwrap();
        }
        if let Ok(entries) = std::fs::read_dir(kept.join(name)) {
            for e in entries {
                let path = e.unwrap().path();
                std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}
