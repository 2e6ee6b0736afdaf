//! S3's additional checksums (`x-amz-checksum-crc32`, `-crc32c`,
//! `-crc64nvme`, `-sha1`, `-sha256`): verified when a client sends one, in a
//! header or in the trailer of an aws-chunked body, and kept with the
//! object so that a later full GET returns it and the client can check the
//! bytes it received end to end (botocore does, by default).
//!
//! The checksum is computed on the body as it streams through, before the
//! pipeline sees it; a mismatch abandons the write (nothing becomes
//! visible) and answers `BadDigest`.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::{ChecksumAlgorithm, ChecksumType};
use s3s::{S3Result, TrailingHeaders, s3_error};
use sha1::Digest as _;

/// The stored-metadata key of an object's checksum (':' keeps it apart from
/// user metadata, as for the standard headers).
pub fn metadata_key(algorithm: Algorithm) -> String {
    format!(":checksum-{}", algorithm.header_suffix())
}

/// Where a multipart object keeps `COMPOSITE` (absent: `FULL_OBJECT`), and
/// an upload the type its parts are combined by.
const TYPE_KEY: &str = ":checksum-type";
/// Where an upload keeps the algorithm it was created with.
const UPLOAD_ALGORITHM_KEY: &str = ":checksum-algorithm";
/// Where a multipart object keeps its parts' checksums, in part order,
/// space separated (GET and HEAD of `?partNumber=`, GetObjectAttributes).
const PARTS_KEY: &str = ":checksum-parts";

/// An object's stored checksum: (algorithm, value, how it was made).
pub fn stored(meta: &BTreeMap<String, String>) -> Option<(Algorithm, String, Combine)> {
    let combine = match meta.get(TYPE_KEY).map(String::as_str) {
        Some(ChecksumType::COMPOSITE) => Combine::Composite,
        _ => Combine::FullObject,
    };
    Algorithm::ALL
        .into_iter()
        .find_map(|a| meta.get(&metadata_key(a)).map(|v| (a, v.clone(), combine)))
}

/// The stored checksum of part `number` (from 1) of a multipart object.
pub fn stored_part(meta: &BTreeMap<String, String>, number: usize) -> Option<(Algorithm, String)> {
    let (algorithm, ..) = stored(meta)?;
    let value = meta
        .get(PARTS_KEY)?
        .split(' ')
        .nth(number.checked_sub(1)?)?;
    Some((algorithm, value.to_string()))
}

/// Removes every stored checksum (a copy that recomputes its own).
pub fn forget(meta: &mut BTreeMap<String, String>) {
    meta.retain(|k, _| !k.starts_with(":checksum-"));
}

/// Records a single-part object's verified checksum.
pub fn record(meta: &mut BTreeMap<String, String>, algorithm: Algorithm, value: String) {
    forget(meta);
    meta.insert(metadata_key(algorithm), value);
}

/// How a multipart object's checksum is made from its parts' (S3's
/// `x-amz-checksum-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// The checksum of the parts' checksums, with `-N` (N parts) appended.
    Composite,
    /// The checksum of the whole object, as if sent in one piece (CRCs
    /// only: combined from the parts' without reading them again).
    FullObject,
}

impl Combine {
    pub fn s3(self) -> ChecksumType {
        ChecksumType::from_static(match self {
            Self::Composite => ChecksumType::COMPOSITE,
            Self::FullObject => ChecksumType::FULL_OBJECT,
        })
    }
}

/// The checksum a multipart upload was created with
/// (`x-amz-checksum-algorithm`, `x-amz-checksum-type`): every part carries
/// one of that algorithm, and the object gets their combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algorithm: Algorithm,
    pub combine: Combine,
}

