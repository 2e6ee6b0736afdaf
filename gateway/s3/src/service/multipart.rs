use super::*;

/// Where an upload keeps its `x-amz-tagging` until it completes.
const UPLOAD_TAGS: &str = ":tagging";
/// Where an upload keeps the owner and ACL of the object it makes (JSON).
const UPLOAD_ACL: &str = ":acl";
/// Where an upload keeps the canonical id of who started it.
const UPLOAD_INITIATOR: &str = ":initiator";

/// Which part of which upload a request writes.
struct PartOf<'a> {
    bucket: &'a str,
    key: &'a str,
    upload: &'a str,
    number: i32,
}

/// What CompleteMultipartUpload states beyond the parts' ETags.
struct Completion {
    /// The checksums listed with each part, in the request's order.
    given: Vec<Vec<(Algorithm, String)>>,
    /// The checksum the upload was created with.
    sum: Option<UploadChecksum>,
    /// `x-amz-checksum-*`: the whole object's.
    whole: Option<Expected>,
    /// `x-amz-mp-object-size`.
    size: Option<i64>,
}

/// A completed object's checksum, and the metadata that records it.
struct ObjectSum {
    algorithm: Algorithm,
    combine: Combine,
    value: String,
    metadata: BTreeMap<String, String>,
}

impl Completion {
    /// The checks of CompleteMultipartUpload that need the parts taken:
    /// each part's checksum as listed, the whole object's checksum and
    /// size if the request states them. Returns the object's checksum (an
    /// upload created with one).
    fn settle(&self, parts: &[(u32, PartRecord)]) -> S3Result<Option<ObjectSum>> {
        let mut sums = Vec::with_capacity(parts.len());
        let mut size = 0u64;
        for ((number, part), given) in parts.iter().zip(&self.given) {
            size += part.size;
            let has = part
                .checksum
                .as_ref()
                .and_then(|p| Algorithm::from_name(&p.algorithm).map(|a| (a, p.value.as_str())));
            for (algorithm, value) in given {
                match (has, self.sum) {
                    (Some((a, v)), _) if a == *algorithm => {
                        if v != value.trim() {
                            return Err(s3_error!(
                                InvalidPart,
                                "The {} checksum of part {number} does not match the part uploaded",
                                algorithm.header_suffix()
                            ));
                        }
                    }
                    (_, Some(u)) => {
                        return Err(s3_error!(
                            InvalidRequest,
                            "The upload was created using a {} checksum; part {number} is listed with a {} checksum",
                            u.algorithm.header_suffix(),
                            algorithm.header_suffix()
                        ));
                    }
                    (_, None) => {
                        return Err(s3_error!(
                            InvalidPart,
                            "Part {number} is listed with a {} checksum it was not uploaded with",
                            algorithm.header_suffix()
                        ));
                    }
                }
            }
            if let Some(u) = self.sum {
                if u.combine == Combine::Composite && given.is_empty() {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {number} in the request.",
                        u.algorithm.header_suffix()
                    ));
                }
                match has {
                    Some((a, v)) if a == u.algorithm => sums.push((v.to_string(), part.size)),
                    _ => {
                        return Err(s3_error!(
                            InvalidRequest,
                            "Part {number} was uploaded without the upload's {} checksum; upload it again",
                            u.algorithm.header_suffix()
                        ));
                    }
                }
            }
        }
        if let Some(want) = self.size
            && u64::try_from(want).ok() != Some(size)
        {
            return Err(s3_error!(
                InvalidRequest,
                "The provided 'x-amz-mp-object-size' header value {want} does not match what was computed: {size}"
            ));
        }
        let Some(u) = self.sum else {
            if self.whole.is_some() {
                return Err(s3_error!(
                    InvalidRequest,
                    "The upload was created without a checksum algorithm: an x-amz-checksum-* header does not apply to its completion"
                ));
            }
            return Ok(None);
        };
        let mut metadata = BTreeMap::new();
        let value = u.complete(&sums, &mut metadata)?;
        if let Some(whole) = &self.whole {
            if whole.algorithm != u.algorithm {
                return Err(s3_error!(
                    InvalidRequest,
                    "The upload was created using a {} checksum, not {}",
                    u.algorithm.header_suffix(),
                    whole.algorithm.header_suffix()
                ));
            }
            // A composite value may be stated with or without its `-N`.
            let bare = value.split('-').next().unwrap_or(&value);
            if let Given::Header(v) = &whole.value
                && v.trim() != value
                && v.trim() != bare
            {
                return Err(s3_error!(
                    BadDigest,
                    "The x-amz-checksum-{} you specified did not match the calculated checksum",
                    u.algorithm.header_suffix()
                ));
            }
        }
        Ok(Some(ObjectSum {
            algorithm: u.algorithm,
            combine: u.combine,
            value,
            metadata,
        }))
    }
}

