//! The ETag's MD5, for many uploads at once.
//!
//! S3's ETag of a single-part PUT is the MD5 of its body. MD5 is serial
//! within one stream, about 0.6 GB/s per core with md-5's assembly, and it
//! was 42% of a large PUT's CPU once the page-cache copy was gone
//! (BENCHMARKS.md, issue 24). Several uploads' MD5s fit in one core's SIMD
//! lanes, though: md5-many hashes 16 streams at once with AVX-512 (7.5 GB/s
//! together here, against 0.8 GB/s for one stream on its single-stream
//! path, itself faster than md-5's). So the hashers here are a few threads
//! (one per core), each owning the streams given to it, and each turn
//! takes the next piece of every stream that has one through one
//! multi-buffer call. The same design as MinIO's md5-simd.
//!
//! Threads of their own, never tokio's blocking pool: a hasher waits for
//! pieces as long as uploads last, and 512 concurrent PUTs with a hasher
//! each on the pool took every thread of it (issue 22). A stream holds at
//! most [`QUEUED_PIECES`] pieces not yet hashed: a slow hasher slows its
//! uploads' reading of their bodies, never memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use md5_many::{Md5Many, Md5State};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// An MD5 digest.
pub type Md5Digest = [u8; 16];

/// Pieces one stream may have queued, not yet hashed.
pub const QUEUED_PIECES: usize = 8;
/// Streams one multi-buffer call takes at most (md5-many's widest kernel:
/// three interleaved chains of 16 lanes).
const MAX_BATCH: usize = 48;
/// One hasher thread per this many cores: one core's lanes hash 16
/// uploads at 7.5 GB/s, more than 8 cores' codecs take in.
const CORES_PER_HASHER: usize = 8;
/// What each stream of a multi-buffer call contributes at most. Lanes of
/// equal length take md5-many's fast kernels; unequal ones a slower,
/// generic path (measured: an upload's body pieces vary in size, and
/// hashing them as they came was no faster than md-5).
const LANE_BYTES: usize = 64 << 10;
/// Lanes are cut to the shortest piece in the call, but not below this.
const MIN_LANE_BYTES: usize = 4 << 10;
/// Fewer streams with bytes waiting than this are hashed one by one on
/// md5-many's single-stream path (0.8 GB/s): its multi-buffer call on 2 to
/// 7 lanes took a generic path slower than that (measured: 8 uploads at
/// once, MD5 was 42% of the PUT's CPU, as with md-5).
const MIN_LANES: usize = 8;

