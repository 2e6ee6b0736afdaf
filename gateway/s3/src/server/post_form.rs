//! Browser POST uploads (`multipart/form-data` to a bucket): what S3 does
//! that s3s (0.14) leaves out.
//!
//! s3s parses the form, checks the POST policy's signature, expiry,
//! `content-length-range` and that every field is named by a condition,
//! then writes the file through PutObject. Three details are S3's and not
//! s3s's, and are done here on the form's fields (those before the file,
//! which S3 reads; at most [`FORM_HEAD_BYTES`] of them):
//! - a field that fails an `eq` or `starts-with` condition is refused
//!   with 403 AccessDenied "Invalid according to Policy" (s3s answers 400
//!   InvalidPolicyDocument, which S3 keeps for a malformed policy);
//! - `${filename}` in the key becomes the uploaded file's name (its last
//!   path component), after the policy's conditions held on the key as
//!   sent;
//! - the canned ACL comes in the field `acl` (s3s reads `x-amz-acl`): it
//!   is handed to the handler ([`PostForm`]).
//!
//! The bytes read are handed on unchanged but for the key's value.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, Request, header};
use s3s::post_policy::{PostPolicy, PostPolicyCondition};
use s3s::stream::{ByteStream, RemainingLength};

/// How much of a form's head is read for its fields (s3s refuses forms
/// with more field bytes than its own limit anyway).
pub(crate) const FORM_HEAD_BYTES: usize = 1 << 20;

/// What a POST form said that the handler needs.
#[derive(Clone, Debug, Default)]
pub struct PostForm {
    /// The `acl` field: the object's canned ACL.
    pub acl: Option<String>,
}

/// Why a form is refused before s3s reads it.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: http::StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The boundary of `req` when it is a form POSTed to a bucket.
pub(crate) fn boundary<B>(req: &Request<B>) -> Option<String> {
    if req.method() != http::Method::POST || req.uri().query().is_some() {
        return None;
    }
    let path = req.uri().path().trim_matches('/');
    if path.is_empty() || path.contains('/') {
        return None;
    }
    let content_type = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// A field of the form's head: its lower-cased name, and where its value
/// lies in the head.
struct Field {
    name: String,
    value: std::ops::Range<usize>,
}

/// The fields before the file part, and the file's name; `None` while the
/// head does not yet reach the file part's headers.
fn scan(head: &[u8], boundary: &str) -> Option<(Vec<Field>, Option<String>)> {
    let delimiter = format!("--{boundary}");
    let next = |from: usize| find(head, delimiter.as_bytes(), from);
    let mut at = next(0)?;
    let mut fields = Vec::new();
    loop {
        let headers_start = at + delimiter.len() + 2;
        let headers_end = find(head, b"\r\n\r\n", headers_start)?;
        let headers = std::str::from_utf8(head.get(headers_start..headers_end)?).ok()?;
        let disposition = headers
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then_some(v)
            })
            .unwrap_or_default();
        let name = parameter(disposition, "name").unwrap_or_default();
        if name.eq_ignore_ascii_case("file") {
            let filename = parameter(disposition, "filename")
                .map(|f| f.rsplit(['/', '\\']).next().unwrap_or_default().to_string());
            return Some((fields, filename));
        }
        let value_start = headers_end + 4;
        let end = find(head, format!("\r\n{delimiter}").as_bytes(), value_start)?;
        fields.push(Field {
            name: name.to_ascii_lowercase(),
            value: value_start..end,
        });
        at = end + 2;
    }
}

