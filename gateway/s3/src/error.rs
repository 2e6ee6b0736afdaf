//! The one place node errors become S3 errors.
//!
//! A user's mistake gets its 4xx S3 code with a message; an outage the user
//! cannot fix (too few backends) gets 503 `ServiceUnavailable`, which S3
//! clients retry; only a fault of the gateway itself is a 500.

use s3s::{S3Error, S3ErrorCode};
use shardgate_core::CoreError;
use shardgate_meta::{CompleteError, MetaError};
use shardgate_node::GatewayError;
use shardgate_pipeline::PipelineError;

use crate::server::conn::BodyStalled;

fn err(code: S3ErrorCode, msg: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(code, msg.to_string())
}

fn meta_error(e: MetaError) -> S3Error {
    use S3ErrorCode as C;
    match e {
        MetaError::NoSuchBucket => err(C::NoSuchBucket, "The specified bucket does not exist"),
        MetaError::NoSuchKey => err(C::NoSuchKey, "The specified key does not exist."),
        MetaError::NoSuchVersion => err(C::NoSuchVersion, "The specified version does not exist."),
        MetaError::InvalidKey(why) => err(C::InvalidArgument, why),
        MetaError::InvalidVersionId(_) => err(C::InvalidArgument, "Invalid version id specified"),
        MetaError::Locked(why) => err(
            C::AccessDenied,
            format!("Access Denied because object protected by object lock: {why}"),
        ),
        MetaError::NoObjectLock => err(
            C::InvalidRequest,
            "Bucket is missing Object Lock Configuration",
        ),
        MetaError::InvalidBucketState(why) => err(C::InvalidBucketState, why),
        MetaError::DeleteMarker => err(
            C::MethodNotAllowed,
            "The specified method is not allowed against this resource: the version is a delete marker.",
        ),
        MetaError::BucketExists => err(
            C::BucketAlreadyOwnedByYou,
            "Your previous request to create the named bucket succeeded and you already own it",
        ),
        MetaError::BucketNotEmpty => err(
            C::BucketNotEmpty,
            "The bucket you tried to delete is not empty (objects or uploads in progress)",
        ),
        MetaError::NoSuchUpload => err(
            C::NoSuchUpload,
            "The specified multipart upload does not exist: it may have been completed, aborted or expired",
        ),
        MetaError::PreconditionFailed(why) => err(
            C::PreconditionFailed,
            format!("At least one of the preconditions you specified did not hold: {why}"),
        ),
        // Only a request already dropped sees this, unless an intent was
        // swept under a running write: then the client retries.
        MetaError::IntentGone => err(
            C::InternalError,
            "The write was abandoned before its commit; nothing was stored. Please retry",
        ),
        MetaError::PublicPolicyBlocked => err(
            C::AccessDenied,
            "The bucket's Public Access Block (BlockPublicPolicy) refuses a public policy",
        ),
        MetaError::PublicAclBlocked => err(
            C::AccessDenied,
            "The bucket's Public Access Block (BlockPublicAcls) refuses a public ACL",
        ),
        MetaError::AclsDisabled => err(
            C::AccessControlListNotSupported,
            "The bucket does not allow ACLs",
        ),
        e @ MetaError::AclWithEnforcedOwnership => err(C::InvalidBucketAclWithObjectOwnership, e),
        MetaError::Changed => err(
            C::OperationAborted,
            "A conflicting operation on this object is in progress. Please try again.",
        ),
        MetaError::NotOwner => err(
            C::AccessDenied,
            "Access Denied: the bucket belongs to another user",
        ),
        // A request signed by a user deleted since (CreateBucket).
        MetaError::NoSuchUser(_) => err(
            C::InvalidAccessKeyId,
            "The AWS Access Key Id you provided does not exist in our records.",
        ),
        // Admin operations: no S3 request reaches them.
        e @ (MetaError::UserExists(_) | MetaError::UserOwnsBuckets { .. }) => {
            err(C::InvalidRequest, e)
        }
        e @ (MetaError::Database {
            transient: true, ..
        }
        | MetaError::LeaseLost { .. }) => {
            tracing::warn!(error = %e, "metadata database unavailable");
            err(C::SlowDown, e)
        }
        e @ (MetaError::Corrupt { .. }
        | MetaError::Store(_)
        | MetaError::Database { .. }
        | MetaError::Leased { .. }
        | MetaError::Mismatch { .. }
        | MetaError::CopyUnfinished
        | MetaError::CopyRefused(_)
        | MetaError::Task(_)) => {
            tracing::error!(error = %e, "metadata store failure");
            err(C::InternalError, e)
        }
    }
}

