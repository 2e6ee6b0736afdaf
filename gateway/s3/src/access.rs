//! Who may do what: every request, signed or not, is decided here before
//! its body is read, by [`shardgate_authz::authorize`] over the bucket's
//! owner, policy and Public Access Block.
//!
//! One gateway is one account. The configured access key is its root:
//! every bucket is its to use unless the bucket's policy denies it (and
//! even then it may manage the policy). Each user an admin created
//! ([`shardgate_node::User`]) owns the buckets it creates; another user's
//! bucket, or an unsigned request, gets only what that bucket's policy
//! allows. Buckets from before users existed belong to the configured key.
//!
//! The order of answers is S3's: a signed request for a bucket that does
//! not exist gets the operation's own NoSuchBucket; an unsigned one gets
//! AccessDenied, which reveals nothing. A refused request never reaches a
//! handler.
//!
//! A bucket deleted and created again while a body streams must not
//! receive the write: each write carries a [`Writer`] that its transaction
//! checks again (the owner by name, or, for someone the policy let in, the
//! bucket's creation time as it was when the policy was read). Copies
//! check their source here too ([`Authorizer::check_read`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};
use shardgate_authz::{
    Acl, Action, Context, Denial, Ownership, Policy, PublicAccessBlock, Requester, Subject, action,
};
use shardgate_meta::{BucketRecord, ObjectSummary, VersionSelector, Writer, public_access};
use shardgate_node::{Gateway, admin_canonical_id, canonical_id};

/// The connection a request came on, for the policy's `aws:SourceIp` and
/// `aws:SecureTransport` (the server puts it in the request).
#[derive(Clone, Copy, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub secure: bool,
}

/// Who sent a request and how its writes are checked, as the handlers see
/// it (in its extensions).
#[derive(Clone, Debug)]
pub struct Caller {
    pub requester: Requester,
    /// The user's name (`None`: the configured key, or unsigned).
    pub name: Option<String>,
    writer: Writer,
    /// The request's condition keys, for the checks a handler makes itself
    /// (a copy's source).
    pub context: Arc<RequestContext>,
    /// The version the decision read, if it read the object (its ACL, its
    /// owner, its tags): a handler that reads another checks it again
    /// ([`Authorizer::recheck`]).
    pub seen: Seen,
    /// A browser POST upload: its key is in the form, so the check let
    /// it through on the bucket alone and its handler decides the key
    /// ([`Authorizer::check_write`]).
    pub form_upload: bool,
}

/// What a decision read of an object: nothing (`None`), or the generation
/// of the version it found (`Some(None)`: there was none).
pub type Seen = Option<Option<u64>>;

/// A request's condition keys, built the first time a decision needs them:
/// only a bucket policy reads them, and most buckets have none (building
/// them for every request was 5-7% of a 4 KiB GET's CPU). What they are
/// built from is kept as the request had it, the time included. Its
/// `Debug` leaves out the URI (a presigned URL's signature) and headers.
pub struct RequestContext {
    requester: Requester,
    name: Option<String>,
    uri: http::Uri,
    /// The request's headers that condition keys come from
    /// ([`HEADER_KEYS`], [`GRANT_HEADERS`], [`TAGGING`]), alone.
    headers: http::HeaderMap,
    /// Whether an `Authorization` header was signed the version 2 way.
    v2_header: bool,
    client: Option<Client>,
    at: time::OffsetDateTime,
    built: OnceLock<Context>,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("requester", &self.requester)
            .field("name", &self.name)
            .field("client", &self.client)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl RequestContext {
    pub fn new(
        requester: &Requester,
        name: Option<&str>,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        client: Option<Client>,
    ) -> Self {
        // One pass over the request's few headers: looking each kept name
        // up by text would parse all sixteen names every time.
        let mut kept = http::HeaderMap::new();
        let read = |name: &str| {
            name == TAGGING
                || HEADER_KEYS
                    .iter()
                    .chain(&GRANT_HEADERS)
                    .any(|(h, _)| *h == name)
        };
        for (name, value) in headers {
            if read(name.as_str()) {
                kept.append(name.clone(), value.clone());
            }
        }
        Self {
            requester: requester.clone(),
            name: name.map(str::to_owned),
            uri: uri.clone(),
            headers: kept,
            v2_header: headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("AWS ")),
            client,
            at: time::OffsetDateTime::now_utc(),
            built: OnceLock::new(),
        }
    }

    /// The condition keys.
    pub fn get(&self) -> &Context {
        self.built.get_or_init(|| context_of(self))
    }
}

/// What a decision reads its condition keys from.
#[derive(Clone, Copy)]
enum Conditions<'a> {
    /// The request's, built if a policy asks.
    Request(&'a RequestContext),
    /// Built by the caller (a form upload's fields).
    Built(&'a Context),
}

impl Conditions<'_> {
    fn get(&self) -> &Context {
        match self {
            Conditions::Request(r) => r.get(),
            Conditions::Built(c) => c,
        }
    }
}

/// The condition keys a decision without a policy is given: nothing reads
/// them then.
static NO_CONDITIONS: LazyLock<Context> = LazyLock::new(Context::default);

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
        self.name.as_deref()
    }

    /// Who writes, for the check in a write's transaction.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.requester, Requester::Admin { .. })
    }

    /// Whether the caller owns a bucket with this record (the root owns
    /// them all).
    pub fn owns(&self, record: &BucketRecord) -> bool {
        match &self.requester {
            Requester::Admin { .. } => true,
            Requester::User { name, .. } => {
                record.owner().ok().flatten().as_deref() == Some(name.as_str())
            }
            Requester::Anonymous => false,
        }
    }
}

