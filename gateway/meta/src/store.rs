//! The store: tables, records and the transactions that keep the
//! invariants stated in the crate docs.
//!
//! Every call is synchronous (redb is); the gateway calls them on the
//! blocking pool. Values are a format byte followed by postcard, so a
//! record written by a newer version is refused as `Corrupt` instead of
//! being misread.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shardgate_authz::{Acl, Ownership};
use shardgate_core::{BackendId, BlobName, Manifest, Segment, VersionId};

use crate::db::Db;
use crate::error::{MetaError, Result};
use crate::journal::{self, JournalTable};
use crate::kv::{
    self, ALL_KEYS, Engine, KvRead, KvReadExt, KvWrite, RedbEngine, tables as t, u64_bytes,
};
use crate::members;
use crate::version::{LockMode, ObjectLock, ObjectVersion, Retention, VersionSelector, Versioning};
use crate::{garbage, keys, repair};

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
/// Every version of every object, keyed `bucket 0x00 key 0x00 !seq`
/// (`keys.rs`): a key's newest version first.
const OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
/// Objects as releases before versioning kept them (`bucket 0x00 key`,
/// the current version only): moved into `versions` once, when a store is
/// opened ([`MetaStore::upgrade_legacy_objects`]).
const LEGACY_OBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("objects");
const UPLOADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("uploads");
const PARTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("parts");
/// Uploads completed in the last day ([`CompletedUpload`]), by upload key.
const COMPLETED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("completed_uploads");
const INTENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("intents");
/// Store-wide sequences that never go back: intent ids (an id is never
/// reused, so a late abandon cannot hit another write's intent) and
/// generations (a key deleted and written again gets a higher one).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const INTENT_SEQUENCE: &str = "intent";
/// Background jobs' state (a scrub's cursor and when its pass started),
/// so that a restart resumes instead of starting over.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const GENERATION_SEQUENCE: &str = "generation";
/// S3 users other than the configured one: access key -> [`UserRecord`].
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// How many version rows are delete markers (kept in each transaction
/// that adds or removes one), so counting stored versions is one read.
const DELETE_MARKERS: &str = "delete_markers";
/// Garbage as the first release kept it (one entry per change, [`GarbageRecord`]):
/// read once, when a store is opened, and turned into items (`garbage.rs`).
const LEGACY_GARBAGE: TableDefinition<u64, &[u8]> = TableDefinition::new("garbage");

/// The format byte of records whose first format is still the one written.
const RECORD_FORMAT: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    encode_as(RECORD_FORMAT, value)
}

pub(crate) fn encode_as<T: Serialize>(format: u8, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![format];
    postcard::to_io(value, &mut out).map_err(|e| MetaError::Corrupt {
        what: "encoding",
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// The format byte and the postcard body of a record.
pub(crate) fn split_format<'a>(what: &'static str, bytes: &'a [u8]) -> Result<(u8, &'a [u8])> {
    bytes
        .split_first()
        .map(|(f, rest)| (*f, rest))
        .ok_or_else(|| MetaError::Corrupt {
            what,
            reason: "empty record".into(),
        })
}

pub(crate) fn postcard_body<T: DeserializeOwned>(what: &'static str, body: &[u8]) -> Result<T> {
    postcard::from_bytes(body).map_err(|e| MetaError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn unknown_format(what: &'static str, format: u8) -> MetaError {
    MetaError::Corrupt {
        what,
        reason: format!("record format {format} is not known to this version"),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    match split_format(what, bytes)? {
        (RECORD_FORMAT, body) => postcard_body(what, body),
        (v, _) => Err(unknown_format(what, v)),
    }
}

/// A bucket (record format 2; format 1, still read, had the creation
/// time only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub created_unix_ms: u64,
    pub versioning: Versioning,
    /// Configuration added later, as (tag, postcard bytes); a tag with
    /// [`CRITICAL_EXTENSION`] set must be understood (see
    /// [`ObjectSummary::extensions`]).
    pub extensions: Vec<(u16, Vec<u8>)>,
}

#[derive(Deserialize)]
struct BucketV1 {
    created_unix_ms: u64,
}

const BUCKET_FORMAT: u8 = 2;

impl BucketRecord {
    /// The bucket's Object Lock configuration, if it has Object Lock.
    pub fn object_lock(&self) -> Result<Option<ObjectLock>> {
        extension(&self.extensions, OBJECT_LOCK_EXTENSION, "object lock")
    }

    /// The bucket's CORS rules (none: cross-origin requests are refused).
    pub fn cors(&self) -> Result<Vec<CorsRule>> {
        Ok(extension(&self.extensions, BUCKET_CORS_EXTENSION, "bucket cors")?.unwrap_or_default())
    }

    fn set_cors(&mut self, rules: &[CorsRule]) -> Result<()> {
        let rules = (!rules.is_empty()).then(|| rules.to_vec());
        set_extension(
            &mut self.extensions,
            BUCKET_CORS_EXTENSION,
            rules.as_ref(),
            "bucket cors",
        )
    }

    /// What tells this bucket apart from one of the same name created
    /// again later: a random number drawn at its creation (its creation
    /// time, for a bucket from before).
    pub fn incarnation(&self) -> Result<u64> {
        Ok(extension(
            &self.extensions,
            BUCKET_INCARNATION_EXTENSION,
            "bucket incarnation",
        )?
        .unwrap_or(self.created_unix_ms))
    }

    /// The bucket policy's text, as set.
    pub fn policy(&self) -> Result<Option<String>> {
        extension(&self.extensions, BUCKET_POLICY_EXTENSION, "bucket policy")
    }

    /// The Public Access Block's flags ([`public_access`]); 0 when unset.
    pub fn public_access_block(&self) -> Result<u8> {
        Ok(extension(
            &self.extensions,
            BUCKET_PUBLIC_ACCESS_EXTENSION,
            "public access block",
        )?
        .unwrap_or_default())
    }

    fn set_access(&mut self, setting: &BucketAccess) -> Result<()> {
        match setting {
            BucketAccess::Policy { public: true, .. }
                if self.public_access_block()? & public_access::BLOCK_PUBLIC_POLICY != 0 =>
            {
                Err(MetaError::PublicPolicyBlocked)
            }
            BucketAccess::Policy { text, .. } => set_extension(
                &mut self.extensions,
                BUCKET_POLICY_EXTENSION,
                text.as_ref(),
                "bucket policy",
            ),
            BucketAccess::PublicAccessBlock(flags) => set_extension(
                &mut self.extensions,
                BUCKET_PUBLIC_ACCESS_EXTENSION,
                flags.filter(|f| *f != 0).as_ref(),
                "public access block",
            ),
            BucketAccess::Acl(acl) => {
                self.check_acl(acl)?;
                // The default (the owner alone) is no record at all.
                let acl = (*acl != Acl::private(&acl.owner)).then_some(acl);
                set_extension(
                    &mut self.extensions,
                    BUCKET_ACL_EXTENSION,
                    acl,
                    "bucket acl",
                )
            }
            BucketAccess::Ownership(Some(Ownership::BucketOwnerEnforced))
                if self.acl()?.is_some_and(|a| !a.only_owner()) =>
            {
                Err(MetaError::AclWithEnforcedOwnership)
            }
            BucketAccess::Ownership(ownership) => set_extension(
                &mut self.extensions,
                BUCKET_OWNERSHIP_EXTENSION,
                ownership.as_ref(),
                "object ownership",
            ),
        }
    }

    /// The bucket's ACL as set (`None`: the default, its owner alone with
    /// full control).
    pub fn acl(&self) -> Result<Option<Acl>> {
        extension(&self.extensions, BUCKET_ACL_EXTENSION, "bucket acl")
    }

    /// The bucket's Object Ownership as set (`None`: none set, which
    /// behaves as [`Ownership::ObjectWriter`]).
    pub fn ownership(&self) -> Result<Option<Ownership>> {
        extension(
            &self.extensions,
            BUCKET_OWNERSHIP_EXTENSION,
            "object ownership",
        )
    }

    /// Whether the bucket takes `acl` for itself or one of its objects:
    /// not a public one under BlockPublicAcls, nothing but the owner's
    /// under BucketOwnerEnforced. Checked in the transaction that sets it.
    fn check_acl(&self, acl: &Acl) -> Result<()> {
        if acl.is_public() && self.public_access_block()? & public_access::BLOCK_PUBLIC_ACLS != 0 {
            return Err(MetaError::PublicAclBlocked);
        }
        if self.ownership()? == Some(Ownership::BucketOwnerEnforced) && !acl.only_owner() {
            return Err(MetaError::AclsDisabled);
        }
        Ok(())
    }

    /// The user who owns the bucket (`None`: the configured user).
    pub fn owner(&self) -> Result<Option<String>> {
        extension(&self.extensions, BUCKET_OWNER_EXTENSION, "bucket owner")
    }

    /// The bucket's tags.
    pub fn tags(&self) -> Result<BTreeMap<String, String>> {
        Ok(extension(&self.extensions, BUCKET_TAGS_EXTENSION, "bucket tags")?.unwrap_or_default())
    }

    fn set_tags(&mut self, tags: &BTreeMap<String, String>) -> Result<()> {
        let tags = (!tags.is_empty()).then_some(tags);
        set_extension(
            &mut self.extensions,
            BUCKET_TAGS_EXTENSION,
            tags,
            "bucket tags",
        )
    }

    fn set_object_lock(&mut self, lock: &ObjectLock) -> Result<()> {
        set_extension(
            &mut self.extensions,
            OBJECT_LOCK_EXTENSION,
            Some(lock),
            "object lock",
        )
    }
}

/// The value of extension `tag`, if present.
fn extension<T: DeserializeOwned>(
    extensions: &[(u16, Vec<u8>)],
    tag: u16,
    what: &'static str,
) -> Result<Option<T>> {
    extensions
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, bytes)| postcard_body(what, bytes))
        .transpose()
}

/// Sets extension `tag` to `value` (`None`: removes it), keeping the
/// extensions sorted by tag.
fn set_extension<T: Serialize>(
    extensions: &mut Vec<(u16, Vec<u8>)>,
    tag: u16,
    value: Option<&T>,
    what: &'static str,
) -> Result<()> {
    extensions.retain(|(t, _)| *t != tag);
    if let Some(value) = value {
        let bytes = postcard::to_allocvec(value).map_err(|e| MetaError::Corrupt {
            what,
            reason: e.to_string(),
        })?;
        extensions.push((tag, bytes));
        extensions.sort_by_key(|(t, _)| *t);
    }
    Ok(())
}

fn encode_bucket(record: &BucketRecord) -> Result<Vec<u8>> {
    encode_as(BUCKET_FORMAT, record)
}

pub(crate) fn decode_bucket(bytes: &[u8]) -> Result<BucketRecord> {
    match split_format("bucket", bytes)? {
        (1, body) => {
            let v1: BucketV1 = postcard_body("bucket", body)?;
            Ok(BucketRecord {
                created_unix_ms: v1.created_unix_ms,
                ..BucketRecord::default()
            })
        }
        (BUCKET_FORMAT, body) => {
            let r: BucketRecord = postcard_body("bucket", body)?;
            refuse_critical("bucket", &r.extensions, KNOWN_BUCKET_CRITICAL)?;
            Ok(r)
        }
        (v, _) => Err(unknown_format("bucket", v)),
    }
}

/// Bucket extension: the Object Lock configuration (postcard of an
/// [`ObjectLock`]). Critical: a build that does not know it must not
/// serve the bucket (it would let locked versions be deleted).
pub const OBJECT_LOCK_EXTENSION: u16 = CRITICAL_EXTENSION | 1;

/// Bucket extension: the bucket's tags (postcard of a `BTreeMap<String,
/// String>`). Not critical.
pub const BUCKET_TAGS_EXTENSION: u16 = 1;
/// A bucket's CORS rules ([`CorsRule`]s): a release that does not know
/// them answers no cross-origin request, which is safe, so not critical.
pub const BUCKET_CORS_EXTENSION: u16 = 2;

/// One CORS rule of a bucket (S3's `CORSRule`): which origins may use
/// which methods with which request headers, what the browser may read of
/// the answer, and how long it may cache a preflight's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<i32>,
}

/// Bucket extension: the name of the user who owns the bucket (postcard of
/// a `String`); a bucket without one belongs to the configured user. Not
/// critical: a release without users has only the configured user, who
/// may use every bucket anyway.
pub const BUCKET_OWNER_EXTENSION: u16 = 3;

/// Bucket extension: the bucket policy's JSON text as it was set (postcard
/// of a `String`; the S3 layer checked it). Critical: a build that does not
/// know it would ignore its Deny statements.
pub const BUCKET_POLICY_EXTENSION: u16 = CRITICAL_EXTENSION | 4;

/// Bucket extension: the Public Access Block (postcard of a `u8` of
/// [`public_access`] flags). Critical: ignoring it would open what it
/// closes.
pub const BUCKET_PUBLIC_ACCESS_EXTENSION: u16 = CRITICAL_EXTENSION | 5;

/// Bucket extension: a random `u64` drawn when the bucket is created
/// ([`BucketRecord::incarnation`]), so that a write someone's policy let in
/// never lands in a bucket of the same name created again meanwhile, even
/// within the same millisecond. Not critical: a release without it tells
/// buckets apart by their creation time.
pub const BUCKET_INCARNATION_EXTENSION: u16 = 6;

/// Bucket extension: the bucket's ACL (postcard of a
/// [`shardgate_authz::Acl`]), absent when it is the default. Not critical:
/// a release without ACLs grants less, never more.
pub const BUCKET_ACL_EXTENSION: u16 = 7;

/// Bucket extension: the bucket's Object Ownership (postcard of a
/// [`shardgate_authz::Ownership`]). Not critical, as the ACL.
pub const BUCKET_OWNERSHIP_EXTENSION: u16 = 8;

/// The flags of a bucket's Public Access Block.
pub mod public_access {
    pub const BLOCK_PUBLIC_ACLS: u8 = 1;
    pub const IGNORE_PUBLIC_ACLS: u8 = 2;
    pub const BLOCK_PUBLIC_POLICY: u8 = 4;
    pub const RESTRICT_PUBLIC_BUCKETS: u8 = 8;
    /// Set with the others: a configuration exists (all four may be off).
    pub const CONFIGURED: u8 = 16;
}

/// A change to who may use a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BucketAccess {
    /// The bucket policy's text (`None`: deleted), and whether it is
    /// public (refused, in the change's transaction, under BlockPublicPolicy).
    Policy { text: Option<String>, public: bool },
    /// The Public Access Block's flags (`None` or 0: deleted).
    PublicAccessBlock(Option<u8>),
    /// The bucket's ACL (refused under BlockPublicAcls when public, and
    /// under BucketOwnerEnforced unless it grants the owner alone).
    Acl(Acl),
    /// The bucket's Object Ownership (`None`: deleted). BucketOwnerEnforced
    /// is refused while the bucket's ACL grants others.
    Ownership(Option<Ownership>),
}

