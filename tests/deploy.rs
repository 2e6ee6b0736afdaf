//! The deployment files (issue 17), checked with what this machine can
//! run: the Dockerfile with hadolint, the compose file against the
//! compose-spec schema, the Kubernetes manifests against Kubernetes'
//! schemas (kubernetes-validate), and the shardgate configurations they
//! carry load in shardgate itself: `deploy/compose/init.sh` run on
//! temporary directories, the ConfigMaps' files taken out of the
//! manifests; gateway files through `shardgate simulate`, peer files
//! through `shardgate peer --check`. No image is built here: there is no
//! registry to pull the base images from (deploy/README.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BIN, describe, run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool(program: &str, what: &str) -> Command {
    shardgate_emulators::require(program, what);
    let mut c = Command::new(program);
    c.current_dir(repo());
    c
}

fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(out.status.success(), "{command:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    ok(tool("hadolint", "the Dockerfile linter").arg("Dockerfile"));
}

#[test]
fn the_compose_file_follows_the_compose_spec() {
    ok(tool("check-jsonschema", "a JSON-schema checker")
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg("deploy/compose/compose.yaml"));
}

#[test]
fn the_kubernetes_manifests_follow_their_schemas() {
    ok(
        tool("kubernetes-validate", "the Kubernetes manifest checker").args([
            "--strict",
            "deploy/kubernetes/gateway.yaml",
            "deploy/kubernetes/peers.yaml",
        ]),
    );
}

/// A gateway configuration loads and places an object.
fn gateway_config_loads(path: &Path) {
    let out = ok(Command::new(BIN)
        .args(["simulate", "--size", "1MiB", "--config"])
        .arg(path));
    assert!(out.contains("fragment"), "{out}");
}

/// A peer configuration loads.
fn peer_config_loads(path: &Path) {
    let out = ok(Command::new(BIN)
        .args(["peer", "--check", "--config"])
        .arg(path));
    assert!(out.contains("configuration ok"), "{out}");
}

#[test]
fn the_configurations_compose_init_writes_load() {
    let dir = tempfile::tempdir().unwrap();
    let [config, gateway, peer1, peer2] =
        ["config", "gateway", "peer-1", "peer-2"].map(|d| dir.path().join(d));
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let init = |what: &str| {
        ok(Command::new("sh")
            .arg(repo().join("deploy/compose/init.sh"))
            .args([&config, &gateway, &peer1, &peer2])
            .env("PATH", &path));
        let text = std::fs::read_to_string(config.join("gateway.toml")).unwrap();
        assert!(text.contains("kind = \"peer\""), "{what}: {text}");
        text
    };
    let first = init("first run");
    // Identities are made once: a second run writes the same files.
    assert_eq!(init("second run"), first);
    gateway_config_loads(&config.join("gateway.toml"));
    for n in [1, 2] {
        peer_config_loads(&config.join(format!("peer-{n}.toml")));
    }
}

#[test]
fn the_configmaps_hold_configurations_that_load() {
    let dir = tempfile::tempdir().unwrap();
    // The ConfigMaps' files, out of the manifests (PyYAML comes with the
    // aws CLI in the test tools' environment).
    let extract = |manifest: &str, key: &str| {
        let out = dir.path().join(key);
        ok(tool("python3", "Python")
            .arg("-c")
            .arg(
                "import sys, yaml\n\
                 docs = yaml.safe_load_all(open(sys.argv[1]))\n\
                 text = next(d['data'][sys.argv[2]] for d in docs if d and d['kind'] == 'ConfigMap')\n\
                 open(sys.argv[3], 'w').write(text)",
            )
            .args([manifest, key])
            .arg(&out));
        out
    };
    gateway_config_loads(&extract("deploy/kubernetes/gateway.yaml", "shardgate.toml"));
    peer_config_loads(&extract("deploy/kubernetes/peers.yaml", "peer.toml"));
}

/// The image's health check: `shardgate probe URL`.
#[test]
fn probe_says_whether_the_gateway_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::Server::start(&dir.path().join("data"));
    ok(Command::new(BIN).args(["probe", &format!("{}/ready", server.endpoint())]));
    let missing = run(Command::new(BIN).args(["probe", &format!("{}/nope", server.endpoint())]));
    assert!(!missing.status.success(), "{}", describe(&missing));
    let closed = run(Command::new(BIN).args(["probe", "http://127.0.0.1:9/ready"]));
    assert!(!closed.status.success());
    let err = String::from_utf8_lossy(&closed.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no answer"), "{err}");
}
