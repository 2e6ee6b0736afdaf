//! The gateway's metadata: buckets, object manifests, multipart uploads,
//! write intents and garbage, in one embedded transactional store.
//!
//! Why redb: BENCHMARKS.md ("Metadata store candidates") measured redb,
//! fjall and SQLite on this workload. All three list a million keys page by
//! page in under a millisecond per page; redb reads fastest (2.2 µs point
//! get, the cost of every GET and HEAD) and its single-writer serializable
//! transactions make the S3 rules that need atomicity simple and obviously
//! right: a conditional PUT, "delete the bucket if it is empty", "complete
//! an upload and drop its unused parts". Its copy-on-write B-tree is
//! crash-safe without a log to replay. fjall commits faster (LSM), but a
//! durable PUT already fsyncs k + m fragment files, so the 0.24 ms of a
//! redb commit is not what bounds writes.
//!
//! The invariants this crate keeps, each in one transaction:
//! - An object version is visible only once its manifest is committed, and
//!   the caller commits it only after the fragments are durable.
//! - Before any fragment of a write exists, the blobs it will create are
//!   recorded as an *intent*. The manifest's commit removes the intent. An
//!   intent still present at startup belongs to a write that never finished:
//!   its blobs become garbage ([`MetaStore::open`]).
//! - Overwriting or deleting a version moves its fragments to the *garbage*
//!   table in the same transaction that commits the change, never earlier;
//!   a background task deletes them ([`MetaStore::garbage_batch`]).

mod api;
pub mod copy;
mod db;
mod error;
mod garbage;
mod journal;
mod keys;
pub mod kv;
mod list;
mod members;
mod repair;
mod store;
mod version;

pub use api::{Buckets, BuildObject, Listings, Metadata, Objects, Uploads, Users, Versions};
pub use error::{MetaError, Result};
pub use garbage::{GarbageBacklog, GarbageItem, Outcome};
pub use journal::{
    JournalState, JournalTable, OutboxBatch, RowImage, Snapshot, UnitKind, UnitRecord,
};
pub use list::{
    ListEntry, ListPage, ListQuery, UploadEntry, UploadPage, UploadQuery, VersionEntry,
    VersionPage, VersionQuery,
};
pub use members::{Changes, Hold, LeaseKeeper, Member, MemberRecord, differences, member_lease};
pub use repair::{RepairEntry, reason as repair_reason};
pub use store::{
    BUCKET_ACL_EXTENSION, BUCKET_CORS_EXTENSION, BUCKET_INCARNATION_EXTENSION,
    BUCKET_OWNER_EXTENSION, BUCKET_OWNERSHIP_EXTENSION, BUCKET_POLICY_EXTENSION,
    BUCKET_PUBLIC_ACCESS_EXTENSION, BUCKET_TAGS_EXTENSION, BucketAccess, BucketRecord,
    COMPLETED_KEPT_MS, CRITICAL_EXTENSION, CompleteError, CompletedUpload, Condition, CorsRule,
    Deleted, IntentId, IntentKind, IntentRecord, MetaStore, OBJECT_ACL_EXTENSION,
    OBJECT_LOCK_EXTENSION, ObjectSummary, PartChecksum, PartRecord, Refusal, RemovalHook,
    StoredVersion, TAGS_EXTENSION, UploadRecord, Usage, UserRecord, VersionRow, VersionState,
    Writer, Written, public_access,
};
#[doc(hidden)]
pub use store::{formats, fuzzing};
pub use version::{
    DefaultRetention, LockMode, ObjectLock, ObjectVersion, Retention, VersionSelector, Versioning,
};

/// Now, in milliseconds since the Unix epoch: the clock leases and
/// heartbeats are stamped with (public for the engines' conformance suite).
#[doc(hidden)]
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
