//! ACLs and Object Ownership: Get/PutBucketAcl, Get/PutObjectAcl,
//! Get/Put/DeleteBucketOwnershipControls, and the ACL a write asks for
//! with `x-amz-acl` or `x-amz-grant-*` (PutObject, CopyObject,
//! CreateMultipartUpload, CreateBucket).
//!
//! The access check reads what is set here ([`crate::access`]). A bucket's
//! owner always has full control of it and of everything in it; an ACL
//! grants others. Under BucketOwnerEnforced ACLs are off: only the owner's
//! own (`private`, `bucket-owner-full-control`) are taken, as S3 does. The
//! default, with no ownership set, is S3's older ObjectWriter: a writer
//! another owner let in owns what it writes, so that `x-amz-acl` on its
//! uploads means what the tools that send it expect.
//!
//! Every refusal that depends on the bucket's settings (BlockPublicAcls,
//! BucketOwnerEnforced) is made again in the metadata transaction that
//! stores the ACL, so a setting changed while a body streams still holds.

use std::collections::HashMap;

use shardgate_authz::{Acl, AclError, Grantee as Who, Ownership, Permission as Perm};
use shardgate_meta::{BucketAccess, ObjectSummary};

use s3s::S3Error;

use super::*;
use crate::access::BucketAcl;

/// How many times PutObjectAcl reads the version again when it changed
/// between the read and the write (an overwrite, a tag change).
const ACL_ATTEMPTS: usize = 3;

/// The ACL a request asks for: a canned ACL, `x-amz-grant-*` headers, or
/// (PutBucketAcl, PutObjectAcl) an `AccessControlPolicy` body.
#[derive(Default)]
pub(super) struct AskedAcl<'a> {
    pub canned: Option<&'a str>,
    pub grants: Vec<(Perm, &'a str)>,
    pub body: Option<&'a AccessControlPolicy>,
}

impl<'a> AskedAcl<'a> {
    /// From the canned ACL and the grant headers (absent ones as `None`).
    pub fn headers(
        canned: Option<&'a str>,
        full_control: Option<&'a str>,
        read: Option<&'a str>,
        read_acp: Option<&'a str>,
        write: Option<&'a str>,
        write_acp: Option<&'a str>,
    ) -> Self {
        let grants = [
            (Perm::FullControl, full_control),
            (Perm::Read, read),
            (Perm::ReadAcp, read_acp),
            (Perm::Write, write),
            (Perm::WriteAcp, write_acp),
        ]
        .into_iter()
        .filter_map(|(p, v)| v.map(|v| (p, v)))
        .collect();
        AskedAcl {
            canned,
            grants,
            body: None,
        }
    }
}

/// The S3 error of an ACL S3 would not accept.
fn acl_error(e: AclError) -> S3Error {
    match e {
        AclError::UnknownCanned(_) | AclError::Invalid(_) => {
            S3Error::with_message(S3ErrorCode::InvalidArgument, e.to_string())
        }
        AclError::Email(_) => {
            S3Error::with_message(S3ErrorCode::UnresolvableGrantByEmailAddress, e.to_string())
        }
        AclError::TooMany => S3Error::with_message(S3ErrorCode::MalformedACLError, e.to_string()),
    }
}

/// AccessControlListNotSupported under BucketOwnerEnforced unless `acl`
/// grants the owner alone; AccessDenied for a public one under
/// BlockPublicAcls.
fn check_settable(bucket: &BucketAcl, acl: &Acl) -> S3Result<()> {
    if !bucket.ownership.acls_enabled() && !acl.only_owner() {
        return Err(s3_error!(
            AccessControlListNotSupported,
            "The bucket does not allow ACLs"
        ));
    }
    if bucket.block.block_public_acls && acl.is_public() {
        return Err(s3_error!(
            AccessDenied,
            "The bucket's Public Access Block (BlockPublicAcls) refuses a public ACL"
        ));
    }
    Ok(())
}

