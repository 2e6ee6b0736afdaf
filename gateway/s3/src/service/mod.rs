//! The S3 operations (s3s's `S3` trait) over the gateway.
//!
//! Each operation checks what it can before moving data (bucket exists,
//! key length, declared size, preconditions), streams the body through the
//! pipeline, and commits in one metadata transaction that re-checks what
//! may have changed meanwhile. Errors become S3 errors in `error.rs` only.
//!
//! s3s wants one `impl S3`: here it only dispatches, to one module per
//! resource (`bucket`, `object`, `list`, `multipart`, `tagging`,
//! `versioning`, `lock`, `attributes`, `acl`, `policy`, `cors`), whose inherent methods of the same names take
//! precedence over the trait's. What the
//! resources share (preconditions, bodies, headers) stays in this file.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use shardgate_core::{Manifest, VersionId};
use shardgate_meta::{
    BuildObject, CompleteError, Condition, IntentKind, ListEntry, ListQuery,
    ObjectVersion as StoredVersionId, PartChecksum, PartRecord, UploadEntry, UploadQuery,
    UploadRecord, VersionSelector, VersionState, Versioning,
};
use shardgate_pipeline::ObjectMeta;

use crate::access::Caller;
use crate::body::{ReadBody, log_bad_fragments};
use crate::checksum::{self, Algorithm, Combine, Declared, Expected, Given, UploadChecksum};
use crate::convert::{self, Conditions, Headers, etag, timestamp};
use shardgate_node::{Gateway, GatewayError, Pending, now_ms};

use crate::error::{OrS3, s3_error};

/// The S3 service of one gateway.
#[derive(Clone, Debug)]
pub struct ShardgateS3 {
    gw: Arc<Gateway>,
    authz: Arc<crate::access::Authorizer>,
}

impl ShardgateS3 {
    /// The S3 operations over `gateway`, with `authz` deciding what a
    /// handler checks itself (a copy's source).
    pub fn new(gateway: Arc<Gateway>, authz: Arc<crate::access::Authorizer>) -> Self {
        Self { gw: gateway, authz }
    }
}

/// A request body as the pipeline reads it.
fn body_stream(
    body: Option<StreamingBlob>,
) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Send + Unpin {
    match body {
        Some(b) => b.map_err(io::Error::other).left_stream(),
        None => futures::stream::empty().right_stream(),
    }
}

/// The tags of an optional `x-amz-tagging` header.
fn tagging_header(header: Option<&str>) -> S3Result<tagging::Tags> {
    header
        .map(tagging::from_header)
        .transpose()
        .map(Option::unwrap_or_default)
}

/// The version a `versionId` parameter names.
fn version_selector(id: Option<&str>) -> S3Result<VersionSelector> {
    VersionSelector::parse(id).map_err(|e| s3_error(GatewayError::Meta(e)))
}

/// The `x-amz-version-id` a write answers with: none in a bucket that
/// never versioned, `null` in a suspended one.
/// The `x-amz-version-id` a read answers with: the version's id, or
/// `null` when the request named the null version.
fn shown_version(v: &StoredVersionId, asked: Option<&str>) -> Option<String> {
    (!v.null || asked == Some("null")).then(|| v.id())
}

/// Where a copy reads from (`x-amz-copy-source`).
struct CopyFrom<'a> {
    bucket: &'a str,
    key: &'a str,
    version_id: Option<&'a str>,
}

/// A version read for a GET, HEAD or copy.
struct ReadVersion {
    version: StoredVersionId,
    summary: shardgate_meta::ObjectSummary,
    manifest: Manifest,
    tags: tagging::Tags,
}

/// What a PUT may replace, from `If-Match` / `If-None-Match`.
fn put_condition(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<Condition> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => Err(s3_error!(
            NotImplemented,
            "If-Match and If-None-Match together are not supported on writes"
        )),
        (_, Some(ETagCondition::Any)) => Ok(Condition::IfAbsent),
        (_, Some(ETagCondition::ETag(_))) => Err(s3_error!(
            NotImplemented,
            "If-None-Match on a write supports only '*'"
        )),
        (Some(ETagCondition::Any), None) => Ok(Condition::IfMatch("*".into())),
        (Some(ETagCondition::ETag(e)), None) => Ok(Condition::IfMatch(e.value().to_string())),
        (None, None) => Ok(Condition::Always),
    }
}