/// The range of `x-amz-copy-source-range` (`bytes=FIRST-LAST`, both
/// inclusive and within the source's `size` bytes).
fn copy_range(header: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = header
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let first: u64 = first.parse().map_err(|_| invalid())?;
    let last: u64 = last.parse().map_err(|_| invalid())?;
    if first > last {
        return Err(invalid());
    }
    if last >= size {
        return Err(s3_error!(
            InvalidRange,
            "The x-amz-copy-source-range {header} is not within the source object of {size} bytes"
        ));
    }
    Ok(first..last + 1)
}

impl ShardgateS3 {
    pub(super) async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        convert::check_key(&input.key)?;
        let mut meta = headers!(input).into_meta()?;
        let (retention, legal_hold) = requested_lock!(input)?;
        lock::stash_lock(&mut meta, retention, legal_hold);
        // Decided now, for the writer that starts the upload; the bucket's
        // settings are checked again at the completion.
        let acl = self
            .acl_for_write(&caller, &input.bucket, requested_acl!(input))
            .await?;
        if let Some(acl) = acl {
            let json = serde_json::to_string(&acl)
                .map_err(|e| s3_error!(InternalError, "recording the upload's ACL: {e}"))?;
            meta.user_metadata.insert(UPLOAD_ACL.to_string(), json);
        }
        if let Some(id) = caller.requester.canonical_id() {
            meta.user_metadata
                .insert(UPLOAD_INITIATOR.to_string(), id.to_string());
        }
        let sum = UploadChecksum::requested(
            input.checksum_algorithm.as_ref(),
            input.checksum_type.as_ref(),
        )?;
        if let Some(sum) = sum {
            sum.stash(&mut meta.user_metadata);
        }
        // The tags wait in the upload's metadata, under a name no header
        // can have, until the upload completes.
        if let Some(header) = input.tagging.as_deref() {
            tagging::from_header(header)?;
            meta.user_metadata
                .insert(UPLOAD_TAGS.to_string(), header.to_string());
        }
        let record = UploadRecord {
            initiated_unix_ms: now_ms(),
            content_type: meta.content_type,
            user_metadata: meta.user_metadata,
        };
        let upload = self
            .gw
            .metadata()
            .create_upload(&input.bucket, &input.key, &record)
            .await
            .or_s3()?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload),
            checksum_algorithm: sum.map(|s| ChecksumAlgorithm::from_static(s.algorithm.name())),
            checksum_type: sum.map(|s| s.combine.s3()),
            ..Default::default()
        }))
    }

    pub(super) async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let part = PartOf {
            bucket: &input.bucket,
            key: &input.key,
            upload: &input.upload_id,
            number: input.part_number,
        };
        let upload_sum = self.check_part(&part).await?;
        let mut expected = declared_checksum!(input).expected()?;
        match (upload_sum, &expected) {
            (Some(u), Some(e)) if u.algorithm != e.algorithm => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                    u.algorithm.header_suffix(),
                    e.algorithm.header_suffix()
                ));
            }
            (Some(u), None) => expected = Some(Expected::computed(u.algorithm)),
            _ => {}
        }
        let (pending, verified) = self
            .write_body(
                IntentKind::PART,
                part.bucket,
                part.key,
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
                expected,
                req.trailing_headers.as_ref(),
                ObjectMeta::default(),
            )
            .await?;
        let part_etag = self.store_part(&part, pending, verified.clone()).await?;
        let mut out = UploadPartOutput {
            e_tag: Some(etag(&part_etag)),
            ..Default::default()
        };
        fill_checksum!(out, verified);
        Ok(S3Response::new(out))
    }

    /// UploadPartCopy: a part made of a version of another object (or a
    /// byte range of it, `x-amz-copy-source-range`), streamed through
    /// like a copy.
    pub(super) async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let part = PartOf {
            bucket: &input.bucket,
            key: &input.key,
            upload: &input.upload_id,
            number: input.part_number,
        };
        let upload_sum = self.check_part(&part).await?;
        let (
            CopyFrom {
                bucket: src_bucket,
                key: src_key,
                version_id,
            },
            source,
        ) = self
            .copy_source(&caller, &input.copy_source, copy_conditions!(input))
            .await?;
        let range = match input.copy_source_range.as_deref() {
            Some(r) => copy_range(r, source.manifest.size)?,
            None => 0..source.manifest.size,
        };
        let len = range.end - range.start;
        let last_modified = source.manifest.created_unix_ms;
        let version = shown_version(&source.version, version_id);
        let (body, _) = self
            .open_body(
                src_bucket,
                src_key,
                source.version.seq,
                source.manifest,
                (len > 0).then_some(range),
            )
            .await?;
        let body = (len > 0).then_some(body);
        let (pending, verified) = self
            .write_body(
                IntentKind::PART,
                part.bucket,
                part.key,
                body,
                Some(len as i64),
                None,
                upload_sum.map(|u| Expected::computed(u.algorithm)),
                None,
                ObjectMeta::default(),
            )
            .await?;
        let part_etag = self.store_part(&part, pending, verified.clone()).await?;
        let mut result = CopyPartResult {
            e_tag: Some(etag(&part_etag)),
            last_modified: Some(timestamp(last_modified)),
            ..Default::default()
        };
        fill_checksum!(result, verified);
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(result),
            copy_source_version_id: version,
            ..Default::default()
        }))
    }

    /// The part number is valid and the upload exists (before any byte
    /// of the part is stored); the checksum the upload was created with.
    async fn check_part(&self, part: &PartOf<'_>) -> S3Result<Option<UploadChecksum>> {
        if !(1..=convert::MAX_PART_NUMBER).contains(&part.number) {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and {}, inclusive",
                convert::MAX_PART_NUMBER
            ));
        }
        let record = self
            .gw
            .metadata()
            .upload(part.bucket, part.key, part.upload)
            .await
            .or_s3()?;
        Ok(UploadChecksum::stashed(&record.user_metadata))
    }

    /// Records a written part in its upload; returns its ETag.
    async fn store_part(
        &self,
        part_of: &PartOf<'_>,
        pending: Pending,
        checksum: Option<(Algorithm, String)>,
    ) -> S3Result<String> {
        let number = part_of.number;
        let Pending { write, intent } = pending;
        // A part always goes to the backends (`Gateway::write` keeps only
        // whole PUTs inline).
        let Some(intent) = intent else {
            return Err(s3_error!(
                InternalError,
                "a part was written without an intent"
            ));
        };
        let Some(segment) = write.manifest.segments.into_iter().next() else {
            return Err(s3_error!(InternalError, "the part produced no segment"));
        };
        let part = PartRecord {
            etag: write.manifest.etag,
            size: segment.plaintext_len,
            modified_unix_ms: now_ms(),
            segment,
            checksum: checksum.map(|(a, value)| PartChecksum {
                algorithm: a.name().to_string(),
                value,
            }),
        };
        let part_etag = part.etag.clone();
        let result = self
            .gw
            .metadata()
            .put_part(
                part_of.bucket,
                part_of.key,
                part_of.upload,
                number as u32,
                &part,
                intent.id(),
                now_ms(),
            )
            .await;
        self.gw.wake_collectors();
        match result {
            // Closed by the commit, or turned into garbage by it (NoSuchUpload).
            Ok(()) | Err(shardgate_meta::MetaError::NoSuchUpload) => {
                intent.closed();
            }
            Err(_) => intent.abandon().await,
        }
        result.or_s3()?;
        Ok(part_etag)
    }

    pub(super) async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let condition = put_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        let parts = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let mut given_sums = Vec::with_capacity(parts.len());
        let chosen = parts
            .into_iter()
            .map(|p| {
                given_sums.push(part_checksums!(p));
                match (p.part_number, p.e_tag) {
                    (Some(n), Some(e)) if n >= 1 => Ok((n as u32, e.value().to_string())),
                    _ => Err(s3_error!(
                        InvalidPart,
                        "Each part needs a PartNumber (1 or more) and an ETag"
                    )),
                }
            })
            .collect::<S3Result<Vec<_>>>()?;
        let record = self
            .gw
            .metadata()
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await;
        let mut record = match record {
            // Completed already? A retry with the same parts gets the
            // same answer.
            Err(shardgate_meta::MetaError::NoSuchUpload) => {
                let upload = (&*input.bucket, &*input.key, &*input.upload_id);
                return self.completed_before(upload, chosen, &condition).await;
            }
            other => other.or_s3()?,
        };
        let tags = tagging_header(record.user_metadata.remove(UPLOAD_TAGS).as_deref())?;
        record.user_metadata.remove(UPLOAD_INITIATOR);
        let acl = record
            .user_metadata
            .remove(UPLOAD_ACL)
            .map(|json| serde_json::from_str::<shardgate_authz::Acl>(&json))
            .transpose()
            .map_err(|e| s3_error!(InternalError, "reading the upload's ACL: {e}"))?;
        let (retention, legal_hold) = lock::unstash_lock(&mut record.user_metadata)?;
        let upload_sum = UploadChecksum::unstash(&mut record.user_metadata);
        let whole = Declared {
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            crc64nvme: input.checksum_crc64nvme,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            algorithm: None,
        }
        .expected()?;
        if let Some(kind) = &input.checksum_type {
            match upload_sum {
                Some(u) if kind.as_str().eq_ignore_ascii_case(u.combine.s3().as_str()) => {}
                Some(u) => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The upload was created using the {} checksum mode. The complete request must use the same checksum mode.",
                        u.combine.s3().as_str()
                    ));
                }
                None => {
                    return Err(s3_error!(
                        InvalidRequest,
                        "The upload was created without a checksum: x-amz-checksum-type does not apply"
                    ));
                }
            }
        }
        let completion = Completion {
            given: given_sums,
            sum: upload_sum,
            whole,
            size: input.mpu_object_size,
        };
        // The answer's checksum, from inside the store's transaction.
        let settled: Arc<std::sync::Mutex<Option<ObjectSum>>> = Arc::default();
        let settled_in = settled.clone();
        let now = now_ms();
        let build: BuildObject = Box::new(move |parts| {
            // Checked on the parts the completion takes, in its
            // transaction: a part uploaded again meanwhile is seen.
            let object_sum = completion.settle(&parts)?;
            let etags: Vec<&str> = parts.iter().map(|(_, p)| p.etag.as_str()).collect();
            let etag = convert::multipart_etag(&etags);
            let segments: Vec<_> = parts.into_iter().map(|(_, p)| p.segment).collect();
            let mut user_metadata = record.user_metadata.clone();
            if let Some(sum) = &object_sum {
                user_metadata.extend(sum.metadata.clone());
            }
            if let Ok(mut out) = settled_in.lock() {
                *out = object_sum;
            }
            let manifest = Manifest {
                version_id: VersionId::new(now),
                size: segments.iter().map(|s| s.plaintext_len).sum(),
                etag,
                content_type: record.content_type.clone(),
                user_metadata,
                created_unix_ms: now,
                segments,
            };
            Ok((
                manifest,
                VersionState {
                    tags: tags.clone(),
                    retention,
                    legal_hold,
                    acl: acl.clone(),
                    writer: caller.writer(),
                },
            ))
        });
        let done = self
            .gw
            .metadata()
            .complete_upload(
                &input.bucket,
                &input.key,
                &input.upload_id,
                chosen,
                convert::MIN_PART_BYTES,
                &condition,
                now,
                build,
            )
            .await;
        let (manifest, written) = match done {
            Err(CompleteError::Done(done)) => {
                return Ok(S3Response::new(replayed(&input.bucket, &input.key, &done)));
            }
            other => other.map_err(GatewayError::from).or_s3()?,
        };
        self.gw.wake_collectors();
        let object_sum = settled.lock().ok().and_then(|mut s| s.take());
        let mut out = CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(etag(&manifest.etag)),
            version_id: written.shown_id(),
            ..Default::default()
        };
        if let Some(sum) = object_sum {
            fill_checksum!(out, Some((sum.algorithm, sum.value)));
            out.checksum_type = Some(sum.combine.s3());
        }
        Ok(S3Response::new(out))
    }

    /// The answer to a completion of an upload that is gone: the same as
    /// the first time if it completed with these parts within a day
    /// ([`shardgate_meta::CompletedUpload`]), else NoSuchUpload.
    async fn completed_before(
        &self,
        (bucket, key, upload): (&str, &str, &str),
        chosen: Vec<(u32, String)>,
        condition: &Condition,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        // The store calls this only for an upload it still has, and it has
        // none: a new completion cannot start from here.
        let refuse: BuildObject = Box::new(|_| Err("the upload is gone".into()));
        let done = self
            .gw
            .metadata()
            .complete_upload(
                bucket,
                key,
                upload,
                chosen,
                convert::MIN_PART_BYTES,
                condition,
                now_ms(),
                refuse,
            )
            .await;
        match done {
            Err(CompleteError::Done(done)) => Ok(S3Response::new(replayed(bucket, key, &done))),
            Err(e) => Err(GatewayError::from(e)).or_s3(),
            Ok(_) => Err(s3_error!(
                InternalError,
                "an upload that was gone completed"
            )),
        }
    }

    pub(super) async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.gw
            .metadata()
            .abort_upload(&input.bucket, &input.key, &input.upload_id, now_ms())
            .await
            .or_s3()?;
        self.gw.wake_collectors();
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn list_parts(
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
        let meta = self.gw.metadata();
        let record = meta
            .upload(&input.bucket, &input.key, &input.upload_id)
            .await
            .or_s3()?;
        let (parts, truncated) = meta
            .list_parts(&input.upload_id, after, max)
            .await
            .or_s3()?;
        let sum = UploadChecksum::stashed(&record.user_metadata);
        let mut owners = self
            .listed_owners(&Caller::of(&req.extensions)?, &input.bucket)
            .await?;
        let next = parts.last().map(|(n, _)| *n as i32);
        let parts = parts
            .into_iter()
            .map(|(n, p)| {
                let mut part = Part {
                    e_tag: Some(etag(&p.etag)),
                    last_modified: Some(timestamp(p.modified_unix_ms)),
                    part_number: Some(n as i32),
                    size: Some(p.size as i64),
                    ..Default::default()
                };
                let verified = p
                    .checksum
                    .and_then(|c| Algorithm::from_name(&c.algorithm).map(|a| (a, c.value)));
                fill_checksum!(part, verified);
                part
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
            owner: Some(upload_owner(&mut owners, &record)),
            checksum_algorithm: sum.map(|s| ChecksumAlgorithm::from_static(s.algorithm.name())),
            checksum_type: sum.map(|s| s.combine.s3()),
            ..Default::default()
        }))
    }

    pub(super) async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max = convert::max_items(input.max_uploads, "max-uploads")?;
        let url = url_encoded(input.encoding_type.as_ref());
        let query = UploadQuery {
            prefix: input.prefix.as_deref().unwrap_or(""),
            delimiter: input.delimiter.as_deref(),
            key_after: input.key_marker.as_deref(),
            upload_after: input.upload_id_marker.as_deref(),
            max,
        };
        let page = self
            .gw
            .metadata()
            .list_uploads(&input.bucket, &query)
            .await
            .or_s3()?;
        let mut owners = self
            .listed_owners(&Caller::of(&req.extensions)?, &input.bucket)
            .await?;
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
                        owner: Some(upload_owner(&mut owners, &record)),
                        initiator: Some(upload_initiator(&mut owners, &record)),
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
            next_key_marker: page
                .truncated
                .then_some(next_key)
                .flatten()
                .map(|k| convert::encode_listed(url, &k)),
            next_upload_id_marker: page.truncated.then_some(next_upload).flatten(),
            key_marker: input.key_marker.map(|k| convert::encode_listed(url, &k)),
            upload_id_marker: input.upload_id_marker,
            prefix: input.prefix.map(|p| convert::encode_listed(url, &p)),
            delimiter: convert::listed_delimiter(url, input.delimiter),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}

