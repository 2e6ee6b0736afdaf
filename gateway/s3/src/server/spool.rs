//! PUT bodies sent with `Transfer-Encoding: chunked` and no length.
//!
//! Some clients stream an upload of unknown size this way (an SDK given a
//! pipe, `curl -T -`, the Ceph s3-tests). AWS refuses them; Ceph and
//! Garage take them, and so does shardgate. s3s (0.14) must know a signed
//! body's length before it verifies the body's SHA-256, so such a body is
//! first copied to an unnamed file (bounded memory: one chunk at a time),
//! then handed on with its `Content-Length`, and s3s checks the signature
//! and the body's hash as for any other.
//!
//! The copy happens before the signature is checked, so it is bounded:
//! only a request naming a known access key is spooled (a made-up key
//! gets s3s's MissingContentLength, unread); at most [`SPOOLS`] bodies at
//! once, each at most [`MAX_PUT_BYTES`](crate::convert::MAX_PUT_BYTES);
//! a body waits for a place no longer than the queue timeout (then
//! SlowDown); and a body that would leave less than [`RESERVE_BYTES`]
//! free on the disk is refused (503). The file has no name (`O_TMPFILE`):
//! nothing is left behind when the request ends or the process dies.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderValue, Request, header};
use s3s::stream::{ByteStream, RemainingLength};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::io::ReaderStream;

use crate::convert::MAX_PUT_BYTES;

/// Bodies spooled at once; more wait for a place.
pub(crate) const SPOOLS: usize = 2;

/// Where unsized bodies wait, and how many may.
pub(crate) struct Spool {
    dir: PathBuf,
    places: Arc<Semaphore>,
    max_bytes: u64,
    /// How long a body waits for a place (then SlowDown).
    wait: Duration,
    /// Whether an access key names the root or a user: a body is spooled
    /// only for one, before s3s checks its signature.
    known_key: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// The disk left free under the spool: a body that would take more is
/// refused (503) rather than fill the disk the metadata lives on.
const RESERVE_BYTES: u64 = 1 << 30;

/// How often (in bytes written) the free space is looked at again.
const ROOM_CHECK_BYTES: u64 = 16 << 20;

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the body: {0}")]
    Body(s3s::StdError),
    #[error("every place for a body of unknown length stayed taken")]
    Busy,
    #[error(
        "the disk has no room for a body of unknown length now; send it with its Content-Length"
    )]
    NoRoom,
    #[error("writing the spool file: {0}")]
    Io(#[from] std::io::Error),
}

impl Spool {
    pub(crate) fn new(
        dir: PathBuf,
        wait: Duration,
        known_key: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        Spool {
            dir,
            places: Arc::new(Semaphore::new(SPOOLS)),
            max_bytes: MAX_PUT_BYTES,
            wait,
            known_key: Box::new(known_key),
        }
    }

    /// Whether `req` is a PUT whose body has no declared length (chunked
    /// transfer, not aws-chunked content), signed with a known access key.
    pub(crate) fn wanted<B>(&self, req: &Request<B>) -> bool {
        let h = req.headers();
        let chunked = h.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
        let aws_chunked = h
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        req.method() == http::Method::PUT
            && chunked
            && !aws_chunked
            && !h.contains_key(header::CONTENT_LENGTH)
            && access_key_of(req).is_some_and(|k| (self.known_key)(&k))
    }

    /// `req` with its body copied to a spool file and its length declared.
    pub(crate) async fn spool(
        &self,
        req: Request<s3s::Body>,
    ) -> Result<Request<s3s::Body>, SpoolError> {
        let place = tokio::time::timeout(self.wait, self.places.clone().acquire_owned())
            .await
            .map_err(|_| SpoolError::Busy)?
            .map_err(|_| SpoolError::Busy)?;
        tokio::fs::create_dir_all(&self.dir).await?;
        // One open(2) of an unnamed file: short enough for the runtime.
        let mut file = tokio::fs::File::from_std(tempfile::tempfile_in(&self.dir)?);
        let (mut parts, mut body) = req.into_parts();
        let mut len = 0u64;
        let mut room = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(SpoolError::Body)?;
            let written = len;
            len += chunk.len() as u64;
            if len > self.max_bytes {
                return Err(SpoolError::TooLarge(self.max_bytes));
            }
            // `room`: how far the body may go on the last look at the disk.
            if len > room {
                room = written + self.room()?.min(ROOM_CHECK_BYTES);
                if len > room {
                    return Err(SpoolError::NoRoom);
                }
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.rewind().await?;
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        let spooled = Spooled {
            inner: ReaderStream::with_capacity(file, 64 << 10),
            remaining: len,
            _place: place,
        };
        let stream: s3s::stream::DynByteStream = Box::pin(spooled);
        Ok(Request::from_parts(parts, s3s::Body::from(stream)))
    }

    /// What may still be written under the spool: the free space less
    /// [`RESERVE_BYTES`].
    fn room(&self) -> Result<u64, SpoolError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(|e| SpoolError::Io(e.into()))?;
        Ok(st
            .f_bavail
            .saturating_mul(st.f_frsize)
            .saturating_sub(RESERVE_BYTES))
    }
}