impl UploadChecksum {
    /// What CreateMultipartUpload asks for. S3's rules: the type needs an
    /// algorithm; CRC64NVME is full-object only, SHA-1 and SHA-256
    /// composite only; without a type, CRC64NVME is full-object and the
    /// others composite.
    pub fn requested(
        algorithm: Option<&ChecksumAlgorithm>,
        kind: Option<&ChecksumType>,
    ) -> S3Result<Option<Self>> {
        let Some(name) = algorithm else {
            return match kind {
                None => Ok(None),
                Some(_) => Err(s3_error!(
                    InvalidRequest,
                    "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
                )),
            };
        };
        let algorithm = Algorithm::from_name(name.as_str()).ok_or_else(|| {
            s3_error!(
                InvalidRequest,
                "Checksum algorithm provided is unsupported. Please try again with any of the valid types: [CRC32, CRC32C, CRC64NVME, SHA1, SHA256]"
            )
        })?;
        let combine = match kind.map(|k| k.as_str().to_ascii_uppercase()) {
            None if algorithm == Algorithm::Crc64Nvme => Combine::FullObject,
            None => Combine::Composite,
            Some(k) if k == ChecksumType::COMPOSITE => Combine::Composite,
            Some(k) if k == ChecksumType::FULL_OBJECT => Combine::FullObject,
            Some(k) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Value for x-amz-checksum-type header is invalid: {k}"
                ));
            }
        };
        let allowed = match combine {
            Combine::Composite => algorithm != Algorithm::Crc64Nvme,
            Combine::FullObject => algorithm.is_crc(),
        };
        if !allowed {
            return Err(s3_error!(
                InvalidRequest,
                "The {} checksum type cannot be used with the {} checksum algorithm.",
                combine.s3().as_str(),
                algorithm.header_suffix()
            ));
        }
        Ok(Some(Self { algorithm, combine }))
    }

    /// Keeps it in an upload's metadata until the upload completes.
    pub fn stash(self, meta: &mut BTreeMap<String, String>) {
        meta.insert(UPLOAD_ALGORITHM_KEY.into(), self.algorithm.name().into());
        meta.insert(TYPE_KEY.into(), self.combine.s3().as_str().into());
    }

    /// What [`UploadChecksum::stash`] kept, if anything.
    pub fn stashed(meta: &BTreeMap<String, String>) -> Option<Self> {
        let algorithm = Algorithm::from_name(meta.get(UPLOAD_ALGORITHM_KEY)?)?;
        let combine = match meta.get(TYPE_KEY).map(String::as_str) {
            Some(ChecksumType::FULL_OBJECT) => Combine::FullObject,
            _ => Combine::Composite,
        };
        Some(Self { algorithm, combine })
    }

    /// Takes it out of an upload's metadata, to become the object's.
    pub fn unstash(meta: &mut BTreeMap<String, String>) -> Option<Self> {
        let stashed = Self::stashed(meta);
        meta.remove(UPLOAD_ALGORITHM_KEY);
        meta.remove(TYPE_KEY);
        stashed
    }

    /// The object's checksum from its parts' (value, plaintext length), in
    /// order; recorded in `meta` with the parts' own.
    pub fn complete(
        self,
        parts: &[(String, u64)],
        meta: &mut BTreeMap<String, String>,
    ) -> S3Result<String> {
        let raw = parts
            .iter()
            .map(|(v, _)| decode(v))
            .collect::<S3Result<Vec<_>>>()?;
        let value = match self.combine {
            Combine::Composite => {
                let mut h = Hasher::new(self.algorithm);
                for r in &raw {
                    h.update(r);
                }
                format!("{}-{}", h.finish(), parts.len())
            }
            Combine::FullObject => {
                let algorithm = self.algorithm.crc().ok_or_else(|| {
                    s3_error!(InternalError, "a full-object checksum needs a CRC")
                })?;
                let mut whole: Option<u64> = None;
                for (r, (_, len)) in raw.iter().zip(parts) {
                    let part = crc_value(r)?;
                    whole = Some(match whole {
                        None => part,
                        Some(w) => crc_fast::checksum_combine(algorithm, w, part, *len),
                    });
                }
                // No part at all: the CRC of nothing.
                let whole = whole.unwrap_or_else(|| crc_fast::checksum(algorithm, b""));
                encode_crc(self.algorithm, whole)
            }
        };
        forget(meta);
        meta.insert(metadata_key(self.algorithm), value.clone());
        if self.combine == Combine::Composite {
            meta.insert(TYPE_KEY.into(), ChecksumType::COMPOSITE.into());
        }
        let listed: Vec<&str> = parts.iter().map(|(v, _)| v.as_str()).collect();
        meta.insert(PARTS_KEY.into(), listed.join(" "));
        Ok(value)
    }
}

