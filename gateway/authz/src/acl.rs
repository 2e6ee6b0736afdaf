//! Access control lists: S3's oldest grant model, kept because the tools
//! users already have set them (`s3cmd --acl-public`, rclone's `acl`,
//! Terraform). An ACL is its owner and up to 100 grants, each a grantee
//! and a permission; canned ACLs are names for common lists.

use serde::{Deserialize, Serialize};

use crate::Requester;

/// The group every requester belongs to, signed or not.
pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
/// The group of every signed requester.
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
/// S3's log-delivery group: accepted in grants, never a requester here.
pub const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

/// S3 allows at most this many grants in one ACL.
pub const MAX_GRANTS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

impl Permission {
    /// S3's name (`READ`, `FULL_CONTROL`, ...).
    pub fn s3(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadAcp => "READ_ACP",
            Permission::WriteAcp => "WRITE_ACP",
            Permission::FullControl => "FULL_CONTROL",
        }
    }

    pub fn from_s3(name: &str) -> Option<Self> {
        [
            Permission::Read,
            Permission::Write,
            Permission::ReadAcp,
            Permission::WriteAcp,
            Permission::FullControl,
        ]
        .into_iter()
        .find(|p| p.s3() == name)
    }

    /// Whether a grant of `self` gives `wanted`.
    pub fn covers(self, wanted: Permission) -> bool {
        self == wanted || self == Permission::FullControl
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grantee {
    /// A user, by canonical id.
    User(String),
    /// A predefined group, by URI.
    Group(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

/// An ACL: who owns the resource, and what others may do. Its serde form
/// (postcard) is stored in bucket and version records: the order of the
/// enums' variants above is a record format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// The owner's canonical id.
    pub owner: String,
    pub grants: Vec<Grant>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    /// Not a canned ACL's name (S3: InvalidArgument).
    #[error("{0:?} is not a canned ACL")]
    UnknownCanned(String),
    /// A grant header or grantee S3 would not accept (InvalidArgument).
    #[error("{0}")]
    Invalid(String),
    /// A grant by e-mail address (S3: UnresolvableGrantByEmailAddress):
    /// shardgate's users have no e-mail address.
    #[error("the e-mail address {0:?} does not match a user")]
    Email(String),
    /// More grants than S3 allows (MalformedACLError).
    #[error("an ACL holds at most {MAX_GRANTS} grants")]
    TooMany,
}

/// The canned ACLs S3 accepts on buckets and objects.
pub const CANNED: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
    "aws-exec-read",
];

impl Acl {
    /// `private`: the owner alone, with full control (S3's default).
    pub fn private(owner: &str) -> Self {
        Acl {
            owner: owner.to_string(),
            grants: vec![Grant {
                grantee: Grantee::User(owner.to_string()),
                permission: Permission::FullControl,
            }],
        }
    }

    /// The canned ACL `name` for a resource owned by `owner` in a bucket
    /// owned by `bucket_owner` (the same for a bucket).
    pub fn canned(name: &str, owner: &str, bucket_owner: &str) -> Result<Self, AclError> {
        let mut acl = Acl::private(owner);
        let group = |uri: &str, permission| Grant {
            grantee: Grantee::Group(uri.to_string()),
            permission,
        };
        let user = |id: &str, permission| Grant {
            grantee: Grantee::User(id.to_string()),
            permission,
        };
        match name {
            "private" | "aws-exec-read" => {}
            "public-read" => acl.grants.push(group(ALL_USERS, Permission::Read)),
            "public-read-write" => {
                acl.grants.push(group(ALL_USERS, Permission::Read));
                acl.grants.push(group(ALL_USERS, Permission::Write));
            }
            "authenticated-read" => acl
                .grants
                .push(group(AUTHENTICATED_USERS, Permission::Read)),
            "bucket-owner-read" if bucket_owner != owner => {
                acl.grants.push(user(bucket_owner, Permission::Read));
            }
            "bucket-owner-full-control" if bucket_owner != owner => {
                acl.grants.push(user(bucket_owner, Permission::FullControl));
            }
            "bucket-owner-read" | "bucket-owner-full-control" => {}
            "log-delivery-write" => {
                acl.grants.push(group(LOG_DELIVERY, Permission::Write));
                acl.grants.push(group(LOG_DELIVERY, Permission::ReadAcp));
            }
            other => return Err(AclError::UnknownCanned(other.to_string())),
        }
        Ok(acl)
    }

    /// The ACL that `x-amz-grant-*` headers give: (permission, header
    /// value), each value a comma-separated list of `id="..."`,
    /// `uri="..."` or `emailAddress="..."`. `known_user` says whether a
    /// canonical id names a user of this gateway.
    pub fn from_grant_headers(
        owner: &str,
        headers: &[(Permission, &str)],
        known_user: impl Fn(&str) -> bool,
    ) -> Result<Self, AclError> {
        let mut grants = Vec::new();
        for (permission, value) in headers {
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (kind, quoted) = item.split_once('=').ok_or_else(|| {
                    AclError::Invalid(format!("grant {item:?} is not of the form type=\"value\""))
                })?;
                let value = quoted.trim().trim_matches('"');
                let grantee = match kind.trim().to_ascii_lowercase().as_str() {
                    "id" => Grantee::User(value.to_string()),
                    "uri" => Grantee::Group(value.to_string()),
                    "emailaddress" => return Err(AclError::Email(value.to_string())),
                    other => {
                        return Err(AclError::Invalid(format!(
                            "grantee type {other:?} is not one of id, uri, emailAddress"
                        )));
                    }
                };
                grants.push(Grant {
                    grantee,
                    permission: *permission,
                });
            }
        }
        Acl {
            owner: owner.to_string(),
            grants,
        }
        .checked(known_user)
    }

    /// Checks a list of grants as S3 does when one is set: known users and
    /// groups only, at most [`MAX_GRANTS`].
    pub fn checked(self, known_user: impl Fn(&str) -> bool) -> Result<Self, AclError> {
        if self.grants.len() > MAX_GRANTS {
            return Err(AclError::TooMany);
        }
        for grant in &self.grants {
            match &grant.grantee {
                Grantee::User(id) if id != &self.owner && !known_user(id) => {
                    return Err(AclError::Invalid(format!(
                        "Invalid id: {id:?} is not a user's canonical id"
                    )));
                }
                Grantee::Group(uri)
                    if ![ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY].contains(&uri.as_str()) =>
                {
                    return Err(AclError::Invalid(format!("Invalid group uri: {uri:?}")));
                }
                _ => {}
            }
        }
        Ok(self)
    }

    /// Whether a grant gives `wanted` to `requester`. Grants to the public
    /// groups count only unless `ignore_public` (Public Access Block's
    /// IgnorePublicAcls).
    pub fn allows(&self, requester: &Requester, wanted: Permission, ignore_public: bool) -> bool {
        self.grants.iter().any(|g| {
            g.permission.covers(wanted)
                && match &g.grantee {
                    Grantee::User(id) => requester.canonical_id() == Some(id.as_str()),
                    Grantee::Group(_) if ignore_public => false,
                    Grantee::Group(uri) if uri == ALL_USERS => true,
                    Grantee::Group(uri) if uri == AUTHENTICATED_USERS => {
                        !matches!(requester, Requester::Anonymous)
                    }
                    Grantee::Group(_) => false,
                }
        })
    }

    /// Whether every grant is to the owner: what a bucket with ACLs
    /// disabled accepts (`private`, `bucket-owner-full-control`).
    pub fn only_owner(&self) -> bool {
        self.grants
            .iter()
            .all(|g| matches!(&g.grantee, Grantee::User(id) if *id == self.owner))
    }

    /// Whether it grants anything to everyone or every signed requester
    /// (what BlockPublicAcls refuses and IgnorePublicAcls ignores).
    pub fn is_public(&self) -> bool {
        self.grants.iter().any(|g| {
            matches!(&g.grantee, Grantee::Group(uri) if uri == ALL_USERS || uri == AUTHENTICATED_USERS)
        })
    }
}

