//! Signed GETs of whole objects, answered without s3s's request machinery.
//!
//! A 4 KiB GET spent about a quarter of the gateway's CPU in s3s's generic
//! path: resolving the route, the query and header maps it builds for every
//! request, SigV4 as it computes it (with no way to reuse a derived signing
//! key), turning headers into a DTO and the DTO back into headers
//! (BENCHMARKS.md, issue 26). The commonest request of all, a GET of a whole
//! object signed with SigV4 in its `Authorization` header or in a presigned
//! URL, is answered here instead, by the same access check, secret keys and
//! `get_object` handler.
//!
//! This module refuses nothing itself. It answers a request it has
//! verified in full, and declines everything else: another header or query
//! parameter, an anonymous request, a signature that does not match as
//! computed here, an expired or skewed date, a refusal of the access check.
//! s3s then answers the request as it always has, its refusals included.
//! So a mistake here can only send a request the slow way, never let
//! through one that s3s would have refused: every check s3s makes on such a
//! request (the signature over the same canonical request, its grammar, the
//! credential's scope and date, the presigned URL's expiry and skew, the
//! request date's skew) is made here too, and a request passes only when
//! all of them pass. An error of the handler itself (no such key, a
//! backend failing) is what s3s would have answered once it reached the
//! same handler, and is written by s3s's own function
//! ([`s3s::S3Error::to_http_response`]): the request is not run twice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::header::{self, IntoHeaderName};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use s3s::S3;
use s3s::auth::{Credentials, S3Auth};
use s3s::dto::{ChecksumMode, GetObjectInput, GetObjectOutput, Timestamp, TimestampFormat};
use s3s::path::S3Path;
use sha2::{Digest, Sha256};

use super::Auth;
use crate::access::{Access, Client};
use crate::service::ShardgateS3;

type HmacSha256 = Hmac<Sha256>;

/// The SHA-256 of an empty payload, as a GET without a body signs it.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers a request may carry and still take this path: what clients send
/// with a plain GET, none of which changes what s3s answers. Any other
/// header (a range, a condition, SSE-C, a session token,
/// an expected owner...) sends the request to s3s.
const PLAIN_HEADERS: &[&str] = &[
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "keep-alive",
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    // Read below: SDKs ask for checksums by default.
    "x-amz-checksum-mode",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    "x-amz-user-agent",
    "origin",
    "traceparent",
    "tracestate",
];

/// The query parameters of a presigned URL, all required, and nothing else.
const PRESIGNED_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];

/// The longest a presigned URL may be valid: a week, as S3 allows.
const MAX_PRESIGNED_EXPIRY_SECS: u32 = 604_800;

/// The longest credential scope this path takes.
const MAX_CREDENTIAL_BYTES: usize = 256;

/// Derived signing keys kept at most (a key lives for one UTC day).
const SIGNING_KEYS_KEPT: usize = 1024;

/// What answers signed GETs of whole objects without s3s.
pub(super) struct FastGet {
    s3: ShardgateS3,
    access: Access,
    auth: Auth,
    /// s3s's settings: the allowed clock skew, and how it normalizes paths.
    config: Arc<s3s::config::S3Config>,
    /// Derived signing keys by credential (access key, date, region and
    /// service), with the digest of the secret each was derived from: a
    /// changed secret derives anew, and the secret is looked up for every
    /// request, so a deleted user's key stops working at once.
    signing_keys: Mutex<HashMap<Box<str>, SigningKey>>,
}

/// A derived signing key, and the digest of the secret it was derived from.
struct SigningKey {
    secret_digest: [u8; 32],
    key: [u8; 32],
}

/// A SigV4 signature as the request carries it, in its header or its query.
struct Signature<'a> {
    /// `AK/DATE/REGION/SERVICE/aws4_request` as the request gave it.
    credential: &'a str,
    access_key: &'a str,
    /// `YYYYMMDD` of the credential's scope.
    date: &'a str,
    region: &'a str,
    service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    /// The canonical query string (empty for header signing).
    canonical_query: String,
    payload: &'a str,
}

