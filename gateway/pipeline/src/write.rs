//! The write path: a plaintext stream in, k + m durable fragment blobs out.
//!
//! ```text
//! body ──► one stripe of pieces (Bytes, no copy) ──► encode task (blocking pool, ≤ stripes_in_flight):
//!      │                                              fill StripeBuffer, seal, Reed-Solomon, blake3
//!      └─► MD5 thread (ETag)                                   │
//!                                  shards batched per fragment (≥ FRAGMENT_BATCH_BYTES), bounded queue
//!                                                              ▼
//!                                           fragment writer task i ──► backend i
//! ```
//!
//! Memory is bounded by the stripe size times (stripes being encoded + the
//! per-fragment queues), never by the object size: a slow backend fills its
//! queue and the body stops being read (back-pressure to the client).
//!
//! A write succeeds only when at least `write_quorum` fragments are
//! committed; fragments that failed are recorded as `Missing` for repair.
//! Otherwise every committed fragment of the version is deleted before the
//! error returns, so a failed write leaves nothing behind. A crash mid-write
//! can leave committed blobs without a manifest: their names are the
//! [`Placement`]'s, drawn before the write, for the caller to journal.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5_many::Md5State;
use shardgate_backend::{Backend, BackendError, BlobMeta, buffers};
use shardgate_core::hash::group_digests;
use shardgate_core::{
    BackendId, BlobName, Digest, EncodedStripe, Envelope, FragmentRef, FragmentState, Manifest,
    PayloadKey, Recipients, Segment, StripeBuffer, StripeLayout, VersionId, encode_stripe,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{PipelineError, Result};
use crate::etag::{HasherGone, Hashers, Md5Digest, Md5Stream};

/// Batches queued per fragment before the encoder waits for that backend.
pub const FRAGMENT_QUEUE_BATCHES: usize = 2;
/// Shards of a fragment are handed to its writer in batches of at least
/// this many bytes: with wide codes shards are small, and waking k + m
/// writer tasks per stripe cost more than the writes (measured, BENCHMARKS.md).
pub const FRAGMENT_BATCH_BYTES: usize = 256 * 1024;
/// Plaintext hashed inline before a write hands its MD5 to the hashers.
const MD5_INLINE_BYTES: usize = 256 << 10;

/// How a segment is written.
#[derive(Clone, Debug)]
pub struct WriteParams {
    /// Codec, k + m and stripe size.
    pub layout: StripeLayout,
    /// Fragments that must be durable for the write to succeed (k..=k+m).
    pub write_quorum: usize,
    /// Who can decrypt: the gateway's recipients and any recovery key.
    pub recipients: Arc<Recipients>,
    /// Stripes encoded concurrently; bounds CPU parallelism and memory.
    pub stripes_in_flight: usize,
}

impl WriteParams {
    /// All k + m fragments required; as many stripes in flight as cores + 1.
    pub fn new(layout: StripeLayout, recipients: Arc<Recipients>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            layout,
            write_quorum: layout.code.width(),
            recipients,
            stripes_in_flight: cores + 1,
        }
    }

    /// Sets the write quorum; it must lie in k..=k+m.
    pub fn with_write_quorum(mut self, quorum: usize) -> Result<Self> {
        let code = self.layout.code;
        if quorum < code.k() || quorum > code.width() {
            return Err(PipelineError::Placement(format!(
                "write quorum {quorum} is outside k..=k+m ({}..={})",
                code.k(),
                code.width()
            )));
        }
        self.write_quorum = quorum;
        Ok(self)
    }
}

/// A segment made durable.
#[derive(Debug)]
pub struct SegmentWrite {
    /// The segment, ready for a manifest.
    pub segment: Segment,
    /// Indices of fragments that failed (recorded as `Missing`).
    pub lost_fragments: Vec<usize>,
    /// The key its payload was sealed with (for the [`crate::KeyCache`]).
    pub key: PayloadKey,
}

enum FragmentMessage {
    /// Consecutive shards of the fragment, in stripe order.
    Shards(Vec<Bytes>),
    /// The last shards and the digest trailer: write them, then commit.
    Finish(Vec<Bytes>),
}

