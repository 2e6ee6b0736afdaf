//! Listing, served from the store in S3 key order, page by page.
//!
//! A page is one range scan from the marker. With a delimiter, each common
//! prefix is reported once and the scan *seeks past* it (to the prefix's
//! successor) instead of walking its keys, so a page costs O(page size)
//! seeks whatever the bucket holds: a million keys under `logs/` cost one
//! seek, not a million rows.
//!
//! The marker (V1 `marker`, V2 `start-after` or continuation token) is the
//! last key or common prefix returned. A common prefix that sorts at or
//! before the marker was returned already (or precedes the marker), so it is
//! skipped: that is what makes a common prefix a valid marker.
//!
//! Rows are versions (`key 0x00 !seq`, newest first). ListObjects shows a
//! key's newest version unless it is a delete marker, and passes over the
//! older ones: a few by stepping, then by a seek past the key, so a key
//! with 100,000 versions costs one seek. ListObjectVersions shows them all.

use std::ops::{Bound, ControlFlow};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{self, KvRead, Table, tables};
use crate::store::{
    MetaStore, ObjectSummary, UploadRecord, decode_summary, decode_upload, find_version,
};
use crate::version::{ObjectVersion, VersionSelector};

/// A ListObjects request.
#[derive(Clone, Debug, Default)]
pub struct ListQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// List keys after this one (exclusive).
    pub after: Option<&'a str>,
    pub max: usize,
}

/// One entry of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListEntry {
    Object { key: String, summary: ObjectSummary },
    Prefix(String),
}

impl ListEntry {
    /// The key or the common prefix: the marker that continues after it.
    pub fn marker(&self) -> &str {
        match self {
            Self::Object { key, .. } => key,
            Self::Prefix(p) => p,
        }
    }
}

/// A page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    /// More entries follow the last one.
    pub truncated: bool,
}

/// A ListObjectVersions request.
#[derive(Clone, Debug, Default)]
pub struct VersionQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Continue after this key: after all its versions, or after the
    /// version `version_after` names.
    pub key_after: Option<&'a str>,
    pub version_after: Option<VersionSelector>,
    pub max: usize,
}

/// One version (or delete marker), or a common prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionEntry {
    Version {
        key: String,
        version: ObjectVersion,
        summary: ObjectSummary,
        /// The key's current version.
        latest: bool,
    },
    Prefix(String),
}

/// A page of versions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionPage {
    pub entries: Vec<VersionEntry>,
    pub truncated: bool,
}

/// A ListMultipartUploads request.
#[derive(Clone, Debug, Default)]
pub struct UploadQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Continue after this key (all its uploads if `upload_after` is None).
    pub key_after: Option<&'a str>,
    pub upload_after: Option<&'a str>,
    pub max: usize,
}

/// One upload, or a common prefix of upload keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadEntry {
    Upload {
        key: String,
        upload: String,
        record: UploadRecord,
    },
    Prefix(String),
}

/// A page of uploads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadPage {
    pub entries: Vec<UploadEntry>,
    pub truncated: bool,
}

/// The common prefix `key` rolls up into, if any.
fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let at = rest.find(delimiter)?;
    key.get(..prefix.len() + at + delimiter.len())
}

/// Drives a page scan over one bucket's rows of `table`: `visit` gets each
/// row's key bytes (after `bucket 0x00`) and value, and says where to go on.
enum Step {
    /// Go on with the next row.
    Next,
    /// Seek to this row key (after `bucket 0x00`), inclusive.
    Seek(Vec<u8>),
    /// The page is full.
    Stop,
}

fn scan(
    kv: &(impl KvRead + ?Sized),
    table: Table,
    bucket: &str,
    prefix: &str,
    start: Bound<Vec<u8>>,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<Step>,
) -> Result<()> {
    let base = keys::bucket_base(bucket);
    let with_base = |k: &[u8]| [base.as_slice(), k].concat();
    let end = keys::successor(&with_base(prefix.as_bytes()))
        .or_else(|| keys::successor(&base))
        .unwrap_or_default();
    let mut lower = match start {
        Bound::Included(k) => Bound::Included(with_base(&k)),
        Bound::Excluded(k) => Bound::Excluded(with_base(&k)),
        Bound::Unbounded => Bound::Included(with_base(prefix.as_bytes())),
    };
    // Each pass is one range scan; a common prefix ends the pass with a seek.
    loop {
        let range = (
            lower.as_ref().map(Vec::as_slice),
            Bound::Excluded(end.as_slice()),
        );
        let mut seek = None;
        kv.scan(table, range, false, &mut |k, v| {
            let Some(key) = k.get(base.len()..) else {
                return Ok(ControlFlow::Continue(()));
            };
            Ok(match visit(key, v)? {
                Step::Next => ControlFlow::Continue(()),
                Step::Stop => ControlFlow::Break(()),
                Step::Seek(to) => {
                    seek = Some(to);
                    ControlFlow::Break(())
                }
            })
        })?;
        match seek {
            Some(to) => lower = Bound::Included(with_base(&to)),
            None => return Ok(()),
        }
    }
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| MetaError::Corrupt {
        what: "key",
        reason: e.to_string(),
    })
}