/// The grants of an `AccessControlPolicy` body, for a resource `owner`
/// owns.
fn body_acl(body: &AccessControlPolicy, owner: &str) -> S3Result<Acl> {
    if let Some(id) = body.owner.as_ref().and_then(|o| o.id.as_deref())
        && id != owner
    {
        return Err(s3_error!(
            AccessDenied,
            "The ACL's Owner is not the resource's owner: an ACL cannot change it"
        ));
    }
    let malformed = |why: &str| {
        S3Error::with_message(
            S3ErrorCode::MalformedACLError,
            format!(
                "The XML you provided was not well-formed or did not validate against our published schema: {why}"
            ),
        )
    };
    let mut grants = Vec::new();
    for g in body.grants.iter().flatten() {
        let (Some(grantee), Some(permission)) = (&g.grantee, &g.permission) else {
            return Err(malformed("a Grant needs a Grantee and a Permission"));
        };
        let permission = Perm::from_s3(permission.as_str())
            .ok_or_else(|| malformed(&format!("unknown permission {:?}", permission.as_str())))?;
        let who = match grantee.type_.as_str() {
            Type::CANONICAL_USER => Who::User(
                grantee
                    .id
                    .clone()
                    .ok_or_else(|| malformed("a CanonicalUser grantee needs an ID"))?,
            ),
            Type::GROUP => Who::Group(
                grantee
                    .uri
                    .clone()
                    .ok_or_else(|| malformed("a Group grantee needs a URI"))?,
            ),
            Type::AMAZON_CUSTOMER_BY_EMAIL => {
                return Err(acl_error(AclError::Email(
                    grantee.email_address.clone().unwrap_or_default(),
                )));
            }
            other => return Err(malformed(&format!("unknown grantee type {other:?}"))),
        };
        grants.push(shardgate_authz::Grant {
            grantee: who,
            permission,
        });
    }
    Ok(Acl {
        owner: owner.to_string(),
        grants,
    })
}

