//! The fuzz targets: every parser shardgate wrote itself, each a function
//! of arbitrary bytes that must never panic, and that checks what it can
//! (a decoded manifest encodes back to itself; a range lies inside its
//! object; a verified checksum is the computed one).
//!
//! `libfuzzer/` runs them coverage-guided with cargo-fuzz
//! (`scripts/fuzz.sh`, a stated number of inputs each, outside CI's time);
//! `tests/smoke.rs` runs each on seeded random inputs and on every input
//! in `corpus/` (the crashes found, kept as regression tests) in CI.
//!
//! Not fuzzed here, because the parsing is not ours: HTTP (hyper), SigV4,
//! aws-chunked framing, XML bodies, and the `Range` and copy-source headers'
//! syntax (s3s; the `range` target feeds s3s's parse into our arithmetic),
//! and POST forms as s3s reads them (the head the gateway scans first is
//! the `post_form` target).

use std::sync::OnceLock;

use shardgate_core::{
    BackendId, BlobName, Digest, Envelope, ErasureCode, FragmentRef, FragmentState, Identities,
    Manifest, Segment, StripeLayout, VersionId,
};

/// A fuzz target: arbitrary bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `libfuzzer/fuzz_targets/*.rs` and
/// of the `corpus/` folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("manifest", manifest),
    ("age_header", age_header),
    ("fragment_digests", fragment_digests),
    ("ids", ids),
    ("meta_records", meta_records),
    ("continuation_token", continuation_token),
    ("content_md5", content_md5),
    ("checksum", checksum),
    ("range", range),
    ("config", config),
    ("bucket_policy", bucket_policy),
    ("post_form", post_form),
];

/// A manifest as stored: decoded (any format version) or refused; what
/// decodes encodes back to the same manifest.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        let again = m
            .encode()
            .unwrap_or_else(|e| panic!("a decoded manifest does not encode: {e}"));
        let back = Manifest::decode(&again)
            .unwrap_or_else(|e| panic!("a re-encoded manifest does not decode: {e}"));
        assert_eq!(back, m);
    }
}

fn identities() -> &'static Identities {
    static ID: OnceLock<Identities> = OnceLock::new();
    ID.get_or_init(Identities::generate)
}

/// A stored age header (the first 16 bytes are the payload nonce): opened
/// with the gateway's identity, or refused.
pub fn age_header(data: &[u8]) {
    let mut nonce = [0u8; 16];
    let n = data.len().min(16);
    nonce[..n].copy_from_slice(&data[..n]);
    let envelope = Envelope {
        header: data[n..].to_vec(),
        nonce,
    };
    let _ = envelope.open(identities());
}

/// A fragment's trailer of shard digests.
pub fn fragment_digests(data: &[u8]) {
    if let Some(list) = Digest::parse_list(data) {
        assert_eq!(list.len() * 32, data.len());
    }
}

/// Blob names, backend ids and version ids from text.
pub fn ids(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = shardgate_core::BlobName::new(text.to_string());
    let _ = shardgate_core::BackendId::new(text.to_string());
    if let Ok(v) = VersionId::parse(&text) {
        assert_eq!(VersionId::parse(&v.to_string()).ok(), Some(v));
    }
}

/// Every kind of metadata record.
pub fn meta_records(data: &[u8]) {
    shardgate_meta::fuzzing::decode_records(data);
}

/// A listing continuation token.
pub fn continuation_token(data: &[u8]) {
    shardgate_s3::fuzzing::continuation_token(&String::from_utf8_lossy(data));
}

/// A `Content-MD5` header.
pub fn content_md5(data: &[u8]) {
    shardgate_s3::fuzzing::content_md5(&String::from_utf8_lossy(data));
}

/// Checksum headers: which are sent (first byte), an algorithm name and a
/// value (text up to and after the first NUL), and a body.
pub fn checksum(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (text, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let (name, value) = text.split_once('\0').unwrap_or(("", &text));
    shardgate_s3::fuzzing::checksum(which, name, value, body);
}

/// A `Range` header and a `partNumber` on an object: the size and parts
/// from the first 12 bytes, the header's text after them.
pub fn range(data: &[u8]) {
    let Some((head, text)) = data.split_first_chunk::<12>() else {
        return;
    };
    let size = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], 0, 0]);
    let parts = usize::from(head[6] % 8) + 1;
    let part = match head[7] {
        0..=127 => None,
        _ => Some(i32::from_le_bytes([head[8], head[9], head[10], head[11]])),
    };
    let Ok(layout) = ErasureCode::new(2, 1).and_then(|c| StripeLayout::new(c, 1)) else {
        return;
    };
    let each = size / parts as u64;
    let segments = (0..parts)
        .map(|i| Segment {
            plaintext_len: if i + 1 == parts {
                size - each * (parts as u64 - 1)
            } else {
                each
            },
            envelope: Envelope {
                header: Vec::new(),
                nonce: [0; 16],
            },
            layout,
            fragments: Vec::new(),
            inline: None,
        })
        .collect();
    let manifest = Manifest {
        version_id: VersionId::new(0),
        size,
        etag: String::new(),
        content_type: None,
        user_metadata: Default::default(),
        created_unix_ms: 0,
        segments,
    };
    shardgate_s3::fuzzing::object_range(&manifest, &String::from_utf8_lossy(text), part);
}

/// A configuration file's text: parsed and checked, or refused with a
/// message naming what is wrong.
pub fn config(data: &[u8]) {
    if let Err(e) = shardgate_config::Config::from_toml_text(&String::from_utf8_lossy(data)) {
        assert!(!e.to_string().is_empty());
    }
}

