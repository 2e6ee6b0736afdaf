//! The S3 actions a bucket policy can name, with what each acts on and the
//! ACL permission that grants it. The names are S3's (`s3:GetObject`); an
//! operation maps to one of them (`DeleteBucketCors` is `s3:PutBucketCORS`,
//! as in S3), which the S3 layer chooses.

use crate::acl::Permission;

/// What an action's resource ARN names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `arn:aws:s3:::bucket`
    Bucket,
    /// `arn:aws:s3:::bucket/key`
    Object,
}

/// Which ACL an action's permission is looked up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOf {
    Bucket,
    Object,
}

/// One S3 action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    pub name: &'static str,
    pub kind: Kind,
    /// The ACL grant that allows it, where ACLs can (most actions only the
    /// owners or a policy may do).
    pub acl: Option<(AclOf, Permission)>,
}

use AclOf as On;
use Kind::{Bucket as B, Object as O};
use Permission::{Read, ReadAcp, Write, WriteAcp};

const fn a(name: &'static str, kind: Kind, acl: Option<(AclOf, Permission)>) -> Action {
    Action { name, kind, acl }
}

/// Every action shardgate evaluates, and those it accepts in a policy
/// without acting on them yet.
pub const ACTIONS: &[Action] = &[
    a("s3:GetObject", O, Some((On::Object, Read))),
    a("s3:GetObjectVersion", O, Some((On::Object, Read))),
    a("s3:GetObjectTorrent", O, Some((On::Object, Read))),
    a("s3:GetObjectAttributes", O, None),
    a("s3:GetObjectVersionAttributes", O, None),
    a("s3:PutObject", O, Some((On::Bucket, Write))),
    a("s3:DeleteObject", O, Some((On::Bucket, Write))),
    // Not by a WRITE grant: deleting versions for good defeats
    // versioning, and S3 keeps it to the bucket's owner and policies.
    a("s3:DeleteObjectVersion", O, None),
    a("s3:AbortMultipartUpload", O, Some((On::Bucket, Write))),
    a("s3:ListMultipartUploadParts", O, None),
    a("s3:GetObjectAcl", O, Some((On::Object, ReadAcp))),
    a("s3:GetObjectVersionAcl", O, Some((On::Object, ReadAcp))),
    a("s3:PutObjectAcl", O, Some((On::Object, WriteAcp))),
    a("s3:PutObjectVersionAcl", O, Some((On::Object, WriteAcp))),
    a("s3:GetObjectTagging", O, None),
    a("s3:GetObjectVersionTagging", O, None),
    a("s3:PutObjectTagging", O, None),
    a("s3:PutObjectVersionTagging", O, None),
    a("s3:DeleteObjectTagging", O, None),
    a("s3:DeleteObjectVersionTagging", O, None),
    a("s3:GetObjectRetention", O, None),
    a("s3:PutObjectRetention", O, None),
    a("s3:GetObjectLegalHold", O, None),
    a("s3:PutObjectLegalHold", O, None),
    a("s3:BypassGovernanceRetention", O, None),
    a("s3:RestoreObject", O, None),
    a("s3:ListBucket", B, Some((On::Bucket, Read))),
    a("s3:ListBucketVersions", B, Some((On::Bucket, Read))),
    a("s3:ListBucketMultipartUploads", B, Some((On::Bucket, Read))),
    a("s3:CreateBucket", B, None),
    a("s3:DeleteBucket", B, None),
    a("s3:GetBucketLocation", B, None),
    a("s3:GetBucketAcl", B, Some((On::Bucket, ReadAcp))),
    a("s3:PutBucketAcl", B, Some((On::Bucket, WriteAcp))),
    a("s3:GetBucketPolicy", B, None),
    a("s3:PutBucketPolicy", B, None),
    a("s3:DeleteBucketPolicy", B, None),
    a("s3:GetBucketPolicyStatus", B, None),
    a("s3:GetBucketOwnershipControls", B, None),
    a("s3:PutBucketOwnershipControls", B, None),
    a("s3:GetBucketPublicAccessBlock", B, None),
    a("s3:PutBucketPublicAccessBlock", B, None),
    a("s3:GetBucketVersioning", B, None),
    a("s3:PutBucketVersioning", B, None),
    a("s3:GetBucketTagging", B, None),
    a("s3:PutBucketTagging", B, None),
    a("s3:GetBucketCORS", B, None),
    a("s3:PutBucketCORS", B, None),
    a("s3:GetBucketObjectLockConfiguration", B, None),
    a("s3:PutBucketObjectLockConfiguration", B, None),
    a("s3:GetLifecycleConfiguration", B, None),
    a("s3:PutLifecycleConfiguration", B, None),
    a("s3:GetEncryptionConfiguration", B, None),
    a("s3:PutEncryptionConfiguration", B, None),
    a("s3:GetBucketWebsite", B, None),
    a("s3:PutBucketWebsite", B, None),
    a("s3:DeleteBucketWebsite", B, None),
    a("s3:GetBucketNotification", B, None),
    a("s3:PutBucketNotification", B, None),
    a("s3:GetBucketLogging", B, None),
    a("s3:PutBucketLogging", B, None),
    a("s3:GetReplicationConfiguration", B, None),
    a("s3:PutReplicationConfiguration", B, None),
    a("s3:GetAccelerateConfiguration", B, None),
    a("s3:PutAccelerateConfiguration", B, None),
    a("s3:GetBucketRequestPayment", B, None),
    a("s3:PutBucketRequestPayment", B, None),
    a("s3:ListAllMyBuckets", B, None),
];

/// The action named `name` (case-insensitive, as in a policy).
pub fn lookup(name: &str) -> Option<&'static Action> {
    ACTIONS.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The actions a policy's bucket permissions cannot be taken from: only
/// the owners change who may do what, so a Deny cannot lock them out.
pub fn is_policy_management(name: &str) -> bool {
    [
        "s3:GetBucketPolicy",
        "s3:PutBucketPolicy",
        "s3:DeleteBucketPolicy",
    ]
    .iter()
    .any(|a| a.eq_ignore_ascii_case(name))
}