/// Where each fragment of a new segment goes, and under which blob name.
///
/// Names are drawn before any byte is written, so the caller can record
/// them first (an intent in the metadata store): after a crash mid-write,
/// the blobs that may exist without a manifest are exactly the ones named
/// in an unfinished intent, and the sweep deletes them without listing
/// whole backends.
///
/// The fragment writers run as tasks of the placement's tracker, which
/// outlives a dropped write: whoever abandons the write waits on
/// [`Placement::writers`] first, so that no writer commits a blob after
/// the blob was handed to the garbage collector.
#[derive(Clone, Debug)]
pub struct Placement {
    backends: Vec<Arc<dyn Backend>>,
    names: Vec<BlobName>,
    writers: TaskTracker,
}

impl Placement {
    /// Fragment i on `backends[i]`, each under a fresh random name.
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Self {
        let names = backends.iter().map(|_| BlobName::random()).collect();
        Self {
            backends,
            names,
            writers: TaskTracker::new(),
        }
    }

    /// The fragment writers' tracker: `close()` then `wait()` returns once
    /// every writer has committed or aborted its blob.
    pub fn writers(&self) -> &TaskTracker {
        &self.writers
    }

    /// The backend of each fragment.
    pub fn backends(&self) -> &[Arc<dyn Backend>] {
        &self.backends
    }

    /// The blob name of each fragment.
    pub fn names(&self) -> &[BlobName] {
        &self.names
    }
}

/// Writes `input` as one segment, fragment i on `placement.backends()[i]`.
#[tracing::instrument(level = "debug", skip_all, fields(k = params.layout.code.k(), m = params.layout.code.m()))]
pub async fn write_segment<S>(
    input: S,
    placement: &Placement,
    params: &WriteParams,
) -> Result<SegmentWrite>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    write_segment_with_tap(input, placement, params, None).await
}

async fn write_segment_with_tap<S>(
    input: S,
    placement: &Placement,
    params: &WriteParams,
    tap: Option<&mut Md5Tap>,
) -> Result<SegmentWrite>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let (backends, names) = (placement.backends(), placement.names());
    let width = params.layout.code.width();
    if backends.len() != width {
        return Err(PipelineError::Placement(format!(
            "{} backends placed for k + m = {width} fragments",
            backends.len()
        )));
    }
    let params = params.clone().with_write_quorum(params.write_quorum)?;
    let (envelope, key) = Envelope::seal(&params.recipients)?;
    let mut fanout = FanOut::start(placement.writers(), backends, names, params.write_quorum);

    match produce(input, &params, Arc::new(key.clone()), &mut fanout, tap).await {
        Ok(plaintext_len) => {
            let (results, digests) = fanout.finish().await;
            let lost = settle(&results, backends, names, params.write_quorum).await?;
            let fragments = backends
                .iter()
                .zip(names)
                .zip(digests)
                .enumerate()
                .map(|(i, ((backend, blob), digests))| FragmentRef {
                    backend: backend.id().clone(),
                    blob: blob.clone(),
                    group_digests: group_digests(&digests),
                    state: if lost.contains(&i) {
                        FragmentState::Missing
                    } else {
                        FragmentState::Stored
                    },
                })
                .collect();
            Ok(SegmentWrite {
                segment: Segment {
                    plaintext_len,
                    envelope,
                    layout: params.layout,
                    fragments,
                    inline: None,
                },
                lost_fragments: lost,
                key,
            })
        }
        Err(e) => {
            let results = fanout.cancel().await;
            discard(&results, backends, names).await;
            Err(e)
        }
    }
}

/// What an object is, apart from its bytes.
#[derive(Clone, Debug, Default)]
pub struct ObjectMeta {
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// User metadata and other stored headers.
    pub user_metadata: BTreeMap<String, String>,
}

/// An object version made durable.
#[derive(Debug)]
pub struct ObjectWrite {
    /// Its manifest, to be committed by the caller.
    pub manifest: Manifest,
    /// Fragments that failed (the write still reached its quorum).
    pub lost_fragments: Vec<usize>,
    /// The key its one segment was sealed with.
    pub key: PayloadKey,
}

