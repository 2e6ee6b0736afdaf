//! Background work: the garbage collectors (`collector.rs`), the sweep of
//! intents nobody will close, the expiry of abandoned uploads, and backend
//! health for placement and `/ready`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::Instrument;

use shardgate_node::{blocking, now_ms};

use crate::Jobs;

/// How often intents are swept.
const INTENT_SWEEP_PERIOD: Duration = Duration::from_secs(30);
/// An intent of this process that no running request holds is swept once
/// it is this old (the margin covers a request between its intent's commit
/// and marking it live).
pub const INTENT_SWEEP_AGE: Duration = Duration::from_secs(60);
/// The lease of upload expiry.
const UPLOADS_LEASE: &str = "uploads";
/// How often backends are asked for their health.
pub const HEALTH_PERIOD: Duration = Duration::from_secs(2);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

impl Jobs {
    /// Starts the background tasks; they run until the runtime stops.
    pub fn spawn_background(self: &Arc<Self>) {
        self.spawn_lease_renewals();
        self.spawn_change_poll();
        self.spawn_collectors();
        self.spawn_scrub();
        self.spawn_repair();
        self.spawn_backend_watch();
        let saved = self
            .saved_drains
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        self.spawn_saved_drains(saved);
        self.resume_rebalance();
        let gw = self.clone();
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(INTENT_SWEEP_PERIOD).await;
                    if let Err(e) = gw.sweep_intents_once(INTENT_SWEEP_AGE).await {
                        tracing::warn!(error = %e, "intent sweep failed");
                    }
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "intent_sweep")),
        );
        let gw = self.clone();
        tokio::spawn(
            async move { gw.expire_uploads_forever().await }
                .instrument(tracing::info_span!(target: "shardgate::task", "upload_expiry")),
        );
        let gw = self.clone();
        tokio::spawn(
            async move {
                loop {
                    gw.refresh_health().await;
                    tokio::time::sleep(HEALTH_PERIOD).await;
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "health")),
        );
    }

    /// Asks every backend for its health, bounded by a timeout. Each
    /// backend's monitor records the answer (or the failure) and the round
    /// trip on the health board; a probe that times out is a failure too.
    pub async fn refresh_health(&self) {
        // The recycled buffers a burst left idle go back on the same beat.
        shardgate_backend::buffers::trim_idle();
        let board = self.gw.backend_set().board();
        let checks = self.gw.backends().map(|b| async move {
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

    /// Turns into garbage the intents no running request will close (their
    /// request's guard failed to, or a previous process left them) once
    /// they are `older_than`. Returns how many.
    pub async fn sweep_intents_once(
        &self,
        older_than: Duration,
    ) -> Result<usize, shardgate_node::GatewayError> {
        let meta = self.gw.meta().clone();
        let intents = self.gw.intents().clone();
        let age = older_than.as_millis() as u64;
        let swept =
            blocking(move || meta.sweep_intents(now_ms(), age, |id| intents.is_live(id))).await?;
        if !swept.is_empty() {
            tracing::info!(
                intents = swept.len(),
                "unfinished writes swept into garbage"
            );
            self.gw.wake_collectors();
        }
        Ok(swept.len())
    }

    async fn expire_uploads_forever(self: Arc<Self>) {
        let period = (self.settings.upload_expiry / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            if let Err(e) = self.expire_uploads_once().await {
                tracing::warn!(error = %e, "upload expiry round failed");
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Aborts every upload older than the expiry; returns how many. With
    /// several gateways, the one holding the `uploads` lease does it.
    pub async fn expire_uploads_once(&self) -> Result<usize, shardgate_node::GatewayError> {
        if !self.hold(UPLOADS_LEASE).await {
            return Ok(0);
        }
        let meta = self.gw.meta().clone();
        let cutoff = now_ms().saturating_sub(self.settings.upload_expiry.as_millis() as u64);
        let expired = blocking(move || meta.uploads_older_than(cutoff)).await?;
        let mut n = 0;
        for (bucket, key, upload) in expired {
            let meta = self.gw.meta().clone();
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
            self.gw.wake_collectors();
        }
        // Completions older than a day no longer answer a retry.
        let meta = self.gw.meta().clone();
        let before = now_ms().saturating_sub(shardgate_meta::COMPLETED_KEPT_MS);
        let forgotten = blocking(move || meta.forget_completed_uploads(before)).await?;
        if forgotten > 0 {
            tracing::debug!(forgotten, "completed uploads forgotten");
        }
        Ok(n)
    }

    /// Garbage items and open intents, for tests and the ready probe.
    pub async fn pending_counts(&self) -> Result<(u64, u64), shardgate_node::GatewayError> {
        let meta = self.gw.meta().clone();
        blocking(move || meta.pending_counts()).await
    }
}
