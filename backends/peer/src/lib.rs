//! Peers over libp2p: `shardgate peer` (a disk offered to gateways) and
//! the gateway's `peer` backend (a remote disk behind the backend trait).
//!
//! A peer is one more backend: the pipeline, repair, scrub, drain and
//! rebalance use it through `shardgate_backend::Backend` like any other,
//! and it passes the same conformance suite. What is peculiar to peers
//! lives here:
//!
//! - [`wire`]: the two protocols (cbor control requests, framed blob
//!   streams) and the bounds their decoders keep;
//! - [`node`]: the libp2p node (TCP + TLS or noise + yamux and QUIC, identify,
//!   Kademlia, ping, an allowlist, connection limits) that gateways and
//!   peers both run;
//! - [`tls`]: the libp2p TLS handshake with AES-GCM preferred;
//! - [`server`]: what `shardgate peer` serves;
//! - [`backend`]: the gateway's side;
//! - [`identity`]: the node's ed25519 key, created once with mode 0600.

pub mod backend;
pub mod identity;
pub mod node;
pub mod server;
pub mod tls;
pub mod wire;

use std::path::PathBuf;

use libp2p::multiaddr::Protocol;
pub use libp2p::{Multiaddr, PeerId};

pub use crate::backend::PeerBackend;
pub use crate::node::{NodeConfig, NodeHandle};
pub use crate::server::{PeerServer, ServeConfig};

/// What can stop a node or a peer from starting.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The identity file could not be used.
    #[error("identity {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    /// The transport could not be set up.
    #[error("peer network: {0}")]
    Transport(String),
    /// The disk could not be opened.
    #[error("storage: {0}")]
    Storage(#[source] shardgate_backend::BackendError),
    /// An address or id in the configuration is not one.
    #[error("{0}")]
    Invalid(String),
}

impl PeerError {
    pub(crate) fn other(e: impl std::fmt::Display) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Parses a listen address: a multiaddr (`/ip4/127.0.0.1/tcp/7001`,
/// `/ip4/127.0.0.1/udp/7001/quic-v1`), or `HOST:PORT` as shorthand for
/// TCP and QUIC on that port.
pub fn parse_listen(s: &str) -> Result<Vec<Multiaddr>, PeerError> {
    if s.starts_with('/') {
        return s
            .parse()
            .map(|a| vec![a])
            .map_err(|e| PeerError::Invalid(format!("{s:?} is not a multiaddr: {e}")));
    }
    let addr: std::net::SocketAddr = s.parse().map_err(|_| {
        PeerError::Invalid(format!(
            "{s:?} is neither a multiaddr nor HOST:PORT (e.g. 127.0.0.1:7001)"
        ))
    })?;
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    let tcp = Multiaddr::empty()
        .with(ip.clone())
        .with(Protocol::Tcp(addr.port()));
    let quic = Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1);
    Ok(vec![tcp, quic])
}

/// Parses a multiaddr to dial.
pub fn parse_addr(s: &str) -> Result<Multiaddr, PeerError> {
    s.parse()
        .map_err(|e| PeerError::Invalid(format!("{s:?} is not a multiaddr: {e}")))
}

/// Parses a PeerId.
pub fn parse_peer_id(s: &str) -> Result<PeerId, PeerError> {
    s.parse()
        .map_err(|e| PeerError::Invalid(format!("{s:?} is not a PeerId: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn host_port_means_tcp_and_quic() {
        let a = parse_listen("127.0.0.1:7001").unwrap();
        assert_eq!(a[0].to_string(), "/ip4/127.0.0.1/tcp/7001");
        assert_eq!(a[1].to_string(), "/ip4/127.0.0.1/udp/7001/quic-v1");
        assert_eq!(parse_listen("/ip4/127.0.0.1/tcp/0").unwrap().len(), 1);
        assert!(parse_listen("nonsense").is_err());
        assert!(parse_peer_id("12D3").is_err());
    }
}
