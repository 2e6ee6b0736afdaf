//! PUT bodies sent with `Transfer-Encoding: chunked` and no length.
//!
//! Some clients stream an upload of unknown size this way (an SDK given a
//! pipe, `curl -T -`, the Ceph s3-tests). AWS refuses them; Ceph and
//! Garage take them, and so does shardgate. s3s (0.14) must know a signed
//! body's length before it verifies the body's SHA-256, so such a body is
//! first copied to an unnamed file (bounded memory: one chunk at a time),
//! then handed on with its `Content-Length`. At most [`SPOOLS`] bodies are
//! on disk at once, each at most [`MAX_PUT_BYTES`](crate::convert::MAX_PUT_BYTES);
//! only signed requests are spooled (the signature itself is checked
//! after, by s3s, as for any body), and an unsigned one gets s3s's
//! MissingContentLength. The file has no name (`O_TMPFILE`): nothing is
//! left behind when the request ends or the process dies.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

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
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    places: Arc<Semaphore>,
    max_bytes: u64,
}

/// Why a body could not be spooled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the body: {0}")]
    Body(String),
    #[error("writing the spool file: {0}")]
    Io(#[from] std::io::Error),
}

impl Spool {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Spool {
            dir,
            places: Arc::new(Semaphore::new(SPOOLS)),
            max_bytes: MAX_PUT_BYTES,
        }
    }

    #[cfg(test)]
    fn with_limit(dir: PathBuf, max_bytes: u64) -> Self {
        Spool {
            max_bytes,
            ..Spool::new(dir)
        }
    }

    /// Whether `req` is a signed PUT whose body has no declared length
    /// (chunked transfer, not aws-chunked content).
    pub(crate) fn wanted<B>(req: &Request<B>) -> bool {
        let h = req.headers();
        let chunked = h.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
        let aws_chunked = h
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        let query = req.uri().query().unwrap_or_default();
        let signed = h.contains_key(header::AUTHORIZATION)
            || query.contains("X-Amz-Signature=")
            || query.contains("Signature=");
        req.method() == http::Method::PUT
            && chunked
            && !aws_chunked
            && signed
            && !h.contains_key(header::CONTENT_LENGTH)
    }

    /// `req` with its body copied to a spool file and its length declared.
    pub(crate) async fn spool(
        &self,
        req: Request<s3s::Body>,
    ) -> Result<Request<s3s::Body>, SpoolError> {
        let place = self
            .places
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SpoolError::Body("the server is shutting down".into()))?;
        tokio::fs::create_dir_all(&self.dir).await?;
        // One open(2) of an unnamed file: short enough for the runtime.
        let mut file = tokio::fs::File::from_std(tempfile::tempfile_in(&self.dir)?);
        let (mut parts, mut body) = req.into_parts();
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| SpoolError::Body(e.to_string()))?;
            len += chunk.len() as u64;
            if len > self.max_bytes {
                return Err(SpoolError::TooLarge(self.max_bytes));
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
        ("authorization", "AWS4-HMAC-SHA256 Credential=..."),
    ];

    #[test]
    fn only_signed_chunked_puts_without_a_length_are_spooled() {
        assert!(Spool::wanted(&put(SIGNED_CHUNKED, vec![])));
        let mut with_length = SIGNED_CHUNKED.to_vec();
        with_length.push(("content-length", "3"));
        assert!(!Spool::wanted(&put(&with_length, vec![])));
        let mut aws_chunked = SIGNED_CHUNKED.to_vec();
        aws_chunked.push(("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"));
        assert!(!Spool::wanted(&put(&aws_chunked, vec![])));
        assert!(!Spool::wanted(&put(
            &[("transfer-encoding", "chunked")],
            vec![]
        )));
    }

    #[tokio::test]
    async fn a_spooled_body_keeps_its_bytes_and_declares_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
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
        let spool = Spool::with_limit(dir.path().to_path_buf(), 4);
        let parts = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")];
        let err = spool.spool(put(SIGNED_CHUNKED, parts)).await.unwrap_err();
        assert!(matches!(err, SpoolError::TooLarge(4)), "{err}");
    }
}
