//! S3's additional checksums (`x-amz-checksum-crc32`, `-crc32c`,
//! `-crc64nvme`, `-sha1`, `-sha256`): verified when a client sends one, in a
//! header or in the trailer of an aws-chunked body, and kept with the
//! object so that a later full GET returns it and the client can check the
//! bytes it received end to end (botocore does, by default).
//!
//! The checksum is computed on the body as it streams through, before the
//! pipeline sees it; a mismatch abandons the write (nothing becomes
//! visible) and answers `BadDigest`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::ChecksumAlgorithm;
use s3s::{S3Result, TrailingHeaders, s3_error};
use sha1::Digest as _;

/// The stored-metadata key of an object's checksum (':' keeps it apart from
/// user metadata, as for the standard headers).
pub fn metadata_key(algorithm: Algorithm) -> String {
    format!(":checksum-{}", algorithm.header_suffix())
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

    fn header_suffix(self) -> &'static str {
        match self {
            Self::Crc32 => "crc32",
            Self::Crc32c => "crc32c",
            Self::Crc64Nvme => "crc64nvme",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
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

/// What to check: the algorithm, and the value if it came in a header.
#[derive(Clone, Debug)]
pub struct Expected {
    pub algorithm: Algorithm,
    pub value: Option<String>,
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
                        value: None,
                    }))
                }
            },
            [(algorithm, value)] => Ok(Some(Expected {
                algorithm: *algorithm,
                value: Some(value.clone()),
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
        use crc_fast::CrcAlgorithm as C;
        match a {
            Algorithm::Crc32 => Self::Crc(crc_fast::Digest::new(C::Crc32IsoHdlc), 4),
            Algorithm::Crc32c => Self::Crc(crc_fast::Digest::new(C::Crc32Iscsi), 4),
            Algorithm::Crc64Nvme => Self::Crc(crc_fast::Digest::new(C::Crc64Nvme), 8),
            Algorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
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
    let declared = match &expected.value {
        Some(v) => Some(v.clone()),
        None => trailers
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
    let Some(actual) = computed.value() else {
        return Err(s3_error!(
            InternalError,
            "the body's checksum was not computed"
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
        h.update(&data[..3]);
        h.update(&data[3..]);
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
    fn only_one_checksum_per_request() {
        let both = Declared {
            crc32: Some("a".into()),
            sha1: Some("b".into()),
            ..Default::default()
        };
        assert!(both.expected().is_err());
    }
}