/// The access key a request is signed with (SigV4 or V2, header or query).
fn access_key_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some((_, credential)) = auth.split_once("Credential=") {
            return credential.split('/').next().map(str::to_string);
        }
        return auth
            .strip_prefix("AWS ")
            .and_then(|rest| rest.split(':').next())
            .map(str::to_string);
    }
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| match k.as_ref() {
        "X-Amz-Credential" => v.split('/').next().map(str::to_string),
        "AWSAccessKeyId" => Some(v.into_owned()),
        _ => None,
    })
}

/// A spooled body as a stream of known length; its place is given back
/// when it is dropped (its file with it).
struct Spooled {
    inner: ReaderStream<tokio::fs::File>,
    remaining: u64,
    _place: OwnedSemaphorePermit,
}

impl Stream for Spooled {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ByteStream for Spooled {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(headers: &[(&str, &str)], body: Vec<Bytes>) -> Request<s3s::Body> {
        let mut b = Request::builder().method("PUT").uri("/b/k");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let stream: s3s::stream::DynByteStream = Box::pin(Chunks(body.into_iter()));
        b.body(s3s::Body::from(stream))
            .unwrap_or_else(|_| unreachable!("a valid request"))
    }

    /// A body of unknown length, as a chunked request's.
    struct Chunks(std::vec::IntoIter<Bytes>);

    impl Stream for Chunks {
        type Item = Result<Bytes, s3s::StdError>;

        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().map(Ok))
        }
    }

    impl ByteStream for Chunks {}

    const SIGNED_CHUNKED: &[(&str, &str)] = &[
        ("transfer-encoding", "chunked"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20261206/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        ),
    ];

    fn spool_in(dir: PathBuf) -> Spool {
        Spool::new(dir, Duration::from_secs(1), |k| k == "AKID")
    }

    #[test]
    fn only_chunked_puts_without_a_length_signed_by_a_known_key_are_spooled() {
        let spool = spool_in(PathBuf::from("/nonexistent"));
        assert!(spool.wanted(&put(SIGNED_CHUNKED, vec![])));
        let mut with_length = SIGNED_CHUNKED.to_vec();
        with_length.push(("content-length", "3"));
        assert!(!spool.wanted(&put(&with_length, vec![])));
        let mut aws_chunked = SIGNED_CHUNKED.to_vec();
        aws_chunked.push(("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"));
        assert!(!spool.wanted(&put(&aws_chunked, vec![])));
        assert!(!spool.wanted(&put(&[("transfer-encoding", "chunked")], vec![])));
        // A made-up key is not spooled (s3s refuses it unread).
        let forged = [
            ("transfer-encoding", "chunked"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=NOPE/20261206/us-east-1/s3/aws4_request",
            ),
        ];
        assert!(!spool.wanted(&put(&forged, vec![])));
        let v2 = [
            ("transfer-encoding", "chunked"),
            ("authorization", "AWS AKID:sig"),
        ];
        assert!(spool.wanted(&put(&v2, vec![])));
    }

    #[tokio::test]
    async fn a_body_waits_for_a_place_no_longer_than_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_in(dir.path().to_path_buf());
        let held: Vec<_> = (0..SPOOLS)
            .map(|_| spool.places.clone().try_acquire_owned().unwrap())
            .collect();
        let err = spool.spool(put(SIGNED_CHUNKED, vec![])).await.unwrap_err();
        assert!(matches!(err, SpoolError::Busy), "{err}");
        drop(held);
    }

    #[tokio::test]
    async fn a_spooled_body_keeps_its_bytes_and_declares_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_in(dir.path().join("spool"));
        let parts = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let req = spool.spool(put(SIGNED_CHUNKED, parts)).await.unwrap();
        assert_eq!(req.headers()[header::CONTENT_LENGTH], "11");
        let mut body = req.into_body();
        assert_eq!(body.remaining_length().exact(), Some(11));
        let mut got = Vec::new();
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(got, b"hello world");
        // The file has no name: nothing is left in the spool directory.
        assert_eq!(
            std::fs::read_dir(dir.path().join("spool")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool_in(dir.path().to_path_buf());
        spool.max_bytes = 4;
        let parts = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")];
        let err = spool.spool(put(SIGNED_CHUNKED, parts)).await.unwrap_err();
        assert!(matches!(err, SpoolError::TooLarge(4)), "{err}");
    }
}
