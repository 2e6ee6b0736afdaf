//! The node's errors: what the write and read paths and the jobs over
//! them can fail with. Each front end maps them to its protocol (the S3
//! crate to S3 error codes, the admin API to HTTP statuses).

use shardgate_core::CoreError;
use shardgate_meta::{CompleteError, MetaError};
use shardgate_pipeline::PipelineError;
use shardgate_placement::PlacementError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the key does not exist")]
    NoSuchKey,
    /// The version asked for (`latest`: the key's current one) is a delete
    /// marker, whose S3 version id this is: S3 answers 404 (current) or
    /// 405 (by id) and names the marker in headers.
    #[error("the version is a delete marker")]
    DeleteMarker { version_id: String, latest: bool },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Complete(#[from] CompleteError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("configuration: {0}")]
    Config(String),
    /// A user an admin asked for that cannot be.
    #[error("{0}")]
    InvalidUser(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<shardgate_backend::BackendError> for GatewayError {
    fn from(e: shardgate_backend::BackendError) -> Self {
        Self::Pipeline(e.into())
    }
}

impl From<CoreError> for GatewayError {
    fn from(e: CoreError) -> Self {
        Self::Pipeline(e.into())
    }
}