impl ShardgateS3 {
    /// AccessDenied unless `caller`, let in to do `ops` on another version
    /// than the one read (`summary`), may do them on this one.
    async fn recheck_read(
        &self,
        caller: &Caller,
        ops: &[&str],
        (bucket, key): (&str, &str),
        version: Option<&str>,
        summary: &shardgate_meta::ObjectSummary,
    ) -> S3Result<()> {
        self.authz
            .recheck(
                caller,
                caller.seen,
                ops,
                bucket,
                key,
                version,
                Some(summary),
            )
            .await
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        self.bucket_record(bucket).await.map(|_| ())
    }

    /// The bucket's record (its configuration), or NoSuchBucket.
    async fn bucket_record(&self, bucket: &str) -> S3Result<shardgate_meta::BucketRecord> {
        self.gw
            .metadata()
            .bucket(bucket)
            .await
            .or_s3()?
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }

    /// Fails early (before any body byte is stored) when the condition
    /// cannot hold now; the commit checks it again.
    async fn precheck(&self, bucket: &str, key: &str, condition: &Condition) -> S3Result<()> {
        if *condition == Condition::Always {
            return self.require_bucket(bucket).await;
        }
        let current = match self.gw.version(bucket, key, VersionSelector::Latest).await {
            Ok((_, _, m)) => Some(m),
            Err(GatewayError::NoSuchKey | GatewayError::DeleteMarker { .. }) => None,
            Err(e) => return Err(s3_error(e)),
        };
        let holds = match (condition, &current) {
            (Condition::IfAbsent, Some(_)) | (Condition::IfMatch(_), None) => false,
            (Condition::IfMatch(e), Some(m)) => e == "*" || *e == m.etag,
            _ => true,
        };
        if !holds {
            return Err(s3_error!(
                PreconditionFailed,
                "At least one of the preconditions you specified did not hold"
            ));
        }
        Ok(())
    }

    /// Writes a body, checks `Content-MD5` and any `x-amz-checksum-*`
    /// (header or trailer), and returns the pending version with the
    /// verified checksum recorded in its metadata.
    #[allow(clippy::too_many_arguments)]
    async fn write_body(
        &self,
        kind: IntentKind,
        bucket: &str,
        key: &str,
        body: Option<StreamingBlob>,
        length: Option<i64>,
        md5: Option<&str>,
        expected: Option<Expected>,
        trailers: Option<&s3s::TrailingHeaders>,
        meta: ObjectMeta,
    ) -> S3Result<(Pending, Option<(Algorithm, String)>)> {
        let size = convert::declared_length(length)?;
        let md5 = convert::content_md5(md5)?;
        let (body, computed) =
            checksum::Tap::new(body_stream(body), expected.as_ref().map(|e| e.algorithm));
        let mut pending = self
            .gw
            .write(kind, bucket, key, body, size, meta)
            .await
            .or_s3()?;
        if let Some(want) = md5
            && hex::encode(want) != pending.write.manifest.etag
        {
            pending.abandon().await;
            return Err(s3_error!(
                BadDigest,
                "The Content-MD5 you specified did not match what was received"
            ));
        }
        let verified = match &expected {
            None => None,
            Some(e) => match checksum::verify(e, &computed, trailers) {
                Ok(value) => Some((e.algorithm, value)),
                Err(err) => {
                    pending.abandon().await;
                    return Err(err);
                }
            },
        };
        if let Some((algorithm, value)) = &verified {
            checksum::record(
                &mut pending.write.manifest.user_metadata,
                *algorithm,
                value.clone(),
            );
        }
        Ok((pending, verified))
    }

    /// The version of `bucket/key` a `versionId` names (the current one
    /// when absent), with its tags.
    async fn read_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<ReadVersion> {
        convert::check_key(key)?;
        let selector = version_selector(version_id)?;
        let (version, summary, manifest) = self.gw.version(bucket, key, selector).await.or_s3()?;
        let tags = summary.tags().map_err(GatewayError::from).or_s3()?;
        Ok(ReadVersion {
            version,
            summary,
            manifest,
            tags,
        })
    }