/// S3's Object Ownership of a bucket: who owns what others write into it,
/// and whether ACLs count. Stored (postcard) in bucket records: the
/// variants' order is a record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// The writer owns what it writes (S3's setting before April 2023,
    /// and shardgate's default: ACLs count).
    ObjectWriter,
    /// The bucket's owner owns what is written with the canned ACL
    /// `bucket-owner-full-control`; the writer owns the rest.
    BucketOwnerPreferred,
    /// The bucket's owner owns everything, and ACLs are disabled.
    BucketOwnerEnforced,
}

impl Ownership {
    pub fn s3(self) -> &'static str {
        match self {
            Ownership::ObjectWriter => "ObjectWriter",
            Ownership::BucketOwnerPreferred => "BucketOwnerPreferred",
            Ownership::BucketOwnerEnforced => "BucketOwnerEnforced",
        }
    }

    pub fn from_s3(name: &str) -> Option<Self> {
        [
            Ownership::ObjectWriter,
            Ownership::BucketOwnerPreferred,
            Ownership::BucketOwnerEnforced,
        ]
        .into_iter()
        .find(|o| o.s3() == name)
    }

    pub fn acls_enabled(self) -> bool {
        self != Ownership::BucketOwnerEnforced
    }

    /// Who owns an object `writer` writes (`None`: unsigned) with the
    /// canned ACL `canned`, into a bucket `bucket_owner` owns.
    pub fn object_owner<'a>(
        self,
        writer: Option<&'a str>,
        bucket_owner: &'a str,
        canned: Option<&str>,
    ) -> &'a str {
        match (self, writer) {
            (Ownership::BucketOwnerEnforced, _) | (_, None) => bucket_owner,
            (Ownership::BucketOwnerPreferred, _) if canned == Some("bucket-owner-full-control") => {
                bucket_owner
            }
            (_, Some(w)) => w,
        }
    }
}