/// Writes a whole object as one segment and builds its manifest. The ETag
/// is the MD5 of the plaintext, computed on its own thread so that it does
/// not slow the codec.
pub async fn write_object<S>(
    input: S,
    placement: &Placement,
    params: &WriteParams,
    meta: ObjectMeta,
    now_unix_ms: u64,
) -> Result<ObjectWrite>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let mut md5 = Md5Tap::default();
    let written = write_segment_with_tap(input, placement, params, Some(&mut md5)).await;
    let md5 = md5.finish().await;
    // The write's own error first: it says more than the hash's.
    let SegmentWrite {
        segment,
        lost_fragments,
        key,
    } = written?;
    let md5 = md5?;
    let manifest = Manifest {
        version_id: VersionId::new(now_unix_ms),
        size: segment.plaintext_len,
        etag: hex::encode(md5),
        content_type: meta.content_type,
        user_metadata: meta.user_metadata,
        created_unix_ms: now_unix_ms,
        segments: vec![segment],
    };
    Ok(ObjectWrite {
        manifest,
        lost_fragments,
        key,
    })
}

/// Writes a small object into its manifest ([`shardgate_core::inline`]):
/// sealed whole where it is, no backend touched, nothing to clean up if it
/// fails. A body longer than `limit` fails instead of growing the manifest.
pub async fn write_inline_object<S>(
    mut input: S,
    recipients: &Recipients,
    limit: usize,
    meta: ObjectMeta,
    now_unix_ms: u64,
) -> Result<ObjectWrite>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let mut body: Vec<u8> = Vec::new();
    while let Some(piece) = input.next().await {
        let piece = piece.map_err(PipelineError::Input)?;
        if body.len() + piece.len() > limit {
            return Err(PipelineError::Input(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a body kept inline is at most {limit} bytes"),
            )));
        }
        body.extend_from_slice(&piece);
    }
    let (envelope, key) = Envelope::seal(recipients)?;
    let sealed = shardgate_core::inline::seal_payload(&key, &body)?;
    let mut md5 = Md5State::default();
    md5.update(&body);
    let size = body.len() as u64;
    let segment = Segment {
        plaintext_len: size,
        envelope,
        layout: StripeLayout::default_for(shardgate_core::ErasureCode::new(1, 0)?),
        fragments: Vec::new(),
        inline: Some(sealed),
    };
    Ok(ObjectWrite {
        manifest: Manifest {
            version_id: VersionId::new(now_unix_ms),
            size,
            etag: hex::encode(md5.finalize()),
            content_type: meta.content_type,
            user_metadata: meta.user_metadata,
            created_unix_ms: now_unix_ms,
            segments: vec![segment],
        },
        lost_fragments: Vec::new(),
        key,
    })
}

/// The MD5 of the plaintext (the ETag), computed beside the codec.
///
/// The first [`MD5_INLINE_BYTES`] are hashed where they arrive (a small
/// object's whole body costs a few microseconds there); past them the
/// rest goes to the shared hasher threads ([`crate::etag`]), so a large
/// body's hashing runs in parallel with its encoding, and several uploads'
/// hashing shares SIMD lanes.
#[derive(Debug, Default)]
struct Md5Tap {
    inline: Md5State,
    hashed: usize,
    stream: Option<Md5Stream>,
    /// No hasher could take it: everything is hashed inline.
    inline_only: bool,
    /// The hasher went away mid-write: there is no digest to give.
    lost: bool,
}

impl Md5Tap {
    async fn feed(&mut self, piece: &Bytes) {
        if self.lost {
            return;
        }
        if self.stream.is_none()
            && (self.inline_only || self.hashed + piece.len() <= MD5_INLINE_BYTES)
        {
            self.inline.update(piece);
            self.hashed += piece.len();
            return;
        }
        if self.stream.is_none() {
            match Hashers::global().map(|h| h.open(self.inline)) {
                Some(Ok(stream)) => self.stream = Some(stream),
                _ => {
                    // Slower, never wrong: this write hashes where it reads.
                    self.inline_only = true;
                    self.inline.update(piece);
                    return;
                }
            }
        }
        if let Some(stream) = &mut self.stream
            && stream.update(piece.clone()).await.is_err()
        {
            // Reported by finish, which cannot give a digest then.
            tracing::warn!("the MD5 hasher went away mid-write");
            self.stream = None;
            self.lost = true;
        }
    }