/// The S3 action of an operation (`versioned`: the request names a
/// version). `None`: an operation only the owners may use.
fn action_of(op: &str, versioned: bool) -> Option<&'static Action> {
    let name = match (op, versioned) {
        ("GetObject" | "HeadObject", false) => "s3:GetObject",
        ("GetObject" | "HeadObject", true) => "s3:GetObjectVersion",
        ("GetObjectTorrent", _) => "s3:GetObjectTorrent",
        ("GetObjectAttributes", false) => "s3:GetObjectAttributes",
        ("GetObjectAttributes", true) => "s3:GetObjectVersionAttributes",
        (
            "PutObject"
            | "CopyObject"
            | "CreateMultipartUpload"
            | "UploadPart"
            | "UploadPartCopy"
            | "CompleteMultipartUpload",
            _,
        ) => "s3:PutObject",
        ("AbortMultipartUpload", _) => "s3:AbortMultipartUpload",
        ("ListParts", _) => "s3:ListMultipartUploadParts",
        ("DeleteObject", false) | ("DeleteObjects", _) => "s3:DeleteObject",
        ("DeleteObject", true) => "s3:DeleteObjectVersion",
        ("GetObjectTagging", false) => "s3:GetObjectTagging",
        ("GetObjectTagging", true) => "s3:GetObjectVersionTagging",
        ("PutObjectTagging", false) => "s3:PutObjectTagging",
        ("PutObjectTagging", true) => "s3:PutObjectVersionTagging",
        ("DeleteObjectTagging", false) => "s3:DeleteObjectTagging",
        ("DeleteObjectTagging", true) => "s3:DeleteObjectVersionTagging",
        ("GetObjectAcl", false) => "s3:GetObjectAcl",
        ("GetObjectAcl", true) => "s3:GetObjectVersionAcl",
        ("PutObjectAcl", false) => "s3:PutObjectAcl",
        ("PutObjectAcl", true) => "s3:PutObjectVersionAcl",
        ("BypassGovernanceRetention", _) => "s3:BypassGovernanceRetention",
        ("GetObjectRetention", _) => "s3:GetObjectRetention",
        ("PutObjectRetention", _) => "s3:PutObjectRetention",
        ("GetObjectLegalHold", _) => "s3:GetObjectLegalHold",
        ("PutObjectLegalHold", _) => "s3:PutObjectLegalHold",
        ("ListObjects" | "ListObjectsV2" | "HeadBucket", _) => "s3:ListBucket",
        ("ListObjectVersions", _) => "s3:ListBucketVersions",
        ("ListMultipartUploads", _) => "s3:ListBucketMultipartUploads",
        ("DeleteBucket", _) => "s3:DeleteBucket",
        ("GetBucketLocation", _) => "s3:GetBucketLocation",
        ("GetBucketAcl", _) => "s3:GetBucketAcl",
        ("PutBucketAcl", _) => "s3:PutBucketAcl",
        ("GetBucketPolicy", _) => "s3:GetBucketPolicy",
        ("PutBucketPolicy", _) => "s3:PutBucketPolicy",
        ("DeleteBucketPolicy", _) => "s3:DeleteBucketPolicy",
        ("GetBucketPolicyStatus", _) => "s3:GetBucketPolicyStatus",
        ("GetPublicAccessBlock", _) => "s3:GetBucketPublicAccessBlock",
        ("PutPublicAccessBlock" | "DeletePublicAccessBlock", _) => "s3:PutBucketPublicAccessBlock",
        ("GetBucketOwnershipControls", _) => "s3:GetBucketOwnershipControls",
        ("PutBucketOwnershipControls" | "DeleteBucketOwnershipControls", _) => {
            "s3:PutBucketOwnershipControls"
        }
        ("GetBucketVersioning", _) => "s3:GetBucketVersioning",
        ("PutBucketVersioning", _) => "s3:PutBucketVersioning",
        ("GetBucketTagging", _) => "s3:GetBucketTagging",
        ("PutBucketTagging" | "DeleteBucketTagging", _) => "s3:PutBucketTagging",
        ("GetBucketCors", _) => "s3:GetBucketCORS",
        ("PutBucketCors" | "DeleteBucketCors", _) => "s3:PutBucketCORS",
        ("GetObjectLockConfiguration", _) => "s3:GetBucketObjectLockConfiguration",
        ("PutObjectLockConfiguration", _) => "s3:PutBucketObjectLockConfiguration",
        ("GetBucketLifecycleConfiguration", _) => "s3:GetLifecycleConfiguration",
        ("PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle", _) => {
            "s3:PutLifecycleConfiguration"
        }
        ("GetBucketEncryption", _) => "s3:GetEncryptionConfiguration",
        ("PutBucketEncryption" | "DeleteBucketEncryption", _) => "s3:PutEncryptionConfiguration",
        _ => return None,
    };
    action::lookup(name)
}

/// Decides requests: the bucket's settings read from the metadata, its
/// policy parsed once per text and kept.
pub struct Authorizer {
    gateway: Arc<Gateway>,
    admin_key: String,
    admin_id: String,
    buckets: Mutex<HashMap<String, Known>>,
}

/// The access check keeps at most this many buckets in memory (then starts
/// over).
const MAX_KNOWN_BUCKETS: usize = 10_000;