/// The value of `key` in a `Content-Disposition` (`name="x"`).
fn parameter(disposition: &str, key: &str) -> Option<String> {
    disposition.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// AccessDenied as S3 words a failed POST policy condition.
fn condition_failed(condition: &str) -> Refusal {
    Refusal {
        status: http::StatusCode::FORBIDDEN,
        code: "AccessDenied",
        message: format!("Invalid according to Policy: Policy Condition failed: {condition}"),
    }
}

/// The `eq` and `starts-with` conditions of the form's policy, on its
/// fields (`bucket` from the URL).
fn check_conditions(fields: &[(String, String)], bucket: &str) -> Result<(), Refusal> {
    let Some(encoded) = fields.iter().find(|(k, _)| k == "policy").map(|(_, v)| v) else {
        return Ok(());
    };
    // A policy s3s cannot read gets s3s's own answer.
    let Ok(policy) = PostPolicy::from_base64(encoded.trim()) else {
        return Ok(());
    };
    let value = |field: &str| match field {
        "bucket" => Some(bucket),
        _ => fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str()),
    };
    for condition in &policy.conditions {
        match condition {
            PostPolicyCondition::Eq { field, value: want }
                if value(field) != Some(want.as_str()) =>
            {
                return Err(condition_failed(&format!(
                    "[\"eq\", \"${field}\", \"{want}\"]"
                )));
            }
            PostPolicyCondition::StartsWith { field, prefix }
                if !value(field)
                    .unwrap_or_default()
                    .starts_with(prefix.as_str()) =>
            {
                return Err(condition_failed(&format!(
                    "[\"starts-with\", \"${field}\", \"{prefix}\"]"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the head of the form `req` carries, checks its policy's field
/// conditions, puts the file's name in its key, and hands the request on
/// with [`PostForm`] in its extensions.
pub(crate) async fn prepare(
    req: Request<s3s::Body>,
    boundary: &str,
) -> Result<Request<s3s::Body>, Refusal> {
    let bucket = req.uri().path().trim_matches('/').to_string();
    let (mut parts, mut body) = req.into_parts();
    let mut head = BytesMut::new();
    let scanned = loop {
        if let Some(found) = scan(&head, boundary) {
            break Some(found);
        }
        if head.len() > FORM_HEAD_BYTES {
            break None;
        }
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(Refusal {
                    status: http::StatusCode::BAD_REQUEST,
                    code: "IncompleteBody",
                    message: format!("reading the form: {e}"),
                });
            }
            None => break None,
        }
    };
    let mut head = head.freeze();
    let mut form = PostForm::default();
    if let Some((fields, filename)) = scanned {
        let text = |f: &Field| String::from_utf8_lossy(&head[f.value.clone()]).into_owned();
        let named: Vec<(String, String)> =
            fields.iter().map(|f| (f.name.clone(), text(f))).collect();
        check_conditions(&named, &bucket)?;
        form.acl = named
            .iter()
            .find(|(k, _)| k == "acl")
            .map(|(_, v)| v.clone());
        let key = fields.iter().find(|f| f.name == "key");
        if let (Some(key), Some(filename)) = (key, filename.filter(|f| !f.is_empty()))
            && text(key).contains("${filename}")
        {
            let named_key = text(key).replace("${filename}", &filename);
            let mut rewritten = BytesMut::with_capacity(head.len() + named_key.len());
            rewritten.extend_from_slice(&head[..key.value.start]);
            rewritten.extend_from_slice(named_key.as_bytes());
            rewritten.extend_from_slice(&head[key.value.end..]);
            let grown = named_key.len() as i64 - key.value.len() as i64;
            if let Some(length) = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                parts.headers.insert(
                    header::CONTENT_LENGTH,
                    HeaderValue::from((length + grown).max(0) as u64),
                );
            }
            head = rewritten.freeze();
        }
    }
    parts.extensions.insert(form);
    let stream: s3s::stream::DynByteStream = Box::pin(Prefixed {
        head: (!head.is_empty()).then_some(head),
        rest: body,
    });
    Ok(Request::from_parts(parts, s3s::Body::from(stream)))
}

/// A body whose first bytes were read already.
struct Prefixed {
    head: Option<Bytes>,
    rest: s3s::Body,
}

impl futures::Stream for Prefixed {
    type Item = Result<Bytes, s3s::StdError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(head) = self.head.take() {
            return std::task::Poll::Ready(Some(Ok(head)));
        }
        self.rest.poll_next_unpin(cx)
    }
}

impl ByteStream for Prefixed {
    fn remaining_length(&self) -> RemainingLength {
        let head = self.head.as_ref().map_or(0, Bytes::len);
        let rest = self.rest.remaining_length();
        match rest.exact() {
            Some(n) => RemainingLength::new_exact(head + n),
            None => RemainingLength::unknown(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)], filename: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in fields {
            out.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\nDATA\r\n--XyZ--\r\n"
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn the_fields_before_the_file_and_its_name_are_found() {
        let body = form(
            &[("key", "up/${filename}"), ("acl", "public-read")],
            "C:\\docs\\a.txt",
        );
        let (fields, filename) = scan(&body, "XyZ").unwrap();
        let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["key", "acl"]);
        assert_eq!(&body[fields[0].value.clone()], b"up/${filename}");
        assert_eq!(filename.as_deref(), Some("a.txt"));
        // Not there yet: a head cut before the file part's headers end.
        assert!(scan(&body[..body.len() - 60], "XyZ").is_none());
    }

    #[test]
    fn a_field_against_the_policy_is_access_denied() {
        use base64::Engine as _;
        let policy = r#"{"expiration":"2099-01-01T00:00:00.000Z","conditions":[["starts-with","$key","up/"],{"acl":"public-read"},{"bucket":"b"}]}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(policy);
        let fields = |key: &str, acl: &str| {
            vec![
                ("policy".to_string(), encoded.clone()),
                ("key".to_string(), key.to_string()),
                ("acl".to_string(), acl.to_string()),
            ]
        };
        assert!(check_conditions(&fields("up/a", "public-read"), "b").is_ok());
        let refused = check_conditions(&fields("down/a", "public-read"), "b").unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (403, "AccessDenied")
        );
        assert!(
            refused.message.contains("starts-with"),
            "{}",
            refused.message
        );
        assert!(check_conditions(&fields("up/a", "private"), "b").is_err());
        assert!(check_conditions(&fields("up/a", "public-read"), "other").is_err());
    }
}