    async fn finish(self) -> Result<Md5Digest> {
        if self.lost {
            return Err(PipelineError::Internal(HasherGone.to_string()));
        }
        match self.stream {
            None => Ok(self.inline.finalize()),
            Some(stream) => stream
                .finish()
                .await
                .map_err(|e| PipelineError::Internal(e.to_string())),
        }
    }
}

/// Reads the body into stripes, encodes them on the blocking pool and hands
/// the shards to the fragment writers, in order. Returns the plaintext length.
async fn produce<S>(
    mut input: S,
    params: &WriteParams,
    key: Arc<PayloadKey>,
    fanout: &mut FanOut,
    mut tap: Option<&mut Md5Tap>,
) -> Result<u64>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let in_flight = params.stripes_in_flight.max(1);
    let mut encoding: VecDeque<Encoding> = VecDeque::new();
    let mut pending: Option<Bytes> = None;
    let mut next = async |pending: &mut Option<Bytes>| -> Result<Option<Bytes>> {
        if let Some(p) = pending.take() {
            return Ok(Some(p));
        }
        loop {
            match input.next().await {
                Some(Ok(piece)) if piece.is_empty() => continue,
                Some(Ok(piece)) => {
                    if let Some(tap) = tap.as_deref_mut() {
                        tap.feed(&piece).await;
                    }
                    return Ok(Some(piece));
                }
                Some(Err(e)) => return Err(PipelineError::Input(e)),
                None => return Ok(None),
            }
        }
    };

    let layout = params.layout;
    let mut total = 0u64;
    let stripe_bytes = layout.stripe_plain_bytes();
    for stripe in 0u64.. {
        // Collect the stripe's pieces (reference counts, no copy); the copy
        // into the stripe buffer happens on the encoding thread.
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut len = 0;
        while len < stripe_bytes {
            let Some(mut piece) = next(&mut pending).await? else {
                break;
            };
            let take = (stripe_bytes - len).min(piece.len());
            let rest = piece.split_off(take);
            len += piece.len();
            pieces.push(piece);
            if !rest.is_empty() {
                pending = Some(rest);
            }
        }
        // A full stripe is final only if nothing follows it.
        let is_final = if len < stripe_bytes {
            true
        } else {
            match next(&mut pending).await? {
                Some(more) => {
                    pending = Some(more);
                    false
                }
                None => true,
            }
        };
        total += len as u64;
        let key = key.clone();
        let encode = move || {
            // Sized to this stripe's plaintext: a small object's only
            // stripe takes a few KiB, not a full stripe.
            let shard_len = layout.shard_bytes_for_plain(len);
            let k = layout.code.k();
            let mut buf = StripeBuffer::sized(&layout, buffers::take(k * shard_len), len);
            for piece in &pieces {
                buf.fill(piece);
            }
            drop(pieces);
            encode_stripe(
                &layout,
                &key,
                stripe,
                buf,
                is_final,
                buffers::take(layout.code.m() * shard_len),
            )
        };
        // A small object's one stripe costs less to seal and encode than a
        // hand-off to another thread and back: it is done here. (Stripes
        // of a larger object go to the blocking pool, however small
        // `stripe_chunks` makes them: they run in parallel there.)
        let alone = stripe == 0 && is_final;
        encoding.push_back(match alone && len <= INLINE_CODEC_BYTES {
            true => Encoding::Done(encode()),
            false => Encoding::Running(tokio::task::spawn_blocking(encode)),
        });
        if encoding.len() >= in_flight
            && let Some(oldest) = encoding.pop_front()
        {
            fanout.send(oldest.finish().await?).await?;
        }
        if is_final {
            break;
        }
    }
    while let Some(h) = encoding.pop_front() {
        fanout.send(h.finish().await?).await?;
    }
    Ok(total)
}

/// Plaintext bytes of a segment's only stripe (written or read) that are
/// sealed and encoded (or verified and opened) where they are rather than
/// on the blocking pool: some tens of microseconds of work, less than the
/// two thread hand-offs it would take otherwise (BENCHMARKS.md, "Small
/// objects: the per-request cost").
pub(crate) const INLINE_CODEC_BYTES: usize = 64 << 10;