    /// The version a copy reads, once its conditions hold and if the
    /// caller may use its bucket.
    async fn copy_source<'a>(
        &self,
        caller: &Caller,
        source: &'a CopySource,
        conditions: Conditions<'_>,
    ) -> S3Result<(CopyFrom<'a>, ReadVersion)> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Copy from an access point is not supported"
            ));
        };
        let seen = self
            .authz
            .check_read(caller, bucket, key, version_id.as_deref())
            .await?;
        let from = CopyFrom {
            bucket,
            key,
            version_id: version_id.as_deref(),
        };
        let read = self
            .read_version(from.bucket, from.key, from.version_id)
            .await?;
        let version = from.version_id;
        let summary = Some(&read.summary);
        self.authz
            .recheck(caller, seen, &["GetObject"], bucket, key, version, summary)
            .await?;
        conditions.check(&read.manifest, S3ErrorCode::PreconditionFailed)?;
        Ok((from, read))
    }

    /// Reads a version for a GET: the first piece is fetched before the
    /// response starts, so that too few backends is a clean 503 rather than
    /// a cut connection.
    async fn open_body(
        &self,
        bucket: &str,
        key: &str,
        seq: u64,
        manifest: Manifest,
        range: Option<std::ops::Range<u64>>,
    ) -> S3Result<(StreamingBlob, u64)> {
        if let Some(plain) = self.gw.read_inline(&manifest, range.clone()).or_s3()? {
            let len = plain.len() as u64;
            return Ok((StreamingBlob::from(s3s::Body::from(plain)), len));
        }
        let (read, guard) = self.gw.read(Arc::new(manifest), range).or_s3()?;
        let guard = guard.of_object(bucket, key, seq);
        let len = read.range.end - read.range.start;
        let target = format!("{bucket}/{key}");
        let mut stream = read.stream;
        let first = match stream.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                log_bad_fragments(&read.report, &target);
                guard.report_damage(&read.report.bad_fragments());
                return Err(s3_error(GatewayError::from(e)));
            }
            None => None,
        };
        let body = ReadBody::new(first, stream, len, read.report, target, guard);
        Ok((StreamingBlob::new(body), len))
    }
}

/// The checksum fields of an input (PutObject and UploadPart have the same).
macro_rules! declared_checksum {
    ($input:expr) => {
        Declared {
            crc32: $input.checksum_crc32,
            crc32c: $input.checksum_crc32c,
            crc64nvme: $input.checksum_crc64nvme,
            sha1: $input.checksum_sha1,
            sha256: $input.checksum_sha256,
            algorithm: $input.checksum_algorithm,
        }
    };
}

/// The checksums a part of CompleteMultipartUpload (or of a listing) has.
macro_rules! part_checksums {
    ($p:expr) => {
        [
            (Algorithm::Crc32, &$p.checksum_crc32),
            (Algorithm::Crc32c, &$p.checksum_crc32c),
            (Algorithm::Crc64Nvme, &$p.checksum_crc64nvme),
            (Algorithm::Sha1, &$p.checksum_sha1),
            (Algorithm::Sha256, &$p.checksum_sha256),
        ]
        .into_iter()
        .filter_map(|(a, v)| v.clone().map(|v| (a, v)))
        .collect::<Vec<(Algorithm, String)>>()
    };
}

/// The `x-amz-copy-source-if-*` conditions of a copy (CopyObject and
/// UploadPartCopy have the same fields).
macro_rules! copy_conditions {
    ($input:expr) => {
        Conditions {
            if_match: $input.copy_source_if_match.as_ref(),
            if_none_match: $input.copy_source_if_none_match.as_ref(),
            if_modified_since: $input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: $input.copy_source_if_unmodified_since.as_ref(),
        }
    };
}

/// The Object Lock a write's `x-amz-object-lock-*` headers ask for
/// (PutObject, CopyObject and CreateMultipartUpload have the same fields):
/// (retention, legal hold).
macro_rules! requested_lock {
    ($input:expr) => {
        lock::requested(
            $input.object_lock_mode.as_ref().map(|m| m.as_str()),
            $input.object_lock_retain_until_date.as_ref(),
            $input
                .object_lock_legal_hold_status
                .as_ref()
                .map(|s| s.as_str()),
        )
    };
}

