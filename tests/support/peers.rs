//! `shardgate peer` processes on 127.0.0.x, for the peer tests. Every wait
//! is bounded; a process is killed when its handle drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

/// The PeerId of an identity file, created when missing.
pub fn peer_id_of(key_file: &Path) -> String {
    let out = super::run(Command::new(BIN).arg("peer-id").arg(key_file));
    assert!(out.status.success(), "peer-id: {}", super::describe(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// How a peer is started.
#[derive(Clone, Debug, Default)]
pub struct PeerSpec {
    pub data: PathBuf,
    /// `HOST:PORT` or multiaddrs; empty: dial out only.
    pub listen: Vec<String>,
    pub gateways: Vec<String>,
    pub peers: Vec<String>,
    pub bootstrap: Vec<String>,
}

/// A running `shardgate peer`.
pub struct PeerProcess {
    child: Option<Child>,
    pub spec: PeerSpec,
    pub peer_id: String,
    /// Its listen addresses, each ending in /p2p/ID.
    pub addrs: Vec<String>,
    pub log: PathBuf,
}

impl PeerProcess {
    pub fn start(spec: PeerSpec) -> Self {
        std::fs::create_dir_all(&spec.data).unwrap();
        let log = spec.data.with_extension(format!(
            "log.{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(BIN);
        cmd.arg("peer").arg("--data-dir").arg(&spec.data);
        for l in &spec.listen {
            cmd.args(["--listen", l]);
        }
        for g in &spec.gateways {
            cmd.args(["--allow-gateway", g]);
        }
        for p in &spec.peers {
            cmd.args(["--allow-peer", p]);
        }
        for b in &spec.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut child = cmd
            .env(
                "RUST_LOG",
                std::env::var("SHARDGATE_TEST_PEER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting shardgate peer");
        let rx = super::stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut peer_id = None;
        let mut addrs = Vec::new();
        // The id comes first, then one line per address; a dial-out-only
        // peer prints none, so the first quiet 300 ms after the id ends it.
        loop {
            let wait = match peer_id {
                None => deadline.saturating_duration_since(Instant::now()),
                Some(_) => Duration::from_millis(300),
            };
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    if let Some(id) = line.strip_prefix("shardgate peer: PeerId ") {
                        peer_id = Some(id.trim().to_string());
                    } else if let Some(a) = line.strip_prefix("shardgate peer: listening on ") {
                        addrs.push(a.trim().to_string());
                        if addrs.len() >= spec.listen.len() * 2 {
                            break;
                        }
                    }
                }
                Err(_) if peer_id.is_some() => break,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "shardgate peer did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
        Self {
            child: Some(child),
            spec,
            peer_id: peer_id.unwrap(),
            addrs,
            log,
        }
    }

    /// The TCP address, ending in /p2p/ID.
    pub fn tcp_addr(&self) -> String {
        self.addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .cloned()
            .expect("a TCP address")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