/// A stripe being encoded: done inline, or on the blocking pool.
enum Encoding {
    Done(shardgate_core::Result<EncodedStripe>),
    Running(JoinHandle<shardgate_core::Result<EncodedStripe>>),
}

impl Encoding {
    async fn finish(self) -> Result<EncodedStripe> {
        Ok(match self {
            Encoding::Done(r) => r?,
            Encoding::Running(task) => task.await??,
        })
    }
}

/// The fragment writer tasks and their queues.
struct FanOut {
    backends: Vec<BackendId>,
    senders: Vec<Option<mpsc::Sender<FragmentMessage>>>,
    /// Shards not yet handed to each fragment's writer.
    pending: Vec<Vec<Bytes>>,
    /// Bytes in each fragment's `pending` (the same for all).
    pending_bytes: usize,
    tasks: Vec<JoinHandle<Result<BlobMeta, BackendError>>>,
    digests: Vec<Vec<Digest>>,
    quorum: usize,
}

impl FanOut {
    fn start(
        writers: &TaskTracker,
        placement: &[Arc<dyn Backend>],
        names: &[BlobName],
        quorum: usize,
    ) -> Self {
        let mut senders = Vec::with_capacity(placement.len());
        let mut tasks = Vec::with_capacity(placement.len());
        for (index, (backend, name)) in placement.iter().zip(names).enumerate() {
            let (tx, rx) = mpsc::channel(FRAGMENT_QUEUE_BATCHES);
            // A child of the request's span: traces show each fragment.
            let span = tracing::debug_span!("fragment write", backend = %backend.id(), index);
            tasks.push(
                writers.spawn(write_fragment(backend.clone(), name.clone(), rx).instrument(span)),
            );
            senders.push(Some(tx));
        }
        Self {
            backends: placement.iter().map(|b| b.id().clone()).collect(),
            senders,
            tasks,
            pending: vec![Vec::new(); placement.len()],
            pending_bytes: 0,
            digests: vec![Vec::new(); placement.len()],
            quorum,
        }
    }

    async fn send(&mut self, stripe: EncodedStripe) -> Result<()> {
        let k = stripe.data.len() / stripe.shard_len;
        let len = stripe.shard_len;
        for (all, d) in self.digests.iter_mut().zip(&stripe.digests) {
            all.push(*d);
        }
        let data = buffers::into_bytes(stripe.data);
        let parity = buffers::into_bytes(stripe.parity);
        for (i, pending) in self.pending.iter_mut().enumerate() {
            if self.senders[i].is_none() {
                continue;
            }
            pending.push(if i < k {
                data.slice(i * len..(i + 1) * len)
            } else {
                parity.slice((i - k) * len..(i - k + 1) * len)
            });
        }
        // Every fragment gets a shard of the same length: batches fill together.
        self.pending_bytes += len;
        if self.pending_bytes >= FRAGMENT_BATCH_BYTES {
            self.pending_bytes = 0;
            self.flush(stripe.stripe).await;
        }
        let alive = self.senders.iter().flatten().count();
        if alive < self.quorum {
            return Err(PipelineError::QuorumNotReached {
                durable: alive,
                quorum: self.quorum,
                failures: "fragment writers failed during the upload".into(),
            });
        }
        Ok(())
    }

    /// Hands every live fragment its pending shards.
    async fn flush(&mut self, stripe: u64) {
        for (i, slot) in self.senders.iter_mut().enumerate() {
            let shards = std::mem::take(&mut self.pending[i]);
            let Some(tx) = slot else { continue };
            if tx.send(FragmentMessage::Shards(shards)).await.is_err() {
                tracing::warn!(fragment = i, stripe, "fragment writer failed");
                *slot = None;
            }
        }
    }

