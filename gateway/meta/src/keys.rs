//! Row keys. Object versions are `bucket 0x00 key 0x00 !seq` and uploads
//! `bucket 0x00 key 0x00 upload`, so a bucket's rows are one contiguous
//! range in S3 key order (UTF-8 byte order): bucket names and keys never
//! contain 0x00 (the S3 layer refuses such keys), and 0x00 sorts before
//! every other byte. A key's versions are one contiguous range too, newest
//! first: `!seq` is the complement of the version's sequence number, big
//! endian.

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

/// `bucket 0x00 key 0x00`: the start of a key's versions.
pub(crate) fn versions_prefix(bucket: &str, key: &str) -> Vec<u8> {
    let mut v = object_key(bucket, key);
    v.push(0);
    v
}

/// `bucket 0x00 key 0x00 !seq`: the row of version `seq` of a key.
pub(crate) fn version_key(bucket: &str, key: &str, seq: u64) -> Vec<u8> {
    let mut v = versions_prefix(bucket, key);
    v.extend_from_slice(&(!seq).to_be_bytes());
    v
}

/// A version row's key split into bucket, key and sequence number; `None`
/// for bytes that are not one.
pub(crate) fn split_version_key(row: &[u8]) -> Option<(&[u8], &[u8], u64)> {
    let sep = row.iter().position(|b| *b == 0)?;
    let (rest, seq) = row.split_last_chunk::<8>()?;
    let (zero, rest) = rest.split_last()?;
    if *zero != 0 || rest.len() <= sep {
        return None;
    }
    Some((&rest[..sep], &rest[sep + 1..], !u64::from_be_bytes(*seq)))
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
    fn versions_sort_newest_first_and_split_back() {
        let old = version_key("b", "k", 5);
        let new = version_key("b", "k", 6);
        assert!(new < old);
        assert!(old.starts_with(&versions_prefix("b", "k")));
        assert_eq!(
            split_version_key(&old),
            Some((b"b".as_slice(), b"k".as_slice(), 5))
        );
        assert_eq!(
            split_version_key(&version_key("b", "", u64::MAX)),
            Some((b"b".as_slice(), b"".as_slice(), u64::MAX))
        );
        assert_eq!(split_version_key(b"b\0k"), None);
        assert_eq!(split_version_key(b"b\0\0\0\0\0\0\0\0\0"), None);
        assert_eq!(
            split_version_key(b"b\0\0\0\0\0\0\0\0\0\0").map(|(b, k, _)| (b, k)),
            Some((b"b".as_slice(), b"".as_slice()))
        );
        // "k" and its versions sort before key "k0" and "k/x".
        assert!(version_key("b", "k", 0) < object_key("b", "k/x"));
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
