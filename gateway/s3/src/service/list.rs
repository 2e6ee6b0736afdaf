use super::*;

impl ShardgateS3 {
    pub(super) async fn list_objects_v2(
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
        let mut owners = match input.fetch_owner {
            Some(true) => Some(
                self.listed_owners(&Caller::of(&req.extensions)?, &input.bucket)
                    .await?,
            ),
            _ => None,
        };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            key_count: Some(listing.count as i32),
            max_keys: Some(max as i32),
            is_truncated: Some(listing.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(listing.contents(url, owners.as_mut())),
            common_prefixes: Some(listing.prefixes(url)),
            prefix: input.prefix.map(|p| convert::encode_listed(url, &p)),
            delimiter: convert::listed_delimiter(url, input.delimiter),
            start_after: input.start_after.map(|s| convert::encode_listed(url, &s)),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    pub(super) async fn list_objects(
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
        let mut owners = self
            .listed_owners(&Caller::of(&req.extensions)?, &input.bucket)
            .await?;
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
            contents: Some(listing.contents(url, Some(&mut owners))),
            common_prefixes: Some(listing.prefixes(url)),
            prefix: Some(
                input
                    .prefix
                    .map(|p| convert::encode_listed(url, &p))
                    .unwrap_or_default(),
            ),
            delimiter: convert::listed_delimiter(url, input.delimiter),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
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
    /// The listed objects, with their owners when `owners`.
    fn contents(&self, url: bool, mut owners: Option<&mut acl::ListedOwners<'_>>) -> Vec<Object> {
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
                    owner: owners.as_mut().map(|o| o.of(summary)),
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
        let query = ListQuery {
            prefix: prefix.unwrap_or(""),
            delimiter,
            after: after.as_deref(),
            max,
        };
        let page = self
            .gw
            .metadata()
            .list_objects(bucket, &query)
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
