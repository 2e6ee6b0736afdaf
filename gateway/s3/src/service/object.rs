use super::*;

impl ShardgateS3 {
    pub(super) async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let mut input = req.input;
        convert::check_key(&input.key)?;
        if caller.form_upload {
            // A browser POST: its ACL comes in the form's `acl` field, and
            // its key is decided here.
            let form = req.extensions.get::<crate::server::PostForm>();
            if let Some(acl) = form.and_then(|f| f.acl.clone())
                && input.acl.is_none()
            {
                input.acl = Some(ObjectCannedACL::from(acl));
            }
            self.authz.check_form_upload(&caller, &input).await?;
        }
        let condition = put_condition(input.if_match.as_ref(), input.if_none_match.as_ref())?;
        self.precheck(&input.bucket, &input.key, &condition).await?;
        let meta = headers!(input).into_meta()?;
        let tags = tagging_header(input.tagging.as_deref())?;
        let (retention, legal_hold) = requested_lock!(input)?;
        let acl = self
            .acl_for_write(&caller, &input.bucket, requested_acl!(input))
            .await?;
        let expected = declared_checksum!(input).expected()?;
        let (pending, verified) = self
            .write_body(
                IntentKind::PUT,
                &input.bucket,
                &input.key,
                input.body,
                input.content_length,
                input.content_md5.as_deref(),
                expected,
                req.trailing_headers.as_ref(),
                meta,
            )
            .await?;
        let (manifest, written) = self
            .gw
            .commit(
                &input.bucket,
                &input.key,
                pending,
                VersionState {
                    tags,
                    retention,
                    legal_hold,
                    acl,
                    writer: caller.writer(),
                },
                condition,
            )
            .await
            .or_s3()?;
        let mut out = PutObjectOutput {
            e_tag: Some(etag(&manifest.etag)),
            size: Some(manifest.size as i64),
            version_id: written.shown_id(),
            ..Default::default()
        };
        fill_checksum!(out, verified);
        Ok(S3Response::new(out))
    }

    pub(super) async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let ReadVersion {
            version,
            summary,
            manifest,
            tags,
        } = self.read_version(&input.bucket, &input.key, asked).await?;
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &["GetObject"], object, asked, &summary)
            .await?;
        let (lock_mode, lock_until, legal_hold) = lock::lock_output(&summary);
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
        let out = head_output(
            &manifest,
            input.part_number,
            wants_checksum(input.checksum_mode.as_ref(), input.range.is_some()),
        );
        let (body, len) = match range {
            // An empty part (`?partNumber=` of a 0-byte part): nothing to
            // read, 200 with Content-Length 0, as HEAD answers.
            Some(r) if r.is_empty() => (StreamingBlob::from(s3s::Body::empty()), 0),
            range => {
                self.open_body(&input.bucket, &input.key, version.seq, manifest, range)
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
            checksum_type: out.checksum_type,
            tag_count: (!tags.is_empty()).then_some(tags.len() as i32),
            version_id: shown_version(&version, asked),
            object_lock_mode: lock_mode,
            object_lock_retain_until_date: lock_until,
            object_lock_legal_hold_status: legal_hold,
            ..Default::default()
        }))
    }

    pub(super) async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let ReadVersion {
            version,
            summary,
            manifest,
            ..
        } = self.read_version(&input.bucket, &input.key, asked).await?;
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &["GetObject"], object, asked, &summary)
            .await?;
        Conditions {
            if_match: input.if_match.as_ref(),
            if_none_match: input.if_none_match.as_ref(),
            if_modified_since: input.if_modified_since.as_ref(),
            if_unmodified_since: input.if_unmodified_since.as_ref(),
        }
        .check(&manifest, S3ErrorCode::NotModified)?;
        let mut out = head_output(
            &manifest,
            input.part_number,
            wants_checksum(input.checksum_mode.as_ref(), false),
        );
        if let Some(n) = input.part_number {
            let r = part_range(&manifest, n)?;
            out.content_length = Some((r.end - r.start) as i64);
        }
        out.version_id = shown_version(&version, asked);
        (
            out.object_lock_mode,
            out.object_lock_retain_until_date,
            out.object_lock_legal_hold_status,
        ) = lock::lock_output(&summary);
        Ok(S3Response::new(out))
    }

    pub(super) async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        convert::check_key(&input.key)?;
        let selector = version_selector(input.version_id.as_deref())?;
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        let caller = Caller::of(&req.extensions)?.writer();
        let (bucket, key) = (input.bucket, input.key);
        let metadata = self.gw.metadata();
        let out = match selector {
            VersionSelector::Latest => {
                let deleted = metadata
                    .delete_object(&caller, &bucket, &key, now_ms())
                    .await
                    .or_s3()?;
                if deleted.removed.is_some() {
                    self.gw.wake_collectors();
                }
                DeleteObjectOutput {
                    delete_marker: deleted.marker.map(|_| true),
                    version_id: deleted.marker.map(|m| m.id()),
                    ..Default::default()
                }
            }
            selector => {
                let removed = metadata
                    .delete_version(&caller, &bucket, &key, selector, bypass, now_ms())
                    .await
                    .or_s3()?;
                let marker = removed.as_ref().is_some_and(|(_, s)| s.delete_marker);
                if removed.is_some() && !marker {
                    self.gw.wake_collectors();
                }
                // A version that is not there is deleted already: 204.
                DeleteObjectOutput {
                    delete_marker: marker.then_some(true),
                    version_id: input.version_id,
                    ..Default::default()
                }
            }
        };
        Ok(S3Response::new(out))
    }

    pub(super) async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // The owner is checked again in the deletes' own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let who = Caller::of(&req.extensions)?;
        let caller = who.writer();
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
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        let mut errors = Vec::new();
        let mut listed = Vec::with_capacity(objects.len());
        for o in objects {
            // Each key is decided on its own, as S3 does: a Deny on a
            // prefix, or on deleting versions, holds here too.
            let allowed = match convert::check_key(&o.key) {
                Ok(()) => {
                    let version = o.version_id.as_deref();
                    self.authz
                        .check_delete(&who, &input.bucket, &o.key, version, bypass)
                        .await
                }
                Err(e) => Err(e),
            };
            match allowed.and_then(|()| version_selector(o.version_id.as_deref())) {
                Ok(selector) => listed.push((o.key, o.version_id, selector)),
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    message: e.message().map(str::to_string),
                    key: Some(o.key),
                    version_id: o.version_id,
                }),
            }
        }
        let keys: Vec<(String, VersionSelector)> =
            listed.iter().map(|(k, _, s)| (k.clone(), *s)).collect();
        let results = self
            .gw
            .metadata()
            .delete_objects(&caller, &input.bucket, keys, bypass, now_ms())
            .await
            .or_s3()?;
        self.gw.wake_collectors();
        let mut deleted = Vec::new();
        for ((key, asked, _), result) in listed.into_iter().zip(results) {
            match result {
                Ok(d) => {
                    let removed_marker = d.removed.as_ref().is_some_and(|(_, s)| s.delete_marker);
                    deleted.push(DeletedObject {
                        key: Some(key),
                        version_id: asked,
                        delete_marker: (d.marker.is_some() || removed_marker).then_some(true),
                        delete_marker_version_id: d.marker.map(|m| m.id()),
                    });
                }
                Err(e) => {
                    let e = s3_error(GatewayError::Meta(e));
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        message: e.message().map(str::to_string),
                        key: Some(key),
                        version_id: asked,
                    });
                }
            }
        }
        let deleted = (!quiet).then_some(deleted);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted,
            errors: (!errors.is_empty()).then_some(errors),
            ..Default::default()
        }))
    }

    pub(super) async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        convert::check_key(&input.key)?;
        let (retention, legal_hold) = requested_lock!(input)?;
        // The copy gets the ACL asked for, not its source's (as in S3).
        let acl = self
            .acl_for_write(&caller, &input.bucket, requested_acl!(input))
            .await?;
        let (
            CopyFrom {
                bucket: src_bucket,
                key: src_key,
                version_id,
            },
            ReadVersion {
                version: source_version,
                manifest: source,
                tags: source_tags,
                ..
            },
        ) = self
            .copy_source(&caller, &input.copy_source, copy_conditions!(input))
            .await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        // A copy of a version onto its own key (no REPLACE) restores an
        // older version: S3 allows it; of the current one, it would change
        // nothing and is refused.
        if !replace && version_id.is_none() && src_bucket == input.bucket && src_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let tags = match &input.tagging_directive {
            Some(d) if d.as_str() == TaggingDirective::REPLACE => {
                tagging_header(input.tagging.as_deref())?
            }
            _ => source_tags,
        };
        let mut meta = if replace {
            headers!(input).into_meta()?
        } else {
            ObjectMeta {
                content_type: source.content_type.clone(),
                user_metadata: source.user_metadata.clone(),
            }
        };
        // The copy's checksum: the one asked for (`x-amz-checksum-algorithm`),
        // else the source's, whatever the metadata directive. A
        // whole-object one is carried over; one made of parts' checksums
        // describes parts the copy does not have, so it is computed anew.
        let asked_sum = input
            .checksum_algorithm
            .as_ref()
            .map(|a| {
                Algorithm::from_name(a.as_str()).ok_or_else(|| {
                    s3_error!(InvalidArgument, "Unknown checksum algorithm {}", a.as_str())
                })
            })
            .transpose()?;
        let (carried, expected) = match (asked_sum, checksum::stored(&source.user_metadata)) {
            (Some(a), Some((was, value, Combine::FullObject))) if a == was => {
                (Some((was, value)), None)
            }
            (Some(a), _) => (None, Some(Expected::computed(a))),
            (None, Some((was, value, Combine::FullObject))) => (Some((was, value)), None),
            (None, Some((was, _, Combine::Composite))) => (None, Some(Expected::computed(was))),
            (None, None) => (None, None),
        };
        checksum::forget(&mut meta.user_metadata);
        if let Some((a, v)) = &carried {
            checksum::record(&mut meta.user_metadata, *a, v.clone());
        }
        self.require_bucket(&input.bucket).await?;
        let size = source.size as i64;
        let (body, _) = self
            .open_body(src_bucket, src_key, source_version.seq, source, None)
            .await?;
        let (pending, computed) = self
            .write_body(
                IntentKind::PUT,
                &input.bucket,
                &input.key,
                Some(body),
                Some(size),
                None,
                expected,
                None,
                meta,
            )
            .await?;
        let (manifest, written) = self
            .gw
            .commit(
                &input.bucket,
                &input.key,
                pending,
                VersionState {
                    tags,
                    retention,
                    legal_hold,
                    acl,
                    writer: caller.writer(),
                },
                Condition::Always,
            )
            .await
            .or_s3()?;
        let mut result = CopyObjectResult {
            e_tag: Some(etag(&manifest.etag)),
            last_modified: Some(timestamp(manifest.created_unix_ms)),
            ..Default::default()
        };
        if let Some(sum) = carried.or(computed) {
            fill_checksum!(result, Some(sum));
            result.checksum_type = Some(Combine::FullObject.s3());
        }
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(result),
            copy_source_version_id: shown_version(&source_version, version_id),
            version_id: written.shown_id(),
            ..Default::default()
        }))
    }
}

/// Whether a GET or HEAD asked for the object's checksum and covers the
/// whole object or one part (a stored checksum says nothing about a
/// range).
fn wants_checksum(mode: Option<&ChecksumMode>, ranged: bool) -> bool {
    !ranged && mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case(ChecksumMode::ENABLED))
}

/// The headers of GET and HEAD.
fn head_output(m: &Manifest, part: Option<i32>, with_checksum: bool) -> HeadObjectOutput {
    let stored = convert::stored(&m.user_metadata);
    let multipart = m.etag.contains('-');
    let mut out = HeadObjectOutput {
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
    };
    if with_checksum {
        // The whole object's, or the part's asked for (part 1 of an object
        // sent in one piece is all of it).
        let sum = match part {
            Some(n) if multipart => usize::try_from(n)
                .ok()
                .and_then(|n| checksum::stored_part(&m.user_metadata, n))
                .map(|(a, v)| (a, v, Combine::FullObject)),
            _ => checksum::stored(&m.user_metadata),
        };
        if let Some((algorithm, value, combine)) = sum {
            fill_checksum!(out, Some((algorithm, value)));
            out.checksum_type = Some(combine.s3());
        }
    }
    out
}