/// An S3 user created by an admin: a name (unique, what owns buckets) and
/// the secret of its access key, sealed to the gateway's recipients (the
/// store alone does not give it away).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub secret: shardgate_core::SealedSecret,
    pub created_unix_ms: u64,
}

/// The critical extensions of a bucket record this build understands
/// (it knows none of a summary's yet).
const KNOWN_BUCKET_CRITICAL: &[u16] = &[
    OBJECT_LOCK_EXTENSION,
    BUCKET_POLICY_EXTENSION,
    BUCKET_PUBLIC_ACCESS_EXTENSION,
];

/// Refuses a record with an extension this build must understand and
/// does not (`known`: those it does).
fn refuse_critical(what: &'static str, extensions: &[(u16, Vec<u8>)], known: &[u16]) -> Result<()> {
    match extensions
        .iter()
        .find(|(t, _)| t & CRITICAL_EXTENSION != 0 && !known.contains(t))
    {
        Some((tag, _)) => Err(MetaError::Corrupt {
            what,
            reason: format!("extension {tag:#06x} is needed and not known to this version"),
        }),
        None => Ok(()),
    }
}

/// What a listing shows of an object, stored ahead of its manifest so that
/// a listing decodes only this; and the row's state that changes without
/// a new manifest.
///
/// Record format 3 (written since versioning); format 2 (issue 25) had no
/// `null_version` (its rows are null versions: written before versions
/// existed); format 1 had the first three fields only (generation 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectSummary {
    pub size: u64,
    pub etag: String,
    pub modified_unix_ms: u64,
    /// New at every change of the row, from a store-wide sequence, so it
    /// only grows (also across a delete and a new write of the key). A
    /// write conditioned on it
    /// ([`Condition::IfGeneration`]) is a compare-and-swap: repair swapping
    /// fragments cannot undo an overwrite or a retention change made while
    /// it ran (an ETag cannot tell two uploads of the same bytes apart).
    pub generation: u64,
    /// The version this row holds (the manifest's, repeated for listings).
    pub version_id: Option<VersionId>,
    /// Versioning (issue 16): the row is a delete marker.
    pub delete_marker: bool,
    /// Object Lock (issue 16): retention mode (1 governance, 2 compliance)
    /// and the time it holds until, in ms since the epoch.
    pub retention: Option<(u8, u64)>,
    /// Object Lock: a legal hold.
    pub legal_hold: bool,
    /// S3's `null` version: written while the bucket was not versioning.
    pub null_version: bool,
    /// Fields added after format 3, as (tag, postcard bytes). A tag with
    /// [`CRITICAL_EXTENSION`] set must be understood: a build that does
    /// not know it refuses the row (`Corrupt`) instead of misreading it;
    /// others are skipped.
    pub extensions: Vec<(u16, Vec<u8>)>,
}

/// The bit of an extension tag that says "readers must understand this".
pub const CRITICAL_EXTENSION: u16 = 0x8000;
/// Extension: the version's tags (postcard of a `BTreeMap<String,
/// String>`). Not critical: a build without tagging keeps them untouched.
pub const TAGS_EXTENSION: u16 = 1;
/// Extension: the version's owner and ACL (postcard of a
/// [`shardgate_authz::Acl`]), absent when the bucket's owner owns it and
/// grants nobody else. Not critical: a build without ACLs grants less.
pub const OBJECT_ACL_EXTENSION: u16 = 2;

/// What a version carries besides its manifest: set when it is created,
/// changed later without a new version, and kept when repair rewrites the
/// version's fragments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionState {
    /// Object tags (S3 allows 10; the S3 layer checks).
    pub tags: BTreeMap<String, String>,
    /// Object Lock retention asked for on creation (else the bucket's
    /// default applies).
    pub retention: Option<Retention>,
    /// Object Lock legal hold asked for on creation.
    pub legal_hold: bool,
    /// The version's owner and ACL (`None`: the bucket's owner, alone).
    /// Refused at the commit when the bucket's settings refuse it (see
    /// [`BucketRecord`]'s ACL checks).
    pub acl: Option<Acl>,
    /// Who writes: the bucket must belong to them when the version commits
    /// (checked again there, so a bucket deleted and created by another
    /// user while the body streamed is not written into).
    pub writer: Writer,
}

/// Who writes a version, for the ownership check at its commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Writer {
    /// The configured user (and the gateway itself): any bucket.
    #[default]
    Admin,
    /// A user, by name: only buckets it owns.
    User(String),
    /// Someone a bucket's policy or ACL let in (another user, or an
    /// anonymous requester): only the bucket as it was when that was
    /// decided, not one deleted and created again since.
    Granted { bucket_incarnation: u64 },
}

/// `NotOwner` unless `caller` may change `record`'s bucket: the configured
/// user any, a user its own. Checked inside the transaction that makes the
/// change, so a bucket deleted and created again by another user meanwhile
/// is never changed by the first.
fn check_owner(record: &BucketRecord, caller: &Writer) -> Result<()> {
    match caller {
        Writer::User(name) if record.owner()?.as_deref() != Some(name.as_str()) => {
            Err(MetaError::NotOwner)
        }
        Writer::Granted { bucket_incarnation } if record.incarnation()? != *bucket_incarnation => {
            Err(MetaError::NotOwner)
        }
        _ => Ok(()),
    }
}

/// Summary record format 1.
#[derive(Deserialize)]
struct SummaryV1 {
    size: u64,
    etag: String,
    modified_unix_ms: u64,
}

/// Summary record format 2.
#[derive(Deserialize)]
struct SummaryV2 {
    size: u64,
    etag: String,
    modified_unix_ms: u64,
    generation: u64,
    version_id: Option<VersionId>,
    delete_marker: bool,
    retention: Option<(u8, u64)>,
    legal_hold: bool,
    extensions: Vec<(u16, Vec<u8>)>,
}

const SUMMARY_FORMAT: u8 = 3;

impl ObjectSummary {
    /// The version's tags.
    pub fn tags(&self) -> Result<BTreeMap<String, String>> {
        Ok(extension(&self.extensions, TAGS_EXTENSION, "tags")?.unwrap_or_default())
    }

    /// The version's retention, if any (whether in force or over).
    pub fn retention(&self) -> Option<Retention> {
        self.retention.and_then(|(mode, until)| {
            Some(Retention {
                mode: LockMode::from_byte(mode)?,
                until_unix_ms: until,
            })
        })
    }

    /// Why the version may not go at `now_unix_ms` (`bypass`: the request
    /// bypasses governance retention), if it may not.
    pub fn lock_at(&self, now_unix_ms: u64, bypass: bool) -> Option<&'static str> {
        if self.legal_hold {
            return Some("a legal hold is on");
        }
        match self.retention() {
            Some(r) if r.until_unix_ms > now_unix_ms => match r.mode {
                LockMode::Compliance => Some("compliance retention in force"),
                LockMode::Governance if !bypass => Some("governance retention in force"),
                LockMode::Governance => None,
            },
            _ => None,
        }
    }

    fn set_tags(&mut self, tags: &BTreeMap<String, String>) -> Result<()> {
        let tags = (!tags.is_empty()).then_some(tags);
        set_extension(&mut self.extensions, TAGS_EXTENSION, tags, "tags")
    }

    /// The version's owner and ACL (`None`: the bucket's owner, alone).
    pub fn acl(&self) -> Result<Option<Acl>> {
        extension(&self.extensions, OBJECT_ACL_EXTENSION, "object acl")
    }

    fn set_acl(&mut self, acl: Option<&Acl>) -> Result<()> {
        set_extension(
            &mut self.extensions,
            OBJECT_ACL_EXTENSION,
            acl,
            "object acl",
        )
    }

    /// How S3 names this row's version, `seq` being its row's.
    pub fn object_version(&self, seq: u64) -> ObjectVersion {
        ObjectVersion::new(seq, self.null_version, self.version_id.as_ref())
    }

    fn of(m: &Manifest, generation: u64) -> Self {
        Self {
            size: m.size,
            etag: m.etag.clone(),
            modified_unix_ms: m.created_unix_ms,
            generation,
            version_id: Some(m.version_id),
            delete_marker: false,
            retention: None,
            legal_hold: false,
            null_version: true,
            extensions: Vec::new(),
        }
    }

    /// A delete marker made at `now_unix_ms`.
    fn marker(generation: u64, null_version: bool, now_unix_ms: u64) -> Self {
        Self {
            size: 0,
            etag: String::new(),
            modified_unix_ms: now_unix_ms,
            generation,
            version_id: Some(VersionId::new(now_unix_ms)),
            delete_marker: true,
            retention: None,
            legal_hold: false,
            null_version,
            extensions: Vec::new(),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        match split_format("summary", bytes)? {
            (1, body) => {
                let v1: SummaryV1 = postcard_body("summary", body)?;
                Ok(Self {
                    size: v1.size,
                    etag: v1.etag,
                    modified_unix_ms: v1.modified_unix_ms,
                    generation: 0,
                    version_id: None,
                    delete_marker: false,
                    retention: None,
                    legal_hold: false,
                    null_version: true,
                    extensions: Vec::new(),
                })
            }
            (2, body) => {
                let v2: SummaryV2 = postcard_body("summary", body)?;
                refuse_critical("summary", &v2.extensions, &[])?;
                Ok(Self {
                    size: v2.size,
                    etag: v2.etag,
                    modified_unix_ms: v2.modified_unix_ms,
                    generation: v2.generation,
                    version_id: v2.version_id,
                    delete_marker: v2.delete_marker,
                    retention: v2.retention,
                    legal_hold: v2.legal_hold,
                    null_version: true,
                    extensions: v2.extensions,
                })
            }
            (SUMMARY_FORMAT, body) => {
                let s: Self = postcard_body("summary", body)?;
                refuse_critical("summary", &s.extensions, &[])?;
                Ok(s)
            }
            (v, _) => Err(unknown_format("summary", v)),
        }
    }
}

/// An object row: summary, then the encoded manifest.
fn encode_object(summary: &ObjectSummary, manifest: &Manifest) -> Result<Vec<u8>> {
    let body = manifest.encode().map_err(|e| MetaError::Corrupt {
        what: "manifest",
        reason: e.to_string(),
    })?;
    encode_row(summary, &body)
}

/// A row of `summary` over a manifest's encoded bytes.
fn encode_row(summary: &ObjectSummary, body: &[u8]) -> Result<Vec<u8>> {
    let summary = encode_as(SUMMARY_FORMAT, summary)?;
    let len = u32::try_from(summary.len()).map_err(|_| MetaError::Corrupt {
        what: "summary",
        reason: "too long".into(),
    })?;
    let mut out = Vec::with_capacity(4 + summary.len() + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&summary);
    out.extend_from_slice(body);
    Ok(out)
}

fn split_object(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let corrupt = || MetaError::Corrupt {
        what: "object",
        reason: "truncated row".into(),
    };
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt());
    }
    Ok(rest.split_at(len))
}

pub(crate) fn decode_summary(bytes: &[u8]) -> Result<ObjectSummary> {
    ObjectSummary::decode(split_object(bytes)?.0)
}

pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<Manifest> {
    Manifest::decode(split_object(bytes)?.1).map_err(|e| MetaError::Corrupt {
        what: "manifest",
        reason: e.to_string(),
    })
}

/// A multipart upload in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub initiated_unix_ms: u64,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
}

/// One uploaded part: a segment of the object to be (record format 2;
/// format 1, still read and still written for a part without a checksum,
/// had no checksum).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// MD5 of the part, hex.
    pub etag: String,
    pub size: u64,
    pub modified_unix_ms: u64,
    pub segment: Segment,
    /// The part's verified additional checksum, as the client sent it.
    pub checksum: Option<PartChecksum>,
}

/// An additional checksum (S3's `x-amz-checksum-*`): the algorithm's name
/// as S3 spells it (`CRC32`, `SHA256`, ...) and the base64 value. The store
/// keeps it; the gateway interprets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartChecksum {
    pub algorithm: String,
    pub value: String,
}

#[derive(Serialize, Deserialize)]
struct PartV1 {
    etag: String,
    size: u64,
    modified_unix_ms: u64,
    segment: Segment,
}

const PART_FORMAT: u8 = 2;

fn decode_part(bytes: &[u8]) -> Result<PartRecord> {
    match split_format("part", bytes)? {
        (RECORD_FORMAT, body) => {
            let v1: PartV1 = postcard_body("part", body)?;
            Ok(PartRecord {
                etag: v1.etag,
                size: v1.size,
                modified_unix_ms: v1.modified_unix_ms,
                segment: v1.segment,
                checksum: None,
            })
        }
        (PART_FORMAT, body) => postcard_body("part", body),
        (v, _) => Err(unknown_format("part", v)),
    }
}

