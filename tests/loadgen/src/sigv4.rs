//! AWS Signature Version 4 for S3 requests written by hand: the load
//! generator's requests and the raw-connection tests, which must put
//! exactly the bytes they choose on the wire (a withheld body, a pipelined
//! request, an aws-chunked body cut short), so no SDK can send them.
//!
//! Only what those need: header signing with any extra headers, an
//! unsigned or a streaming payload, and the aws-chunked encoding with its
//! chained chunk signatures. The gateway (s3s) verifies every signature,
//! so a mistake here fails every test that uses it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The payload hash of an aws-chunked body with a signature per chunk.
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
const REGION: &str = "us-east-1";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key length"));
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Signs requests for one access key against one host (`127.0.0.1:port`).
#[derive(Debug, Clone)]
pub struct Signer {
    pub access: String,
    pub secret: String,
    pub host: String,
}

/// A signed request's headers, and what its aws-chunked body (if any)
/// needs to sign its chunks.
#[derive(Debug, Clone)]
pub struct Signed {
    /// `host`, `x-amz-date`, `x-amz-content-sha256`, `authorization` and
    /// the extra headers, ready to write.
    pub headers: Vec<(String, String)>,
    pub chunks: ChunkSigner,
}

/// Signs the chunks of an aws-chunked body, each chained to the previous
/// signature (the first to the request's).
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    key: Vec<u8>,
    amz_date: String,
    scope: String,
    previous: String,
}

impl ChunkSigner {
    /// One chunk, encoded: `hex(len);chunk-signature=SIG\r\nDATA\r\n`.
    /// An empty `data` is the final chunk.
    pub fn chunk(&mut self, data: &[u8]) -> Vec<u8> {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.amz_date,
            self.scope,
            self.previous,
            sha256_hex(data)
        );
        self.previous = hex::encode(hmac(&self.key, to_sign.as_bytes()));
        let mut out =
            format!("{:x};chunk-signature={}\r\n", data.len(), self.previous).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A whole body in chunks of `chunk_size`, then the final chunk.
    pub fn encode(&mut self, body: &[u8], chunk_size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(body.len() + 100 * (body.len() / chunk_size.max(1) + 2));
        for piece in body.chunks(chunk_size.max(1)) {
            out.extend(self.chunk(piece));
        }
        out.extend(self.chunk(&[]));
        out
    }
}

/// The encoded length of `len` bytes sent as aws-chunked in chunks of
/// `chunk_size` (the request's `Content-Length`).
pub fn chunked_length(len: usize, chunk_size: usize) -> usize {
    let signature = ";chunk-signature=".len() + 64 + 4;
    let chunk_size = chunk_size.max(1);
    let full = len / chunk_size;
    let rest = len % chunk_size;
    let mut total = full * (format!("{chunk_size:x}").len() + signature + chunk_size);
    if rest > 0 {
        total += format!("{rest:x}").len() + signature + rest;
    }
    total + 1 + signature
}

/// The UTC time as SigV4 writes it: (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`).
fn now() -> (String, String) {
    let t = time::OffsetDateTime::now_utc();
    let date = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
    let stamp = format!("{date}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second());
    (date, stamp)
}

impl Signer {
    /// Signs `method path?query` with the given payload hash. `path` and
    /// `query` are as they go on the wire (already URI-encoded; the query's
    /// parameters sorted). Every extra header is signed; `content-length`
    /// and `expect` may be added unsigned by the caller.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, &str)],
        payload: &str,
    ) -> Signed {
        let (date, amz_date) = now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.host.clone()),
            ("x-amz-content-sha256".into(), payload.into()),
            ("x-amz-date".into(), amz_date.clone()),
        ];
        headers.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string())),
        );
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = headers
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical =
            format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload}");
        let scope = format!("{date}/{REGION}/s3/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let mut key = hmac(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes());
        for part in [REGION, "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access
            ),
        ));
        Signed {
            headers,
            chunks: ChunkSigner {
                key,
                amz_date,
                scope,
                previous: signature,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_length_matches_the_encoding() {
        let signer = Signer {
            access: "AK".into(),
            secret: "SK".into(),
            host: "127.0.0.1:1".into(),
        };
        for (len, chunk) in [(0, 8), (1, 8), (8, 8), (9, 8), (70_000, 65_536)] {
            let mut chunks = signer
                .sign("PUT", "/b/k", "", &[], STREAMING_PAYLOAD)
                .chunks;
            let body = vec![7u8; len];
            assert_eq!(
                chunks.encode(&body, chunk).len(),
                chunked_length(len, chunk),
                "{len} in {chunk}"
            );
        }
    }
}
