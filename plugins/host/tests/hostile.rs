//! Hostile plugins: each misbehaviour ends in a clear error or the
//! policy's fallback, within bounded time, and the host keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardgate_core::BackendId;
use shardgate_placement::{Candidate, Failure, PlacementError, Placer, Request, Spread};
use shardgate_plugin_host::wit::{self, Health, ObjectFacts};
use shardgate_plugin_host::{Limits, Plugin, PluginError, PluginHost, PluginPlacer, Strictness};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile.wasm")
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 16 << 20,
        deadline: Duration::from_millis(100),
    }
}

fn load(host: &PluginHost) -> Arc<Plugin> {
    Arc::new(host.load(&fixture(), limits()).unwrap())
}

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            id: BackendId::new(format!("b{i}")).unwrap(),
            labels: BTreeMap::from([("site".to_string(), format!("s{i}"))]),
            capacity_bytes: None,
            free_bytes: Some(1 << 40),
            healthy: i != 3,
            latency: None,
        })
        .collect()
}

fn wit_request(mode: &str, n: usize) -> wit::Request {
    wit::Request {
        object: ObjectFacts {
            bucket: "b".into(),
            key: "k".into(),
            size: Some(1000),
            content_type: None,
        },
        k: 4,
        m: 2,
        params: vec![("mode".into(), mode.into())],
        candidates: (0..n)
            .map(|i| wit::Candidate {
                id: format!("b{i}"),
                labels: vec![],
                capacity_bytes: None,
                free_bytes: Some(1 << 40),
                health: if i == 3 {
                    Health::Down
                } else {
                    Health::Healthy
                },
                latency_us: None,
            })
            .collect(),
        current: vec![None; 6],
    }
}

const REQUEST: Request<'static> = Request {
    bucket: "b",
    key: "k",
    size_hint: Some(1000),
    content_type: None,
    k: 4,
    m: 2,
    current: &[],
};

#[test]
fn a_good_answer_and_a_log_line() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host);
    assert_eq!(
        plugin.place(&wit_request("good", 8)).unwrap(),
        [0, 1, 2, 4, 5, 6]
    );
    assert_eq!(plugin.place(&wit_request("log", 8)).unwrap().len(), 6);
}

#[test]
fn trap_timeout_and_memory_bomb_are_errors_and_the_plugin_recovers() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host);
    let started = Instant::now();
    assert!(matches!(
        plugin.place(&wit_request("trap", 8)),
        Err(PluginError::Trap { .. })
    ));
    assert!(matches!(
        plugin.place(&wit_request("loop", 8)),
        Err(PluginError::Timeout { .. })
    ));
    let oom = plugin.place(&wit_request("oom", 8));
    assert!(
        matches!(oom, Err(PluginError::OutOfMemory { .. })),
        "{oom:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A fresh instance replaces each dead one.
    assert_eq!(plugin.place(&wit_request("good", 8)).unwrap().len(), 6);
    let stats = plugin.stats();
    assert_eq!(stats.failures.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert!(stats.instances.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    let refused = plugin.place(&wit_request("refuse", 8));
    assert!(
        matches!(&refused, Err(PluginError::Refused { message, .. }) if message.contains("refuses")),
        "{refused:?}"
    );
}

#[test]
fn nonsense_answers_fall_back_or_fail_when_strict() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host);
    let cands = candidates(8);
    for (mode, failure) in [
        ("short", Failure::InvalidAnswer),
        ("unknown", Failure::InvalidAnswer),
        ("duplicate", Failure::InvalidAnswer),
        ("down", Failure::InvalidAnswer),
        ("trap", Failure::Trap),
        ("refuse", Failure::Refused),
        ("loop", Failure::Timeout),
        ("oom", Failure::OutOfMemory),
    ] {
        let started = Instant::now();
        let params = vec![("mode".to_string(), mode.to_string())];
        let lenient = PluginPlacer::new(
            plugin.clone(),
            params.clone(),
            Strictness::Fallback(Arc::new(Spread)),
        )
        .unwrap();
        let chosen = lenient.place(&REQUEST, &cands).unwrap();
        shardgate_placement::check(&REQUEST, &cands, &chosen).unwrap();
        assert!(
            !chosen.iter().any(|id| id.as_str() == "b3"),
            "{mode}: a down backend"
        );
        // Counted by kind, for the gateway's /metrics.
        let stats = lenient.stats().unwrap();
        assert_eq!(stats.calls(), 1, "{mode}");
        assert_eq!(stats.fallbacks(), 1, "{mode}");
        for other in Failure::ALL {
            let expected = u64::from(other == failure);
            assert_eq!(stats.failures(other), expected, "{mode}: {other:?}");
        }
        let strict = PluginPlacer::new(plugin.clone(), params, Strictness::Strict).unwrap();
        assert!(
            matches!(
                strict.place(&REQUEST, &cands),
                Err(PlacementError::Placer(_))
            ),
            "{mode}"
        );
        let stats = strict.stats().unwrap();
        assert_eq!((stats.refusals(), stats.fallbacks()), (1, 0), "{mode}");
        assert_eq!(stats.failures(failure), 1, "{mode}");
        // Bounded: the deadline is 100 ms per call.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode}: {:?}",
            started.elapsed()
        );
    }
    let good = PluginPlacer::new(plugin, vec![], Strictness::Strict).unwrap();
    let chosen = good.place(&REQUEST, &cands).unwrap();
    assert_eq!(chosen.len(), 6);
    assert_eq!(good.fallbacks(), 0);
}