/// Where a scan starts: at the prefix, or just after the marker and all
/// its versions (`a 0x01` sorts after `a 0x00 ...` and before every
/// longer key, none holding 0x00).
fn start_bound(prefix: &str, after: Option<&str>) -> Bound<Vec<u8>> {
    match after {
        Some(a) if a >= prefix => Bound::Included(past_versions(a)),
        _ => Bound::Included(prefix.as_bytes().to_vec()),
    }
}

fn past_versions(key: &str) -> Vec<u8> {
    [key.as_bytes(), &[1]].concat()
}

/// A row's key (after `bucket 0x00`) split into the object key and the
/// version's sequence number.
fn split_row(row: &[u8]) -> Result<(&str, u64)> {
    let corrupt = || MetaError::Corrupt {
        what: "key",
        reason: "a version row without a sequence number".into(),
    };
    let (rest, seq) = row.split_last_chunk::<8>().ok_or_else(corrupt)?;
    let (zero, key) = rest.split_last().ok_or_else(corrupt)?;
    if *zero != 0 {
        return Err(corrupt());
    }
    Ok((utf8(key)?, !u64::from_be_bytes(*seq)))
}

/// Older versions stepped over before a seek past the key is cheaper.
const STEPS_BEFORE_SEEK: usize = 4;

impl MetaStore {
    /// One page of the objects of `bucket`, in key order: each key's
    /// current version, keys whose current version is a delete marker
    /// left out (and common prefixes holding none but those).
    pub fn list_objects(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        kv::read(self.engine(), |kv| list_objects(kv, bucket, q))
    }

    /// One page of the versions of `bucket`, by key, each key's newest
    /// first, delete markers included.
    pub fn list_versions(&self, bucket: &str, q: &VersionQuery<'_>) -> Result<VersionPage> {
        kv::read(self.engine(), |kv| list_versions(kv, bucket, q))
    }

    /// One page of the uploads in progress in `bucket`, by key, then by
    /// initiation time.
    pub fn list_uploads(&self, bucket: &str, q: &UploadQuery<'_>) -> Result<UploadPage> {
        kv::read(self.engine(), |kv| list_uploads(kv, bucket, q))
    }
}

fn bucket_exists(kv: &(impl KvRead + ?Sized), bucket: &str) -> Result<()> {
    match kv.get(tables::BUCKETS, bucket.as_bytes())? {
        Some(_) => Ok(()),
        None => Err(MetaError::NoSuchBucket),
    }
}

/// [`MetaStore::list_objects`] in a read transaction.
fn list_objects(kv: &(impl KvRead + ?Sized), bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
    bucket_exists(kv, bucket)?;
    let mut page = ListPage::default();
    if q.max == 0 {
        return Ok(page);
    }
    let mut last_key: Option<String> = None;
    let mut stepped = 0;
    scan(
        kv,
        tables::VERSIONS,
        bucket,
        q.prefix,
        start_bound(q.prefix, q.after),
        |row, value| {
            let (key, _) = split_row(row)?;
            if last_key.as_deref() == Some(key) {
                // An older version of a key already seen.
                stepped += 1;
                return Ok(if stepped > STEPS_BEFORE_SEEK {
                    Step::Seek(past_versions(key))
                } else {
                    Step::Next
                });
            }
            last_key = Some(key.to_string());
            stepped = 0;
            let summary = decode_summary(value)?;
            if summary.delete_marker {
                return Ok(Step::Next);
            }
            let cp = common_prefix(key, q.prefix, q.delimiter);
            if cp.is_some_and(|cp| q.after.is_some_and(|a| cp <= a)) {
                // Returned already (or before the marker).
                return Ok(cp
                    .and_then(|cp| keys::successor(cp.as_bytes()))
                    .map_or(Step::Stop, Step::Seek));
            }
            if page.entries.len() == q.max {
                page.truncated = true;
                return Ok(Step::Stop);
            }
            if let Some(cp) = cp {
                page.entries.push(ListEntry::Prefix(cp.to_string()));
                return Ok(keys::successor(cp.as_bytes()).map_or(Step::Stop, Step::Seek));
            }
            page.entries.push(ListEntry::Object {
                key: key.to_string(),
                summary,
            });
            Ok(Step::Next)
        },
    )?;
    Ok(page)
}