impl ShardgateS3 {
    /// The ACL `asked` gives a resource `owner` owns in a bucket
    /// `bucket_owner` owns; `None` when it asks for none.
    fn build_acl(
        &self,
        asked: &AskedAcl<'_>,
        owner: &str,
        bucket_owner: &str,
    ) -> S3Result<Option<Acl>> {
        let known = |id: &str| self.authz.known_id(id);
        let headers = asked.canned.is_some() || !asked.grants.is_empty();
        if headers && asked.body.is_some() {
            return Err(s3_error!(
                UnexpectedContent,
                "This request does not support content: an ACL is given by headers or by a body, not both"
            ));
        }
        let acl = match (asked.canned, asked.grants.is_empty(), asked.body) {
            (Some(_), false, _) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Specifying both Canned ACLs and Header Grants is not allowed"
                ));
            }
            (Some(canned), true, _) => Acl::canned(canned, owner, bucket_owner),
            (None, false, _) => Acl::from_grant_headers(owner, &asked.grants, known),
            (None, true, Some(body)) => body_acl(body, owner)?.checked(known),
            (None, true, None) => return Ok(None),
        };
        acl.map(Some).map_err(acl_error)
    }

    /// The owner and ACL of a version `caller` writes into `bucket` with
    /// `asked` (`None`: the bucket's owner, alone), refused now when the
    /// bucket's settings refuse it (and again at the commit).
    pub(super) async fn acl_for_write(
        &self,
        caller: &Caller,
        bucket: &str,
        asked: AskedAcl<'_>,
    ) -> S3Result<Option<Acl>> {
        let settings = self.authz.bucket_acl(bucket).await?;
        let owner = settings.ownership.object_owner(
            caller.requester.canonical_id(),
            &settings.owner_id,
            asked.canned,
        );
        let acl = self
            .build_acl(&asked, owner, &settings.owner_id)?
            .unwrap_or_else(|| Acl::private(owner));
        check_settable(&settings, &acl)?;
        Ok((acl != Acl::private(&settings.owner_id)).then_some(acl))
    }

    /// The bucket settings CreateBucket's headers ask for: its ACL (the
    /// creator's) and Object Ownership.
    pub(super) fn settings_for_new_bucket(
        &self,
        caller: &Caller,
        asked: AskedAcl<'_>,
        ownership: Option<&ObjectOwnership>,
    ) -> S3Result<Vec<BucketAccess>> {
        let mut settings = Vec::new();
        let owner = caller
            .requester
            .canonical_id()
            .ok_or_else(|| s3_error!(AccessDenied, "Anonymous users cannot create buckets"))?;
        if let Some(acl) = self.build_acl(&asked, owner, owner)? {
            settings.push(BucketAccess::Acl(acl));
        }
        if let Some(o) = ownership {
            let o = Ownership::from_s3(o.as_str()).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "Invalid x-amz-object-ownership header: {}",
                    o.as_str()
                )
            })?;
            settings.push(BucketAccess::Ownership(Some(o)));
        }
        Ok(settings)
    }

    /// S3's Owner for canonical id `id`, with the display name only for
    /// a signed requester (`names`): user names are not for the public.
    fn owner_of(&self, id: &str, names: bool) -> Owner {
        Owner {
            display_name: self.authz.display_name(id).filter(|_| names),
            id: Some(id.to_string()),
        }
    }

    /// An ACL as S3 shows it to `caller`.
    fn shown(&self, caller: &Caller, acl: &Acl) -> (Owner, Grants) {
        let names = caller.requester != shardgate_authz::Requester::Anonymous;
        let grants = acl
            .grants
            .iter()
            .map(|g| {
                let grantee = match &g.grantee {
                    Who::User(id) => Grantee {
                        display_name: self.authz.display_name(id).filter(|_| names),
                        email_address: None,
                        id: Some(id.clone()),
                        type_: Type::from_static(Type::CANONICAL_USER),
                        uri: None,
                    },
                    Who::Group(uri) => Grantee {
                        display_name: None,
                        email_address: None,
                        id: None,
                        type_: Type::from_static(Type::GROUP),
                        uri: Some(uri.clone()),
                    },
                };
                Grant {
                    grantee: Some(grantee),
                    permission: Some(Permission::from(g.permission.s3().to_string())),
                }
            })
            .collect();
        (self.owner_of(&acl.owner, names), grants)
    }

    /// The owners of a listing's entries in `bucket`, each looked up once.
    pub(super) async fn listed_owners(
        &self,
        caller: &Caller,
        bucket: &str,
    ) -> S3Result<ListedOwners<'_>> {
        let settings = self.authz.bucket_acl(bucket).await?;
        Ok(ListedOwners {
            service: self,
            names: caller.requester != shardgate_authz::Requester::Anonymous,
            bucket_owner: settings.owner_id,
            enforced: !settings.ownership.acls_enabled(),
            known: HashMap::new(),
        })
    }

    pub(super) async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let settings = self.authz.bucket_acl(&req.input.bucket).await?;
        let (owner, grants) = self.shown(&caller, &settings.acl);
        Ok(S3Response::new(GetBucketAclOutput {
            grants: Some(grants),
            owner: Some(owner),
        }))
    }

    pub(super) async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = &req.input;
        let settings = self.authz.bucket_acl(&input.bucket).await?;
        let asked = AskedAcl {
            body: input.access_control_policy.as_ref(),
            ..requested_acl!(input, with_write)
        };
        let acl = self
            .build_acl(&asked, &settings.owner_id, &settings.owner_id)?
            .ok_or_else(missing_acl)?;
        check_settable(&settings, &acl)?;
        // Checked again in the change's transaction.
        self.gw
            .metadata()
            .set_bucket_access(&caller.writer(), &input.bucket, &BucketAccess::Acl(acl))
            .await
            .or_s3()?;
        Ok(S3Response::new(PutBucketAclOutput {}))
    }

    pub(super) async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = &req.input;
        let settings = self.authz.bucket_acl(&input.bucket).await?;
        let asked = input.version_id.as_deref();
        let summary = self
            .live_version(&input.bucket, &input.key, version_selector(asked)?)
            .await?;
        let (bucket, key) = (&input.bucket, &input.key);
        let ops = &["GetObjectAcl"];
        self.authz
            .recheck(
                &caller,
                caller.seen,
                ops,
                bucket,
                key,
                asked,
                Some(&summary),
            )
            .await?;
        // With ACLs disabled the bucket's owner owns every object, alone.
        let acl = match settings.ownership.acls_enabled() {
            true => summary
                .acl()
                .map_err(|e| s3_error!(InternalError, "reading the object's ACL: {e}"))?,
            false => None,
        }
        .unwrap_or_else(|| Acl::private(&settings.owner_id));
        let (owner, grants) = self.shown(&caller, &acl);
        Ok(S3Response::new(GetObjectAclOutput {
            grants: Some(grants),
            owner: Some(owner),
            request_charged: None,
        }))
    }

    pub(super) async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = &req.input;
        let settings = self.authz.bucket_acl(&input.bucket).await?;
        let selector = version_selector(input.version_id.as_deref())?;
        let asked = AskedAcl {
            body: input.access_control_policy.as_ref(),
            ..requested_acl!(input, with_write)
        };
        let (bucket, key) = (&input.bucket, &input.key);
        let asked_version = input.version_id.as_deref();
        for _ in 0..ACL_ATTEMPTS {
            let summary = self.live_version(bucket, key, selector).await?;
            // Decided again when the access check read another version:
            // the ACL changes only a version the caller may change.
            let ops = &["PutObjectAcl"];
            let read = Some(&summary);
            self.authz
                .recheck(&caller, caller.seen, ops, bucket, key, asked_version, read)
                .await?;
            // The version keeps its owner: the ACL is built for it (with
            // ACLs disabled, the bucket's owner owns it).
            let stored = match settings.ownership.acls_enabled() {
                true => summary
                    .acl()
                    .map_err(|e| s3_error!(InternalError, "reading the object's ACL: {e}"))?,
                false => None,
            };
            let owner = stored
                .as_ref()
                .map_or(settings.owner_id.as_str(), |a| &a.owner);
            let acl = self
                .build_acl(&asked, owner, &settings.owner_id)?
                .ok_or_else(missing_acl)?;
            check_settable(&settings, &acl)?;
            let set = self
                .gw
                .metadata()
                .set_object_acl(
                    &caller.writer(),
                    &input.bucket,
                    &input.key,
                    selector,
                    &acl,
                    summary.generation,
                )
                .await;
            match set {
                Err(shardgate_meta::MetaError::Changed) => continue,
                other => {
                    other.or_s3()?;
                    return Ok(S3Response::new(PutObjectAclOutput {
                        request_charged: None,
                    }));
                }
            }
        }
        Err(s3_error!(
            OperationAborted,
            "A conflicting operation on this object is in progress. Please try again."
        ))
    }

    /// The summary of the version `selector` names: NoSuchKey when there
    /// is none or the current one is a delete marker, MethodNotAllowed for
    /// a delete marker named by its id.
    async fn live_version(
        &self,
        bucket: &str,
        key: &str,
        selector: VersionSelector,
    ) -> S3Result<ObjectSummary> {
        let latest = matches!(selector, VersionSelector::Latest);
        let row = self
            .gw
            .metadata()
            .object_version(bucket, key, selector)
            .await
            .or_s3()?;
        match row {
            Some(row) if !row.summary.delete_marker => Ok(row.summary),
            Some(_) if !latest => Err(s3_error!(
                MethodNotAllowed,
                "The specified method is not allowed against this resource: the version is a delete marker."
            )),
            _ if latest => Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
            _ => Err(s3_error!(
                NoSuchVersion,
                "The specified version does not exist."
            )),
        }
    }

    pub(super) async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        let record = self.bucket_record(&req.input.bucket).await?;
        let ownership = record
            .ownership()
            .map_err(|e| s3_error!(InternalError, "reading the bucket's ownership: {e}"))?
            .ok_or_else(|| {
                s3_error!(
                    OwnershipControlsNotFoundError,
                    "The bucket ownership controls were not found"
                )
            })?;
        Ok(S3Response::new(GetBucketOwnershipControlsOutput {
            ownership_controls: Some(OwnershipControls {
                rules: vec![OwnershipControlsRule {
                    object_ownership: ObjectOwnership::from(ownership.s3().to_string()),
                }],
            }),
        }))
    }

    pub(super) async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let rules = &req.input.ownership_controls.rules;
        let [rule] = rules.as_slice() else {
            return Err(s3_error!(
                MalformedXML,
                "OwnershipControls holds exactly one Rule"
            ));
        };
        let ownership = Ownership::from_s3(rule.object_ownership.as_str()).ok_or_else(|| {
            s3_error!(
                MalformedXML,
                "ObjectOwnership is one of BucketOwnerEnforced, BucketOwnerPreferred, ObjectWriter"
            )
        })?;
        self.gw
            .metadata()
            .set_bucket_access(
                &caller.writer(),
                &req.input.bucket,
                &BucketAccess::Ownership(Some(ownership)),
            )
            .await
            .or_s3()?;
        Ok(S3Response::new(PutBucketOwnershipControlsOutput {}))
    }

    pub(super) async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        let caller = Caller::of(&req.extensions)?;
        self.gw
            .metadata()
            .set_bucket_access(
                &caller.writer(),
                &req.input.bucket,
                &BucketAccess::Ownership(None),
            )
            .await
            .or_s3()?;
        Ok(S3Response::new(DeleteBucketOwnershipControlsOutput {}))
    }
}

