//! Conversions between S3 shapes and ours: stored headers, conditions,
//! timestamps, listing tokens, limits.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use s3s::dto::{ETag, ETagCondition, Metadata, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use shardgate_core::Manifest;
use shardgate_pipeline::ObjectMeta;

/// S3's limits.
pub const MAX_KEY_BYTES: usize = 1024;
pub const MAX_METADATA_BYTES: usize = 2048;
pub const MAX_PUT_BYTES: u64 = 5 << 30;
pub const MIN_PART_BYTES: u64 = 5 << 20;
pub const MAX_PART_NUMBER: i32 = 10_000;
pub const MAX_LIST: i32 = 1000;
pub const MAX_DELETE_KEYS: usize = 1000;

/// Standard headers stored with an object. Their names start with ':',
/// which no HTTP header name (hence no `x-amz-meta-*` name) can contain,
/// so they share the manifest's metadata map with user metadata safely.
pub const CACHE_CONTROL: &str = ":cache-control";
pub const CONTENT_DISPOSITION: &str = ":content-disposition";
pub const CONTENT_ENCODING: &str = ":content-encoding";
pub const CONTENT_LANGUAGE: &str = ":content-language";
pub const EXPIRES: &str = ":expires";

pub fn check_key(key: &str) -> S3Result<()> {
    if key.is_empty() {
        return Err(s3_error!(
            InvalidArgument,
            "The object key must not be empty"
        ));
    }
    // Keys are stored as `bucket NUL key` and versions will follow a NUL:
    // a key with NUL could be read as another key and a version.
    if key.contains('\0') {
        return Err(s3_error!(
            InvalidArgument,
            "The object key must not contain the NUL character (U+0000)"
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(s3_error!(
            KeyTooLongError,
            "Your key is too long: {} bytes, at most {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    Ok(())
}

/// The headers an object is written with.
#[derive(Default)]
pub struct Headers {
    pub content_type: Option<String>,
    pub metadata: Option<Metadata>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

impl Headers {
    pub fn into_meta(self) -> S3Result<ObjectMeta> {
        let mut map = BTreeMap::new();
        let mut user_bytes = 0;
        for (k, v) in self.metadata.into_iter().flatten() {
            // The store keeps its own entries under names starting with
            // ':' (an upload's ACL, tags, checksum): no client may set one
            // (a header name cannot hold ':', a form field can).
            if k.starts_with(':') {
                return Err(s3_error!(
                    InvalidArgument,
                    "Metadata names may not start with ':' ({k:?})"
                ));
            }
            // It is answered as a header (a form field's name may be
            // anything).
            if http::HeaderName::from_bytes(format!("x-amz-meta-{k}").as_bytes()).is_err() {
                return Err(s3_error!(
                    InvalidArgument,
                    "Metadata name {k:?} is not a valid HTTP header name"
                ));
            }
            user_bytes += k.len() + v.len();
            map.insert(k.to_ascii_lowercase(), v);
        }
        if user_bytes > MAX_METADATA_BYTES {
            return Err(s3_error!(
                MetadataTooLarge,
                "Your metadata headers are {user_bytes} bytes, at most {MAX_METADATA_BYTES}"
            ));
        }
        let standard = [
            (CACHE_CONTROL, self.cache_control),
            (CONTENT_DISPOSITION, self.content_disposition),
            (
                CONTENT_ENCODING,
                self.content_encoding.and_then(without_aws_chunked),
            ),
            (CONTENT_LANGUAGE, self.content_language),
            (EXPIRES, self.expires.as_ref().and_then(format_http_date)),
        ];
        for (name, value) in standard {
            if let Some(v) = value {
                map.insert(name.to_string(), v);
            }
        }
        Ok(ObjectMeta {
            content_type: self.content_type,
            user_metadata: map,
        })
    }
}

/// The headers of a stored object, split back into user and standard ones.
pub struct Stored {
    pub metadata: Option<Metadata>,
    pub cache_control: Option<String>,
    pub content_disposition: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub expires: Option<Timestamp>,
}

pub fn stored(map: &BTreeMap<String, String>) -> Stored {
    let user: Metadata = map
        .iter()
        .filter(|(k, _)| !k.starts_with(':'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Stored {
        metadata: (!user.is_empty()).then_some(user),
        cache_control: map.get(CACHE_CONTROL).cloned(),
        content_disposition: map.get(CONTENT_DISPOSITION).cloned(),
        content_encoding: map.get(CONTENT_ENCODING).cloned(),
        content_language: map.get(CONTENT_LANGUAGE).cloned(),
        expires: map
            .get(EXPIRES)
            .and_then(|s| Timestamp::parse(TimestampFormat::HttpDate, s).ok()),
    }
}

/// `Content-Encoding` without the `aws-chunked` a streaming upload adds
/// (it describes the request's body, not the object); `None` when nothing
/// else is left.
fn without_aws_chunked(encoding: String) -> Option<String> {
    let is_aws_chunked = |e: &str| e.trim().eq_ignore_ascii_case("aws-chunked");
    if !encoding.split(',').any(is_aws_chunked) {
        return Some(encoding);
    }
    let kept: Vec<&str> = encoding
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !is_aws_chunked(e))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

fn format_http_date(t: &Timestamp) -> Option<String> {
    let mut out = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

pub fn timestamp(unix_ms: u64) -> Timestamp {
    // The last instant S3's formats can say (9999-12-31T23:59:59.999Z): a
    // later stored time (a far retention) is shown as that, never a panic.
    const LAST_MS: u64 = 253_402_300_799_999;
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(unix_ms.min(LAST_MS)))
}

fn unix_secs(t: &Timestamp) -> i64 {
    time_secs(t.clone())
}

fn time_secs(t: Timestamp) -> i64 {
    let t: SystemTime = SystemTime::from(time::OffsetDateTime::from(t));
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

pub fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_string())
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// The four conditional headers of GET and HEAD (RFC 9110 section 13.2.2
/// order, as S3 applies it): `If-Match`, else `If-Unmodified-Since`, may
/// fail with 412; then `If-None-Match`, else `If-Modified-Since`, may answer
/// 304.
pub struct Conditions<'a> {
    pub if_match: Option<&'a ETagCondition>,
    pub if_none_match: Option<&'a ETagCondition>,
    pub if_modified_since: Option<&'a Timestamp>,
    pub if_unmodified_since: Option<&'a Timestamp>,
}

impl Conditions<'_> {
    /// `not_modified`: the error for a failed `If-None-Match` /
    /// `If-Modified-Since` (304 on GET and HEAD, 412 for a copy source).
    pub fn check(&self, m: &Manifest, not_modified: S3ErrorCode) -> S3Result<()> {
        let modified = (m.created_unix_ms / 1000) as i64;
        let failed = || {
            S3Error::with_message(
                S3ErrorCode::PreconditionFailed,
                "At least one of the preconditions you specified did not hold",
            )
        };
        match (self.if_match, self.if_unmodified_since) {
            (Some(c), _) if !matches(c, &m.etag) => return Err(failed()),
            (None, Some(t)) if modified > unix_secs(t) => return Err(failed()),
            _ => {}
        }
        let unchanged = || S3Error::with_message(not_modified.clone(), "Not Modified");
        match (self.if_none_match, self.if_modified_since) {
            (Some(c), _) if matches(c, &m.etag) => Err(unchanged()),
            (None, Some(t)) if modified <= unix_secs(t) => Err(unchanged()),
            _ => Ok(()),
        }
    }
}

/// `Content-MD5`, decoded.
pub fn content_md5(value: Option<&str>) -> S3Result<Option<[u8; 16]>> {
    let Some(v) = value else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| {
            s3_error!(
                InvalidDigest,
                "The Content-MD5 you specified is not valid base64"
            )
        })?;
    let digest: [u8; 16] = bytes.try_into().map_err(|_| {
        s3_error!(
            InvalidDigest,
            "The Content-MD5 you specified is not 16 bytes"
        )
    })?;
    Ok(Some(digest))
}

/// A declared length: within 0..=5 GiB.
pub fn declared_length(len: Option<i64>) -> S3Result<Option<u64>> {
    match len {
        None => Ok(None),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "Content-Length is negative")),
        Some(n) if n as u64 > MAX_PUT_BYTES => Err(s3_error!(
            EntityTooLarge,
            "Your proposed upload of {n} bytes exceeds the maximum allowed size of {MAX_PUT_BYTES} bytes"
        )),
        Some(n) => Ok(Some(n as u64)),
    }
}

pub fn max_items(requested: Option<i32>, name: &str) -> S3Result<usize> {
    match requested {
        None => Ok(MAX_LIST as usize),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "{name} must not be negative")),
        Some(n) => Ok(n.min(MAX_LIST) as usize),
    }
}

/// Continuation tokens are the base64 of the last key or common prefix
/// returned: opaque to clients, and stateless for the gateway.
pub fn encode_token(marker: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(marker)
}

pub fn decode_token(token: &str) -> S3Result<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

/// Applies `encoding-type=url` to a listed string.
pub fn encode_listed(url: bool, s: &str) -> String {
    if url {
        urlencoding::encode(s).into_owned()
    } else {
        s.to_string()
    }
}

/// A listing's delimiter as its answer repeats it: encoded when asked,
/// and left out when empty (as S3 does).
pub fn listed_delimiter(url: bool, delimiter: Option<String>) -> Option<String> {
    delimiter
        .filter(|d| !d.is_empty())
        .map(|d| encode_listed(url, &d))
}

/// S3's multipart ETag: the MD5 of the parts' binary MD5s, then `-N`.
pub fn multipart_etag(part_etags: &[&str]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for e in part_etags {
        if let Ok(bytes) = hex::decode(e) {
            h.update(bytes);
        }
    }
    format!("{}-{}", hex::encode(h.finalize()), part_etags.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn aws_chunked_is_not_kept_as_the_object_s_content_encoding() {
        assert_eq!(without_aws_chunked("aws-chunked".into()), None);
        assert_eq!(
            without_aws_chunked("aws-chunked, gzip".into()).as_deref(),
            Some("gzip")
        );
        assert_eq!(
            without_aws_chunked("gzip,br".into()).as_deref(),
            Some("gzip,br")
        );
    }

    #[test]
    fn a_time_past_year_9999_is_shown_as_its_end() {
        let last = timestamp(u64::MAX);
        assert_eq!(time_secs(last), 253_402_300_799);
        assert_eq!(time_secs(timestamp(1_000)), 1);
    }

    #[test]
    fn multipart_etag_matches_s3() {
        // Two parts, MD5s of "a" and "b"; S3 gives md5(md5(a) || md5(b))-2.
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let want = {
            use md5::{Digest, Md5};
            let mut h = Md5::new();
            h.update(hex::decode(a).unwrap());
            h.update(hex::decode(b).unwrap());
            format!("{}-2", hex::encode(h.finalize()))
        };
        assert_eq!(multipart_etag(&[a, b]), want);
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_token(&encode_token("dir/ü")).unwrap(), "dir/ü");
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn standard_headers_share_the_map_without_clashing() {
        let h = Headers {
            metadata: Some([("Color".to_string(), "blue".to_string())].into()),
            cache_control: Some("no-cache".into()),
            expires: Some(timestamp(1_700_000_000_000)),
            ..Default::default()
        };
        let meta = h.into_meta().unwrap();
        let back = stored(&meta.user_metadata);
        assert_eq!(back.metadata.unwrap()["color"], "blue");
        assert_eq!(back.cache_control.as_deref(), Some("no-cache"));
        assert_eq!(unix_secs(back.expires.as_ref().unwrap()), 1_700_000_000);
    }
}