/// A bucket as the access check last read it.
struct Known {
    /// [`shardgate_meta::Buckets::bucket_changes`] before the read.
    seen: u64,
    view: Option<Arc<BucketView>>,
}

/// What deciding a request needs of its bucket.
struct BucketView {
    owner_id: String,
    incarnation: u64,
    policy: Option<Policy>,
    /// A stored policy this release cannot read.
    broken_policy: bool,
    block: PublicAccessBlock,
    /// The bucket's ACL (the default, its owner alone, when none is set).
    acl: Acl,
    ownership: Ownership,
}

/// What the handlers that set or show ACLs need of a bucket.
#[derive(Clone, Debug)]
pub struct BucketAcl {
    /// The bucket owner's canonical id.
    pub owner_id: String,
    pub acl: Acl,
    pub ownership: Ownership,
    pub block: PublicAccessBlock,
}

/// What a decision on an existing object needs of it, read only when a
/// decision needs it (a requester who is not the bucket's owner, and no
/// policy that allows).
#[derive(Default)]
struct ObjectFacts {
    /// The version's generation (`None`: no version, or a delete marker).
    generation: Option<u64>,
    owner: Option<String>,
    acl: Option<Acl>,
    tags: Vec<(String, String)>,
}

impl ObjectFacts {
    /// What a decision needs of the version `summary` describes.
    fn of(summary: Option<&ObjectSummary>) -> S3Result<Self> {
        let Some(summary) = summary.filter(|s| !s.delete_marker) else {
            return Ok(ObjectFacts::default());
        };
        let internal = |e| s3_error!(InternalError, "reading the object's state: {e}");
        let acl = summary.acl().map_err(internal)?;
        Ok(ObjectFacts {
            generation: Some(summary.generation),
            owner: acl.as_ref().map(|a| a.owner.clone()),
            acl,
            tags: summary.tags().map_err(internal)?.into_iter().collect(),
        })
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("admin_id", &self.admin_id)
            .finish_non_exhaustive()
    }
}

/// What a decision found: how the request's writes are checked, and the
/// version it read.
struct Decided {
    writer: Writer,
    seen: Seen,
}

impl Authorizer {
    pub fn new(gateway: Arc<Gateway>, admin_key: String) -> Self {
        Authorizer {
            gateway,
            admin_id: admin_canonical_id(&admin_key),
            admin_key,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The root's canonical id.
    pub fn admin_id(&self) -> &str {
        &self.admin_id
    }

    /// The canonical id of a bucket's owner (`None`: the root).
    pub fn owner_id(&self, owner: Option<&str>) -> String {
        match owner {
            None => self.admin_id.clone(),
            Some(name) => match self.gateway.user_named(name) {
                Some(u) => u.canonical_id(),
                None => canonical_id(name, 0),
            },
        }
    }

    /// What the access check needs of `bucket`, from memory while no
    /// bucket record changed since it was read (`None`: no such bucket).
    async fn bucket(&self, bucket: &str) -> S3Result<Option<Arc<BucketView>>> {
        let metadata = self.gateway.metadata();
        // Read before the record: a change committed after this read
        // makes the next look read the record again.
        let seen = metadata.bucket_changes();
        if let Ok(cache) = self.buckets.lock()
            && let Some(known) = cache.get(bucket).filter(|k| k.seen == seen)
        {
            return Ok(known.view.clone());
        }
        let record = metadata
            .bucket(bucket)
            .await
            .map_err(|e| s3_error!(InternalError, "reading the bucket: {e}"))?;
        let view = match record {
            None => None,
            Some(record) => Some(Arc::new(self.view(bucket, record)?)),
        };
        if let Ok(mut cache) = self.buckets.lock() {
            if cache.len() >= MAX_KNOWN_BUCKETS {
                cache.clear();
            }
            cache.insert(
                bucket.to_string(),
                Known {
                    seen,
                    view: view.clone(),
                },
            );
        }
        Ok(view)
    }

    fn view(&self, bucket: &str, record: BucketRecord) -> S3Result<BucketView> {
        let internal = |what: &str, e: shardgate_meta::MetaError| {
            s3_error!(InternalError, "reading the bucket's {what}: {e}")
        };
        let owner = record.owner().map_err(|e| internal("owner", e))?;
        // It was checked when it was set; should a later release read it
        // otherwise, the bucket fails closed (`broken_policy`).
        let (policy, broken_policy) = match record.policy().map_err(|e| internal("policy", e))? {
            Some(text) => match Policy::parse(&text, bucket) {
                Ok(p) => (Some(p), false),
                Err(e) => {
                    tracing::error!(bucket, error = %e, "the stored bucket policy no longer parses");
                    (None, true)
                }
            },
            None => (None, false),
        };
        let flags = record
            .public_access_block()
            .map_err(|e| internal("public access block", e))?;
        let owner_id = self.owner_id(owner.as_deref());
        let acl = record
            .acl()
            .map_err(|e| internal("acl", e))?
            .unwrap_or_else(|| Acl::private(&owner_id));
        let ownership = record
            .ownership()
            .map_err(|e| internal("object ownership", e))?
            .unwrap_or(Ownership::ObjectWriter);
        Ok(BucketView {
            acl,
            ownership,
            owner_id,
            incarnation: record
                .incarnation()
                .map_err(|e| internal("incarnation", e))?,
            policy,
            broken_policy,
            block: block_of(flags),
        })
    }

    /// The owner, ACL, ownership and Public Access Block of `bucket`, for
    /// the handlers that set or show ACLs (NoSuchBucket when there is none).
    pub async fn bucket_acl(&self, bucket: &str) -> S3Result<BucketAcl> {
        let view = self
            .bucket(bucket)
            .await?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))?;
        Ok(BucketAcl {
            owner_id: view.owner_id.clone(),
            acl: view.acl.clone(),
            ownership: view.ownership,
            block: view.block,
        })
    }

