//! GetObjectAttributes: what a version is without its body (ETag, size,
//! checksum, storage class, and a multipart object's parts, paged).

use super::*;

impl ShardgateS3 {
    /// GetObjectTorrent: S3 serves no torrents for objects like these
    /// (encrypted, and written in fragments), so it answers NotImplemented
    /// for one that exists, and the key's own NoSuchKey otherwise.
    pub(super) async fn get_object_torrent(
        &self,
        req: S3Request<GetObjectTorrentInput>,
    ) -> S3Result<S3Response<GetObjectTorrentOutput>> {
        let input = req.input;
        convert::check_key(&input.key)?;
        self.gw
            .version(&input.bucket, &input.key, VersionSelector::Latest)
            .await
            .or_s3()?;
        Err(s3_error!(
            NotImplemented,
            "Torrents are not available for this object: shardgate stores objects encrypted and erasure-coded"
        ))
    }

    pub(super) async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let ReadVersion {
            version,
            manifest,
            summary,
            ..
        } = self.read_version(&input.bucket, &input.key, asked).await?;
        let ops = ["GetObject", "GetObjectAttributes"];
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &ops, object, asked, &summary)
            .await?;
        // One `x-amz-object-attributes` header lists them all, comma
        // separated (s3s hands it over as one element).
        let wants = |a: &str| {
            input
                .object_attributes
                .iter()
                .flat_map(|x| x.as_str().split(','))
                .any(|x| x.trim() == a)
        };
        let checksum = checksum::stored(&manifest.user_metadata).map(|(a, value, combine)| {
            let mut out = Checksum {
                checksum_type: Some(combine.s3()),
                ..Default::default()
            };
            fill_checksum!(out, Some((a, value)));
            out
        });
        let multipart = manifest.etag.contains('-');
        let object_parts = (wants(ObjectAttributes::OBJECT_PARTS) && multipart)
            .then(|| parts_page(&manifest, input.max_parts, input.part_number_marker))
            .transpose()?;
        Ok(S3Response::new(GetObjectAttributesOutput {
            e_tag: wants(ObjectAttributes::ETAG).then(|| etag(&manifest.etag)),
            object_size: wants(ObjectAttributes::OBJECT_SIZE).then_some(manifest.size as i64),
            storage_class: wants(ObjectAttributes::STORAGE_CLASS)
                .then(|| StorageClass::from_static(StorageClass::STANDARD)),
            checksum: checksum.filter(|_| wants(ObjectAttributes::CHECKSUM)),
            object_parts,
            last_modified: Some(timestamp(manifest.created_unix_ms)),
            version_id: shown_version(&version, asked),
            ..Default::default()
        }))
    }
}

/// One page of a multipart version's parts (its segments, numbered from
/// 1): after `marker`, at most `max` (1,000 by default, S3's limit).
fn parts_page(
    manifest: &Manifest,
    max: Option<i32>,
    marker: Option<i32>,
) -> S3Result<GetObjectAttributesParts> {
    let max = convert::max_items(max, "max-parts")?;
    let marker = marker.unwrap_or(0);
    if marker < 0 {
        return Err(s3_error!(
            InvalidArgument,
            "part-number-marker must be 0 or more"
        ));
    }
    let after: Vec<ObjectPart> = manifest
        .segments
        .iter()
        .zip(1i32..)
        .filter(|(_, n)| *n > marker)
        .map(|(s, n)| {
            let mut part = ObjectPart {
                part_number: Some(n),
                size: Some(s.plaintext_len as i64),
                ..Default::default()
            };
            let sum = checksum::stored_part(&manifest.user_metadata, n as usize);
            fill_checksum!(part, sum);
            part
        })
        .collect();
    let truncated = after.len() > max;
    let parts: Vec<ObjectPart> = after.into_iter().take(max).collect();
    Ok(GetObjectAttributesParts {
        is_truncated: Some(truncated),
        max_parts: Some(max as i32),
        next_part_number_marker: parts.last().and_then(|p| p.part_number),
        part_number_marker: Some(marker),
        total_parts_count: Some(manifest.segments.len() as i32),
        parts: Some(parts),
    })
}