/// Format 1 while a part has no checksum (what earlier releases read),
/// format 2 once it has one.
fn encode_part(part: &PartRecord) -> Result<Vec<u8>> {
    // A segment's serde shape has no room for inline bytes: they would be
    // dropped, so such a part is refused rather than half stored.
    if part.segment.is_inline() {
        return Err(MetaError::Corrupt {
            what: "part",
            reason: "an upload part cannot be kept inline".into(),
        });
    }
    match &part.checksum {
        None => encode(&PartV1 {
            etag: part.etag.clone(),
            size: part.size,
            modified_unix_ms: part.modified_unix_ms,
            segment: part.segment.clone(),
        }),
        Some(_) => encode_as(PART_FORMAT, part),
    }
}

/// What one backend holds: fragments and bytes of current objects, and of
/// the parts of uploads in progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub fragments: u64,
    pub bytes: u64,
    pub part_fragments: u64,
    pub part_bytes: u64,
}

/// When a PUT may replace what is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Always.
    Always,
    /// Only if no object has the key (`If-None-Match: *`).
    IfAbsent,
    /// Only if the current object's ETag is this one (`If-Match`).
    IfMatch(String),
}

/// A committed write: the version it made, and the `null` version it
/// replaced (a bucket not versioning keeps one version per key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub version: ObjectVersion,
    /// The bucket's versioning when the write committed.
    pub versioning: Versioning,
    pub replaced: Option<ObjectSummary>,
}

impl Written {
    /// The `x-amz-version-id` S3 answers the write with: none for a null
    /// version in a bucket that never versioned.
    pub fn shown_id(&self) -> Option<String> {
        (self.versioning != Versioning::Unversioned || !self.version.null)
            .then(|| self.version.id())
    }
}

/// How long a completed upload's answer is kept for a retried completion.
pub const COMPLETED_KEPT_MS: u64 = 24 * 3600 * 1000;

/// An upload's completion, kept a day: a client whose answer was lost
/// retries CompleteMultipartUpload with the same parts and gets the same
/// answer, as from S3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedUpload {
    pub completed_unix_ms: u64,
    /// The parts it took: (number, ETag without quotes).
    pub parts: Vec<(u32, String)>,
    pub etag: String,
    pub version_id: Option<String>,
    /// The object's user metadata (its checksum is there).
    pub user_metadata: BTreeMap<String, String>,
}

/// What a DELETE without a version id did: the delete marker it made (in
/// a bucket that versions or did), and the version it removed for good
/// (the `null` one, when the bucket is not versioning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub marker: Option<ObjectVersion>,
    pub removed: Option<(ObjectVersion, ObjectSummary)>,
}

/// A version's row, decoded: a delete marker has no manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRow {
    pub version: ObjectVersion,
    pub summary: ObjectSummary,
    pub manifest: Option<Manifest>,
}

/// A stored version met by a walk of the store (scrub, drain, rebalance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVersion {
    /// Its row key: the walk's cursor.
    pub row: Vec<u8>,
    pub bucket: String,
    pub key: String,
    pub seq: u64,
    /// For [`MetaStore::replace_version`].
    pub generation: u64,
    pub manifest: Manifest,
}

pub(crate) fn decode_version(seq: u64, bytes: &[u8]) -> Result<VersionRow> {
    let summary = decode_summary(bytes)?;
    let manifest = match summary.delete_marker {
        true => None,
        false => Some(decode_manifest(bytes)?),
    };
    Ok(VersionRow {
        version: summary.object_version(seq),
        summary,
        manifest,
    })
}

/// The row of `bucket/key` that `selector` names, as (seq, row bytes).
/// `Latest` and `Null` walk the key's versions, newest first: `Latest`
/// stops at the first, `Null` at the null version (in a bucket that never
/// versioned, also the first).
pub(crate) fn find_version(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    key: &str,
    selector: &VersionSelector,
) -> Result<Option<(u64, Vec<u8>)>> {
    if let VersionSelector::Id { seq, .. } = selector {
        let Some(v) = kv.get(t::VERSIONS, &keys::version_key(bucket, key, *seq))? else {
            return Ok(None);
        };
        let summary = decode_summary(&v)?;
        return Ok(summary
            .object_version(*seq)
            .is(selector)
            .then_some((*seq, v)));
    }
    let prefix = keys::versions_prefix(bucket, key);
    let end = keys::successor(&prefix).unwrap_or_default();
    let range = (
        Bound::Included(prefix.as_slice()),
        Bound::Excluded(end.as_slice()),
    );
    let mut found = None;
    kv.scan(t::VERSIONS, range, false, &mut |k, v| {
        // Only this key's rows: a key holding NUL (refused since, but
        // possible in a store written before) would share the prefix.
        let Some(seq) = k
            .strip_prefix(prefix.as_slice())
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(|s| !u64::from_be_bytes(s))
        else {
            return Ok(ControlFlow::Continue(()));
        };
        if *selector == VersionSelector::Latest || decode_summary(v)?.null_version {
            found = Some((seq, v.to_vec()));
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(found)
}

/// An engine whose write transactions first check that this gateway
/// holds `lease`, unexpired ([`MetaStore::on_engine`]).
#[derive(Debug)]
struct Fenced {
    inner: Arc<dyn Engine>,
    lease: String,
    owner: Arc<str>,
}

impl Engine for Fenced {
    fn read(&self, body: &mut dyn FnMut(&dyn KvRead) -> Result<()>) -> Result<()> {
        self.inner.read(body)
    }

    fn write(&self, body: &mut dyn FnMut(&mut dyn KvWrite) -> Result<()>) -> Result<()> {
        self.inner.write(&mut |kv| {
            let now = crate::now_unix_ms();
            let held = match kv.get(t::LEASES, self.lease.as_bytes())? {
                Some(v) => Some(decode::<LeaseRecord>("lease", &v)?),
                None => None,
            };
            match held {
                Some(l) if *l.owner == *self.owner && l.until_unix_ms > now => body(kv),
                _ => Err(MetaError::LeaseLost {
                    name: self.lease.clone(),
                }),
            }
        })
    }

    fn snapshot(&self) -> Result<Box<dyn kv::KvSnapshot>> {
        self.inner.snapshot()
    }
}

/// Who holds a lease, until when (record format 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub(crate) owner: String,
    pub(crate) until_unix_ms: u64,
}

/// An intent's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentId(pub u64);

/// What an intent's write is for. Stored as a byte, so that a kind added
/// later reads back as itself instead of failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IntentKind(pub u8);

impl IntentKind {
    /// Recorded before kinds were (record format 1).
    pub const UNKNOWN: Self = Self(0);
    /// A PUT (or a copy) writing a new version.
    pub const PUT: Self = Self(1);
    /// An UploadPart.
    pub const PART: Self = Self(2);
    /// Fragments rebuilt by repair (issue 14).
    pub const REPAIR: Self = Self(3);
    /// A manifest journal record (issue 17).
    pub const JOURNAL: Self = Self(4);
}

/// A write in progress: the blobs it may create (record format 2; format 1
/// was the bare blob list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub kind: IntentKind,
    /// The gateway process that writes it ([`MetaStore::owner`]).
    pub owner: String,
    pub created_unix_ms: u64,
    pub blobs: Vec<(BackendId, BlobName)>,
}

const INTENT_FORMAT: u8 = 2;

fn encode_intent(record: &IntentRecord) -> Result<Vec<u8>> {
    encode_as(INTENT_FORMAT, record)
}

pub(crate) fn decode_intent(bytes: &[u8]) -> Result<IntentRecord> {
    match split_format("intent", bytes)? {
        (1, body) => Ok(IntentRecord {
            kind: IntentKind::UNKNOWN,
            owner: String::new(),
            created_unix_ms: 0,
            blobs: postcard_body("intent", body)?,
        }),
        (INTENT_FORMAT, body) => postcard_body("intent", body),
        (v, _) => Err(unknown_format("intent", v)),
    }
}

/// Blobs to delete, as the first release recorded them (one entry per
/// change); read only to turn them into items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GarbageRecord {
    /// The version they belonged to, if they were visible once: a reader
    /// that still streams it keeps them alive a little longer.
    version: Option<VersionId>,
    blobs: Vec<(BackendId, BlobName)>,
    /// Not before this time (ms since the epoch): a grace period for reads
    /// that started before the change.
    not_before_unix_ms: u64,
}

/// Every fragment of `segments`, with its size.
fn segment_blobs(segments: &[Segment]) -> Vec<(BackendId, BlobName, u64)> {
    segments
        .iter()
        .flat_map(|s| {
            let len = s.geometry().fragment_len();
            s.fragments
                .iter()
                .map(move |f| (f.backend.clone(), f.blob.clone(), len))
        })
        .collect()
}

/// The fragments of `old` that `new` does not use (a repair that swaps
/// some of them, a manifest put again): only those become garbage.
fn unused_by(old: &Manifest, new: &Manifest) -> Vec<(BackendId, BlobName, u64)> {
    let kept: std::collections::HashSet<(&BackendId, &BlobName)> = new
        .segments
        .iter()
        .flat_map(|s| &s.fragments)
        .map(|f| (&f.backend, &f.blob))
        .collect();
    segment_blobs(&old.segments)
        .into_iter()
        .filter(|(b, n, _)| !kept.contains(&(b, n)))
        .collect()
}

/// How a version is removed.
#[derive(Clone, Copy, Default)]
struct Removal<'a> {
    /// The request bypasses governance retention.
    bypass_governance: bool,
    /// The manifest replacing it: the fragments it uses stay.
    kept_by: Option<&'a Manifest>,
}

impl Removal<'_> {
    fn bypassing(bypass_governance: bool) -> Self {
        Self {
            bypass_governance,
            kept_by: None,
        }
    }
}

/// A key the store can hold: NUL separates a row key's parts.
fn check_key(key: &str) -> Result<()> {
    match key.contains('\0') {
        true => Err(MetaError::InvalidKey("an object key must not contain NUL")),
        false => Ok(()),
    }
}

/// Blobs of a write that never committed: sizes unknown.
fn unsized_blobs(blobs: Vec<(BackendId, BlobName)>) -> Vec<(BackendId, BlobName, u64)> {
    blobs.into_iter().map(|(b, n)| (b, n, 0)).collect()
}

/// The metadata store. Cheap to clone; one per process (redb locks the
/// file, so a second gateway on the same data directory fails to open).
#[derive(Clone)]
pub struct MetaStore {
    /// The engine every rule runs on (fenced by a lease when the store
    /// was opened under one: [`MetaStore::on_engine`]).
    engine: Arc<dyn Engine>,
    /// The same engine unfenced, for the lease itself.
    lease_engine: Arc<dyn Engine>,
    /// The redb file, when the engine is redb: its reopens after an I/O
    /// error count as bucket changes.
    redb: Option<Arc<Db>>,
    grace_ms: u64,
    owner: Arc<str>,
    /// Whether mutating transactions fill the journal's outbox.
    journal: bool,
    /// Counts committed changes of bucket records ([`MetaStore::bucket_changes`]).
    bucket_changes: Arc<std::sync::atomic::AtomicU64>,
    /// The store-wide count of bucket changes last seen
    /// ([`MetaStore::observe_changes`]): other gateways' changes.
    shared_bucket_changes: Arc<std::sync::atomic::AtomicU64>,
    /// Told of every version whose row goes ([`MetaStore::on_version_removed`]).
    removal_hooks: Arc<std::sync::RwLock<Vec<RemovalHook>>>,
    /// Intents waiting for their group commit ([`MetaStore::begin_intent`]).
    intent_group: Arc<IntentGroup>,
}

/// The intents of concurrent writes, committed together.
#[derive(Default)]
struct IntentGroup {
    state: std::sync::Mutex<GroupState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct GroupState {
    /// Encoded intents not yet in a transaction, by ticket.
    queued: Vec<(u64, Vec<u8>)>,
    /// Whether a group's transaction is running.
    committing: bool,
    next_ticket: u64,
    /// Each committed ticket's intent id, or why the group failed.
    answers: HashMap<u64, std::result::Result<u64, String>>,
}

/// Called with the manifest of a version whose row is being removed.
pub type RemovalHook = Arc<dyn Fn(&Manifest) + Send + Sync>;

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").finish_non_exhaustive()
    }
}

/// Garbage becomes deletable this long after the change that made it.
pub const DEFAULT_GRACE_MS: u64 = 5_000;
/// The garbage grace on a store several gateways share: the collector
/// sees the reads of its own gateway only (they are pinned in memory), so
/// fragments a version leaves wait long enough for a GET that began on
/// another gateway to end.
pub const SHARED_GRACE_MS: u64 = 10 * 60 * 1000;

impl MetaStore {
    /// The engine the rules run on.
    pub(crate) fn engine(&self) -> &dyn Engine {
        &*self.engine
    }

    /// The engine unfenced: leases and membership are written whatever
    /// lease the store is fenced by.
    pub(crate) fn lease_engine(&self) -> &dyn Engine {
        &*self.lease_engine
    }

    /// The engine under this store, unfenced: another gateway's store
    /// opens on it ([`MetaStore::on_engine`]).
    pub fn shared_engine(&self) -> Arc<dyn Engine> {
        self.lease_engine.clone()
    }

    /// The same store, whose write transactions first check that this
    /// gateway holds `lease`, unexpired (else `LeaseLost`): for a job that
    /// must stop changing anything once another gateway took its work
    /// over. Reads and the lease calls are not fenced.
    pub fn fenced_by(&self, lease: &str) -> MetaStore {
        let mut fenced = self.clone();
        fenced.engine = Arc::new(Fenced {
            inner: self.engine.clone(),
            lease: lease.to_string(),
            owner: self.owner.clone(),
        });
        fenced
    }

