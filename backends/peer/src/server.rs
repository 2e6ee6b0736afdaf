//! `shardgate peer`: a local disk (the fs backend) offered to gateways
//! over libp2p.
//!
//! Only nodes on the allowlist connect at all. Of those, gateways may
//! store, read and delete; other peers only take part in the DHT. Every
//! blob committed is announced in the DHT under a key derived from its
//! name (and every blob found at start), so a gateway whose manifest names
//! the wrong peer for a fragment can still find it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{AsyncWriteExt, StreamExt, TryStreamExt};
use libp2p::{Multiaddr, PeerId, Stream};
use shardgate_backend::{Backend, BackendError, BackendId, BackendInfo, BlobName};
use shardgate_backend_fs::FsBackend;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::PeerError;
use crate::node::{self, ControlService, NodeConfig, NodeHandle};
use crate::wire::{
    self, BLOB_PROTOCOL, BlobReply, BlobRequest, ControlRequest, ControlResponse, LIST_PAGE,
    ListFrame, MAX_CHUNK, WireError,
};

/// Reads and writes served at once (see `Storage`).
const READS_AT_ONCE: usize = 64;
const WRITES_AT_ONCE: usize = 32;
/// How long a peer waits for a new stream's request header, and for the
/// next request on a stream kept open (the gateway drops its idle streams
/// sooner, after 20 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_STREAM: Duration = Duration::from_secs(60);
/// How long a peer waits on one frame from a gateway.
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// What `shardgate peer` runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The disk offered: blobs under `blobs/`, the identity in `peer.key`
    /// unless `key_file` says otherwise.
    pub data_dir: PathBuf,
    /// Where to listen; none for a peer that can only dial out.
    pub listen: Vec<Multiaddr>,
    /// Nodes to dial at start and whenever none is connected (a gateway,
    /// or another peer).
    pub bootstrap: Vec<Multiaddr>,
    /// Gateways: may store, read and delete.
    pub gateways: Vec<PeerId>,
    /// Other peers: may connect, for the DHT only.
    pub peers: Vec<PeerId>,
    /// The most bytes this peer stores.
    pub capacity_bytes: Option<u64>,
    /// The identity file; `<data_dir>/peer.key` when unset.
    pub key_file: Option<PathBuf>,
}

/// A running peer.
#[derive(Debug)]
pub struct PeerServer {
    node: NodeHandle,
}

impl PeerServer {
    /// Opens the disk, starts the node and serves until the process ends.
    pub async fn start(config: ServeConfig) -> Result<Self, PeerError> {
        let key_file = config
            .key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("peer.key"));
        let keypair = crate::identity::load_or_create(&key_file)?;
        let mut info = BackendInfo::new(BackendId::new("local").map_err(PeerError::other)?);
        info.capacity_bytes = config.capacity_bytes;
        let fs = Arc::new(
            FsBackend::open(info, &config.data_dir)
                .await
                .map_err(PeerError::Storage)?,
        );
        let gateways: HashSet<PeerId> = config.gateways.iter().copied().collect();
        let storage = Arc::new(Storage {
            fs,
            gateways,
            node: tokio::sync::OnceCell::new(),
            reads: Semaphore::new(READS_AT_ONCE),
            writes: Semaphore::new(WRITES_AT_ONCE),
        });
        let allow = config
            .gateways
            .iter()
            .chain(&config.peers)
            .copied()
            .collect();
        let node = node::start(NodeConfig {
            keypair,
            listen: config.listen,
            bootstrap: config.bootstrap,
            allow,
            watch: Vec::new(),
            serve: Some(storage.clone()),
            request_timeout: Duration::from_secs(60),
        })
        .await?;
        let _ = storage.node.set(node.clone());
        let mut incoming = node
            .streams()
            .accept(BLOB_PROTOCOL)
            .map_err(|e| PeerError::Transport(e.to_string()))?;
        let serving = storage.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let storage = serving.clone();
                tokio::spawn(
                    async move { storage.serve_stream(peer, stream).await }
                        .instrument(info_span!("blob_stream", %peer)),
                );
            }
        });
        // Announce what the disk already holds.
        let announcing = storage.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut blobs = announcing.fs.list();
            while let Some(blob) = blobs.next().await {
                match blob {
                    Ok(meta) => {
                        announcing.provide(meta.name.as_str());
                        n += 1;
                    }
                    Err(e) => warn!("listing blobs to announce: {e}"),
                }
            }
            debug!("announced {n} blobs in the DHT");
        });
        Ok(Self { node })
    }

    /// This peer's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// The addresses it listens on, each ending in `/p2p/ID`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.node.listen_addrs()
    }
}