impl<'a> Signature<'a> {
    /// A signature from its credential, date, signed headers and value, and
    /// the time it was made; `None` unless each is well formed and the
    /// credential's day is the date's.
    fn of(
        [credential_value, amz_date, signed, signature]: [&'a str; 4],
        canonical_query: String,
        payload: &'a str,
    ) -> Option<(Self, time::OffsetDateTime)> {
        let (access_key, date, region, service) = credential(credential_value)?;
        let at = amz_time(amz_date)?;
        if amz_date.get(..8)? != date {
            return None;
        }
        let signature = Signature {
            credential: credential_value,
            access_key,
            date,
            region,
            service,
            amz_date,
            signed_headers: signed_header_list(signed)?,
            signature,
            canonical_query,
            payload,
        };
        Some((signature, at))
    }
}

impl FastGet {
    pub(super) fn new(
        s3: ShardgateS3,
        access: Access,
        auth: Auth,
        config: Arc<s3s::config::S3Config>,
    ) -> Self {
        Self {
            s3,
            access,
            auth,
            config,
            signing_keys: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to `req` when it is a signed GET of a whole object that
    /// passes every check; `None` for s3s to answer.
    pub(super) async fn answer(
        &self,
        req: &Request<s3s::Body>,
        client: Client,
    ) -> Option<Response<s3s::Body>> {
        if req.method() != Method::GET
            || req.version() != http::Version::HTTP_11
            || !req
                .headers()
                .keys()
                .all(|name| PLAIN_HEADERS.contains(&name.as_str()))
        {
            return None;
        }
        // Decoded once, as s3s decodes it: the object it names and the
        // canonical request's path both come from it.
        let path = urlencoding::decode(req.uri().path()).ok()?;
        let (bucket, key) = self.object_of(&path)?;
        let now = time::OffsetDateTime::now_utc();
        let pairs = match req.uri().query() {
            None => Vec::new(),
            Some(query) => query_pairs(query),
        };
        let signature = match pairs.is_empty() {
            true => from_header(req.headers(), now, &self.config)?,
            false => from_query(
                req.uri().query().unwrap_or_default(),
                &pairs,
                req.headers(),
                now,
                &self.config,
            )?,
        };
        if signature.service != "s3" {
            return None;
        }
        let secret = self.auth.get_secret_key(signature.access_key).await.ok()?;
        let canonical = canonical_request(&path, req.headers(), &signature)?;
        if !self.verify(&signature, secret.expose(), &canonical) {
            return None;
        }
        let caller = self
            .access
            .admit(
                Some(signature.access_key),
                "GetObject",
                Some(&bucket),
                Some(&key),
                None,
                req.uri(),
                req.headers(),
                Some(client),
            )
            .await
            .ok()?;
        let checksum_mode = match one_value(req.headers(), "x-amz-checksum-mode") {
            Ok(None) => None,
            Ok(Some(ChecksumMode::ENABLED)) => {
                Some(ChecksumMode::from_static(ChecksumMode::ENABLED))
            }
            _ => return None,
        };
        let input = GetObjectInput::builder()
            .bucket(bucket)
            .key(key)
            .checksum_mode(checksum_mode)
            .build()
            .ok()?;
        let mut extensions = http::Extensions::new();
        extensions.insert(client);
        extensions.insert(caller);
        let s3_req = s3s::S3Request {
            input,
            method: Method::GET,
            uri: req.uri().clone(),
            // The handler reads its input and the caller, not the headers.
            headers: HeaderMap::new(),
            extensions,
            credentials: Some(Credentials {
                access_key: signature.access_key.to_owned(),
                secret_key: secret,
            }),
            region: Some(signature.region.parse().ok()?),
            service: Some(signature.service.to_owned()),
            trailing_headers: None,
        };
        let out = match self.s3.get_object(s3_req).await {
            Ok(out) => out,
            // What s3s would answer, by its own function: the request
            // would have reached the same handler there.
            Err(e) => return e.to_http_response().ok(),
        };
        if !out.headers.is_empty() || out.status.is_some() || !out.extensions.is_empty() {
            return None;
        }
        respond(out.output)
    }

    /// The bucket and key a decoded path names, as s3s reads them; `None`
    /// for anything but an object.
    fn object_of(&self, decoded: &str) -> Option<(String, String)> {
        let validation = s3s::validation::AwsNameValidation::new();
        match s3s::path::parse_path_style_with_validation_and_normalization(
            decoded,
            &validation,
            self.config.normalize_forward_slash_path,
        )
        .ok()?
        {
            S3Path::Object { bucket, key } => Some((bucket.into(), key.into())),
            _ => None,
        }
    }

    /// Whether `signature` is the one `canonical` has under `secret`. The
    /// signing key is derived once per access key, day, region and service,
    /// and kept only once a signature made with it matched.
    fn verify(&self, signature: &Signature<'_>, secret: &str, canonical: &str) -> bool {
        let secret_digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let cached = {
            let keys = self.signing_keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.get(signature.credential)
                .filter(|k| k.secret_digest == secret_digest)
                .map(|k| k.key)
        };
        let key = cached.unwrap_or_else(|| {
            signing_key(secret, signature.date, signature.region, signature.service)
        });
        let expected = hex_lower(&hmac(&key, string_to_sign(signature, canonical).as_bytes()));
        let matched = same_signature(&expected, signature.signature);
        if matched && cached.is_none() {
            let mut keys = self.signing_keys.lock().unwrap_or_else(|e| e.into_inner());
            if keys.len() >= SIGNING_KEYS_KEPT {
                keys.clear();
            }
            let derived = SigningKey { secret_digest, key };
            keys.insert(signature.credential.into(), derived);
        }
        matched
    }
}

/// What SigV4 signs: the algorithm, the date, the scope and the canonical
/// request's digest.
fn string_to_sign(signature: &Signature<'_>, canonical: &str) -> String {
    let digest = hex_lower(&Sha256::digest(canonical.as_bytes()).into());
    let mut out = String::with_capacity(160);
    for part in [
        ALGORITHM,
        "\n",
        signature.amz_date,
        "\n",
        signature.date,
        "/",
        signature.region,
        "/",
        signature.service,
        "/aws4_request\n",
    ] {
        out.push_str(part);
    }
    out.push_str(std::str::from_utf8(&digest).unwrap_or_default());
    out
}

/// 32 bytes as 64 lowercase hex digits.
fn hex_lower(bytes: &[u8; 32]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// A header's one value as text: `Ok(None)` when it is absent, `Err` when
/// it is there more than once or is not text.
fn one_value<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    match values.next() {
        None => value.to_str().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of every length")
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's signing key: the secret chained through the scope.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let region = hmac(&date, region.as_bytes());
    let service = hmac(&region, service.as_bytes());
    hmac(&service, b"aws4_request")
}

/// Whether two hex signatures are equal, in time that does not depend on
/// where they differ.
fn same_signature(expected: &[u8], given: &str) -> bool {
    expected.len() == given.len()
        && expected
            .iter()
            .zip(given.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `Credential=AK/DATE/REGION/SERVICE/aws4_request`'s value, split.
fn credential(value: &str) -> Option<(&str, &str, &str, &str)> {
    // Longer ones are left to s3s: they would make large cache keys.
    if value.len() > MAX_CREDENTIAL_BYTES {
        return None;
    }
    let mut parts = value.split('/');
    let (access_key, date, region, service, terminal) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    (parts.next().is_none() && terminal == "aws4_request" && !access_key.is_empty())
        .then_some((access_key, date, region, service))
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn amz_time(value: &str) -> Option<time::OffsetDateTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<u16> {
        let digits = value.get(from..to)?;
        digits
            .bytes()
            .all(|d| d.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(number(4, 6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::from(number(0, 4)?),
        month,
        u8::try_from(number(6, 8)?).ok()?,
    )
    .ok()?;
    let hms = |from| u8::try_from(number(from, from + 2)?).ok();
    let at = time::Time::from_hms(hms(9)?, hms(11)?, hms(13)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, at).assume_utc())
}

/// A list of signed headers as this path takes it: lowercase names, sorted,
/// each once, `host` among them (so that a `Host` s3s would refuse is
/// checked as text when it is canonicalized).
fn signed_header_list(value: &str) -> Option<Vec<&str>> {
    let names: Vec<&str> = value.split(';').collect();
    let plain = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| !b.is_ascii_uppercase() && b.is_ascii_graphic())
    });
    let sorted = names.windows(2).all(|w| w[0] < w[1]);
    (plain && sorted && names.contains(&"host")).then_some(names)
}

/// `AWS4-HMAC-SHA256 Credential=C, SignedHeaders=H, Signature=S` split, in
/// s3s's grammar: whitespace after the algorithm, the three parts in that
/// order, each comma right after its value, whitespace allowed after it.
fn authorization_parts(value: &str) -> Option<(&str, &str, &str)> {
    let rest = value.strip_prefix(ALGORITHM)?;
    let rest = rest.strip_prefix(|c: char| c.is_ascii_whitespace())?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (credential, rest) = rest.strip_prefix("Credential=")?.split_once(',')?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let (signed, rest) = rest.strip_prefix("SignedHeaders=")?.split_once(',')?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    let signature = rest.strip_prefix("Signature=")?;
    let signature = signature.trim_end_matches(|c: char| c.is_ascii_whitespace());
    let clean = |part: &str| !part.is_empty() && !part.contains(|c: char| c.is_ascii_whitespace());
    (clean(credential) && clean(signed) && clean(signature))
        .then_some((credential, signed, signature))
}

/// The signature of a request signed in its `Authorization` header, when
/// its date is within the allowed skew of `now`.
fn from_header<'a>(
    headers: &'a HeaderMap,
    now: time::OffsetDateTime,
    config: &s3s::config::S3Config,
) -> Option<Signature<'a>> {
    let one = |name: &str| one_value(headers, name).ok().flatten();
    let (credential_value, signed, signature) = authorization_parts(one("authorization")?)?;
    let payload = one("x-amz-content-sha256")?;
    if payload != UNSIGNED_PAYLOAD && payload != EMPTY_SHA256 {
        return None;
    }
    let parts = [credential_value, one("x-amz-date")?, signed, signature];
    let (signature, at) = Signature::of(parts, String::new(), payload)?;
    let skew = time::Duration::seconds(i64::from(config.presigned_url_max_skew_time_secs));
    ((now - at).abs() <= skew).then_some(signature)
}

/// The signature of a presigned URL (its query is `query`, decoded into
/// `pairs`), when it has not expired and its date is not too far ahead of
/// `now`.
fn from_query<'a>(
    query: &'a str,
    pairs: &'a [(Cow<'a, str>, Cow<'a, str>)],
    headers: &HeaderMap,
    now: time::OffsetDateTime,
    config: &s3s::config::S3Config,
) -> Option<Signature<'a>> {
    // s3s checks an `Authorization` header (a version 2 one first) even
    // beside a presigned URL's signature.
    if pairs.len() != PRESIGNED_PARAMS.len()
        || headers.contains_key("x-amz-content-sha256")
        || headers.contains_key(header::AUTHORIZATION)
    {
        return None;
    }
    let get = |name: &str| {
        let mut found = pairs.iter().filter(|(n, _)| n == name);
        let value = &found.next()?.1;
        found.next().is_none().then_some(&**value)
    };
    let [
        algorithm,
        credential_value,
        amz_date,
        expires,
        signed,
        signature,
    ] = PRESIGNED_PARAMS.map(get);
    if algorithm? != ALGORITHM {
        return None;
    }
    // What the gateway refuses before s3s sees it (`presigned_expiry_problem`)
    // is left to that refusal.
    let expires = expires?.parse::<u32>().ok()?;
    if !(1..=MAX_PRESIGNED_EXPIRY_SECS).contains(&expires) {
        return None;
    }
    let expires = time::Duration::seconds(expires.into());
    let parts = [credential_value?, amz_date?, signed?, signature?];
    let (signature, at) = Signature::of(parts, canonical_query(query), UNSIGNED_PAYLOAD)?;
    let skew = time::Duration::seconds(i64::from(config.presigned_url_max_skew_time_secs));
    let age = now - at;
    (age <= expires && !(age.is_negative() && -age > skew)).then_some(signature)
}

/// A query's parameters, decoded as s3s decodes them (`+` is a space);
/// only a part with an escape is copied.
fn query_pairs(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// `raw` decoded as `form_urlencoded` decodes it (`+` a space, `%XX` its
/// byte, a `%` without two hex digits left as it is, bytes that are not
/// UTF-8 replaced), copied only when there is something to decode. Its
/// byte-at-a-time decoder was 1% of a GET's CPU, for one parameter.
fn form_decode(raw: &str) -> Cow<'_, str> {
    let bytes = raw.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%' || b == b'+') else {
        return Cow::Borrowed(raw);
    };
    let hex = |d: Option<&u8>| match d? {
        d @ b'0'..=b'9' => Some(d - b'0'),
        d @ b'a'..=b'f' => Some(d - b'a' + 10),
        d @ b'A'..=b'F' => Some(d - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i)), hex(bytes.get(i + 1))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
    }
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// A presigned URL's canonical query: every parameter but the signature,
/// its name and value decoded and encoded again the SigV4 way, sorted by
/// name. A part already encoded that way, as SDKs send them, is taken as
/// it is: decoding and encoding it again gives it back unchanged.
fn canonical_query(query: &str) -> String {
    let mut parts: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(PRESIGNED_PARAMS.len());
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let part = match (is_canonical(name), is_canonical(value)) {
            (true, true) => (Cow::Borrowed(name), Cow::Borrowed(value)),
            _ => {
                let Some((name, value)) = form_urlencoded::parse(piece.as_bytes()).next() else {
                    continue;
                };
                (
                    Cow::Owned(uri_encode(&name, true)),
                    Cow::Owned(uri_encode(&value, true)),
                )
            }
        };
        if part.0 != "X-Amz-Signature" {
            parts.push(part);
        }
    }
    parts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(query.len());
    for (i, (name, value)) in parts.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Whether `raw` is in SigV4's encoding already: unreserved characters,
