//! The gateway's `peer` backend: one remote `shardgate peer`, reached
//! through the gateway's node.
//!
//! Bytes move on blob streams in frames of at most 1 MiB, so neither side
//! holds more than a frame of a write in memory whatever the fragment's
//! size; reads return the range asked for, which the pipeline keeps to a
//! stripe. Every wait on the network has a time limit: a peer that stops
//! answering is an `Unavailable` error that the health board and the
//! read path's hedging act on, not a hung request.
//!
//! A fragment that is not where its manifest says (its disk moved to
//! another peer) is looked up in the DHT under its provider key; reads,
//! stats and deletes follow it to the peer that announced it.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, TryStreamExt};
use libp2p::{PeerId, Stream};
use shardgate_backend::{
    Backend, BackendError, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result, buffers,
};
use tracing::{debug, info};

use crate::node::NodeHandle;
use crate::wire::{
    self, BLOB_PROTOCOL, BlobReply, BlobRequest, ControlRequest, ControlResponse, ListFrame,
    MAX_CHALLENGE_BYTES, MAX_CHALLENGE_RANGES, MAX_CHUNK, WireError,
};

/// How long opening a stream (and dialing, when needed) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame, or one piece of a read, may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A read's buffer is zeroed and filled this much at a time (fits in L2).
const ZEROED_PIECE: usize = 64 << 10;
/// Reads at least this long go into a recycled buffer (`buffers`), whose
/// old bytes need no zeroing before they are overwritten; smaller ones take
/// a plain allocation, as in the fs backend.
const RECYCLED_READ_BYTES: usize = 128 << 10;
/// A buffer for a read of `len` bytes: recycled (old bytes kept, so that
/// refilling it writes no zeroes) from [`RECYCLED_READ_BYTES`] on.
fn read_buffer(len: usize) -> Vec<u8> {
    match len >= RECYCLED_READ_BYTES {
        true => buffers::take(len),
        false => Vec::with_capacity(len),
    }
}

/// Streams kept open per peer, and how long one may stay idle (the peer
/// waits 60 s for a stream's next request).
const IDLE_STREAMS: usize = 64;
const STREAM_IDLE: Duration = Duration::from_secs(20);
/// Streams opened for one request before giving up (see `open_answered`).
const OPEN_ATTEMPTS: u32 = 5;
/// Peers tried for a blob not where its manifest says, and how long the
/// whole search may take (a garbage collector's delete waits for it).
const FALLBACK_PEERS: usize = 3;
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a commit's answer may take: the peer fsyncs the whole blob.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a DHT lookup for a misplaced blob may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A remote peer's disk, as a backend.
#[derive(Clone, Debug)]
pub struct PeerBackend {
    info: BackendInfo,
    peer: PeerId,
    node: NodeHandle,
    idle: Arc<IdleStreams>,
}

/// Blob streams to the peer whose last request completed, kept for the
/// next ones (the peer serves a stream's requests one after the other).
#[derive(Default)]
struct IdleStreams(Mutex<Vec<(Stream, Instant)>>);

impl std::fmt::Debug for IdleStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleStreams")
    }
}

impl IdleStreams {
    fn take(&self) -> Option<Stream> {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((stream, since)) = idle.pop() {
            if since.elapsed() < STREAM_IDLE {
                return Some(stream);
            }
        }
        None
    }

    /// Drops every kept stream: one broke, so the connection they share
    /// likely did.
    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn put(&self, stream: Stream) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_STREAMS {
            idle.push((stream, Instant::now()));
        }
    }
}

impl PeerBackend {
    /// The peer `peer`, reached through `node`.
    pub fn new(info: BackendInfo, peer: PeerId, node: NodeHandle) -> Self {
        Self {
            info,
            peer,
            node,
            idle: Arc::default(),
        }
    }

    /// Keeps a stream whose request completed for the next one to `peer`.
    fn reuse(&self, peer: PeerId, stream: Stream) {
        if peer == self.peer {
            self.idle.put(stream);
        }
    }