    /// Sends every live fragment its trailer and waits for the commits.
    /// Returns each writer's outcome and each fragment's shard digests.
    async fn finish(mut self) -> (Vec<Result<BlobMeta, BackendError>>, Vec<Vec<Digest>>) {
        for (i, slot) in self.senders.iter_mut().enumerate() {
            let mut last = std::mem::take(&mut self.pending[i]);
            if let Some(tx) = slot.take() {
                let trailer: Vec<u8> = self.digests[i].iter().flat_map(|d| d.0).collect();
                last.push(Bytes::from(trailer));
                // A closed queue means the writer already failed; join reports why.
                let _ = tx.send(FragmentMessage::Finish(last)).await;
            }
        }
        let digests = std::mem::take(&mut self.digests);
        (self.join().await, digests)
    }

    /// Stops every writer without committing.
    async fn cancel(mut self) -> Vec<Result<BlobMeta, BackendError>> {
        self.senders.clear();
        self.join().await
    }

    async fn join(self) -> Vec<Result<BlobMeta, BackendError>> {
        let mut out = Vec::with_capacity(self.tasks.len());
        for (task, backend) in self.tasks.into_iter().zip(self.backends) {
            out.push(task.await.unwrap_or_else(|e| {
                Err(BackendError::Io {
                    backend,
                    op: "fragment writer task",
                    source: io::Error::other(e.to_string()),
                })
            }));
        }
        out
    }
}

async fn write_fragment(
    backend: Arc<dyn Backend>,
    name: BlobName,
    mut rx: mpsc::Receiver<FragmentMessage>,
) -> Result<BlobMeta, BackendError> {
    let cancelled = || BackendError::Unavailable {
        backend: backend.id().clone(),
        reason: "write cancelled".into(),
    };
    // A fragment whose every byte comes in its first message (a small
    // object's) is written whole: one call, which a backend does in one
    // step (the fs backend in one trip to the blocking pool).
    let mut first = match rx.recv().await {
        Some(FragmentMessage::Finish(all)) => return backend.put(&name, concat(all)).await,
        Some(shards) => Some(shards),
        None => return Err(cancelled()),
    };
    let mut w = backend.create(&name).await?;
    loop {
        let message = match first.take() {
            Some(message) => Some(message),
            None => rx.recv().await,
        };
        match message {
            Some(FragmentMessage::Shards(shards)) => {
                for shard in shards {
                    w.write(shard).await?;
                }
            }
            Some(FragmentMessage::Finish(last)) => {
                for bytes in last {
                    w.write(bytes).await?;
                }
                return w.commit().await;
            }
            None => break,
        }
    }
    w.abort().await?;
    Err(cancelled())
}

/// The pieces of a small fragment as one buffer.
fn concat(pieces: Vec<Bytes>) -> Bytes {
    match <[Bytes; 1]>::try_from(pieces) {
        Ok([one]) => one,
        Err(pieces) => {
            let mut all = Vec::with_capacity(pieces.iter().map(Bytes::len).sum());
            for piece in &pieces {
                all.extend_from_slice(piece);
            }
            Bytes::from(all)
        }
    }
}

/// Checks the quorum and returns the lost fragment indices. Below the
/// quorum, deletes what was committed and fails.
async fn settle(
    results: &[Result<BlobMeta, BackendError>],
    placement: &[Arc<dyn Backend>],
    names: &[BlobName],
    quorum: usize,
) -> Result<Vec<usize>> {
    let durable = results.iter().filter(|r| r.is_ok()).count();
    if durable < quorum {
        discard(results, placement, names).await;
        let failures = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(PipelineError::QuorumNotReached {
            durable,
            quorum,
            failures,
        });
    }
    let mut lost = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if let Err(e) = r {
            tracing::warn!(fragment = i, backend = %placement[i].id(), error = %e, "fragment lost at write; recorded for repair");
            // A commit that failed after linking may have left the blob; remove it.
            forget(&*placement[i], &names[i]).await;
            lost.push(i);
        }
    }
    Ok(lost)
}

async fn discard(
    results: &[Result<BlobMeta, BackendError>],
    placement: &[Arc<dyn Backend>],
    names: &[BlobName],
) {
    for ((r, b), n) in results.iter().zip(placement).zip(names) {
        if r.is_ok() {
            forget(&**b, n).await;
        }
    }
}

async fn forget(backend: &dyn Backend, name: &BlobName) {
    match backend.delete(name).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => {
            tracing::warn!(backend = %backend.id(), blob = %name, error = %e, "could not delete fragment; the orphan sweep will")
        }
    }
}
