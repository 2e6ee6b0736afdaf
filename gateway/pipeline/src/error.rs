//! Pipeline errors: what the S3 layer maps to error codes.

use shardgate_backend::BackendError;
use shardgate_core::CoreError;

/// A failed write or read.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The client's body stream failed (disconnect, bad chunk signature...).
    #[error("reading the request body: {0}")]
    Input(#[source] std::io::Error),

    /// The placement does not fit the code (wrong length, unknown backend).
    #[error("invalid placement: {0}")]
    Placement(String),

    /// Fewer fragments than the write quorum became durable; nothing of the
    /// version is left behind.
    #[error("write quorum not reached: {durable} of {quorum} fragments durable ({failures})")]
    QuorumNotReached {
        durable: usize,
        quorum: usize,
        failures: String,
    },

    /// A stripe cannot be rebuilt: too many fragments missing, corrupt or
    /// slow. No wrong byte is ever returned instead.
    #[error(
        "not enough fragments: segment {segment} stripe {stripe} has {available} verified shards, {needed} needed"
    )]
    NotEnoughFragments {
        segment: usize,
        stripe: u64,
        available: usize,
        needed: usize,
    },

    /// The codec refused (bad range, corrupt header, wrong key...).
    #[error(transparent)]
    Core(#[from] CoreError),

    /// A backend failed where no other fragment could take over.
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// A pipeline task died; a bug, reported rather than hidden.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<tokio::task::JoinError> for PipelineError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("task failed: {e}"))
    }
}

/// Result alias of the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