#[test]
fn parameters_are_checked_at_load() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host);
    let err = PluginPlacer::new(
        plugin,
        vec![("colour".into(), "x".into())],
        Strictness::Strict,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown parameter"), "{err}");
}

#[test]
fn files_that_are_not_plugins_are_refused_by_name() {
    let host = PluginHost::new(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let err = host.load(&junk, limits()).unwrap_err();
    assert!(err.to_string().contains("junk.wasm"), "{err}");
    // A core module (not a component).
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = host.load(&core, limits()).unwrap_err();
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{err}");
    assert!(err.to_string().contains("core.wasm"), "{err}");
    let err = host
        .load(&dir.path().join("missing.wasm"), limits())
        .unwrap_err();
    assert!(matches!(err, PluginError::Read { .. }), "{err}");
}

#[test]
fn compiled_plugins_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let host = PluginHost::new(Some(dir.path().to_path_buf())).unwrap();
    let first = host.load(&fixture(), limits()).unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(artifacts.len(), 1);
    drop(first);
    let again = PluginHost::new(Some(dir.path().to_path_buf())).unwrap();
    let plugin = again.load(&fixture(), limits()).unwrap();
    assert_eq!(plugin.place(&wit_request("good", 8)).unwrap().len(), 6);
    // A corrupt artifact is recompiled, not trusted.
    std::fs::write(artifacts[0].path(), b"garbage").unwrap();
    let plugin = again.load(&fixture(), limits()).unwrap();
    assert_eq!(plugin.place(&wit_request("good", 8)).unwrap().len(), 6);
}

/// A component of the world in `wit_text` (with `deps`, WIT packages it
/// uses), around a dummy core module, assembled by wasm-tools (which
/// the README's test command installs): a plugin of a contract other than
/// ours.
fn dummy_component(dir: &Path, name: &str, wit_text: &str, deps: &[(&str, &str)]) -> PathBuf {
    let wit = dir.join(format!("{name}-wit"));
    std::fs::create_dir_all(&wit).unwrap();
    std::fs::write(wit.join("placement.wit"), wit_text).unwrap();
    for (package, text) in deps {
        let dep = wit.join("deps").join(package);
        std::fs::create_dir_all(&dep).unwrap();
        std::fs::write(dep.join("package.wit"), text).unwrap();
    }
    let core = dir.join(format!("{name}.core.wasm"));
    let component = dir.join(format!("{name}.wasm"));
    for args in [
        vec!["component", "embed", "--dummy", "-w", "placement", "-o"],
        vec!["component", "new"],
    ] {
        let mut cmd = std::process::Command::new("wasm-tools");
        cmd.args(&args);
        match args[1] {
            "embed" => cmd.arg(&core).arg(&wit),
            _ => cmd.arg(&core).arg("-o").arg(&component),
        };
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("wasm-tools: {e}: the README's test command (bash scripts/test.sh) installs it")
        });
        assert!(status.success(), "{cmd:?}");
    }
    component
}

#[test]
fn plugins_of_another_version_or_importing_wasi_are_refused_by_name() {
    let host = PluginHost::new(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ours = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/placement.wit"),
    )
    .unwrap();
    // The control: our own world, around the same kind of dummy module, loads.
    let same = dummy_component(dir.path(), "same", &ours, &[]);
    host.load(&same, limits()).unwrap();

    let v2 = ours.replace("shardgate:placement@0.1.0", "shardgate:placement@0.2.0");
    assert_ne!(v2, ours);
    let v2 = dummy_component(dir.path(), "v2", &v2, &[]);
    let err = host.load(&v2, limits()).unwrap_err();
    assert!(matches!(err, PluginError::NotAPlugin { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("v2.wasm") && text.contains("0.2.0"), "{text}");

    let sneaky = ours.replace(
        "    import host;\n",
        "    import host;\n    import wasi:filesystem/types@0.2.0;\n",
    );
    assert_ne!(sneaky, ours);
    let wasi = dummy_component(
        dir.path(),
        "wasi",
        &sneaky,
        &[(
            "filesystem",
            "package wasi:filesystem@0.2.0;\ninterface types { read-all: func(path: string) -> list<u8>; }\n",
        )],
    );
    let err = host.load(&wasi, limits()).unwrap_err();
    assert!(
        matches!(&err, PluginError::ForbiddenImport { import, .. } if import == "wasi:filesystem/types@0.2.0"),
        "{err}"
    );
    assert!(err.to_string().contains("wasi.wasm"), "{err}");
}