struct Storage {
    fs: Arc<FsBackend>,
    gateways: HashSet<PeerId>,
    node: tokio::sync::OnceCell<NodeHandle>,
    /// Gets and lists served at once; more wait (and the muxer pushes
    /// back). Writes have their own places, so slow uploads cannot starve
    /// reads.
    reads: Semaphore,
    writes: Semaphore,
}

impl Storage {
    fn provide(&self, name: &str) {
        if let Some(node) = self.node.get() {
            node.provide(wire::provider_key(name));
        }
    }

    fn unprovide(&self, name: &str) {
        if let Some(node) = self.node.get() {
            node.unprovide(wire::provider_key(name));
        }
    }

    fn check_gateway(&self, peer: &PeerId) -> Result<(), WireError> {
        match self.gateways.contains(peer) {
            true => Ok(()),
            false => {
                warn!(%peer, "refused a storage request from a peer that is not a gateway");
                Err(WireError::Denied(format!(
                    "{peer} is not a gateway of this peer"
                )))
            }
        }
    }

    /// Serves the requests of one blob stream, one after the other: a
    /// gateway keeps streams open for its next requests, so most of them
    /// skip a stream's setup. Any failure ends the stream.
    async fn serve_stream(&self, peer: PeerId, mut stream: Stream) {
        let mut first = true;
        loop {
            let wait = if first { HEADER_TIMEOUT } else { IDLE_STREAM };
            let header = match tokio::time::timeout(wait, wire::read_header(&mut stream)).await {
                Ok(Ok(header)) => header,
                // Closed or idle between requests: done.
                Ok(Err(wire::FrameError::Io(_))) | Err(_) if !first => break,
                Err(_) => {
                    let error = WireError::Malformed("no request header in time".into());
                    let _ = wire::write_header(&mut stream, &BlobReply::Err(error)).await;
                    break;
                }
                Ok(Err(e)) => {
                    let error = WireError::Malformed(e.to_string());
                    let _ = wire::write_header(&mut stream, &BlobReply::Err(error)).await;
                    break;
                }
            };
            first = false;
            match self.serve_request(peer, header, &mut stream).await {
                Ok(()) => continue,
                Err(Some(error)) => {
                    debug!("blob request failed: {error}");
                    let _ = wire::write_header(&mut stream, &BlobReply::Err(error)).await;
                }
                Err(None) => debug!("blob stream ended early (a write so cut is aborted)"),
            }
            break;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
    }

    /// Serves one request. `Err(Some(e))` still has an answer to give;
    /// `Err(None)` means the stream broke.
    async fn serve_request(
        &self,
        peer: PeerId,
        header: BlobRequest,
        s: &mut Stream,
    ) -> Result<(), Option<WireError>> {
        // Who sent it is checked before the request takes a place: a node
        // that only opens streams holds none.
        self.check_gateway(&peer)?;
        let places = match header {
            BlobRequest::Put { .. } => &self.writes,
            _ => &self.reads,
        };
        let _place = places.acquire().await.map_err(|_| None)?;
        match header {
            BlobRequest::Get { name, start, end } => {
                let name = blob_name(&name)?;
                if start > end {
                    return Err(Some(WireError::Malformed(format!("range {start}..{end}"))));
                }
                // A range of one frame (a stripe's shard, usually) is one
                // read, which checks the range itself.
                if end - start <= MAX_CHUNK as u64 {
                    let bytes = self.fs.get(&name, start..end).await.map_err(wire_error)?;
                    wire::write_header(s, &BlobReply::Ok { size: end - start })
                        .await
                        .map_err(|_| None)?;
                    timed(s.write_all(&bytes)).await?;
                    timed(s.flush()).await?;
                    return Ok(());
                }
                let size = self.fs.stat(&name).await.map_err(wire_error)?.size;
                if end > size {
                    return Err(Some(WireError::InvalidRange { size }));
                }
                wire::write_header(s, &BlobReply::Ok { size: end - start })
                    .await
                    .map_err(|_| None)?;
                let mut at = start;
                while at < end {
                    let to = end.min(at + MAX_CHUNK as u64);
                    // The header is sent: a failure now can only cut the stream.
                    let bytes = self.fs.get(&name, at..to).await.map_err(|e| {
                        warn!(blob = %name, "read failed mid-stream: {e}");
                        None
                    })?;
                    timed(s.write_all(&bytes)).await?;
                    at = to;
                }
                timed(s.flush()).await?;
                Ok(())
            }
            BlobRequest::Put { name } => {
                let name = blob_name(&name)?;
                let mut writer = self.fs.create(&name).await.map_err(wire_error)?;
                wire::write_header(s, &BlobReply::Ready)
                    .await
                    .map_err(|_| None)?;
                loop {
                    let frame = tokio::time::timeout(FRAME_TIMEOUT, wire::read_frame(s, MAX_CHUNK))
                        .await
                        .map_err(|_| None)?
                        .map_err(|e| match e {
                            wire::FrameError::TooLarge { .. } => {
                                Some(WireError::Malformed(e.to_string()))
                            }
                            // The writer went away: the write is aborted.
                            _ => None,
                        })?;
                    if frame.is_empty() {
                        break;
                    }
                    writer.write(frame).await.map_err(wire_error)?;
                }
                let meta = writer.commit().await.map_err(wire_error)?;
                self.provide(name.as_str());
                wire::write_header(s, &BlobReply::Ok { size: meta.size })
                    .await
                    .map_err(|_| None)?;
                Ok(())
            }
            BlobRequest::List => {
                let mut pages = self.fs.list().try_chunks(LIST_PAGE);
                while let Some(page) = pages.next().await {
                    let frame = match page {
                        Ok(page) => ListFrame::Page(
                            page.into_iter()
                                .map(|m| (m.name.as_str().to_string(), m.size))
                                .collect(),
                        ),
                        Err(e) => ListFrame::Err(
                            wire_error(e.1)
                                .unwrap_or_else(|| WireError::Other("listing failed".into())),
                        ),
                    };
                    let failed = matches!(frame, ListFrame::Err(_));
                    wire::write_message(s, &frame, MAX_CHUNK)
                        .await
                        .map_err(|_| None)?;
                    if failed {
                        return Ok(());
                    }
                }
                wire::write_header(s, &ListFrame::End)
                    .await
                    .map_err(|_| None)?;
                Ok(())
            }
        }
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, Option<WireError>> {
    match tokio::time::timeout(FRAME_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(None),
    }
}

fn blob_name(name: &str) -> Result<BlobName, Option<WireError>> {
    wire::check_name(name).map_err(Some)?;
    BlobName::new(name).map_err(|e| Some(WireError::Malformed(e.to_string())))
}

/// A storage failure, as the gateway should see it.
fn wire_error(e: BackendError) -> Option<WireError> {
    Some(to_wire(e))
}

fn to_wire(e: BackendError) -> WireError {
    match e {
        BackendError::NotFound { .. } => WireError::NotFound,
        BackendError::AlreadyExists { .. } => WireError::AlreadyExists,
        BackendError::InvalidRange { size, .. } => WireError::InvalidRange { size },
        BackendError::NoSpace { .. } => WireError::NoSpace,
        BackendError::NotWritable { reason, .. } => WireError::NotWritable(reason),
        other => WireError::Other(other.to_string()),
    }
}

#[async_trait]
impl ControlService for Storage {
    async fn handle(&self, from: PeerId, request: ControlRequest) -> ControlResponse {
        match self.control(from, request).await {
            Ok(response) => response,
            Err(e) => ControlResponse::Error(e),
        }
    }
}

impl Storage {
    async fn control(
        &self,
        from: PeerId,
        request: ControlRequest,
    ) -> Result<ControlResponse, WireError> {
        self.check_gateway(&from)?;
        let name = |n: &str| blob_name(n).map_err(|e| e.unwrap_or(WireError::NotFound));
        match request {
            ControlRequest::Stat { name: n } => {
                let meta = self.fs.stat(&name(&n)?).await.map_err(to_wire)?;
                Ok(ControlResponse::Stat { size: meta.size })
            }
            ControlRequest::Delete { name: n } => {
                let blob = name(&n)?;
                self.fs.delete(&blob).await.map_err(to_wire)?;
                self.unprovide(blob.as_str());
                info!(blob = %blob, "deleted");
                Ok(ControlResponse::Deleted)
            }
            ControlRequest::Health => {
                let h = self.fs.health().await.map_err(to_wire)?;
                Ok(ControlResponse::Health {
                    free_bytes: h.free_bytes,
                    used_bytes: h.used_bytes,
                    writable: h.writable,
                })
            }
            ControlRequest::Challenge {
                name: n,
                nonce,
                ranges,
            } => {
                wire::check_challenge(&n, &ranges)?;
                let blob = name(&n)?;
                let mut chunks: Vec<Bytes> = Vec::with_capacity(ranges.len());
                for &(start, end) in &ranges {
                    chunks.push(self.fs.get(&blob, start..end).await.map_err(to_wire)?);
                }
                let proof = wire::challenge_proof(&nonce, &n, &ranges, &chunks);
                Ok(ControlResponse::Challenge { chunks, proof })
            }
        }
    }
}