    /// The peer's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable {
            backend: self.info.id.clone(),
            reason: format!("peer {}: {reason}", self.peer),
        }
    }

    fn error(&self, blob: &BlobName, e: WireError, range: Option<&Range<u64>>) -> BackendError {
        let backend = self.info.id.clone();
        let blob = blob.clone();
        match e {
            WireError::NotFound => BackendError::NotFound { backend, blob },
            WireError::AlreadyExists => BackendError::AlreadyExists { backend, blob },
            WireError::InvalidRange { size } => {
                let r = range.cloned().unwrap_or(0..0);
                BackendError::InvalidRange {
                    backend,
                    blob,
                    start: r.start,
                    end: r.end,
                    size,
                }
            }
            WireError::NoSpace => BackendError::NoSpace { backend },
            WireError::NotWritable(reason) => BackendError::NotWritable { backend, reason },
            WireError::Denied(reason) => self.unavailable(format!("denied: {reason}")),
            other => BackendError::Io {
                backend,
                op: "peer",
                source: std::io::Error::other(other.to_string()),
            },
        }
    }

    async fn control(&self, peer: PeerId, request: ControlRequest) -> Result<ControlResponse> {
        self.node
            .control(peer, request)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Takes a stream kept open to `peer`, or opens one, and sends the
    /// header; says whether the stream was a kept one.
    async fn open_or_reuse(&self, peer: PeerId, header: &BlobRequest) -> Result<(Stream, bool)> {
        if peer == self.peer
            && let Some(mut stream) = self.idle.take()
        {
            if timed(wire::write_header(&mut stream, header)).await.is_ok() {
                return Ok((stream, true));
            }
            self.idle.clear();
        }
        Ok((self.open_fresh(peer, header).await?, false))
    }

    /// Opens a new blob stream to `peer` and sends its header.
    async fn open_fresh(&self, peer: PeerId, header: &BlobRequest) -> Result<Stream> {
        let mut control = self.node.streams();
        let mut stream =
            tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, BLOB_PROTOCOL))
                .await
                .map_err(|_| self.unavailable("no stream within 10 s"))?
                .map_err(|e| self.unavailable(e))?;
        timed(wire::write_header(&mut stream, header))
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(stream)
    }

    /// Opens a blob stream and waits for the peer's first answer. A stream
    /// that breaks before it was not acted on (the peer drops streams it
    /// cannot accept fast enough), so another is opened, a few times.
    async fn open_answered(
        &self,
        peer: PeerId,
        header: &BlobRequest,
    ) -> Result<(Stream, std::result::Result<u64, WireError>, bool)> {
        let mut last = None;
        let mut attempt = 0;
        let mut stale_seen = false;
        while attempt < OPEN_ATTEMPTS {
            let (mut stream, reused) = match self.open_or_reuse(peer, header).await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(e);
                    attempt += 1;
                    if attempt < OPEN_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                    }
                    continue;
                }
            };
            let reply =
                tokio::time::timeout(IO_TIMEOUT, wire::read_header::<BlobReply, _>(&mut stream))
                    .await
                    .map_err(|_| {
                        // Silence on a kept stream: the others are suspect too.
                        if reused {
                            self.idle.clear();
                        }
                        self.unavailable("no answer within 30 s")
                    })?;
            match reply {
                Ok(BlobReply::Ok { size }) => return Ok((stream, Ok(size), false)),
                Ok(BlobReply::Ready) => return Ok((stream, Ok(0), true)),
                Ok(BlobReply::Err(e)) => return Ok((stream, Err(e), false)),
                Err(wire::FrameError::Io(e)) if reused && !stale_seen => {
                    // A kept stream the peer (or the connection) closed:
                    // the others likely went with it; not an attempt.
                    debug!(%peer, "a kept stream broke before its answer: {e}");
                    self.idle.clear();
                    stale_seen = true;
                }
                Err(wire::FrameError::Io(e)) => {
                    debug!(%peer, attempt, "blob stream broke before its answer: {e}");
                    last = Some(self.unavailable(e));
                    attempt += 1;
                    if attempt < OPEN_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                    }
                }
                Err(e) => return Err(self.unavailable(e)),
            }
        }
        Err(last.unwrap_or_else(|| self.unavailable("no stream")))
    }

    async fn read_reply(
        &self,
        stream: &mut Stream,
        within: Duration,
    ) -> Result<std::result::Result<u64, WireError>> {
        let reply = tokio::time::timeout(within, wire::read_header::<BlobReply, _>(stream))
            .await
            .map_err(|_| self.unavailable(format!("no answer within {within:?}")))?
            .map_err(|e| self.unavailable(e))?;
        Ok(match reply {
            BlobReply::Ok { size } => Ok(size),
            BlobReply::Err(e) => Err(e),
            BlobReply::Ready => Err(WireError::Malformed("Ready out of turn".into())),
        })
    }

    async fn get_from(&self, peer: PeerId, name: &BlobName, range: &Range<u64>) -> Result<Bytes> {
        let (mut stream, reply, ready) = self
            .open_answered(
                peer,
                &BlobRequest::Get {
                    name: name.as_str().to_string(),
                    start: range.start,
                    end: range.end,
                },
            )
            .await?;
        let len = reply.map_err(|e| self.error(name, e, Some(range)))?;
        if ready {
            return Err(self.error(
                name,
                WireError::Malformed("a get was answered with Ready".into()),
                None,
            ));
        }
        let want = range.end.saturating_sub(range.start);
        if len != want {
            return Err(self.error(
                name,
                WireError::Malformed(format!("{len} bytes announced for a range of {want}")),
                None,
            ));
        }
        let len = usize::try_from(len).map_err(|_| self.unavailable("range over memory"))?;
        let mut buf = read_buffer(len);
        // A recycled buffer is refilled in place. What lies past its old
        // length is zeroed a piece at a time, just before the piece is read
        // into it: the zeros are still in cache when the bytes overwrite
        // them (zeroing the whole range first cost 3.4% of a GET's CPU over
        // peers, zeroing at all 2.5%).
        buf.truncate(len);
        let mut filled = 0;
        let read = async {
            while filled < len {
                let end = (filled + ZEROED_PIECE).min(len);
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut buf[filled..end]))
                    .await
                    .map_err(|_| self.unavailable("read stalled for 30 s"))?
                    .map_err(|e| self.unavailable(format!("read: {e}")))?;
                filled = end;
            }
            Ok(())
        }
        .await;
        if let Err(e) = read {
            if len >= RECYCLED_READ_BYTES {
                buffers::give(buf);
            }
            return Err(e);
        }
        self.reuse(peer, stream);
        Ok(match len >= RECYCLED_READ_BYTES {
            true => buffers::into_bytes(buf),
            false => Bytes::from(buf),
        })
    }

    /// Configured peers other than this one that announced `name` in the
    /// DHT (a node that is not one of the gateway's peers is never sent a
    /// blob's name), at most [`FALLBACK_PEERS`].
    async fn elsewhere(&self, name: &BlobName) -> Vec<PeerId> {
        let lookup = self.node.providers(wire::provider_key(name.as_str()));
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .unwrap_or_default();
        found
            .into_iter()
            .filter(|p| *p != self.peer && self.node.is_known(p))
            .take(FALLBACK_PEERS)
            .collect()
    }

    /// `op` on this peer; when the blob is not there, on the peers the DHT
    /// says hold it.
    async fn here_or_elsewhere<T, F, Fut>(&self, name: &BlobName, op: F) -> Result<T>
    where
        F: Fn(PeerId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match op(self.peer).await {
            Err(e) if e.is_not_found() => {
                let deadline = tokio::time::Instant::now() + FALLBACK_TIMEOUT;
                let others = tokio::time::timeout_at(deadline, self.elsewhere(name))
                    .await
                    .unwrap_or_default();
                for other in others {
                    let Ok(answer) = tokio::time::timeout_at(deadline, op(other)).await else {
                        break;
                    };
                    match answer {
                        Ok(v) => {
                            info!(
                                blob = %name, expected = %self.peer, found = %other,
                                "a fragment was found through the DHT on another peer"
                            );
                            return Ok(v);
                        }
                        Err(e2) => debug!(blob = %name, peer = %other, "not there after all: {e2}"),
                    }
                }
                Err(e)
            }
            other => other,
        }
    }
}

