//! The S3 operations (s3s's `S3` trait) over the gateway.
//!
//! Each operation checks what it can before moving data (bucket exists,
//! key length, declared size, preconditions), streams the body through the
//! pipeline, and commits in one metadata transaction that re-checks what
//! may have changed meanwhile. Errors become S3 errors in `error.rs` only.

use std::io;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use shardgate_core::{Manifest, VersionId};
use shardgate_meta::{
    Condition, IntentKind, ListEntry, ListQuery, PartRecord, UploadEntry, UploadQuery, UploadRecord,
};
use shardgate_pipeline::ObjectMeta;

use crate::body::{ReadBody, log_bad_fragments};
use crate::checksum::{self, Algorithm, Declared};
use crate::convert::{self, Conditions, Headers, etag, timestamp};
use shardgate_node::{Gateway, GatewayError, Pending, blocking, now_ms};

use crate::error::{OrS3, s3_error};

/// The S3 service of one gateway.
#[derive(Clone, Debug)]
pub struct ShardgateS3 {
    gw: Arc<Gateway>,
}

impl ShardgateS3 {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gw: gateway }
    }
}

fn owner() -> Owner {
    Owner {
        display_name: Some("shardgate".into()),
        id: Some("shardgate".into()),
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
    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let meta = self.gw.meta().clone();
        let b = bucket.to_string();
        match blocking(move || meta.bucket(&b)).await.or_s3()? {
            Some(_) => Ok(()),
            None => Err(s3_error!(
                NoSuchBucket,
                "The specified bucket does not exist"
            )),
        }
    }

    /// Fails early (before any body byte is stored) when the condition
    /// cannot hold now; the commit checks it again.
    async fn precheck(&self, bucket: &str, key: &str, condition: &Condition) -> S3Result<()> {
        if *condition == Condition::Always {
            return self.require_bucket(bucket).await;
        }
        let current = match self.gw.manifest(bucket, key).await {
            Ok(m) => Some(m),
            Err(GatewayError::NoSuchKey) => None,
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
        declared: Declared,
        trailers: Option<&s3s::TrailingHeaders>,
        meta: ObjectMeta,
    ) -> S3Result<(Pending, Option<(Algorithm, String)>)> {
        let size = convert::declared_length(length)?;
        let md5 = convert::content_md5(md5)?;
        let expected = declared.expected()?;
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
            pending.intent.abandon().await;
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
                    pending.intent.abandon().await;
                    return Err(err);
                }
            },
        };
        if let Some((algorithm, value)) = &verified {
            pending
                .write
                .manifest
                .user_metadata
                .insert(checksum::metadata_key(*algorithm), value.clone());
        }
        Ok((pending, verified))
    }

    /// Reads a version for a GET: the first piece is fetched before the
    /// response starts, so that too few backends is a clean 503 rather than
    /// a cut connection.
    async fn open_body(
        &self,
        bucket: &str,
        key: &str,
        manifest: Manifest,
        range: Option<std::ops::Range<u64>>,
    ) -> S3Result<(StreamingBlob, u64)> {
        let (read, guard) = self.gw.read(Arc::new(manifest), range).or_s3()?;
        let len = read.range.end - read.range.start;
        let target = format!("{bucket}/{key}");
        let mut stream = read.stream;
        let first = match stream.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => {
                log_bad_fragments(&read.report, &target);
                guard.report_damage(&target, &read.report.bad_fragments());
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

/// The byte range of part `n` (1-based) of a multipart object.
fn part_range(m: &Manifest, n: i32) -> S3Result<std::ops::Range<u64>> {
    let index = n
        .checked_sub(1)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < m.segments.len())
        .ok_or_else(|| s3_error!(InvalidRange, "The requested part number is not satisfiable"))?;
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

#[async_trait::async_trait]
impl S3 for ShardgateS3 {
    // --- buckets ---

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let meta = self.gw.meta().clone();
        let bucket = req.input.bucket.clone();
        blocking(move || meta.create_bucket(&bucket, now_ms()))
            .await
            .or_s3()?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let meta = self.gw.meta().clone();
        let bucket = req.input.bucket;
        blocking(move || meta.delete_bucket(&bucket))
            .await
            .or_s3()?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let meta = self.gw.meta().clone();
        let buckets = blocking(move || meta.list_buckets()).await.or_s3()?;
        let buckets = buckets
            .into_iter()
            .map(|(name, record)| Bucket {
                bucket_region: None,
                creation_date: Some(timestamp(record.created_unix_ms)),
                name: Some(name),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    // --- objects ---

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        convert::check_key(&input.key)?;
        let condition = put_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        self.precheck(&input.bucket, &input.key, &condition).await?;
        let meta = headers!(input).into_meta()?;
        let declared = declared_checksum!(input);
        let (pending, verified) = self
            .write_body(
                IntentKind::PUT,
                &input.bucket,
                &input.key,
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
                declared,
                req.trailing_headers.as_ref(),
                meta,
            )
            .await?;
        let (manifest, _) = self
            .gw
            .commit(&input.bucket, &input.key, pending, condition)
            .await
            .or_s3()?;
        let mut out = PutObjectOutput {
            e_tag: Some(etag(&manifest.etag)),
            size: Some(manifest.size as i64),
            ..Default::default()
        };
        fill_checksum!(out, verified);
        Ok(S3Response::new(out))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let manifest = self.gw.manifest(&input.bucket, &input.key).await.or_s3()?;
        Conditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&manifest, S3ErrorCode::NotModified)?;
        let range = object_range(&manifest, input.range.as_ref(), input.part_number)?;
        let content_range = range
            .as_ref()
            .filter(|r| !r.is_empty())
            .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, manifest.size));
        let whole = input.range.is_none() && input.part_number.is_none();
        let out = head_output(
            &manifest,
            input.part_number,
            wants_checksum(input.checksum_mode.as_ref(), whole),
        );
        let (body, len) = match range {
            // An empty part (`?partNumber=` of a 0-byte part): nothing to
            // read, 200 with Content-Length 0, as HEAD answers.
            Some(r) if r.is_empty() => (StreamingBlob::from(s3s::Body::empty()), 0),
            range => {
                self.open_body(&input.bucket, &input.key, manifest, range)
                    .await?
            }
        };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            accept_ranges: out.accept_ranges,
            cache_control: out.cache_control,
            content_disposition: out.content_disposition,
            content_encoding: out.content_encoding,
            content_language: out.content_language,
            content_type: out.content_type,
            e_tag: out.e_tag,
            expires: out.expires,
            last_modified: out.last_modified,
            metadata: out.metadata,
            parts_count: out.parts_count,
            checksum_crc32: out.checksum_crc32,
            checksum_crc32c: out.checksum_crc32c,
            checksum_crc64nvme: out.checksum_crc64nvme,
            checksum_sha1: out.checksum_sha1,
            checksum_sha256: out.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let manifest = self.gw.manifest(&input.bucket, &input.key).await.or_s3()?;
        Conditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&manifest, S3ErrorCode::NotModified)?;
        let whole = input.part_number.is_none();
        let mut out = head_output(
            &manifest,
            input.part_number,
            wants_checksum(input.checksum_mode.as_ref(), whole),
        );
        if let Some(n) = input.part_number {
            let r = part_range(&manifest, n)?;
            out.content_length = Some((r.end - r.start) as i64);
        }
        Ok(S3Response::new(out))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let meta = self.gw.meta().clone();
        let (bucket, key) = (req.input.bucket, req.input.key);
        let deleted = blocking(move || meta.delete_object(&bucket, &key, now_ms()))
            .await
            .or_s3()?;
        if deleted.is_some() {
            self.gw.wake_collectors();
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let objects = input.delete.objects;
        if objects.len() > convert::MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "A delete request names at most {} keys, this one {}",
                convert::MAX_DELETE_KEYS,
                objects.len()
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
        let meta = self.gw.meta().clone();
        let bucket = input.bucket;
        let listed = keys.clone();
        blocking(move || meta.delete_objects(&bucket, &listed, now_ms()))
            .await
            .or_s3()?;
        self.gw.wake_collectors();
        let deleted = (!quiet).then(|| {
            keys.into_iter()
                .map(|k| DeletedObject {
                    key: Some(k),
                    ..Default::default()
                })
                .collect()
        });
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted,
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        convert::check_key(&input.key)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            version_id,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Copy from an access point is not supported"
            ));
        };
        let source = self.gw.manifest(src_bucket, src_key).await.or_s3()?;
        if let Some(v) = version_id
            && **v != *source.version_id.to_string()
        {
            return Err(s3_error!(
                NoSuchVersion,
                "The specified version does not exist"
            ));
        }
        Conditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        }
        .check(&source, S3ErrorCode::PreconditionFailed)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **src_bucket == *input.bucket && **src_key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let mut meta = if replace {
            headers!(input).into_meta()?
        } else {
            ObjectMeta {
                content_type: source.content_type.clone(),
                user_metadata: source.user_metadata.clone(),
            }
        };
        // Same bytes, same checksum, whatever the metadata directive.
        for a in Algorithm::ALL {
            let k = checksum::metadata_key(a);
            if let Some(v) = source.user_metadata.get(&k) {
                meta.user_metadata.insert(k, v.clone());
            }
        }
        self.require_bucket(&input.bucket).await?;
        let size = source.size as i64;
        let (body, _) = self.open_body(src_bucket, src_key, source, None).await?;
        let (pending, _) = self
            .write_body(
                IntentKind::PUT,
                &input.bucket,
                &input.key,
                Some(body),
                Some(size),
                None,
                Declared::default(),
                None,
                meta,
            )
            .await?;
        let (manifest, _) = self
            .gw
            .commit(&input.bucket, &input.key, pending, Condition::Always)
            .await
            .or_s3()?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&manifest.etag)),
                last_modified: Some(timestamp(manifest.created_unix_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    // --- listing ---

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max = convert::max_items(input.max_keys, "max-keys")?;
        let token = input
            .continuation_token
            .as_deref()
            .map(convert::decode_token)
            .transpose()?;
        let after = token.clone().or_else(|| input.start_after.clone());
        let url = url_encoded(input.encoding_type.as_ref());
        let listing = self
            .list(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                after,
                max,
            )
            .await?;
        let next = listing
            .truncated
            .then(|| listing.last.as_deref().map(convert::encode_token))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            key_count: Some(listing.count as i32),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(listing.contents(url)),
            common_prefixes: Some(listing.prefixes(url)),
            prefix: input.prefix.map(|p| convert::encode_listed(url, &p)),
            delimiter: input.delimiter.map(|d| convert::encode_listed(url, &d)),
            start_after: input.start_after.map(|s| convert::encode_listed(url, &s)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = convert::max_items(input.max_keys, "max-keys")?;
        let url = url_encoded(input.encoding_type.as_ref());
        let listing = self
            .list(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                input.marker.clone(),
                max,
            )
            .await?;
        let next_marker = listing
            .truncated
            .then(|| {
                listing
                    .last
                    .as_deref()
                    .map(|m| convert::encode_listed(url, m))
            })
            .flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            marker: Some(
                input
                    .marker
                    .map(|m| convert::encode_listed(url, &m))
                    .unwrap_or_default(),
            ),
            next_marker,
            contents: Some(listing.contents(url)),
            common_prefixes: Some(listing.prefixes(url)),
            prefix: Some(
                input
                    .prefix
                    .map(|p| convert::encode_listed(url, &p))
                    .unwrap_or_default(),
            ),
            delimiter: input.delimiter.map(|d| convert::encode_listed(url, &d)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    // --- multipart ---

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        convert::check_key(&input.key)?;
        let meta = headers!(input).into_meta()?;
        let record = UploadRecord {
            initiated_unix_ms: now_ms(),
            content_type: meta.content_type,
            user_metadata: meta.user_metadata,
        };
        let store = self.gw.meta().clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let upload = blocking(move || store.create_upload(&bucket, &key, &record))
            .await
            .or_s3()?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let number = input.part_number;
        if !(1..=convert::MAX_PART_NUMBER).contains(&number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and {}, inclusive",
                convert::MAX_PART_NUMBER
            ));
        }
        let store = self.gw.meta().clone();
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        blocking(move || store.upload(&b, &k, &u)).await.or_s3()?;
        let declared = declared_checksum!(input);
        let (pending, verified) = self
            .write_body(
                IntentKind::PART,
                &input.bucket,
                &input.key,
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
                declared,
                req.trailing_headers.as_ref(),
                ObjectMeta::default(),
            )
            .await?;
        let Pending { write, intent } = pending;
        let Some(segment) = write.manifest.segments.into_iter().next() else {
            return Err(s3_error!(InternalError, "the part produced no segment"));
        };
        let part = PartRecord {
            etag: write.manifest.etag,
            size: segment.plaintext_len,
            modified_unix_ms: now_ms(),
            segment,
        };
        let part_etag = part.etag.clone();
        let store = self.gw.meta().clone();
        let (b, k, u) = (input.bucket, input.key, input.upload_id);
        let id = intent.id();
        let result =
            blocking(move || store.put_part(&b, &k, &u, number as u32, &part, id, now_ms())).await;
        self.gw.wake_collectors();
        match result {
            // Closed by the commit, or turned into garbage by it (NoSuchUpload).
            Ok(()) | Err(GatewayError::Meta(shardgate_meta::MetaError::NoSuchUpload)) => {
                intent.closed();
            }
            Err(_) => intent.abandon().await,
        }
        result.or_s3()?;
        let mut out = UploadPartOutput {
            e_tag: Some(etag(&part_etag)),
            ..Default::default()
        };
        fill_checksum!(out, verified);
        Ok(S3Response::new(out))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let condition = put_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let chosen = parts
            .into_iter()
            .map(|p| match (p.part_number, p.e_tag) {
                (Some(n), Some(e)) if n >= 1 => Ok((n as u32, e.value().to_string())),
                _ => Err(s3_error!(
                    InvalidPart,
                    "Each part needs a PartNumber (1 or more) and an ETag"
                )),
            })
            .collect::<S3Result<Vec<_>>>()?;
        let store = self.gw.meta().clone();
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let record = blocking(move || store.upload(&b, &k, &u)).await.or_s3()?;
        let store = self.gw.meta().clone();
        let (b, k, u) = (input.bucket.clone(), input.key.clone(), input.upload_id);
        let now = now_ms();
        let done = tokio::task::spawn_blocking(move || {
            store.complete_upload(
                &b,
                &k,
                &u,
                &chosen,
                convert::MIN_PART_BYTES,
                &condition,
                now,
                |parts| {
                    let etags: Vec<&str> = parts.iter().map(|(_, p)| p.etag.as_str()).collect();
                    let etag = convert::multipart_etag(&etags);
                    let segments: Vec<_> = parts.into_iter().map(|(_, p)| p.segment).collect();
                    Manifest {
                        version_id: VersionId::new(now),
                        size: segments.iter().map(|s| s.plaintext_len).sum(),
                        etag,
                        content_type: record.content_type,
                        user_metadata: record.user_metadata,
                        created_unix_ms: now,
                        segments,
                    }
                },
            )
        })
        .await
        .map_err(|e| s3_error!(InternalError, "metadata task failed: {e}"))?;
        let (manifest, _) = done.map_err(GatewayError::from).or_s3()?;
        self.gw.wake_collectors();
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(etag(&manifest.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let store = self.gw.meta().clone();
        let input = req.input;
        blocking(move || store.abort_upload(&input.bucket, &input.key, &input.upload_id, now_ms()))
            .await
            .or_s3()?;
        self.gw.wake_collectors();
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = convert::max_items(input.max_parts, "max-parts")?;
        let after = match input.part_number_marker {
            None => 0,
            Some(n) => u32::try_from(n).map_err(|_| {
                s3_error!(InvalidArgument, "part-number-marker must not be negative")
            })?,
        };
        let store = self.gw.meta().clone();
        let (b, k, u) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let (parts, truncated) = blocking(move || {
            store.upload(&b, &k, &u)?;
            store.list_parts(&u, after, max)
        })
        .await
        .or_s3()?;
        let next = parts.last().map(|(n, _)| *n as i32);
        let parts = parts
            .into_iter()
            .map(|(n, p)| Part {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(timestamp(p.modified_unix_ms)),
                part_number: Some(n as i32),
                size: Some(p.size as i64),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: truncated.then_some(next).flatten(),
            is_truncated: Some(truncated),
            parts: Some(parts),
            owner: Some(owner()),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max = convert::max_items(input.max_uploads, "max-uploads")?;
        let url = url_encoded(input.encoding_type.as_ref());
        let store = self.gw.meta().clone();
        let bucket = input.bucket.clone();
        let (prefix, delimiter) = (input.prefix.clone(), input.delimiter.clone());
        let (key_marker, upload_marker) =
            (input.key_marker.clone(), input.upload_id_marker.clone());
        let page = blocking(move || {
            store.list_uploads(
                &bucket,
                &UploadQuery {
                    prefix: prefix.as_deref().unwrap_or(""),
                    delimiter: delimiter.as_deref(),
                    key_after: key_marker.as_deref(),
                    upload_after: upload_marker.as_deref(),
                    max,
                },
            )
        })
        .await
        .or_s3()?;
        let mut uploads = Vec::new();
        let mut prefixes = Vec::new();
        let (mut next_key, mut next_upload) = (None, None);
        for e in page.entries {
            match e {
                UploadEntry::Upload {
                    key,
                    upload,
                    record,
                } => {
                    next_key = Some(key.clone());
                    next_upload = Some(upload.clone());
                    uploads.push(MultipartUpload {
                        key: Some(convert::encode_listed(url, &key)),
                        upload_id: Some(upload),
                        initiated: Some(timestamp(record.initiated_unix_ms)),
                        owner: Some(owner()),
                        initiator: Some(Initiator {
                            display_name: Some("shardgate".into()),
                            id: Some("shardgate".into()),
                        }),
                        ..Default::default()
                    });
                }
                UploadEntry::Prefix(p) => {
                    next_key = Some(p.clone());
                    next_upload = None;
                    prefixes.push(CommonPrefix {
                        prefix: Some(convert::encode_listed(url, &p)),
                    });
                }
            }
        }
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            uploads: Some(uploads),
            common_prefixes: Some(prefixes),
            is_truncated: Some(page.truncated),
            max_uploads: Some(max as i32),
            next_key_marker: page.truncated.then_some(next_key).flatten(),
            next_upload_id_marker: page.truncated.then_some(next_upload).flatten(),
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            prefix: input.prefix,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

/// Whether a GET or HEAD asked for the object's checksum and covers the
/// whole object (a stored checksum says nothing about a range).
fn wants_checksum(mode: Option<&ChecksumMode>, whole: bool) -> bool {
    whole && mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

/// The headers of GET and HEAD.
fn head_output(m: &Manifest, part: Option<i32>, with_checksum: bool) -> HeadObjectOutput {
    let stored = convert::stored(&m.user_metadata);
    let multipart = m.etag.contains('-');
    let sum = |a: Algorithm| {
        with_checksum
            .then(|| m.user_metadata.get(&checksum::metadata_key(a)).cloned())
            .flatten()
    };
    HeadObjectOutput {
        checksum_crc32: sum(Algorithm::Crc32),
        checksum_crc32c: sum(Algorithm::Crc32c),
        checksum_crc64nvme: sum(Algorithm::Crc64Nvme),
        checksum_sha1: sum(Algorithm::Sha1),
        checksum_sha256: sum(Algorithm::Sha256),
        accept_ranges: Some("bytes".into()),
        content_length: Some(m.size as i64),
        content_type: Some(
            m.content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".into()),
        ),
        e_tag: Some(etag(&m.etag)),
        last_modified: Some(timestamp(m.created_unix_ms)),
        metadata: stored.metadata,
        cache_control: stored.cache_control,
        content_disposition: stored.content_disposition,
        content_encoding: stored.content_encoding,
        content_language: stored.content_language,
        expires: stored.expires,
        parts_count: (part.is_some() && multipart).then_some(m.segments.len() as i32),
        ..Default::default()
    }
}

/// A listing page, shaped for both ListObjects versions.
struct Listing {
    entries: Vec<ListEntry>,
    truncated: bool,
    last: Option<String>,
    count: usize,
}

impl Listing {
    fn contents(&self, url: bool) -> Vec<Object> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                ListEntry::Object { key, summary } => Some(Object {
                    key: Some(convert::encode_listed(url, key)),
                    e_tag: Some(etag(&summary.etag)),
                    last_modified: Some(timestamp(summary.modified_unix_ms)),
                    size: Some(summary.size as i64),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    owner: Some(owner()),
                    ..Default::default()
                }),
                ListEntry::Prefix(_) => None,
            })
            .collect()
    }

    fn prefixes(&self, url: bool) -> Vec<CommonPrefix> {
        self.entries
            .iter()
            .filter_map(|e| match e {
                ListEntry::Prefix(p) => Some(CommonPrefix {
                    prefix: Some(convert::encode_listed(url, p)),
                }),
                ListEntry::Object { .. } => None,
            })
            .collect()
    }
}

impl ShardgateS3 {
    async fn list(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        after: Option<String>,
        max: usize,
    ) -> S3Result<Listing> {
        let store = self.gw.meta().clone();
        let bucket = bucket.to_string();
        let prefix = prefix.unwrap_or("").to_string();
        let delimiter = delimiter.map(str::to_string);
        let page = blocking(move || {
            store.list_objects(
                &bucket,
                &ListQuery {
                    prefix: &prefix,
                    delimiter: delimiter.as_deref(),
                    after: after.as_deref(),
                    max,
                },
            )
        })
        .await
        .or_s3()?;
        Ok(Listing {
            truncated: page.truncated,
            last: page.entries.last().map(|e| e.marker().to_string()),
            count: page.entries.len(),
            entries: page.entries,
        })
    }
}
