//! The garbage collector: one worker per configured backend, each deleting
//! its own backend's due items (`shardgate_meta::GarbageItem`).
//!
//! Why one worker per backend: a backend that fails or hangs must not
//! hold up the others. A worker skips its backend while the health board
//! says it is down. When every delete of a round fails, the backend is
//! failing rather than the items: the round stops after
//! [`DELETES_IN_FLIGHT`] failures, its items are looked at again after
//! the worker's backoff (2 s doubling to [`BACKEND_BACKOFF_MAX`]) and no
//! attempt is counted against them, so a backend that returns is cleaned
//! within one backoff. A delete that fails (or takes longer than
//! [`DELETE_TIMEOUT`]) while others succeed is the item's own problem: it
//! is pushed back with a backoff of its own, doubling to 10 minutes.
//! Items of a backend no longer configured have no worker: they
//! stay, shown in `/metrics` and logged at start, until the backend returns
//! or an operator forgets them (`shardgate garbage forget`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use shardgate_backend::BackendError;
use shardgate_core::BackendId;
use shardgate_meta::{GarbageItem, Outcome};
use tracing::Instrument;

use shardgate_node::{blocking, now_ms};

use crate::Jobs;

/// Items read and deleted per round of one worker.
pub const BATCH: usize = 256;
/// Deletes in flight per backend.
const DELETES_IN_FLIGHT: usize = 16;
/// A worker looks this often even when not woken.
const PERIOD: Duration = Duration::from_secs(2);
/// A delete slower than this counts as failed.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(30);
/// The first retry of a failed delete; doubled per failure up to
/// [`BACKOFF_MAX`].
const BACKOFF_FIRST_MS: u64 = 2_000;
const BACKOFF_MAX_MS: u64 = 10 * 60 * 1000;
/// An item whose version is being read is looked at again after this.
const READ_POSTPONE_MS: u64 = 2_000;
/// A worker whose backend fails every delete waits from 2 s doubling to
/// this between rounds.
pub const BACKEND_BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKEND_BACKOFF_FIRST: Duration = Duration::from_secs(2);

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Items read (deleted, failed, postponed or not tried).
    pub handled: usize,
    pub deleted: usize,
    pub failed: usize,
}

impl Round {
    /// Every delete tried failed: the backend is failing.
    fn backend_failing(&self) -> bool {
        self.deleted == 0 && self.failed > 0
    }
}

fn backoff_ms(attempts: u32) -> u64 {
    BACKOFF_FIRST_MS
        .saturating_mul(1u64 << attempts.min(20))
        .min(BACKOFF_MAX_MS)
}

impl Jobs {
    /// Starts one collector per configured backend, and says which
    /// backends hold garbage but are not configured.
    pub(crate) fn spawn_collectors(self: &Arc<Self>) {
        for backend in self.gw.backends() {
            let gw = self.clone();
            let id = backend.id().clone();
            let span = tracing::info_span!(target: "shardgate::task", "collector", backend = %id);
            tokio::spawn(async move { gw.collect_forever(id).await }.instrument(span));
        }
        let gw = self.clone();
        tokio::spawn(
            async move {
                let meta = gw.gw.meta().clone();
                let Ok(backlog) = blocking(move || meta.garbage_backlog()).await else {
                    return;
                };
                for b in backlog
                    .iter()
                    .filter(|b| gw.gw.backend(&b.backend).is_none())
                {
                    tracing::warn!(
                        backend = %b.backend,
                        items = b.items,
                        bytes = b.bytes,
                        "garbage waits on a backend that is not configured: it is collected when the backend returns, or dropped by `shardgate garbage forget {}`",
                        b.backend
                    );
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "garbage_backlog")),
        );
    }