/// A bucket policy as PutBucketPolicy receives it: refused with a reason,
/// or parsed into one that evaluates any request without panicking and
/// whose verdict for a request no statement names is silence or a Deny's.
pub fn bucket_policy(data: &[u8]) {
    use shardgate_authz::{Context, Policy, Request, Requester};
    let text = String::from_utf8_lossy(data);
    let policy = match Policy::parse(&text, "photos") {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let _ = policy.is_public();
    let mut context = Context::default();
    context
        .insert("aws:SourceIp", "10.1.2.3")
        .insert("s3:prefix", "docs/")
        .insert("aws:username", "bob")
        .insert("aws:CurrentTime", "2026-12-06T12:00:00Z");
    let requesters = [
        Requester::Anonymous,
        Requester::User {
            name: "bob".into(),
            canonical_id: "b".repeat(64),
        },
    ];
    for requester in &requesters {
        for (action, resource) in [
            ("s3:GetObject", "arn:aws:s3:::photos/docs/a"),
            ("s3:ListBucket", "arn:aws:s3:::photos"),
        ] {
            let _ = policy.evaluate(&Request {
                requester,
                action,
                resource,
                context: &context,
            });
        }
    }
    // Grant headers parse from the same bytes without panicking.
    let _ = shardgate_authz::Acl::from_grant_headers(
        &"a".repeat(64),
        &[(shardgate_authz::Permission::Read, &text)],
        |_| true,
    );
}

/// Well-formed inputs for each target (a fuzzer starts from them and
/// mutates: deeper paths than random bytes reach). `scripts/fuzz.sh`
/// writes them into the libFuzzer corpus; the smoke test mutates them.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "manifest" | "meta_records" => {
            let m = sample_manifest().encode().unwrap_or_default();
            let mut row = (0u32).to_le_bytes().to_vec();
            row.extend_from_slice(&m);
            vec![m, row]
        }
        "age_header" => {
            let (envelope, _) = Envelope::seal(&identities().recipients())
                .unwrap_or_else(|e| panic!("sealing a header: {e}"));
            let mut input = envelope.nonce.to_vec();
            input.extend_from_slice(&envelope.header);
            vec![input]
        }
        "fragment_digests" => vec![vec![7; 64]],
        "ids" => vec![
            BlobName::random().to_string().into_bytes(),
            VersionId::new(1_700_000_000_000).to_string().into_bytes(),
            b"site-1".to_vec(),
        ],
        "continuation_token" => vec![b"YS8wNQ".to_vec(), b"!!not-a-token".to_vec()],
        "content_md5" => vec![b"XrY7u+Ae7tCTyyK7j1rNww==".to_vec()],
        "checksum" => vec![
            [&[0x01][..], b"DUoRhQ==\xffhello world"].concat(),
            [&[0x20][..], b"SHA256\0\xff"].concat(),
        ],
        "range" => vec![
            [
                &[0x10, 0x27, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0][..],
                b"bytes=0-99",
            ]
            .concat(),
            [&[0x10, 0x27, 0, 0, 0, 0, 3, 0x80, 2, 0, 0, 0][..], b""].concat(),
            [
                &[0x10, 0x27, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
                b"bytes=-500",
            ]
            .concat(),
        ],
        "config" => vec![
            include_bytes!("../../examples/config/two-sites.toml").to_vec(),
            include_bytes!("../../examples/config/three-providers.toml").to_vec(),
        ],
        "bucket_policy" => vec![
            br#"{"Version":"2012-10-17","Statement":[{"Sid":"a","Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":"arn:aws:s3:::photos/docs/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"},"StringLike":{"s3:prefix":"d*"}}}]}"#.to_vec(),
            br#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"arn:aws:iam::123456789012:user/bob"},"NotAction":"s3:List*","Resource":"arn:aws:s3:::photos/home/${aws:username}/*","Condition":{"ForAllValues:StringNotEqualsIgnoreCase":{"s3:x-amz-acl":["private"]},"DateLessThan":{"aws:CurrentTime":"2030-01-01"},"Null":{"s3:prefix":"false"}}}}"#.to_vec(),
        ],
        "post_form" => vec![
            b"--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nup/${filename}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nDATA\r\n--XyZ--\r\n".to_vec(),
        ],
        _ => Vec::new(),
    }
}

/// The head of a browser POST form, as the gateway scans it before s3s.
pub fn post_form(data: &[u8]) {
    shardgate_s3::fuzzing::post_form(data);
}

/// A consistent manifest: one segment of 100 bytes, 2 + 1.
fn sample_manifest() -> Manifest {
    let layout = ErasureCode::new(2, 1)
        .and_then(|c| StripeLayout::new(c, 1))
        .unwrap_or_else(|e| panic!("a 2 + 1 layout: {e}"));
    let (envelope, _) = Envelope::seal(&identities().recipients())
        .unwrap_or_else(|e| panic!("sealing a header: {e}"));
    let fragments = (0..3)
        .map(|i| FragmentRef {
            backend: BackendId::new(format!("b{i}")).unwrap_or_else(|e| panic!("{e}")),
            blob: BlobName::random(),
            group_digests: vec![Digest::of_shard(&[i as u8])],
            state: FragmentState::Stored,
        })
        .collect();
    Manifest {
        version_id: VersionId::new(1_700_000_000_000),
        size: 100,
        etag: "0123456789abcdef0123456789abcdef".into(),
        content_type: Some("text/plain".into()),
        user_metadata: [("k".to_string(), "v".to_string())].into(),
        created_unix_ms: 1_700_000_000_000,
        segments: vec![Segment {
            plaintext_len: 100,
            envelope,
            layout,
            fragments,
            inline: None,
        }],
    }
}
