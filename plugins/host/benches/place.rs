//! One placement call through each guest language: 16 candidates over 4
//! sites and 4 providers, k + m = 14 (10 + 4), through the host exactly as
//! the gateway calls it (pooled instance, epoch deadline, memory cap,
//! answer checks). Goals (issue #5): median ≤ 50 µs for C, ≤ 1 ms for
//! Python and JavaScript. The built-in `Spread` on the same input, side by
//! side, and the same JavaScript built with jco's other engine
//! (StarlingMonkey), which is why `build.sh` uses QuickJS.
//!
//! The Python and JavaScript plugins are built from source first, by their
//! own `build.sh` (componentize-py from `tests/clients/requirements.txt`;
//! `npm ci` in `plugins/examples/onprem-one-js`), as the README's test
//! command installs them (`bash scripts/test.sh --install`; its Python
//! tools are in a virtual environment: `. scripts/test-env.sh` first).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate_core::BackendId;
use shardgate_placement::{Candidate, Placer, Request, Spread};
use shardgate_plugin_host::{Limits, PluginHost, PluginPlacer, Strictness};

const PROVIDERS: [&str; 4] = ["onprem", "aws", "azure", "gcp"];

fn candidates() -> Vec<Candidate> {
    (0..16)
        .map(|i| Candidate {
            id: BackendId::new(format!("backend-{i:02}")).unwrap(),
            labels: BTreeMap::from([
                ("site".to_string(), format!("site-{}", i % 4)),
                ("region".to_string(), "eu-west".to_string()),
                ("provider".to_string(), PROVIDERS[i / 4].to_string()),
                ("cost".to_string(), (i / 4).to_string()),
            ]),
            capacity_bytes: Some(4 << 40),
            free_bytes: Some(1 << 40),
            healthy: true,
            latency: Some(Duration::from_micros(800)),
        })
        .collect()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn temp_wasm(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "shardgate-bench-{}-{name}.wasm",
        std::process::id()
    ))
}

fn run(mut command: std::process::Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        status.success(),
        "{command:?} failed (Python needs componentize-py, JavaScript `npm ci` in its folder)"
    );
}

/// Builds an example plugin from source into a temporary file.
fn build(dir: &str) -> PathBuf {
    let out = temp_wasm(dir);
    let mut command = std::process::Command::new(examples().join(dir).join("build.sh"));
    command.arg(&out);
    run(command);
    out
}

/// The JavaScript example built with jco's StarlingMonkey engine instead of
/// QuickJS (`-d all`: no WASI).
fn build_js_starlingmonkey() -> PathBuf {
    let out = temp_wasm("onprem-one-starlingmonkey");
    let dir = examples().join("onprem-one-js");
    let mut command = std::process::Command::new(dir.join("node_modules/.bin/jco"));
    command
        .current_dir(&dir)
        .args([
            "componentize",
            "app.js",
            "-w",
            "../../../wit",
            "-n",
            "placement",
        ])
        .args(["-d", "all", "-o"])
        .arg(&out)
        .stdout(std::process::Stdio::null());
    run(command);
    out
}

fn bench(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let cands = candidates();
    let request = Request {
        bucket: "bench",
        key: "some/object/key",
        size_hint: Some(1 << 20),
        content_type: Some("application/octet-stream"),
        k: 10,
        m: 4,
        current: &[],
    };
    let onprem_params = vec![
        ("label".to_string(), "provider".to_string()),
        ("values".to_string(), "onprem".to_string()),
        ("min".to_string(), "1".to_string()),
    ];
    let guests = [
        (
            "c",
            examples().join("spread-sites-c/spread-sites.wasm"),
            vec![],
        ),
        (
            "python",
            build("provider-limit-py"),
            vec![("max-per-provider".to_string(), "4".to_string())],
        ),
        ("javascript", build("onprem-one-js"), onprem_params.clone()),
        (
            "javascript-starlingmonkey",
            build_js_starlingmonkey(),
            onprem_params,
        ),
    ];
    let mut g = c.benchmark_group("place/16-candidates/10+4");
    for (language, path, params) in guests {
        let plugin = host.load(&path, Limits::default()).unwrap();
        if path.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_file(&path);
        }
        let placer = PluginPlacer::new(Arc::new(plugin), params, Strictness::Strict).unwrap();
        // Strict: a failed call would panic here rather than time the fallback.
        assert_eq!(placer.place(&request, &cands).unwrap().len(), 14);
        g.bench_function(language, |b| {
            b.iter(|| placer.place(&request, &cands).unwrap())
        });
        assert_eq!(placer.fallbacks(), 0, "{language}");
    }
    g.bench_function("builtin-spread", |b| {
        b.iter(|| Spread.place(&request, &cands).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