    async fn collect_forever(self: Arc<Self>, backend: BackendId) {
        let mut backoff = BACKEND_BACKOFF_FIRST;
        loop {
            let wake = self.gw.intents().garbage_added.notified();
            let mut round = Round::default();
            // With several gateways, one collects each backend's garbage;
            // one that sees the backend down gives it up to the others.
            let lease = format!("gc/{backend}");
            if !self.backend_is_up(&backend) {
                self.let_go(&lease).await;
            } else if self.hold(&lease).await {
                match self.collect_backend_once(&backend, backoff).await {
                    Ok(r) => round = r,
                    Err(e) => {
                        tracing::warn!(%backend, error = %e, "garbage collection round failed")
                    }
                }
            }
            if round.backend_failing() {
                tracing::debug!(%backend, ?backoff, "every garbage delete failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKEND_BACKOFF_MAX);
                continue;
            }
            backoff = BACKEND_BACKOFF_FIRST;
            if round.handled < BATCH {
                let _ = tokio::time::timeout(PERIOD, wake).await;
            }
        }
    }

    pub(crate) fn backend_is_up(&self, backend: &BackendId) -> bool {
        self.gw
            .backend_set()
            .board()
            .state(backend)
            .is_none_or(|s| s.up)
    }

    /// One round on one backend: deletes up to a batch of its due items.
    /// If every delete fails, the items wait `backoff` without an attempt
    /// counted (see the module docs).
    pub async fn collect_backend_once(
        &self,
        backend: &BackendId,
        backoff: Duration,
    ) -> Result<Round, shardgate_node::GatewayError> {
        let Some(b) = self.gw.backend(backend).cloned() else {
            return Ok(Round::default());
        };
        let meta = self.gw.meta().clone();
        let id = backend.clone();
        let items = blocking(move || meta.garbage_due(&id, now_ms(), BATCH)).await?;
        if items.is_empty() {
            return Ok(Round::default());
        }
        let deleted = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let later = || Outcome::Postponed {
            retry_unix_ms: now_ms() + backoff.as_millis() as u64,
        };
        let mut outcomes: Vec<(GarbageItem, Outcome)> = futures::stream::iter(items)
            .map(|item| {
                let b = b.clone();
                let (deleted, failed) = (&deleted, &failed);
                async move {
                    if item.version.as_ref().is_some_and(|v| self.gw.is_being_read(v)) {
                        let retry_unix_ms = now_ms() + READ_POSTPONE_MS;
                        return (item, Outcome::Postponed { retry_unix_ms });
                    }
                    // A backend that failed a whole wave of deletes and
                    // answered none is not asked the rest of the batch.
                    if deleted.load(Ordering::Relaxed) == 0
                        && failed.load(Ordering::Relaxed) >= DELETES_IN_FLIGHT
                    {
                        return (item, later());
                    }
                    let outcome = match tokio::time::timeout(DELETE_TIMEOUT, b.delete(&item.blob)).await {
                        Ok(Ok(()) | Err(BackendError::NotFound { .. })) => {
                            deleted.fetch_add(1, Ordering::Relaxed);
                            Outcome::Deleted
                        }
                        outcome => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let error = match outcome {
                                Ok(Err(e)) => e.to_string(),
                                _ => format!("no answer within {DELETE_TIMEOUT:?}"),
                            };
                            let wait = backoff_ms(item.attempts);
                            tracing::debug!(backend = %item.backend, blob = %item.blob, %error, retry_in_ms = wait, "garbage delete failed");
                            Outcome::Failed { retry_unix_ms: now_ms() + wait }
                        }
                    };
                    (item, outcome)
                }
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let round = Round {
            handled: outcomes.len(),
            deleted: deleted.into_inner(),
            failed: failed.into_inner(),
        };
        if round.backend_failing() {
            for (_, outcome) in &mut outcomes {
                if matches!(outcome, Outcome::Failed { .. }) {
                    *outcome = later();
                }
            }
        }
        let meta = self.gw.meta().clone();
        blocking(move || meta.settle_garbage(&outcomes)).await?;
        tracing::debug!(%backend, ?round, "garbage round");
        Ok(round)
    }

    /// One round on every configured backend that is up (tests, and the
    /// benchmark). Returns the items handled.
    pub async fn collect_garbage_once(&self) -> Result<usize, shardgate_node::GatewayError> {
        let ids: Vec<BackendId> = self.gw.backends().map(|b| b.id().clone()).collect();
        let rounds = ids
            .iter()
            .filter(|id| self.backend_is_up(id))
            .map(|id| self.collect_backend_once(id, BACKEND_BACKOFF_FIRST));
        let mut n = 0;
        for r in futures::future::join_all(rounds).await {
            n += r?.handled;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff_ms(0), 2_000);
        assert_eq!(backoff_ms(1), 4_000);
        assert_eq!(backoff_ms(8), 512_000);
        assert_eq!(backoff_ms(9), BACKOFF_MAX_MS);
        assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
    }
}