    /// Calls `hook` with the manifest of every version whose row goes (a
    /// DELETE, a replaced `null` version, a lifecycle expiry), inside the
    /// removing transaction: what the process holds of a version (its
    /// opened keys) can go with it. The transaction may still fail after
    /// the call; a hook must only drop what can be had again.
    pub fn on_version_removed(&self, hook: RemovalHook) {
        let mut hooks = match self.removal_hooks.write() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        hooks.push(hook);
    }

    fn version_removed(&self, manifest: &Manifest) {
        let hooks = match self.removal_hooks.read() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        for hook in hooks.iter() {
            hook(manifest);
        }
    }

    /// Opens (or creates) the store at `path`. Intents left by a previous
    /// run are writes that never committed: their blobs become garbage.
    /// Garbage entries of the first release become items.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    /// Opens the store; with `journal`, every change of a bucket, user or
    /// version also goes to the journal's outbox (`journal.rs`). Opened
    /// without, the journal on the backends is marked as missing changes,
    /// so the next start with it writes a checkpoint.
    pub fn open_with(path: &Path, journal: bool) -> Result<Self> {
        let db = Arc::new(Db::create(path)?);
        let store = Self::new(
            Arc::new(RedbEngine::new(db.clone())),
            Some(db.clone()),
            journal,
        );
        let now = crate::now_unix_ms();
        let txn = db.begin_write()?;
        txn.open_table(BUCKETS)?;
        for table in [OBJECTS, UPLOADS, PARTS, COMPLETED] {
            txn.open_table(table)?;
        }
        txn.open_table(INTENTS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(JOBS)?;
        txn.open_table(USERS)?;
        kv::redb::within(&txn, journal::create_tables)?;
        Self::upgrade_legacy_garbage(&txn)?;
        if Self::upgrade_legacy_objects(&txn)? {
            kv::redb::within(&txn, journal::need_checkpoint)?;
        }
        if !journal {
            kv::redb::within(&txn, journal::journal_off)?;
        }
        let stale: Vec<u64> = {
            let intents = txn.open_table(INTENTS)?;
            intents
                .iter()?
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()?
        };
        // The redb lock keeps every other process out: no intent here has a
        // live owner. (Several gateways on one store will ask whether the
        // owner is gone instead; see `sweep_intents`.)
        for id in stale {
            Self::intent_to_garbage(&txn, id, now)?;
        }
        // Nor does any lease or member of an earlier run hold: a restart
        // after a kill takes its jobs back at once. Unless the file is a
        // copy that did not finish (`shardgate meta copy`): never served.
        kv::redb::within(&txn, |kv| {
            if crate::copy::unfinished(&*kv)? {
                return Err(MetaError::CopyUnfinished);
            }
            kv.remove_range(t::LEASES, ALL_KEYS)?;
            kv.remove_range(t::GATEWAYS, ALL_KEYS)?;
            Ok(())
        })?;
        txn.commit()?;
        Ok(store)
    }

    /// The engine of the existing redb store at `path`, brought to this
    /// release's format (as [`MetaStore::open`] would) but otherwise as it
    /// was: its intents, leases and journal marks untouched. For `shardgate
    /// meta copy`, which reads it whole; a gateway running on it holds its
    /// lock, and opening fails.
    pub fn redb_engine_for_copy(path: &Path) -> Result<RedbEngine> {
        let db = Arc::new(Db::create(path)?);
        let txn = db.begin_write()?;
        Self::upgrade_legacy_garbage(&txn)?;
        if Self::upgrade_legacy_objects(&txn)? {
            kv::redb::within(&txn, journal::need_checkpoint)?;
        }
        txn.commit()?;
        Ok(RedbEngine::new(db))
    }

    /// The store on `engine` (PostgreSQL's, for several gateways):
    /// prepares what a new store needs, with the journal as
    /// [`MetaStore::open_with`] does. Unlike a redb store, whose file lock
    /// keeps every other process out, other gateways may be writing: the
    /// intents found here are not swept as a previous run's.
    ///
    /// With `lease` (a name and a term), the store is this gateway's alone
    /// while it holds that lease: it is claimed before anything is written
    /// (`Leased` when another gateway holds it), and every write
    /// transaction then checks, inside itself, that this gateway still
    /// holds it unexpired (else `LeaseLost`), so a gateway that lost its
    /// lease to another can change nothing: a SERIALIZABLE engine aborts
    /// whichever of the two transactions loses the race. The caller
    /// renews it ([`MetaStore::claim_lease`]) well within the term.
    pub fn on_engine(
        engine: Arc<dyn Engine>,
        journal: bool,
        lease: Option<(&str, u64)>,
    ) -> Result<Self> {
        let store = match lease {
            None => Self::new(engine, None, journal),
            Some((name, term_ms)) => {
                let mut store = Self::new(engine.clone(), None, journal);
                store.claim_lease(name, crate::now_unix_ms(), term_ms)?;
                store.engine = Arc::new(Fenced {
                    inner: engine,
                    lease: name.to_string(),
                    owner: store.owner.clone(),
                });
                store
            }
        };
        store.prepare_journal()?;
        Ok(store)
    }

    /// The store on `engine` that several gateways share, as this gateway
    /// joins it: the join (`Mismatch` when a live gateway is configured
    /// otherwise: see `members.rs`) comes before anything else is written,
    /// so a gateway refused changes nothing (its journal setting least of
    /// all).
    pub fn joined(
        engine: Arc<dyn Engine>,
        journal: bool,
        member: &crate::MemberRecord,
        now_unix_ms: u64,
        term_ms: u64,
    ) -> Result<Self> {
        let store = Self::new(engine, None, journal).with_grace_ms(SHARED_GRACE_MS);
        store.join(member, now_unix_ms, term_ms)?;
        store.prepare_journal()?;
        Ok(store)
    }

    /// What a new store needs of the journal's tables, and the journal
    /// marked off when it is.
    fn prepare_journal(&self) -> Result<()> {
        let journal = self.journal;
        kv::write(self.engine(), |kv| {
            journal::create_tables(kv)?;
            match journal {
                true => Ok(()),
                false => journal::journal_off(kv),
            }
        })
    }

    fn new(engine: Arc<dyn Engine>, redb: Option<Arc<Db>>, journal: bool) -> Self {
        Self {
            lease_engine: engine.clone(),
            engine,
            redb,
            grace_ms: DEFAULT_GRACE_MS,
            owner: format!("gw-{:016x}", rand::random::<u64>()).into(),
            journal,
            bucket_changes: Arc::default(),
            shared_bucket_changes: Arc::default(),
            removal_hooks: Arc::default(),
            intent_group: Arc::default(),
        }
    }

    /// Turns every first-release garbage entry into items, keeping its
    /// version and due time, and drops the old table.
    fn upgrade_legacy_garbage(txn: &WriteTransaction) -> Result<()> {
        let exists = txn
            .list_tables()?
            .any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&LEGACY_GARBAGE));
        if !exists {
            return Ok(());
        }
        let entries: Vec<GarbageRecord> = {
            let table = txn.open_table(LEGACY_GARBAGE)?;
            table
                .iter()?
                .map(|r| decode("garbage", r?.1.value()))
                .collect::<Result<_>>()?
        };
        kv::redb::within(txn, |kv| {
            for e in entries {
                garbage::add(
                    kv,
                    e.version,
                    unsized_blobs(e.blobs),
                    e.not_before_unix_ms,
                    e.not_before_unix_ms,
                )?;
            }
            Ok(())
        })?;
        txn.delete_table(LEGACY_GARBAGE)?;
        Ok(())
    }

    /// Moves every row of the table releases before versioning kept
    /// (`bucket 0x00 key`, one per key) into `versions`, keyed by the
    /// row's generation (format-1 rows: 0), and re-keys their repair
    /// queue entries; then drops the old table. One transaction: a crash
    /// leaves the store as it was.
    ///
    /// The upgrade is one way. Should an older release have written the
    /// old table after it (a rollback), its rows are newer than every
    /// version: they are moved with new sequence numbers, so they come
    /// first. Rows of a key holding NUL (accepted by releases before
    /// 2026-12-05) cannot be version rows: they stay in the old table,
    /// named on stderr, their fragments untouched.
    fn upgrade_legacy_objects(txn: &WriteTransaction) -> Result<bool> {
        let exists = txn
            .list_tables()?
            .any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&LEGACY_OBJECTS));
        if !exists {
            return Ok(false);
        }
        let rolled_back = !txn.open_table(OBJECTS)?.is_empty()?;
        let queued = kv::redb::within(txn, |kv| repair::queued_objects(kv))?;
        let mut moved = std::collections::HashMap::new();
        let mut kept_aside = Vec::new();
        loop {
            let Some((old_key, value)) = txn
                .open_table(LEGACY_OBJECTS)?
                .pop_first()?
                .map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
            else {
                break;
            };
            let Some(sep) = old_key.iter().position(|b| *b == 0) else {
                continue;
            };
            if old_key[sep + 1..].contains(&0) {
                kept_aside.push((old_key, value));
                continue;
            }
            let seq = match rolled_back {
                true => Self::next_in(txn, GENERATION_SEQUENCE)?,
                false => decode_summary(&value).map_or(0, |s| s.generation),
            };
            let mut row = old_key.clone();
            row.push(0);
            row.extend_from_slice(&(!seq).to_be_bytes());
            txn.open_table(OBJECTS)?
                .insert(row.as_slice(), value.as_slice())?;
            if queued.contains(&old_key) {
                moved.insert(old_key, row);
            }
        }
        for (key, value) in &kept_aside {
            eprintln!(
                "shardgate: object {:?} has a NUL in its key: kept aside in the old table, not served",
                String::from_utf8_lossy(key)
            );
            txn.open_table(LEGACY_OBJECTS)?
                .insert(key.as_slice(), value.as_slice())?;
        }
        kv::redb::within(txn, |kv| repair::rekey(kv, &moved))?;
        if kept_aside.is_empty() {
            txn.delete_table(LEGACY_OBJECTS)?;
        }
        Ok(true)
    }

    /// The id this process writes into the intents it opens.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Sets the garbage grace period (tests shorten it).
    pub fn with_grace_ms(mut self, grace_ms: u64) -> Self {
        self.grace_ms = grace_ms;
        self
    }

    /// Counts a change of a bucket record once its transaction ended: a
    /// committed one, and one whose engine failed (a commit whose answer
    /// was lost may have reached the database all the same); not one a
    /// rule refused.
    fn bucket_change_ended<T>(&self, outcome: &Result<T>) {
        let maybe_committed = match outcome {
            Ok(_) => true,
            Err(e) => matches!(
                e,
                MetaError::Database { .. } | MetaError::Store(_) | MetaError::Task(_)
            ),
        };
        if maybe_committed {
            self.bucket_changes
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// Journals a row's new image (`None`: removed) when the journal is on.
    fn log(
        &self,
        kv: &mut dyn KvWrite,
        table: JournalTable,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<()> {
        match self.journal {
            true => journal::record(kv, table, key, value),
            false => Ok(()),
        }
    }

    /// Writes a bucket's record, journaled.
    fn put_bucket_row(
        &self,
        kv: &mut dyn KvWrite,
        bucket: &str,
        record: &BucketRecord,
    ) -> Result<()> {
        let value = encode_bucket(record)?;
        kv.put(t::BUCKETS, bucket.as_bytes(), &value)?;
        members::bump(kv, members::BUCKET_CHANGES)?;
        self.log(kv, JournalTable::Buckets, bucket.as_bytes(), Some(&value))
    }

    /// A number that grows with every committed change of a bucket record
    /// in this process. Read it before reading a record to cache: while it
    /// stays the same, the record does too. A reopen of the database
    /// after an I/O error counts as a change: a commit that reported a
    /// failure may have reached the disk after all.
    pub fn bucket_changes(&self) -> u64 {
        self.bucket_changes
            .load(std::sync::atomic::Ordering::Acquire)
            + self
                .shared_bucket_changes
                .load(std::sync::atomic::Ordering::Acquire)
            + self.redb.as_ref().map_or(0, |db| db.reopens())
    }

    /// Takes in the store-wide change counters read by a poll
    /// ([`MetaStore::changes`]): a bucket changed by another gateway
    /// sharing the store changes [`MetaStore::bucket_changes`] too.
    pub fn observe_changes(&self, changes: &crate::Changes) {
        self.shared_bucket_changes
            .fetch_max(changes.buckets, std::sync::atomic::Ordering::AcqRel);
    }

    /// Writes a version's row, journaled.
    fn put_version_row(&self, kv: &mut dyn KvWrite, row: &[u8], value: &[u8]) -> Result<()> {
        kv.put(t::VERSIONS, row, value)?;
        self.log(kv, JournalTable::Versions, row, Some(value))
    }

    // --- leases ---

    /// Takes lease `name` for this store's owner until `now + ttl_ms`, or
    /// renews it; `Leased` while another owner holds it unexpired. A
    /// gateway killed without releasing its lease loses it when it
    /// expires.
    pub fn claim_lease(&self, name: &str, now_unix_ms: u64, ttl_ms: u64) -> Result<()> {
        let record = LeaseRecord {
            owner: self.owner.to_string(),
            until_unix_ms: now_unix_ms.saturating_add(ttl_ms),
        };
        let value = encode(&record)?;
        kv::write_apart(&*self.lease_engine, |kv| {
            if let Some(v) = kv.get(t::LEASES, name.as_bytes())? {
                let held: LeaseRecord = decode("lease", &v)?;
                if held.owner != record.owner && held.until_unix_ms > now_unix_ms {
                    return Err(MetaError::Leased {
                        name: name.to_string(),
                        owner: held.owner,
                        left_ms: held.until_unix_ms - now_unix_ms,
                    });
                }
            }
            kv.put(t::LEASES, name.as_bytes(), &value)
        })
    }

    /// Gives lease `name` up, if this store's owner holds it.
    pub fn release_lease(&self, name: &str) -> Result<()> {
        kv::write_apart(&*self.lease_engine, |kv| {
            if let Some(v) = kv.get(t::LEASES, name.as_bytes())?
                && decode::<LeaseRecord>("lease", &v)?.owner == *self.owner
            {
                kv.remove(t::LEASES, name.as_bytes())?;
            }
            Ok(())
        })
    }

    // --- buckets ---

    pub fn create_bucket(&self, bucket: &str, now_unix_ms: u64) -> Result<()> {
        self.create_bucket_with(bucket, false, None, now_unix_ms)
    }

    /// Creates a bucket, with Object Lock (and so versioning) when
    /// `object_lock`, owned by user `owner` (`None`: the configured user).
    pub fn create_bucket_with(
        &self,
        bucket: &str,
        object_lock: bool,
        owner: Option<&str>,
        now_unix_ms: u64,
    ) -> Result<()> {
        self.create_bucket_set(bucket, object_lock, owner, &[], now_unix_ms)
    }

    /// [`MetaStore::create_bucket_with`], the bucket created with
    /// `settings` applied in order (its ACL and Object Ownership, from
    /// CreateBucket's headers) in the same transaction.
    pub fn create_bucket_set(
        &self,
        bucket: &str,
        object_lock: bool,
        owner: Option<&str>,
        settings: &[BucketAccess],
        now_unix_ms: u64,
    ) -> Result<()> {
        let mut record = BucketRecord {
            created_unix_ms: now_unix_ms,
            ..BucketRecord::default()
        };
        set_extension(
            &mut record.extensions,
            BUCKET_INCARNATION_EXTENSION,
            Some(&rand::random::<u64>()),
            "bucket incarnation",
        )?;
        if object_lock {
            record.versioning = Versioning::Enabled;
            record.set_object_lock(&ObjectLock::default())?;
        }
        for setting in settings {
            record.set_access(setting)?;
        }
        let created = kv::write(self.engine(), |kv| {
            if kv.get(t::BUCKETS, bucket.as_bytes())?.is_some() {
                return Err(MetaError::BucketExists);
            }
            let mut record = record.clone();
            if let Some(owner) = owner {
                // Checked in the transaction that creates the bucket: a
                // user deleted meanwhile gets no bucket.
                if !user_named(kv, owner)? {
                    return Err(MetaError::NoSuchUser(owner.to_string()));
                }
                set_extension(
                    &mut record.extensions,
                    BUCKET_OWNER_EXTENSION,
                    Some(&owner.to_string()),
                    "bucket owner",
                )?;
            }
            self.put_bucket_row(kv, bucket, &record)
        });
        self.bucket_change_ended(&created);
        created
    }

    pub fn bucket(&self, bucket: &str) -> Result<Option<BucketRecord>> {
        kv::read(self.engine(), |kv| {
            kv.get(t::BUCKETS, bucket.as_bytes())?
                .map(|v| decode_bucket(&v))
                .transpose()
        })
    }

    /// All buckets, in name order.
    pub fn list_buckets(&self) -> Result<Vec<(String, BucketRecord)>> {
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            kv.scan(t::BUCKETS, ALL_KEYS, false, &mut |k, v| {
                out.push((utf8_key("bucket", k)?, decode_bucket(v)?));
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(out)
        })
    }

    // --- users ---

    /// Adds a user under `access_key`; the key and the name must be new.
    pub fn create_user(&self, access_key: &str, user: &UserRecord) -> Result<()> {
        let value = encode(user)?;
        kv::write(self.engine(), |kv| {
            if kv.get(t::USERS, access_key.as_bytes())?.is_some() {
                return Err(MetaError::UserExists(access_key.to_string()));
            }
            if user_named(kv, &user.name)? {
                return Err(MetaError::UserExists(user.name.clone()));
            }
            kv.put(t::USERS, access_key.as_bytes(), &value)?;
            members::bump(kv, members::USER_CHANGES)?;
            self.log(kv, JournalTable::Users, access_key.as_bytes(), Some(&value))
        })
    }

    /// Every user: (access key, record), by access key.
    pub fn users(&self) -> Result<Vec<(String, UserRecord)>> {
        kv::read(self.engine(), |kv| users_in(kv))
    }

    /// Removes a user, found by access key or name. A user who still owns
    /// buckets is kept (their buckets would have no owner but the
    /// configured user): `UserOwnsBuckets`.
    pub fn delete_user(&self, user: &str) -> Result<UserRecord> {
        kv::write(self.engine(), |kv| {
            // An access key first, exactly; else a name.
            let found = match kv.get(t::USERS, user.as_bytes())? {
                Some(v) => Some((user.to_string(), decode::<UserRecord>("user", &v)?)),
                None => users_in(kv)?.into_iter().find(|(_, r)| r.name == user),
            };
            let (key, record) = found.ok_or_else(|| MetaError::NoSuchUser(user.to_string()))?;
            let mut owned = Vec::new();
            kv.scan(t::BUCKETS, ALL_KEYS, false, &mut |b, v| {
                if decode_bucket(v)?.owner()?.as_deref() == Some(record.name.as_str()) {
                    owned.push(utf8_key("bucket", b)?);
                }
                Ok(ControlFlow::Continue(()))
            })?;
            if !owned.is_empty() {
                return Err(MetaError::UserOwnsBuckets {
                    user: record.name,
                    buckets: owned,
                });
            }
            kv.remove(t::USERS, key.as_bytes())?;
            members::bump(kv, members::USER_CHANGES)?;
            self.log(kv, JournalTable::Users, key.as_bytes(), None)?;
            Ok(record)
        })
    }

    /// Deletes an empty bucket: no object and no upload in progress.
    pub fn delete_bucket(&self, caller: &Writer, bucket: &str) -> Result<()> {
        let base = keys::bucket_base(bucket);
        let end = keys::successor(&base).unwrap_or_default();
        let range = (
            Bound::Included(base.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let deleted = kv::write(self.engine(), |kv| {
            match kv.get(t::BUCKETS, bucket.as_bytes())? {
                None => return Err(MetaError::NoSuchBucket),
                Some(v) => check_owner(&decode_bucket(&v)?, caller)?,
            }
            if kv.first_key(t::VERSIONS, range, false)?.is_some()
                || kv.first_key(t::UPLOADS, range, false)?.is_some()
            {
                return Err(MetaError::BucketNotEmpty);
            }
            kv.remove(t::BUCKETS, bucket.as_bytes())?;
            members::bump(kv, members::BUCKET_CHANGES)?;
            self.log(kv, JournalTable::Buckets, bucket.as_bytes(), None)
        });
        self.bucket_change_ended(&deleted);
        deleted
    }

    // --- intents and garbage ---

    /// The next value of a store-wide sequence, never one given before:
    /// for intents, at least past the highest id present (stores written
    /// before the sequence existed).
    fn next_in(txn: &WriteTransaction, sequence: &str) -> Result<u64> {
        kv::redb::within(txn, |kv| next_in(kv, sequence))
    }

    /// Records, durably, the blobs a write is about to create. Call before
    /// the first byte is written.
    pub fn begin_intent(
        &self,
        kind: IntentKind,
        blobs: &[(BackendId, BlobName)],
        now_unix_ms: u64,
    ) -> Result<IntentId> {
        let record = IntentRecord {
            kind,
            owner: self.owner.to_string(),
            created_unix_ms: now_unix_ms,
            blobs: blobs.to_vec(),
        };
        let encoded = encode_intent(&record)?;
        let group = &self.intent_group;
        let mut state = group.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push((ticket, encoded));
        // Group commit: whoever finds no commit running commits every
        // intent queued so far in one transaction (one fsync'd commit for
        // all of them), then hands over; the others wait for their answer.
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer.map(IntentId).map_err(MetaError::Task);
            }
            if state.committing {
                state = group.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.committing = true;
            let batch = std::mem::take(&mut state.queued);
            drop(state);
            // A panic must not leave the group without a committer.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_intents(&batch)
            }))
            .unwrap_or_else(|_| Err(MetaError::Task("the intents' commit panicked".into())));
            state = group.state.lock().unwrap_or_else(|p| p.into_inner());
            for (i, (ticket, _)) in batch.iter().enumerate() {
                let answer = match &outcome {
                    Ok(ids) => Ok(ids[i]),
                    Err(e) => Err(format!("recording the write's intent: {e}")),
                };
                state.answers.insert(*ticket, answer);
            }
            state.committing = false;
            group.done.notify_all();
        }
    }

    /// Records `batch`'s intents in one transaction; their ids, in order.
    fn commit_intents(&self, batch: &[(u64, Vec<u8>)]) -> Result<Vec<u64>> {
        kv::write(self.engine(), |kv| {
            let mut ids = Vec::with_capacity(batch.len());
            for (_, record) in batch {
                let id = next_in(kv, INTENT_SEQUENCE)?;
                kv.put(t::INTENTS, &u64_bytes(id), record)?;
                ids.push(id);
            }
            Ok(ids)
        })
    }

    /// The write of `intent` will not commit: its blobs become garbage. An
    /// intent already closed (committed, or abandoned before) is left as is.
    pub fn abandon_intent(&self, intent: IntentId, now_unix_ms: u64) -> Result<()> {
        kv::write(self.engine(), |kv| {
            intent_to_garbage(kv, intent.0, now_unix_ms)
        })
    }

    /// The open intents, by id.
    pub fn intents(&self) -> Result<Vec<(IntentId, IntentRecord)>> {
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            kv.scan(t::INTENTS, ALL_KEYS, false, &mut |k, v| {
                out.push((IntentId(kv::decode_u64(k)?), decode_intent(v)?));
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(out)
        })
    }

    /// Turns into garbage every intent that no live request will close:
    /// those of an owner that is gone (a previous run, or a gateway
    /// sharing the store whose member lease ran out: `members.rs`), and
    /// this owner's that are older than `older_than_ms` and not `live`.
    /// The age limit covers the moment between an intent's commit and its
    /// request marking it live. Another owner is asked again inside the
    /// transaction that sweeps, so a gateway renewing its lease at that
    /// moment keeps its intents. Returns the intents swept.
    pub fn sweep_intents(
        &self,
        now_unix_ms: u64,
        older_than_ms: u64,
        live: impl Fn(IntentId) -> bool,
    ) -> Result<Vec<IntentId>> {
        let cutoff = now_unix_ms.saturating_sub(older_than_ms);
        let candidates: Vec<(IntentId, String)> = self
            .intents()?
            .into_iter()
            .filter(|(id, r)| *r.owner != *self.owner || (r.created_unix_ms < cutoff && !live(*id)))
            .map(|(id, r)| (id, r.owner))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        kv::write(self.engine(), |kv| {
            let mut swept = Vec::with_capacity(candidates.len());
            let mut alive: BTreeMap<&str, bool> = BTreeMap::new();
            for (id, owner) in &candidates {
                if **owner != *self.owner {
                    let owner_live = match alive.get(owner.as_str()) {
                        Some(l) => *l,
                        None => {
                            let l = members::member_live(&*kv, owner, now_unix_ms)?;
                            alive.insert(owner, l);
                            l
                        }
                    };
                    if owner_live {
                        continue;
                    }
                }
                intent_to_garbage(kv, id.0, now_unix_ms)?;
                swept.push(*id);
            }
            Ok(swept)
        })
    }

    fn intent_to_garbage(txn: &WriteTransaction, intent: u64, now_unix_ms: u64) -> Result<()> {
        kv::redb::within(txn, |kv| intent_to_garbage(kv, intent, now_unix_ms))
    }

    /// Garbage items and open intents (for `/ready` and tests).
    pub fn pending_counts(&self) -> Result<(u64, u64)> {
        kv::read(self.engine(), |kv| {
            Ok((garbage::items(kv)?, kv.len(t::INTENTS)?))
        })
    }

    // --- objects ---

    /// Commits `manifest` as a new version of `bucket/key`, if `condition`
    /// holds, and closes `intent`. In a bucket that is not versioning the
    /// new version is the `null` one and replaces the previous `null`
    /// version, whose fragments become garbage in the same transaction;
    /// in a versioning bucket nothing is replaced. On any error the intent
    /// stays open: call [`MetaStore::abandon_intent`]. An intent abandoned
    /// meanwhile fails the commit with [`MetaError::IntentGone`]: its
    /// blobs are garbage.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        manifest: &Manifest,
        intent: Option<IntentId>,
        condition: &Condition,
        now_unix_ms: u64,
    ) -> Result<Written> {
        self.put_object_with(
            bucket,
            key,
            manifest,
            &VersionState::default(),
            intent,
            condition,
            now_unix_ms,
        )
    }

    /// [`MetaStore::put_object`] of a version created with `state`.
    #[allow(clippy::too_many_arguments)]
    pub fn put_object_with(
        &self,
        bucket: &str,
        key: &str,
        manifest: &Manifest,
        state: &VersionState,
        intent: Option<IntentId>,
        condition: &Condition,
        now_unix_ms: u64,
    ) -> Result<Written> {
        kv::write(self.engine(), |kv| {
            if let Some(intent) = intent {
                close_intent(kv, intent)?;
            }
            self.put_in(kv, bucket, key, manifest, state, condition, now_unix_ms)
        })
    }

    /// Replaces the manifest of version `seq` of `bucket/key` by `manifest`
    /// (the same version with some fragments moved or rebuilt: repair,
    /// drain, rebalance), if the row is still at `generation`, and closes
    /// `intent`. The fragments the new manifest no longer uses become
    /// garbage; the version keeps its state. A version deleted or changed
    /// meanwhile is `PreconditionFailed`: the caller's new fragments are
    /// then garbage (abandon the intent).
    #[allow(clippy::too_many_arguments)]
    pub fn replace_version(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        generation: u64,
        manifest: &Manifest,
        intent: Option<IntentId>,
        now_unix_ms: u64,
    ) -> Result<()> {
        let row = keys::version_key(bucket, key, seq);
        kv::write(self.engine(), |kv| {
            if let Some(intent) = intent {
                close_intent(kv, intent)?;
            }
            let Some(v) = kv.get(t::VERSIONS, &row)? else {
                return Err(MetaError::PreconditionFailed("the version is gone"));
            };
            let mut summary = decode_summary(&v)?;
            if summary.delete_marker {
                return Err(MetaError::PreconditionFailed(
                    "the version is a delete marker",
                ));
            }
            let old = decode_manifest(&v)?;
            if summary.generation != generation {
                return Err(MetaError::PreconditionFailed(
                    "the version changed meanwhile",
                ));
            }
            if old.version_id != manifest.version_id || old.size != manifest.size {
                return Err(MetaError::PreconditionFailed(
                    "the manifest is not the same version's",
                ));
            }
            summary.generation = next_in(kv, GENERATION_SEQUENCE)?;
            let value = encode_object(&summary, manifest)?;
            self.put_version_row(kv, &row, &value)?;
            repair::on_commit(kv, &row, Some(&old), Some(manifest), now_unix_ms)?;
            garbage::add(
                kv,
                Some(old.version_id),
                unused_by(&old, manifest),
                now_unix_ms + self.grace_ms,
                now_unix_ms,
            )
        })
    }

    /// Replaces the tags of the version of `bucket/key` that `selector`
    /// names; the manifest is untouched. Returns the version tagged.
    pub fn set_object_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        tags: &BTreeMap<String, String>,
    ) -> Result<ObjectVersion> {
        self.change_live_version(caller, bucket, key, selector, |_, summary| {
            summary.set_tags(tags)
        })
    }

    /// Replaces the ACL of the version of `bucket/key` that `selector`
    /// names, if it is still at `generation` (else `Changed`: it was built
    /// from the owner that version had). Returns the version.
    pub fn set_object_acl(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        acl: &Acl,
        generation: u64,
    ) -> Result<ObjectVersion> {
        self.change_live_version(caller, bucket, key, selector, |record, summary| {
            if summary.generation != generation {
                return Err(MetaError::Changed);
            }
            record.check_acl(acl)?;
            summary.set_acl(Some(acl))
        })
    }

    /// Changes the state of the version `selector` names (not a delete
    /// marker) in one transaction, if `caller` may; the manifest is
    /// untouched and the row gets a new generation.
    fn change_live_version(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        change: impl Fn(&BucketRecord, &mut ObjectSummary) -> Result<()>,
    ) -> Result<ObjectVersion> {
        kv::write(self.engine(), |kv| {
            let record = bucket_in(kv, bucket)?;
            check_owner(&record, caller)?;
            let (seq, bytes) = find_version(kv, bucket, key, selector)?.ok_or(match selector {
                VersionSelector::Latest => MetaError::NoSuchKey,
                _ => MetaError::NoSuchVersion,
            })?;
            let (summary, body) = split_object(&bytes)?;
            let mut summary = ObjectSummary::decode(summary)?;
            if summary.delete_marker {
                return Err(match selector {
                    VersionSelector::Latest => MetaError::NoSuchKey,
                    _ => MetaError::DeleteMarker,
                });
            }
            change(&record, &mut summary)?;
            summary.generation = next_in(kv, GENERATION_SEQUENCE)?;
            let value = encode_row(&summary, body)?;
            self.put_version_row(kv, &keys::version_key(bucket, key, seq), &value)?;
            Ok(summary.object_version(seq))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn put_in(
        &self,
        kv: &mut dyn KvWrite,
        bucket: &str,
        key: &str,
        manifest: &Manifest,
        state: &VersionState,
        condition: &Condition,
        now_unix_ms: u64,
    ) -> Result<Written> {
        let record = bucket_in(kv, bucket)?;
        check_owner(&record, &state.writer)?;
        check_key(key)?;
        let versioning = record.versioning;
        let lock = record.object_lock()?;
        let retention = match (&lock, state.retention) {
            (None, Some(_)) => return Err(MetaError::NoObjectLock),
            (None, None) if state.legal_hold => return Err(MetaError::NoObjectLock),
            (Some(_), Some(r)) => Some(r),
            (Some(l), None) => l.default_retention.map(|d| d.from(now_unix_ms)),
            (None, None) => None,
        };
        let current = find_version(kv, bucket, key, &VersionSelector::Latest)?
            .map(|(_, bytes)| decode_summary(&bytes))
            .transpose()?
            .filter(|s| !s.delete_marker);
        match (condition, &current) {
            (Condition::IfAbsent, Some(_)) => {
                return Err(MetaError::PreconditionFailed("the object exists"));
            }
            (Condition::IfMatch(_), None) => {
                return Err(MetaError::PreconditionFailed("the object does not exist"));
            }
            (Condition::IfMatch(etag), Some(cur)) if etag != "*" && *etag != cur.etag => {
                return Err(MetaError::PreconditionFailed("the ETag does not match"));
            }
            _ => {}
        }
        let null_version = versioning != Versioning::Enabled;
        let replaced = if null_version {
            self.remove_version_in(
                kv,
                bucket,
                key,
                &VersionSelector::Null,
                Removal {
                    bypass_governance: false,
                    kept_by: Some(manifest),
                },
                now_unix_ms,
            )?
            .map(|(_, summary)| summary)
        } else {
            None
        };
        let seq = next_in(kv, GENERATION_SEQUENCE)?;
        let mut summary = ObjectSummary::of(manifest, seq);
        summary.null_version = null_version;
        summary.set_tags(&state.tags)?;
        // Ownership as it is at the commit: under BucketOwnerEnforced (set
        // while the body streamed, or since the upload began) the bucket's
        // owner owns the version, whatever was asked.
        let acl = match &state.acl {
            Some(_) if record.ownership()? == Some(Ownership::BucketOwnerEnforced) => None,
            Some(acl) => {
                record.check_acl(acl)?;
                Some(acl)
            }
            None => None,
        };
        summary.set_acl(acl)?;
        summary.retention = retention.map(|r| (r.mode as u8, r.until_unix_ms));
        summary.legal_hold = state.legal_hold;
        let row = keys::version_key(bucket, key, seq);
        let value = encode_object(&summary, manifest)?;
        self.put_version_row(kv, &row, &value)?;
        repair::on_commit(kv, &row, None, Some(manifest), now_unix_ms)?;
        Ok(Written {
            version: summary.object_version(seq),
            versioning,
            replaced,
        })
    }

    /// Removes the version `selector` names, if there is one: its
    /// fragments become garbage (after the grace readers get), but for
    /// those `removal.kept_by` still uses. Returns it. A version under
    /// Object Lock is `Locked`: this is the one place a version's row
    /// goes, so no path (S3, garbage collection, repair) can drop a
    /// locked version's fragments.
    fn remove_version_in(
        &self,
        kv: &mut dyn KvWrite,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        removal: Removal<'_>,
        now_unix_ms: u64,
    ) -> Result<Option<(ObjectVersion, ObjectSummary)>> {
        let Some((seq, bytes)) = find_version(kv, bucket, key, selector)? else {
            return Ok(None);
        };
        let summary = decode_summary(&bytes)?;
        if let Some(why) = summary.lock_at(now_unix_ms, removal.bypass_governance) {
            return Err(MetaError::Locked(why));
        }
        let row = keys::version_key(bucket, key, seq);
        kv.remove(t::VERSIONS, &row)?;
        self.log(kv, JournalTable::Versions, &row, None)?;
        if summary.delete_marker {
            count_markers(kv, -1)?;
        } else {
            let old = decode_manifest(&bytes)?;
            self.version_removed(&old);
            repair::on_commit(kv, &row, Some(&old), None, now_unix_ms)?;
            let gone = match removal.kept_by {
                Some(new) => unused_by(&old, new),
                None => segment_blobs(&old.segments),
            };
            garbage::add(
                kv,
                Some(old.version_id),
                gone,
                now_unix_ms + self.grace_ms,
                now_unix_ms,
            )?;
        }
        Ok(Some((summary.object_version(seq), summary)))
    }

    /// Commits many objects of one bucket in one transaction, with no
    /// condition: the bulk path for imports (and restoring from a journal).
    pub fn put_objects_batch(
        &self,
        bucket: &str,
        objects: &[(String, Manifest)],
        now_unix_ms: u64,
    ) -> Result<()> {
        kv::write(self.engine(), |kv| {
            for (key, manifest) in objects {
                self.put_in(
                    kv,
                    bucket,
                    key,
                    manifest,
                    &VersionState::default(),
                    &Condition::Always,
                    now_unix_ms,
                )?;
            }
            Ok(())
        })
    }

    /// The version of `bucket/key` that `selector` names (a delete marker
    /// has no manifest). `NoSuchBucket` when the bucket does not exist;
    /// `Ok(None)` when the version does not.
    pub fn object_version(
        &self,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
    ) -> Result<Option<VersionRow>> {
        kv::read(self.engine(), |kv| {
            match find_version(kv, bucket, key, selector)? {
                Some((seq, bytes)) => Ok(Some(decode_version(seq, &bytes)?)),
                None if kv.get(t::BUCKETS, bucket.as_bytes())?.is_none() => {
                    Err(MetaError::NoSuchBucket)
                }
                None => Ok(None),
            }
        })
    }

    /// The current version of `bucket/key`: its summary (with its
    /// generation) and manifest; `None` when there is none or the current
    /// version is a delete marker.
    pub fn object_row(&self, bucket: &str, key: &str) -> Result<Option<(ObjectSummary, Manifest)>> {
        Ok(self
            .object_version(bucket, key, &VersionSelector::Latest)?
            .and_then(|r| Some((r.summary, r.manifest?))))
    }

    /// Version `seq` of `bucket/key`, whatever it is now; `None` when it
    /// (or its bucket) is gone.
    pub fn version_at(&self, bucket: &str, key: &str, seq: u64) -> Result<Option<VersionRow>> {
        let row = keys::version_key(bucket, key, seq);
        kv::read(self.engine(), |kv| {
            kv.get(t::VERSIONS, &row)?
                .map(|v| decode_version(seq, &v))
                .transpose()
        })
    }

    /// Up to `limit` stored versions (delete markers are passed over) of
    /// every bucket after row `cursor` (all from the start when `None`),
    /// in row order. The row key of the last is the next cursor; none
    /// means the walk is over. Rows that do not decode (damaged, or
    /// written by a newer version) are passed over, so a walk never stops
    /// at one, and returned beside as (bucket, key, why) to be reported.
    #[allow(clippy::type_complexity)]
    pub fn objects_after(
        &self,
        cursor: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<StoredVersion>, Vec<(String, String, String)>)> {
        let lower = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            let mut unreadable = Vec::new();
            if limit == 0 {
                return Ok((out, unreadable));
            }
            kv.scan(
                t::VERSIONS,
                (lower, Bound::Unbounded),
                false,
                &mut |row, v| {
                    let Some((bucket, key, seq)) = keys::split_version_key(row) else {
                        unreadable.push((
                            String::from_utf8_lossy(row).into_owned(),
                            String::new(),
                            "not a version row".into(),
                        ));
                        return Ok(ControlFlow::Continue(()));
                    };
                    let bucket = String::from_utf8_lossy(bucket).into_owned();
                    let key = String::from_utf8_lossy(key).into_owned();
                    match decode_version(seq, v) {
                        Ok(VersionRow {
                            manifest: Some(manifest),
                            summary,
                            ..
                        }) => out.push(StoredVersion {
                            row: row.to_vec(),
                            bucket,
                            key,
                            seq,
                            generation: summary.generation,
                            manifest,
                        }),
                        Ok(_) => {}
                        Err(e) => unreadable.push((bucket, key, e.to_string())),
                    }
                    Ok(match out.len() >= limit {
                        true => ControlFlow::Break(()),
                        false => ControlFlow::Continue(()),
                    })
                },
            )?;
            Ok((out, unreadable))
        })
    }

    /// How many versions the store holds (current or not; delete markers
    /// are not counted).
    pub fn object_count(&self) -> Result<u64> {
        kv::read(self.engine(), |kv| {
            let rows = kv.len(t::VERSIONS)?;
            let markers = kv
                .get_u64(t::COUNTERS, DELETE_MARKERS.as_bytes())?
                .unwrap_or(0);
            Ok(rows.saturating_sub(markers))
        })
    }

    /// What each backend holds, by a walk of every manifest (metadata
    /// only; about a second per million versions). Fragments recorded
    /// Missing are not counted.
    pub fn usage_by_backend(&self) -> Result<BTreeMap<BackendId, Usage>> {
        kv::read(self.engine(), |kv| {
            let mut usage: BTreeMap<BackendId, Usage> = BTreeMap::new();
            let mut count = |segment: &Segment, part: bool| {
                let len = segment.geometry().fragment_len();
                for f in &segment.fragments {
                    if f.state == shardgate_core::FragmentState::Stored {
                        let u = usage.entry(f.backend.clone()).or_default();
                        if part {
                            u.part_fragments += 1;
                            u.part_bytes += len;
                        } else {
                            u.fragments += 1;
                            u.bytes += len;
                        }
                    }
                }
            };
            kv.scan(t::VERSIONS, ALL_KEYS, false, &mut |_, v| {
                if decode_summary(v).is_ok_and(|s| !s.delete_marker)
                    && let Ok(m) = decode_manifest(v)
                {
                    m.segments.iter().for_each(|s| count(s, false));
                }
                Ok(ControlFlow::Continue(()))
            })?;
            kv.scan(t::PARTS, ALL_KEYS, false, &mut |_, v| {
                if let Ok(p) = decode_part(v) {
                    count(&p.segment, true);
                }
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(usage)
        })
    }

    /// Whether an open intent (a write in flight) names a blob on `backend`.
    pub fn intents_on(&self, backend: &BackendId) -> Result<usize> {
        Ok(self
            .intents()?
            .iter()
            .filter(|(_, r)| r.blobs.iter().any(|(b, _)| b == backend))
            .count())
    }

    /// Replaces a job's state only if it is still there (a job cancelled
    /// meanwhile is not brought back). Returns whether it was.
    pub fn update_job_state(&self, job: &str, state: &[u8]) -> Result<bool> {
        kv::write(self.engine(), |kv| {
            let present = kv.get(t::JOBS, job.as_bytes())?.is_some();
            if present {
                kv.put(t::JOBS, job.as_bytes(), state)?;
            }
            Ok(present)
        })
    }

    /// A background job's saved state.
    pub fn job_state(&self, job: &str) -> Result<Option<Vec<u8>>> {
        kv::read(self.engine(), |kv| kv.get(t::JOBS, job.as_bytes()))
    }

    /// Saves a background job's state.
    pub fn set_job_state(&self, job: &str, state: &[u8]) -> Result<()> {
        kv::write(self.engine(), |kv| {
            kv.put(t::JOBS, job.as_bytes(), state)?;
            members::bump(kv, members::JOB_CHANGES)
        })
    }

    /// Every job state whose key starts with `prefix`.
    pub fn job_states_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            let lower = Bound::Included(prefix.as_bytes());
            kv.scan(t::JOBS, (lower, Bound::Unbounded), false, &mut |k, v| {
                if !k.starts_with(prefix.as_bytes()) {
                    return Ok(ControlFlow::Break(()));
                }
                out.push((utf8_key("job", k)?, v.to_vec()));
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(out)
        })
    }

    /// Forgets a background job's state.
    pub fn delete_job_state(&self, job: &str) -> Result<()> {
        kv::write(self.engine(), |kv| {
            kv.remove(t::JOBS, job.as_bytes())?;
            members::bump(kv, members::JOB_CHANGES)
        })
    }

    /// The current version of `bucket/key`. `NoSuchBucket` when the bucket
    /// does not exist; `Ok(None)` when the key does not, or its current
    /// version is a delete marker.
    pub fn object(&self, bucket: &str, key: &str) -> Result<Option<Manifest>> {
        Ok(self.object_row(bucket, key)?.map(|(_, m)| m))
    }

    /// Deletes `bucket/key` as S3 does without a version id: in a bucket
    /// that is not versioning, the object goes (its fragments become
    /// garbage); in a versioning bucket a delete marker becomes the
    /// current version; in a suspended one, a `null` delete marker
    /// replaces the `null` version. Deleting a missing key is not an error.
    pub fn delete_object(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        now_unix_ms: u64,
    ) -> Result<Deleted> {
        kv::write(self.engine(), |kv| {
            check_owner(&bucket_in(kv, bucket)?, caller)?;
            self.delete_in(kv, bucket, key, now_unix_ms)
        })
    }

    /// Deletes the version `selector` names for good (S3's DELETE with a
    /// version id): its fragments become garbage. Returns it, `None` when
    /// there was no such version.
    pub fn delete_version(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Option<(ObjectVersion, ObjectSummary)>> {
        kv::write(self.engine(), |kv| {
            check_owner(&bucket_in(kv, bucket)?, caller)?;
            self.remove_version_in(
                kv,
                bucket,
                key,
                selector,
                Removal::bypassing(bypass_governance),
                now_unix_ms,
            )
        })
    }

    /// Deletes several keys (or versions) of one bucket in one
    /// transaction; each answers on its own (a locked version is an error
    /// for its entry only).
    pub fn delete_objects(
        &self,
        caller: &Writer,
        bucket: &str,
        keys: &[(String, VersionSelector)],
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<Vec<Result<Deleted>>> {
        kv::write(self.engine(), |kv| {
            check_owner(&bucket_in(kv, bucket)?, caller)?;
            let mut out = Vec::with_capacity(keys.len());
            for (k, selector) in keys {
                let one = match selector {
                    VersionSelector::Latest => self.delete_in(kv, bucket, k, now_unix_ms),
                    s => self
                        .remove_version_in(
                            kv,
                            bucket,
                            k,
                            s,
                            Removal::bypassing(bypass_governance),
                            now_unix_ms,
                        )
                        .map(|removed| Deleted {
                            marker: None,
                            removed,
                        }),
                };
                match one {
                    Err(e @ MetaError::Locked(_)) => out.push(Err(e)),
                    Err(e) => return Err(e),
                    Ok(d) => out.push(Ok(d)),
                }
            }
            Ok(out)
        })
    }

    fn delete_in(
        &self,
        kv: &mut dyn KvWrite,
        bucket: &str,
        key: &str,
        now_unix_ms: u64,
    ) -> Result<Deleted> {
        let versioning = bucket_in(kv, bucket)?.versioning;
        check_key(key)?;
        let removed = match versioning {
            Versioning::Enabled => None,
            Versioning::Unversioned | Versioning::Suspended => self.remove_version_in(
                kv,
                bucket,
                key,
                &VersionSelector::Null,
                Removal::default(),
                now_unix_ms,
            )?,
        };
        let marker = match versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled | Versioning::Suspended => {
                let seq = next_in(kv, GENERATION_SEQUENCE)?;
                let null = versioning == Versioning::Suspended;
                let summary = ObjectSummary::marker(seq, null, now_unix_ms);
                self.put_version_row(
                    kv,
                    &keys::version_key(bucket, key, seq),
                    &encode_row(&summary, &[])?,
                )?;
                count_markers(kv, 1)?;
                Some(summary.object_version(seq))
            }
        };
        Ok(Deleted { marker, removed })
    }

    /// Replaces the bucket's tags (none: deletes them).
    pub fn set_bucket_tags(
        &self,
        caller: &Writer,
        bucket: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.update_bucket(caller, bucket, |record| record.set_tags(tags))
    }

    /// Sets or deletes the bucket's policy or Public Access Block.
    pub fn set_bucket_access(
        &self,
        caller: &Writer,
        bucket: &str,
        setting: &BucketAccess,
    ) -> Result<()> {
        self.update_bucket(caller, bucket, |record| record.set_access(setting))
    }

    /// Sets the bucket's CORS rules (none: removes them).
    pub fn set_bucket_cors(&self, caller: &Writer, bucket: &str, rules: &[CorsRule]) -> Result<()> {
        self.update_bucket(caller, bucket, |record| record.set_cors(rules))
    }

    /// Changes a bucket's record in one transaction, if `caller` may.
    fn update_bucket(
        &self,
        caller: &Writer,
        bucket: &str,
        change: impl Fn(&mut BucketRecord) -> Result<()>,
    ) -> Result<()> {
        let updated = kv::write(self.engine(), |kv| {
            let mut record = bucket_in(kv, bucket)?;
            check_owner(&record, caller)?;
            change(&mut record)?;
            self.put_bucket_row(kv, bucket, &record)
        });
        self.bucket_change_ended(&updated);
        updated
    }

    /// Sets the bucket's Object Lock configuration (turning Object Lock on
    /// if it was off): only on a bucket with versioning enabled.
    pub fn set_object_lock(&self, caller: &Writer, bucket: &str, lock: &ObjectLock) -> Result<()> {
        self.update_bucket(caller, bucket, |record| {
            if record.versioning != Versioning::Enabled {
                return Err(MetaError::InvalidBucketState(
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
                ));
            }
            record.set_object_lock(lock)
        })
    }

    /// Sets the retention of the version `selector` names (`None`: none).
    /// A retention in force may only be lengthened (or a governance one
    /// made compliance); a governance one may be shortened or removed
    /// when `bypass_governance`, a compliance one never. Returns the
    /// version.
    #[allow(clippy::too_many_arguments)]
    pub fn set_retention(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        retention: Option<Retention>,
        bypass_governance: bool,
        now_unix_ms: u64,
    ) -> Result<ObjectVersion> {
        self.update_version(caller, bucket, key, selector, |summary| {
            if let Some(old) = summary
                .retention()
                .filter(|r| r.until_unix_ms > now_unix_ms)
            {
                let weaker = match retention {
                    None => true,
                    Some(new) => {
                        new.until_unix_ms < old.until_unix_ms
                            || (old.mode == LockMode::Compliance
                                && new.mode != LockMode::Compliance)
                    }
                };
                if weaker && (old.mode == LockMode::Compliance || !bypass_governance) {
                    return Err(MetaError::Locked(match old.mode {
                        LockMode::Compliance => {
                            "compliance retention cannot be shortened or removed"
                        }
                        LockMode::Governance => {
                            "governance retention needs the bypass to be shortened or removed"
                        }
                    }));
                }
            }
            summary.retention = retention.map(|r| (r.mode as u8, r.until_unix_ms));
            Ok(())
        })
    }

    /// Sets or lifts the legal hold of the version `selector` names.
    pub fn set_legal_hold(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        on: bool,
    ) -> Result<ObjectVersion> {
        self.update_version(caller, bucket, key, selector, |summary| {
            summary.legal_hold = on;
            Ok(())
        })
    }

    /// Changes a version's Object Lock state (its manifest untouched), in
    /// a bucket with Object Lock.
    fn update_version(
        &self,
        caller: &Writer,
        bucket: &str,
        key: &str,
        selector: &VersionSelector,
        change: impl Fn(&mut ObjectSummary) -> Result<()>,
    ) -> Result<ObjectVersion> {
        kv::write(self.engine(), |kv| {
            let record = bucket_in(kv, bucket)?;
            check_owner(&record, caller)?;
            if record.object_lock()?.is_none() {
                return Err(MetaError::NoObjectLock);
            }
            let (seq, bytes) = find_version(kv, bucket, key, selector)?.ok_or(match selector {
                VersionSelector::Latest => MetaError::NoSuchKey,
                _ => MetaError::NoSuchVersion,
            })?;
            let (summary, body) = split_object(&bytes)?;
            let mut summary = ObjectSummary::decode(summary)?;
            if summary.delete_marker {
                return Err(MetaError::DeleteMarker);
            }
            change(&mut summary)?;
            summary.generation = next_in(kv, GENERATION_SEQUENCE)?;
            let value = encode_row(&summary, body)?;
            self.put_version_row(kv, &keys::version_key(bucket, key, seq), &value)?;
            Ok(summary.object_version(seq))
        })
    }

    /// Sets the bucket's versioning to `Enabled` or `Suspended`.
    pub fn set_versioning(
        &self,
        caller: &Writer,
        bucket: &str,
        versioning: Versioning,
    ) -> Result<()> {
        if versioning == Versioning::Unversioned {
            return Err(MetaError::PreconditionFailed(
                "versioning can be enabled or suspended, not turned off",
            ));
        }
        self.update_bucket(caller, bucket, |record| {
            if versioning == Versioning::Suspended && record.object_lock()?.is_some() {
                return Err(MetaError::InvalidBucketState(
                    "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.",
                ));
            }
            record.versioning = versioning;
            Ok(())
        })
    }

    // --- multipart uploads ---

    /// Starts an upload; returns its id (time-ordered, so a key's uploads
    /// list in initiation order).
    pub fn create_upload(&self, bucket: &str, key: &str, record: &UploadRecord) -> Result<String> {
        let upload = VersionId::new(record.initiated_unix_ms).to_string();
        let value = encode(record)?;
        let row = keys::upload_key(bucket, key, &upload);
        kv::write(self.engine(), |kv| {
            bucket_in(kv, bucket)?;
            kv.put(t::UPLOADS, &row, &value)
        })?;
        Ok(upload)
    }

    /// The upload `upload` of `bucket/key`.
    pub fn upload(&self, bucket: &str, key: &str, upload: &str) -> Result<UploadRecord> {
        let row = keys::upload_key(bucket, key, upload);
        kv::read(self.engine(), |kv| {
            if kv.get(t::BUCKETS, bucket.as_bytes())?.is_none() {
                return Err(MetaError::NoSuchBucket);
            }
            match kv.get(t::UPLOADS, &row)? {
                Some(v) => decode("upload", &v),
                None => Err(MetaError::NoSuchUpload),
            }
        })
    }

    /// Records part `number` of an upload and closes `intent`; a part
    /// uploaded again replaces the earlier one, whose fragments become
    /// garbage. If the upload is gone (aborted meanwhile), the part's own
    /// blobs become garbage and `NoSuchUpload` is returned.
    #[allow(clippy::too_many_arguments)]
    pub fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        number: u32,
        part: &PartRecord,
        intent: IntentId,
        now_unix_ms: u64,
    ) -> Result<()> {
        let upload_row = keys::upload_key(bucket, key, upload);
        let part_row = keys::part_key(upload, number);
        let value = encode_part(part)?;
        let recorded = kv::write(self.engine(), |kv| {
            if kv.get(t::UPLOADS, &upload_row)?.is_none() {
                // Committed: the part's blobs are garbage either way.
                intent_to_garbage(kv, intent.0, now_unix_ms)?;
                return Ok(false);
            }
            close_intent(kv, intent)?;
            let old = kv.get(t::PARTS, &part_row)?;
            kv.put(t::PARTS, &part_row, &value)?;
            if let Some(old) = old {
                let old = decode_part(&old)?;
                garbage::add(
                    kv,
                    None,
                    segment_blobs(std::slice::from_ref(&old.segment)),
                    now_unix_ms,
                    now_unix_ms,
                )?;
            }
            Ok(true)
        })?;
        match recorded {
            true => Ok(()),
            false => Err(MetaError::NoSuchUpload),
        }
    }

    /// Parts of an upload numbered above `after`, up to `max`, and whether
    /// more follow.
    pub fn list_parts(
        &self,
        upload: &str,
        after: u32,
        max: usize,
    ) -> Result<(Vec<(u32, PartRecord)>, bool)> {
        if after == u32::MAX {
            return Ok((Vec::new(), false));
        }
        let start = keys::part_key(upload, after.saturating_add(1));
        let end = keys::successor(&keys::upload_prefix(upload)).unwrap_or_default();
        let range = (
            Bound::Included(start.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            let mut more = false;
            kv.scan(t::PARTS, range, false, &mut |k, v| {
                if out.len() == max {
                    more = true;
                    return Ok(ControlFlow::Break(()));
                }
                out.push((part_number(k), decode_part(v)?));
                Ok(ControlFlow::Continue(()))
            })?;
            Ok((out, more))
        })
    }

    /// Completes an upload with the `chosen` parts (number, ETag), in
    /// ascending order, each but the last at least `min_part_bytes`.
    /// `build` makes the object's manifest and first state from the chosen
    /// parts' records (it may run more than once: an engine of several
    /// writers runs a conflicting transaction again).
    /// Parts not chosen become garbage; so does the version it replaces.
    #[allow(clippy::too_many_arguments)]
    pub fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        chosen: &[(u32, String)],
        min_part_bytes: u64,
        condition: &Condition,
        now_unix_ms: u64,
        mut build: impl FnMut(Vec<(u32, PartRecord)>) -> Result<(Manifest, VersionState), Refusal>,
    ) -> Result<(Manifest, Written), CompleteError> {
        let upload_row = keys::upload_key(bucket, key, upload);
        let asked: Vec<(u32, String)> = chosen
            .iter()
            .map(|(n, e)| (*n, e.trim_matches('"').to_string()))
            .collect();
        kv::write_or(self.engine(), |kv| {
            bucket_in(kv, bucket)?;
            if kv.get(t::UPLOADS, &upload_row)?.is_none() {
                let done = kv
                    .get(t::COMPLETED_UPLOADS, &upload_row)?
                    .map(|v| decode::<CompletedUpload>("completed upload", &v));
                return match done.transpose()? {
                    Some(done) if done.parts == asked => Err(CompleteError::Done(Box::new(done))),
                    _ => Err(MetaError::NoSuchUpload.into()),
                };
            }
            let mut stored = take_parts(kv, upload)?;
            if chosen.is_empty() {
                return Err(CompleteError::NoParts);
            }
            let mut picked = Vec::with_capacity(chosen.len());
            let mut previous = 0u32;
            for (i, (number, etag)) in chosen.iter().enumerate() {
                if *number <= previous {
                    return Err(CompleteError::PartOrder);
                }
                previous = *number;
                let Some(part) = stored.remove(number) else {
                    return Err(CompleteError::InvalidPart(*number));
                };
                if part.etag != etag.trim_matches('"') {
                    return Err(CompleteError::InvalidPart(*number));
                }
                if i + 1 < chosen.len() && part.size < min_part_bytes {
                    return Err(CompleteError::TooSmall(*number));
                }
                picked.push((*number, part));
            }
            let (manifest, state) = build(picked).map_err(CompleteError::Refused)?;
            let written =
                self.put_in(kv, bucket, key, &manifest, &state, condition, now_unix_ms)?;
            let unused: Vec<Segment> = stored.into_values().map(|p| p.segment).collect();
            garbage::add(kv, None, segment_blobs(&unused), now_unix_ms, now_unix_ms)?;
            kv.remove(t::UPLOADS, &upload_row)?;
            let done = CompletedUpload {
                completed_unix_ms: now_unix_ms,
                parts: asked.clone(),
                etag: manifest.etag.clone(),
                version_id: written.shown_id(),
                user_metadata: manifest.user_metadata.clone(),
            };
            kv.put(t::COMPLETED_UPLOADS, &upload_row, &encode(&done)?)?;
            Ok((manifest, written))
        })
    }

    /// Aborts an upload: its parts' fragments become garbage.
    pub fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        now_unix_ms: u64,
    ) -> Result<()> {
        let row = keys::upload_key(bucket, key, upload);
        kv::write(self.engine(), |kv| {
            bucket_in(kv, bucket)?;
            if kv.remove(t::UPLOADS, &row)?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            let segments: Vec<Segment> = take_parts(kv, upload)?
                .into_values()
                .map(|p| p.segment)
                .collect();
            garbage::add(kv, None, segment_blobs(&segments), now_unix_ms, now_unix_ms)
        })
    }

    /// Uploads initiated before `before_unix_ms`, as (bucket, key, upload).
    pub fn uploads_older_than(&self, before_unix_ms: u64) -> Result<Vec<(String, String, String)>> {
        kv::read(self.engine(), |kv| {
            let mut out = Vec::new();
            kv.scan(t::UPLOADS, ALL_KEYS, false, &mut |k, v| {
                let record: UploadRecord = decode("upload", v)?;
                if record.initiated_unix_ms >= before_unix_ms {
                    return Ok(ControlFlow::Continue(()));
                }
                let mut fields = k.split(|b| *b == 0);
                let bucket = fields.next().unwrap_or_default();
                let upload = k.rsplit(|b| *b == 0).next().unwrap_or_default();
                let key_len = k.len().saturating_sub(bucket.len() + upload.len() + 2);
                let key = k
                    .get(bucket.len() + 1..bucket.len() + 1 + key_len)
                    .unwrap_or_default();
                out.push((
                    String::from_utf8_lossy(bucket).into_owned(),
                    String::from_utf8_lossy(key).into_owned(),
                    String::from_utf8_lossy(upload).into_owned(),
                ));
                Ok(ControlFlow::Continue(()))
            })?;
            Ok(out)
        })
    }

    /// Forgets the completions older than `before_unix_ms`; returns how
    /// many.
    pub fn forget_completed_uploads(&self, before_unix_ms: u64) -> Result<u64> {
        kv::write(self.engine(), |kv| {
            let mut old = Vec::new();
            kv.scan(t::COMPLETED_UPLOADS, ALL_KEYS, false, &mut |k, v| {
                let expired = decode::<CompletedUpload>("completed upload", v)
                    .map_or(true, |d| d.completed_unix_ms < before_unix_ms);
                if expired {
                    old.push(k.to_vec());
                }
                Ok(ControlFlow::Continue(()))
            })?;
            for k in &old {
                kv.remove(t::COMPLETED_UPLOADS, k)?;
            }
            Ok(old.len() as u64)
        })
    }
}

