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
    /// A key the store cannot hold.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A version id that is neither `null` nor one this store gives.
    #[error("invalid version id {0:?}")]
    InvalidVersionId(String),
    /// The version is under Object Lock (a retention in force, or a legal
    /// hold): it cannot be deleted, overwritten or its lock weakened.
    #[error("the version is locked: {0}")]
    Locked(&'static str),
    /// Object Lock asked of a bucket without it.
    #[error("the bucket has no Object Lock configuration")]
    NoObjectLock,
    /// The bucket's state forbids the change (S3: InvalidBucketState).
    #[error("{0}")]
    InvalidBucketState(&'static str),
    /// The version asked for is a delete marker (S3: MethodNotAllowed).
    #[error("the version is a delete marker")]
    DeleteMarker,
    /// A public policy on a bucket whose Public Access Block has
    /// BlockPublicPolicy (S3: AccessDenied).
    #[error("the bucket's Public Access Block refuses a public policy")]
    PublicPolicyBlocked,
    /// A public ACL on a bucket whose Public Access Block has
    /// BlockPublicAcls (S3: AccessDenied).
    #[error("the bucket's Public Access Block refuses a public ACL")]
    PublicAclBlocked,
    /// An ACL granting others on a bucket whose Object Ownership is
    /// BucketOwnerEnforced (S3: AccessControlListNotSupported).
    #[error("the bucket does not allow ACLs")]
    AclsDisabled,
    /// BucketOwnerEnforced asked of a bucket whose ACL grants others (S3:
    /// InvalidBucketAclWithObjectOwnership).
    #[error("Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting")]
    AclWithEnforcedOwnership,
    /// The version changed since it was read (a conditional change lost a
    /// race; S3: OperationAborted).
    #[error("the object changed while the request ran: retry it")]
    Changed,
    /// The bucket belongs to another user than the one writing.
    #[error("the bucket belongs to another user")]
    NotOwner,
    #[error("a user {0:?} already exists")]
    UserExists(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("user {user:?} still owns buckets {buckets:?}: delete them first")]
    UserOwnsBuckets { user: String, buckets: Vec<String> },
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
    /// A metadata database (an engine reached over the network) failed.
    /// `transient`: it could not be reached, or its transaction kept
    /// conflicting with others; the same call may succeed later.
    #[error("metadata database: {message}")]
    Database { message: String, transient: bool },
    /// Another gateway holds the lease.
    #[error("lease {name:?} is held by gateway {owner} for {left_ms} ms more")]
    Leased {
        name: String,
        owner: String,
        left_ms: u64,
    },
    /// This gateway no longer holds the lease its store is fenced by
    /// (another gateway may have taken over): it may change nothing.
    #[error(
        "this gateway no longer holds lease {name:?}: another gateway may have taken the metadata over"
    )]
    LeaseLost { name: String },
    /// A live gateway shares this store with other backends, policies or
    /// recipients: this one may not join.
    #[error(
        "{member} shares this metadata store with another configuration: {}; every gateway on one store must have the same backends, policies and keys",
        differences.join(", ")
    )]
    Mismatch {
        member: String,
        differences: Vec<String>,
    },
    /// A copy from this store runs, or one into it started and did not
    /// finish: no gateway may serve from it.
    #[error(
        "`shardgate meta copy` is copying from this metadata store, or a copy into it started and did not finish (run it again: it starts over): no gateway may serve from it meanwhile"
    )]
    CopyUnfinished,
    /// `shardgate meta copy` refused to copy, or found the copy unlike its
    /// source.
    #[error("{0}")]
    CopyRefused(String),
    /// The task that ran a call failed (it panicked or the runtime is
    /// shutting down): the call's outcome is unknown.
    #[error("metadata task failed: {0}")]
    Task(String),
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