async fn timed<T>(f: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(IO_TIMEOUT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "stalled for 30 s"))?
}

/// A blob being written to a peer.
struct PeerWriter {
    backend: PeerBackend,
    name: BlobName,
    stream: Option<Stream>,
}

impl PeerWriter {
    /// A failed write: the peer's own answer when it gave one (a full
    /// disk), else the stream's failure.
    async fn failure(&mut self, e: std::io::Error) -> BackendError {
        if let Some(mut stream) = self.stream.take()
            && let Ok(Ok(Err(reason))) = tokio::time::timeout(
                Duration::from_secs(2),
                self.backend.read_reply(&mut stream, IO_TIMEOUT),
            )
            .await
        {
            return self.backend.error(&self.name, reason, None);
        }
        self.backend.unavailable(format!("write: {e}"))
    }
}

#[async_trait]
impl BlobWriter for PeerWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.backend.unavailable("write after a failure"));
        };
        match timed(wire::write_chunks(stream, &data)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.failure(e).await),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<BlobMeta> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.backend.unavailable("commit after a failure"));
        };
        let sent = async {
            wire::write_frame(stream, &[]).await?;
            stream.flush().await
        };
        if let Err(e) = timed(sent).await {
            return Err(self.failure(e).await);
        }
        let Some(mut stream) = self.stream.take() else {
            return Err(self.backend.unavailable("commit after a failure"));
        };
        let size = self
            .backend
            .read_reply(&mut stream, COMMIT_TIMEOUT)
            .await?
            .map_err(|e| self.backend.error(&self.name, e, None))?;
        self.backend.reuse(self.backend.peer, stream);
        Ok(BlobMeta {
            name: self.name.clone(),
            size,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        // A stream that ends without the empty frame aborts the write.
        if let Some(mut stream) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for PeerBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    /// A request costs a stream round trip between two processes, usually
    /// two machines: 1 MiB reads took a 64 MiB GET from 256 requests to 64
    /// (BENCHMARKS.md, "Peers over libp2p").
    fn preferred_read_bytes(&self) -> u64 {
        1 << 20
    }

    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        let (stream, reply, ready) = self
            .open_answered(
                self.peer,
                &BlobRequest::Put {
                    name: name.as_str().to_string(),
                },
            )
            .await?;
        reply.map_err(|e| self.error(name, e, None))?;
        if !ready {
            return Err(self.error(
                name,
                WireError::Malformed("a put was answered without Ready".into()),
                None,
            ));
        }
        Ok(Box::new(PeerWriter {
            backend: self.clone(),
            name: name.clone(),
            stream: Some(stream),
        }))
    }

    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        self.here_or_elsewhere(name, |peer| self.get_from(peer, name, &range))
            .await
    }

    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        self.here_or_elsewhere(name, |peer| async move {
            match self
                .control(
                    peer,
                    ControlRequest::Stat {
                        name: name.as_str().to_string(),
                    },
                )
                .await?
            {
                ControlResponse::Stat { size } => Ok(BlobMeta {
                    name: name.clone(),
                    size,
                }),
                ControlResponse::Error(e) => Err(self.error(name, e, None)),
                other => Err(self.unavailable(format!("unexpected answer {other:?}"))),
            }
        })
        .await
    }

    async fn delete(&self, name: &BlobName) -> Result<()> {
        self.here_or_elsewhere(name, |peer| async move {
            match self
                .control(
                    peer,
                    ControlRequest::Delete {
                        name: name.as_str().to_string(),
                    },
                )
                .await?
            {
                ControlResponse::Deleted => Ok(()),
                ControlResponse::Error(e) => Err(self.error(name, e, None)),
                other => Err(self.unavailable(format!("unexpected answer {other:?}"))),
            }
        })
        .await
    }

    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        let opened = async move {
            let stream = self.open_fresh(self.peer, &BlobRequest::List).await?;
            Ok::<_, BackendError>(futures::stream::try_unfold(
                Some(stream),
                move |stream| async move {
                    let Some(mut stream) = stream else {
                        return Ok(None);
                    };
                    let frame = tokio::time::timeout(
                        IO_TIMEOUT,
                        wire::read_message::<ListFrame, _>(&mut stream, MAX_CHUNK),
                    )
                    .await
                    .map_err(|_| self.unavailable("listing stalled for 30 s"))?
                    .map_err(|e| self.unavailable(format!("listing: {e}")))?;
                    match frame {
                        ListFrame::Page(page) => {
                            let mut metas = Vec::with_capacity(page.len());
                            for (name, size) in page {
                                let name = BlobName::new(name).map_err(|e| {
                                    self.unavailable(format!("listing: bad name: {e}"))
                                })?;
                                metas.push(Ok(BlobMeta { name, size }));
                            }
                            Ok(Some((futures::stream::iter(metas), Some(stream))))
                        }
                        ListFrame::End => {
                            self.reuse(self.peer, stream);
                            Ok(None)
                        }
                        ListFrame::Err(e) => Err(self.unavailable(format!("listing: {e}"))),
                    }
                },
            ))
        };
        futures::stream::once(opened)
            .map(|opened| match opened {
                Ok(pages) => pages.try_flatten().boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    async fn health(&self) -> Result<Health> {
        match self.control(self.peer, ControlRequest::Health).await? {
            ControlResponse::Health {
                free_bytes,
                used_bytes,
                writable,
            } => {
                let free_bytes = match (self.info.capacity_bytes, used_bytes) {
                    (Some(cap), Some(used)) => free_bytes.min(cap.saturating_sub(used)),
                    _ => free_bytes,
                };
                Ok(Health {
                    free_bytes,
                    used_bytes,
                    writable,
                })
            }
            ControlResponse::Error(e) => Err(self.unavailable(e)),
            other => Err(self.unavailable(format!("unexpected answer {other:?}"))),
        }
    }

    async fn challenge(
        &self,
        name: &BlobName,
        nonce: [u8; 32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        // In batches the peer accepts; a range too large for any batch is
        // read on a stream instead.
        let mut chunks = Vec::with_capacity(ranges.len());
        let mut batch: Vec<Range<u64>> = Vec::new();
        let mut batch_bytes = 0u64;
        for range in ranges {
            let len = range.end.saturating_sub(range.start);
            if len > MAX_CHALLENGE_BYTES {
                chunks.extend(self.challenge_batch(name, nonce, &batch).await?);
                batch.clear();
                batch_bytes = 0;
                chunks.push(self.get(name, range.clone()).await?);
                continue;
            }
            if batch.len() == MAX_CHALLENGE_RANGES || batch_bytes + len > MAX_CHALLENGE_BYTES {
                chunks.extend(self.challenge_batch(name, nonce, &batch).await?);
                batch.clear();
                batch_bytes = 0;
            }
            batch.push(range.clone());
            batch_bytes += len;
        }
        chunks.extend(self.challenge_batch(name, nonce, &batch).await?);
        Ok(chunks)
    }
}

impl PeerBackend {
    /// One challenge of at most [`MAX_CHALLENGE_RANGES`] ranges and
    /// [`MAX_CHALLENGE_BYTES`], to this peer or (the blob not here) to
    /// the peer the DHT says holds it.
    async fn challenge_batch(
        &self,
        name: &BlobName,
        nonce: [u8; 32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start, r.end)).collect();
        self.here_or_elsewhere(name, |peer| {
            let wanted = wanted.clone();
            async move {
                let request = ControlRequest::Challenge {
                    name: name.as_str().to_string(),
                    nonce,
                    ranges: wanted.clone(),
                };
                match self.control(peer, request).await? {
                    ControlResponse::Challenge { chunks, proof } => {
                        let lengths_match = chunks.len() == wanted.len()
                            && chunks
                                .iter()
                                .zip(&wanted)
                                .all(|(c, (s, e))| c.len() as u64 == e.saturating_sub(*s));
                        if !lengths_match {
                            return Err(self.error(
                                name,
                                WireError::Malformed(
                                    "the challenge's answer has the wrong shape".into(),
                                ),
                                None,
                            ));
                        }
                        if wire::challenge_proof(&nonce, name.as_str(), &wanted, &chunks) != proof {
                            return Err(self.error(
                                name,
                                WireError::Malformed("the challenge's proof does not match".into()),
                                None,
                            ));
                        }
                        Ok(chunks)
                    }
                    ControlResponse::Error(WireError::InvalidRange { size }) => {
                        let bad = ranges.iter().find(|r| r.end > size || r.start > r.end);
                        Err(self.error(name, WireError::InvalidRange { size }, bad))
                    }
                    ControlResponse::Error(e) => Err(self.error(name, e, None)),
                    other => Err(self.unavailable(format!("unexpected answer {other:?}"))),
                }
            }
        })
        .await
    }
}