/// and `%XX` (uppercase) for ASCII bytes that are not.
fn is_canonical(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => i += 1,
            b'%' => {
                let digit = |d: u8| match d {
                    b'0'..=b'9' => Some(d - b'0'),
                    b'A'..=b'F' => Some(d - b'A' + 10),
                    _ => None,
                };
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(digit),
                    b.get(i + 2).copied().and_then(digit),
                ) else {
                    return false;
                };
                let byte = hi << 4 | lo;
                let unreserved = byte.is_ascii_alphanumeric() || b"_-~.".contains(&byte);
                if byte >= 0x80 || unreserved {
                    return false;
                }
                i += 3;
            }
            _ => return false,
        }
    }
    true
}

/// SigV4's URI encoding: everything but unreserved characters (and `/`,
/// unless `slash`) as `%XX`.
fn uri_encode(input: &str, slash: bool) -> String {
    let mut out = String::with_capacity(input.len() + 8);
    for byte in input.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'~' | b'.' => {
                out.push(byte as char)
            }
            b'/' if !slash => out.push('/'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(byte >> 4)] as char);
                out.push(HEX[usize::from(byte & 15)] as char);
            }
        }
    }
    out
}

/// A header's value as SigV4 signs it: trimmed, inner runs of whitespace
/// made one space.
fn push_header_value(out: &mut String, value: &str) {
    let mut words = value.split_whitespace();
    if let Some(first) = words.next() {
        out.push_str(first);
    }
    for word in words {
        out.push(' ');
        out.push_str(word);
    }
}

