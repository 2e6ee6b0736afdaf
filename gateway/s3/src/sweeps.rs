//! Background work: the garbage collector, the expiry of abandoned
//! uploads, and backend health for placement and `/ready`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use shardgate_backend::BackendError;

use crate::gateway::{Gateway, blocking, now_ms};

/// Garbage entries handled per round.
const GARBAGE_BATCH: usize = 256;
/// How often the collector looks even when not woken.
const GARBAGE_PERIOD: Duration = Duration::from_secs(2);
/// How often backends are asked for their health.
pub const HEALTH_PERIOD: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

impl Gateway {
    /// Starts the background tasks; they run until the runtime stops.
    pub fn spawn_background(self: &Arc<Self>) {
        let gw = self.clone();
        tokio::spawn(async move { gw.collect_garbage_forever().await });
        let gw = self.clone();
        tokio::spawn(async move { gw.expire_uploads_forever().await });
        let gw = self.clone();
        tokio::spawn(async move {
            loop {
                gw.refresh_health().await;
                tokio::time::sleep(HEALTH_PERIOD).await;
            }
        });
    }

    /// Asks every backend for its health, bounded by a timeout. Each
    /// backend's monitor records the answer (or the failure) and the round
    /// trip on the health board; a probe that times out is a failure too.
    pub async fn refresh_health(&self) {
        let board = self.backend_set().board();
        let checks = self.backends().map(|b| async move {
            if tokio::time::timeout(HEALTH_TIMEOUT, b.health())
                .await
                .is_err()
            {
                board.record_probe(
                    b.id(),
                    Err(format!("no answer within {HEALTH_TIMEOUT:?}")),
                    HEALTH_TIMEOUT,
                );
            }
        });
        join_all(checks).await;
    }

    async fn collect_garbage_forever(self: Arc<Self>) {
        loop {
            match self.collect_garbage_once().await {
                Ok(n) if n >= GARBAGE_BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "garbage collection round failed"),
            }
            let _ = tokio::time::timeout(GARBAGE_PERIOD, self.garbage_added.notified()).await;
        }
    }

    /// One round: deletes the blobs of up to a batch of garbage entries
    /// whose grace period is over and whose version nobody is reading.
    /// Returns how many entries were finished.
    pub async fn collect_garbage_once(&self) -> Result<usize, crate::GatewayError> {
        let meta = self.meta.clone();
        let batch = blocking(move || meta.garbage_batch(now_ms(), GARBAGE_BATCH)).await?;
        let mut done = Vec::new();
        for entry in batch {
            if entry
                .version
                .as_ref()
                .is_some_and(|v| self.is_being_read(v))
            {
                continue;
            }
            let deletions = entry.blobs.iter().map(|(backend, blob)| async move {
                let Some(b) = self.backend(backend) else {
                    // A backend no longer configured: nothing to delete it from.
                    tracing::warn!(%backend, %blob, "garbage on an unknown backend dropped");
                    return true;
                };
                match b.delete(blob).await {
                    Ok(()) | Err(BackendError::NotFound { .. }) => true,
                    Err(e) => {
                        tracing::debug!(%backend, %blob, error = %e, "garbage delete failed; retried later");
                        false
                    }
                }
            });
            if join_all(deletions).await.into_iter().all(|ok| ok) {
                done.push(entry.id);
            }
        }
        let n = done.len();
        if n > 0 {
            let meta = self.meta.clone();
            blocking(move || meta.garbage_done(&done)).await?;
            tracing::debug!(entries = n, "garbage collected");
        }
        Ok(n)
    }

    async fn expire_uploads_forever(self: Arc<Self>) {
        let period =
            (self.upload_expiry / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            if let Err(e) = self.expire_uploads_once().await {
                tracing::warn!(error = %e, "upload expiry round failed");
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Aborts every upload older than the expiry; returns how many.
    pub async fn expire_uploads_once(&self) -> Result<usize, crate::GatewayError> {
        let meta = self.meta.clone();
        let cutoff = now_ms().saturating_sub(self.upload_expiry.as_millis() as u64);
        let expired = blocking(move || meta.uploads_older_than(cutoff)).await?;
        let mut n = 0;
        for (bucket, key, upload) in expired {
            let meta = self.meta.clone();
            let (b, k, u) = (bucket.clone(), key.clone(), upload.clone());
            match blocking(move || meta.abort_upload(&b, &k, &u, now_ms())).await {
                Ok(()) => {
                    n += 1;
                    tracing::info!(%bucket, %key, %upload, "expired multipart upload aborted");
                }
                Err(e) => tracing::debug!(%bucket, %key, %upload, error = %e, "expiry skipped"),
            }
        }
        if n > 0 {
            self.garbage_added.notify_one();
        }
        Ok(n)
    }

    /// Garbage entries and open intents, for tests and the ready probe.
    pub async fn pending_counts(&self) -> Result<(u64, u64), crate::GatewayError> {
        let meta = self.meta.clone();
        blocking(move || meta.pending_counts()).await
    }
}
