//! What a connection owes the next request after an early answer.
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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

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

/// Per connection: whether it must linger when it closes (an answer went
/// out before its request's body was read).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnState {
    linger: Arc<AtomicBool>,
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

/// A request body that records when it has been read to its end.
#[derive(Debug)]
pub(crate) struct Tracked {
    inner: Incoming,
    done: Arc<AtomicBool>,
}

impl Tracked {
    pub(crate) fn new(inner: Incoming) -> (Self, BodyState) {
        let done = Arc::new(AtomicBool::new(inner.is_end_stream()));
        let state = BodyState { done: done.clone() };
        (Self { inner, done }, state)
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.done.store(true, Ordering::Release);
        }
        polled
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

/// A client's TCP stream that, when dropped after an early answer, closes
/// with a lingering close instead of a reset.
#[derive(Debug)]
pub(crate) struct Stream {
    inner: Option<TcpStream>,
    state: ConnState,
}

impl Stream {
    pub(crate) fn new(inner: TcpStream, state: ConnState) -> Self {
        Self {
            inner: Some(inner),
            state,
        }
    }

    fn io(&mut self) -> Pin<&mut TcpStream> {
        match self.inner.as_mut() {
            Some(s) => Pin::new(s),
            None => unreachable!("the stream is taken only on drop"),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
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

impl Drop for Stream {
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
        runtime.spawn(linger(stream, slot));
    }
}

/// Sends our FIN, then reads and drops what the client still sends until
/// it closes, goes quiet for [`LINGER_IDLE`], or [`LINGER_TOTAL`] passes.
async fn linger(mut stream: TcpStream, _slot: LingerSlot) {
    let _ = stream.shutdown().await;
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