/// The canonical request of a GET as s3s computes it (the `decoded` path
/// encoded again); `None` when a signed header is missing.
fn canonical_request(
    decoded: &str,
    headers: &HeaderMap,
    signature: &Signature<'_>,
) -> Option<String> {
    let mut out = String::with_capacity(512);
    out.push_str("GET\n");
    out.push_str(&uri_encode(decoded, false));
    out.push('\n');
    out.push_str(&signature.canonical_query);
    out.push('\n');
    for name in &signature.signed_headers {
        if *name == "authorization" {
            return None;
        }
        let mut values = headers.get_all(*name).iter().peekable();
        values.peek()?;
        out.push_str(name);
        out.push(':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_header_value(&mut out, value.to_str().ok()?);
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signature.signed_headers.join(";"));
    out.push('\n');
    out.push_str(signature.payload);
    Some(out)
}

/// The response s3s would give for `out`: the same headers, in the same
/// order. `None` for what it would encode differently (a partial content,
/// user metadata that is not plain ASCII).
fn respond(out: GetObjectOutput) -> Option<Response<s3s::Body>> {
    if out.content_range.is_some() {
        return None;
    }
    let mut response = Response::new(s3s::Body::from(out.body?));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    fn text(h: &mut HeaderMap, name: impl IntoHeaderName, value: Option<&str>) -> Option<()> {
        if let Some(value) = value {
            h.insert(name, HeaderValue::from_str(value).ok()?);
        }
        Some(())
    }
    fn shown(
        h: &mut HeaderMap,
        name: impl IntoHeaderName,
        value: Option<impl ToString>,
    ) -> Option<()> {
        text(h, name, value.map(|v| v.to_string()).as_deref())
    }
    fn stamp(
        h: &mut HeaderMap,
        name: impl IntoHeaderName,
        value: Option<&Timestamp>,
        format: TimestampFormat,
    ) -> Option<()> {
        if let Some(value) = value {
            let mut buf = Vec::with_capacity(32);
            match format {
                TimestampFormat::HttpDate => http_date(value, &mut buf)?,
                _ => value.format(format, &mut buf).ok()?,
            }
            h.insert(name, HeaderValue::from_bytes(&buf).ok()?);
        }
        Some(())
    }
    text(h, header::ACCEPT_RANGES, out.accept_ranges.as_deref())?;
    shown(
        h,
        "x-amz-server-side-encryption-bucket-key-enabled",
        out.bucket_key_enabled,
    )?;
    text(h, header::CACHE_CONTROL, out.cache_control.as_deref())?;
    text(h, "x-amz-checksum-crc32", out.checksum_crc32.as_deref())?;
    text(h, "x-amz-checksum-crc32c", out.checksum_crc32c.as_deref())?;
    text(
        h,
        "x-amz-checksum-crc64nvme",
        out.checksum_crc64nvme.as_deref(),
    )?;
    text(h, "x-amz-checksum-sha1", out.checksum_sha1.as_deref())?;
    text(h, "x-amz-checksum-sha256", out.checksum_sha256.as_deref())?;
    text(
        h,
        "x-amz-checksum-type",
        out.checksum_type.as_ref().map(|v| v.as_str()),
    )?;
    text(
        h,
        header::CONTENT_DISPOSITION,
        out.content_disposition.as_deref(),
    )?;
    text(h, header::CONTENT_ENCODING, out.content_encoding.as_deref())?;
    text(h, header::CONTENT_LANGUAGE, out.content_language.as_deref())?;
    if let Some(len) = out.content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    text(h, header::CONTENT_TYPE, out.content_type.as_deref())?;
    shown(h, "x-amz-delete-marker", out.delete_marker)?;
    if let Some(etag) = &out.e_tag {
        h.insert(http::header::ETAG, etag.to_http_header().ok()?);
    }
    text(h, "x-amz-expiration", out.expiration.as_deref())?;
    stamp(
        h,
        header::EXPIRES,
        out.expires.as_ref(),
        TimestampFormat::HttpDate,
    )?;
    stamp(
        h,
        header::LAST_MODIFIED,
        out.last_modified.as_ref(),
        TimestampFormat::HttpDate,
    )?;
    for (name, value) in out.metadata.iter().flatten() {
        // s3s encodes other values per RFC 2047: left to it.
        if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return None;
        }
        let name = HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()).ok()?;
        h.insert(name, HeaderValue::from_str(value).ok()?);
    }
    shown(h, "x-amz-missing-meta", out.missing_meta)?;
    let legal_hold = out.object_lock_legal_hold_status.as_ref();
    text(
        h,
        "x-amz-object-lock-legal-hold",
        legal_hold.map(|v| v.as_str()),
    )?;
    let mode = out.object_lock_mode.as_ref();
    text(h, "x-amz-object-lock-mode", mode.map(|v| v.as_str()))?;
    stamp(
        h,
        "x-amz-object-lock-retain-until-date",
        out.object_lock_retain_until_date.as_ref(),
        TimestampFormat::DateTime,
    )?;
    shown(h, "x-amz-mp-parts-count", out.parts_count)?;
    let replication = out.replication_status.as_ref();
    text(
        h,
        "x-amz-replication-status",
        replication.map(|v| v.as_str()),
    )?;
    let charged = out.request_charged.as_ref();
    text(h, "x-amz-request-charged", charged.map(|v| v.as_str()))?;
    text(h, "x-amz-restore", out.restore.as_deref())?;
    let sse_c = out.sse_customer_algorithm.as_deref();
    text(h, "x-amz-server-side-encryption-customer-algorithm", sse_c)?;
    let sse_c_md5 = out.sse_customer_key_md5.as_deref();
    text(
        h,
        "x-amz-server-side-encryption-customer-key-md5",
        sse_c_md5,
    )?;
    let kms = out.ssekms_key_id.as_deref();
    text(h, "x-amz-server-side-encryption-aws-kms-key-id", kms)?;
    let sse = out.server_side_encryption.as_ref();
    text(h, "x-amz-server-side-encryption", sse.map(|v| v.as_str()))?;
    let class = out.storage_class.as_ref();
    text(h, "x-amz-storage-class", class.map(|v| v.as_str()))?;
    shown(h, "x-amz-tagging-count", out.tag_count)?;
    text(h, "x-amz-version-id", out.version_id.as_deref())?;
    let redirect = out.website_redirect_location.as_deref();
    text(h, "x-amz-website-redirect-location", redirect)?;
    Some(response)
}