/// The hasher threads (started at first use).
#[derive(Debug)]
pub struct Hashers {
    workers: Vec<Worker>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Worker {
    tx: mpsc::UnboundedSender<Message>,
    open_streams: Arc<AtomicUsize>,
}

impl Worker {
    /// A hasher thread that ended (it panicked) takes no stream.
    fn alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

enum Message {
    Open(u64, Md5State),
    Piece(u64, Bytes, OwnedSemaphorePermit),
    Finish(u64, oneshot::Sender<Md5Digest>),
    Abandon(u64),
}

/// The hasher was gone before the stream's digest was out (it panicked,
/// or could not start).
#[derive(Debug, thiserror::Error)]
#[error("the MD5 hasher ended early")]
pub struct HasherGone;

impl Hashers {
    /// The process's hashers; `None` when no thread could be started (the
    /// caller then hashes where it reads).
    pub fn global() -> Option<&'static Hashers> {
        static HASHERS: OnceLock<Option<Hashers>> = OnceLock::new();
        HASHERS
            .get_or_init(|| {
                let threads = std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .div_ceil(CORES_PER_HASHER);
                match Hashers::start(threads) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!(error = %e, "no MD5 hasher thread; hashing inline");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Starts `threads` hasher threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            std::thread::Builder::new()
                .name(format!("shardgate-md5-{i}"))
                .spawn(move || run(rx))?;
            workers.push(Worker {
                tx,
                open_streams: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self {
            workers,
            next_id: AtomicU64::new(0),
        })
    }

    /// A new stream, continuing from `state` (what was hashed inline), on
    /// the hasher with the fewest streams.
    pub fn open(&self, state: Md5State) -> Result<Md5Stream, HasherGone> {
        let worker = self
            .workers
            .iter()
            .filter(|w| w.alive())
            .min_by_key(|w| w.open_streams.load(Ordering::Relaxed))
            .ok_or(HasherGone)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        worker
            .tx
            .send(Message::Open(id, state))
            .map_err(|_| HasherGone)?;
        worker.open_streams.fetch_add(1, Ordering::Relaxed);
        Ok(Md5Stream {
            id,
            tx: worker.tx.clone(),
            open_streams: worker.open_streams.clone(),
            queued: Arc::new(Semaphore::new(QUEUED_PIECES)),
            done: false,
        })
    }
}

/// One upload's MD5 on a hasher thread.
#[derive(Debug)]
pub struct Md5Stream {
    id: u64,
    tx: mpsc::UnboundedSender<Message>,
    open_streams: Arc<AtomicUsize>,
    queued: Arc<Semaphore>,
    done: bool,
}

impl Md5Stream {
    /// Queues `piece`, waiting while [`QUEUED_PIECES`] are not yet hashed.
    pub async fn update(&mut self, piece: Bytes) -> Result<(), HasherGone> {
        let permit = self
            .queued
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HasherGone)?;
        self.tx
            .send(Message::Piece(self.id, piece, permit))
            .map_err(|_| HasherGone)
    }

    /// The digest of everything queued.
    pub async fn finish(mut self) -> Result<Md5Digest, HasherGone> {
        self.done = true;
        self.open_streams.fetch_sub(1, Ordering::Relaxed);
        let (done, digest) = oneshot::channel();
        self.tx
            .send(Message::Finish(self.id, done))
            .map_err(|_| HasherGone)?;
        digest.await.map_err(|_| HasherGone)
    }
}

impl Drop for Md5Stream {
    fn drop(&mut self) {
        if !self.done {
            self.open_streams.fetch_sub(1, Ordering::Relaxed);
            let _ = self.tx.send(Message::Abandon(self.id));
        }
    }
}

#[derive(Default)]
struct StreamState {
    state: Md5State,
    pending: VecDeque<(Bytes, OwnedSemaphorePermit)>,
    finish: Option<oneshot::Sender<Md5Digest>>,
}

/// A hasher thread: applies messages, then hashes the next bytes of every
/// stream that has some: in one multi-buffer call (as many from each: the
/// shortest front piece's length, within [`MIN_LANE_BYTES`] and
/// [`LANE_BYTES`]) when at least [`MIN_LANES`] have, one by one
/// otherwise; until every sender is gone.
fn run(mut rx: mpsc::UnboundedReceiver<Message>) {
    let engine = Md5Many::new();
    let mut streams: HashMap<u64, StreamState> = HashMap::new();
    let mut batch_ids: Vec<u64> = Vec::with_capacity(MAX_BATCH);
    let mut batch_states: Vec<Md5State> = Vec::with_capacity(MAX_BATCH);
    let mut batch_pieces: Vec<Bytes> = Vec::with_capacity(MAX_BATCH);
    let mut ready: Vec<u64> = Vec::new();
    let mut turn = 0usize;
    loop {
        let busy = streams.values().any(|s| !s.pending.is_empty());
        if !busy {
            match rx.blocking_recv() {
                Some(message) => apply(&mut streams, message),
                None => return,
            }
        }
        while let Ok(message) = rx.try_recv() {
            apply(&mut streams, message);
        }
        batch_ids.clear();
        batch_states.clear();
        batch_pieces.clear();
        ready.clear();
        ready.extend(
            streams
                .iter()
                .filter(|(_, s)| !s.pending.is_empty())
                .map(|(id, _)| *id),
        );
        // More ready streams than one call takes: start each turn further
        // along, so none waits behind the same others.
        turn = turn.wrapping_add(1);
        let start = if ready.is_empty() {
            0
        } else {
            turn % ready.len()
        };
        let chosen = ready.len().min(MAX_BATCH);
        if chosen < MIN_LANES {
            // Too few for the lanes: each on the single-stream path.
            for id in &ready {
                if let Some(s) = streams.get_mut(id)
                    && let Some((piece, _)) = s.pending.pop_front()
                {
                    s.state.update(&piece);
                }
            }
        } else {
            let lane = ready
                .iter()
                .cycle()
                .skip(start)
                .take(chosen)
                .filter_map(|id| streams.get(id)?.pending.front().map(|(p, _)| p.len()))
                .min()
                .unwrap_or(0)
                .clamp(MIN_LANE_BYTES, LANE_BYTES);
            for id in ready.iter().cycle().skip(start).take(chosen) {
                if let Some((piece, _)) = streams.get(id).and_then(|s| s.pending.front()) {
                    batch_ids.push(*id);
                    batch_states.push(streams[id].state);
                    batch_pieces.push(piece.slice(..piece.len().min(lane)));
                }
            }
            if !batch_ids.is_empty() {
                let inputs: Vec<&[u8]> = batch_pieces.iter().map(|p| &p[..]).collect();
                engine.update_many(&mut batch_states, &inputs);
                for ((id, state), taken) in batch_ids.iter().zip(&batch_states).zip(&batch_pieces) {
                    if let Some(s) = streams.get_mut(id) {
                        s.state = *state;
                        if let Some((piece, _)) = s.pending.front_mut() {
                            let _ = piece.split_to(taken.len());
                            if piece.is_empty() {
                                // Hashed whole: its permit goes back to the
                                // stream's sender.
                                s.pending.pop_front();
                            }
                        }
                    }
                }
            }
        }
        streams.retain(|_, s| {
            if !s.pending.is_empty() {
                return true;
            }
            match s.finish.take() {
                Some(done) => {
                    let _ = done.send(s.state.finalize());
                    false
                }
                None => true,
            }
        });
    }
}

fn apply(streams: &mut HashMap<u64, StreamState>, message: Message) {
    match message {
        Message::Open(id, state) => {
            streams.insert(
                id,
                StreamState {
                    state,
                    ..StreamState::default()
                },
            );
        }
        Message::Piece(id, piece, permit) => {
            if let Some(s) = streams.get_mut(&id) {
                s.pending.push_back((piece, permit));
            }
        }
        Message::Finish(id, done) => {
            if let Some(s) = streams.get_mut(&id) {
                s.finish = Some(done);
            }
        }
        Message::Abandon(id) => {
            streams.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use md5::Digest as _;

    use super::*;

    /// A deterministic piece size sequence (0 included: empty pieces).
    fn sizes(seed: u64, count: usize) -> Vec<usize> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 70_001) as usize
            })
            .collect()
    }

