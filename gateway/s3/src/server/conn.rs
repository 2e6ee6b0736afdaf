//! One client connection: how long it may take, and what it owes the next
//! request after an early answer.
//!
//! ## Time
//!
//! A connection is always in one phase ([`Activity`]): waiting for a request head
//! (from its opening, or from the first byte after an idle spell), busy
//! with requests, or idle between them. Its [`watchdog`] closes it when a
//! head takes longer than the header timeout or an idle spell longer than
//! the idle timeout, so a client that opens connections and sends half a
//! head holds each for seconds, not forever. While a request runs, its
//! body has its own clock ([`Tracked`]): a body that sends nothing for the
//! body timeout, or averages under the minimum rate after it, ends with
//! S3's `RequestTimeout` ([`BodyStalled`]). Only the time the gateway
//! spends waiting for the client counts: while a slow backend holds the
//! write back, the body is not read and its clock stops.
//!
//! Answers have a clock too, the send timeout (nginx's `send_timeout`):
//! when the client reads nothing for that long, the connection closes.
//! Two things wait on the client: a write to the socket that cannot
//! proceed (its buffers are full), and an answer's body that handed hyper
//! a frame hyper has not yet been able to send (HTTP/2 flow control, which
//! never blocks the socket). Time spent waiting for a backend does not
//! count: a body whose next frame is not ready is the gateway's wait. A
//! write that succeeds while no request runs restarts the idle clock, so
//! the tail of an answer still in the buffers is not cut by it.
//!
//! ## Early answers
//!
//! The gateway answers many requests before reading their bodies: a bad
//! signature, a key too long, metadata too large, a failed precondition.
//! HTTP/1.1 then leaves the body's bytes (or, after `Expect:
//! 100-continue`, the *absence* of a body the client chose not to send)
//! on the connection, and nothing in the byte stream tells a withheld body
//! from the client's next request: botocore, having got the error instead
//! of `100 Continue`, sends the next request at once, and hyper read its
//! first bytes as the body and parsed the rest as a request (`UT
//! /bucket/key`: a spurious SignatureDoesNotMatch). hyper did close the
//! connection when the body was not buffered yet, but only after writing
//! a response that did not say so, so clients reused a dead connection.
//!
//! The rule, in one place for every answer ([`finish`]): a request whose
//! body was not read to its end gets `Connection: close`, and the
//! connection ends after the answer. Draining a bounded remainder instead
//! would keep the connection, but cannot be made safe: after `Expect:
//! 100-continue` the client may legitimately never send the body, and the
//! bytes that follow are the next request. Closing costs one TCP handshake
//! per early error, which are rare.
//!
//! Closing a socket with unread bytes in its receive buffer makes the
//! kernel answer with a reset, which on many clients' stacks discards the
//! answer not yet read. So such a connection closes like Apache's and
//! nginx's "lingering close": shut down our sending side, then read and
//! drop what the client still sends, for at most [`LINGER_TOTAL`] and
//! until [`LINGER_IDLE`] passes without a byte, before closing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// The longest a closing connection keeps reading what its client sends.
pub const LINGER_TOTAL: Duration = Duration::from_secs(5);
/// A closing connection whose client sent nothing for this long closes.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// At most this many connections linger at once; past it, one closes at
/// once (each holds a descriptor for up to [`LINGER_TOTAL`]).
const MAX_LINGERING: usize = 1024;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_LINGERING`] places, given back when dropped.
struct LingerSlot;

impl LingerSlot {
    fn take() -> Option<Self> {
        let taken = LINGERING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LINGERING).then_some(n + 1)
            })
            .is_ok();
        taken.then_some(Self)
    }
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The clocks of a connection and of its request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request head, from the connection's opening or its first byte.
    pub header: Duration,
    /// Between requests on a kept-alive connection.
    pub idle: Duration,
    /// A body that sends no byte for this long.
    pub body: Duration,
    /// Bytes per second a body must average once `body` has passed (0:
    /// no minimum).
    pub body_min_rate: u64,
    /// An answer the client reads nothing of for this long.
    pub send: Duration,
}

/// What a connection is doing, for its watchdog: requests in flight, and
/// when not, whether it waits for a head or idles, since when. Plain
/// atomics, and the watchdog is never woken by them: it looks when its own
/// sleep ends (at the latest after one header timeout), so a request costs
/// the connection a few atomic writes, not two task wake-ups.
#[derive(Debug)]
struct Activity {
    /// Requests in flight (HTTP/2 has several).
    busy: AtomicUsize,
    /// When not busy: waiting for a head ([`HEAD`] set) or idle, since
    /// this many milliseconds after `epoch`; one word, so the watchdog
    /// never reads one phase with the other's time.
    phase: AtomicU64,
    /// Since when (ms after `epoch`, plus 1; 0: not waiting) a write to the
    /// socket has been waiting for the client to read.
    write_blocked: AtomicU64,
    /// Answer bodies whose last frame waits for hyper to send it.
    frames_waiting: AtomicUsize,
    /// When (ms after `epoch`) an answer's body last made progress.
    frames_moved: AtomicU64,
    epoch: Instant,
}

/// The bit of [`Activity::phase`] that says "waiting for a head".
const HEAD: u64 = 1 << 63;

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, head: bool) {
        let flag = if head { HEAD } else { 0 };
        self.phase.store(flag | self.now_ms(), Ordering::Release);
    }

    /// (waiting for a head, since when).
    fn get(&self) -> (bool, Instant) {
        let p = self.phase.load(Ordering::Acquire);
        (p & HEAD != 0, self.epoch + Duration::from_millis(p & !HEAD))
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Since when the client has held up an answer, if it has.
    fn send_stalled_since(&self) -> Option<Instant> {
        let blocked = match self.write_blocked.load(Ordering::Acquire) {
            0 => None,
            t => Some(self.at(t - 1)),
        };
        let frames = (self.frames_waiting.load(Ordering::Acquire) > 0)
            .then(|| self.at(self.frames_moved.load(Ordering::Acquire)));
        match (blocked, frames) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Per connection: its activity, and whether it must linger when it
/// closes (an answer went out before its request's body was read).
#[derive(Debug, Clone)]
pub(crate) struct ConnState {
    linger: Arc<AtomicBool>,
    activity: Arc<Activity>,
    /// The connection's place under the cap, given back when the last
    /// clone goes (after a lingering close, if any).
    _permit: Arc<OwnedSemaphorePermit>,
}

impl ConnState {
    /// A connection just accepted: waiting for its first head.
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> Self {
        Self {
            linger: Arc::default(),
            activity: Arc::new(Activity {
                busy: AtomicUsize::new(0),
                phase: AtomicU64::new(HEAD),
                write_blocked: AtomicU64::new(0),
                frames_waiting: AtomicUsize::new(0),
                frames_moved: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            _permit: Arc::new(permit),
        }
    }

    /// A request was dispatched.
    pub(crate) fn request_started(&self) {
        self.activity.busy.fetch_add(1, Ordering::AcqRel);
    }

    /// A request's answer was sent (or dropped): the last one starts an
    /// idle spell.
    pub(crate) fn request_ended(&self) {
        let a = &self.activity;
        if a.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.set(false);
        }
    }

    /// An answer's body handed hyper a frame (`true`), or was asked for
    /// the next one (`false`): the client has to read for the first to
    /// happen again.
    pub(crate) fn frame_handed(&self, waiting: bool) {
        let a = &self.activity;
        a.frames_moved.store(a.now_ms(), Ordering::Release);
        if waiting {
            a.frames_waiting.fetch_add(1, Ordering::AcqRel);
        } else {
            a.frames_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A write to the socket could not proceed (`true`), or did.
    fn write_blocked(&self, blocked: bool) {
        let a = &self.activity;
        if blocked {
            if a.write_blocked.load(Ordering::Relaxed) == 0 {
                a.write_blocked.store(a.now_ms() + 1, Ordering::Release);
            }
            return;
        }
        if a.write_blocked.load(Ordering::Relaxed) != 0 {
            a.write_blocked.store(0, Ordering::Release);
        }
        // The tail of an answer going out after its request ended: the
        // connection is not idle yet.
        if a.busy.load(Ordering::Acquire) == 0 && a.phase.load(Ordering::Acquire) & HEAD == 0 {
            a.set(false);
        }
    }

    /// Bytes came in: after an idle spell, they start the next head.
    fn bytes_read(&self) {
        let a = &self.activity;
        if a.busy.load(Ordering::Acquire) == 0 && a.phase.load(Ordering::Acquire) & HEAD == 0 {
            a.set(true);
        }
    }
}

/// Why a watchdog closed its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    Header,
    Idle,
    Send,
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expired::Header => "no complete request head within the header timeout",
            Expired::Idle => "idle for the idle timeout",
            Expired::Send => "the client read nothing of an answer for the send timeout",
        })
    }
}

/// Resolves when the connection has overstayed: a head slower than
/// `timeouts.header`, an idle spell longer than `timeouts.idle`. The
/// connection's task then drops the connection, which closes it. It never
/// sleeps longer than one header timeout, so a head that starts while it
/// sleeps is still caught on time.
pub(crate) async fn watchdog(state: ConnState, timeouts: Timeouts) -> Expired {
    let a = &state.activity;
    loop {
        let now = Instant::now();
        let mut wake = now + timeouts.header;
        if let Some(since) = a.send_stalled_since() {
            let deadline = since + timeouts.send;
            if deadline <= now {
                return Expired::Send;
            }
            wake = wake.min(deadline);
        }
        if a.busy.load(Ordering::Acquire) == 0 {
            let (head, since) = a.get();
            let (deadline, expired) = if head {
                (since + timeouts.header, Expired::Header)
            } else {
                (since + timeouts.idle, Expired::Idle)
            };
            if deadline <= now {
                return expired;
            }
            wake = wake.min(deadline);
        }
        tokio::time::sleep_until(wake).await;
    }
}

/// Whether a request's body has been read to its end.
#[derive(Debug, Clone)]
pub(crate) struct BodyState {
    done: Arc<AtomicBool>,
}

impl BodyState {
    fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// A request body that stalled: it sent no byte for the body timeout, or
/// averaged less than the minimum rate. Becomes S3's `RequestTimeout`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct BodyStalled {
    after: Duration,
    received: u64,
    min_rate: u64,
}

impl BodyStalled {
    fn describe(&self) -> String {
        if self.min_rate == 0 {
            return format!(
                "the request body sent no byte for {}s",
                self.after.as_secs()
            );
        }
        format!(
            "the request body sent no byte for {}s, or averaged under {} bytes/s ({} bytes received)",
            self.after.as_secs(),
            self.min_rate,
            self.received
        )
    }

    /// Finds a stall in an error's chain (a body error reaches the write
    /// path wrapped by s3s and by `io::Error`).
    pub fn in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if e.is::<BodyStalled>() || matches!(e.downcast_ref(), Some(BodyError::Stalled(_))) {
                return true;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && Self::in_chain(inner)
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// The errors of a [`Tracked`] body.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error(transparent)]
    Stalled(#[from] BodyStalled),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// A request body that records when it has been read to its end, and
/// times out when the client stalls ([`BodyStalled`]).
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Incoming,
    done: Arc<AtomicBool>,
    clock: BodyClock,
}

/// The time a body has kept the gateway waiting, counted only while the
/// gateway was waiting for it.
#[derive(Debug)]
struct BodyClock {
    timeouts: Timeouts,
    received: u64,
    /// Waiting time before the current wait.
    waited: Duration,
    /// The current wait's start, while the body is pending.
    waiting_since: Option<Instant>,
    /// Made at the first wait (a body that arrives with its head never
    /// needs one).
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyClock {
    fn new(timeouts: Timeouts) -> Self {
        Self {
            timeouts,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// The longest the current wait may last: the stall limit, or less
    /// when the average rate would fall below the minimum.
    fn allowance(&self) -> Duration {
        let stall = self.timeouts.body;
        if self.timeouts.body_min_rate == 0 {
            return stall;
        }
        let earned =
            Duration::from_secs_f64(self.received as f64 / self.timeouts.body_min_rate as f64);
        (stall + earned).saturating_sub(self.waited).min(stall)
    }

    /// The body is pending: starts or checks the current wait.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<BodyStalled> {
        let since = match self.waiting_since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                let deadline = now + self.allowance();
                if let Some(timer) = self.timer.as_mut() {
                    timer.as_mut().reset(deadline);
                }
                self.waiting_since = Some(now);
                now
            }
        };
        let deadline = since + self.allowance();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(BodyStalled {
                after: (self.waited + since.elapsed()).min(self.timeouts.body),
                received: self.received,
                min_rate: self.timeouts.body_min_rate,
            }),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Bytes arrived: the current wait ends.
    fn received(&mut self, bytes: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.received += bytes as u64;
    }
}

impl Tracked {
    /// Tracks `inner`. A request that asked `Expect: 100-continue` counts
    /// as read only once its body was polled to the end, even an empty
    /// one: answered without that (an early error), hyper 1's HTTP/1
    /// state took the next request on the connection for a broken one
    /// (400, found with boto3, which sends the header on every PUT, even
    /// of 0 bytes), so such an answer closes the connection instead.
    pub(crate) fn new(
        inner: Incoming,
        timeouts: Timeouts,
        expects_continue: bool,
    ) -> (Self, BodyState) {
        let done = Arc::new(AtomicBool::new(inner.is_end_stream() && !expects_continue));
        let state = BodyState { done: done.clone() };
        let clock = BodyClock::new(timeouts);
        (Self { inner, done, clock }, state)
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.clock.received(frame.data_ref().map_or(0, |d| d.len()));
                if this.inner.is_end_stream() {
                    this.done.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Pending => match this.clock.poll_wait(cx) {
                Poll::Ready(stalled) => Poll::Ready(Some(Err(stalled.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Applies the connection rule to an answer: if its request's body was not
/// read to the end, the answer says `Connection: close` (hyper then ends
/// the connection after it) and the connection lingers as it closes.
/// HTTP/2 streams need nothing: a dropped body resets only its stream.
pub(crate) fn finish<B>(
    response: &mut Response<B>,
    version: Version,
    body: &BodyState,
    conn: &ConnState,
) {
    if body.finished() || version >= Version::HTTP_2 {
        return;
    }
    response.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    conn.linger.store(true, Ordering::Release);
}

/// What a client connection is carried over: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A client's stream that tells its connection's clock when bytes arrive,
/// and, when dropped after an early answer, closes with a lingering close
/// instead of a reset.
#[derive(Debug)]
pub(crate) struct Stream<T: Io> {
    inner: Option<T>,
    state: ConnState,
}

impl<T: Io> Stream<T> {
    pub(crate) fn new(inner: T, state: ConnState) -> Self {
        Self {
            inner: Some(inner),
            state,
        }
    }

    fn io(&mut self) -> Pin<&mut T> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s),
            None => unreachable!("the stream is taken only on drop"),
        }
    }
}

impl<T: Io> AsyncRead for Stream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = self.io().poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_read();
        }
        polled
    }
}

impl<T: Io> AsyncWrite for Stream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = self.io().poll_write(cx, buf);
        self.state.write_blocked(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = self.io().poll_write_vectored(cx, bufs);
        self.state.write_blocked(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

impl<T: Io> Drop for Stream<T> {
    fn drop(&mut self) {
        if !self.state.linger.load(Ordering::Acquire) {
            return;
        }
        let (Some(stream), Ok(runtime), Some(slot)) = (
            self.inner.take(),
            tokio::runtime::Handle::try_current(),
            LingerSlot::take(),
        ) else {
            return;
        };
        runtime.spawn(linger(stream, slot, self.state.clone()));
    }
}

/// Sends our FIN, then reads and drops what the client still sends until
/// it closes, goes quiet for [`LINGER_IDLE`], or [`LINGER_TOTAL`] passes.
/// The connection's state goes along to keep its place under the cap.
async fn linger<T: Io>(mut stream: T, _slot: LingerSlot, _state: ConnState) {
    let _ = tokio::time::timeout(LINGER_IDLE, stream.shutdown()).await;
    let mut sink = [0u8; 8 * 1024];
    let drain = async {
        loop {
            match tokio::time::timeout(LINGER_IDLE, stream.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TOTAL, drain).await;
}