/// The bucket's record, read inside a transaction.
fn bucket_in(kv: &(impl KvRead + ?Sized), bucket: &str) -> Result<BucketRecord> {
    match kv.get(t::BUCKETS, bucket.as_bytes())? {
        Some(v) => decode_bucket(&v),
        None => Err(MetaError::NoSuchBucket),
    }
}

/// Adds `delta` to the count of delete markers.
fn count_markers(kv: &mut dyn KvWrite, delta: i64) -> Result<()> {
    let now = kv
        .get_u64(t::COUNTERS, DELETE_MARKERS.as_bytes())?
        .unwrap_or(0);
    kv.put(
        t::COUNTERS,
        DELETE_MARKERS.as_bytes(),
        &u64_bytes(now.saturating_add_signed(delta)),
    )
}

/// A part row's number (its key's last 4 bytes).
fn part_number(key: &[u8]) -> u32 {
    key.last_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b))
        .unwrap_or_default()
}

/// Removes an upload's part records and returns them by number.
fn take_parts(kv: &mut dyn KvWrite, upload: &str) -> Result<BTreeMap<u32, PartRecord>> {
    let prefix = keys::upload_prefix(upload);
    let end = keys::successor(&prefix).unwrap_or_default();
    let range = (
        Bound::Included(prefix.as_slice()),
        Bound::Excluded(end.as_slice()),
    );
    let mut out = BTreeMap::new();
    kv.scan(t::PARTS, range, false, &mut |k, v| {
        out.insert(part_number(k), decode_part(v)?);
        Ok(ControlFlow::Continue(()))
    })?;
    kv.remove_range(t::PARTS, range)?;
    Ok(out)
}