/// The ACL a request's `x-amz-acl` and `x-amz-grant-*` headers ask for
/// (PutObject, CopyObject and CreateMultipartUpload have the same fields;
/// `with_write`: the bucket's and ACL calls', which add `x-amz-grant-write`).
macro_rules! requested_acl {
    ($input:expr) => {
        requested_acl!(@ $input, None)
    };
    ($input:expr, with_write) => {
        requested_acl!(@ $input, $input.grant_write.as_deref())
    };
    (@ $input:expr, $write:expr) => {
        acl::AskedAcl::headers(
            $input.acl.as_ref().map(|a| a.as_str()),
            $input.grant_full_control.as_deref(),
            $input.grant_read.as_deref(),
            $input.grant_read_acp.as_deref(),
            $write,
            $input.grant_write_acp.as_deref(),
        )
    };
}

/// Puts a verified checksum in its field of an output (PutObject and
/// UploadPart have the same fields).
macro_rules! fill_checksum {
    ($out:expr, $verified:expr) => {
        if let Some((algorithm, value)) = $verified {
            *match algorithm {
                Algorithm::Crc32 => &mut $out.checksum_crc32,
                Algorithm::Crc32c => &mut $out.checksum_crc32c,
                Algorithm::Crc64Nvme => &mut $out.checksum_crc64nvme,
                Algorithm::Sha1 => &mut $out.checksum_sha1,
                Algorithm::Sha256 => &mut $out.checksum_sha256,
            } = Some(value);
        }
    };
}

/// The stored headers of an input (PutObject, CopyObject with REPLACE and
/// CreateMultipartUpload have the same fields).
macro_rules! headers {
    ($input:expr) => {
        Headers {
            content_type: $input.content_type,
            metadata: $input.metadata,
            cache_control: $input.cache_control,
            content_disposition: $input.content_disposition,
            content_encoding: $input.content_encoding,
            content_language: $input.content_language,
            expires: $input.expires,
        }
    };
}

/// Whether a listing asked for `encoding-type=url`.
fn url_encoded(encoding: Option<&EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str() == EncodingType::URL)
}

/// The byte range of part `n` (1-based): a multipart object keeps each
/// part as one segment; an object sent in one piece is one part. S3's
/// codes: a number outside 1..=10000 is InvalidArgument, one past the
/// parts is InvalidPartNumber (416).
fn part_range(m: &Manifest, n: i32) -> S3Result<std::ops::Range<u64>> {
    if !(1..=10_000).contains(&n) {
        return Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ));
    }
    let index = usize::try_from(n - 1)
        .ok()
        .filter(|i| *i < m.segments.len())
        .ok_or_else(|| {
            let mut e = s3_error!(InvalidRange, "The requested partnumber is not satisfiable");
            e.set_code(S3ErrorCode::Custom("InvalidPartNumber".into()));
            e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
            e
        })?;
    let start: u64 = m.segments[..index].iter().map(|s| s.plaintext_len).sum();
    Ok(start..start + m.segments[index].plaintext_len)
}

pub(crate) fn object_range(
    m: &Manifest,
    range: Option<&Range>,
    part: Option<i32>,
) -> S3Result<Option<std::ops::Range<u64>>> {
    if let Some(n) = part {
        return Ok(Some(part_range(m, n)?));
    }
    match range {
        None => Ok(None),
        Some(r) => r.check(m.size).map(Some).map_err(|_| {
            s3_error!(
                InvalidRange,
                "The requested range is not satisfiable (object size {})",
                m.size
            )
        }),
    }
}

// After the macros above: a module sees only the macros defined before it.
mod acl;
mod attributes;
mod bucket;
mod cors;
mod list;
mod lock;
mod multipart;
mod object;
mod policy;
mod tagging;
mod versioning;

