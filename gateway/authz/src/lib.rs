//! S3 authorization for shardgate, with no I/O: bucket policies, ACLs,
//! Public Access Block, and [`authorize`], the decision that combines them
//! the way S3 does for requests inside one account.
//!
//! Why a crate of its own: the rules are subtle (explicit Deny wins,
//! negated conditions hold on absent keys, public grants can be ignored),
//! they must be right for every request, and they are tested here against
//! a reference evaluation written from IAM's reference (tests/reference.rs)
//! without a gateway in the way. The S3 layer turns an operation into an
//! [`action::Action`], a resource ARN and a [`Context`], and reads the
//! bucket's and object's settings from the metadata.
//!
//! One gateway is one account: its configured key is the account's root
//! (`Requester::Admin`), its users are the account's users, and a policy
//! naming the account (`arn:aws:iam::ACCOUNT:root`) names every signed
//! requester. The owner of a bucket has full control of everything in it,
//! as with S3's BucketOwnerEnforced, and ACLs add grants for others unless
//! the bucket's ownership setting disables them.

pub mod acl;
pub mod action;
pub mod condition;
pub mod policy;

use std::collections::HashMap;

pub use acl::{Acl, AclError, Grant, Grantee, Ownership, Permission};
pub use action::{Action, Kind};
pub use policy::{Policy, PolicyError, Request, Verdict};

/// Who sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    /// An unsigned request.
    Anonymous,
    /// The gateway's configured key: the account's root.
    Admin { canonical_id: String },
    /// A user of the gateway.
    User { name: String, canonical_id: String },
}

impl Requester {
    pub fn canonical_id(&self) -> Option<&str> {
        match self {
            Requester::Anonymous => None,
            Requester::Admin { canonical_id } | Requester::User { canonical_id, .. } => {
                Some(canonical_id)
            }
        }
    }
}

/// A request's condition keys (`aws:SourceIp`, `s3:prefix`, ...), each
/// with its values. Keys compare without case up to their first `/`
/// (`s3:ExistingObjectTag/Name` keeps the tag's case).
#[derive(Clone, Debug, Default)]
pub struct Context {
    keys: HashMap<String, Vec<String>>,
}

fn normal(key: &str) -> String {
    match key.split_once('/') {
        Some((head, tail)) => format!("{}/{tail}", head.to_ascii_lowercase()),
        None => key.to_ascii_lowercase(),
    }
}

impl Context {
    /// Adds a value of `key`.
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.keys.entry(normal(key)).or_default().push(value.into());
        self
    }

    /// Sets `key` to `value` alone, in place of what it had.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.keys.insert(normal(key), vec![value.into()]);
        self
    }

    /// Keeps only the keys (as stored: lower case up to their first `/`)
    /// for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) -> &mut Self {
        self.keys.retain(|k, _| keep(k));
        self
    }

    /// The values of `key`; `None` when the request has none.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.keys.get(&normal(key)).map(Vec::as_slice)
    }
}

/// A bucket's Public Access Block (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicAccessBlock {
    /// Refuse setting a public ACL (checked where ACLs are set).
    pub block_public_acls: bool,
    /// Grants to everyone and to every signed requester count for nothing.
    pub ignore_public_acls: bool,
    /// Refuse setting a public policy (checked at PutBucketPolicy).
    pub block_public_policy: bool,
    /// A public policy's grants reach only the account's own requesters.
    pub restrict_public_buckets: bool,
}

/// What the decision needs to know of the bucket and the object.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub bucket_owner: &'a str,
    /// The object's owner, for an action on an existing object.
    pub object_owner: Option<&'a str>,
    pub bucket_acl: Option<&'a Acl>,
    pub object_acl: Option<&'a Acl>,
    pub policy: Option<&'a Policy>,
    pub block: PublicAccessBlock,
    /// `false` when the bucket's ownership is BucketOwnerEnforced.
    pub acls_enabled: bool,
}

/// Why a request is refused, for the log (the client gets AccessDenied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A statement of the bucket policy denies it.
    ExplicitDeny,
    /// Nothing allows it.
    NotAllowed,
}

/// Whether `requester` may do `action` on `resource` (its ARN), in S3's
/// order: an explicit Deny in the bucket policy refuses (except the
/// policy's own management by the root, so that it can never lock itself
/// out); then the root and the bucket's owner may, and the object's owner
/// may read the object and its ACL and write its ACL;
/// then an Allow in the policy; then an ACL grant.
pub fn authorize(
    requester: &Requester,
    action: &Action,
    resource: &str,
    context: &Context,
    subject: &Subject<'_>,
) -> Result<(), Denial> {
    let admin = matches!(requester, Requester::Admin { .. });
    let verdict = match subject.policy {
        Some(policy) => {
            let request = Request {
                requester,
                action: action.name,
                resource,
                context,
            };
            let verdict = policy.evaluate(&request);
            // RestrictPublicBuckets: a public policy's Allow reaches no
            // anonymous requester.
            if verdict == Verdict::Allow
                && subject.block.restrict_public_buckets
                && *requester == Requester::Anonymous
                && policy.is_public()
            {
                Verdict::Silent
            } else {
                verdict
            }
        }
        None => Verdict::Silent,
    };
    if verdict == Verdict::Deny && !(admin && action::is_policy_management(action.name)) {
        return Err(Denial::ExplicitDeny);
    }
    let id = requester.canonical_id();
    // The object's owner reads it and reads and writes its ACL, as its
    // owner's implicit grant in S3; deleting, overwriting, tagging or
    // locking it is the bucket's to allow. With ACLs disabled the
    // bucket's owner owns every object.
    let object_owns = subject.acls_enabled
        && matches!(action.acl, Some((action::AclOf::Object, _)))
        && id.is_some()
        && id == subject.object_owner;
    let owns = admin || id == Some(subject.bucket_owner) || object_owns;
    if owns || verdict == Verdict::Allow {
        return Ok(());
    }
    if subject.acls_enabled
        && let Some((of, permission)) = action.acl
    {
        let acl = match of {
            action::AclOf::Bucket => subject.bucket_acl,
            action::AclOf::Object => subject.object_acl,
        };
        if acl.is_some_and(|a| a.allows(requester, permission, subject.block.ignore_public_acls)) {
            return Ok(());
        }
    }
    Err(Denial::NotAllowed)
}
