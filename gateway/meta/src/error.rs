//! Metadata errors: the S3 layer maps each to its S3 error code.

/// A metadata operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("the bucket does not exist")]
    NoSuchBucket,
    #[error("the bucket already exists")]
    BucketExists,
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    #[error("the object does not exist")]
    NoSuchKey,
    #[error("the version is not the object's (or does not exist)")]
    NoSuchVersion,
    #[error("the upload does not exist (completed, aborted or expired)")]
    NoSuchUpload,
    /// The write's intent was abandoned (its request was dropped, or it
    /// was swept): the write must not become visible.
    #[error("the write was abandoned before its commit")]
    IntentGone,
    #[error("a precondition does not hold: {0}")]
    PreconditionFailed(&'static str),
    /// A record could not be decoded: the store is damaged or was written by
    /// a newer version.
    #[error("corrupt metadata record ({what}): {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The store itself failed (I/O, lock held by another process...).
    #[error("metadata store: {0}")]
    Store(#[from] Box<redb::Error>),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                Self::Store(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result alias of this crate.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;
