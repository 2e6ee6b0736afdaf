//! Response bodies: a verified read stream, shaped for s3s.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use s3s::StdError;
use s3s::stream::{ByteStream, RemainingLength};
use shardgate_pipeline::{PipelineError, ReadReport};

use shardgate_node::ReadGuard;

/// The plaintext of a GET. It keeps the version's fragments alive while it
/// streams (the guard), and when it ends logs every fragment that was
/// missing, slow or corrupt, with its identity, for repair.
pub(crate) struct ReadBody {
    first: Option<Bytes>,
    // s3s wants a `Sync` stream; the mutex is never contended (only the
    // owner polls, through `get_mut`).
    rest: Mutex<BoxStream<'static, Result<Bytes, PipelineError>>>,
    remaining: u64,
    report: ReadReport,
    target: String,
    guard: ReadGuard,
}

impl ReadBody {
    pub(crate) fn new(
        first: Option<Bytes>,
        rest: BoxStream<'static, Result<Bytes, PipelineError>>,
        len: u64,
        report: ReadReport,
        target: String,
        guard: ReadGuard,
    ) -> Self {
        Self {
            first,
            rest: Mutex::new(rest),
            remaining: len,
            report,
            target,
            guard,
        }
    }
}

impl futures::Stream for ReadBody {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(b) = this.first.take() {
            this.remaining = this.remaining.saturating_sub(b.len() as u64);
            return Poll::Ready(Some(Ok(b)));
        }
        let rest = match this.rest.get_mut() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        match rest.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(b))) => {
                this.remaining = this.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => {
                // Headers are sent: the only honest signal left is to cut
                // the connection short of Content-Length.
                tracing::error!(target: "shardgate::read", object = %this.target, error = %e, "read failed mid-stream");
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ByteStream for ReadBody {
    fn remaining_length(&self) -> RemainingLength {
        RemainingLength::new_exact(usize::try_from(self.remaining).unwrap_or(usize::MAX))
    }
}

impl Drop for ReadBody {
    fn drop(&mut self) {
        log_bad_fragments(&self.report, &self.target);
        self.guard.report_damage(&self.report.bad_fragments());
    }
}

/// Logs each fragment a read had to do without.
pub(crate) fn log_bad_fragments(report: &ReadReport, target: &str) {
    for bad in report.bad_fragments() {
        tracing::warn!(
            object = %target,
            segment = bad.segment,
            fragment = bad.fragment,
            backend = %bad.backend,
            blob = %bad.blob,
            problem = ?bad.problem,
            "fragment unusable, read served from the others"
        );
    }
}
