//! Entry points for the fuzz targets (`fuzz/`): the parsers of request
//! values this crate wrote itself, callable with arbitrary input. Not an
//! API: nothing else may use them.

use s3s::dto::Range;
use shardgate_core::Manifest;

use crate::checksum::Declared;

/// A listing continuation token: decoded, or refused with S3's error; a
/// token this gateway made decodes to what it was made from.
pub fn continuation_token(token: &str) {
    let _ = crate::convert::decode_token(token);
    let made = crate::convert::encode_token(token);
    assert_eq!(
        crate::convert::decode_token(&made).ok().as_deref(),
        Some(token)
    );
}

/// `Content-MD5`: 16 bytes of base64, or `InvalidDigest`.
pub fn content_md5(value: &str) {
    let _ = crate::convert::content_md5(Some(value));
}

/// Checksum headers and trailers: `x-amz-checksum-*` values (one or two,
/// S3 allows one) or an `x-amz-sdk-checksum-algorithm` name, then the
/// declared value checked against `body`'s, as a PUT does.
pub fn checksum(algorithms: u8, name: &str, value: &str, body: &[u8]) {
    use futures::StreamExt;
    let mut declared = Declared::default();
    for (i, slot) in [
        &mut declared.crc32,
        &mut declared.crc32c,
        &mut declared.crc64nvme,
        &mut declared.sha1,
        &mut declared.sha256,
    ]
    .into_iter()
    .enumerate()
    {
        if algorithms & (1 << i) != 0 {
            *slot = Some(value.to_string());
        }
    }
    if algorithms & 0x20 != 0 {
        declared.algorithm = Some(s3s::dto::ChecksumAlgorithm::from(name.to_string()));
    }
    let Ok(Some(expected)) = declared.expected() else {
        return;
    };
    let pieces = futures::stream::iter([Ok(bytes::Bytes::copy_from_slice(body))]);
    let (tap, computed) = crate::checksum::Tap::new(pieces, Some(expected.algorithm));
    let _ = futures::executor::block_on(tap.collect::<Vec<std::io::Result<bytes::Bytes>>>());
    if let Ok(verified) = crate::checksum::verify(&expected, &computed, None) {
        assert_eq!(Some(verified), computed.value());
    }
}

/// A `Range` header (s3s parses it) and a part number, on an object of
/// `manifest`'s size and segments: a byte range inside the object, or
/// `InvalidRange`.
pub fn object_range(manifest: &Manifest, header: &str, part: Option<i32>) {
    let range = Range::parse(header).ok();
    if let Ok(Some(r)) = crate::service::object_range(manifest, range.as_ref(), part) {
        assert!(
            r.start <= r.end && r.end <= manifest.size,
            "{r:?} of {}",
            manifest.size
        );
    }
}

/// The head of a browser POST form, as the gateway scans it before s3s
/// reads the form: refused, or its form found; it is rewritten only when
/// it names `${filename}`.
pub fn post_form(head: &[u8]) {
    let Ok((_, Some(_))) = crate::server::post_form_apply(head, "XyZ", "b") else {
        return;
    };
    let needle = b"${filename}";
    assert!(head.windows(needle.len()).any(|w| w == needle));
}