    fn body(seed: u64, sizes: &[usize]) -> Vec<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                Bytes::from(
                    (0..n)
                        .map(|j| (j as u64 ^ seed ^ i as u64).wrapping_mul(31) as u8)
                        .collect::<Vec<u8>>(),
                )
            })
            .collect()
    }

    fn reference(pieces: &[Bytes]) -> Md5Digest {
        let mut h = md5::Md5::new();
        for p in pieces {
            h.update(p);
        }
        h.finalize().into()
    }

    /// Many concurrent streams of odd piece sizes, some with an inline
    /// start, give md-5's digests; abandoned streams disturb none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_streams_hash_as_md5_does() {
        let hashers = Arc::new(Hashers::start(2).unwrap());
        let mut tasks = Vec::new();
        for seed in 0..40u64 {
            let hashers = hashers.clone();
            tasks.push(tokio::spawn(async move {
                let pieces = body(seed, &sizes(seed, 1 + (seed as usize % 23)));
                // Half the streams start from a state hashed inline.
                let (inline, rest) = pieces.split_at(pieces.len() / 2 * (seed as usize % 2));
                let mut start = Md5State::new();
                for p in inline {
                    start.update(p);
                }
                let mut stream = hashers.open(start).unwrap();
                for p in rest {
                    stream.update(p.clone()).await.unwrap();
                }
                if seed % 7 == 3 {
                    drop(stream); // abandoned mid-way
                    return None;
                }
                Some((stream.finish().await.unwrap(), reference(&pieces)))
            }));
        }
        let mut checked = 0;
        for t in tasks {
            if let Some((got, want)) = t.await.unwrap() {
                assert_eq!(got, want);
                checked += 1;
            }
        }
        assert!(checked >= 30, "{checked} streams checked");
    }

    #[tokio::test]
    async fn an_empty_stream_is_the_md5_of_nothing() {
        let hashers = Hashers::start(1).unwrap();
        let stream = hashers.open(Md5State::new()).unwrap();
        assert_eq!(stream.finish().await.unwrap(), reference(&[]));
    }

    /// One stream alone takes the single-stream path.
    #[tokio::test]
    async fn a_lone_stream_hashes_as_md5_does() {
        let hashers = Hashers::start(1).unwrap();
        let pieces = body(7, &sizes(7, 30));
        let mut stream = hashers.open(Md5State::new()).unwrap();
        for p in &pieces {
            stream.update(p.clone()).await.unwrap();
        }
        assert_eq!(stream.finish().await.unwrap(), reference(&pieces));
    }
}