    /// Whether `id` is the canonical id of the root or of a user (a grant
    /// may name only those).
    pub fn known_id(&self, id: &str) -> bool {
        id == self.admin_id || self.gateway.user_by_canonical_id(id).is_some()
    }

    /// The display name of the requester with canonical id `id`: a user's
    /// name, `shardgate` for the root.
    pub fn display_name(&self, id: &str) -> Option<String> {
        if id == self.admin_id {
            return Some("shardgate".into());
        }
        self.gateway.user_by_canonical_id(id).map(|u| u.name)
    }

    /// The owner, ACL and tags of the version `version` names of `key`
    /// (nothing for a missing one, or a delete marker).
    async fn object_facts(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<ObjectFacts> {
        // A malformed version id: the handler answers it.
        let Ok(selector) = VersionSelector::parse(version) else {
            return Ok(ObjectFacts::default());
        };
        let row = match self
            .gateway
            .metadata()
            .object_version(bucket, key, selector)
            .await
        {
            Ok(row) => row,
            Err(shardgate_meta::MetaError::NoSuchBucket) => None,
            Err(e) => return Err(s3_error!(InternalError, "reading the object: {e}")),
        };
        ObjectFacts::of(row.as_ref().map(|r| &r.summary))
    }

    /// `AccessDenied` unless `ops` on `key` are still allowed for the
    /// version a handler read (`summary`; `None`: none), when the decision
    /// `seen` read another one (a version written between the check and
    /// the handler's read is decided again, on what the handler serves).
    #[allow(clippy::too_many_arguments)]
    pub async fn recheck(
        &self,
        caller: &Caller,
        seen: Seen,
        ops: &[&str],
        bucket: &str,
        key: &str,
        version: Option<&str>,
        summary: Option<&ObjectSummary>,
    ) -> S3Result<()> {
        let Some(seen) = seen else {
            return Ok(());
        };
        let now = summary.filter(|s| !s.delete_marker).map(|s| s.generation);
        if seen == now {
            return Ok(());
        }
        let facts = ObjectFacts::of(summary)?;
        self.decide_for(caller, ops, bucket, key, version, Some(facts))
            .await
            .map(|_| ())
    }

    /// [`Authorizer::decide`] of `ops` on `key` for the requester of
    /// `caller`, on its request's condition keys.
    async fn decide_for(
        &self,
        caller: &Caller,
        ops: &[&str],
        bucket: &str,
        key: &str,
        version: Option<&str>,
        known: Option<ObjectFacts>,
    ) -> S3Result<Decided> {
        let conditions = Conditions::Request(&caller.context);
        self.decide(
            &caller.requester,
            ops,
            bucket,
            Some(key),
            version,
            conditions,
            known,
        )
        .await
    }

    /// Decides `ops` on `bucket` (and `key`, at `version`) for `requester`:
    /// each must be allowed (none: the bucket's existence alone, for a
    /// handler that decides per key).
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        requester: &Requester,
        ops: &[&str],
        bucket: &str,
        key: Option<&str>,
        version: Option<&str>,
        conditions: Conditions<'_>,
        known: Option<ObjectFacts>,
    ) -> S3Result<Decided> {
        let denied = || s3_error!(AccessDenied, "Access Denied");
        let Some(view) = self.bucket(bucket).await? else {
            // The operation answers NoSuchBucket to a signed request; an
            // unsigned one learns nothing.
            return match requester {
                Requester::Anonymous => Err(denied()),
                Requester::Admin { .. } => Ok(Decided {
                    writer: Writer::Admin,
                    seen: None,
                }),
                // Should the bucket appear meanwhile, it must be this
                // user's own to be written.
                Requester::User { name, .. } => Ok(Decided {
                    writer: Writer::User(name.clone()),
                    seen: None,
                }),
            };
        };
        let admin = matches!(requester, Requester::Admin { .. });
        if view.broken_policy && !(admin && ops.iter().all(|op| op.ends_with("BucketPolicy"))) {
            // Fails closed; the root may still replace or delete it.
            return Err(s3_error!(
                InternalError,
                "The bucket's stored policy no longer parses: replace or delete it"
            ));
        }
        let versioned = version.is_some_and(|v| !v.is_empty());
        // Only a policy reads condition keys.
        let context = match view.policy {
            Some(_) => conditions.get(),
            None => &*NO_CONDITIONS,
        };
        let owner_id = &view.owner_id;
        let subject = Subject {
            bucket_owner: owner_id,
            object_owner: None,
            bucket_acl: Some(&view.acl),
            object_acl: None,
            policy: view.policy.as_ref(),
            block: view.block,
            acls_enabled: view.ownership.acls_enabled(),
        };
        let owns = match requester {
            Requester::Admin { .. } => true,
            Requester::User { canonical_id, .. } => canonical_id == owner_id,
            Requester::Anonymous => false,
        };
        // A policy testing an object's tags needs them before it decides.
        let tests_tags = view
            .policy
            .as_ref()
            .is_some_and(|p| p.tests_key("s3:ExistingObjectTag/"));
        let mut object: Option<ObjectFacts> = known;
        for op in ops {
            let Some(action) = action_of(op, versioned) else {
                // Not an action a policy can grant: the owners' alone.
                if owns {
                    continue;
                }
                return Err(denied());
            };
            // A bucket's configuration and its deletion are never an
            // unsigned requester's, whatever a policy says.
            let manages = action.kind == shardgate_authz::Kind::Bucket
                && (action.name.starts_with("s3:Put") || action.name.starts_with("s3:Delete"));
            if manages && *requester == Requester::Anonymous {
                return Err(denied());
            }
            let on_object = action.kind == shardgate_authz::Kind::Object;
            let resource = match (on_object, key) {
                (true, Some(k)) => format!("arn:aws:s3:::{bucket}/{k}"),
                (true, None) => format!("arn:aws:s3:::{bucket}/*"),
                (false, _) => format!("arn:aws:s3:::{bucket}"),
            };
            let key = key.filter(|_| on_object);
            let mut tagged = None;
            if let Some(key) = key.filter(|_| tests_tags) {
                if object.is_none() {
                    object = Some(self.object_facts(bucket, key, version).await?);
                }
                let mut c = context.clone();
                for (k, v) in object.iter().flat_map(|o| &o.tags) {
                    c.insert(&format!("s3:ExistingObjectTag/{k}"), v.clone());
                }
                tagged = Some(c);
            }
            let context = tagged.as_ref().unwrap_or(context);
            let mut decision = shardgate_authz::authorize(
                requester,
                action,
                &resource,
                context,
                &with_object(&subject, object.as_ref()),
            );
            // The object's own ACL and owner, read only when they could
            // allow what nothing else did.
            let object_acl = matches!(action.acl, Some((action::AclOf::Object, _)));
            if decision == Err(Denial::NotAllowed)
                && object_acl
                && subject.acls_enabled
                && object.is_none()
                && let Some(key) = key
            {
                let facts = self.object_facts(bucket, key, version).await?;
                decision = shardgate_authz::authorize(
                    requester,
                    action,
                    &resource,
                    context,
                    &with_object(&subject, Some(&facts)),
                );
                object = Some(facts);
            }
            if let Err(why) = decision {
                tracing::debug!(?why, op, bucket, "refused");
                return Err(denied());
            }
        }
        Ok(Decided {
            writer: writer_for(requester, &view),
            seen: object.map(|o| o.generation),
        })
    }

