//! Row keys. Objects and uploads of a bucket are `bucket 0x00 key`, so a
//! bucket's rows are one contiguous range in S3 key order (UTF-8 byte
//! order): bucket names never contain 0x00, and 0x00 sorts before every
//! other byte.

/// `bucket 0x00`: the start of the bucket's rows.
pub(crate) fn bucket_base(bucket: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(bucket.len() + 1);
    v.extend_from_slice(bucket.as_bytes());
    v.push(0);
    v
}

/// `bucket 0x00 key`.
pub(crate) fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut v = bucket_base(bucket);
    v.extend_from_slice(key.as_bytes());
    v
}

/// `bucket 0x00 key 0x00 upload`.
pub(crate) fn upload_key(bucket: &str, key: &str, upload: &str) -> Vec<u8> {
    let mut v = object_key(bucket, key);
    v.push(0);
    v.extend_from_slice(upload.as_bytes());
    v
}

/// `upload 0x00 part-number (big-endian)`: parts in number order.
pub(crate) fn part_key(upload: &str, part: u32) -> Vec<u8> {
    let mut v = upload_prefix(upload);
    v.extend_from_slice(&part.to_be_bytes());
    v
}

pub(crate) fn upload_prefix(upload: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(upload.len() + 5);
    v.extend_from_slice(upload.as_bytes());
    v.push(0);
    v
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (all 0xFF).
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_is_past_every_extension() {
        assert_eq!(successor(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(successor(b"\xff\xff"), None);
        assert!(successor(b"b\x00").is_some_and(|s| s.as_slice() > b"b\x00\xff\xff".as_slice()));
    }

    #[test]
    fn buckets_do_not_interleave() {
        // "a" + 0x00 + anything < "a-" ...: a bucket named "a" never mixes
        // with a bucket named "a-b".
        let end = successor(&bucket_base("a")).unwrap_or_default();
        assert!(object_key("a", "\u{10FFFF}").as_slice() < end.as_slice());
        assert!(object_key("a-b", "").as_slice() > end.as_slice());
    }
}
