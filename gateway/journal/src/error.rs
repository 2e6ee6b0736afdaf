use shardgate_core::CoreError;
use shardgate_meta::MetaError;

/// Why the journal could not ship or recover.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
    #[error("journal format: {0}")]
    Core(#[from] CoreError),
    #[error("placing a journal unit: {0}")]
    Placement(String),
    #[error("a journal unit reached {written} of the {needed} blobs its write quorum needs")]
    Quorum { written: usize, needed: usize },
    #[error("recovery: {0}")]
    Recover(String),
    #[error("the blocking task failed: {0}")]
    Task(String),
}

pub type Result<T, E = JournalError> = std::result::Result<T, E>;