fn decode(value: &str) -> S3Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| s3_error!(InvalidRequest, "The checksum {value} is not valid base64"))
}

/// A CRC's value from its big-endian bytes (4 or 8 of them).
fn crc_value(raw: &[u8]) -> S3Result<u64> {
    match raw.len() {
        4 => Ok(u64::from(u32::from_be_bytes([
            raw[0], raw[1], raw[2], raw[3],
        ]))),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            Ok(u64::from_be_bytes(b))
        }
        n => Err(s3_error!(
            InvalidRequest,
            "A CRC checksum has 4 or 8 bytes, not {n}"
        )),
    }
}

fn encode_crc(algorithm: Algorithm, value: u64) -> String {
    let bytes = match algorithm {
        Algorithm::Crc64Nvme => value.to_be_bytes().to_vec(),
        _ => (value as u32).to_be_bytes().to_vec(),
    };
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The name S3 spells it with (`x-amz-checksum-algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => ChecksumAlgorithm::CRC32,
            Self::Crc32c => ChecksumAlgorithm::CRC32C,
            Self::Crc64Nvme => ChecksumAlgorithm::CRC64NVME,
            Self::Sha1 => ChecksumAlgorithm::SHA1,
            Self::Sha256 => ChecksumAlgorithm::SHA256,
        }
    }

    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        use crc_fast::CrcAlgorithm as C;
        match self {
            Self::Crc32 => Some(C::Crc32IsoHdlc),
            Self::Crc32c => Some(C::Crc32Iscsi),
            Self::Crc64Nvme => Some(C::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    fn is_crc(self) -> bool {
        self.crc().is_some()
    }

    pub fn header_suffix(self) -> &'static str {
        match self {
            Self::Crc32 => "crc32",
            Self::Crc32c => "crc32c",
            Self::Crc64Nvme => "crc64nvme",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            ChecksumAlgorithm::CRC32 => Some(Self::Crc32),
            ChecksumAlgorithm::CRC32C => Some(Self::Crc32c),
            ChecksumAlgorithm::CRC64NVME => Some(Self::Crc64Nvme),
            ChecksumAlgorithm::SHA1 => Some(Self::Sha1),
            ChecksumAlgorithm::SHA256 => Some(Self::Sha256),
            _ => None,
        }
    }
}

/// The checksum values a request carries in headers (s3s parses them into
/// the input's `checksum_*` fields).
#[derive(Clone, Debug, Default)]
pub struct Declared {
    pub crc32: Option<String>,
    pub crc32c: Option<String>,
    pub crc64nvme: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    /// `x-amz-sdk-checksum-algorithm`: the value may come in the trailer.
    pub algorithm: Option<ChecksumAlgorithm>,
}

/// What to check: the algorithm, and where the client's value is.
#[derive(Clone, Debug)]
pub struct Expected {
    pub algorithm: Algorithm,
    pub value: Given,
}

/// Where the value a body is checked against comes from.
#[derive(Clone, Debug)]
pub enum Given {
    /// An `x-amz-checksum-*` header.
    Header(String),
    /// The trailer of an aws-chunked body (`x-amz-trailer`).
    Trailer,
    /// Nowhere: the gateway computes the value for itself (a part of an
    /// upload created with a checksum, sent without one).
    Computed,
}

impl Expected {
    pub fn computed(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            value: Given::Computed,
        }
    }
}

impl Declared {
    /// At most one checksum per request, as S3 requires.
    pub fn expected(self) -> S3Result<Option<Expected>> {
        let given: Vec<(Algorithm, String)> = [
            (Algorithm::Crc32, self.crc32),
            (Algorithm::Crc32c, self.crc32c),
            (Algorithm::Crc64Nvme, self.crc64nvme),
            (Algorithm::Sha1, self.sha1),
            (Algorithm::Sha256, self.sha256),
        ]
        .into_iter()
        .filter_map(|(a, v)| v.map(|v| (a, v)))
        .collect();
        match given.as_slice() {
            [] => match self.algorithm {
                None => Ok(None),
                Some(name) => {
                    let algorithm = Algorithm::from_name(name.as_str()).ok_or_else(|| {
                        s3_error!(
                            InvalidArgument,
                            "Unknown checksum algorithm {}",
                            name.as_str()
                        )
                    })?;
                    Ok(Some(Expected {
                        algorithm,
                        value: Given::Trailer,
                    }))
                }
            },
            [(algorithm, value)] => Ok(Some(Expected {
                algorithm: *algorithm,
                value: Given::Header(value.clone()),
            })),
            _ => Err(s3_error!(
                InvalidRequest,
                "Expecting a single x-amz-checksum- header. Multiple checksum types are not allowed."
            )),
        }
    }
}

enum Hasher {
    Crc(crc_fast::Digest, usize),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(a: Algorithm) -> Self {
        match (a, a.crc()) {
            (Algorithm::Crc64Nvme, Some(c)) => Self::Crc(crc_fast::Digest::new(c), 8),
            (_, Some(c)) => Self::Crc(crc_fast::Digest::new(c), 4),
            (Algorithm::Sha1, None) => Self::Sha1(sha1::Sha1::new()),
            (_, None) => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc(d, _) => d.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    /// The value as S3 sends it: base64 of the big-endian bytes.
    fn finish(self) -> String {
        let bytes = match self {
            Self::Crc(d, 4) => (d.finalize() as u32).to_be_bytes().to_vec(),
            Self::Crc(d, _) => d.finalize().to_be_bytes().to_vec(),
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// The checksum of a body, known once the body has been read to its end.
#[derive(Clone, Debug, Default)]
pub struct Computed(Arc<Mutex<Option<String>>>);

impl Computed {
    pub fn value(&self) -> Option<String> {
        self.0.lock().ok().and_then(|v| v.clone())
    }
}

/// Computes the checksum of the bytes passing through.
pub struct Tap<S> {
    inner: S,
    hasher: Option<Hasher>,
    out: Computed,
}

impl<S> Tap<S> {
    pub fn new(inner: S, algorithm: Option<Algorithm>) -> (Self, Computed) {
        let out = Computed::default();
        (
            Self {
                inner,
                hasher: algorithm.map(Hasher::new),
                out: out.clone(),
            },
            out,
        )
    }
}

impl<S> Stream for Tap<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(h) = self.hasher.as_mut() {
                    h.update(b);
                }
            }
            Poll::Ready(None) => {
                if let Some(h) = self.hasher.take()
                    && let Ok(mut out) = self.out.0.lock()
                {
                    *out = Some(h.finish());
                }
            }
            _ => {}
        }
        polled
    }
}

/// Compares what was computed with what the client declared (in a header,
/// or in the body's trailer). Returns the verified value.
pub fn verify(
    expected: &Expected,
    computed: &Computed,
    trailers: Option<&TrailingHeaders>,
) -> S3Result<String> {
    let name = format!("x-amz-checksum-{}", expected.algorithm.header_suffix());
    let Some(actual) = computed.value() else {
        return Err(s3_error!(
            InternalError,
            "the body's checksum was not computed"
        ));
    };
    let declared = match &expected.value {
        Given::Computed => return Ok(actual),
        Given::Header(v) => Some(v.clone()),
        Given::Trailer => trailers
            .and_then(|t| {
                t.read(|h| {
                    h.get(&name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
            })
            .flatten(),
    };
    let Some(declared) = declared else {
        return Err(s3_error!(
            InvalidRequest,
            "The {name} checksum was announced but not sent"
        ));
    };
    if declared.trim() != actual {
        return Err(s3_error!(
            BadDigest,
            "The {name} you specified did not match the calculated checksum"
        ));
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn of(a: Algorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(a);
        let (first, rest) = data.split_at(data.len().min(3));
        h.update(first);
        h.update(rest);
        h.finish()
    }

    #[test]
    fn values_match_aws_examples() {
        // Known values for "hello world" (as the AWS SDKs compute them).
        let d = b"hello world";
        assert_eq!(of(Algorithm::Crc32, d), "DUoRhQ==");
        assert_eq!(of(Algorithm::Crc32c, d), "yZRlqg==");
        assert_eq!(of(Algorithm::Sha1, d), "Kq5sNclPz7QV2+lfQIuc6R7oRu0=");
        assert_eq!(
            of(Algorithm::Sha256, d),
            "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek="
        );
    }

    #[test]
    fn a_full_object_crc_of_parts_is_the_crc_of_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cuts = [0, 1, 4096, 9_999, 10_000];
        for algorithm in [Algorithm::Crc32, Algorithm::Crc32c, Algorithm::Crc64Nvme] {
            let parts: Vec<(String, u64)> = cuts
                .windows(2)
                .map(|w| (of(algorithm, &data[w[0]..w[1]]), (w[1] - w[0]) as u64))
                .collect();
            let mut meta = BTreeMap::new();
            let sum = UploadChecksum {
                algorithm,
                combine: Combine::FullObject,
            };
            let whole = sum.complete(&parts, &mut meta).unwrap();
            assert_eq!(whole, of(algorithm, &data), "{algorithm:?}");
            assert_eq!(stored(&meta), Some((algorithm, whole, Combine::FullObject)));
            assert_eq!(stored_part(&meta, 2), Some((algorithm, parts[1].0.clone())));
        }
    }

    #[test]
    fn a_composite_checksum_is_the_checksum_of_the_parts_checksums() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let parts = [b"first part".as_slice(), b"second"];
        for algorithm in [Algorithm::Crc32, Algorithm::Sha256] {
            let sums: Vec<(String, u64)> = parts
                .iter()
                .map(|p| (of(algorithm, p), p.len() as u64))
                .collect();
            let mut joined = Vec::new();
            for (v, _) in &sums {
                joined.extend(b64.decode(v).unwrap());
            }
            let mut meta = BTreeMap::new();
            let sum = UploadChecksum {
                algorithm,
                combine: Combine::Composite,
            };
            let value = sum.complete(&sums, &mut meta).unwrap();
            assert_eq!(value, format!("{}-2", of(algorithm, &joined)));
            assert_eq!(stored(&meta), Some((algorithm, value, Combine::Composite)));
        }
    }

    #[test]
    fn an_upload_checksum_follows_s3_rules() {
        let alg = |n: &'static str| ChecksumAlgorithm::from_static(n);
        let kind = |n: &'static str| ChecksumType::from_static(n);
        let req = |a: Option<&ChecksumAlgorithm>, k: Option<&ChecksumType>| {
            UploadChecksum::requested(a, k).map(|u| u.map(|u| (u.algorithm, u.combine)))
        };
        assert_eq!(req(None, None).unwrap(), None);
        assert!(req(None, Some(&kind("COMPOSITE"))).is_err());
        assert_eq!(
            req(Some(&alg("CRC32")), None).unwrap(),
            Some((Algorithm::Crc32, Combine::Composite))
        );
        assert_eq!(
            req(Some(&alg("CRC64NVME")), None).unwrap(),
            Some((Algorithm::Crc64Nvme, Combine::FullObject))
        );
        assert!(req(Some(&alg("CRC64NVME")), Some(&kind("COMPOSITE"))).is_err());
        assert!(req(Some(&alg("SHA256")), Some(&kind("FULL_OBJECT"))).is_err());
        assert!(req(Some(&alg("MD5")), None).is_err());
    }

    #[test]
    fn only_one_checksum_per_request() {
        let both = Declared {
            crc32: Some("a".into()),
            sha1: Some("b".into()),
            ..Default::default()
        };
        assert!(both.expected().is_err());
    }
}