    /// `AccessDenied` unless `caller` may read `key` of `bucket` (a copy's
    /// source); what the decision read, for [`Authorizer::recheck`].
    pub async fn check_read(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> S3Result<Seen> {
        let ops = &["GetObject"];
        let decided = self
            .decide_for(caller, ops, bucket, key, version, None)
            .await?;
        Ok(decided.seen)
    }

    /// `AccessDenied` unless `caller` may delete `key` (its `version`, when
    /// one is named) of `bucket`, overriding governance retention when
    /// `bypass`: DeleteObjects decides each key.
    pub async fn check_delete(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        bypass: bool,
    ) -> S3Result<()> {
        let ops: &[&str] = match bypass {
            true => &["DeleteObject", "BypassGovernanceRetention"],
            false => &["DeleteObject"],
        };
        self.decide_for(caller, ops, bucket, key, version, None)
            .await
            .map(|_| ())
    }

    /// `AccessDenied` unless `caller` may make the browser POST upload
    /// `input` (its key is in the form, known only to its handler): the
    /// actions its fields need, as the same headers on a PUT would, decided
    /// with the form's fields as condition keys.
    pub async fn check_form_upload(
        &self,
        caller: &Caller,
        input: &s3s::dto::PutObjectInput,
    ) -> S3Result<()> {
        let mut ops = vec!["PutObject"];
        let mut context = caller.context.get().clone();
        // The request's own headers are not what the form signed, nor what
        // is stored: only the form's fields speak for the object.
        context.retain(|key| {
            !(key.starts_with("s3:x-amz-")
                || key.starts_with("s3:object-lock-")
                || key.starts_with("s3:requestobjecttag"))
        });
        context.set("s3:authType", "POST");
        if let Some(acl) = &input.acl {
            context.set("s3:x-amz-acl", acl.as_str());
            if canned_grants_others(acl.as_str()) {
                ops.push("PutObjectAcl");
            }
        }
        let grants = [
            &input.grant_read,
            &input.grant_read_acp,
            &input.grant_write_acp,
            &input.grant_full_control,
        ];
        let keys = [
            "s3:x-amz-grant-read",
            "s3:x-amz-grant-read-acp",
            "s3:x-amz-grant-write-acp",
            "s3:x-amz-grant-full-control",
        ];
        for (grant, key) in grants.into_iter().zip(keys) {
            if let Some(value) = grant {
                context.set(key, value.as_str());
                ops.push("PutObjectAcl");
            }
        }
        if let Some(mode) = &input.object_lock_mode {
            context.set("s3:object-lock-mode", mode.as_str());
        }
        if input.object_lock_mode.is_some() || input.object_lock_retain_until_date.is_some() {
            ops.push("PutObjectRetention");
        }
        if let Some(hold) = &input.object_lock_legal_hold_status {
            context.set("s3:object-lock-legal-hold", hold.as_str());
            ops.push("PutObjectLegalHold");
        }
        if let Some(tagging) = &input.tagging {
            ops.push("PutObjectTagging");
            for (k, v) in form_urlencoded::parse(tagging.as_bytes()) {
                context.insert("s3:RequestObjectTagKeys", k.to_string());
                context.insert(&format!("s3:RequestObjectTag/{k}"), v.to_string());
            }
        }
        if let Some(sse) = &input.server_side_encryption {
            context.set("s3:x-amz-server-side-encryption", sse.as_str());
        }
        if let Some(class) = &input.storage_class {
            context.set("s3:x-amz-storage-class", class.as_str());
        }
        ops.sort_unstable();
        ops.dedup();
        let (bucket, key) = (&input.bucket, &input.key);
        self.decide(
            &caller.requester,
            &ops,
            bucket,
            Some(key),
            None,
            Conditions::Built(&context),
            None,
        )
        .await
        .map(|_| ())
    }

    /// The requester a request's credentials name.
    fn requester(&self, access_key: Option<&str>) -> S3Result<(Requester, Option<String>)> {
        match access_key {
            None => Ok((Requester::Anonymous, None)),
            Some(k) if k == self.admin_key => Ok((
                Requester::Admin {
                    canonical_id: self.admin_id.clone(),
                },
                None,
            )),
            Some(k) => match self.gateway.user(k) {
                Some(user) => Ok((
                    Requester::User {
                        canonical_id: user.canonical_id(),
                        name: user.name.clone(),
                    },
                    Some(user.name),
                )),
                // Deleted since its signature was checked.
                None => Err(s3_error!(
                    InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records."
                )),
            },
        }
    }
}

/// `subject` with what is known of the object.
fn with_object<'a>(subject: &Subject<'a>, object: Option<&'a ObjectFacts>) -> Subject<'a> {
    Subject {
        object_owner: object.and_then(|o| o.owner.as_deref()),
        object_acl: object.and_then(|o| o.acl.as_ref()),
        ..*subject
    }
}

/// How a write of `requester` into the bucket is checked in its
/// transaction.
fn writer_for(requester: &Requester, view: &BucketView) -> Writer {
    match requester {
        Requester::Admin { .. } => Writer::Admin,
        Requester::User { name, canonical_id } if *canonical_id == view.owner_id => {
            Writer::User(name.clone())
        }
        _ => Writer::Granted {
            bucket_incarnation: view.incarnation,
        },
    }
}

fn block_of(flags: u8) -> PublicAccessBlock {
    PublicAccessBlock {
        block_public_acls: flags & public_access::BLOCK_PUBLIC_ACLS != 0,
        ignore_public_acls: flags & public_access::IGNORE_PUBLIC_ACLS != 0,
        block_public_policy: flags & public_access::BLOCK_PUBLIC_POLICY != 0,
        restrict_public_buckets: flags & public_access::RESTRICT_PUBLIC_BUCKETS != 0,
    }
}

/// The condition keys of a request: where it came from, how it was signed,
/// and the S3 keys its operation has.
fn context_of(request: &RequestContext) -> Context {
    let RequestContext {
        requester,
        name,
        uri,
        headers,
        v2_header,
        client,
        at: now,
        ..
    } = request;
    let (name, client) = (name.as_deref(), *client);
    let mut c = Context::default();
    if let Some(client) = client {
        c.insert("aws:SourceIp", client.addr.ip().to_string());
        c.insert("aws:SecureTransport", client.secure.to_string());
    }
    if let Ok(t) = now.format(&time::format_description::well_known::Rfc3339) {
        c.insert("aws:CurrentTime", t);
    }
    c.insert("aws:EpochTime", now.unix_timestamp().to_string());
    c.insert(
        "aws:PrincipalType",
        match requester {
            Requester::Anonymous => "Anonymous",
            Requester::Admin { .. } => "Account",
            Requester::User { .. } => "User",
        },
    );
    if let Some(name) = name {
        c.insert("aws:username", name);
    }
    if let Some(id) = requester.canonical_id() {
        c.insert("aws:userid", id);
    }
    // Only headers of these tables are read: they are what a
    // RequestContext keeps.
    for (header, key) in HEADER_KEYS.iter().chain(&GRANT_HEADERS) {
        if let Some(v) = headers.get(*header).and_then(|v| v.to_str().ok()) {
            c.insert(key, v);
        }
    }
    if let Some(tagging) = headers.get(TAGGING).and_then(|v| v.to_str().ok()) {
        for (k, v) in form_urlencoded::parse(tagging.as_bytes()) {
            c.insert("s3:RequestObjectTagKeys", k.to_string());
            c.insert(&format!("s3:RequestObjectTag/{k}"), v.to_string());
        }
    }
    // One pass over the query: the keys conditions name, and how it was
    // signed.
    let mut presigned = false;
    let mut v2_query = false;
    for (k, v) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "prefix" => c.insert("s3:prefix", v.into_owned()),
            "delimiter" => c.insert("s3:delimiter", v.into_owned()),
            "max-keys" => c.insert("s3:max-keys", v.into_owned()),
            "versionId" => c.insert("s3:VersionId", v.into_owned()),
            "X-Amz-Signature" => {
                presigned = true;
                &mut c
            }
            "Signature" => {
                v2_query = true;
                &mut c
            }
            _ => &mut c,
        };
    }
    if !matches!(requester, Requester::Anonymous) {
        c.insert(
            "s3:authType",
            if presigned {
                "REST-QUERY-STRING"
            } else {
                "REST-HEADER"
            },
        );
        let v2 = *v2_header || v2_query;
        c.insert(
            "s3:signatureversion",
            if v2 { "AWS" } else { "AWS4-HMAC-SHA256" },
        );
    }
    c
}