/// The S3 error a node error is answered with.
pub(crate) fn s3_error(e: GatewayError) -> S3Error {
    use S3ErrorCode as C;
    match e {
        GatewayError::NoSuchKey => err(C::NoSuchKey, "The specified key does not exist."),
        GatewayError::DeleteMarker { version_id, latest } => {
            let mut e = match latest {
                true => err(C::NoSuchKey, "The specified key does not exist."),
                false => err(
                    C::MethodNotAllowed,
                    "The specified method is not allowed against this resource: the version is a delete marker.",
                ),
            };
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "x-amz-delete-marker",
                http::HeaderValue::from_static("true"),
            );
            if let Ok(v) = http::HeaderValue::from_str(&version_id) {
                headers.insert("x-amz-version-id", v);
            }
            e.set_headers(headers);
            e
        }
        GatewayError::Meta(e) => meta_error(e),
        GatewayError::Complete(e) => match e {
            CompleteError::Meta(e) => meta_error(e),
            CompleteError::NoParts => err(C::MalformedXML, "You must specify at least one part"),
            CompleteError::PartOrder => err(
                C::InvalidPartOrder,
                "The list of parts was not in ascending order",
            ),
            e @ CompleteError::InvalidPart(_) => err(C::InvalidPart, e),
            e @ CompleteError::TooSmall(_) => err(C::EntityTooSmall, e),
            // Answered as the first completion by the handler; anywhere
            // else the upload is simply gone.
            CompleteError::Done(_) => err(
                C::NoSuchUpload,
                "The specified multipart upload does not exist. It was completed already.",
            ),
            // The S3 layer's own check of the parts (their checksums).
            CompleteError::Refused(why) => match why.downcast::<S3Error>() {
                Ok(e) => *e,
                Err(other) => err(C::InvalidRequest, other),
            },
        },
        GatewayError::Pipeline(e) => match e {
            // s3s's aws-chunked decoder reports a bad chunk signature as
            // a body error; its type is private, so match its text.
            PipelineError::Input(io) if io.to_string().contains("SignatureMismatch") => err(
                C::SignatureDoesNotMatch,
                "The signature of a chunk of the streamed body does not match",
            ),
            PipelineError::Input(io) if BodyStalled::in_chain(&io) => err(
                C::RequestTimeout,
                format!(
                    "Your socket connection to the server was not read from or written to within the timeout period: {io}"
                ),
            ),
            PipelineError::Input(io) => err(
                C::IncompleteBody,
                format!("The request body could not be read in full: {io}"),
            ),
            e @ (PipelineError::QuorumNotReached { .. }
            | PipelineError::NotEnoughFragments { .. }) => {
                tracing::warn!(error = %e, "not enough backends");
                err(
                    C::ServiceUnavailable,
                    format!("Not enough backends are reachable: {e}"),
                )
            }
            PipelineError::Core(CoreError::RangeNotSatisfiable { .. }) => {
                err(C::InvalidRange, "The requested range is not satisfiable")
            }
            PipelineError::Backend(b) => {
                tracing::warn!(error = %b, "backend failure");
                err(C::ServiceUnavailable, format!("A backend failed: {b}"))
            }
            PipelineError::Placement(p) => err(C::ServiceUnavailable, p),
            e @ (PipelineError::Core(_) | PipelineError::Internal(_)) => {
                tracing::error!(error = %e, "pipeline failure");
                err(C::InternalError, e)
            }
        },
        GatewayError::Placement(e) => {
            tracing::warn!(error = %e, "placement failed");
            err(C::ServiceUnavailable, format!("No placement: {e}"))
        }
        e @ GatewayError::InvalidUser(_) => err(C::InvalidRequest, e),
        e @ (GatewayError::Config(_) | GatewayError::Internal(_)) => {
            tracing::error!(error = %e, "gateway failure");
            err(C::InternalError, e)
        }
    }
}

/// `?` for node results inside S3 operations.
pub(crate) trait OrS3<T> {
    fn or_s3(self) -> s3s::S3Result<T>;
}

impl<T> OrS3<T> for Result<T, GatewayError> {
    fn or_s3(self) -> s3s::S3Result<T> {
        self.map_err(s3_error)
    }
}

impl<T> OrS3<T> for Result<T, MetaError> {
    fn or_s3(self) -> s3s::S3Result<T> {
        self.map_err(meta_error)
    }
}