pub(crate) const GENERATION_SEQUENCE_KEY: &str = GENERATION_SEQUENCE;
pub(crate) const DELETE_MARKERS_KEY: &str = DELETE_MARKERS;

pub(crate) fn decode_upload(bytes: &[u8]) -> Result<UploadRecord> {
    decode("upload", bytes)
}

/// Why an upload could not complete.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("the upload lists no part")]
    NoParts,
    #[error("the parts are not in ascending order")]
    PartOrder,
    #[error("part {0} was not uploaded, or its ETag does not match")]
    InvalidPart(u32),
    #[error("part {0} is smaller than the minimum part size, and is not the last")]
    TooSmall(u32),
    /// The caller's own check of the parts taken (their checksums) failed:
    /// nothing changed.
    #[error("{0}")]
    Refused(Refusal),
    /// The same completion ran before (a client retrying after a lost
    /// answer): its answer, nothing changed.
    #[error("the upload was completed already")]
    Done(Box<CompletedUpload>),
}

/// Why a caller's check of the parts refused a completion (its own error,
/// carried through the store unchanged).
pub type Refusal = Box<dyn std::error::Error + Send + Sync>;

macro_rules! complete_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for CompleteError {
            fn from(e: $t) -> Self {
                Self::Meta(e.into())
            }
        }
    )*};
}
complete_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Every record's decoder and the encoders of the formats still written,
/// for the golden-bytes tests (`tests/golden.rs`). Not an API.
#[doc(hidden)]
pub mod formats {
    use super::*;