fn missing_acl() -> S3Error {
    s3_error!(
        MissingSecurityHeader,
        "Your request was missing a required header: x-amz-acl, x-amz-grant-* or an AccessControlPolicy body"
    )
}

/// Who owns each entry of a listing (S3 shows it in ListObjects,
/// ListObjectVersions, and ListObjectsV2 with FetchOwner).
pub(super) struct ListedOwners<'a> {
    service: &'a ShardgateS3,
    /// Whether display names are shown (to a signed requester).
    names: bool,
    bucket_owner: String,
    /// BucketOwnerEnforced: the bucket's owner owns everything.
    enforced: bool,
    known: HashMap<String, Owner>,
}

impl ListedOwners<'_> {
    /// The bucket's owner.
    pub fn bucket_owner(&mut self) -> Owner {
        let id = self.bucket_owner.clone();
        self.owner(&id)
    }

    /// The owner of the version `summary` describes.
    pub fn of(&mut self, summary: &ObjectSummary) -> Owner {
        let stored = match self.enforced {
            true => None,
            false => summary.acl().ok().flatten().map(|a| a.owner),
        };
        let id = stored.unwrap_or_else(|| self.bucket_owner.clone());
        self.owner(&id)
    }

    /// The requester with canonical id `id`.
    pub fn named(&mut self, id: &str) -> Owner {
        self.owner(id)
    }

    fn owner(&mut self, id: &str) -> Owner {
        if let Some(o) = self.known.get(id) {
            return o.clone();
        }
        let o = self.service.owner_of(id, self.names);
        self.known.insert(id.to_string(), o.clone());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_authz::acl::{ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY};

    const GROUPS: [&str; 3] = [ALL_USERS, AUTHENTICATED_USERS, LOG_DELIVERY];

    fn policy(owner: Option<&str>, grants: Vec<Grant>) -> AccessControlPolicy {
        AccessControlPolicy {
            grants: Some(grants),
            owner: owner.map(|id| Owner {
                display_name: None,
                id: Some(id.into()),
            }),
        }
    }

    fn grant(type_: &'static str, value: &str, permission: &str) -> Grant {
        let mut grantee = Grantee {
            display_name: None,
            email_address: None,
            id: None,
            type_: Type::from_static(type_),
            uri: None,
        };
        match type_ {
            Type::CANONICAL_USER => grantee.id = Some(value.into()),
            Type::GROUP => grantee.uri = Some(value.into()),
            _ => grantee.email_address = Some(value.into()),
        }
        Grant {
            grantee: Some(grantee),
            permission: Some(Permission::from(permission.to_string())),
        }
    }

    #[test]
    fn an_xml_acl_keeps_its_grants_and_refuses_what_s3_refuses() {
        let body = policy(
            Some("me"),
            GROUPS
                .iter()
                .map(|g| grant(Type::GROUP, g, "READ"))
                .chain([grant(Type::CANONICAL_USER, "me", "FULL_CONTROL")])
                .collect(),
        );
        let acl = body_acl(&body, "me").unwrap();
        assert_eq!(acl.grants.len(), 4);
        assert!(acl.is_public());
        let code = |r: S3Result<Acl>| r.unwrap_err().code().as_str().to_string();
        assert_eq!(
            code(body_acl(&policy(Some("you"), vec![]), "me")),
            "AccessDenied"
        );
        assert_eq!(
            code(body_acl(
                &policy(None, vec![grant(Type::GROUP, ALL_USERS, "READ_ALL")]),
                "me"
            )),
            "MalformedACLError"
        );
        assert_eq!(
            code(body_acl(
                &policy(
                    None,
                    vec![grant(Type::AMAZON_CUSTOMER_BY_EMAIL, "a@b.c", "READ")]
                ),
                "me"
            )),
            "UnresolvableGrantByEmailAddress"
        );
    }
}
