//! Object tagging: a version's tags, set by `x-amz-tagging` on PUT, copy
//! and CreateMultipartUpload, and by Put/Get/DeleteObjectTagging; and
//! bucket tagging (Put/Get/DeleteBucketTagging), kept in the bucket's
//! record.
//!
//! Tags live in the object row beside the manifest (`VersionState`), so
//! retagging rewrites no fragment, and repair (which rewrites a version's
//! fragments) keeps them.

use std::collections::BTreeMap;

use super::*;

/// S3's limits on object tags (a bucket may have 50).
pub const MAX_TAGS: usize = 10;
pub const MAX_BUCKET_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 128;
pub const MAX_TAG_VALUE_CHARS: usize = 256;

pub type Tags = BTreeMap<String, String>;

/// The tag set of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
pub fn from_header(header: &str) -> S3Result<Tags> {
    let pairs = form_urlencoded::parse(header.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    checked(pairs, MAX_TAGS)
}

/// The tag set of an object's `Tagging` document.
pub fn from_document(tagging: Tagging) -> S3Result<Tags> {
    from_document_of(tagging, MAX_TAGS)
}

/// The tag set of a `Tagging` document of at most `max` tags.
fn from_document_of(tagging: Tagging, max: usize) -> S3Result<Tags> {
    let pairs = tagging
        .tag_set
        .into_iter()
        .map(|t| match (t.key, t.value) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(s3_error!(MalformedXML, "Every Tag needs a Key and a Value")),
        })
        .collect::<S3Result<Vec<_>>>()?;
    checked(pairs, max)
}

/// S3's rules: at most `max` tags (10 on objects, 50 on buckets), unique keys of 1 to 128 characters not
/// starting with `aws:`, values of at most 256, letters, digits, spaces
/// and `+ - = . _ : / @` only.
fn checked(pairs: Vec<(String, String)>, max: usize) -> S3Result<Tags> {
    if pairs.len() > max {
        return Err(s3_error!(InvalidTag, "Tags cannot be more than {max}"));
    }
    let allowed = |s: &str| {
        s.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "+-=._:/@".contains(c))
    };
    let mut tags = Tags::new();
    for (key, value) in pairs {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_TAG_KEY_CHARS || !allowed(&key) {
            return Err(s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid"
            ));
        }
        if value.chars().count() > MAX_TAG_VALUE_CHARS || !allowed(&value) {
            return Err(s3_error!(
                InvalidTag,
                "The TagValue you have provided is invalid"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(s3_error!(
                InvalidTag,
                "Your TagKey cannot be prefixed with aws:"
            ));
        }
        if tags.insert(key, value).is_some() {
            return Err(s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(tags)
}

/// A tag set as S3 returns it.
pub fn tag_set(tags: Tags) -> TagSet {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

impl ShardgateS3 {
    pub(super) async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?.writer();
        let input = req.input;
        let tags = from_document_of(input.tagging, MAX_BUCKET_TAGS)?;
        self.gw
            .metadata()
            .set_bucket_tags(&caller, &input.bucket, &tags)
            .await
            .or_s3()?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(super) async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let record = self.bucket_record(&req.input.bucket).await?;
        let tags = record.tags().map_err(GatewayError::from).or_s3()?;
        if tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: tag_set(tags),
        }))
    }

    pub(super) async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let caller = Caller::of(&req.extensions)?.writer();
        self.gw
            .metadata()
            .set_bucket_tags(&caller, &req.input.bucket, &Tags::new())
            .await
            .or_s3()?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }

    /// Sets the tags of the version `version` names; returns its id as
    /// the response shows it.
    async fn set_tags(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: Option<&str>,
        tags: Tags,
    ) -> S3Result<Option<String>> {
        convert::check_key(key)?;
        let selector = version_selector(version)?;
        let tagged = self
            .gw
            .metadata()
            .set_object_tags(&caller.writer(), bucket, key, selector, &tags)
            .await
            .or_s3()?;
        Ok(shown_version(&tagged, version))
    }

    pub(super) async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        // The owner is checked again in the change's own transaction: the
        // bucket may have been deleted and created by another user since
        // the access check.
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let tags = from_document(input.tagging)?;
        let version = self
            .set_tags(
                &caller,
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                tags,
            )
            .await?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: version,
        }))
    }

    pub(super) async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let asked = input.version_id.as_deref();
        let read = self.read_version(&input.bucket, &input.key, asked).await?;
        let object = (&*input.bucket, &*input.key);
        self.recheck_read(&caller, &["GetObjectTagging"], object, asked, &read.summary)
            .await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(read.tags),
            version_id: shown_version(&read.version, asked),
        }))
    }

    pub(super) async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let caller = Caller::of(&req.extensions)?;
        let input = req.input;
        let version = self
            .set_tags(
                &caller,
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                Tags::new(),
            )
            .await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput {
            version_id: version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: S3Result<Tags>) -> String {
        r.expect_err("refused").code().as_str().to_string()
    }

    #[test]
    fn headers_parse_and_s3_rules_hold() {
        let tags = from_header("team=a%20b&tier=cold+storage&empty=").expect("valid");
        assert_eq!(tags["team"], "a b");
        assert_eq!(tags["tier"], "cold storage");
        assert_eq!(tags["empty"], "");
        let eleven: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert_eq!(code(from_header(&eleven.join("&"))), "InvalidTag");
        assert!(from_header(&eleven[..10].join("&")).is_ok());
        assert_eq!(code(from_header("a=1&a=2")), "InvalidTag");
        assert_eq!(code(from_header("aws:x=1")), "InvalidTag");
        assert_eq!(code(from_header("=1")), "InvalidTag");
        assert_eq!(code(from_header("a=%3Cscript%3E")), "InvalidTag");
        let long_key = "k".repeat(MAX_TAG_KEY_CHARS + 1);
        assert_eq!(code(from_header(&format!("{long_key}=v"))), "InvalidTag");
        let long_value = "v".repeat(MAX_TAG_VALUE_CHARS + 1);
        assert_eq!(code(from_header(&format!("k={long_value}"))), "InvalidTag");
        assert!(from_header(&format!("{}={}", "k".repeat(128), "é".repeat(256))).is_ok());
    }

    #[test]
    fn a_document_needs_keys_and_values() {
        let doc = Tagging {
            tag_set: vec![Tag {
                key: Some("k".into()),
                value: None,
            }],
        };
        assert_eq!(code(from_document(doc)), "MalformedXML");
    }
}