    pub fn decode_bucket(bytes: &[u8]) -> Result<BucketRecord> {
        super::decode_bucket(bytes)
    }
    pub fn encode_bucket(r: &BucketRecord) -> Result<Vec<u8>> {
        super::encode_bucket(r)
    }
    /// An object row: its summary and its manifest.
    pub fn decode_object_row(bytes: &[u8]) -> Result<(ObjectSummary, Manifest)> {
        Ok((decode_summary(bytes)?, decode_manifest(bytes)?))
    }
    pub fn encode_object_row(m: &Manifest, generation: u64) -> Result<Vec<u8>> {
        encode_object(&ObjectSummary::of(m, generation), m)
    }
    pub fn decode_upload(bytes: &[u8]) -> Result<UploadRecord> {
        super::decode_upload(bytes)
    }
    pub fn encode_upload(r: &UploadRecord) -> Result<Vec<u8>> {
        encode(r)
    }
    pub fn decode_part(bytes: &[u8]) -> Result<PartRecord> {
        super::decode_part(bytes)
    }
    pub fn encode_part(r: &PartRecord) -> Result<Vec<u8>> {
        super::encode_part(r)
    }
    pub fn decode_intent(bytes: &[u8]) -> Result<IntentRecord> {
        super::decode_intent(bytes)
    }
    pub fn encode_intent(r: &IntentRecord) -> Result<Vec<u8>> {
        super::encode_intent(r)
    }
    /// A first-release garbage entry: (version, blobs, not before).
    #[allow(clippy::type_complexity)]
    pub fn decode_legacy_garbage(
        bytes: &[u8],
    ) -> Result<(Option<VersionId>, Vec<(BackendId, BlobName)>, u64)> {
        let r: GarbageRecord = decode("garbage", bytes)?;
        Ok((r.version, r.blobs, r.not_before_unix_ms))
    }
}