/// The first value of `name` in `uri`'s query.
fn query_value(uri: &http::Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What an operation needs allowed: its own action, and those its headers
/// add (S3 asks `s3:PutObjectRetention` of a PUT that locks, and
/// `s3:BypassGovernanceRetention` of a request that overrides governance).
/// DeleteObjects needs nothing here: its handler decides each key.
fn ops_of<'a>(op: &'a str, headers: &http::HeaderMap) -> Vec<&'a str> {
    let has = |h: &str| headers.contains_key(h);
    let on = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let mut ops = Vec::new();
    match op {
        // Decided per key by the handler.
        "DeleteObjects" | "PostObject" => return ops,
        "GetObjectAttributes" => ops.extend(["GetObject", op]),
        "PutObject" | "CopyObject" | "CreateMultipartUpload" => {
            ops.push(op);
            if has("x-amz-object-lock-mode") || has("x-amz-object-lock-retain-until-date") {
                ops.push("PutObjectRetention");
            }
            if has("x-amz-object-lock-legal-hold") {
                ops.push("PutObjectLegalHold");
            }
            if has("x-amz-tagging") {
                ops.push("PutObjectTagging");
            }
            if grants_others(headers) {
                ops.push("PutObjectAcl");
            }
        }
        _ => ops.push(op),
    }
    if on("x-amz-bypass-governance-retention") {
        ops.push("BypassGovernanceRetention");
    }
    ops
}