/// A completion's answer as it was given the first time.
fn replayed(
    bucket: &str,
    key: &str,
    done: &shardgate_meta::CompletedUpload,
) -> CompleteMultipartUploadOutput {
    let mut out = CompleteMultipartUploadOutput {
        bucket: Some(bucket.to_string()),
        key: Some(key.to_string()),
        location: Some(format!("/{bucket}/{key}")),
        e_tag: Some(etag(&done.etag)),
        version_id: done.version_id.clone(),
        ..Default::default()
    };
    if let Some((algorithm, value, combine)) = checksum::stored(&done.user_metadata) {
        fill_checksum!(out, Some((algorithm, value)));
        out.checksum_type = Some(combine.s3());
    }
    out
}

/// Who started an upload (an unsigned requester, or one from before
/// this was kept: the owner of its object-to-be).
fn upload_initiator(owners: &mut acl::ListedOwners<'_>, record: &UploadRecord) -> Initiator {
    let o = match record.user_metadata.get(UPLOAD_INITIATOR) {
        Some(id) => owners.named(id),
        None => upload_owner(owners, record),
    };
    Initiator {
        display_name: o.display_name,
        id: o.id,
    }
}

/// Who owns an upload's object-to-be: the owner its ACL names, else the
/// bucket's.
fn upload_owner(owners: &mut acl::ListedOwners<'_>, record: &UploadRecord) -> Owner {
    let stashed = record
        .user_metadata
        .get(UPLOAD_ACL)
        .and_then(|json| serde_json::from_str::<shardgate_authz::Acl>(json).ok());
    match stashed {
        Some(acl) => owners.named(&acl.owner),
        None => owners.bucket_owner(),
    }
}