/// `value` as an HTTP date, written as s3s writes it (its offset ignored,
/// `GMT` appended) but by `httpdate` (s3s's, `time`'s interpreted format,
/// was 1% of a GET's CPU); s3s's own formatting for what `httpdate` does
/// not take (an offset other than UTC, years before 1970 or after 9998).
fn http_date(value: &Timestamp, out: &mut Vec<u8>) -> Option<()> {
    use std::io::Write;
    let at = time::OffsetDateTime::from(value.clone());
    if !at.offset().is_utc() || !(1970..=9998).contains(&at.year()) {
        return value.format(TimestampFormat::HttpDate, out).ok();
    }
    let at = std::time::SystemTime::from(at);
    write!(out, "{}", httpdate::HttpDate::from(at)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    /// The signature this module computes for `req` under AWS's example
    /// secret.
    fn computed(req: &Request<s3s::Body>, signature: &Signature<'_>) -> String {
        let path = urlencoding::decode(req.uri().path()).unwrap_or_else(|_| unreachable!());
        let canonical =
            canonical_request(&path, req.headers(), signature).unwrap_or_else(|| unreachable!());
        let key = signing_key(SECRET, signature.date, signature.region, signature.service);
        let to_sign = string_to_sign(signature, &canonical);
        String::from_utf8(hex_lower(&hmac(&key, to_sign.as_bytes())).to_vec())
            .unwrap_or_else(|_| unreachable!())
    }

    /// AWS's published example of a presigned GET (the S3 documentation's
    /// "Authenticating Requests: Using Query Parameters"): the same
    /// signature comes out here, and it expires when it says.
    #[test]
    fn the_documented_presigned_example_verifies() {
        let url = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let req = Request::builder()
            .uri(url)
            .header("host", "examplebucket.s3.amazonaws.com")
            .body(s3s::Body::empty())
            .unwrap_or_else(|_| unreachable!());
        let query = req.uri().query().unwrap_or_default();
        let pairs: Vec<_> = form_urlencoded::parse(query.as_bytes()).collect();
        let at = amz_time("20130524T000100Z").unwrap_or_else(|| unreachable!());
        let config = s3s::config::S3Config::default();
        let signature = from_query(query, &pairs, req.headers(), at, &config)
            .unwrap_or_else(|| unreachable!("a valid presigned URL"));
        assert_eq!(computed(&req, &signature), signature.signature);
        // A day (and a minute) after its date it has expired.
        let later = at + time::Duration::days(1);
        assert!(from_query(query, &pairs, req.headers(), later, &config).is_none());
    }

    /// AWS's published example of a GET signed in its header (the same
    /// documentation's "Example: GET Object"). Its range header keeps it
    /// off this path, but the signature is computed all the same; sixteen
    /// minutes away from its date it is past the skew s3s allows.
    #[test]
    fn the_documented_header_example_verifies() {
        let req = Request::builder()
            .uri("/test.txt")
            .header("host", "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .header("x-amz-date", "20130524T000000Z")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            )
            .body(s3s::Body::empty())
            .unwrap_or_else(|_| unreachable!());
        let at = amz_time("20130524T000500Z").unwrap_or_else(|| unreachable!());
        let config = s3s::config::S3Config::default();
        let signature = from_header(req.headers(), at, &config)
            .unwrap_or_else(|| unreachable!("a valid header signature"));
        assert_eq!(computed(&req, &signature), signature.signature);
        let late = at + time::Duration::minutes(11);
        assert!(from_header(req.headers(), late, &config).is_none());
        let early = at - time::Duration::minutes(21);
        assert!(from_header(req.headers(), early, &config).is_none());
    }

    /// The canonical query is the same whether a client encoded its
    /// parameters the SigV4 way or some other way.
    #[test]
    fn queries_encoded_either_way_canonicalize_alike() {
        let sigv4 = "X-Amz-Credential=AK%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00";
        let other = "X-Amz-Credential=AK/20130524/us-east-1/s3/aws4_request&X-Amz-Algorithm=AWS4%2dHMAC%2DSHA256&X-Amz-Signature=00";
        let want = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20130524%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(canonical_query(sigv4), want);
        assert_eq!(canonical_query(other), want);
        assert_eq!(canonical_query("a=%C3%BC&b=x+y"), "a=%C3%BC&b=x%20y");
        assert!(is_canonical("AK%2F2013"));
        assert!(!is_canonical("AK%2f2013"));
        assert!(!is_canonical("%41"));
        assert!(!is_canonical("%C3%BC"));
        assert!(!is_canonical("a+b"));
        assert!(!is_canonical("%2"));
    }

    /// The `Authorization` header in s3s's grammar only: other spellings
    /// are left to s3s, which refuses them.
    #[test]
    fn authorization_headers_parse_as_s3s_parses_them() {
        let parts = Some((
            "AK/20130524/us-east-1/s3/aws4_request",
            "host;x-amz-date",
            "abc",
        ));
        for good in [
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=abc",
            "AWS4-HMAC-SHA256  Credential=AK/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc ",
        ] {
            assert_eq!(authorization_parts(good), parts, "{good}");
        }
        for bad in [
            "AWS4-HMAC-SHA256Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=abc",
            "AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date,Credential=AK/20130524/us-east-1/s3/aws4_request,Signature=abc",
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request ,SignedHeaders=host;x-amz-date,Signature=abc",
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=",
            "AWS4-HMAC-SHA256 Credential=AK/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature=a b",
            "AWS AK:abc",
        ] {
            assert_eq!(authorization_parts(bad), None, "{bad}");
        }
    }

    /// A presigned URL beside an `Authorization` header, and a signature
    /// that leaves `host` out, are left to s3s.
    #[test]
    fn presigned_urls_with_an_authorization_header_and_hostless_signatures_are_declined() {
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        let pairs = query_pairs(query);
        let at = amz_time("20130524T000100Z").unwrap_or_else(|| unreachable!());
        let config = s3s::config::S3Config::default();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example"));
        assert!(from_query(query, &pairs, &headers, at, &config).is_some());
        headers.insert("authorization", HeaderValue::from_static("AWS AK:abc"));
        assert!(from_query(query, &pairs, &headers, at, &config).is_none());
        let hostless = query.replace("SignedHeaders=host", "SignedHeaders=x-amz-date");
        let pairs = query_pairs(&hostless);
        headers.remove("authorization");
        assert!(from_query(&hostless, &pairs, &headers, at, &config).is_none());
    }

    #[test]
    fn queries_decode_as_form_urlencoded_decodes_them() {
        let pieces = [
            "a%2Fb=c%2fd",
            "a+b=c+d+",
            "%=%4",
            "%zz=%4g%",
            "x=%E2%82%AC%c3%a9",
            "x=%FF%FE+ok",
            "a=b=c",
            "=x",
            "x=",
            "plain",
            "%2b=%2B",
            "%C3=%A9",
        ];
        let query = pieces.join("&") + "&&";
        let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        let ours: Vec<(String, String)> = query_pairs(&query)
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(ours, theirs);
        assert!(matches!(form_decode("X-Amz-Date"), Cow::Borrowed(_)));
    }

    #[test]
    fn signatures_compare_whole() {
        assert!(same_signature(b"abcd", "abcd"));
        assert!(!same_signature(b"abcd", "abce"));
        assert!(!same_signature(b"abcd", "abc"));
        assert!(!same_signature(b"", "a"));
    }

    #[test]
    fn signed_header_lists_are_sorted_lowercase_and_unique() {
        assert_eq!(
            signed_header_list("host;x-amz-date"),
            Some(vec!["host", "x-amz-date"])
        );
        assert_eq!(signed_header_list("x-amz-date;host"), None);
        assert_eq!(signed_header_list("x-amz-date"), None);
        assert_eq!(signed_header_list("host;host"), None);
        assert_eq!(signed_header_list("Host"), None);
        assert_eq!(signed_header_list("host;;x"), None);
    }

    #[test]
    fn http_dates_are_written_as_s3s_writes_them() {
        let offset = time::UtcOffset::from_hms(2, 0, 0).unwrap_or_else(|_| unreachable!());
        // Every weekday, month and leap day, to the last day httpdate
        // writes and past it, and before the epoch.
        let last = 253_402_300_799 + 86_400 * 400;
        let mut samples: Vec<i64> = (0..last).step_by(9_999_991).collect();
        samples.extend([
            951_782_400,
            4_107_542_399,
            253_370_764_800,
            253_402_300_799,
            -1,
        ]);
        for seconds in samples {
            let Ok(at) = time::OffsetDateTime::from_unix_timestamp(seconds) else {
                continue;
            };
            for at in [Some(at), at.checked_to_offset(offset)]
                .into_iter()
                .flatten()
            {
                let value = Timestamp::from(at);
                let (mut ours, mut theirs) = (vec![], vec![]);
                assert!(http_date(&value, &mut ours).is_some());
                value
                    .format(TimestampFormat::HttpDate, &mut theirs)
                    .unwrap_or_else(|_| unreachable!());
                assert_eq!(ours, theirs, "{at}");
            }
        }
    }

    #[test]
    fn dates_parse_only_in_their_one_form() {
        let t = amz_time("20130524T000102Z").unwrap_or_else(|| unreachable!());
        assert_eq!((t.year(), t.day(), t.second()), (2013, 24, 2));
        for bad in [
            "20130524T000102",
            "2013-05-24T000102Z",
            "20131324T000102Z",
            "+0130524T000102Z",
        ] {
            assert!(amz_time(bad).is_none(), "{bad}");
        }
    }
}
