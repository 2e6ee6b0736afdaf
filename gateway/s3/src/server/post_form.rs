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

/// The parts a form may have (s3s is given the same limit).
pub(crate) const MAX_PARTS: usize = 64;

/// How much more of a head is read before it is scanned again.
const SCAN_STEP: usize = 16 << 10;

/// The answer to a body that could not be read: RequestTimeout when it
/// stalled, IncompleteBody otherwise.
pub(crate) fn body_refusal(e: &(dyn std::error::Error + 'static)) -> Refusal {
    if crate::server::conn::BodyStalled::in_chain(e) {
        return Refusal {
            status: http::StatusCode::BAD_REQUEST,
            code: "RequestTimeout",
            message: "Your socket connection to the server was not read from or written to within the timeout period".into(),
        };
    }
    Refusal {
        status: http::StatusCode::BAD_REQUEST,
        code: "IncompleteBody",
        message: format!("reading the form: {e}"),
    }
}

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
    // As s3s takes a POST Object: whatever the query.
    if req.method() != http::Method::POST {
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

/// A form's fields before its file, and the file's name.
type Head = (Vec<Field>, Option<String>);

/// A form this gateway will not read differently from s3s: refused whole.
#[derive(Debug)]
struct Malformed(&'static str);

/// The fields before the file part, and the file's name; `Ok(None)` while
/// the head does not yet reach the file part's headers.
///
/// The grammar is s3s's (`s3s::http::multipart`), so that both read the
/// same fields: the first line is the delimiter `--B` (after at most one
/// empty line); a part has at most two headers and one
/// `Content-Disposition: form-data; name="N"` (then `; filename="F"`), and
/// ends at a line that is exactly `--B`. What could read two ways (a name
/// given twice, a second `Content-Disposition`) is refused.
fn scan(head: &[u8], boundary: &str) -> Result<Option<Head>, Malformed> {
    let delimiter = format!("--{boundary}");
    let opening = if head.starts_with(b"\r\n") { 2 } else { 0 };
    let Some(first) = head.get(opening..opening + delimiter.len() + 2) else {
        return Ok(None);
    };
    if first != [delimiter.as_bytes(), b"\r\n"].concat() {
        return Err(Malformed("the form does not begin with its boundary"));
    }
    let mut at = opening + delimiter.len() + 2;
    let mut fields: Vec<Field> = Vec::new();
    let mut names = std::collections::HashSet::new();
    loop {
        let Some(headers_end) = find(head, b"\r\n\r\n", at) else {
            return Ok(None);
        };
        let headers = std::str::from_utf8(&head[at..headers_end])
            .map_err(|_| Malformed("a part's headers are not UTF-8"))?;
        let lines: Vec<&str> = headers.split("\r\n").collect();
        if lines.len() > 2 {
            return Err(Malformed("a part has more than two headers"));
        }
        // httparse ends a line at a bare LF and trims only spaces and
        // tabs: a header that would read otherwise is refused.
        if lines.iter().any(|l| l.contains(['\r', '\n'])) {
            return Err(Malformed("a part's header holds a bare CR or LF"));
        }
        let blank = |c: char| c == ' ' || c == '\t';
        let mut dispositions = lines.iter().filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case("content-disposition")
                .then_some(v.trim_matches(blank))
        });
        let (Some(disposition), None) = (dispositions.next(), dispositions.next()) else {
            return Err(Malformed("a part needs exactly one Content-Disposition"));
        };
        let (name, filename) = disposition_of(disposition).ok_or(Malformed(
            "a Content-Disposition is not form-data; name=\"...\"",
        ))?;
        let name = name.to_ascii_lowercase();
        if !names.insert(name.clone()) {
            return Err(Malformed("a field is given twice"));
        }
        if names.len() > MAX_PARTS {
            return Err(Malformed("the form has too many fields"));
        }
        if name == "file" {
            let filename =
                filename.map(|f| f.rsplit(['/', '\\']).next().unwrap_or_default().to_string());
            return Ok(Some((fields, filename)));
        }
        let value_start = headers_end + 4;
        let closing = [b"\r\n", delimiter.as_bytes(), b"\r\n"].concat();
        // An empty value may have no line of its own.
        let (value_end, next) = if head[value_start..].starts_with(&closing[2..]) {
            (value_start, value_start + closing.len() - 2)
        } else {
            match find(head, &closing, value_start) {
                Some(end) => (end, end + closing.len()),
                None => return Ok(None),
            }
        };
        fields.push(Field {
            name,
            value: value_start..value_end,
        });
        at = next;
    }
}

/// The name and file name of `form-data; name="N"[; filename="F"]`,
/// exactly as s3s reads it (no other parameter, no escapes).
fn disposition_of(value: &str) -> Option<(&str, Option<&str>)> {
    let rest = value.strip_prefix("form-data; name=\"")?;
    let (name, rest) = rest.split_once('"')?;
    if name.is_empty() {
        return None;
    }
    if rest.is_empty() {
        return Some((name, None));
    }
    let file = rest.strip_prefix("; filename=\"")?.strip_suffix('"')?;
    (!file.is_empty() && !file.contains('"')).then_some((name, Some(file)))
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
    // The fields the gateway acts on must be named by the policy, as s3s
    // requires of every field it reads.
    let named = |field: &str| {
        policy.conditions.iter().any(|c| match c {
            PostPolicyCondition::Eq { field: f, .. }
            | PostPolicyCondition::StartsWith { field: f, .. } => f == field,
            PostPolicyCondition::ContentLengthRange { .. } => false,
        })
    };
    if value("acl").is_some() && !named("acl") {
        return Err(Refusal {
            status: http::StatusCode::FORBIDDEN,
            code: "AccessDenied",
            message: "Invalid according to Policy: Extra input fields: acl".into(),
        });
    }
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

/// What a form's head (`head`, through the file part's headers) comes
/// to: the [`PostForm`], and the head again with the file's name in place
/// of `${filename}` in the key (`None`: no change). AccessDenied when a
/// field fails an `eq` or `starts-with` condition of the form's policy.
pub(crate) fn apply(
    head: &[u8],
    boundary: &str,
    bucket: &str,
) -> Result<(PostForm, Option<Vec<u8>>), Refusal> {
    let (fields, filename) = match scan(head, boundary) {
        Ok(Some(found)) => found,
        // Not reached within the head: s3s reads the form (and refuses
        // it) as it would have.
        Ok(None) => return Ok((PostForm::default(), None)),
        Err(Malformed(why)) => return Err(malformed(why)),
    };
    let text = |f: &Field| String::from_utf8_lossy(&head[f.value.clone()]).into_owned();
    let named: Vec<(String, String)> = fields.iter().map(|f| (f.name.clone(), text(f))).collect();
    check_conditions(&named, bucket)?;
    let form = PostForm {
        acl: named
            .iter()
            .find(|(k, _)| k == "acl")
            .map(|(_, v)| v.clone()),
    };
    let key = fields.iter().find(|f| f.name == "key");
    let rewritten = match (key, filename.filter(|f| !f.is_empty())) {
        (Some(key), Some(filename)) if text(key).contains("${filename}") => {
            let value = text(key).replace("${filename}", &filename);
            let mut out = Vec::with_capacity(head.len() + value.len());
            out.extend_from_slice(&head[..key.value.start]);
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(&head[key.value.end..]);
            // The file's name comes from the client: the head must read
            // as the same fields after it is put in (no line break, no
            // boundary smuggled in through it).
            let same = |again: &Head| {
                let names = |f: &[Field]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
                names(&again.0) == names(&fields)
            };
            if value.contains(['\r', '\n'])
                || !matches!(scan(&out, boundary), Ok(Some(again)) if same(&again))
            {
                return Err(malformed("the file's name cannot go in the key"));
            }
            Some(out)
        }
        _ => None,
    };
    Ok((form, rewritten))
}

fn malformed(why: &str) -> Refusal {
    Refusal {
        status: http::StatusCode::BAD_REQUEST,
        code: "MalformedPOSTRequest",
        message: format!(
            "The body of your POST request is not well-formed multipart/form-data: {why}"
        ),
    }
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
    // Up to the file part's headers, or as much as is read for a head;
    // scanned again only once another SCAN_STEP has come (a body sent a
    // byte at a time costs no more than one sent at once).
    let mut scanned = 0;
    loop {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(body_refusal(e.as_ref())),
            None => break,
        }
        if head.len() > FORM_HEAD_BYTES {
            break;
        }
        if head.len() - scanned >= SCAN_STEP {
            scanned = head.len();
            if !matches!(scan(&head, boundary), Ok(None)) {
                break;
            }
        }
    }
    let mut head = head.freeze();
    let (form, named) = apply(&head, boundary, &bucket)?;
    if let Some(named) = named {
        let grown = named.len() as i64 - head.len() as i64;
        if let Some(length) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            let length = length
                .checked_add(grown)
                .filter(|l| *l >= 0)
                .ok_or_else(|| malformed("its Content-Length does not hold the file's name"))?;
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length as u64));
        }
        head = Bytes::from(named);
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
        let (fields, filename) = scan(&body, "XyZ").unwrap().unwrap();
        let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["key", "acl"]);
        assert_eq!(&body[fields[0].value.clone()], b"up/${filename}");
        assert_eq!(filename.as_deref(), Some("a.txt"));
        // Not there yet: a head cut before the file part's headers end.
        assert!(scan(&body[..body.len() - 60], "XyZ").unwrap().is_none());
        // A value holding the boundary not on a line of its own, and an
        // empty value, read as s3s reads them.
        let body = form(&[("x-ignore-a", "a\r\n--XyZ-b"), ("key", "")], "a.txt");
        let (fields, _) = scan(&body, "XyZ").unwrap().unwrap();
        assert_eq!(&body[fields[0].value.clone()], b"a\r\n--XyZ-b");
        assert!(fields[1].value.is_empty());
    }

    #[test]
    fn a_form_that_could_read_two_ways_is_refused() {
        // A field given twice: s3s and the gateway could take different
        // ones.
        let twice = form(&[("acl", "public-read"), ("ACL", "private")], "a.txt");
        assert!(scan(&twice, "XyZ").is_err());
        // A second Content-Disposition renaming the part.
        let renamed = b"--XyZ\r\nContent-Disposition: form-data; name=\"acl\"\r\nContent-Disposition: form-data; name=\"x-ignore-a\"\r\n\r\npublic-read\r\n--XyZ\r\n";
        assert!(scan(renamed, "XyZ").is_err());
        // A disposition s3s would not read, and a form not opened by its
        // boundary.
        let odd = b"--XyZ\r\nContent-Disposition: form-data; name=acl\r\n\r\nx\r\n--XyZ\r\n";
        assert!(scan(odd, "XyZ").is_err());
        assert!(scan(b"junk\r\n--XyZ\r\n", "XyZ").is_err());
        // A bare LF in a part's headers, which httparse reads as a line's
        // end.
        let bare =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"acl\"\nX: y\r\n\r\nv\r\n--XyZ\r\n";
        assert!(scan(bare, "XyZ").is_err());
        // More parts than s3s takes.
        let many: Vec<(String, String)> = (0..=MAX_PARTS)
            .map(|i| (format!("x-ignore-{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(scan(&form(&many, "a.txt"), "XyZ").is_err());
        // A file name that would put a boundary in the key.
        let smuggled = form(&[("key", "up/x\r\n${filename}")], "--XyZ");
        let refused = apply(&smuggled, "XyZ", "b").unwrap_err();
        assert_eq!(refused.code, "MalformedPOSTRequest");
        let refused = apply(&twice, "XyZ", "b").unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (400, "MalformedPOSTRequest")
        );
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
