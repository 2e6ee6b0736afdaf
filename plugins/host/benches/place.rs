//! One placement call through each guest language: 16 candidates over 4
//! sites, k + m = 14 (10 + 4). Goals (issue #5): median ≤ 50 µs for C,
//! ≤ 1 ms for Python and JavaScript. Also the built-in `Spread` on the
//! same input, side by side.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate_core::BackendId;
use shardgate_placement::{Candidate, Placer, Request, Spread};
use shardgate_plugin_host::{Limits, PluginHost, PluginPlacer, Strictness};

fn candidates() -> Vec<Candidate> {
    (0..16)
        .map(|i| Candidate {
            id: BackendId::new(format!("backend-{i:02}")).unwrap(),
            labels: BTreeMap::from([
                ("site".to_string(), format!("site-{}", i % 4)),
                ("region".to_string(), "eu-west".to_string()),
                ("provider".to_string(), format!("p{}", i % 3)),
            ]),
            free_bytes: Some(1 << 40),
            healthy: true,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let cands = candidates();
    let request = Request {
        bucket: "bench",
        key: "some/object/key",
        size_hint: Some(1 << 20),
        k: 10,
        m: 4,
    };
    let mut g = c.benchmark_group("place/16-candidates/10+4");
    // Python and JavaScript guests join here as they are added.
    let c_plugin = host
        .load(
            &dir.join("spread-sites-c/spread-sites.wasm"),
            Limits::default(),
        )
        .unwrap();
    let placer = PluginPlacer::new(Arc::new(c_plugin), vec![], Strictness::Strict).unwrap();
    assert_eq!(placer.place(&request, &cands).unwrap().len(), 14);
    g.bench_function("c", |b| b.iter(|| placer.place(&request, &cands).unwrap()));
    g.bench_function("builtin-spread", |b| {
        b.iter(|| Spread.place(&request, &cands).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