/// Entry points for the fuzz targets (`fuzz/`): every record decoder, on
/// arbitrary bytes. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Decodes `bytes` as each kind of stored record: an object row
    /// (summary and manifest), a bucket, an upload, a part, an intent, a
    /// garbage entry, a user. Each is a value or `Corrupt`, never a panic.
    pub fn decode_records(bytes: &[u8]) {
        let _ = decode_summary(bytes);
        let _ = decode_manifest(bytes);
        let _ = decode_bucket(bytes);
        let _ = decode_version(0, bytes);
        let _ = decode_upload(bytes);
        let _ = decode_part(bytes);
        let _ = decode_intent(bytes);
        let _ = decode::<GarbageRecord>("garbage", bytes);
        let _ = decode::<UserRecord>("user", bytes);
    }
}

/// Whether a user has this name.
fn user_named(kv: &(impl KvRead + ?Sized), name: &str) -> Result<bool> {
    Ok(users_in(kv)?.iter().any(|(_, r)| r.name == name))
}

/// Every user: (access key, record), by access key.
fn users_in(kv: &(impl KvRead + ?Sized)) -> Result<Vec<(String, UserRecord)>> {
    let mut out = Vec::new();
    kv.scan(t::USERS, ALL_KEYS, false, &mut |k, v| {
        out.push((utf8_key("user", k)?, decode("user", v)?));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// A string table's key as the string it is.
fn utf8_key(what: &'static str, key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| MetaError::Corrupt {
        what,
        reason: "a key that is not UTF-8".into(),
    })
}

/// The next value of a store-wide sequence, never one given before: for
/// intents, at least past the highest id present (stores written before
/// the sequence existed).
fn next_in(kv: &mut dyn KvWrite, sequence: &str) -> Result<u64> {
    let stored = kv.get_u64(t::COUNTERS, sequence.as_bytes())?.unwrap_or(0);
    let floor = match sequence {
        INTENT_SEQUENCE => match kv.first_key(t::INTENTS, ALL_KEYS, true)? {
            Some(k) => kv::decode_u64(&k)?,
            None => 0,
        },
        _ => 0,
    };
    let next = stored.max(floor) + 1;
    kv.put(t::COUNTERS, sequence.as_bytes(), &u64_bytes(next))?;
    Ok(next)
}

/// Ends `intent` (if still open): its blobs become garbage, due now (never
/// visible, never read: no grace needed).
fn intent_to_garbage(kv: &mut dyn KvWrite, intent: u64, now_unix_ms: u64) -> Result<()> {
    let Some(v) = kv.remove(t::INTENTS, &u64_bytes(intent))? else {
        return Ok(());
    };
    let record = decode_intent(&v)?;
    garbage::add(
        kv,
        None,
        unsized_blobs(record.blobs),
        now_unix_ms,
        now_unix_ms,
    )
}

/// Closes `intent` as part of the commit of its write; fails if it was
/// abandoned meanwhile (its blobs are garbage: the write must not become
/// visible).
fn close_intent(kv: &mut dyn KvWrite, intent: IntentId) -> Result<()> {
    match kv.remove(t::INTENTS, &u64_bytes(intent.0))? {
        Some(_) => Ok(()),
        None => Err(MetaError::IntentGone),
    }
}
