//! Who may use which bucket. The configured access key is the gateway's
//! administrator: every bucket is its to use. Each user an admin created
//! ([`shardgate_node::User`]) owns the buckets it creates and may use
//! those only: another user's bucket is `AccessDenied`, whatever the
//! operation, and ListBuckets lists a user's own. Buckets from before users
//! existed belong to the configured key.
//!
//! The check runs once per request, before its body is read, from the
//! bucket of its path; the copy operations check their source bucket
//! themselves ([`Caller::may_use`]). A bucket deleted and created by
//! another user while a body streams must not receive the write: a new
//! version checks its bucket's owner again in the transaction that commits
//! it ([`shardgate_meta::Writer`]), and the operations with an XML body
//! (configurations, retention, tags, DeleteObjects) check again once it is
//! read, just before their store call. Anonymous requests are refused
//! here; bucket policies and ACLs that open buckets to others are issue
//! 19's.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use shardgate_meta::{BucketRecord, Writer};
use shardgate_node::Gateway;

/// Who signed a request, as the handlers see it (in its extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The configured access key.
    Admin,
    /// A user, by name.
    User(String),
}

impl Caller {
    /// The caller of a request, as the access check found it. A request
    /// the check did not see is refused, never taken as the administrator's.
    pub fn of(extensions: &http::Extensions) -> S3Result<Self> {
        extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| s3_error!(AccessDenied, "The request's access check did not run"))
    }

    /// The owner a bucket this caller creates gets.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::User(name) => Some(name),
        }
    }

    /// Who writes, for the ownership check at a version's commit.
    pub fn writer(&self) -> Writer {
        match self {
            Caller::Admin => Writer::Admin,
            Caller::User(name) => Writer::User(name.clone()),
        }
    }

    /// Whether the caller may use a bucket with this record.
    pub fn may_use(&self, record: &BucketRecord) -> bool {
        match self {
            Caller::Admin => true,
            Caller::User(name) => record.owner().ok().flatten().as_deref() == Some(name.as_str()),
        }
    }

    /// `AccessDenied` unless the caller may use `bucket` (a bucket that is
    /// not there is the operation's own NoSuchBucket).
    pub async fn check_bucket(&self, gateway: &Gateway, bucket: &str) -> S3Result<()> {
        if *self == Caller::Admin {
            return Ok(());
        }
        let record = gateway
            .metadata()
            .bucket(bucket)
            .await
            .map_err(|e| s3_error!(InternalError, "reading the bucket: {e}"))?;
        match record {
            Some(r) if !self.may_use(&r) => Err(s3_error!(
                AccessDenied,
                "Access Denied: the bucket {bucket} belongs to another user"
            )),
            _ => Ok(()),
        }
    }
}

/// The access check s3s runs for every signed request.
pub struct Access {
    pub gateway: Arc<Gateway>,
    pub admin_key: String,
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let caller = if credentials.access_key == self.admin_key {
            Caller::Admin
        } else {
            match self.gateway.user(&credentials.access_key) {
                Some(user) => Caller::User(user.name),
                // Deleted since its signature was checked.
                None => {
                    return Err(s3_error!(
                        InvalidAccessKeyId,
                        "The AWS Access Key Id you provided does not exist in our records."
                    ));
                }
            }
        };
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(bucket.to_string()),
        };
        if let Some(bucket) = bucket
            && cx.s3_op().name() != "CreateBucket"
        {
            caller.check_bucket(&self.gateway, &bucket).await?;
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}