/// Whether a write's ACL headers grant anyone besides the object's and the
/// bucket's owners: that needs `s3:PutObjectAcl` too, as in S3 (the
/// owners' own canned ACLs do not).
fn grants_others(headers: &http::HeaderMap) -> bool {
    let canned = headers
        .get("x-amz-acl")
        .map(|v| v.to_str().unwrap_or("unreadable"));
    canned.is_some_and(canned_grants_others)
        || GRANT_HEADERS.iter().any(|(h, _)| headers.contains_key(*h))
}

/// Whether canned ACL `name` grants anyone besides the owners.
fn canned_grants_others(name: &str) -> bool {
    !["private", "bucket-owner-read", "bucket-owner-full-control"].contains(&name)
}

/// The headers [`context_of`] reads (with [`GRANT_HEADERS`] and
/// [`TAGGING`]), and the condition key each sets.
const HEADER_KEYS: [(&str, &str); 10] = [
    ("user-agent", "aws:UserAgent"),
    ("referer", "aws:Referer"),
    ("x-amz-acl", "s3:x-amz-acl"),
    ("x-amz-copy-source", "s3:x-amz-copy-source"),
    ("x-amz-metadata-directive", "s3:x-amz-metadata-directive"),
    ("x-amz-content-sha256", "s3:x-amz-content-sha256"),
    (
        "x-amz-server-side-encryption",
        "s3:x-amz-server-side-encryption",
    ),
    ("x-amz-storage-class", "s3:x-amz-storage-class"),
    ("x-amz-object-lock-mode", "s3:object-lock-mode"),
    ("x-amz-object-lock-legal-hold", "s3:object-lock-legal-hold"),
];

/// The request's tags: `s3:RequestObjectTagKeys` and
/// `s3:RequestObjectTag/KEY`.
const TAGGING: &str = "x-amz-tagging";

/// The grant headers, and the condition key each sets.
const GRANT_HEADERS: [(&str, &str); 5] = [
    ("x-amz-grant-read", "s3:x-amz-grant-read"),
    ("x-amz-grant-write", "s3:x-amz-grant-write"),
    ("x-amz-grant-read-acp", "s3:x-amz-grant-read-acp"),
    ("x-amz-grant-write-acp", "s3:x-amz-grant-write-acp"),
    ("x-amz-grant-full-control", "s3:x-amz-grant-full-control"),
];

/// The access check s3s runs for every request, signed or not.
pub struct Access {
    pub authorizer: Arc<Authorizer>,
}