#[async_trait::async_trait]
impl S3 for ShardgateS3 {
    // --- bucket (bucket.rs) ---

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        ShardgateS3::create_bucket(self, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        ShardgateS3::delete_bucket(self, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        ShardgateS3::head_bucket(self, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        ShardgateS3::get_bucket_location(self, req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        ShardgateS3::list_buckets(self, req).await
    }

    // --- ACLs and Object Ownership (acl.rs) ---

    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        ShardgateS3::get_bucket_acl(self, req).await
    }

    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        ShardgateS3::put_bucket_acl(self, req).await
    }

    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        ShardgateS3::get_object_acl(self, req).await
    }

    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        ShardgateS3::put_object_acl(self, req).await
    }

    async fn get_bucket_ownership_controls(
        &self,
        req: S3Request<GetBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<GetBucketOwnershipControlsOutput>> {
        ShardgateS3::get_bucket_ownership_controls(self, req).await
    }

    async fn put_bucket_ownership_controls(
        &self,
        req: S3Request<PutBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<PutBucketOwnershipControlsOutput>> {
        ShardgateS3::put_bucket_ownership_controls(self, req).await
    }

    async fn delete_bucket_ownership_controls(
        &self,
        req: S3Request<DeleteBucketOwnershipControlsInput>,
    ) -> S3Result<S3Response<DeleteBucketOwnershipControlsOutput>> {
        ShardgateS3::delete_bucket_ownership_controls(self, req).await
    }

    // --- CORS (cors.rs) ---

    // --- policy and public access block (policy.rs) ---

    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        ShardgateS3::put_bucket_policy(self, req).await
    }

    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        ShardgateS3::get_bucket_policy(self, req).await
    }

    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        ShardgateS3::delete_bucket_policy(self, req).await
    }

    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        ShardgateS3::get_bucket_policy_status(self, req).await
    }

    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        ShardgateS3::put_public_access_block(self, req).await
    }

    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        ShardgateS3::get_public_access_block(self, req).await
    }

    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        ShardgateS3::delete_public_access_block(self, req).await
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        ShardgateS3::put_bucket_cors(self, req).await
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        ShardgateS3::get_bucket_cors(self, req).await
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        ShardgateS3::delete_bucket_cors(self, req).await
    }

    // --- object (object.rs) ---

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        ShardgateS3::put_object(self, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        ShardgateS3::get_object(self, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        ShardgateS3::head_object(self, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        ShardgateS3::delete_object(self, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        ShardgateS3::delete_objects(self, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        ShardgateS3::copy_object(self, req).await
    }

    // --- list (list.rs) ---

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        ShardgateS3::list_objects_v2(self, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        ShardgateS3::list_objects(self, req).await
    }

    // --- multipart (multipart.rs) ---

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        ShardgateS3::create_multipart_upload(self, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        ShardgateS3::upload_part(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        ShardgateS3::complete_multipart_upload(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        ShardgateS3::abort_multipart_upload(self, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        ShardgateS3::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        ShardgateS3::list_multipart_uploads(self, req).await
    }

    // --- tagging (tagging.rs) ---

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        ShardgateS3::put_object_tagging(self, req).await
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        ShardgateS3::get_object_tagging(self, req).await
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        ShardgateS3::delete_object_tagging(self, req).await
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        ShardgateS3::put_bucket_tagging(self, req).await
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        ShardgateS3::get_bucket_tagging(self, req).await
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        ShardgateS3::delete_bucket_tagging(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        ShardgateS3::upload_part_copy(self, req).await
    }

    async fn get_object_torrent(
        &self,
        req: S3Request<GetObjectTorrentInput>,
    ) -> S3Result<S3Response<GetObjectTorrentOutput>> {
        ShardgateS3::get_object_torrent(self, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        ShardgateS3::get_object_attributes(self, req).await
    }

    // --- Object Lock (lock.rs) ---

    async fn put_object_lock_configuration(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        ShardgateS3::put_object_lock_configuration(self, req).await
    }

    async fn get_object_lock_configuration(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        ShardgateS3::get_object_lock_configuration(self, req).await
    }

    async fn put_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        ShardgateS3::put_object_retention(self, req).await
    }

    async fn get_object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        ShardgateS3::get_object_retention(self, req).await
    }

    async fn put_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        ShardgateS3::put_object_legal_hold(self, req).await
    }

    async fn get_object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        ShardgateS3::get_object_legal_hold(self, req).await
    }

    // --- versioning (versioning.rs) ---

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        ShardgateS3::put_bucket_versioning(self, req).await
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        ShardgateS3::get_bucket_versioning(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        ShardgateS3::list_object_versions(self, req).await
    }
}