/// [`MetaStore::list_versions`] in a read transaction.
fn list_versions(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    q: &VersionQuery<'_>,
) -> Result<VersionPage> {
    bucket_exists(kv, bucket)?;
    let mut page = VersionPage::default();
    if q.max == 0 {
        return Ok(page);
    }
    // After a version: the rows of its key that follow it, whether or
    // not it is still there (a client that deletes what it lists
    // pages on from versions gone). A `null` marker that no longer
    // names a version starts the key over: repeating entries is
    // better than skipping them.
    let row = |k: &str, seq: u64| [k.as_bytes(), &[0], &(!seq).to_be_bytes()].concat();
    let (start, mid_key) = match (q.key_after, &q.version_after) {
        (Some(k), Some(VersionSelector::Id { seq, .. })) if k >= q.prefix => {
            (Bound::Excluded(row(k, *seq)), Some(k))
        }
        (Some(k), Some(VersionSelector::Null)) if k >= q.prefix => {
            match find_version(kv, bucket, k, &VersionSelector::Null)? {
                Some((seq, _)) => (Bound::Excluded(row(k, seq)), Some(k)),
                None => (Bound::Included([k.as_bytes(), &[0]].concat()), None),
            }
        }
        _ => (start_bound(q.prefix, q.key_after), None),
    };
    let mut last_key: Option<String> = mid_key.map(str::to_string);
    scan(
        kv,
        tables::VERSIONS,
        bucket,
        q.prefix,
        start,
        |row, value| {
            let (key, seq) = split_row(row)?;
            let latest = last_key.as_deref() != Some(key);
            if let Some(cp) = common_prefix(key, q.prefix, q.delimiter) {
                if q.key_after.is_none_or(|a| cp > a) {
                    if page.entries.len() == q.max {
                        page.truncated = true;
                        return Ok(Step::Stop);
                    }
                    page.entries.push(VersionEntry::Prefix(cp.to_string()));
                }
                return Ok(keys::successor(cp.as_bytes()).map_or(Step::Stop, Step::Seek));
            }
            if page.entries.len() == q.max {
                page.truncated = true;
                return Ok(Step::Stop);
            }
            let summary = decode_summary(value)?;
            page.entries.push(VersionEntry::Version {
                key: key.to_string(),
                version: summary.object_version(seq),
                summary,
                latest,
            });
            last_key = Some(key.to_string());
            Ok(Step::Next)
        },
    )?;
    Ok(page)
}

/// [`MetaStore::list_uploads`] in a read transaction.
fn list_uploads(
    kv: &(impl KvRead + ?Sized),
    bucket: &str,
    q: &UploadQuery<'_>,
) -> Result<UploadPage> {
    bucket_exists(kv, bucket)?;
    let mut page = UploadPage::default();
    if q.max == 0 {
        return Ok(page);
    }
    // Rows are `key 0x00 upload`.
    let start = match (q.key_after, q.upload_after) {
        (Some(k), Some(u)) if k >= q.prefix => {
            Bound::Excluded([k.as_bytes(), &[0], u.as_bytes()].concat())
        }
        // After every upload of key k: `k 0x01` sorts after `k 0x00 ...`.
        (Some(k), None) if k >= q.prefix => Bound::Included([k.as_bytes(), &[1]].concat()),
        _ => Bound::Included(q.prefix.as_bytes().to_vec()),
    };
    scan(
        kv,
        tables::UPLOADS,
        bucket,
        q.prefix,
        start,
        |row, value| {
            if page.entries.len() == q.max {
                page.truncated = true;
                return Ok(Step::Stop);
            }
            let cut = row.iter().rposition(|b| *b == 0).unwrap_or(row.len());
            let key = utf8(&row[..cut])?;
            let upload = utf8(row.get(cut + 1..).unwrap_or_default())?;
            if let Some(cp) = common_prefix(key, q.prefix, q.delimiter) {
                if q.key_after.is_none_or(|a| cp > a) {
                    page.entries.push(UploadEntry::Prefix(cp.to_string()));
                }
                return Ok(keys::successor(cp.as_bytes()).map_or(Step::Stop, Step::Seek));
            }
            page.entries.push(UploadEntry::Upload {
                key: key.to_string(),
                upload: upload.to_string(),
                record: decode_upload(value)?,
            });
            Ok(Step::Next)
        },
    )?;
    Ok(page)
}