impl Access {
    /// Decides a request as the access check does, and says who made it:
    /// `op` (s3s's operation name) on `bucket` and `key` (at `version`, the
    /// request's `versionId`) for the holder of `access_key` (`None`: an
    /// unsigned request), whose signature has been verified.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(
        &self,
        access_key: Option<&str>,
        op: &str,
        bucket: Option<&str>,
        key: Option<&str>,
        version: Option<&str>,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        client: Option<Client>,
    ) -> S3Result<Caller> {
        let (requester, name) = self.authorizer.requester(access_key)?;
        let context = Arc::new(RequestContext::new(
            &requester,
            name.as_deref(),
            uri,
            headers,
            client,
        ));
        let decided = match bucket {
            Some(bucket) if op != "CreateBucket" => {
                let ops = ops_of(op, headers);
                self.authorizer
                    .decide(
                        &requester,
                        &ops,
                        bucket,
                        key,
                        version,
                        Conditions::Request(&context),
                        None,
                    )
                    .await?
            }
            // ListBuckets lists what the caller owns; a bucket's creation
            // needs a signature.
            _ => match &requester {
                Requester::Anonymous => {
                    return Err(s3_error!(
                        AccessDenied,
                        "Anonymous users cannot list or create buckets"
                    ));
                }
                Requester::Admin { .. } => Decided {
                    writer: Writer::Admin,
                    seen: None,
                },
                Requester::User { name, .. } => Decided {
                    writer: Writer::User(name.clone()),
                    seen: None,
                },
            },
        };
        Ok(Caller {
            requester,
            name,
            writer: decided.writer,
            context,
            seen: decided.seen,
            form_upload: op == "PostObject",
        })
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        let client = cx.extensions_mut().get::<Client>().copied();
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(&**bucket), None),
            S3Path::Object { bucket, key } => (Some(&**bucket), Some(&**key)),
        };
        let version = query_value(cx.uri(), "versionId");
        let caller = self
            .admit(
                access_key.as_deref(),
                op,
                bucket,
                key,
                version.as_deref(),
                cx.uri(),
                cx.headers(),
                client,
            )
            .await?;
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    /// Every key with its values, sorted.
    fn all_keys(c: &Context) -> Vec<(String, Vec<String>)> {
        let mut keys = Vec::new();
        c.clone().retain(|k| {
            keys.push(k.to_string());
            true
        });
        let mut all: Vec<_> = keys
            .into_iter()
            .map(|k| {
                let v = c.get(&k).unwrap_or_default().to_vec();
                (k, v)
            })
            .collect();
        all.sort();
        all
    }

    /// The lazily built keys are those of the whole request: every header
    /// `context_of` reads is kept (a header it reads but the list misses
    /// would make the two differ).
    #[test]
    fn the_lazy_context_keeps_every_header_its_keys_come_from() {
        // Written out, not taken from the tables the code keeps.
        let mut h = http::HeaderMap::new();
        for name in [
            "user-agent",
            "referer",
            "x-amz-acl",
            "x-amz-copy-source",
            "x-amz-metadata-directive",
            "x-amz-content-sha256",
            "x-amz-server-side-encryption",
            "x-amz-storage-class",
            "x-amz-object-lock-mode",
            "x-amz-object-lock-legal-hold",
            "x-amz-grant-read",
            "x-amz-grant-write",
            "x-amz-grant-read-acp",
            "x-amz-grant-write-acp",
            "x-amz-grant-full-control",
            "x-amz-tagging",
            "authorization",
        ] {
            let value = match name {
                "x-amz-tagging" => "a=1&b=two",
                "authorization" => "AWS key:signature",
                _ => "v",
            };
            h.insert(name, http::HeaderValue::from_static(value));
        }
        h.append("x-amz-grant-read", http::HeaderValue::from_static("second"));
        h.insert("x-unrelated", http::HeaderValue::from_static("x"));
        let uri: http::Uri = "/b/k?prefix=p&delimiter=%2F&max-keys=5&versionId=v1"
            .parse()
            .unwrap();
        let requester = Requester::User {
            name: "alice".into(),
            canonical_id: "c0ffee".into(),
        };
        let client = Some(Client {
            addr: "10.1.2.3:4000".parse().unwrap(),
            secure: true,
        });
        let lazy = RequestContext::new(&requester, Some("alice"), &uri, &h, client);
        // The same request with every header it had.
        let eager = context_of(&RequestContext {
            headers: h.clone(),
            at: lazy.at,
            ..RequestContext::new(&requester, Some("alice"), &uri, &h, client)
        });
        let (got, want) = (all_keys(lazy.get()), all_keys(&eager));
        assert_eq!(got, want);
        assert!(got.len() > 20, "{got:?}");
        assert_eq!(lazy.get().get("s3:prefix"), Some(&["p".to_string()][..]));
        let version = lazy.get().get("s3:signatureversion");
        assert_eq!(version, Some(&["AWS".to_string()][..]));
        assert!(!format!("{lazy:?}").contains("signature"), "{lazy:?}");
        assert_eq!(query_value(&uri, "versionId").as_deref(), Some("v1"));
        assert_eq!(query_value(&uri, "delimiter").as_deref(), Some("/"));
        assert_eq!(query_value(&uri, "uploadId"), None);
    }

    #[test]
    fn headers_that_lock_tag_or_bypass_need_their_own_actions() {
        assert_eq!(ops_of("PutObject", &headers(&[])), ["PutObject"]);
        assert_eq!(
            ops_of(
                "PutObject",
                &headers(&[
                    ("x-amz-object-lock-mode", "COMPLIANCE"),
                    ("x-amz-object-lock-legal-hold", "ON"),
                    ("x-amz-tagging", "a=b"),
                ])
            ),
            [
                "PutObject",
                "PutObjectRetention",
                "PutObjectLegalHold",
                "PutObjectTagging"
            ]
        );
        let bypass = headers(&[("x-amz-bypass-governance-retention", "true")]);
        assert_eq!(
            ops_of("DeleteObject", &bypass),
            ["DeleteObject", "BypassGovernanceRetention"]
        );
        assert_eq!(
            ops_of("PutObjectRetention", &bypass),
            ["PutObjectRetention", "BypassGovernanceRetention"]
        );
        // DeleteObjects decides per key, bypass included.
        assert!(ops_of("DeleteObjects", &bypass).is_empty());
        assert_eq!(
            ops_of("GetObjectAttributes", &headers(&[])),
            ["GetObject", "GetObjectAttributes"]
        );
        for op in [
            "GetObject",
            "PutObject",
            "BypassGovernanceRetention",
            "PutObjectRetention",
            "PutObjectLegalHold",
            "PutObjectTagging",
            "GetObjectAttributes",
        ] {
            assert!(action_of(op, false).is_some(), "{op} has an action");
        }
    }
}
