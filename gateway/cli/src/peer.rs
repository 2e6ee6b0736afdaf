//! `shardgate peer` (offer a disk to gateways over libp2p) and
//! `shardgate peer-id` (print, creating when missing, a node's PeerId).
//!
//! A peer's settings come from flags, or from a TOML file (`--config`)
//! with the same names (`data_dir`, `listen`, `allow_gateways`,
//! `allow_peers`, `bootstrap`, `capacity_bytes`, `key_file`); flags add to
//! the file's lists and override its values.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;
use shardgate_backend_peer::{
    PeerServer, ServeConfig, identity, parse_addr, parse_listen, parse_peer_id,
};

#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// A TOML file with the settings below (flags add to or override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where fragments (`blobs/`) and the identity (`peer.key`) live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to listen: a multiaddr, or HOST:PORT for TCP and QUIC on that
    /// port; repeatable. None: dial out only (to --bootstrap).
    #[arg(long)]
    listen: Vec<String>,
    /// A gateway's PeerId: it may store, read and delete. Repeatable.
    #[arg(long = "allow-gateway")]
    allow_gateways: Vec<String>,
    /// Another peer's PeerId: it may connect, for the DHT only. Repeatable.
    #[arg(long = "allow-peer")]
    allow_peers: Vec<String>,
    /// A node to dial at start and whenever none is connected: a
    /// multiaddr ending in /p2p/PEERID (a gateway, or another peer).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Check the configuration (the file and the flags) and exit, without
    /// starting (a deployment's check: containers, CI).
    #[arg(long)]
    check: bool,
    /// The most bytes stored here (e.g. 500GiB).
    #[arg(long, value_parser = parse_size)]
    capacity: Option<u64>,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The file form of [`PeerArgs`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    listen: Vec<String>,
    #[serde(default)]
    allow_gateways: Vec<String>,
    #[serde(default)]
    allow_peers: Vec<String>,
    #[serde(default)]
    bootstrap: Vec<String>,
    capacity_bytes: Option<u64>,
    key_file: Option<PathBuf>,
}

/// Runs a peer until SIGINT or SIGTERM.
pub async fn run(args: PeerArgs, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let file: PeerFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml_from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => PeerFile::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .context("--data-dir is required (or data_dir in --config)")?;
    let mut listen = Vec::new();
    for a in file.listen.iter().chain(&args.listen) {
        listen.extend(parse_listen(a).context("--listen")?);
    }
    let gateways = file
        .allow_gateways
        .iter()
        .chain(&args.allow_gateways)
        .map(|p| parse_peer_id(p))
        .collect::<Result<Vec<_>, _>>()
        .context("--allow-gateway")?;
    if gateways.is_empty() {
        anyhow::bail!(
            "no gateway is allowed: give --allow-gateway PEERID (`shardgate peer-id <gateway data dir>/keys/peer.key` prints it)"
        );
    }
    let peers = file
        .allow_peers
        .iter()
        .chain(&args.allow_peers)
        .map(|p| parse_peer_id(p))
        .collect::<Result<Vec<_>, _>>()
        .context("--allow-peer")?;
    let bootstrap = file
        .bootstrap
        .iter()
        .chain(&args.bootstrap)
        .map(|a| parse_addr(a))
        .collect::<Result<Vec<_>, _>>()
        .context("--bootstrap")?;
    if listen.is_empty() && bootstrap.is_empty() {
        anyhow::bail!(
            "with no --listen address the peer can only dial out: give --bootstrap with a gateway's address"
        );
    }
    if args.check {
        println!(
            "shardgate peer: configuration ok ({} listen addresses, {} gateways allowed, {} bootstrap nodes)",
            listen.len(),
            gateways.len(),
            bootstrap.len()
        );
        return Ok(());
    }
    let server = PeerServer::start(ServeConfig {
        data_dir,
        listen,
        bootstrap,
        gateways,
        peers,
        capacity_bytes: args.capacity.or(file.capacity_bytes),
        key_file: file.key_file,
    })
    .await?;
    println!("shardgate peer: PeerId {}", server.peer_id());
    for addr in server.listen_addrs() {
        println!("shardgate peer: listening on {addr}");
    }
    tracing::info!(peer_id = %server.peer_id(), "peer started");
    stop.await;
    tracing::info!("peer stopping");
    Ok(())
}

fn toml_from_str(text: &str) -> Result<PeerFile> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    Ok(Figment::from(Toml::string(text)).extract()?)
}

/// Prints the PeerId of the identity at `key_file`, creating it first
/// when there is none.
pub fn print_id(key_file: &std::path::Path) -> Result<()> {
    let key = identity::load_or_create(key_file)?;
    println!("{}", key.public().to_peer_id());
    Ok(())
}
