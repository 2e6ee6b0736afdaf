//! Bucket versioning: Put/GetBucketVersioning and ListObjectVersions.
//!
//! The versions themselves live in the metadata store (one row each, see
//! `shardgate_meta::version`); GET, HEAD, DELETE, copy and tagging take a
//! `versionId` in `object.rs` and `tagging.rs`.

use super::*;
use shardgate_meta::{VersionEntry, VersionQuery};

impl ShardgateS3 {
    pub(super) async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        let config = input.versioning_configuration;
        if config
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(s3_error!(
                InvalidArgument,
                "MFA delete is not supported by this gateway"
            ));
        }
        let versioning = match config.status.as_ref().map(|s| s.as_str()) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "The versioning Status must be Enabled or Suspended"
                ));
            }
        };
        self.gw
            .metadata()
            .set_versioning(&caller, &input.bucket, versioning)
            .await
            .or_s3()?;
        Ok(S3Response::new(PutBucketVersioningOutput {}))
    }

    pub(super) async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let record = self.bucket_record(&req.input.bucket).await?;
        let status = match record.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
            Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from_static),
            mfa_delete: None,
        }))
    }

    pub(super) async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let max = convert::max_items(input.max_keys, "max-keys")?;
        let url = url_encoded(input.encoding_type.as_ref());
        let version_after = match (&input.key_marker, input.version_id_marker.as_deref()) {
            (_, None | Some("")) => None,
            (None, Some(_)) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "A version-id marker cannot be specified without a key marker."
                ));
            }
            (Some(_), Some(v)) => Some(version_selector(Some(v))?),
        };
        let query = VersionQuery {
            prefix: input.prefix.as_deref().unwrap_or_default(),
            delimiter: input.delimiter.as_deref(),
            key_after: input.key_marker.as_deref().filter(|k| !k.is_empty()),
            version_after,
            max,
        };
        let page = self
            .gw
            .metadata()
            .list_versions(&input.bucket, &query)
            .await
            .or_s3()?;
        let (next_key, next_version) = match page.entries.last().filter(|_| page.truncated) {
            Some(VersionEntry::Version { key, version, .. }) => {
                (Some(key.clone()), Some(version.id()))
            }
            Some(VersionEntry::Prefix(p)) => (Some(p.clone()), None),
            None => (None, None),
        };
        let mut owners = self
            .listed_owners(&Caller::of(&req.extensions)?, &input.bucket)
            .await?;
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let mut prefixes = Vec::new();
        for entry in page.entries {
            match entry {
                VersionEntry::Version {
                    key,
                    version,
                    summary,
                    latest,
                } if summary.delete_marker => markers.push(DeleteMarkerEntry {
                    is_latest: Some(latest),
                    key: Some(convert::encode_listed(url, &key)),
                    last_modified: Some(timestamp(summary.modified_unix_ms)),
                    owner: Some(owners.of(&summary)),
                    version_id: Some(version.id()),
                }),
                VersionEntry::Version {
                    key,
                    version,
                    summary,
                    latest,
                } => versions.push(ObjectVersion {
                    e_tag: Some(etag(&summary.etag)),
                    is_latest: Some(latest),
                    key: Some(convert::encode_listed(url, &key)),
                    last_modified: Some(timestamp(summary.modified_unix_ms)),
                    owner: Some(owners.of(&summary)),
                    size: Some(summary.size as i64),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    version_id: Some(version.id()),
                    ..Default::default()
                }),
                VersionEntry::Prefix(p) => prefixes.push(CommonPrefix {
                    prefix: Some(convert::encode_listed(url, &p)),
                }),
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(
                input
                    .prefix
                    .map(|p| convert::encode_listed(url, &p))
                    .unwrap_or_default(),
            ),
            delimiter: convert::listed_delimiter(url, input.delimiter),
            key_marker: Some(
                input
                    .key_marker
                    .map(|k| convert::encode_listed(url, &k))
                    .unwrap_or_default(),
            ),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            next_key_marker: next_key.map(|k| convert::encode_listed(url, &k)),
            next_version_id_marker: next_version,
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            versions: (!versions.is_empty()).then_some(versions),
            delete_markers: (!markers.is_empty()).then_some(markers),
            common_prefixes: (!prefixes.is_empty()).then_some(prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}
